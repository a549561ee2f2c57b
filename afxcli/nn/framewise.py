"""Frame-wise parameter prediction from a centered context window (DeepAFx §2.1 / §3).

DeepAFx (Martínez Ramírez et al., ICASSP 2021) predicts one parameter vector ``θ̂`` per audio frame
``x`` (1024 samples at 22.05 kHz) from ``x̃``, the frame centered in a larger context (40960
samples, 1.86 s). Running the encoder once per frame on its own context would analyze every
sample ~40 times; here the analyzer runs once over the whole signal in ``frames`` mode (one
embedding per hop, each reading a bounded, centered span) and a temporal convolution widens that
span to the context window:

    audio (batch, channels, samples)
      → analyzer(frames=True)        (batch, embed_dim, frames)   frame k centered on k·hop
      → dilated temporal conv stack  (batch, channels, frames)    + head_half_frames each side
      → 1×1 conv + sigmoid           (batch, P, frames)           normalized parameters q

with ``frames = 1 + samples // hop``. Frame ``k`` depends only on samples in
``[k·hop − context_half_samples, k·hop + context_half_samples]`` (zero padding outside the signal),
where ``context_half_samples = analyzer.context_half_samples + head_half_frames · hop`` — exact,
computed from the layer geometry, not estimated. Batch norm must be in eval mode for that to hold
(in training mode its statistics mix the whole batch).

:func:`frames_to_blocks` maps the per-frame predictions (centered on ``k·hop`` at the model rate) to
per-block values for rendering at any rate; smoothing (DeepAFx §2.4) belongs to
:class:`afxcli.trace.ParameterTrace.smoothed`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AfxError
from .encoders import Analyzer, context_half_width

#: DeepAFx §3: 40960-sample context at 22050 Hz.
DEEPAFX_CONTEXT_SECONDS = 40960 / 22050


def dilation_plan(half_frames: int) -> list[int]:
    """Dilations of kernel-3 convolutions whose stacked half-width is exactly ``half_frames``:
    1, 2, 4, … while they fit, then the remainder."""
    plan, total, d = [], 0, 1
    while total + d <= half_frames:
        plan.append(d)
        total += d
        d *= 2
    if total < half_frames:
        plan.append(half_frames - total)
    return plan


class FrameWiseHead(nn.Module):
    """Temporal head ``(batch, embed_dim, frames)`` → ``(batch, n_params, frames)`` in (0, 1).

    A 1×1 input projection, residual blocks (kernel-3 conv with dilation ``d`` → BatchNorm → PReLU)
    over :func:`dilation_plan` ``(half_frames)``, then a 1×1 projection to ``n_params`` and a
    sigmoid. Each output frame reads exactly ``half_frames`` input frames on each side.
    """

    def __init__(self, embed_dim: int, n_params: int, half_frames: int, channels: int = 96):
        super().__init__()
        if int(n_params) < 1:
            raise AfxError(f"frame-wise head: need at least one parameter, got {n_params}")
        if int(half_frames) < 0:
            raise AfxError(f"frame-wise head: half_frames must be ≥ 0, got {half_frames}")
        self.n_params = int(n_params)
        self.dilations = dilation_plan(int(half_frames))
        self.time_layers = [(3, 1, d) for d in self.dilations]
        self.inp = nn.Sequential(nn.Conv1d(embed_dim, channels, 1), nn.PReLU(channels))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(channels, channels, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm1d(channels), nn.PReLU(channels))
            for d in self.dilations)
        self.out = nn.Conv1d(channels, self.n_params, 1)

    @property
    def half_frames(self) -> int:
        return context_half_width(self.time_layers)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        h = self.inp(embeddings)
        for block in self.blocks:
            h = h + block(h)
        return torch.sigmoid(self.out(h))


class FrameWiseModel(nn.Module):
    """Analyzer in ``frames`` mode + :class:`FrameWiseHead`: audio ``(batch, channels, samples)`` at
    the model rate → ``q (batch, n_params, 1 + samples // hop_samples)`` in (0, 1), frame ``k``
    centered on sample ``k · hop_samples``.

    Args:
        analyzer: front end + encoder (:class:`afxcli.nn.encoders.Analyzer`); its hop
            (front-end hop × encoder time stride) is the frame hop (e.g. 256 × 4 = 1024 samples,
            DeepAFx's frame).
        context_samples: target context window (full width) at the model rate; default DeepAFx's
            1.86 s. The head's reach is rounded to whole frames; ``context_samples`` after
            construction is the exact width ``2 · context_half_samples + 1``. When the analyzer
            alone already reads more than ``context_samples`` (e.g. the default TFE, whose 9-frame
            temporal kernels span ±1.27 s at 22.05 kHz), the head adds no reach and the context is
            the analyzer's.
    """

    def __init__(self, analyzer: Analyzer, n_params: int, context_samples: int | None = None,
                 channels: int = 96):
        super().__init__()
        self.analyzer = analyzer
        hop = analyzer.hop_samples
        if context_samples is None:
            context_samples = int(round(DEEPAFX_CONTEXT_SECONDS * analyzer.sample_rate))
        half_frames = max(0, int(round((context_samples / 2 - analyzer.context_half_samples) / hop)))
        self.head = FrameWiseHead(analyzer.embed_dim, n_params, half_frames, channels)

    @property
    def n_params(self) -> int:
        return self.head.n_params

    @property
    def sample_rate(self) -> float:
        return self.analyzer.sample_rate

    @property
    def hop_samples(self) -> int:
        """Samples between predicted frames at the model rate."""
        return self.analyzer.hop_samples

    @property
    def context_half_samples(self) -> int:
        """Samples frame ``k`` reads on each side of ``k · hop_samples``."""
        return self.analyzer.context_half_samples + self.head.half_frames * self.hop_samples

    @property
    def context_samples(self) -> int:
        """Full context width in samples (``2 · context_half_samples + 1``)."""
        return 2 * self.context_half_samples + 1

    def num_frames(self, n_samples: int) -> int:
        """Frames predicted for ``n_samples`` samples: ``1 + n_samples // hop_samples``."""
        return 1 + int(n_samples) // self.hop_samples

    def frame_centers(self, n_frames: int) -> torch.Tensor:
        """Sample index (model rate) each frame is centered on: ``k · hop_samples``, ``(n_frames,)``."""
        return torch.arange(int(n_frames)) * self.hop_samples

    def context_window(self, k: int, n_samples: int | None = None) -> tuple[int, int]:
        """Half-open sample range ``[start, stop)`` frame ``k`` reads (clipped to the signal)."""
        c = int(k) * self.hop_samples
        start, stop = c - self.context_half_samples, c + self.context_half_samples + 1
        if n_samples is not None:
            start, stop = max(0, start), min(int(n_samples), stop)
        return start, stop

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio ``(batch, channels, samples)`` → ``(batch, n_params, 1 + samples // hop_samples)``."""
        return self.head(self.analyzer(audio, frames=True))

    def forward_chunked(self, audio: torch.Tensor, chunk_frames: int = 512) -> torch.Tensor:
        """Same result as :meth:`forward` (eval mode) with memory bounded by ``chunk_frames``.

        Frames ``[k0, k1)`` are computed from the samples ``[(k0 - m)·hop, (k1 + m)·hop)`` with
        ``m = ceil(context_half_samples / hop) + 1``: each slice starts on the frame grid, so its
        frames coincide with the full signal's, and every frame kept reads only samples and
        intermediate frames inside its slice (or the same zero padding the full pass sees at the
        signal's ends). Returns ``(batch, n_params, 1 + samples // hop_samples)``.
        """
        if self.training:
            raise AfxError("forward_chunked needs eval mode (batch norm must use running statistics)")
        hop, n = self.hop_samples, audio.shape[-1]
        total = self.num_frames(n)
        margin = -(-self.context_half_samples // hop) + 1
        outs = []
        for k0 in range(0, total, max(1, int(chunk_frames))):
            k1 = min(total, k0 + int(chunk_frames))
            first = max(0, k0 - margin)
            piece = audio[..., first * hop: min(n, (k1 + margin) * hop)]
            outs.append(self(piece)[..., k0 - first: k1 - first])
        return torch.cat(outs, dim=-1)


def frames_to_blocks(q: torch.Tensor, hop_samples: int, model_rate: float, n_samples: int,
                     block_size: int, sample_rate: float | None = None) -> torch.Tensor:
    """Per-frame values → per-block values by linear interpolation in time.

    ``q``: ``(batch, P, frames)``, frame ``k`` centered on sample ``k · hop_samples`` at
    ``model_rate``. Blocks follow :class:`afxcli.trace.ParameterTrace`'s convention: block ``j``
    covers samples ``[j · block_size, (j + 1) · block_size)`` of a signal of ``n_samples`` samples at
    ``sample_rate`` (default ``model_rate``) and takes the value at its center. Beyond the first and
    last frame centers the end values are held.

    Returns ``(batch, P, ceil(n_samples / block_size))``.
    """
    if q.dim() != 3:
        raise AfxError(f"frames_to_blocks: expected (batch, P, frames), got {tuple(q.shape)}")
    rate = float(model_rate if sample_rate is None else sample_rate)
    n_blocks = max(1, math.ceil(int(n_samples) / int(block_size)))
    centers_s = (torch.arange(n_blocks, dtype=torch.float64) + 0.5) * block_size / rate
    u = (centers_s * model_rate / hop_samples).clamp(0, q.shape[-1] - 1)
    lo = u.floor().long().clamp(max=q.shape[-1] - 1)
    hi = (lo + 1).clamp(max=q.shape[-1] - 1)
    w = (u - lo).to(q.dtype)
    return q[..., lo] * (1 - w) + q[..., hi] * w
