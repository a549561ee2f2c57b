"""Linkwitz-Riley crossover: allpass band sum, -6 dB crossings, gradients, time-varying crossovers."""
import numpy as np
import pytest
import torch

from afxcli.dsp.crossover import linkwitz_riley_split


def _impulse(n=1 << 15, batch=1, channels=1):
    x = torch.zeros(batch, channels, n, dtype=torch.float64)
    x[..., 0] = 1.0
    return x


def _dtft_db(h: np.ndarray, f_hz: float, sr: float) -> float:
    n = np.arange(h.shape[-1])
    return float(20 * np.log10(abs(np.sum(h * np.exp(-2j * np.pi * f_hz / sr * n)))))


@pytest.mark.parametrize("sr,crossovers", [
    (44100, [1000.0]),
    (48000, [120.0, 2500.0]),
    (44100, [60.0, 250.0, 1000.0, 4000.0, 12000.0]),
    (24000, [200.0, 3000.0, 9000.0]),
])
def test_band_sum_is_flat_and_bands_cross_at_minus_6db(sr, crossovers):
    h = linkwitz_riley_split(_impulse(), torch.tensor([crossovers], dtype=torch.float64), sr)
    assert h.shape == (1, len(crossovers) + 1, 1, 1 << 15)
    bands = h[0, :, 0].numpy()
    total = np.abs(np.fft.rfft(bands.sum(0), n=1 << 16))
    total_db = 20 * np.log10(total)
    assert np.max(np.abs(total_db)) < 0.01
    # the sum is a true allpass, not the identity: its phase is not zero
    assert np.max(np.abs(np.angle(np.fft.rfft(bands.sum(0))))) > 1.0
    for k, f in enumerate(crossovers):
        lo, hi = _dtft_db(bands[k], f, sr), _dtft_db(bands[k + 1], f, sr)
        # LR4: each side is -6.02 dB at its crossover; neighbouring crossovers (>= 2 octaves away)
        # shift it by at most a few hundredths of a dB
        assert abs(lo + 6.0206) < 0.1 and abs(hi + 6.0206) < 0.1, (f, lo, hi)
    if len(crossovers) == 1:
        f = crossovers[0]
        assert abs(_dtft_db(bands[0], f, sr) + 6.0206) < 1e-3
        # 24 dB/octave: two octaves above the crossover the low band is ~ -48 dB
        assert _dtft_db(bands[0], 4 * f, sr) < -45
        assert _dtft_db(bands[1], f / 4, sr) < -45


def test_music_like_signal_reconstructs_through_allpass_and_batch_is_independent():
    sr = 44100
    rng = np.random.default_rng(0)
    t = np.arange(sr // 2) / sr
    x = np.stack([np.sin(2 * np.pi * 110 * t) * 0.3 + rng.standard_normal(t.size) * 0.05 * np.exp(-8 * (t % 0.25)),
                  np.sin(2 * np.pi * 3000 * t) * 0.2])
    xb = torch.tensor(np.stack([x, x[::-1].copy()]))
    fc = torch.tensor([[200.0, 2000.0], [500.0, 5000.0]], dtype=torch.float64)
    bands = linkwitz_riley_split(xb, fc, sr)
    assert bands.shape == (2, 3, 2, sr // 2)
    # batch item 1 alone gives the same result
    alone = linkwitz_riley_split(xb[1:], fc[1:], sr)
    assert torch.allclose(alone[0], bands[1], atol=1e-12)
    # energy splits into the expected bands: the 3 kHz sine of channel 1 (item 0) sits in the top band
    e = bands[0, :, 1].pow(2).mean(-1)
    assert e[2] > 50 * e[0] and e[2] > 10 * e[1]
    # float32 input gives float32 output close to the float64 one
    b32 = linkwitz_riley_split(xb.float(), fc.float(), sr)
    assert b32.dtype == torch.float32 and torch.allclose(b32.double(), bands, atol=1e-6)


def test_gradients_reach_audio_and_crossovers():
    sr = 8000
    x = torch.randn(1, 1, 64, dtype=torch.float64, requires_grad=True)
    fc = torch.tensor([[300.0, 1500.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, f: linkwitz_riley_split(a, f, sr), (x, fc), eps=1e-6, atol=1e-6)
    # finite at the range edges used by the multiband effects
    fc_edge = torch.tensor([[20.0, 0.45 * sr]], dtype=torch.float64, requires_grad=True)
    y = linkwitz_riley_split(torch.randn(1, 2, 2000, dtype=torch.float64), fc_edge, sr)
    (y[:, 0] ** 2).sum().backward()
    assert torch.all(torch.isfinite(fc_edge.grad)) and torch.any(fc_edge.grad != 0)


def test_time_varying_crossovers_match_blockwise_static_filters_with_state_kept():
    sr = 16000
    x = torch.randn(1, 1, 3000, dtype=torch.float64)
    fc = torch.tensor([[[300.0, 500.0, 900.0], [2000.0, 2500.0, 3500.0]]], dtype=torch.float64)
    y = linkwitz_riley_split(x, fc, sr, block_size=1000)
    # first block equals the static split with block-0 values
    y0 = linkwitz_riley_split(x[..., :1000], fc[..., 0], sr)
    assert torch.allclose(y[..., :1000], y0, atol=1e-12)
    # later blocks differ from a fresh static split (state carried, coefficients changed)
    y_static = linkwitz_riley_split(x, fc[..., 0], sr)
    assert not torch.allclose(y[..., 1000:], y_static[..., 1000:], atol=1e-3)
    fg = fc[..., :2].clone().requires_grad_(True)
    small = torch.randn(1, 1, 48, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, f: linkwitz_riley_split(a, f, sr, block_size=24), (small, fg),
                                    eps=1e-6, atol=1e-6)


def test_rejects_bad_crossovers():
    x = torch.zeros(1, 1, 100)
    with pytest.raises(ValueError):
        linkwitz_riley_split(x, torch.tensor([[2000.0, 1000.0]]), 44100)
    with pytest.raises(ValueError):
        linkwitz_riley_split(x, torch.tensor([[30000.0]]), 44100)
