"""Central finite-difference gradients through a black-box chain (DeepAFx §2.2 eq. 1): the exact
(up to ``O(ε²)``) reference the stochastic estimates are checked against.

For each of the ``P`` normalized parameters ``q_i`` the chain is rendered at
``q ± ε e_i`` (clipped to [0, 1]; ``2P`` renders per item) and the vector-Jacobian product of the
incoming gradient ``g = ∂L/∂y`` ``(batch, channels, samples)`` is::

    grad_q[m, i] = Σ_{c,t} g[m, c, t] · (y(q + ε e_i) − y(q − ε e_i))[m, c, t] / (q⁺_i − q⁻_i)

(the spacing is ``2ε`` away from the bounds, one-sided ``ε`` at a bound). The renders go through a
renderer with ``render_perturbed(x, q_plus (P, M, P), q_minus)``: a
:class:`~afxcli.grad.blackbox.StatelessRenderer` (fresh state per render), or a stateful
:class:`~afxcli.grad.blackbox.BlackBoxLayer` built with ``pairs >= P`` (``(2P + 1)M`` instances, the
cost DeepAFx §2.3 avoids with SPSA). The gradient to the input audio is ``None`` (black box).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import AfxError
from .spsa import epsilon_value, vjp_sums

__all__ = ["FDFunction", "fd_render", "fd_gradient", "DEFAULT_FD_EPSILON"]

#: Default finite-difference step in normalized units (float32 renders: larger than SPSA's ε).
DEFAULT_FD_EPSILON = 1e-3


def fd_gradient(renderer: Any, x: np.ndarray, q: np.ndarray, g: np.ndarray, epsilon: float) -> np.ndarray:
    """Central-difference ``∂L/∂q``: ``x`` ``(M, C, T)``, ``q`` ``(M, P)``, ``g`` ``(M, C, T)`` -> ``(M, P)``."""
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)
    M, P = q.shape
    eye = np.eye(P)[:, None, :]  # (P, 1, P): perturbation i along row i
    q_plus = np.clip(q[None] + epsilon * eye, 0.0, 1.0)
    q_minus = np.clip(q[None] - epsilon * eye, 0.0, 1.0)
    y_plus, y_minus = renderer.render_perturbed(x, q_plus, q_minus)
    s = vjp_sums(np.asarray(g, np.float64), np.asarray(y_plus), np.asarray(y_minus))  # (P, M)
    spacing = (q_plus - q_minus)[np.arange(P), :, np.arange(P)]  # (P, M): q⁺_i − q⁻_i of row i
    return (s / spacing).T


class FDFunction(torch.autograd.Function):
    """``y = FDFunction.apply(x, q, renderer, epsilon)``: like
    :class:`~afxcli.grad.spsa.SPSAFunction`, with the central finite-difference gradient to ``q``."""

    @staticmethod
    def forward(ctx, x, q, renderer, epsilon):
        x_np = x.detach().to("cpu", torch.float32).numpy()
        q_np = q.detach().to("cpu", torch.float64).numpy()
        y = renderer.render(x_np, np.clip(q_np, 0.0, 1.0))
        ctx.renderer, ctx.epsilon = renderer, epsilon_value(epsilon)
        ctx.x_np, ctx.q_np, ctx.q_meta = x_np, q_np, (q.dtype, q.device)
        return torch.from_numpy(np.ascontiguousarray(y)).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        grad_q = None
        if ctx.needs_input_grad[1]:
            g = grad_y.detach().to("cpu", torch.float64).numpy()
            est = fd_gradient(ctx.renderer, ctx.x_np, ctx.q_np, g, ctx.epsilon)
            grad_q = torch.from_numpy(est).to(device=ctx.q_meta[1], dtype=ctx.q_meta[0])
        return None, grad_q, None, None


def fd_render(x: torch.Tensor, q: torch.Tensor, renderer: Any, epsilon: float = DEFAULT_FD_EPSILON) -> torch.Tensor:
    """Render ``x`` ``(M, C, T)`` at normalized ``q`` ``(M, P)`` with finite-difference gradients to ``q``."""
    if x.dim() != 3 or q.dim() != 2 or q.shape[0] != x.shape[0]:
        raise AfxError(f"fd: x must be (batch, channels, samples) and q (batch, P); got {tuple(x.shape)}, {tuple(q.shape)}")
    return FDFunction.apply(x, q, renderer, epsilon)
