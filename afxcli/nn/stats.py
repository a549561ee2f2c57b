"""Production-statistics encoder: a log-mel spectrogram → interpretable summary statistics →
a learned embedding.

A production style is mostly *global*: the long-term average spectrum (what an EQ changes), the
distribution of short-term levels and of level changes (what a compressor changes: crest factor,
loudness range, transient depth) and the overall level (what a gain changes). Convolutional encoders
(DeepAFx-ST's TCN, :class:`~afxcli.nn.encoders.TFEncoder`) have to discover these statistics from
data, which costs many optimizer steps; this encoder computes them directly and learns only the
mapping on top — the same split as DeepAFx-ST's rule-based baseline (§3.3: average spectra and
loudness), but with the mapping to chain parameters learned end-to-end through the chain.

Input: features ``(batch, 1, bins, frames)`` in dB — a :class:`~afxcli.nn.frontends.LogMel` with
``log=True`` and ``batch_norm=False`` (the encoder needs absolute levels). Per item:

- long-term average spectrum ``LTAS_k = 10·log10(mean_t 10^(S_kt/10))`` for each mel bin ``k``;
  given as the overall level ``L = 10·log10(Σ_k 10^(LTAS_k/10))`` plus the shape ``LTAS_k − L``;
- frame levels ``l_t = 10·log10(Σ_k 10^(S_kt/10))``: quantiles ``(0.05 … 0.99, max)`` relative to
  ``max_t l_t`` (dynamics independent of gain) and the mean ``|l_t − l_{t−1}|`` and mean positive
  difference (transient depth);
- the same level quantiles (5, 50, 95 %) in ``n_groups`` groups of adjacent mel bins
  (frequency-dependent dynamics);
- ``max_t l_t`` itself (peak frame level, absolute).

All statistics are in dB and scaled by ``1/20``. ``embed_dim``: the statistics go through a learned
``Linear → PReLU`` projection to ``embed_dim`` (shared between input and reference in
:class:`~afxcli.nn.StyleModel`); ``embed_dim=None`` passes the raw scaled statistics through.
Windowed analysis of long files averages the per-window embeddings
(:meth:`afxcli.nn.encoders.Analyzer.embed_windows`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AfxError

#: Quantiles of the broadband frame levels (relative to the loudest frame).
LEVEL_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Quantiles of the band-group frame levels.
GROUP_QUANTILES = (0.05, 0.5, 0.95)
#: dB → embedding units.
DB_SCALE = 1.0 / 20.0


def _db_sum(db: torch.Tensor, dim: int) -> torch.Tensor:
    """``10·log10(Σ 10^(db/10))`` along ``dim`` (log-sum-exp, stable)."""
    k = 0.1 * torch.log(torch.tensor(10.0, dtype=db.dtype, device=db.device))
    return torch.logsumexp(db * k, dim=dim) / k


class StatsEncoder(nn.Module):
    """Summary statistics of a dB spectrogram ``(batch, 1, bins, frames)`` → ``(batch, embed_dim)``.

    Not frame-wise: ``forward(..., frames=True)`` raises (use a convolutional encoder for
    time-varying control)."""

    def __init__(self, in_channels: int = 1, n_bins: int = 64, n_groups: int = 8,
                 embed_dim: int | None = 256, l2_normalize: bool = False):
        super().__init__()
        if int(in_channels) != 1:
            raise AfxError("stats encoder: needs a mono front end (channels='mono')")
        if not 1 <= int(n_groups) <= int(n_bins):
            raise AfxError(f"stats encoder: n_groups must be in 1..{n_bins}, got {n_groups}")
        self.in_channels = 1
        self.n_bins, self.n_groups = int(n_bins), int(n_groups)
        self.n_stats = 1 + self.n_bins + len(LEVEL_QUANTILES) + 2 + self.n_groups * len(GROUP_QUANTILES) + 1
        self.project = (nn.Sequential(nn.Linear(self.n_stats, int(embed_dim)), nn.PReLU(int(embed_dim)))
                        if embed_dim else None)
        self.embed_dim = int(embed_dim) if embed_dim else self.n_stats
        self.l2_normalize = bool(l2_normalize)
        self.time_stride = 1
        self.time_layers: list[tuple[int, int, int]] = []
        self.register_buffer("_q_level", torch.tensor(LEVEL_QUANTILES), persistent=False)
        self.register_buffer("_q_group", torch.tensor(GROUP_QUANTILES), persistent=False)

    @property
    def time_context_frames(self) -> int:
        return 0

    def num_frames(self, n_frames: int) -> int:
        return int(n_frames)

    def statistics(self, features: torch.Tensor) -> torch.Tensor:
        """dB features ``(batch, 1, bins, frames)`` → scaled statistics ``(batch, n_stats)``."""
        if features.dim() != 4 or features.shape[1] != 1 or features.shape[2] != self.n_bins:
            raise AfxError(f"stats encoder: expected features (batch, 1, {self.n_bins}, frames), "
                           f"got shape {tuple(features.shape)}")
        s = features[:, 0].float()                                       # (b, bins, frames)
        b, _, t = s.shape
        ltas = _db_sum(s, dim=2) - 10.0 * math.log10(t)                # (b, bins) mean power in dB
        total = _db_sum(ltas, dim=1)                                     # (b,)
        level = _db_sum(s, dim=1)                                        # (b, frames)
        peak = level.max(dim=1).values                                   # (b,)
        rel = level - peak[:, None]
        q_level = torch.quantile(rel, self._q_level, dim=1).T            # (b, n_q)
        if t > 1:
            d = level[:, 1:] - level[:, :-1]
            flux = torch.stack([d.abs().mean(dim=1), d.clamp(min=0).mean(dim=1)], dim=1)
        else:
            flux = level.new_zeros(b, 2)
        groups = torch.tensor_split(s, self.n_groups, dim=1)
        g_level = torch.stack([_db_sum(g, dim=1) for g in groups], dim=1)   # (b, groups, frames)
        q_group = torch.quantile(g_level - peak[:, None, None], self._q_group, dim=2)  # (n_q, b, groups)
        q_group = q_group.permute(1, 2, 0).reshape(b, -1)
        stats = torch.cat([total[:, None], ltas - total[:, None], q_level, flux, q_group, peak[:, None]], dim=1)
        return stats * DB_SCALE

    def forward(self, features: torch.Tensor, frames: bool = False) -> torch.Tensor:
        if frames:
            raise AfxError("stats encoder: gives one embedding per clip, not per frame")
        e = self.statistics(features)
        if self.project is not None:
            e = self.project(e)
        return nn.functional.normalize(e, dim=1) if self.l2_normalize else e
