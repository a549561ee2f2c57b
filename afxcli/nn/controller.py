"""Controllers: embeddings → normalized effect parameters ``q ∈ (0, 1)^P``.

- :class:`ParamHead` — MLP on one embedding ``(batch, embed_dim)`` → ``(batch, P)`` sigmoid outputs.
  With ``batch_norm=True`` it is BE-AFX's analysis MLP (Peladeau & Peeters, ICASSP 2024, §2.2:
  hidden layers each followed by BatchNorm-1D and PReLU, sigmoid output); without, DeepAFx-ST's
  controller (Steinmetz et al., JAES 2022, §3.6: three-layer MLP with PReLU, projection to
  ``R^P``, sigmoid).
- :class:`StyleController` — DeepAFx-ST §2 / §3.6 ``g_φ``: the same MLP on
  ``e_ir = concat(e_i, e_r)`` ``(batch, 2 * embed_dim)``.
- :class:`StyleModel` — shared-weight analyzer ``f_θ`` applied to the input and the reference, then the
  style controller (DeepAFx-ST Fig. 1–2). ``q`` is denormalized by the chain
  (``Chain.denormalize``, BE-AFX eqs. 7–8) before rendering.
- :class:`BlindModel` — analyzer + plain head, for blind estimation (BE-AFX: parameters from the
  processed audio alone) and paired tasks (DeepAFx: parameters from the input alone).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import AfxError


class ParamHead(nn.Module):
    """MLP ``(batch, in_dim)`` → ``(batch, n_params)`` in (0, 1).

    ``hidden``: sizes of the hidden layers (Linear → [BatchNorm1d] → PReLU each); the last layer is
    a Linear projection to ``n_params`` followed by a sigmoid.
    """

    def __init__(self, in_dim: int, n_params: int, hidden: Sequence[int] = (256, 256),
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        if int(n_params) < 1:
            raise AfxError(f"controller: need at least one parameter to predict, got {n_params}")
        self.in_dim = int(in_dim)
        self.n_params = int(n_params)
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(nn.PReLU(int(h)))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, self.n_params)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs ``(batch, n_params)``."""
        if embedding.dim() != 2 or embedding.shape[1] != self.in_dim:
            raise AfxError(f"controller: expected (batch, {self.in_dim}), got {tuple(embedding.shape)}")
        return self.out(self.hidden(embedding))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(batch, in_dim)`` → normalized parameters ``(batch, n_params)`` in (0, 1)."""
        return torch.sigmoid(self.logits(embedding))


class StyleController(ParamHead):
    """DeepAFx-ST controller: ``q = σ(MLP(concat(e_i, e_r)))``, embeddings ``(batch, embed_dim)``."""

    def __init__(self, embed_dim: int, n_params: int, hidden: Sequence[int] = (256, 256),
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__(2 * int(embed_dim), n_params, hidden, batch_norm, dropout)
        self.embed_dim = int(embed_dim)

    def forward(self, e_input: torch.Tensor, e_reference: torch.Tensor) -> torch.Tensor:
        """``(batch, embed_dim)`` × 2 → ``(batch, n_params)`` in (0, 1)."""
        if e_input.shape != e_reference.shape:
            raise AfxError(f"style controller: input embedding {tuple(e_input.shape)} and reference "
                           f"embedding {tuple(e_reference.shape)} differ")
        return super().forward(torch.cat([e_input, e_reference], dim=1))


class StyleModel(nn.Module):
    """Shared-weight analyzer on input and reference + :class:`StyleController` (DeepAFx-ST).

    ``forward(x_input (batch, channels, samples_i), x_reference (batch, channels, samples_r))`` →
    ``(batch, n_params)`` in (0, 1); the two clips may differ in length (each is pooled over time).
    Both clips go through the analyzer in one call when their lengths match (one batch of 2·batch),
    so batch-norm statistics in training see both. DeepAFx-ST L2-normalizes the pooled embeddings:
    build the analyzer's encoder with ``l2_normalize=True`` for that.
    """

    def __init__(self, analyzer: nn.Module, n_params: int, hidden: Sequence[int] = (256, 256),
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.analyzer = analyzer
        self.controller = StyleController(analyzer.embed_dim, n_params, hidden, batch_norm, dropout)

    @property
    def n_params(self) -> int:
        return self.controller.n_params

    @property
    def sample_rate(self) -> float:
        return self.analyzer.sample_rate

    def embed(self, x_input: torch.Tensor, x_reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(batch, embed_dim)`` of input and reference with the shared analyzer."""
        if x_input.shape[0] != x_reference.shape[0]:
            raise AfxError(f"style model: {x_input.shape[0]} inputs but {x_reference.shape[0]} references")
        if x_input.shape == x_reference.shape:
            e = self.analyzer(torch.cat([x_input, x_reference], dim=0))
            return e[: x_input.shape[0]], e[x_input.shape[0]:]
        return self.analyzer(x_input), self.analyzer(x_reference)

    def forward(self, x_input: torch.Tensor, x_reference: torch.Tensor) -> torch.Tensor:
        e_i, e_r = self.embed(x_input, x_reference)
        return self.controller(e_i, e_r)


class BlindModel(nn.Module):
    """Analyzer + :class:`ParamHead`: audio ``(batch, channels, samples)`` → ``(batch, n_params)``
    in (0, 1) (BE-AFX blind estimation; DeepAFx-style paired tasks with one static setting)."""

    def __init__(self, analyzer: nn.Module, n_params: int, hidden: Sequence[int] = (256, 256),
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.analyzer = analyzer
        self.head = ParamHead(analyzer.embed_dim, n_params, hidden, batch_norm, dropout)

    @property
    def n_params(self) -> int:
        return self.head.n_params

    @property
    def sample_rate(self) -> float:
        return self.analyzer.sample_rate

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.analyzer(audio))
