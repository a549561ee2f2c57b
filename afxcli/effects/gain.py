"""Gain: a level change in dB, twin of pedalboard ``Gain`` (JUCE ``dsp::Gain``).

Formula (JUCE ``Decibels::decibelsToGain``, used by ``dsp::Gain::setGainDecibels``)::

    g = 10 ** (gain_db * 0.05)   if gain_db > -100 else 0
    y[n] = g[n] * x[n]

pedalboard's ``Gain`` is built with a zero ramp duration, so a new value applies from the first
sample of the next chunk, which is what holding ``gain_db`` per block reproduces.
"""
from __future__ import annotations

from typing import Mapping

from ..lazy import torch
from ..params import ParamSpec
from .base import Effect, register

#: JUCE ``Decibels::decibelsToGain`` maps anything at or below this to a gain of exactly 0.
MINUS_INFINITY_DB = -100.0


def db_to_gain(db: torch.Tensor) -> torch.Tensor:
    """Decibels -> linear amplitude, elementwise, any shape (JUCE ``Decibels::decibelsToGain``:
    ``10^(dB/20)``, and 0 at or below -100 dB). Differentiable (gradient 0 below -100 dB)."""
    g = torch.pow(10.0, db * 0.05)
    return torch.where(db > MINUS_INFINITY_DB, g, torch.zeros_like(g))


@register
class Gain(Effect):
    """Static or automated gain.

    Parameters: ``gain_db`` (dB, linear scale, -24..+24, default 0).
    ``process``: ``x`` ``(batch, channels, samples)``, params ``(batch, 1)`` or ``(batch, 1, blocks)``
    -> ``(batch, channels, samples)``.
    """

    kind = "gain"
    has_twin = True
    channels_independent = True

    def _make_specs(self):
        return [ParamSpec("gain_db", "dB", -24.0, 24.0, 0.0, "lin")]

    def process(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None,
                mode: str) -> torch.Tensor:
        gain_db = self.param(params, "gain_db", x.shape[-1], block_size)  # (batch, 1|samples)
        return x * db_to_gain(gain_db.to(x.dtype)).unsqueeze(1)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        v = self.check_values(values)
        return [pedalboard.Gain(gain_db=v["gain_db"])]

    def apply_pedalboard(self, plugins: list, checked: Mapping[str, float]) -> None:
        plugins[0].gain_db = checked["gain_db"]
