"""Analysis front ends: audio ``(batch, channels, samples)`` → time–frequency features.

Every front end returns ``(batch, feature_channels, bins, frames)`` with ``feature_channels = 1``
(channels averaged to mono, the default) or ``channels`` (``channels="keep"``). Frames are centered:
frame ``j`` is centered on sample ``j * hop_samples`` (the signal is zero-padded by half a window
on both sides), so ``frames = 1 + samples // hop_samples`` and a frame only reads samples within
``± window_samples // 2`` of its center. That locality is what lets a frame-wise head read a
bounded context window (see :mod:`afxcli.nn.framewise`).

Front ends:

- :class:`LogMel` — log-scaled mel spectrogram in dB followed by batch normalization: DeepAFx
  (Martínez Ramírez et al., ICASSP 2021) §2.1, "a log-scaled mel-spectrogram non-trainable layer
  followed by a batch normalization layer"; §3 uses a 46 ms window (1024 samples at 22.05 kHz),
  a 25 % hop (256 samples) and 128 mel bands, which are the defaults here.
- :class:`PowerSTFT` — compressed magnitude ``|STFT|^0.3``: DeepAFx-ST (Steinmetz et al., JAES 2022)
  §3.6, Hann window N = 4096, hop H = 2048 at 24 kHz (the defaults).
- :class:`CQT` — constant-Q magnitude (in dB), the input of BE-AFX's TE/TFE analysis networks
  (Peladeau & Peeters, ICASSP 2024, §2.2). Kernels: Brown, "Calculation of a constant Q spectral
  transform", JASA 89(1), 1991 (Hann-windowed complex exponentials of length ``Q·sr/f_k``), built
  once in NumPy; applied in the frequency domain following Brown & Puckette, "An efficient
  algorithm for the calculation of a constant Q transform", JASA 92(5),
  1992: ``C[k, j] = Σ_n x[j·hop + n] · conj(a_k[n])`` is a sum over the frame's spectrum
  (Parseval) against the kernel's spectrum, which has energy only in a narrow band. Kernels are
  grouped by octave so each octave uses its own FFT size (the shortest power of two that holds its
  longest kernel) and only the FFT bins where its kernels have energy.

The mel and CQT filter banks are non-trainable buffers; only the batch-norm affine parameters
train.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import AfxError

ChannelMode = Literal["mono", "keep"]


def _power_to_db(power: torch.Tensor, amin: float) -> torch.Tensor:
    """``10 * log10(max(power, amin))`` — ``librosa.power_to_db`` with ``ref=1``, no ``top_db``."""
    return 10.0 * torch.log10(torch.clamp(power, min=amin))


def hz_to_mel(f_hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox, 1998): linear below 1 kHz (``f / (200/3)``),
    logarithmic above (``15 + ln(f / 1000) / (ln 6.4 / 27)``)."""
    f_hz = np.asarray(f_hz, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(f_hz < 1000.0, f_hz * 3.0 / 200.0,
                    15.0 + np.log(np.maximum(f_hz, 1e-12) / 1000.0) / log_step)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, f_min_hz: float = 0.0,
                   f_max_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` on Slaney's scale, each scaled to unit area
    in Hz (``2 / (f_{m+2} - f_m)``, Slaney's normalization): ``n_mels + 2`` edges equally spaced in
    mel between ``f_min_hz`` and ``f_max_hz`` (default Nyquist)."""
    f_max_hz = 0.5 * sample_rate if f_max_hz is None else float(f_max_hz)
    if not 0.0 <= f_min_hz < f_max_hz <= 0.5 * sample_rate:
        raise AfxError(f"mel: need 0 ≤ f_min_hz < f_max_hz ≤ Nyquist, got {f_min_hz}, {f_max_hz}")
    fft_hz = np.linspace(0.0, 0.5 * sample_rate, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min_hz), hz_to_mel(f_max_hz), n_mels + 2))
    lower = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def constant_q_kernels(sample_rate: float, frequencies_hz: np.ndarray, filter_scale: float = 1.0,
                       bins_per_octave: int = 12) -> list[np.ndarray]:
    """Brown (1991) constant-Q kernels: for center frequency ``f_k``, ``Q = filter_scale /
    (2^(1/bins_per_octave) - 1)``, an odd length ``N_k ≈ Q · sr / f_k``, and
    ``a_k[n] = w[n] · exp(2πi f_k n / sr)`` for ``n = -(N_k-1)/2 … (N_k-1)/2`` (symmetric Hann ``w``),
    L1-normalized. Returns one complex128 array per bin, centered on ``n = 0``."""
    q = filter_scale / (2.0 ** (1.0 / bins_per_octave) - 1.0)
    kernels = []
    for f in np.asarray(frequencies_hz, dtype=np.float64):
        half = max(1, int(math.ceil(q * sample_rate / f / 2.0)))
        n = np.arange(-half, half + 1)
        kernel = np.hanning(2 * half + 1) * np.exp(2j * np.pi * f * n / sample_rate)
        kernels.append(kernel / np.abs(kernel).sum())
    return kernels


class FrontEnd(nn.Module):
    """Common part: channel handling, centered framing bookkeeping, optional batch norm.

    Subclasses define ``features(rows (rows, samples)) -> (rows, n_bins, frames)``.

    Args:
        sample_rate: model rate in Hz (the rate the audio is resampled to before analysis).
        hop_samples: frame hop; frame ``j`` is centered on sample ``j * hop_samples``.
        window_samples: longest span one frame reads (its FFT size).
        n_bins: number of frequency bins of the output.
        channels: ``"mono"`` averages the input channels; ``"keep"`` keeps ``in_channels`` of them
            (a mono input is repeated to ``in_channels``).
        in_channels: channel count of the audio when ``channels="keep"``.
        batch_norm: per-bin batch normalization of the features (statistics over batch, channels
            and frames), as DeepAFx §2.1 puts after its mel layer.
    """

    def __init__(self, sample_rate: float, hop_samples: int, window_samples: int, n_bins: int,
                 channels: ChannelMode = "mono", in_channels: int = 2, batch_norm: bool = False):
        super().__init__()
        if not (sample_rate > 0 and math.isfinite(sample_rate)):
            raise AfxError(f"front end: invalid sample rate {sample_rate}")
        if int(hop_samples) < 1:
            raise AfxError(f"front end: hop must be ≥ 1 sample, got {hop_samples}")
        if channels not in ("mono", "keep"):
            raise AfxError(f"front end: channels must be 'mono' or 'keep', got {channels!r}")
        if channels == "keep" and int(in_channels) < 1:
            raise AfxError(f"front end: in_channels must be ≥ 1, got {in_channels}")
        self.sample_rate = float(sample_rate)
        self.hop_samples = int(hop_samples)
        self.window_samples = int(window_samples)
        self.n_bins = int(n_bins)
        self.channels = channels
        self.in_channels = int(in_channels) if channels == "keep" else 1
        self.norm = nn.BatchNorm1d(self.n_bins) if batch_norm else None

    @property
    def out_channels(self) -> int:
        """Feature channels of the output (1 for mono, ``in_channels`` for keep)."""
        return 1 if self.channels == "mono" else self.in_channels

    @property
    def half_window_samples(self) -> int:
        """Samples one frame reads on each side of its center."""
        return self.window_samples // 2

    def num_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples: ``1 + n_samples // hop_samples``."""
        return 1 + int(n_samples) // self.hop_samples

    def _dtype(self) -> torch.dtype:
        """Floating dtype of the filter buffers (float32 unless the module was converted)."""
        for buf in self.buffers():
            if buf.is_floating_point():
                return buf.dtype
        return torch.get_default_dtype()

    def _to_rows(self, audio: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(batch, channels, samples)`` → ``(batch * out_channels, samples)``."""
        if audio.dim() == 2:
            audio = audio.unsqueeze(1)
        if audio.dim() != 3:
            raise AfxError("front end: expected audio (batch, channels, samples), "
                           f"got shape {tuple(audio.shape)}")
        b, c, n = audio.shape
        if n < 1:
            raise AfxError("front end: audio has no samples")
        audio = audio.to(self._dtype())
        if self.channels == "mono":
            return audio.mean(dim=1), b
        if c == self.in_channels:
            return audio.reshape(b * c, n), b
        if c == 1:
            return audio.expand(b, self.in_channels, n).reshape(b * self.in_channels, n), b
        raise AfxError(f"front end: expected {self.in_channels} channel(s) or mono, got {c}")

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio ``(batch, channels, samples)`` → features ``(batch, out_channels, n_bins, frames)``."""
        rows, b = self._to_rows(audio)
        feats = self.features(rows)
        if self.norm is not None:
            feats = self.norm(feats)
        return feats.reshape(b, self.out_channels, self.n_bins, feats.shape[-1])


class _STFTMixin:
    """Centered Hann STFT (``torch.stft``, periodic window, zero padding — librosa's defaults)."""

    def _stft(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.stft(rows, n_fft=self.n_fft, hop_length=self.hop_samples, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)


class LogMel(_STFTMixin, FrontEnd):
    """Log-scaled mel spectrogram (dB) + batch norm — DeepAFx §2.1 / §3.

    ``mel = M · |STFT(x)|^2`` with ``M = mel_filterbank(...)`` (Slaney mel scale, area-normalized
    triangles — the same matrix as ``librosa.filters.mel``), then ``10·log10(max(mel, amin_power))``
    when ``log``.
    Output ``(batch, out_channels, n_mels, 1 + samples // hop_samples)``.
    """

    def __init__(self, sample_rate: float = 22050, n_fft: int = 1024, hop_samples: int = 256,
                 n_mels: int = 128, f_min_hz: float = 0.0, f_max_hz: float | None = None,
                 log: bool = True, amin_power: float = 1e-10, batch_norm: bool = True,
                 channels: ChannelMode = "mono", in_channels: int = 2):
        super().__init__(sample_rate, hop_samples, n_fft, n_mels, channels, in_channels, batch_norm)
        self.n_fft = int(n_fft)
        self.log = bool(log)
        self.amin_power = float(amin_power)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        mel = mel_filterbank(self.sample_rate, self.n_fft, n_mels, f_min_hz, f_max_hz)
        self.register_buffer("mel_basis", torch.from_numpy(mel.astype(np.float32)), persistent=False)

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        spec = self._stft(rows)
        power = spec.real.square() + spec.imag.square()                # (rows, n_fft/2+1, frames)
        mel = torch.matmul(self.mel_basis, power)                       # (rows, n_mels, frames)
        return _power_to_db(mel, self.amin_power) if self.log else mel


class PowerSTFT(_STFTMixin, FrontEnd):
    """Compressed magnitude spectrogram ``|STFT(x)|^exponent`` (exponent 0.3) — DeepAFx-ST §3.6.

    ``(|X|^2 + eps)^(exponent/2)`` keeps the gradient finite at silent bins.
    Output ``(batch, out_channels, n_fft/2 + 1, 1 + samples // hop_samples)``.
    """

    def __init__(self, sample_rate: float = 24000, n_fft: int = 4096, hop_samples: int = 2048,
                 exponent: float = 0.3, eps: float = 1e-10, batch_norm: bool = False,
                 channels: ChannelMode = "mono", in_channels: int = 2):
        super().__init__(sample_rate, hop_samples, n_fft, n_fft // 2 + 1, channels, in_channels, batch_norm)
        self.n_fft = int(n_fft)
        self.exponent = float(exponent)
        self.eps = float(eps)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        spec = self._stft(rows)
        return (spec.real.square() + spec.imag.square() + self.eps).pow(0.5 * self.exponent)


def cqt_bin_count(sample_rate: float, f_min_hz: float, bins_per_octave: int,
                  max_freq_fraction: float = 0.45) -> int:
    """Bins from ``f_min_hz`` up to ``max_freq_fraction * sample_rate`` (highest center frequency)."""
    top = max_freq_fraction * sample_rate
    if f_min_hz <= 0 or f_min_hz >= top:
        raise AfxError(f"CQT: f_min_hz must be in (0, {top:g}) Hz, got {f_min_hz}")
    return int(math.floor(bins_per_octave * math.log2(top / f_min_hz))) + 1


class CQT(FrontEnd):
    """Constant-Q transform in torch (Brown 1991 kernels, Brown & Puckette 1992 FFT evaluation).

    Bin ``k`` has center frequency ``f_k = f_min_hz · 2^(k / bins_per_octave)`` and kernel
    ``a_k[n] = w[n] · exp(2πi f_k n / sr)`` (Hann ``w``, length ``≈ Q · sr / f_k``,
    ``Q = filter_scale / (2^(1/bins_per_octave) - 1)``, L1-normalized — :func:`constant_q_kernels`).
    ``C[k, j] = Σ_n x[j·hop + n] · conj(a_k[n])``
    (``n`` centered on zero), evaluated per octave group as
    ``Σ_n x[n] h[n] = Σ_{f ∈ band_g} w_f · Re(X_j[f] · conj(H[f]))`` for the real and imaginary
    kernel parts ``h`` (``N_g``-point real FFTs, ``w_f = 2/N_g``, ``1/N_g`` at DC and Nyquist).
    Output: ``|C|^2`` in dB when ``log`` (else ``|C|``), shape
    ``(batch, out_channels, n_bins, 1 + samples // hop_samples)``.

    Args:
        f_min_hz: lowest center frequency (C1 = 32.70 Hz by default).
        n_bins: number of bins; ``None`` reaches 0.45·sample_rate.
        band_tolerance: FFT bins where every kernel of a group is below this fraction of the
            group's peak spectral magnitude are skipped.
    """

    def __init__(self, sample_rate: float = 22050, hop_samples: int = 512, f_min_hz: float = 32.703,
                 n_bins: int | None = None, bins_per_octave: int = 12, filter_scale: float = 1.0,
                 log: bool = True, amin_power: float = 1e-10, batch_norm: bool = True,
                 band_tolerance: float = 1e-5, channels: ChannelMode = "mono", in_channels: int = 2):
        if n_bins is None:
            n_bins = cqt_bin_count(sample_rate, f_min_hz, bins_per_octave)
        freqs = f_min_hz * 2.0 ** (np.arange(int(n_bins)) / bins_per_octave)
        if freqs[-1] >= 0.5 * sample_rate:
            raise AfxError(f"CQT: highest bin {freqs[-1]:.0f} Hz is above Nyquist ({0.5 * sample_rate:g} Hz)")
        kernels_by_bin = constant_q_kernels(sample_rate, freqs, filter_scale, bins_per_octave)
        groups = []
        for start in range(0, int(n_bins), bins_per_octave):
            stop = min(start + bins_per_octave, int(n_bins))
            longest = max(len(k) for k in kernels_by_bin[start:stop])
            n_fft = 1 << int(math.ceil(math.log2(longest + 1)))
            kernels = np.zeros((stop - start, n_fft), dtype=np.complex128)
            for i, k in enumerate(kernels_by_bin[start:stop]):
                h = len(k) // 2            # kernel center (n = 0) at buffer index n_fft // 2
                kernels[i, n_fft // 2 - h: n_fft // 2 + h + 1] = k
            # C[k] = Σ_n x[n] a_re[n] - i Σ_n x[n] a_im[n]; for a real kernel h and real frame x,
            # Σ_n x h = Σ_{f=0}^{N/2} w_f Re(X[f] conj(H[f])), w_f = 1/N at DC and Nyquist, 2/N
            # elsewhere (Parseval over the one-sided spectrum). Each column is one real kernel.
            real_kernels = np.concatenate([kernels.real, -kernels.imag], axis=0)   # (2*bins, n_fft)
            spec = np.fft.rfft(real_kernels, axis=1)                               # (2*bins, n_fft/2+1)
            weight = np.full(n_fft // 2 + 1, 2.0 / n_fft)
            weight[0] = weight[-1] = 1.0 / n_fft
            spec = spec * weight
            mag = np.abs(spec).max(axis=0)
            keep = np.nonzero(mag > band_tolerance * mag.max())[0]
            f_lo, f_hi = int(keep[0]), int(keep[-1]) + 1
            band = spec[:, f_lo:f_hi]
            # (2*band, 2*bins): [X_re, X_im] @ K -> [C_re, C_im]
            matrix = np.concatenate([band.real.T, band.imag.T], axis=0)
            groups.append((n_fft, f_lo, f_hi, matrix))
        super().__init__(sample_rate, hop_samples, max(g[0] for g in groups), int(n_bins),
                         channels, in_channels, batch_norm)
        self.f_min_hz = float(f_min_hz)
        self.bins_per_octave = int(bins_per_octave)
        self.log = bool(log)
        self.amin_power = float(amin_power)
        self.register_buffer("frequencies_hz", torch.from_numpy(freqs.astype(np.float32)), persistent=False)
        self.group_layout = [(g[0], g[1], g[2]) for g in groups]  # (n_fft, first fft bin, stop bin)
        for i, g in enumerate(groups):
            self.register_buffer(f"kernel_{i}", torch.from_numpy(g[3].astype(np.float32)), persistent=False)

    def complex_features(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary CQT parts, each ``(rows, n_bins, frames)``, of ``rows (rows, samples)``."""
        re, im = [], []
        for i, (n_fft, f_lo, f_hi) in enumerate(self.group_layout):
            padded = nn.functional.pad(rows, (n_fft // 2, n_fft // 2))
            frames = padded.unfold(-1, n_fft, self.hop_samples)            # (rows, frames, n_fft)
            spec = torch.fft.rfft(frames, dim=-1)[..., f_lo:f_hi]          # (rows, frames, band)
            out = torch.matmul(torch.cat([spec.real, spec.imag], dim=-1), getattr(self, f"kernel_{i}"))
            half = out.shape[-1] // 2                                      # (rows, frames, 2*bins)
            re.append(out[..., :half])
            im.append(out[..., half:])
        return torch.cat(re, dim=-1).transpose(1, 2), torch.cat(im, dim=-1).transpose(1, 2)

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        c_re, c_im = self.complex_features(rows)
        power = c_re.square() + c_im.square()
        return _power_to_db(power, self.amin_power) if self.log else power.sqrt()


FRONTENDS = {"logmel": LogMel, "stft": PowerSTFT, "cqt": CQT}


def make_frontend(name: str, sample_rate: float, **options) -> FrontEnd:
    """Build a front end by name (``logmel``, ``stft``, ``cqt``) at ``sample_rate``."""
    try:
        cls = FRONTENDS[name]
    except KeyError:
        raise AfxError(f"unknown front end {name!r}; choose from {', '.join(FRONTENDS)}") from None
    return cls(sample_rate=sample_rate, **options)
