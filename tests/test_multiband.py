"""Multiband compressor / gate: neutral settings give the allpass band sum (flat magnitude),
compression acts on the loud band only, gating acts on the quiet band only, gradients are finite."""
import numpy as np
import pytest
import torch

from afxcli.dsp.crossover import linkwitz_riley_split
from afxcli.errors import AfxError
from afxcli.effects import create
from afxcli.params import max_freq_hz

KINDS = ["multiband_compressor", "multiband_gate"]


def neutral(e):
    """Ratio 1 / threshold at its max (compressor) or min (gate): every band untouched."""
    v = e.default_values()
    for k in range(e.n_bands):
        v[f"band{k + 1}_ratio"] = 1.0
        th = e.spec(f"band{k + 1}_threshold_db")
        v[f"band{k + 1}_threshold_db"] = th.max if e.kind == "multiband_compressor" else th.min
    return v


def band_level_db(y, sr, f_hz):
    """Level (dB) of the component at ``f_hz`` of ``y`` ``(samples,)`` over its second half."""
    seg = y[len(y) // 2:]
    t = np.arange(len(seg)) / sr
    amp = 2 * np.abs(np.mean(seg * np.exp(-2j * np.pi * f_hz * t)))
    return 20 * np.log10(amp)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_bands", [2, 3, 4])
def test_neutral_is_allpass_band_sum(kind, n_bands):
    sr = 44100
    e = create(kind, sr, n_bands=n_bands)
    v = neutral(e)
    n = 8192
    imp = torch.zeros(1, 1, n, dtype=torch.float64)
    imp[..., 0] = 1.0
    p = e.values_to_tensor(v, dtype=torch.float64)
    y = e(imp, p)
    cross = p[:, : n_bands - 1]
    ref = linkwitz_riley_split(imp, cross, sr).sum(dim=1)
    assert torch.allclose(y, ref, atol=1e-12)
    mag = np.abs(np.fft.rfft(y[0, 0].numpy()))
    assert np.abs(mag - 1).max() < 1e-6  # flat magnitude
    assert torch.abs(y - imp).max() > 1e-2  # but not the identity: a real allpass


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_crossover_ranges_ascending_disjoint(sr):
    e = create("multiband_compressor", sr, n_bands=4)
    specs = [e.spec(f"crossover{j}_hz") for j in (1, 2, 3)]
    assert specs[0].min == pytest.approx(20.0)
    assert specs[-1].max == pytest.approx(max_freq_hz(sr))
    for a, b in zip(specs, specs[1:]):
        assert a.max <= b.min + 1e-9
    rng = np.random.default_rng(0)
    for _ in range(20):  # any draw is ascending
        v = e.random_values(rng)
        c = [v[f"crossover{j}_hz"] for j in (1, 2, 3)]
        assert c == sorted(c)


def test_compression_reduces_only_the_loud_band():
    sr = 44100
    t = np.arange(sr) / sr
    x = 0.8 * np.sin(2 * np.pi * 80 * t) + 0.05 * np.sin(2 * np.pi * 6000 * t)
    xt = torch.from_numpy(x)[None, None]
    e = create("multiband_compressor", sr, n_bands=3)
    v = neutral(e)
    v.update({"crossover1_hz": 300.0, "crossover2_hz": 2000.0,
              "band1_threshold_db": -30.0, "band1_ratio": 10.0, "band1_attack_ms": 1.0})
    with torch.no_grad():
        y = e(xt, e.values_to_tensor(v, dtype=torch.float64))[0, 0].numpy()
    d_low = band_level_db(y, sr, 80) - band_level_db(x, sr, 80)
    d_high = band_level_db(y, sr, 6000) - band_level_db(x, sr, 6000)
    assert d_low < -10.0  # 0.8 peak (-2 dB) above -30 dB at 10:1
    assert abs(d_high) < 0.1
    # band 1's makeup raises the low component (the other bands leak a little at 80 Hz) only
    v["band1_makeup_db"] = 6.0
    with torch.no_grad():
        y2 = e(xt, e.values_to_tensor(v, dtype=torch.float64))[0, 0].numpy()
    assert 5.0 < band_level_db(y2, sr, 80) - band_level_db(y, sr, 80) < 6.5
    assert abs(band_level_db(y2, sr, 6000) - band_level_db(y, sr, 6000)) < 0.05
    # makeup on every band is exactly a gain
    for k in (2, 3):
        v[f"band{k}_makeup_db"] = 6.0
    with torch.no_grad():
        y3 = e(xt, e.values_to_tensor(v, dtype=torch.float64))[0, 0].numpy()
    y0 = y * 10 ** (6 / 20)
    np.testing.assert_allclose(y3, y0, atol=1e-12)


def test_gate_attenuates_only_the_quiet_band():
    sr = 44100
    t = np.arange(sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 100 * t) + 0.003 * np.sin(2 * np.pi * 5000 * t)
    xt = torch.from_numpy(x)[None, None]
    e = create("multiband_gate", sr, n_bands=2)
    v = neutral(e)
    v.update({"crossover1_hz": 1000.0, "band1_threshold_db": -40.0, "band1_ratio": 4.0,
              "band2_threshold_db": -30.0, "band2_ratio": 4.0})
    with torch.no_grad():
        y = e(xt, e.values_to_tensor(v, dtype=torch.float64))[0, 0].numpy()
    assert band_level_db(y, sr, 5000) - band_level_db(x, sr, 5000) < -20.0
    assert abs(band_level_db(y, sr, 100) - band_level_db(x, sr, 100)) < 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_time_varying_constant_blocks_equal_static(kind):
    sr = 16000
    e = create(kind, sr)
    x = torch.randn(2, 2, 4000, dtype=torch.float64) * torch.linspace(0, 1, 4000, dtype=torch.float64)
    p = torch.cat([e.values_to_tensor(e.random_values(np.random.default_rng(s)), dtype=torch.float64)
                   for s in (1, 2)])
    static = e(x, p)
    tv = e(x, p.unsqueeze(-1).repeat(1, 1, 4), block_size=1000)
    assert torch.allclose(static, tv, atol=1e-12)
    # batch items are processed with their own parameters
    assert torch.allclose(e(x[1:], p[1:]), static[1:], atol=1e-12)
    # changing one block's parameters changes the output from that block on only
    p2 = p.unsqueeze(-1).repeat(1, 1, 4)
    i = e.param_names.index("band1_threshold_db")
    p2[:, i, 2] = -50.0 if kind == "multiband_compressor" else -10.0
    tv2 = e(x, p2, block_size=1000)
    assert torch.allclose(tv2[..., :2000], static[..., :2000], atol=1e-12)
    assert (tv2[..., 2000:] - static[..., 2000:]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("edge", ["min", "max"])
def test_gradients_finite_at_range_edges(kind, edge):
    sr = 44100
    e = create(kind, sr)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 2, 2000, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    vals = {s.name: (s.min if edge == "min" else s.max) for s in e.specs}
    p = e.values_to_tensor(vals, dtype=torch.float64).requires_grad_()
    (e(x, p) ** 2).sum().backward()
    assert torch.all(torch.isfinite(p.grad)) and torch.all(torch.isfinite(x.grad))
    assert p.grad[0, 0].abs() > 0  # the crossover receives gradient


def test_options_validated():
    with pytest.raises(AfxError):
        create("multiband_compressor", 44100, n_bands=1)
    with pytest.raises(AfxError):
        create("multiband_gate", 44100, n_bands=2.5)
    with pytest.raises(AfxError):
        create("multiband_gate", 44100, bands=3)
    e = create("multiband_compressor", 44100)
    assert e.n_bands == 3 and len(e.param_names) == 2 + 3 * 5
    assert "band3_makeup_db" in e.param_names
    assert len(create("multiband_gate", 44100, n_bands=4).param_names) == 3 + 4 * 4
