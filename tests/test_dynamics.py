"""Dynamics effects: twins against pedalboard (static and automated), limiter approximation figures,
soft-knee compressor behaviour, finite gradients at range edges."""
import numpy as np
import pedalboard
import pytest
import torch

from afxcli.effects import create
from afxcli.effects.base import PedalboardRenderer
from afxcli.effects.dynamics import soft_knee_gain_reduction_db


def music(sr, channels, seed=0, dur=1.0):
    """Sines under decaying envelopes (transients every ~140 ms) + decaying noise bursts."""
    rng = np.random.default_rng(seed)
    n = int(sr * dur)
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        tone = 0.3 * np.sin(2 * np.pi * (110 + 50 * c) * t) + 0.2 * np.sin(2 * np.pi * 3300 * t + c)
        env = np.zeros(n)
        for k in range(0, n, n // 7):
            env[k:] += np.exp(-(t[k:] - t[k]) * rng.uniform(5, 40))
        out.append(tone * env * 0.6 + 0.15 * rng.standard_normal(n) * np.exp(-t * 3))
    return np.asarray(out, np.float32)


def torch_render(effect, x, values_or_params, block_size=None):
    p = values_or_params
    if isinstance(p, dict):
        p = effect.values_to_tensor(p, dtype=torch.float64)
    with torch.no_grad():
        return effect(torch.from_numpy(x.astype(np.float64))[None], p, block_size=block_size)[0].numpy()


TWINS = [("compressor", {}), ("gate", {}), ("limiter", {"true_peak": False})]


@pytest.mark.parametrize("kind,opts", TWINS)
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_twin_matches_pedalboard(kind, opts, sr, channels):
    rng = np.random.default_rng(sr + channels)
    e = create(kind, sr, **opts)
    x = music(sr, channels, seed=channels, dur=0.75)
    worst = 0.0
    for _ in range(3):
        v = e.random_values(rng)
        ref = pedalboard.Pedalboard(e.to_pedalboard(v))(x, sr)
        worst = max(worst, float(np.abs(torch_render(e, x, v) - ref).max()))
    print(f"{kind} sr={sr} ch={channels}: max abs diff {worst:.2e}")
    assert worst < 1e-3
    # something actually happened at the defaults (the test is not comparing identities)
    v = e.default_values()
    if kind == "limiter":
        v["ceiling_db"] = -12.0
    if kind == "gate":
        v["threshold_db"] = -20.0
    assert np.abs(torch_render(e, x, v) - x).max() > 1e-2


@pytest.mark.parametrize("kind,opts", TWINS)
def test_time_varying_matches_automated_pedalboard(kind, opts):
    sr, block = 44100, 4096
    x = music(sr, 2, seed=5, dur=0.75)
    e = create(kind, sr, **opts)
    rng = np.random.default_rng(7)
    n_blocks = -(-x.shape[1] // block)
    vals = [e.random_values(rng) for _ in range(n_blocks)]
    r = PedalboardRenderer(e, vals[0])
    outs = []
    for k in range(n_blocks):
        r.set_values(vals[k])
        outs.append(r.process(x[:, k * block:(k + 1) * block], reset=False))
    lat = r.latency_samples
    if lat:
        outs.append(r.process(np.zeros((2, lat), np.float32), reset=False))
    ref = np.concatenate(outs, axis=1)[:, : x.shape[1]]
    p = torch.stack([e.values_to_tensor(v, dtype=torch.float64) for v in vals], dim=-1)  # (1, n, blocks)
    y = torch_render(e, x, p, block_size=block)
    d = np.abs(y - ref).max()
    print(f"{kind} automated ({n_blocks} blocks): max abs diff {d:.2e}")
    assert d < 1e-3
    # the automation mattered: rendering with the first values only differs
    assert np.abs(torch_render(e, x, vals[0]) - y).max() > 1e-3


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("true_peak", [False, True])
def test_limiter_latency_is_pedalboards(sr, true_peak):
    e = create("limiter", sr, true_peak=true_peak, lookahead_ms=3.0)
    assert e.latency_samples == PedalboardRenderer(e, e.default_values()).latency_samples


@pytest.mark.parametrize("sr", [44100, 48000])
def test_true_peak_limiter_approximation(sr):
    """The torch true-peak sidechain (64-tap Kaiser-sinc 4x) is not JUCE's half-band equiripple
    oversampler: report the distance to BrickwallLimiter and bound it."""
    e = create("limiter", sr)  # true_peak=True by default
    x = music(sr, 2, seed=11, dur=1.0) * 1.5
    worst_abs, worst_gr = 0.0, 0.0
    for ceil_db, rel_ms in [(-1.0, 100.0), (-6.0, 30.0), (-12.0, 300.0)]:
        v = {"ceiling_db": ceil_db, "release_ms": rel_ms}
        ref = pedalboard.Pedalboard(e.to_pedalboard(v))(x, sr)
        y = torch_render(e, x, v)
        worst_abs = max(worst_abs, float(np.abs(y - ref).max()))
        # gain-reduction error in dB where the signal is not tiny
        mask = np.abs(x) > 0.05
        gr_err = np.abs(20 * np.log10(np.abs(y[mask]) / np.abs(ref[mask]).clip(1e-9)))
        worst_gr = max(worst_gr, float(np.percentile(gr_err, 99)))
        ceiling = 10 ** (ceil_db / 20)
        assert np.abs(y).max() <= ceiling + 1e-9
    print(f"true-peak limiter sr={sr}: max abs diff {worst_abs:.2e}, 99th pct gain error {worst_gr:.3f} dB")
    assert worst_abs < 0.02
    assert worst_gr < 0.1


def test_soft_knee_static_curve():
    x = torch.linspace(-60, 0, 601, dtype=torch.float64)
    T, R = torch.tensor(-30.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    hard = soft_knee_gain_reduction_db(x, T, R, torch.tensor(0.0, dtype=torch.float64))
    expect = torch.clamp(x - T, min=0) * (1 - 1 / 4.0)
    assert torch.allclose(hard, expect, atol=1e-12)
    soft = soft_knee_gain_reduction_db(x, T, R, torch.tensor(12.0, dtype=torch.float64))
    # equals hard knee outside the knee, strictly above it inside (smooth transition)
    outside = (x - T).abs() > 6
    assert torch.allclose(soft[outside], expect[outside], atol=1e-12)
    inside = (x - T).abs() < 5.9
    assert torch.all(soft[inside] > expect[inside] - 1e-12) and soft[inside].max() > 0.5
    assert torch.all(soft[1:] >= soft[:-1])


def test_soft_compressor_linked_and_reduces_level():
    sr = 44100
    e = create("compressor_soft", sr)
    x = music(sr, 2, seed=3, dur=0.5)
    x[1] *= 0.1  # quiet right channel
    v = {"threshold_db": -30.0, "ratio": 8.0, "knee_db": 6.0, "attack_ms": 1.0, "release_ms": 50.0}
    y = torch_render(e, x, v)
    gain = y / np.where(np.abs(x) > 1e-4, x, np.nan)
    ok = np.isfinite(gain).all(axis=0)
    np.testing.assert_allclose(gain[0, ok], gain[1, ok], rtol=1e-9)  # linked: same gain on both
    assert np.sqrt(np.mean(y ** 2)) < 0.6 * np.sqrt(np.mean(x ** 2))
    # ratio 1 is the identity times makeup
    y1 = torch_render(e, x, {**v, "ratio": 1.0, "makeup_db": 6.0})
    np.testing.assert_allclose(y1, x.astype(np.float64) * 10 ** (6 / 20), rtol=1e-12, atol=1e-12)


def test_soft_compressor_gradcheck_tiny():
    e = create("compressor_soft", 8000)
    x = (torch.randn(1, 2, 64, dtype=torch.float64) * 0.5)
    p = torch.tensor([[-12.0, 3.0, 6.0, 0.5, 2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: e(x, p), (p,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind,opts", TWINS + [("compressor_soft", {}), ("limiter", {"true_peak": True})])
@pytest.mark.parametrize("edge", ["min", "max"])
def test_gradients_finite_at_range_edges(kind, opts, edge):
    sr = 44100
    e = create(kind, sr, **opts)
    x = torch.from_numpy(music(sr, 2, seed=2, dur=0.1).astype(np.float64))[None].requires_grad_()
    vals = {s.name: (s.min if edge == "min" else s.max) for s in e.specs}
    p = e.values_to_tensor(vals, dtype=torch.float64).requires_grad_()
    y = e(x, p)
    (y ** 2).sum().backward()
    assert torch.all(torch.isfinite(p.grad)), p.grad
    assert torch.all(torch.isfinite(x.grad))
    assert x.grad.abs().sum() > 0


def test_knee_zero_and_ratio_one_gradients_finite():
    e = create("compressor_soft", 44100)
    x = torch.from_numpy(music(44100, 2, seed=4, dur=0.1).astype(np.float64))[None]
    p = e.values_to_tensor({"threshold_db": -20.0, "ratio": 1.0, "knee_db": 0.0}, dtype=torch.float64)
    p.requires_grad_()
    (e(x, p) ** 2).sum().backward()
    assert torch.all(torch.isfinite(p.grad))
    assert p.grad[0, e.param_names.index("ratio")].abs() > 0  # increasing the ratio would compress


def test_batched_params_differ_per_item():
    sr = 44100
    e = create("compressor", sr)
    x = torch.from_numpy(music(sr, 1, seed=9, dur=0.3).astype(np.float64))[None].repeat(2, 1, 1)
    p = torch.cat([e.values_to_tensor({"threshold_db": -40.0}, dtype=torch.float64),
                   e.values_to_tensor({"threshold_db": 0.0}, dtype=torch.float64)])
    y = e(x, p)
    assert (y[0] ** 2).mean() < 0.7 * (y[1] ** 2).mean()
    single = e(x[:1], p[:1])
    assert torch.allclose(single[0], y[0], atol=0)
