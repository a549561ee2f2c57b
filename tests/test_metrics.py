"""Metrics: known values (BS.1770 sine loudness, sine RMS / crest / true peak), distances of a signal
with itself and with changed copies, silence and shape handling."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from afxcli import metrics as M

SR = 48000


def sine(freq_hz: float, seconds: float, sr: int = SR, phase: float = 0.0, amp: float = 1.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * sr)) / sr + phase)


def noise(channels: int, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * sr))) * 0.1


def lowpass(x: np.ndarray, cutoff_hz: float, sr: int = SR) -> np.ndarray:
    return sosfilt(butter(4, cutoff_hz, fs=sr, output="sos"), x, axis=-1)


def test_lufs_of_full_scale_sine():
    """BS.1770: a 0 dBFS 997 Hz sine in one channel reads −3.01 LKFS. pyloudnorm treats a mono file
    as that one channel (−3.05 here, its K-filter at 997 Hz); the same sine on both channels adds
    +3.01 dB (dual mono)."""
    x = sine(997.0, 3.0)
    assert M.lufs(x, SR) == pytest.approx(-3.01, abs=0.1)
    assert M.lufs(x[None], SR) == pytest.approx(-3.01, abs=0.1)
    assert M.lufs(np.stack([x, x]), SR) == pytest.approx(0.0, abs=0.1)
    assert M.lufs(sine(1000.0, 3.0), SR) == pytest.approx(-3.01, abs=0.1)
    assert M.lufs(0.5 * x, SR) == pytest.approx(M.lufs(x, SR) - 20 * math.log10(2), abs=1e-6)
    assert M.lufs(sine(997.0, 3.0, sr=44100), 44100) == pytest.approx(-3.01, abs=0.1)
    assert M.lufs(np.zeros(SR), SR) == float("-inf")
    assert math.isnan(M.lufs(x[: SR // 10], SR))  # shorter than one 400 ms block


def test_rms_crest_factor_of_sine_and_square():
    x = sine(1000.0, 1.0)
    assert M.rms_dbfs(x) == pytest.approx(-3.0103, abs=0.001)
    assert M.crest_factor_db(x) == pytest.approx(3.0103, abs=0.001)
    square = np.sign(sine(1000.0, 1.0, phase=0.1))
    assert M.rms_dbfs(square) == pytest.approx(0.0, abs=1e-9)
    assert M.crest_factor_db(square) == pytest.approx(0.0, abs=1e-9)
    assert M.rms_dbfs(np.stack([x, 0.5 * x])) == pytest.approx(10 * math.log10((0.5 + 0.125) / 2), abs=1e-3)
    assert M.rms_dbfs(np.zeros((2, 100))) == float("-inf")
    assert math.isnan(M.crest_factor_db(np.zeros(100)))


def faded(x: np.ndarray, n_fade: int = 2000) -> np.ndarray:
    """Raised-cosine fades, so the interpolation filter sees no abrupt start (an abrupt start rings)."""
    ramp = np.sin(np.linspace(0, np.pi / 2, n_fade)) ** 2
    g = np.ones(x.shape[-1])
    g[:n_fade], g[-n_fade:] = ramp, ramp[::-1]
    return x * g


@pytest.mark.parametrize("sr", [44100, 48000])
def test_true_peak_finds_inter_sample_peak(sr):
    """A full-scale sine at fs/4 with a 45° phase: every sample is ±0.707 (−3.01 dBFS), the waveform
    peaks at 1.0 (0 dBTP) exactly half-way between samples."""
    k = np.arange(sr)
    x = faded(np.sin(np.pi * k / 2 + np.pi / 4))
    sample_peak_db = 20 * math.log10(np.max(np.abs(x)))
    assert sample_peak_db == pytest.approx(-3.01, abs=0.01)
    tp = M.true_peak_dbtp(x, sr)
    assert tp == pytest.approx(0.0, abs=0.02)
    assert tp > sample_peak_db + 2.9
    # a sine sampled on its peaks has no inter-sample overshoot
    assert M.true_peak_dbtp(faded(sine(1000.0, 1.0, sr=sr, phase=np.pi / 2)), sr) == pytest.approx(0.0, abs=0.01)
    # stereo: the louder channel counts
    assert M.true_peak_dbtp(np.stack([0.25 * x, x]), sr) == pytest.approx(tp, abs=1e-9)


def test_true_peak_chunks_are_exact_and_never_below_sample_peak(monkeypatch):
    x = noise(2, 0.5, seed=3)
    whole = M.true_peak_dbtp(x, SR)
    monkeypatch.setattr(M, "_TRUE_PEAK_CHUNK", 997)
    assert M.true_peak_dbtp(x, SR) == pytest.approx(whole, abs=1e-12)
    assert whole >= 20 * math.log10(np.max(np.abs(x)))
    assert M.true_peak_dbtp(np.zeros(1000), SR) == float("-inf")
    assert M.true_peak_oversampling(48000) == 4 and M.true_peak_oversampling(96000) == 2
    assert M.true_peak_oversampling(192000) == 1


def test_spectral_centroid_of_sines():
    for f in (200.0, 1000.0, 5000.0, 15000.0):
        assert M.spectral_centroid_hz(sine(f, 0.5), SR) == pytest.approx(f, rel=0.005)
    assert M.spectral_centroid_hz(sine(1000.0, 0.01), SR) == pytest.approx(1000.0, rel=0.02)  # < n_fft
    assert math.isnan(M.spectral_centroid_hz(np.zeros(4096), SR))
    x = noise(1, 0.5)
    assert M.spectral_centroid_error_hz(x, x, SR) == 0.0
    err = M.spectral_centroid_error_hz(lowpass(x, 2000.0), x, SR)
    assert err > 3000.0  # white noise centers near 12 kHz, low-passed near 1 kHz


def test_distances_zero_for_same_signal_positive_for_changed():
    x = noise(2, 1.0, seed=1)
    changed = lowpass(x, 3000.0)
    assert M.mel_spectral_distance_db(x, x, SR) == 0.0
    assert M.mel_spectral_distance_db(changed, x, SR) > 3.0
    assert M.mrstft_error(x, x) == 0.0
    assert M.mrstft_error(changed, x) > 0.5
    assert M.mfcc_cosine_distance(x, x, SR) < 1e-12
    assert M.mfcc_cosine_distance(changed, x, SR) > 0.01
    # small changes give small distances, larger ones larger
    assert 0 < M.mrstft_error(0.9 * x, x) < M.mrstft_error(0.5 * x, x)


def test_msd_reads_a_gain_in_db():
    """MSD is a mean absolute mel level difference: a gain of −6.02 dB reads 6.02 dB (also for clips
    shorter than the 65536 window, which get one zero-padded frame)."""
    x = noise(2, 1.0, seed=2)
    assert M.mel_spectral_distance_db(0.5 * x, x, SR) == pytest.approx(20 * math.log10(2), abs=1e-6)
    short = x[:, :5000]
    assert M.mel_spectral_distance_db(2 * short, short, SR) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert M.mel_spectrogram(x, SR).shape == (2, M.MSD_N_MELS, 1 + SR // (M.MSD_N_FFT // 4))
    # every sample counts: a change confined to the last 0.1 s shows (centered frames with a hop of
    # W, as in DeepAFx-ST's code, never see those samples)
    tail = x.copy()
    tail[:, -SR // 10:] *= 0.1
    assert M.mel_spectral_distance_db(tail, x, SR) > 0.1
    hop_w = [M.mel_spectrogram(a, SR, hop_samples=M.MSD_N_FFT) for a in (tail, x)]
    assert np.array_equal(hop_w[0], hop_w[1])


def test_compare_keys_units_and_values():
    ref = noise(2, 1.0, seed=4)
    out = 0.5 * lowpass(ref, 4000.0)
    d = M.compare(out, ref, SR, with_pesq=False)
    for key in ("lufs_error_lu", "rms_error_db", "crest_factor_error_db", "true_peak_error_db", "msd_db",
                "spectral_centroid_error_hz", "mrstft", "mfcc_cosine_distance", "output_lufs",
                "reference_lufs", "output_rms_dbfs", "reference_rms_dbfs", "output_true_peak_dbtp",
                "reference_true_peak_dbtp"):
        assert isinstance(d[key], float) and math.isfinite(d[key]), key
    assert "pesq_mos" not in d
    assert d["lufs_error_lu"] == pytest.approx(abs(d["output_lufs"] - d["reference_lufs"]))
    assert d["rms_error_db"] == pytest.approx(abs(M.rms_dbfs(out) - M.rms_dbfs(ref)))
    assert d["lufs_error_lu"] > 6.0 and d["msd_db"] > 6.0
    same = M.compare(ref, ref, SR, with_pesq=False)
    assert all(v == 0.0 for k, v in same.items() if "error" in k or k in ("msd_db", "mrstft"))
    assert same["mfcc_cosine_distance"] < 1e-12


def test_shapes_are_checked():
    x = noise(2, 0.1)
    with pytest.raises(ValueError):
        M.compare(x, x[:1], SR)
    with pytest.raises(ValueError):
        M.mrstft_error(x, x[:, :-1])
    with pytest.raises(ValueError):
        M.rms_dbfs(x.T)  # (samples, channels)
    with pytest.raises(ValueError):
        M.rms_dbfs(np.full(10, np.nan))
    with pytest.raises(ValueError):
        M.lufs(x, -1)


def speech_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Voiced syllables: a 120 Hz pulse train through two formant resonances, 4 Hz syllable envelope."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    src = np.zeros(n)
    src[:: sr // 120] = 1.0
    y = src
    for f, bw in ((700.0, 130.0), (1200.0, 70.0)):
        r = math.exp(-math.pi * bw / sr)
        y = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * f / sr), r * r], y)
    env = np.clip(np.sin(2 * np.pi * 4.0 * np.arange(n) / sr), 0, None)
    y = y * env + 1e-4 * rng.standard_normal(n)
    return 0.5 * y / np.abs(y).max()


def test_pesq_when_installed():
    pytest.importorskip("pesq")
    sr = 16000
    ref = speech_like(3.0, sr)
    noisy = ref + 0.05 * np.random.default_rng(1).standard_normal(ref.shape)
    clean_score = M.pesq_mos(ref, ref, sr)
    noisy_score = M.pesq_mos(noisy, ref, sr)
    assert clean_score > 4.0
    assert noisy_score < clean_score - 0.5
    assert "pesq_mos" in M.compare(ref, ref, sr)
    assert math.isnan(M.pesq_mos(np.zeros(sr), np.zeros(sr), sr))
