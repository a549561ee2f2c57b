"""SPSA gradients through a black-box chain (DeepAFx §2.2 eq. 2; DeepAFx-ST §2.3).

The forward renders once at the normalized parameters ``q`` ``(batch, P)``. The backward draws a
Rademacher vector ``Δ ∈ {±1}^P`` per item (Spall's symmetric Bernoulli perturbation, DeepAFx eq. 2),
renders at ``q⁺ = clip(q + εΔ, 0, 1)`` and ``q⁻ = clip(q − εΔ, 0, 1)`` and returns the
vector-Jacobian product of the incoming gradient ``g = ∂L/∂y`` ``(batch, channels, samples)``::

    grad_q[m, i] = Σ_{c,t} g[m, c, t] · (y⁺ − y⁻)[m, c, t] / (q⁺ − q⁻)[m, i]

(the sum over channels and time of eq. 2 applied to every output sample). Away from the bounds
``q⁺ − q⁻ = 2εΔ`` exactly as in eq. 2; at a bound the clipped spacing is ``Δ_i·w_i`` with a
deterministic width ``w_i ∈ [ε, 2ε]``, and dividing by it keeps the estimate unbiased to first order
(dividing by ``2εΔ_i`` would shrink those components by ``w_i / 2ε``). With ``draws = K`` the
estimate is the mean of ``K`` independent draws (``2K`` renders).

The perturbations come from a *renderer* object with ``render(x, q)`` and
``render_perturbed(x, q_plus, q_minus)`` (:class:`~afxcli.grad.blackbox.BlackBoxLayer`, stateful,
``3M`` instances for one draw; or :class:`~afxcli.grad.blackbox.StatelessRenderer`).

Gradient to the input audio ``x``: ``None``. A black box gives no Jacobian with respect to its input
(DeepAFx: "we ignore the gradient of the input signal x"), so a chain rendered this way must sit at
the start of the differentiable graph (its input carries no parameters to learn). Put effects that
must pass gradients to ``x`` in a differentiable chain with ``strategy="ad"`` instead.

``ε`` comes as a float or an :class:`EpsilonSchedule` (``ε_k = ε₀ / (k + 1)^γ``, Spall's decaying
gain with ``γ = 0.101``), which the training loop advances with :meth:`EpsilonSchedule.step`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import AfxError

__all__ = ["EpsilonSchedule", "SPSAFunction", "spsa_render", "spsa_estimates", "vjp_sums",
           "rademacher", "epsilon_value", "DEFAULT_EPSILON"]

#: Default perturbation in normalized parameter units (the SPSA ε of DeepAFx-ST §3.5: 5e-4).
DEFAULT_EPSILON = 5e-4


class EpsilonSchedule:
    """Perturbation size over training steps: ``ε_k = epsilon0 / (k + 1)^gamma`` (Spall 1998,
    recommended ``gamma = 0.101``; ``gamma = 0`` is a constant ε). ``k`` counts :meth:`step` calls.
    ``min_epsilon`` floors the decay (float32 renders lose precision below ~1e-5)."""

    def __init__(self, epsilon0: float = DEFAULT_EPSILON, gamma: float = 0.101, min_epsilon: float = 1e-6) -> None:
        if not (0 < epsilon0 <= 0.5):
            raise AfxError(f"epsilon0 must be in (0, 0.5], got {epsilon0}")
        if gamma < 0:
            raise AfxError(f"gamma must be >= 0, got {gamma}")
        self.epsilon0 = float(epsilon0)
        self.gamma = float(gamma)
        self.min_epsilon = float(min_epsilon)
        self.k = 0

    @property
    def value(self) -> float:
        return max(self.min_epsilon, self.epsilon0 / (self.k + 1) ** self.gamma)

    def step(self) -> float:
        """Advance one training step; returns the new ε."""
        self.k += 1
        return self.value

    def state_dict(self) -> dict:
        return {"epsilon0": self.epsilon0, "gamma": self.gamma, "min_epsilon": self.min_epsilon, "k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.epsilon0, self.gamma = float(state["epsilon0"]), float(state["gamma"])
        self.min_epsilon, self.k = float(state.get("min_epsilon", 1e-6)), int(state["k"])


def epsilon_value(epsilon: float | EpsilonSchedule) -> float:
    eps = epsilon.value if isinstance(epsilon, EpsilonSchedule) else float(epsilon)
    if not (0 < eps <= 0.5):
        raise AfxError(f"epsilon must be in (0, 0.5], got {eps}")
    return eps


def rademacher(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``±1`` with probability 1/2 each (float64)."""
    return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0


def vjp_sums(g: np.ndarray, y_plus: np.ndarray, y_minus: np.ndarray) -> np.ndarray:
    """``Σ_{c,t} g · (y⁺ − y⁻)``: ``g`` ``(M, C, T)``, ``y±`` ``(K, M, C, T)`` -> ``(K, M)`` float64.

    The difference is taken in the renders' precision (exact for float32 values within a factor of
    two of each other, Sterbenz), the products are summed in float64. Plain ``einsum`` (no BLAS):
    multithreaded BLAS dots stall when other processes hold the cores."""
    K, M = y_plus.shape[:2]
    d = np.subtract(y_plus, y_minus).astype(np.float64).reshape(K, M, -1)
    return np.einsum("kmn,mn->km", d, np.asarray(g, np.float64).reshape(M, -1))


def spsa_estimates(renderer: Any, x: np.ndarray, q: np.ndarray, g: np.ndarray, epsilon: float,
                   draws: int, rng: np.random.Generator) -> np.ndarray:
    """Each draw's SPSA estimate of ``∂L/∂q``: ``x`` ``(M, C, T)``, ``q`` ``(M, P)``, ``g = ∂L/∂y``
    ``(M, C, T)`` -> ``(draws, M, P)`` (see the module docstring for the formula)."""
    if draws < 1:
        raise AfxError(f"draws must be at least 1, got {draws}")
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)
    delta = rademacher(rng, (draws, *q.shape))
    q_plus = np.clip(q[None] + epsilon * delta, 0.0, 1.0)
    q_minus = np.clip(q[None] - epsilon * delta, 0.0, 1.0)
    y_plus, y_minus = renderer.render_perturbed(x, q_plus, q_minus)
    s = vjp_sums(np.asarray(g, np.float64), np.asarray(y_plus), np.asarray(y_minus))  # (K, M)
    return s[:, :, None] / (q_plus - q_minus)


class SPSAFunction(torch.autograd.Function):
    """``y = SPSAFunction.apply(x, q, renderer, epsilon, draws, rng)``: ``x`` ``(M, C, T)``, ``q``
    ``(M, P)`` normalized -> ``y`` ``(M, C, T)`` rendered by ``renderer.render``; backward gives the
    SPSA estimate to ``q`` (mean of ``draws``) and ``None`` to ``x``."""

    @staticmethod
    def forward(ctx, x, q, renderer, epsilon, draws, rng):
        x_np = x.detach().to("cpu", torch.float32).numpy()
        q_np = q.detach().to("cpu", torch.float64).numpy()
        y = renderer.render(x_np, np.clip(q_np, 0.0, 1.0))
        ctx.renderer, ctx.epsilon, ctx.draws, ctx.rng = renderer, epsilon_value(epsilon), int(draws), rng
        ctx.x_np, ctx.q_np = x_np, q_np
        ctx.q_meta = (q.dtype, q.device)
        return torch.from_numpy(np.ascontiguousarray(y)).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        grad_q = None
        if ctx.needs_input_grad[1]:
            g = grad_y.detach().to("cpu", torch.float64).numpy()
            est = spsa_estimates(ctx.renderer, ctx.x_np, ctx.q_np, g, ctx.epsilon, ctx.draws, ctx.rng)
            grad_q = torch.from_numpy(est.mean(axis=0)).to(device=ctx.q_meta[1], dtype=ctx.q_meta[0])
        return None, grad_q, None, None, None, None


def spsa_render(x: torch.Tensor, q: torch.Tensor, renderer: Any, epsilon: float | EpsilonSchedule = DEFAULT_EPSILON,
                draws: int = 1, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Render ``x`` ``(M, C, T)`` at normalized ``q`` ``(M, P)`` through ``renderer`` with SPSA
    gradients to ``q`` (DeepAFx eq. 2). A schedule ``epsilon`` is read when the forward runs."""
    if x.dim() != 3 or q.dim() != 2 or q.shape[0] != x.shape[0]:
        raise AfxError(f"spsa: x must be (batch, channels, samples) and q (batch, P); got {tuple(x.shape)}, {tuple(q.shape)}")
    return SPSAFunction.apply(x, q, renderer, epsilon, int(draws), rng if rng is not None else np.random.default_rng())
