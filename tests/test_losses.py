"""Losses: delay/polarity recovery of the DeepAFx loss, known values of each term, silence, batching,
gradients."""
from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from afxcli.losses import (
    LOSSES,
    DelayInvariantLoss,
    LogCoshSpectralLoss,
    LogMelL1Loss,
    LoudnessL1Loss,
    MultiResolutionSTFTLoss,
    ParameterMSELoss,
    align,
    estimate_lag,
    log_cosh,
    make_loss,
    parameter_mse,
    rms_normalize,
)

SR = 22050


def noise(channels: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, n)) * 0.3


def music_like(channels: int, n: int, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Harmonic notes (3 partials) with sharp onsets and exponential decays, plus a soft noise floor:
    strongly periodic locally, the hard case for a cross-correlation lag search."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    out = np.zeros((channels, n))
    for c in range(channels):
        y = 0.01 * rng.standard_normal(n)
        for onset in np.sort(rng.uniform(0, n / sr * 0.8, size=5)):
            f0 = rng.choice([110.0, 146.8, 196.0, 261.6, 329.6])
            i = int(onset * sr)
            tt = t[: n - i]
            env = np.exp(-tt / rng.uniform(0.05, 0.3))
            note = sum(a * np.sin(2 * np.pi * k * f0 * tt + rng.uniform(0, 2 * np.pi))
                       for k, a in [(1, 1.0), (2, 0.5), (3, 0.25)])
            y[i:] += env * note
        out[c] = y
    return out / np.abs(out).max() * 0.8


def shifted_batch(source: np.ndarray, n: int, lags: list[int], polarities: list[int], start: int = 400):
    """Targets ``source[start:start+n]`` and outputs ``pol * source[start-lag : start-lag+n]`` (so
    ``output[t] = pol * target[t - lag]`` on the overlap), stacked into ``(batch, channels, n)``."""
    tgt = np.stack([source[:, start:start + n] for _ in lags])
    out = np.stack([p * source[:, start - d:start - d + n] for d, p in zip(lags, polarities)])
    return torch.from_numpy(out).float(), torch.from_numpy(tgt).float()


LAGS = [0, 1, 2, 17, 150, 299, 300, -1, -64, -211, -300]


@pytest.mark.parametrize("kind", ["noise", "music"])
@pytest.mark.parametrize("channels", [1, 2])
def test_delay_invariant_recovers_lag_and_polarity_exactly(kind, channels):
    n = 4096
    src = (noise if kind == "noise" else music_like)(channels, n + 800, seed=channels)
    lags = LAGS + LAGS
    pols = [1] * len(LAGS) + [-1] * len(LAGS)
    out, tgt = shifted_batch(src, n, lags, pols)
    loss_fn = DelayInvariantLoss(max_lag_samples=300, reduction="none")
    loss, lag, pol = loss_fn(out, tgt, return_alignment=True)
    assert lag.tolist() == lags
    assert pol.tolist() == pols
    # aligned samples are bit-identical copies: every term is exactly zero
    assert torch.all(loss == 0)
    # without the lag search (max lag 0) the same pairs are far apart
    unaligned = DelayInvariantLoss(max_lag_samples=0, reduction="none")(out, tgt)
    moved = [i for i, d in enumerate(lags) if d != 0]
    assert torch.all(unaligned[moved] > 0.1)
    # the lag alone, without the loss
    lag2, sign = estimate_lag(out, tgt, 300)
    assert lag2.tolist() == lags and sign.tolist() == pols
    lag3, _ = estimate_lag(out.to(torch.bfloat16), tgt.to(torch.bfloat16), 300)
    assert lag3.tolist() == lags


def test_lag_bound_is_respected_and_none_means_length():
    n = 2048
    src = noise(1, n + 1200, seed=3)
    out, tgt = shifted_batch(src, n, [450, -450], [1, 1], start=600)
    lag, _ = estimate_lag(out, tgt, max_lag_samples=300)
    assert torch.all(lag.abs() <= 300) and 450 not in lag.abs().tolist()
    lag, _ = estimate_lag(out, tgt, max_lag_samples=None)
    assert lag.tolist() == [450, -450]
    loss = DelayInvariantLoss(max_lag_samples=None)(out, tgt)
    assert loss.item() == 0.0
    assert DelayInvariantLoss(max_lag_samples=300)(out, tgt).item() > 1.0
    with pytest.raises(ValueError):
        DelayInvariantLoss(max_lag_samples=-1)


def test_delay_invariant_terms_match_direct_computation():
    """One item, known lag: eq. 3 (min over polarity of the overlap L1) + eq. 4 with 1024-point FFTs."""
    rng = np.random.default_rng(5)
    n, lag = 3000, 40
    tgt = rng.standard_normal((1, 2, n))
    out = -0.5 * np.roll(tgt, lag, axis=-1) + 0.05 * rng.standard_normal((1, 2, n))
    out_t, tgt_t = torch.from_numpy(out), torch.from_numpy(tgt)
    for norm in ("l1", "l2"):
        fn = DelayInvariantLoss(max_lag_samples=100, freq_norm=norm, reduction="none")
        loss, found, pol = fn(out_t, tgt_t, return_alignment=True)
        assert found.item() == lag and pol.item() == -1
        o, y = out[0, :, lag:], tgt[0, :, :n - lag]
        l_time = min(np.abs(o - y).mean(), np.abs(o + y).mean())
        pad = lag + (-n) % 1024  # zeros past the overlap, then to a whole number of frames
        fo = np.abs(np.fft.rfft(np.pad(o, ((0, 0), (0, pad))).reshape(2, -1, 1024), axis=-1))
        fy = np.abs(np.fft.rfft(np.pad(y, ((0, 0), (0, pad))).reshape(2, -1, 1024), axis=-1))
        p = 1 if norm == "l1" else 2
        lo, ly = np.log(np.maximum(fo, 1e-7)), np.log(np.maximum(fy, 1e-7))
        l_freq = (np.abs(fo - fy) ** p).mean() + (np.abs(lo - ly) ** p).mean()
        assert loss.item() == pytest.approx(10 * l_time + l_freq, rel=1e-9)


def test_align_gathers_with_gradient():
    x = torch.arange(10.0).reshape(1, 1, 10).repeat(2, 1, 1).requires_grad_()
    y = torch.arange(10.0).reshape(1, 1, 10).repeat(2, 1, 1) * 100
    o, t, m = align(x, y, torch.tensor([3, -2]))
    assert o[0, 0].tolist() == [3, 4, 5, 6, 7, 8, 9, 0, 0, 0]
    assert t[0, 0].tolist() == [0, 100, 200, 300, 400, 500, 600, 0, 0, 0]
    assert o[1, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]
    assert t[1, 0].tolist() == [200, 300, 400, 500, 600, 700, 800, 900, 0, 0]
    assert m[:, 0].sum(-1).tolist() == [7, 8]
    o.sum().backward()
    assert x.grad[0, 0].tolist() == [0, 0, 0] + [1] * 7
    assert x.grad[1, 0].tolist() == [1] * 8 + [0, 0]


def test_mrstft_known_values():
    y = torch.from_numpy(noise(2, 8192, seed=1)).float()[None]
    fft_sizes = (64, 256, 1024)
    # log-magnitude term alone: a gain g shifts every log magnitude by log g
    log_only = MultiResolutionSTFTLoss(fft_sizes, sc_weight=0, lin_mag_weight=0, time_weight=0)
    assert log_only(0.5 * y, y).item() == pytest.approx(math.log(2.0), rel=1e-4)
    # spectral convergence of a silent output is ||S_y|| / ||S_y|| = 1
    sc_only = MultiResolutionSTFTLoss(fft_sizes, sc_weight=1, log_mag_weight=0, lin_mag_weight=0, time_weight=0)
    assert sc_only(torch.zeros_like(y), y).item() == pytest.approx(1.0, rel=1e-4)
    # linear magnitude L1 of a gain: (1 - g) * mean |S_y|, against scipy's STFT for one resolution
    from scipy.signal import get_window, stft

    lin_only = MultiResolutionSTFTLoss((256,), sc_weight=0, log_mag_weight=0, lin_mag_weight=1, time_weight=0)
    yy = y[0].double().numpy()
    padded = np.pad(yy, ((0, 0), (128, 128)))
    _, _, z = stft(padded, window="hann", nperseg=256, noverlap=128, boundary=None, padded=False,
                   detrend=False, return_onesided=True, scaling="spectrum")
    mag = np.abs(z) * get_window("hann", 256).sum()  # undo scipy's 1/sum(window) scaling
    assert lin_only(0.75 * y, y).item() == pytest.approx(0.25 * mag.mean(), rel=1e-3)
    # time term: alpha * MAE
    full = MultiResolutionSTFTLoss(fft_sizes, time_weight=100.0)
    spec = MultiResolutionSTFTLoss(fft_sizes, time_weight=0.0)
    assert (full(0.5 * y, y) - spec(0.5 * y, y)).item() == pytest.approx(100 * 0.5 * y.abs().mean().item(), rel=1e-4)
    assert full(y, y).item() == 0.0
    # default resolutions are the paper's, and short clips work (shorter than the 32768 window)
    default = MultiResolutionSTFTLoss()
    assert default.fft_sizes == (32, 128, 512, 2048, 8192, 32768) and default.hop_sizes[-1] == 16384
    assert torch.isfinite(default(0.5 * y[..., :1000], y[..., :1000]))


def test_log_mel_matches_librosa_and_is_level_invariant():
    y_np = music_like(2, 8192, seed=2)
    x_np = noise(2, 8192, seed=4)
    y = torch.from_numpy(y_np).float()[None]
    x = torch.from_numpy(x_np).float()[None]
    fn = LogMelL1Loss(SR, n_fft=1024, hop_samples=256, n_mels=64)
    # level-invariant (RMS normalization), and zero for a scaled copy
    assert fn(0.1 * y, y).item() < 1e-5
    assert fn(x, y).item() > 0.5
    # value against librosa's mel spectrogram of the RMS-normalized signals
    def ref_logmel(a):
        a = a / np.sqrt(np.mean(a ** 2))
        m = librosa.feature.melspectrogram(y=a, sr=SR, n_fft=1024, hop_length=256, n_mels=64, power=1.0,
                                           center=True, pad_mode="constant", htk=False, norm="slaney")
        return np.log(m + 1e-5)
    expected = np.abs(ref_logmel(x_np) - ref_logmel(y_np)).mean()
    assert fn(x, y).item() == pytest.approx(expected, rel=1e-4)
    # without normalization a gain is no longer free
    raw = LogMelL1Loss(SR, n_fft=1024, hop_samples=256, n_mels=64, normalize_rms=False)
    assert raw(0.1 * y, y).item() > 1.0


def test_log_cosh_and_frequency_weighting():
    rng = np.random.default_rng(7)
    out = torch.from_numpy(rng.standard_normal((2, 1, 2048)) * 3)
    tgt = torch.from_numpy(rng.standard_normal((2, 1, 2048)))
    plain = LogCoshSpectralLoss(spectral_weight=0.0)
    expected = np.mean(np.log(np.cosh((out - tgt).numpy())))
    assert plain(out, tgt).item() == pytest.approx(expected, rel=1e-10)
    # no overflow where cosh would: log cosh(d) -> |d| - log 2
    big = torch.tensor([1000.0, -1000.0, 0.0])
    assert torch.allclose(log_cosh(big), torch.tensor([1000 - math.log(2), 1000 - math.log(2), 0.0]))
    # weights: exp(span * (k/K)^alpha); alpha = 0 disables
    w = LogCoshSpectralLoss(alpha=1.0).freq_weight
    assert w[0].item() == pytest.approx(1.0) and w[-1].item() == pytest.approx(math.exp(7.0), rel=1e-5)
    assert torch.all(LogCoshSpectralLoss(alpha=0.0).freq_weight == 1)
    # the regularizer acts on the output's spectrum, penalizing high frequencies more
    t = torch.arange(8192) / SR
    low = torch.sin(2 * np.pi * 200 * t).reshape(1, 1, -1)
    high = torch.sin(2 * np.pi * 8000 * t).reshape(1, 1, -1)
    reg = LogCoshSpectralLoss(spectral_weight=1.0)
    assert reg(high, high).item() > 20 * reg(low, low).item() > 0
    flat = LogCoshSpectralLoss(spectral_weight=1.0, alpha=0.0)
    assert flat(high, high).item() == pytest.approx(flat(low, low).item(), rel=0.05)


def test_parameter_mse():
    q = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]])
    p = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.2, 0.5]])
    assert parameter_mse(p, q, reduction="none").tolist() == pytest.approx([1.25 / 3, 0.09 / 3])
    assert ParameterMSELoss()(p, q).item() == pytest.approx((1.25 + 0.09) / 6)
    blocks = torch.rand(2, 3, 5)
    assert parameter_mse(blocks, blocks).item() == 0.0
    with pytest.raises(ValueError):
        parameter_mse(q, q[:, :2])


def all_losses():
    return [DelayInvariantLoss(max_lag_samples=50), MultiResolutionSTFTLoss(fft_sizes=(32, 256, 2048)),
            LogMelL1Loss(SR, n_fft=512, hop_samples=128, n_mels=40), LogCoshSpectralLoss(spectral_weight=1e-3)]


@pytest.mark.parametrize("loss_fn", all_losses(), ids=lambda f: type(f).__name__)
def test_silence_batch_and_channels(loss_fn):
    rng = np.random.default_rng(11)
    zeros = torch.zeros(3, 2, 1500)
    sig = torch.from_numpy(rng.standard_normal((3, 2, 1500))).float()
    for out, tgt in [(zeros, zeros), (sig, zeros), (zeros, sig), (sig, 0.5 * sig)]:
        o = out.clone().requires_grad_()
        loss = loss_fn(o, tgt)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert torch.all(torch.isfinite(o.grad))
    assert loss_fn(zeros, zeros).item() == pytest.approx(0.0, abs=1e-6)
    # per-item values do not depend on the rest of the batch; mono works
    loss_fn.reduction = "none"
    try:
        out = sig + 0.3 * torch.roll(sig, 7, dims=-1)
        per_item = loss_fn(out, sig)
        assert per_item.shape == (3,)
        single = torch.stack([loss_fn(out[i:i + 1], sig[i:i + 1])[0] for i in range(3)])
        assert torch.allclose(per_item, single, rtol=1e-5, atol=1e-7)
        mono = loss_fn(out[:, :1], sig[:, :1])
        assert mono.shape == (3,) and torch.all(mono > 0)
    finally:
        loss_fn.reduction = "mean"
    # gradient on a non-degenerate pair is non-zero and points downhill
    o = (0.5 * sig + 0.3 * torch.roll(sig, 5, dims=-1)).requires_grad_()
    loss = loss_fn(o, sig)
    loss.backward()
    assert o.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = loss_fn(o - 1e-3 * o.grad / o.grad.abs().max(), sig)
    assert stepped.item() < loss.item()


@pytest.mark.parametrize("loss_fn", [
    DelayInvariantLoss(max_lag_samples=8, n_fft=32),
    MultiResolutionSTFTLoss(fft_sizes=(16, 32), sc_weight=1.0, time_weight=1.0),
    LogMelL1Loss(8000, n_fft=64, hop_samples=16, n_mels=8),
    LogCoshSpectralLoss(spectral_weight=0.1, n_fft=32, hop_samples=12),
], ids=lambda f: type(f).__name__)
def test_gradcheck(loss_fn):
    rng = np.random.default_rng(3)
    tgt = torch.from_numpy(rng.standard_normal((2, 2, 96)))
    out = (0.7 * torch.roll(tgt, 3, dims=-1) + 0.2 * torch.from_numpy(rng.standard_normal((2, 2, 96))))
    out.requires_grad_()
    if isinstance(loss_fn, LogMelL1Loss):
        loss_fn = loss_fn.double()
    assert torch.autograd.gradcheck(lambda o: loss_fn(o, tgt), (out,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_rms_normalize_and_validation():
    x = torch.from_numpy(noise(2, 1000)).float()[None] * 5
    assert torch.sqrt(rms_normalize(x).pow(2).mean()).item() == pytest.approx(1.0, rel=1e-5)
    assert torch.all(rms_normalize(torch.zeros(1, 1, 10)) == 0)
    fn = MultiResolutionSTFTLoss()
    with pytest.raises(ValueError):
        fn(torch.zeros(1, 2, 100), torch.zeros(1, 1, 100))
    with pytest.raises(ValueError):
        fn(torch.zeros(2, 100), torch.zeros(2, 100))
    with pytest.raises(ValueError):
        MultiResolutionSTFTLoss(reduction="sum")


def test_make_loss_by_name():
    assert set(LOSSES) == {"delay_invariant", "mrstft", "log_mel", "logcosh"}
    assert isinstance(make_loss("delay_invariant", max_lag_samples=10), DelayInvariantLoss)
    assert make_loss("log_mel", 16000, n_mels=32).n_mels == 32
    with pytest.raises(ValueError):
        make_loss("log_mel")
    with pytest.raises(ValueError):
        make_loss("nope")


@pytest.mark.parametrize("sr,channels", [(16000, 1), (24000, 2), (44100, 2)])
def test_loudness_loss_is_ungated_bs1770_and_reads_a_gain(sr, channels):
    """The frequency-domain K-weighting equals the causal BS.1770-4 filters (pyloudnorm's design)
    run over the signal; a gain of g dB moves the loudness by g LU; the gradient reaches the input."""
    from scipy.signal import sosfilt

    from afxcli.filters import k_weighting_sos

    x = noise(channels, 3 * sr, seed=sr) * 0.1
    sos = k_weighting_sos(sr)
    sos = np.concatenate([sos[:, :3] / sos[:, 3:4], sos[:, 3:] / sos[:, 3:4]], axis=1)
    y = sosfilt(sos, x.astype(np.float64), axis=-1)
    want = -0.691 + 10 * np.log10(np.sum(np.mean(y ** 2, axis=-1)))
    loss = LoudnessL1Loss(sr)
    xt = torch.from_numpy(x).float()[None]
    assert float(loss.loudness(xt)[0]) == pytest.approx(want, abs=1e-3)
    out = (xt * 10 ** (-2.5 / 20)).requires_grad_(True)
    value = loss(out, xt)
    assert float(value.detach()) == pytest.approx(2.5, abs=1e-4)
    value.backward()
    assert out.grad is not None and float(out.grad.abs().sum()) > 0
    per_item = LoudnessL1Loss(sr, reduction="none")(torch.cat([xt, 0.5 * xt]), torch.cat([xt, xt]))
    assert per_item.shape == (2,) and float(per_item[0]) < 1e-5 and float(per_item[1]) == pytest.approx(6.0206, abs=1e-3)
