"""Compact CPU encoders: front-end features → embedding.

Input: features ``(batch, in_channels, bins, frames)`` from :mod:`afxcli.nn.frontends`.
Output: ``(batch, embed_dim)`` (mean over time, DeepAFx-ST §3.6 "temporal mean pooling", optionally
L2-normalized as there), or with ``frames=True`` ``(batch, embed_dim, frames_out)`` where
``frames_out = ceil(frames / time_stride)`` and output frame ``j`` is centered on input frame
``j * time_stride`` (all convolutions are centered and zero-padded), so with a front end of hop
``h`` it is centered on sample ``j * time_stride * h``.

Every convolution along time is recorded in ``time_layers`` (kernel, stride, dilation), from which
``time_context_frames`` — how many input frames on each side of its center one output frame reads —
is computed exactly. The frame-wise head uses it to bound its context window.

Encoders:

- :class:`MobileNetEncoder` — inverted residuals with linear bottlenecks (MobileNetV2, Sandler et al.,
  CVPR 2018; DeepAFx §3 uses a 2.2M-parameter MobileNetV2), narrowed for CPU (~0.2M parameters).
- :class:`TFEncoder` — time–frequency encoder after BE-AFX's TFE (Peladeau & Peeters, ICASSP 2024,
  §2.2: "two 2D convolutional nets, one focusing on highlighting temporal motifs, and the second on
  frequency motifs"): a shared strided stem, then a branch of depthwise-separable convolutions with
  kernels elongated along time and one with kernels elongated along frequency; their outputs are
  concatenated and mixed by a residual 1-D convolution over time.

Both keep coarse spectral position: the last feature map is average-pooled over frequency to
``freq_bands`` bands (not to one), flattened with the channels and projected to ``embed_dim``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import AfxError


def context_half_width(time_layers: Sequence[tuple[int, int, int]]) -> int:
    """Input frames read on each side of an output frame's center through centered convolutions.

    ``time_layers``: ``(kernel, stride, dilation)`` along time, input to output. Each layer adds
    ``(kernel - 1) // 2 * dilation * jump`` where ``jump`` is the product of the earlier strides.
    """
    half, jump = 0, 1
    for kernel, stride, dilation in time_layers:
        half += (kernel - 1) // 2 * dilation * jump
        jump *= stride
    return half


def _stride_plan(time_stride: int, positions: int, name: str) -> list[int]:
    """Spread a power-of-two ``time_stride`` over the first strided positions (2 each)."""
    if time_stride < 1 or time_stride & (time_stride - 1):
        raise AfxError(f"{name}: time_stride must be a power of two, got {time_stride}")
    n = int(math.log2(time_stride))
    if n > positions:
        raise AfxError(f"{name}: time_stride at most {2 ** positions}, got {time_stride}")
    return [2] * n + [1] * (positions - n)


class Encoder(nn.Module):
    """Base of the encoders. Shared output stage (frequency pooling to bands, projection, time
    pooling) and the bookkeeping of the time geometry."""

    def __init__(self, embed_dim: int, time_stride: int, l2_normalize: bool):
        super().__init__()
        self.embed_dim = int(embed_dim)
        self.time_stride = int(time_stride)
        self.l2_normalize = bool(l2_normalize)
        self.time_layers: list[tuple[int, int, int]] = []

    @property
    def time_context_frames(self) -> int:
        """Input frames one output frame reads on each side of its center."""
        return context_half_width(self.time_layers)

    def num_frames(self, n_frames: int) -> int:
        """Output frames for ``n_frames`` input frames: ``ceil(n_frames / time_stride)``."""
        return -(-int(n_frames) // self.time_stride)

    def _conv(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
              groups: int = 1, act: bool = True, dilation: tuple[int, int] = (1, 1)) -> nn.Sequential:
        """Centered Conv2d (bins, frames) + BatchNorm (+ ReLU6); records its time geometry."""
        self.time_layers.append((kernel[1], stride[1], dilation[1]))
        pad = ((kernel[0] - 1) // 2 * dilation[0], (kernel[1] - 1) // 2 * dilation[1])
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation,
                                             groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    def _finish(self, fmap: torch.Tensor, frames: bool) -> torch.Tensor:
        """``(batch, ch, bins', frames')`` → ``(batch, embed_dim[, frames'])``."""
        b, c, _, t = fmap.shape
        pooled = nn.functional.adaptive_avg_pool2d(fmap, (self.freq_bands, t))  # (b, c, bands, t)
        emb = self.project(pooled.reshape(b, c * self.freq_bands, t))            # (b, embed, t)
        if not frames:
            emb = emb.mean(dim=-1)
        if self.l2_normalize:
            emb = nn.functional.normalize(emb, dim=1)
        return emb

    @staticmethod
    def _check(features: torch.Tensor, in_channels: int, name: str) -> None:
        if features.dim() != 4 or features.shape[1] != in_channels:
            raise AfxError(f"{name}: expected features (batch, {in_channels}, bins, frames), "
                           f"got shape {tuple(features.shape)}")


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand → ReLU6 → 3×3 depthwise (stride) → ReLU6 → 1×1 linear project;
    identity shortcut when the shape is kept (Sandler et al. 2018, Fig. 3b / Table 1).
    Input/output ``(batch, channels, bins, frames)``."""

    def __init__(self, owner: Encoder, cin: int, cout: int, stride: tuple[int, int], expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(owner._conv(cin, hidden, (1, 1), (1, 1)))
        layers.append(owner._conv(hidden, hidden, (3, 3), stride, groups=hidden))
        layers.append(owner._conv(hidden, cout, (1, 1), (1, 1), act=False))
        self.body = nn.Sequential(*layers)
        self.residual = stride == (1, 1) and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetEncoder(Encoder):
    """Narrow MobileNetV2 over ``(batch, in_channels, bins, frames)``.

    Stages (expansion t, channels c, repeats n, frequency stride s) after a 3×3 stem (stride 2 in
    frequency): ``widths`` default ``((1,16,1,1), (4,24,2,2), (4,32,2,2), (4,48,2,2), (4,64,1,1))``
    then a 1×1 convolution to ``head_channels``. ``time_stride`` (1–16, power of two) is taken by the
    stem and the first frequency-strided stages.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, time_stride: int = 4,
                 widths: Sequence[tuple[int, int, int, int]] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2),
                                                              (4, 48, 2, 2), (4, 64, 1, 1)),
                 stem_channels: int = 16, head_channels: int = 128, freq_bands: int = 4,
                 l2_normalize: bool = False):
        super().__init__(embed_dim, time_stride, l2_normalize)
        self.in_channels = int(in_channels)
        self.freq_bands = int(freq_bands)
        n_strided = 1 + sum(1 for _, _, _, s in widths if s == 2)
        plan = iter(_stride_plan(self.time_stride, n_strided, "MobileNetEncoder"))
        layers: list[nn.Module] = [self._conv(self.in_channels, stem_channels, (3, 3), (2, next(plan)))]
        cin = stem_channels
        for expand, cout, repeats, freq_stride in widths:
            for r in range(repeats):
                stride = (freq_stride, next(plan)) if (r == 0 and freq_stride == 2) else (1, 1)
                layers.append(InvertedResidual(self, cin, cout, stride, expand))
                cin = cout
        layers.append(self._conv(cin, head_channels, (1, 1), (1, 1)))
        self.features = nn.Sequential(*layers)
        self.project = nn.Conv1d(head_channels * self.freq_bands, self.embed_dim, 1)

    def forward(self, features: torch.Tensor, frames: bool = False) -> torch.Tensor:
        """Features ``(batch, in_channels, bins, frames)`` → ``(batch, embed_dim)`` or, with
        ``frames=True``, ``(batch, embed_dim, ceil(frames / time_stride))``."""
        self._check(features, self.in_channels, "MobileNetEncoder")
        return self._finish(self.features(features), frames)


class _Separable(nn.Module):
    """Depthwise (elongated kernel) + pointwise convolution with BN/ReLU6 and an optional residual."""

    def __init__(self, owner: Encoder, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.depthwise = owner._conv(cin, cin, kernel, stride, groups=cin)
        self.pointwise = owner._conv(cin, cout, (1, 1), (1, 1))
        self.residual = stride == (1, 1) and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


class TFEncoder(Encoder):
    """Time–frequency encoder (BE-AFX §2.2 TFE idea) over ``(batch, in_channels, bins, frames)``.

    - stem: 3×3 conv (stride 2 in frequency) and ``trunk_blocks`` separable 3×3 blocks
      (stride 2 in frequency); ``time_stride`` (≤ 2^(1 + trunk_blocks)) is taken here;
    - temporal branch: separable blocks with ``(3, time_kernel)`` kernels (frequency stride 2);
    - spectral branch: separable blocks with ``(freq_kernel, 1)`` kernels (frequency stride 2);
    - both pooled to ``freq_bands`` bands, concatenated, mixed by a residual 1-D conv
      (kernel 3 along time), projected to ``embed_dim``.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, time_stride: int = 4,
                 channels: int = 32, branch_channels: Sequence[int] = (48, 64, 64),
                 trunk_blocks: int = 2, time_kernel: int = 9, freq_kernel: int = 9,
                 freq_bands: int = 4, mix_channels: int = 192, l2_normalize: bool = False):
        super().__init__(embed_dim, time_stride, l2_normalize)
        self.in_channels = int(in_channels)
        self.freq_bands = int(freq_bands)
        plan = iter(_stride_plan(self.time_stride, 1 + trunk_blocks, "TFEncoder"))
        trunk: list[nn.Module] = [self._conv(self.in_channels, channels, (3, 3), (2, next(plan)))]
        for _ in range(trunk_blocks):
            trunk.append(_Separable(self, channels, channels, (3, 3), (2, next(plan))))
        self.trunk = nn.Sequential(*trunk)
        trunk_layers = list(self.time_layers)

        def branch(kernel: tuple[int, int]) -> tuple[nn.Sequential, list]:
            self.time_layers = list(trunk_layers)
            blocks, cin = [], channels
            for cout in branch_channels:
                blocks.append(_Separable(self, cin, cout, kernel, (2, 1)))
                blocks.append(_Separable(self, cout, cout, kernel, (1, 1)))
                cin = cout
            return nn.Sequential(*blocks), list(self.time_layers)

        self.temporal, temporal_layers = branch((3, int(time_kernel) | 1))
        self.spectral, spectral_layers = branch((int(freq_kernel) | 1, 1))
        # The two branches run in parallel: keep the wider time context of the two.
        self.time_layers = max(temporal_layers, spectral_layers, key=context_half_width)
        width = branch_channels[-1] * self.freq_bands * 2
        self.mix_in = nn.Sequential(nn.Conv1d(width, mix_channels, 1), nn.BatchNorm1d(mix_channels),
                                    nn.ReLU6(inplace=True))
        self.mix = nn.Sequential(nn.Conv1d(mix_channels, mix_channels, 3, padding=1, groups=4),
                                 nn.BatchNorm1d(mix_channels), nn.ReLU6(inplace=True),
                                 nn.Conv1d(mix_channels, mix_channels, 1))
        self.time_layers.append((3, 1, 1))
        self.project = nn.Conv1d(mix_channels, self.embed_dim, 1)

    def forward(self, features: torch.Tensor, frames: bool = False) -> torch.Tensor:
        """Features ``(batch, in_channels, bins, frames)`` → ``(batch, embed_dim)`` or, with
        ``frames=True``, ``(batch, embed_dim, ceil(frames / time_stride))``."""
        self._check(features, self.in_channels, "TFEncoder")
        trunk = self.trunk(features)
        b = trunk.shape[0]
        parts = []
        for branch in (self.temporal, self.spectral):
            fmap = branch(trunk)
            pooled = nn.functional.adaptive_avg_pool2d(fmap, (self.freq_bands, fmap.shape[-1]))
            parts.append(pooled.reshape(b, -1, fmap.shape[-1]))
        h = self.mix_in(torch.cat(parts, dim=1))
        h = h + self.mix(h)
        emb = self.project(h)
        if not frames:
            emb = emb.mean(dim=-1)
        if self.l2_normalize:
            emb = nn.functional.normalize(emb, dim=1)
        return emb


from .stats import StatsEncoder  # noqa: E402  (after Encoder: a plain module, no cycle)

ENCODERS = {"mobilenet": MobileNetEncoder, "tfe": TFEncoder, "stats": StatsEncoder}


def make_encoder(name: str, in_channels: int = 1, **options) -> Encoder:
    """Build an encoder by name (``mobilenet``, ``tfe``)."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise AfxError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}") from None
    return cls(in_channels=in_channels, **options)


class Analyzer(nn.Module):
    """Front end + encoder: audio ``(batch, channels, samples)`` → ``(batch, embed_dim)`` or, with
    ``frames=True``, ``(batch, embed_dim, frames_out)``; output frame ``j`` is centered on sample
    ``j * hop_samples`` (``hop_samples = frontend.hop_samples * encoder.time_stride``) at the model
    rate ``sample_rate``."""

    def __init__(self, frontend: nn.Module, encoder: Encoder):
        super().__init__()
        if getattr(encoder, "in_channels", 1) != frontend.out_channels:
            raise AfxError(f"analyzer: encoder expects {encoder.in_channels} feature channel(s), "
                           f"front end gives {frontend.out_channels}")
        self.frontend = frontend
        self.encoder = encoder

    @property
    def sample_rate(self) -> float:
        return self.frontend.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def hop_samples(self) -> int:
        """Samples between output frames in ``frames`` mode."""
        return self.frontend.hop_samples * self.encoder.time_stride

    @property
    def context_half_samples(self) -> int:
        """Samples one output frame reads on each side of its center (front-end window included)."""
        fe = self.frontend
        return fe.half_window_samples + self.encoder.time_context_frames * fe.hop_samples

    def num_frames(self, n_samples: int) -> int:
        """Output frames for ``n_samples`` samples: ``1 + n_samples // hop_samples``."""
        return self.encoder.num_frames(self.frontend.num_frames(n_samples))

    def forward(self, audio: torch.Tensor, frames: bool = False) -> torch.Tensor:
        return self.encoder(self.frontend(audio), frames=frames)

    def embed_windows(self, audio: torch.Tensor, window_samples: int, max_batch: int = 8) -> torch.Tensor:
        """Embedding of a long recording ``(batch, channels, samples)`` → ``(batch, embed_dim)``:
        the mean of the embeddings of consecutive ``window_samples`` windows (a last window shorter
        than half a window is dropped unless it is the only one), analyzed ``max_batch`` at a time,
        re-normalized when the encoder L2-normalizes (DESIGN.md §4: analyze long files by windows
        and aggregate)."""
        n = audio.shape[-1]
        w = int(window_samples)
        starts = list(range(0, max(1, n - w // 2), w)) or [0]
        b = audio.shape[0]
        total, count = None, 0
        for i in range(0, len(starts), max(1, int(max_batch))):
            group = starts[i:i + max_batch]
            pieces = [audio[..., s:s + w] for s in group]
            if any(p.shape[-1] != pieces[0].shape[-1] for p in pieces):
                embs = [self(p) for p in pieces]                 # ragged last window
            else:
                e = self(torch.cat(pieces, dim=0))               # (len(group) * batch, embed_dim)
                embs = list(e.reshape(len(group), b, -1))
            part = torch.stack(embs).sum(dim=0)
            total = part if total is None else total + part
            count += len(group)
        mean = total / count
        return nn.functional.normalize(mean, dim=1) if self.encoder.l2_normalize else mean


def make_analyzer(frontend: str = "logmel", encoder: str = "mobilenet", sample_rate: float = 22050,
                  frontend_options: dict | None = None, **encoder_options) -> Analyzer:
    """Front end ``frontend`` at ``sample_rate`` followed by encoder ``encoder``."""
    from .frontends import make_frontend

    fe = make_frontend(frontend, sample_rate, **(frontend_options or {}))
    if encoder == "stats":
        encoder_options.setdefault("n_bins", fe.n_bins)
    return Analyzer(fe, make_encoder(encoder, in_channels=fe.out_channels, **encoder_options))
