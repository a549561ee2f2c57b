"""Linkwitz-Riley band splitting for multiband dynamics.

A 4th-order Linkwitz-Riley (LR4) crossover at ``f`` is a low-pass ``L = LP2^2`` and a high-pass
``H = HP2^2``, each two cascaded 2nd-order Butterworth sections (``Q = 1/sqrt(2)``, JUCE
``makeLowPass`` / ``makeHighPass``, i.e. the bilinear transform with prewarping). Their sum is the
2nd-order allpass ``A = (s^2 - sqrt2 s + 1)/(s^2 + sqrt2 s + 1)`` (Linkwitz & Riley, "Active
crossover networks for noncoincident drivers", JAES 1976; D'Appolito's allpass property), and,
because the bilinear transform is a rational substitution, the same identity holds exactly for the
digital sections (:func:`afxcli.dsp.biquad.make_allpass`).

Bands are split by a tree, lowest crossover first; every band below crossover ``j`` is passed through
the allpass ``A_j`` of each crossover it was not split by (allpass compensation), so for crossovers
``f_1 < ... < f_{N-1}``::

    band_k = (prod_{j > k+1} A_j) L_{k+1} (prod_{j <= k} H_j) x      (k = 0 .. N-1, L_N = 1)

and ``sum_k band_k = (prod_j A_j) x``: flat magnitude for any number of bands.
"""
from __future__ import annotations

import math

import torch

from .biquad import biquad, make_allpass, make_high_pass, make_low_pass

__all__ = ["linkwitz_riley_split", "BUTTERWORTH_Q"]

#: Q of each 2nd-order Butterworth section of an LR4 filter.
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)


def linkwitz_riley_split(x: torch.Tensor, crossovers_hz: torch.Tensor, sample_rate: float,
                         block_size: int | None = None) -> torch.Tensor:
    """Split ``x`` into ``n_bands`` LR4 bands whose sum is allpass.

    Args:
        x: audio ``(batch, channels, samples)``.
        crossovers_hz: ``(batch, n_bands - 1)`` ascending crossover frequencies in Hz (static), or
            ``(batch, n_bands - 1, blocks)`` held per block of ``block_size`` samples (time-varying;
            filter states persist across blocks). Batch 1 broadcasts. A Python list/tuple of floats
            is accepted for one fixed set of crossovers.
        sample_rate: Hz. Crossovers must lie in ``(0, sample_rate / 2)``.
        block_size: samples per block for time-varying crossovers (``None``: ``ceil(samples/blocks)``).

    Returns:
        ``(batch, n_bands, channels, samples)`` in ``x.dtype`` (computed in float64), band 0 lowest.
        Differentiable w.r.t. ``x`` and ``crossovers_hz`` (exact adjoint of the biquad recursion).
    """
    if x.dim() != 3:
        raise ValueError(f"linkwitz_riley_split: x must be (batch, channels, samples), got {tuple(x.shape)}")
    if not isinstance(crossovers_hz, torch.Tensor):
        crossovers_hz = torch.tensor([list(crossovers_hz)], dtype=torch.float64, device=x.device)
    if crossovers_hz.dim() not in (2, 3):
        raise ValueError("linkwitz_riley_split: crossovers_hz must be (batch, n_bands - 1[, blocks]), "
                         f"got {tuple(crossovers_hz.shape)}")
    B = x.shape[0]
    if crossovers_hz.shape[0] not in (1, B):
        raise ValueError(f"linkwitz_riley_split: crossovers batch {crossovers_hz.shape[0]} != audio batch {B}")
    fc = crossovers_hz.to(torch.float64)
    if fc.shape[0] != B:
        fc = fc.expand(B, *fc.shape[1:])
    n_cross = fc.shape[1]
    f_detached = fc.detach()
    if torch.any(~torch.isfinite(f_detached)) or torch.any(f_detached <= 0) or torch.any(f_detached >= sample_rate / 2):
        raise ValueError(f"linkwitz_riley_split: crossovers must lie in (0, {sample_rate / 2:g}) Hz")
    if n_cross > 1 and torch.any(f_detached[:, 1:] < f_detached[:, :-1]):
        raise ValueError("linkwitz_riley_split: crossovers_hz must be ascending")
    xd = x.to(torch.float64)
    if n_cross == 0:
        return xd.unsqueeze(1).to(x.dtype)

    # coefficients (batch, n_cross, 5[, blocks]) -> biquad wants (batch, 5[, blocks])
    def coeffs(fn, j):
        c = fn(sample_rate, fc[:, j], BUTTERWORTH_Q)  # (batch[, blocks], 5)
        return c if c.dim() == 2 else c.transpose(1, 2)

    lp = [coeffs(make_low_pass, j) for j in range(n_cross)]
    hp = [coeffs(make_high_pass, j) for j in range(n_cross)]
    ap = [coeffs(make_allpass, j) for j in range(n_cross)]

    bands = []
    rest = xd  # (prod_{j<=k} H_j) x
    for k in range(n_cross):
        low = biquad(biquad(rest, lp[k], block_size), lp[k], block_size)
        for j in range(k + 1, n_cross):
            low = biquad(low, ap[j], block_size)
        bands.append(low)
        rest = biquad(biquad(rest, hp[k], block_size), hp[k], block_size)
    bands.append(rest)
    return torch.stack(bands, dim=1).to(x.dtype)
