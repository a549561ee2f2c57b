"""Biquad coefficients (JUCE/RBJ), the exact time-varying filter and its adjoint, frequency sampling."""
import math

import numpy as np
import pedalboard
import pytest
import scipy.signal
import torch

from afxcli.dsp.biquad import (SECTION_KINDS, biquad, biquad_cascade, db_to_gain, freqz, fs_filter,
                               juce_coefficients_f32, make_allpass, make_high_pass, make_high_shelf,
                               make_low_pass, make_low_shelf, make_peak_filter)


def _music(sr: float, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Sines + decaying noise bursts (transients every 250 ms), peak ~0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    out = []
    for c in range(channels):
        x = (0.25 * np.sin(2 * np.pi * (55 * (c + 1)) * t) + 0.15 * np.sin(2 * np.pi * 440 * t + c)
             + 0.1 * np.sin(2 * np.pi * 3520 * t) + 0.3 * rng.standard_normal(t.size) * np.exp(-30 * (t % 0.25)))
        out.append(x)
    x = np.stack(out)
    return x / np.abs(x).max() * 0.9


def _response_db(c: torch.Tensor, f_hz: float, sr: float) -> float:
    c = c.detach().numpy().astype(np.float64)
    w, h = scipy.signal.freqz(c[:3], [1.0, c[3], c[4]], worN=[f_hz], fs=sr)
    return float(20 * np.log10(abs(h[0])))


def test_coefficients_have_the_cookbook_responses():
    sr = 48000.0
    pk = make_peak_filter(sr, 1000.0, 2.0, db_to_gain(9.0))
    assert abs(_response_db(pk, 1000.0, sr) - 9.0) < 1e-9
    assert abs(_response_db(pk, 20.0, sr)) < 0.05
    ls = make_low_shelf(sr, 200.0, 0.7, db_to_gain(-12.0))
    assert abs(_response_db(ls, 1e-3, sr) + 12.0) < 1e-6 and abs(_response_db(ls, 20000.0, sr)) < 0.01
    assert abs(_response_db(ls, 200.0, sr) + 6.0) < 1e-6  # shelf midpoint = half the dB gain
    hs = make_high_shelf(sr, 5000.0, 0.7, db_to_gain(6.0))
    assert abs(_response_db(hs, sr / 2 - 1e-6, sr) - 6.0) < 1e-3 and abs(_response_db(hs, 20.0, sr)) < 1e-3
    lp, hp = make_low_pass(sr, 2000.0), make_high_pass(sr, 2000.0)
    assert abs(_response_db(lp, 2000.0, sr) + 3.0103) < 1e-3 and abs(_response_db(hp, 2000.0, sr) + 3.0103) < 1e-3
    ap = make_allpass(sr, 2000.0)
    for f in (50.0, 2000.0, 15000.0):
        assert abs(_response_db(ap, f, sr)) < 1e-9
    # broadcasting: (3,) frequencies x scalar q/gain -> (3, 5)
    assert make_peak_filter(sr, torch.tensor([100.0, 1e3, 1e4]), 1.0, 2.0).shape == (3, 5)


def test_float32_path_is_bit_identical_to_pedalboard():
    rng = np.random.default_rng(3)
    plugins = {"peak": pedalboard.PeakFilter, "low_shelf": pedalboard.LowShelfFilter,
               "high_shelf": pedalboard.HighShelfFilter}
    for sr in (44100, 48000):
        x = _music(sr, 0.5, channels=2, seed=sr).astype(np.float32)
        for _ in range(12):
            kind = list(plugins)[rng.integers(3)]
            f = float(np.exp(rng.uniform(math.log(20), math.log(20000))))
            q = float(np.exp(rng.uniform(math.log(0.1), math.log(10))))
            g = float(rng.uniform(-18, 18))
            ref = plugins[kind](f, g, q)(x, sr)
            c = torch.from_numpy(juce_coefficients_f32(SECTION_KINDS[kind], sr, f, q, g))
            y = biquad(torch.from_numpy(x)[None], c[None])[0].numpy()
            assert np.array_equal(y, ref), (kind, f, q, g, np.abs(y - ref).max())
            # and the float64 formulas agree with the float32 replica to float32 precision
            c64 = {"peak": make_peak_filter, "low_shelf": make_low_shelf,
                   "high_shelf": make_high_shelf}[kind](sr, f, q, db_to_gain(g))
            assert torch.allclose(c64, c.double(), rtol=0, atol=2e-6)


def test_static_filter_matches_scipy_lfilter():
    sr = 44100
    x = _music(sr, 0.3, channels=2)
    c = torch.stack([make_peak_filter(sr, 300.0, 3.0, db_to_gain(12.0)),
                     make_low_shelf(sr, 80.0, 0.5, db_to_gain(-9.0))])  # batch of 2
    xb = torch.tensor(np.stack([x, x]))
    y = biquad(xb, c).numpy()
    for b in range(2):
        cb = c[b].numpy()
        ref = scipy.signal.lfilter(cb[:3], [1.0, cb[3], cb[4]], x, axis=-1)
        assert np.max(np.abs(y[b] - ref)) < 1e-12


def test_time_varying_filter_matches_blockwise_lfilter_with_state_carried():
    sr = 22050
    x = _music(sr, 0.2, channels=2)
    T, block = x.shape[-1], 512
    K = math.ceil(T / block)
    f = torch.exp(torch.linspace(math.log(100), math.log(8000), K, dtype=torch.float64))
    c = make_peak_filter(sr, f, 4.0, db_to_gain(10.0)).T.unsqueeze(0)  # (1, 5, K)
    y = biquad(torch.tensor(x).unsqueeze(0), c, block_size=block)[0].numpy()
    zi = np.zeros((2, 2))
    ref = []
    for k in range(K):
        ck = c[0, :, k].numpy()
        seg, zi = scipy.signal.lfilter(ck[:3], [1.0, ck[3], ck[4]], x[:, k * block:(k + 1) * block], axis=-1, zi=zi)
        ref.append(seg)
    assert np.max(np.abs(y - np.concatenate(ref, axis=-1))) < 1e-12
    # block_size=None spreads the K blocks over the signal (ceil(T / K) samples each)
    y2 = biquad(torch.tensor(x).unsqueeze(0), c)[0]
    y3 = biquad(torch.tensor(x).unsqueeze(0), c, block_size=math.ceil(T / K))[0]
    assert torch.equal(y2, y3)


def _stable_coeffs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = 200 + 3000 * torch.rand(n, generator=g, dtype=torch.float64)
    q = 0.5 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    gain = db_to_gain(-12 + 24 * torch.rand(n, generator=g, dtype=torch.float64))
    return make_peak_filter(16000, f, q, gain)  # (n, 5)


def test_gradcheck_static_coefficients():
    x = torch.randn(2, 2, 64, dtype=torch.float64, requires_grad=True)
    c = _stable_coeffs(2, 0).requires_grad_(True)
    assert torch.autograd.gradcheck(biquad, (x, c), eps=1e-6, atol=1e-7)


def test_gradcheck_time_varying_coefficients():
    x = torch.randn(1, 2, 64, dtype=torch.float64, requires_grad=True)
    c = _stable_coeffs(4, 1).T.unsqueeze(0).contiguous().requires_grad_(True)  # (1, 5, 4)
    assert torch.autograd.gradcheck(lambda a, b: biquad(a, b, 16), (x, c), eps=1e-6, atol=1e-7)
    # uneven blocks: last block longer than block_size
    c3 = _stable_coeffs(3, 2).T.unsqueeze(0).contiguous().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: biquad(a, b, 20), (x, c3), eps=1e-6, atol=1e-7)


def test_gradcheck_through_coefficient_formulas_and_cascade():
    sr = 16000
    x = torch.randn(1, 1, 64, dtype=torch.float64)
    p = torch.tensor([[500.0, 1.5, 6.0], [3000.0, 0.8, -4.0]], dtype=torch.float64, requires_grad=True)

    def run(p):
        sec = torch.stack([make_low_shelf(sr, p[0, 0], p[0, 1], db_to_gain(p[0, 2])),
                           make_peak_filter(sr, p[1, 0], p[1, 1], db_to_gain(p[1, 2]))]).unsqueeze(0)
        return biquad_cascade(x, sec)

    assert torch.autograd.gradcheck(run, (p,), eps=1e-6, atol=1e-7)


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2)))


@pytest.mark.parametrize("sr,n", [(44100, 131072), (24000, 65536)])
def test_frequency_sampling_matches_exact_filtering(sr, n):
    rng = np.random.default_rng(sr)
    x = torch.tensor(_music(sr, n / sr, channels=1, seed=1)[None])
    snrs = []
    for _ in range(6):
        secs = []
        for kind, lo_f in (("low_shelf", 20), ("peak", 20), ("peak", 20), ("high_shelf", 1000)):
            f = float(np.exp(rng.uniform(math.log(lo_f), math.log(min(20000, 0.45 * sr)))))
            q = float(np.exp(rng.uniform(math.log(0.1 if kind == "peak" else 0.3), math.log(10 if kind == "peak" else 2))))
            g = db_to_gain(float(rng.uniform(-18, 18)))
            fn = {"peak": make_peak_filter, "low_shelf": make_low_shelf, "high_shelf": make_high_shelf}[kind]
            secs.append(fn(sr, f, q, g))
        sec = torch.stack(secs).unsqueeze(0)
        exact = biquad_cascade(x, sec).numpy()
        fs = fs_filter(x, sec).numpy()
        snrs.append(_snr_db(exact, fs))
    assert min(snrs) >= 60.0, snrs
    # freqz agrees with scipy
    w, h = scipy.signal.freqz(sec[0, 1, :3].numpy(), [1, *sec[0, 1, 3:].numpy()], worN=64, include_nyquist=True)
    H = freqz(sec[0, 1], 126).numpy()
    assert np.allclose(H, h, atol=1e-10)
