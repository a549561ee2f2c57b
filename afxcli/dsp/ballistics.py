"""Recursive envelope followers with exact, fast gradients (numba kernels + autograd Functions).

Two recursions cover every dynamics effect of afx:

1. **Branching one-pole ("ballistics")** — JUCE ``dsp::BallisticsFilter`` (juce_BallisticsFilter.cpp,
   ``processSample``)::

       y[n] = x[n] + c[n] * (y[n-1] - x[n]),   c[n] = c_att[n] if x[n] > y[n-1] else c_rel[n],
       y[-1] = 0

   ``x`` is the rectified level (``|s|`` in peak mode, ``s**2`` in RMS mode, where the result is
   square-rooted). The same recursion, fed with a gain reduction in dB (>= 0), is the
   "smooth decoupled" attack/release smoother of Giannoulis, Massberg & Reiss, "Digital Dynamic
   Range Compressor Design — A Tutorial and Analysis", JAES 2012, eq. 17 (attack while the gain
   reduction rises, release while it falls).

2. **Instant attack / hold / exponential release gain envelope** — the gain computer of pedalboard's
   ``BrickwallLimiter`` (pedalboard/plugins/BrickwallLimiter.h, ``process`` step 2)::

       if t[n] < g:      g = t[n];  hold = L          (attack, branch 0)
       elif t[n] < 1:    hold = L                      (above ceiling: refresh hold, branch 1)
       elif hold > 0:    hold -= 1                     (hold, branch 1)
       else:             g = 1 - r[n] * (1 - g)        (release, branch 2)
       g[-1] = 1

Both are evaluated by numba ``@njit(cache=True)`` kernels over rows (``batch * channels``) and
wrapped in ``torch.autograd.Function`` s whose backward is the exact reverse-mode adjoint of the
recursion, with the branch taken in the forward pass (ties never flip in backward). Coefficients may
vary per sample (time-varying parameters held per block), so gradients reach the time constants.

Coefficient helpers map times to pole coefficients:

- :func:`juce_coefficient`: ``c = exp(-2*pi*1000 / (sr * t_ms))``, and ``c = 0`` for
  ``t_ms < 1e-3`` (``BallisticsFilter::calculateLimitedCte``).
- :func:`time_constant_coefficient`: ``c = exp(-1000 / (sr * t_ms))`` (Giannoulis et al. 2012, eq. 7).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

__all__ = [
    "ballistics",
    "rms_ballistics",
    "hold_release_gain",
    "juce_coefficient",
    "time_constant_coefficient",
    "BallisticsFunction",
    "HoldReleaseFunction",
]


# ------------------------------------------------------------------------------------------------
# numba kernels (rows x samples, C-contiguous)
# ------------------------------------------------------------------------------------------------
@njit(cache=True)
def _ballistics_fwd(x, c_att, c_rel, y):  # pragma: no cover - compiled
    rows, n = x.shape
    for r in range(rows):
        prev = 0.0
        for i in range(n):
            xi = x[r, i]
            c = c_att[r, i] if xi > prev else c_rel[r, i]
            prev = xi + c * (prev - xi)
            y[r, i] = prev


@njit(cache=True)
def _ballistics_bwd(x, c_att, c_rel, y, gy, gx, g_att, g_rel):  # pragma: no cover - compiled
    rows, n = x.shape
    for r in range(rows):
        acc = 0.0  # dL/dy[i] including the path through y[i+1]
        for i in range(n - 1, -1, -1):
            acc += gy[r, i]
            prev = y[r, i - 1] if i > 0 else 0.0
            xi = x[r, i]
            if xi > prev:
                c = c_att[r, i]
                g_att[r, i] = acc * (prev - xi)
                g_rel[r, i] = 0.0
            else:
                c = c_rel[r, i]
                g_rel[r, i] = acc * (prev - xi)
                g_att[r, i] = 0.0
            gx[r, i] = acc * (1.0 - c)
            acc = acc * c


@njit(cache=True)
def _hold_release_fwd(target, rel, hold_len, g, branch):  # pragma: no cover - compiled
    rows, n = target.shape
    for r in range(rows):
        cur = 1.0
        hold = 0
        for i in range(n):
            t = target[r, i]
            if t < cur:
                cur = t
                hold = hold_len
                branch[r, i] = 0
            elif t < 1.0:
                hold = hold_len
                branch[r, i] = 1
            elif hold > 0:
                hold -= 1
                branch[r, i] = 1
            else:
                cur = 1.0 - rel[r, i] * (1.0 - cur)
                branch[r, i] = 2
            g[r, i] = cur


@njit(cache=True)
def _hold_release_bwd(rel, g, branch, gg, gt, grel):  # pragma: no cover - compiled
    rows, n = g.shape
    for r in range(rows):
        acc = 0.0
        for i in range(n - 1, -1, -1):
            acc += gg[r, i]
            b = branch[r, i]
            gt[r, i] = 0.0
            grel[r, i] = 0.0
            if b == 0:
                gt[r, i] = acc
                acc = 0.0
            elif b == 2:
                prev = g[r, i - 1] if i > 0 else 1.0
                grel[r, i] = acc * (prev - 1.0)
                acc = acc * rel[r, i]
            # b == 1: g[i] = g[i-1], the adjoint passes through unchanged


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().cpu().numpy()


def _rows(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast ``t`` to ``shape`` and flatten to contiguous ``(rows, samples)``."""
    return t.expand(shape).reshape(-1, shape[-1]).contiguous()


class BallisticsFunction(torch.autograd.Function):
    """Branching one-pole recursion (JUCE BallisticsFilter), see module docstring.

    Inputs ``x``, ``c_att``, ``c_rel``: ``(rows, samples)`` same dtype, contiguous. Output ``y``
    ``(rows, samples)``. Backward returns exact gradients to all three."""

    @staticmethod
    def forward(ctx, x, c_att, c_rel):
        y = np.empty_like(_np(x))
        xn, an, rn = _np(x), _np(c_att), _np(c_rel)
        _ballistics_fwd(xn, an, rn, y)
        y_t = torch.from_numpy(y).to(x.device)
        ctx.save_for_backward(x, c_att, c_rel, y_t)
        return y_t

    @staticmethod
    def backward(ctx, gy):
        x, c_att, c_rel, y = ctx.saved_tensors
        xn = _np(x)
        gx = np.empty_like(xn)
        ga = np.empty_like(xn)
        gr = np.empty_like(xn)
        _ballistics_bwd(xn, _np(c_att), _np(c_rel), _np(y), _np(gy.to(x.dtype)), gx, ga, gr)
        dev = x.device
        return torch.from_numpy(gx).to(dev), torch.from_numpy(ga).to(dev), torch.from_numpy(gr).to(dev)


class HoldReleaseFunction(torch.autograd.Function):
    """Instant-attack / hold / exponential-release gain envelope (pedalboard BrickwallLimiter).

    Inputs ``target`` (gain targets in (0, 1]) and ``rel`` (release pole per sample): ``(rows,
    samples)``; ``hold_len``: int samples. Output ``g`` ``(rows, samples)``. Exact backward to
    ``target`` and ``rel`` (the branch of each sample is recorded in forward)."""

    @staticmethod
    def forward(ctx, target, rel, hold_len: int):
        tn = _np(target)
        g = np.empty_like(tn)
        branch = np.empty(tn.shape, dtype=np.int8)
        _hold_release_fwd(tn, _np(rel), int(hold_len), g, branch)
        g_t = torch.from_numpy(g).to(target.device)
        ctx.save_for_backward(rel, g_t)
        ctx.branch = branch
        return g_t

    @staticmethod
    def backward(ctx, gg):
        rel, g = ctx.saved_tensors
        gn = _np(g)
        gt = np.empty_like(gn)
        grel = np.empty_like(gn)
        _hold_release_bwd(_np(rel), gn, ctx.branch, _np(gg.to(g.dtype)), gt, grel)
        dev = g.device
        return torch.from_numpy(gt).to(dev), torch.from_numpy(grel).to(dev), None


# ------------------------------------------------------------------------------------------------
# public wrappers
# ------------------------------------------------------------------------------------------------
def ballistics(level: torch.Tensor, c_att: torch.Tensor, c_rel: torch.Tensor) -> torch.Tensor:
    """Branching one-pole envelope of a non-negative ``level`` (JUCE BallisticsFilter recursion).

    Args:
        level: ``(batch, channels, samples)`` rectified level (``|x|``, ``x**2``, or a gain
            reduction in dB).
        c_att, c_rel: pole coefficients in [0, 1), broadcastable to ``level``'s shape, e.g.
            ``(batch, 1, 1)`` static or ``(batch, 1, samples)`` time-varying.
    Returns:
        ``(batch, channels, samples)`` envelope, ``y[-1] = 0``.
    """
    shape = level.shape
    dtype = level.dtype
    c_att = c_att.to(dtype)
    c_rel = c_rel.to(dtype)
    y = BallisticsFunction.apply(_rows(level, shape), _rows(c_att, shape), _rows(c_rel, shape))
    return y.reshape(shape)


def rms_ballistics(x: torch.Tensor, c_att: torch.Tensor, c_rel: torch.Tensor) -> torch.Tensor:
    """JUCE BallisticsFilter in RMS mode: ``sqrt(ballistics(x**2))``. Shapes as :func:`ballistics`.

    The square root's gradient is taken at ``max(y, 1e-30)`` so it stays finite where y = 0."""
    y = ballistics(x * x, c_att, c_rel)
    safe = torch.clamp(y, min=1e-30)
    return torch.where(y > 0, torch.sqrt(safe), torch.zeros_like(y))


def hold_release_gain(target: torch.Tensor, rel: torch.Tensor, hold_len: int) -> torch.Tensor:
    """Limiter gain envelope (instant attack, hold of ``hold_len`` samples, release pole ``rel``).

    Args:
        target: ``(batch, samples)`` target gains in (0, 1].
        rel: release pole broadcastable to ``(batch, samples)``.
        hold_len: hold time in samples (pedalboard BrickwallLimiter: its lookahead).
    Returns:
        ``(batch, samples)`` gain, starting from 1.
    """
    shape = target.shape
    rel = rel.to(target.dtype)
    g = HoldReleaseFunction.apply(_rows(target, shape), _rows(rel, shape), int(hold_len))
    return g.reshape(shape)


def juce_coefficient(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """JUCE ``BallisticsFilter::calculateLimitedCte``: ``exp(-2*pi*1000 / (sr * t_ms))``,
    exactly 0 for ``t_ms < 1e-3``. Any shape; gradient finite everywhere (0 below the limit)."""
    exp_factor = -2.0 * math.pi * 1000.0 / float(sample_rate)
    safe = torch.clamp(time_ms, min=1e-3)
    return torch.where(time_ms < 1e-3, torch.zeros_like(safe), torch.exp(exp_factor / safe))


def time_constant_coefficient(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """One-pole coefficient of time constant ``t_ms``: ``exp(-1000 / (sr * t_ms))``
    (Giannoulis, Massberg & Reiss 2012, eq. 7); 0 for ``t_ms < 1e-3``. Any shape."""
    safe = torch.clamp(time_ms, min=1e-3)
    return torch.where(time_ms < 1e-3, torch.zeros_like(safe), torch.exp(-1000.0 / (float(sample_rate) * safe)))
