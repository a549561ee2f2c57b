"""Gain, clippers and distortion: pedalboard twin agreement, BE-AFX formulas, automation, gradients."""
from __future__ import annotations

import numpy as np
import pedalboard
import pytest
import torch

from afxcli.effects import REGISTRY, create
from afxcli.effects.base import PedalboardRenderer, expand_blocks
from afxcli.effects.clipper import f_cubic, parametric_shape
from afxcli.errors import AfxError

TWIN_KINDS = ["gain", "hard_clip", "distortion"]
ALL_KINDS = ["gain", "clipper", "taylor_clipper", "chebyshev_clipper", "hard_clip", "distortion"]
TWIN_TOL = 1e-4


def music_like(sr: int, channels: int, seconds: float = 0.75, seed: int = 0, peak: float = 0.9) -> np.ndarray:
    """Sines (bass, mid, high partials) + exponentially decaying noise bursts with sharp onsets,
    ``(channels, samples)`` float64, normalised to ``peak``."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    out = np.zeros((channels, n))
    for c in range(channels):
        y = sum(a * np.sin(2 * np.pi * f * (1 + 0.002 * c) * t + rng.uniform(0, 2 * np.pi))
                for a, f in [(0.5, 55.0), (0.3, 220.0), (0.2, 1250.0), (0.05, 7000.0)])
        for onset in rng.uniform(0, seconds * 0.9, size=6):
            i = int(onset * sr)
            m = n - i
            y[i:] += rng.uniform(0.5, 1.5) * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.03 * sr))
        out[c] = y
    return out * (peak / np.abs(out).max())


def render_torch(effect, x: np.ndarray, values: dict) -> np.ndarray:
    p = effect.values_to_tensor(values, dtype=torch.float64)
    with torch.no_grad():
        return effect(torch.from_numpy(x)[None], p, mode="exact")[0].numpy()


# ----- twin agreement ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", TWIN_KINDS)
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_twin_agreement(kind, sr, channels):
    effect = create(kind, sr)
    assert effect.has_twin
    x = music_like(sr, channels, seed=sr + channels)
    x32 = x.astype(np.float32)
    rng = np.random.default_rng(1234)
    draws = [effect.random_values(rng) for _ in range(4)]
    draws += [{s.name: s.min for s in effect.specs}, {s.name: s.max for s in effect.specs}]
    worst = 0.0
    for values in draws:
        y = render_torch(effect, x32.astype(np.float64), values)
        y_pb = pedalboard.Pedalboard(effect.to_pedalboard(values))(x32, sr)
        assert y_pb.shape == y.shape
        worst = max(worst, float(np.abs(y - y_pb).max()))
    print(f"twin_maxdiff_{kind}_{sr}_{'mono' if channels == 1 else 'stereo'}: {worst:.3g} abs")
    assert worst <= TWIN_TOL


@pytest.mark.parametrize("kind", TWIN_KINDS)
def test_automation_matches_chunked_pedalboard(kind):
    """Per-block parameters == a pedalboard render whose values change between reset=False chunks."""
    sr, block = 48000, 3000
    effect = create(kind, sr)
    x = music_like(sr, 2, seconds=0.5, seed=7).astype(np.float32)
    n_blocks = -(-x.shape[-1] // block)
    rng = np.random.default_rng(99)
    rows = [effect.random_values(rng) for _ in range(n_blocks)]
    params = torch.tensor([[r[name] for r in rows] for name in effect.param_names], dtype=torch.float64)[None]
    with torch.no_grad():
        y = effect(torch.from_numpy(x.astype(np.float64))[None], params, block_size=block)[0].numpy()
    renderer = PedalboardRenderer(effect, rows[0])
    chunks = []
    for k, values in enumerate(rows):
        renderer.set_values(values)
        chunks.append(renderer.process(x[:, k * block:(k + 1) * block], reset=False))
    y_pb = np.concatenate(chunks, axis=-1)
    assert y_pb.shape == y.shape
    diff = float(np.abs(y - y_pb).max())
    print(f"automation_maxdiff_{kind}: {diff:.3g} abs")
    assert diff <= TWIN_TOL
    # the automation really changes the output: one static render differs from it
    static = render_torch(effect, x.astype(np.float64), rows[0])
    assert np.abs(static - y).max() > 1e-3


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_time_varying_equals_static_per_block(kind):
    """Memory-less effects: a per-block render equals static renders of each block, batched."""
    sr, block = 44100, 2048
    effect = create(kind, sr, **({"order": 6} if "taylor" in kind or "chebyshev" in kind else {}))
    x = torch.from_numpy(np.stack([music_like(sr, 2, 0.2, seed=s) for s in (1, 2)]))  # (2, 2, n)
    n = x.shape[-1]
    n_blocks = -(-n // block)
    gen = torch.Generator().manual_seed(3)
    q = torch.rand(2, len(effect.specs), n_blocks, generator=gen, dtype=torch.float64)
    params = torch.stack([s.denormalize(q[:, i]) for i, s in enumerate(effect.specs)], dim=1)
    y = effect(x, params, block_size=block)
    for b in range(2):
        for k in range(n_blocks):
            seg = slice(k * block, min(n, (k + 1) * block))
            ref = effect(x[b:b + 1, :, seg], params[b:b + 1, :, k])
            torch.testing.assert_close(y[b:b + 1, :, seg], ref, rtol=0, atol=1e-12)


# ----- formulas (BE-AFX eqs. 1-6, pedalboard facts) ----------------------------------------------
def _np_cubic(x):
    u = np.clip(x, -1.5, 1.5)
    return u - 4 * u ** 3 / 27


def test_cubic_is_continuous_soft_clip():
    x = torch.linspace(-4, 4, 8001, dtype=torch.float64, requires_grad=True)
    y = f_cubic(x)
    assert torch.all(torch.abs(y) <= 1 + 1e-15)
    assert float(f_cubic(torch.tensor(1.5, dtype=torch.float64))) == pytest.approx(1.0, abs=1e-15)
    assert float(torch.abs(torch.diff(y.detach())).max()) < 2e-3  # no jump
    (g,) = torch.autograd.grad(y.sum(), x)
    assert float(g[4000]) == pytest.approx(1.0)  # slope 1 at 0
    assert float(torch.abs(g[torch.abs(x) >= 1.5]).max()) < 1e-12  # flat beyond the knee


@pytest.mark.parametrize("gain_db,offset", [(0.0, 0.0), (9.0, 0.2), (-6.0, -0.35), (24.0, 0.5)])
def test_parametric_clipper_matches_eq3(gain_db, offset):
    effect = create("clipper", 44100)
    x = music_like(44100, 2, 0.1, seed=5, peak=1.2)
    g = 10 ** (gain_db / 20)
    v = g * x + offset
    shapes = {
        0.0: lambda z: np.tanh(z),
        1.0: _np_cubic,
        2.0: lambda z: np.clip(z, -1, 1),
        0.3: lambda z: 0.7 * np.tanh(z) + 0.3 * _np_cubic(z),
        1.6: lambda z: 0.4 * _np_cubic(z) + 0.6 * np.clip(z, -1, 1),
    }
    for h, f in shapes.items():
        y = render_torch(effect, x, {"gain_db": gain_db, "offset": offset, "hardness": h})
        ref = (f(v) - f(offset)) / g
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12, err_msg=f"hardness={h}")
    # default (0 dB, no offset, hardness 0) is plain tanh
    np.testing.assert_allclose(render_torch(effect, x, {}), np.tanh(x), rtol=0, atol=1e-14)


def test_parametric_shape_continuous_in_hardness():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    below = parametric_shape(x, torch.tensor(1.0 - 1e-9, dtype=torch.float64))
    at = parametric_shape(x, torch.tensor(1.0, dtype=torch.float64))
    above = parametric_shape(x, torch.tensor(1.0 + 1e-9, dtype=torch.float64))
    torch.testing.assert_close(below, at, rtol=0, atol=1e-8)
    torch.testing.assert_close(above, at, rtol=0, atol=1e-8)


@pytest.mark.parametrize("kind", ["taylor_clipper", "chebyshev_clipper"])
def test_polynomial_identity_default_and_saturation(kind):
    effect = create(kind, 48000)
    assert effect.order == 24 and len(effect.specs) == 24
    assert effect.param_names[:3] == ["g0", "g1", "g2"]
    x = music_like(48000, 2, 0.1, seed=11, peak=1.5)  # peaks beyond full scale
    y = render_torch(effect, x, {})
    inside = np.abs(x) <= 1
    assert inside.mean() > 0.5 and (~inside).any()
    np.testing.assert_allclose(y[inside], x[inside], rtol=0, atol=1e-12)
    np.testing.assert_allclose(y[~inside], np.sign(x[~inside]), rtol=0, atol=1e-12)


def test_taylor_matches_power_series():
    effect = create("taylor_clipper", 44100, order=9)
    rng = np.random.default_rng(4)
    coeffs = rng.uniform(-1, 1, 9)
    x = music_like(44100, 1, 0.05, seed=2, peak=1.3)
    y = render_torch(effect, x, {f"g{h}": c for h, c in enumerate(coeffs)})
    u = np.clip(x, -1, 1)
    ref = sum(c * u ** h for h, c in enumerate(coeffs))
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def test_chebyshev_matches_eq6_and_cosine_identity():
    effect = create("chebyshev_clipper", 44100)  # order 24
    rng = np.random.default_rng(5)
    coeffs = rng.uniform(-1, 1, 24)
    x = music_like(44100, 2, 0.05, seed=3, peak=1.3)
    u = np.clip(x, -1, 1)
    t_prev, t = np.ones_like(u), u.copy()  # eq. 6 recurrence, written independently of Clenshaw
    ref = coeffs[0] * t_prev + coeffs[1] * t
    for h in range(2, 24):
        t_prev, t = t, 2 * u * t - t_prev
        ref = ref + coeffs[h] * t
    y = render_torch(effect, x, {f"g{h}": c for h, c in enumerate(coeffs)})
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-11)
    # a single coefficient gives T_h(cos θ) = cos(h θ)
    theta = np.linspace(0, np.pi, 257)[None]
    y7 = render_torch(effect, np.cos(theta), {"g1": 0.0, "g7": 1.0})
    np.testing.assert_allclose(y7, np.cos(7 * theta), rtol=0, atol=1e-12)


def test_hard_clip_and_distortion_formulas():
    x = music_like(44100, 1, 0.05, seed=8, peak=1.0)
    y = render_torch(create("hard_clip", 44100), x, {"threshold_db": -6.0})
    t = 10 ** (-6 / 20)
    np.testing.assert_allclose(y, np.clip(x, -t, t), rtol=0, atol=1e-15)
    y = render_torch(create("distortion", 44100), x, {"drive_db": 20.0})
    np.testing.assert_allclose(y, np.tanh(10 * x), rtol=0, atol=1e-12)
    y = render_torch(create("gain", 44100), x, {"gain_db": -20.0})
    np.testing.assert_allclose(y, 0.1 * x, rtol=0, atol=1e-15)


# ----- gradients ------------------------------------------------------------------------------
def _edge_rows(effect):
    """Parameter rows at the range edges, plus hardness exactly 1 for the parametric clipper."""
    rows = [{s.name: s.min for s in effect.specs}, {s.name: s.max for s in effect.specs},
            effect.default_values()]
    if effect.kind == "clipper":
        rows += [dict(effect.default_values(), hardness=h) for h in (0.0, 1.0, 2.0)]
    return rows


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradients_finite_at_range_edges(kind):
    effect = create(kind, 44100)
    x0 = torch.from_numpy(music_like(44100, 2, 0.05, seed=6, peak=1.2))[None]
    for values in _edge_rows(effect):
        p = effect.values_to_tensor(values, dtype=torch.float64).requires_grad_(True)
        x = x0.clone().requires_grad_(True)
        y = effect(x, p)
        gp, gx = torch.autograd.grad((y ** 2).sum() + y.sum(), (p, x))
        assert torch.isfinite(y).all() and torch.isfinite(gp).all() and torch.isfinite(gx).all(), values
        assert float(gx.abs().sum()) > 0


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradcheck_float64(kind):
    effect = create(kind, 44100, **({"order": 5} if "taylor" in kind or "chebyshev" in kind else {}))
    x = (torch.from_numpy(music_like(44100, 1, 0.002, seed=9, peak=0.8))[None, :, :64]).requires_grad_(True)
    gen = torch.Generator().manual_seed(2)
    q = 0.1 + 0.8 * torch.rand(1, len(effect.specs), 2, generator=gen, dtype=torch.float64)
    if kind == "clipper":
        q[:, 2] = torch.tensor([0.2, 0.7])  # hardness 0.4 and 1.4: away from the kink at 1
    p = torch.stack([s.denormalize(q[:, i]) for i, s in enumerate(effect.specs)], dim=1)
    p.requires_grad_(True)
    if kind == "hard_clip":  # keep samples away from the (non-differentiable) clip corner
        t = expand_blocks(10 ** (p.detach() / 20), 64, 32)  # (1, 1, 64) threshold per sample
        with torch.no_grad():
            x[(x.abs() - t).abs() < 1e-3] *= 0.5
        assert bool((x.abs() > t).any()) and bool((x.abs() < t).any())  # both regions exercised
    assert torch.autograd.gradcheck(lambda a, b: effect(a, b, block_size=32), (x, p))


# ----- options and validation -----------------------------------------------------------------
def test_order_option_and_errors():
    assert len(create("chebyshev_clipper", 44100, order=3).specs) == 3
    for bad in (1, 0, 65, 2.5, "8", True):
        with pytest.raises(AfxError):
            create("taylor_clipper", 44100, order=bad)
    effect = create("hard_clip", 44100)
    with pytest.raises(AfxError):
        effect.check_values({"threshold_db": 3.0})
    assert set(ALL_KINDS) <= set(REGISTRY)
