"""Effect parameters: physical ranges and the [0, 1] normalization networks predict.

Scaling follows BE-AFX (Peladeau & Peeters, ICASSP 2024) eqs. 7-8:

- ``lin``: ``p = (p_max - p_min) * q + p_min``                       (eq. 7)
- ``log``: ``p = exp((log p_max - log p_min) * q) * p_min``          (eq. 8)

Frequencies, times and ratios use ``log``; gains in dB use ``lin``.
All functions accept Python floats, NumPy arrays and torch tensors and return the same kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Union

import numpy as np

from .errors import AfxError
from .lazy import is_tensor, torch

ArrayLike = Union[float, np.ndarray, "torch.Tensor"]

#: Highest frequency any effect parameter may take, as a fraction of the sample rate.
MAX_FREQ_FRACTION = 0.45


def max_freq_hz(sample_rate: float, cap_hz: float = 20000.0) -> float:
    """Upper frequency bound for a parameter at ``sample_rate``: ``min(cap_hz, 0.45 * sr)``."""
    return float(min(cap_hz, MAX_FREQ_FRACTION * sample_rate))


def _log(x: ArrayLike) -> ArrayLike:
    if is_tensor(x):
        return torch.log(x)
    if isinstance(x, np.ndarray):
        return np.log(x)
    return math.log(x)


def _exp(x: ArrayLike) -> ArrayLike:
    if is_tensor(x):
        return torch.exp(x)
    if isinstance(x, np.ndarray):
        return np.exp(x)
    return math.exp(x)


def _clip(x: ArrayLike, lo: float, hi: float) -> ArrayLike:
    if is_tensor(x):
        return torch.clamp(x, lo, hi)
    if isinstance(x, np.ndarray):
        return np.clip(x, lo, hi)
    return float(min(max(x, lo), hi))


@dataclass(frozen=True)
class ParamSpec:
    """One effect parameter.

    Attributes:
        name: identifier with its unit as suffix, e.g. ``threshold_db``, ``attack_ms``, ``cutoff_hz``.
        unit: unit symbol for display (``dB``, ``ms``, ``Hz``, ``:1``, ``""``).
        min, max: physical range (inclusive).
        default: physical value used when nothing else is given (inside the range).
        scale: ``lin`` or ``log`` (BE-AFX eqs. 7-8); ``log`` needs ``min > 0``.
    """

    name: str
    unit: str
    min: float
    max: float
    default: float
    scale: Literal["lin", "log"] = "lin"

    def __post_init__(self) -> None:
        if self.scale not in ("lin", "log"):
            raise AfxError(f"parameter {self.name}: scale must be 'lin' or 'log', not {self.scale!r}")
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.max < self.min:
            raise AfxError(f"parameter {self.name}: invalid range [{self.min}, {self.max}]")
        if self.scale == "log" and self.min <= 0:
            raise AfxError(f"parameter {self.name}: a log-scale range must be positive, got min={self.min}")
        if not (self.min <= self.default <= self.max):
            raise AfxError(
                f"parameter {self.name}: default {self.default} outside [{self.min}, {self.max}]"
            )

    def with_range(self, min: float | None = None, max: float | None = None) -> "ParamSpec":
        """A copy with a narrower (or different) range; the default is clipped into it."""
        lo = self.min if min is None else float(min)
        hi = self.max if max is None else float(max)
        if hi < lo:
            raise AfxError(f"parameter {self.name}: range override [{lo}, {hi}] is empty")
        return replace(self, min=lo, max=hi, default=float(np.clip(self.default, lo, hi)))

    def clip(self, value: ArrayLike) -> ArrayLike:
        """Clip a physical value into ``[min, max]``."""
        return _clip(value, self.min, self.max)

    def normalize(self, value: ArrayLike) -> ArrayLike:
        """Physical value -> ``q`` in [0, 1] (inverse of eqs. 7-8). Values are clipped first."""
        value = self.clip(value)
        if self.max == self.min:
            return value * 0.0
        if self.scale == "lin":
            return (value - self.min) / (self.max - self.min)
        return (_log(value) - math.log(self.min)) / (math.log(self.max) - math.log(self.min))

    def denormalize(self, q: ArrayLike) -> ArrayLike:
        """``q`` in [0, 1] -> physical value (BE-AFX eqs. 7-8). ``q`` is clipped to [0, 1] first."""
        q = _clip(q, 0.0, 1.0)
        if self.scale == "lin":
            return (self.max - self.min) * q + self.min
        return _exp((math.log(self.max) - math.log(self.min)) * q) * self.min

    def _tolerant_bounds(self) -> tuple[float, float]:
        """The range widened by a relative 1e-9 (values computed in float round-off are accepted)."""
        return self.min - 1e-9 * max(1.0, abs(self.min)), self.max + 1e-9 * max(1.0, abs(self.max))

    def validate(self, value: float, where: str = "") -> float:
        """Return ``value`` as float or raise a one-line :class:`AfxError` if it is not finite or out of range."""
        v = float(value)
        lo, hi = self._tolerant_bounds()
        if not math.isfinite(v) or v < lo or v > hi:
            at = f"{where}: " if where else ""
            raise AfxError(f"{at}{self.name}={value} is outside [{self.min:g}, {self.max:g}] {self.unit}".rstrip())
        return float(min(max(v, self.min), self.max))

    def validate_array(self, values: np.ndarray, where: str = "") -> np.ndarray:
        """:meth:`validate` on every element of ``values`` at once: float64 copy clipped into the
        range, or the one-line error :meth:`validate` gives for the first offending element."""
        a = np.asarray(values, dtype=np.float64)
        lo, hi = self._tolerant_bounds()
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(a) | (a < lo) | (a > hi)
        if np.any(bad):
            self.validate(float(a.reshape(-1)[int(np.argmax(bad.reshape(-1)))]), where)  # raises
        return np.minimum(np.maximum(a, self.min), self.max)

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "min": self.min, "max": self.max,
                "default": self.default, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "ParamSpec":
        return cls(name=str(d["name"]), unit=str(d.get("unit", "")), min=float(d["min"]),
                   max=float(d["max"]), default=float(d["default"]), scale=d.get("scale", "lin"))


def denormalize_all(specs: "list[ParamSpec] | tuple[ParamSpec, ...]", q: torch.Tensor) -> torch.Tensor:
    """Map normalized parameters ``(batch, n[, frames])`` to physical units, spec ``i`` on axis 1."""
    if q.shape[1] != len(specs):
        raise ValueError(f"expected {len(specs)} parameters on axis 1, got shape {tuple(q.shape)}")
    return torch.stack([s.denormalize(q[:, i]) for i, s in enumerate(specs)], dim=1)


def normalize_all(specs: "list[ParamSpec] | tuple[ParamSpec, ...]", p: torch.Tensor) -> torch.Tensor:
    """Map physical parameters ``(batch, n[, frames])`` to [0, 1], spec ``i`` on axis 1."""
    if p.shape[1] != len(specs):
        raise ValueError(f"expected {len(specs)} parameters on axis 1, got shape {tuple(p.shape)}")
    return torch.stack([s.normalize(p[:, i]) for i, s in enumerate(specs)], dim=1)
