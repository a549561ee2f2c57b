"""Parametric and graphic EQ: pedalboard twin agreement, automation, frequency sampling, gradients."""
import math

import numpy as np
import pedalboard
import pytest
import scipy.signal
import torch

from afxcli.effects import create
from afxcli.effects.base import PedalboardRenderer
from afxcli.errors import AfxError


def _music(sr: float, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Sines + decaying noise bursts (transients every 250 ms), peak 0.9, float64 (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([0.25 * np.sin(2 * np.pi * 55 * (c + 1) * t) + 0.15 * np.sin(2 * np.pi * 440 * t + c)
                  + 0.1 * np.sin(2 * np.pi * 3520 * t)
                  + 0.3 * rng.standard_normal(t.size) * np.exp(-30 * (t % 0.25)) for c in range(channels)])
    return x / np.abs(x).max() * 0.9


EFFECTS = [("peq", {}), ("peq", {"n_peaks": 6}), ("geq", {"bands": "octave"}), ("geq", {"bands": "third"})]


@pytest.mark.parametrize("kind,opts", EFFECTS)
@pytest.mark.parametrize("sr,channels", [(44100, 1), (48000, 2)])
def test_twin_agreement_with_pedalboard(kind, opts, sr, channels):
    eq = create(kind, sr, **opts)
    x = _music(sr, 2.0, channels, seed=sr + channels).astype(np.float32)
    rng = np.random.default_rng(len(eq.param_names) + sr)
    worst = 0.0
    for _ in range(3):
        values = eq.random_values(rng)
        ref = pedalboard.Pedalboard(eq.to_pedalboard(values))(x, sr)
        y = eq(torch.from_numpy(x)[None], eq.values_to_tensor(values))[0].numpy()
        assert y.dtype == np.float32 and y.shape == ref.shape
        worst = max(worst, float(np.abs(y - ref).max()))
        # the float64 path is the ideal filter: it differs from pedalboard only by pedalboard's
        # float32 round-off (measured up to ~6e-3 for random low, narrow boosts)
        y64 = eq(torch.from_numpy(x).double()[None], eq.values_to_tensor(values, dtype=torch.float64))[0].numpy()
        assert np.abs(y64 - ref).max() < 2e-2
        assert np.abs(y - x).max() > 1e-3  # the draw really changed the sound
    # float32 path: same coefficients, same float32 arithmetic -> identical (measured: 0.0)
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("kind,opts", [("peq", {"n_peaks": 3}), ("geq", {"bands": "third"})])
def test_automation_matches_chunked_pedalboard_render(kind, opts):
    sr, block = 44100, 4096
    eq = create(kind, sr, **opts)
    x = _music(sr, 1.0, 2, seed=7).astype(np.float32)
    n_blocks = math.ceil(x.shape[-1] / block)
    rng = np.random.default_rng(11)
    frames = [eq.random_values(rng) for _ in range(n_blocks)]
    params = torch.stack([eq.values_to_tensor(v)[0] for v in frames], dim=-1).unsqueeze(0)  # (1, n, blocks)
    y = eq(torch.from_numpy(x)[None], params, block_size=block)[0].numpy()

    renderer = PedalboardRenderer(eq, frames[0])
    out = []
    for k in range(n_blocks):
        renderer.set_values(frames[k])
        out.append(renderer.process(x[:, k * block:(k + 1) * block], reset=False))
    ref = np.concatenate(out, axis=-1)
    assert np.abs(y - ref).max() <= 1e-5
    # state is kept across blocks: a render restarted at every block is different
    fresh = np.concatenate([pedalboard.Pedalboard(eq.to_pedalboard(frames[k]))(x[:, k * block:(k + 1) * block], sr)
                            for k in range(n_blocks)], axis=-1)
    assert np.abs(fresh - ref).max() > 1e-3
    # float64 automation is the same ideal recursion, close to pedalboard up to its float32 round-off
    # (relative: random jumps between extreme settings make transients far above full scale)
    y64 = eq(torch.from_numpy(x).double()[None], params.double(), block_size=block)[0].numpy()
    assert np.abs(y64 - ref).max() < 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize("sr,n", [(44100, 131072), (24000, 65536)])
def test_frequency_sampling_matches_exact_at_training_length(sr, n):
    x = torch.from_numpy(_music(sr, n / sr, 1, seed=3)).unsqueeze(0)  # float64 (1, 1, n)
    snrs = []
    for kind, opts in [("peq", {}), ("geq", {"bands": "third"})]:
        eq = create(kind, sr, train_filter="fs", **opts)
        rng = np.random.default_rng(sr)
        params = torch.stack([eq.values_to_tensor(eq.random_values(rng), dtype=torch.float64)[0] for _ in range(4)])
        xb = x.repeat(4, 1, 1)
        exact = eq(xb, params, mode="exact")
        fs = eq(xb, params, mode="train")
        err = (exact - fs).pow(2).sum(-1).squeeze(1)
        snrs += (10 * torch.log10(exact.pow(2).sum(-1).squeeze(1) / err)).tolist()
    assert min(snrs) >= 60.0, snrs


@pytest.mark.parametrize("kind,opts", EFFECTS[:1] + EFFECTS[3:])
def test_gradients_finite_at_range_edges(kind, opts):
    sr = 48000
    eq = create(kind, sr, train_filter="fs", **opts)
    x = torch.from_numpy(_music(sr, 0.1, 2, seed=1)).unsqueeze(0)
    for q in (0.0, 1.0):
        for dtype, mode in ((torch.float32, "exact"), (torch.float64, "exact"), (torch.float64, "train")):
            norm = torch.full((1, len(eq.specs)), q, dtype=torch.float64)
            p = torch.stack([s.denormalize(norm[:, i]) for i, s in enumerate(eq.specs)], dim=1).requires_grad_(True)
            y = eq(x.to(dtype), p, mode=mode)
            y.pow(2).mean().backward()
            assert torch.all(torch.isfinite(p.grad)), (q, dtype, mode, p.grad)
            gains = [i for i, n in enumerate(eq.param_names) if n.endswith("gain_db")]
            assert torch.all(p.grad[0, gains] != 0)


def test_gradcheck_through_effect_exact_and_train():
    sr = 16000
    eq = create("peq", sr, n_peaks=1, train_filter="fs")
    x = torch.randn(1, 1, 64, dtype=torch.float64)
    v = {"low_shelf_freq_hz": 300.0, "low_shelf_gain_db": 5.0, "low_shelf_q": 0.8, "peak1_freq_hz": 1500.0,
         "peak1_gain_db": -7.0, "peak1_q": 2.0, "high_shelf_freq_hz": 4000.0, "high_shelf_gain_db": 3.0,
         "high_shelf_q": 1.1}
    p = eq.values_to_tensor(v, dtype=torch.float64).requires_grad_(True)
    for mode in ("exact", "train"):
        assert torch.autograd.gradcheck(lambda p: eq(x, p, mode=mode), (p,), eps=1e-6, atol=1e-6)
    # time-varying parameters, exact path
    pt = p.detach().unsqueeze(-1).repeat(1, 1, 2)
    pt[0, 4, 1] = 9.0
    pt.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: eq(x, p, block_size=32), (pt,), eps=1e-6, atol=1e-6)


def test_biquad_sections_reproduce_the_effect():
    sr = 44100
    eq = create("peq", sr, n_peaks=2)
    values = eq.random_values(np.random.default_rng(5))
    secs = eq.biquad_sections(values)
    assert [s["kind"] for s in secs] == ["low_shelf", "peak", "peak", "high_shelf"]
    assert secs[1]["freq_hz"] == values["peak1_freq_hz"] and secs[3]["q"] == values["high_shelf_q"]
    x = _music(sr, 0.5, 2)
    y = x.copy()
    for s in secs:
        assert s["a"][0] == 1.0 and len(s["b"]) == 3 and all(isinstance(c, float) for c in s["b"] + s["a"])
        y = scipy.signal.lfilter(s["b"], s["a"], y, axis=-1)
    ours = eq(torch.from_numpy(x)[None], eq.values_to_tensor(values, dtype=torch.float64))[0].numpy()
    assert np.abs(ours - y).max() < 1e-10
    geq = create("geq", sr, bands="octave")
    gs = geq.biquad_sections({"band_1000hz_gain_db": 6.0})
    assert all(s["kind"] == "peak" and abs(s["q"] - math.sqrt(2)) < 1e-12 for s in gs)
    k = [s["gain_db"] for s in gs].index(6.0)
    assert abs(gs[k]["freq_hz"] - 1000.0) < 1e-9
    _, h = scipy.signal.freqz(gs[k]["b"], gs[k]["a"], worN=[1000.0], fs=sr)
    assert abs(20 * np.log10(abs(h[0])) - 6.0) < 1e-9


def test_parametric_eq_parameters_and_response():
    eq = create("peq", 44100)
    names = eq.param_names
    assert names[:3] == ["low_shelf_freq_hz", "low_shelf_gain_db", "low_shelf_q"]
    assert names[3:6] == ["peak1_freq_hz", "peak1_gain_db", "peak1_q"] and "peak4_q" in names and "peak5_q" not in names
    assert names[-3:] == ["high_shelf_freq_hz", "high_shelf_gain_db", "high_shelf_q"]
    assert eq.spec("peak2_freq_hz").scale == "log" and eq.spec("peak2_freq_hz").max == 19845.0
    assert eq.spec("high_shelf_freq_hz").max == pytest.approx(0.45 * 44100)
    assert create("peq", 16000).spec("peak1_freq_hz").max == pytest.approx(7200.0)
    freqs = [eq.spec(f"peak{i}_freq_hz").default for i in range(1, 5)]
    assert freqs == sorted(freqs) and freqs[-1] / freqs[0] > 10
    # defaults are flat: output == input (float64)
    x = torch.from_numpy(_music(44100, 0.2, 1))[None]
    y = eq(x, eq.values_to_tensor({}, dtype=torch.float64))
    assert torch.allclose(y, x, atol=1e-12)
    # a +12 dB peak at 1 kHz raises a 1 kHz sine by 12 dB
    sr = 44100
    t = torch.arange(sr, dtype=torch.float64) / sr
    s = (0.1 * torch.sin(2 * math.pi * 1000 * t)).reshape(1, 1, -1)
    y = eq(s, eq.values_to_tensor({"peak2_freq_hz": 1000.0, "peak2_gain_db": 12.0, "peak2_q": 2.0}, dtype=torch.float64))
    gain_db = 20 * math.log10(y[..., sr // 2:].abs().max().item() / 0.1)
    assert abs(gain_db - 12.0) < 0.01
    assert len(create("peq", 44100, n_peaks=0).param_names) == 6
    with pytest.raises(AfxError):
        create("peq", 44100, n_peaks=-1)
    with pytest.raises(AfxError):
        create("peq", 44100, bands="third")
    with pytest.raises(AfxError):
        eq.check_values({"peak1_gain_db": 30.0})


def test_graphic_eq_bands():
    g = create("geq", 44100)
    assert g.param_names == [f"band_{n}hz_gain_db" for n in
                             ("31p5", "63", "125", "250", "500", "1000", "2000", "4000", "8000", "16000")]
    assert abs(g.q - math.sqrt(2)) < 1e-12 and g.spec("band_1000hz_gain_db").min == -12.0
    third44 = create("geq", 44100, bands="third")
    third48 = create("geq", 48000, bands="third")
    assert len(third44.param_names) == 29 and third44.param_names[0] == "band_25hz_gain_db"
    assert len(third48.param_names) == 30 and third48.param_names[-1] == "band_20000hz_gain_db"
    assert abs(third44.q - 4.3185) < 1e-4
    low = create("geq", 16000, bands="third")
    assert low.param_names[-1] == "band_6300hz_gain_db"
    # adjacent constant-Q octave bands meet at half gain: +12 dB on two neighbours ~ +12 dB between them
    secs = g.biquad_sections({"band_1000hz_gain_db": 12.0, "band_2000hz_gain_db": 12.0})
    f_mid = math.sqrt(secs[5]["freq_hz"] * secs[6]["freq_hz"])  # geometric midpoint of the two centers
    h = np.ones(1, complex)
    for s in secs:
        h = h * scipy.signal.freqz(s["b"], s["a"], worN=[f_mid], fs=44100)[1]
    assert 9.0 < 20 * np.log10(abs(h[0])) < 15.0
    with pytest.raises(AfxError):
        create("geq", 44100, bands="fifth")
