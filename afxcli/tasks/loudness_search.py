"""The gain search of the loudness stage (:func:`afxcli.tasks.loudness.match_loudness`).

``L(g)``: integrated loudness (LUFS) of the true-peak limiter's output when the signal enters it
``g`` dB louder. It rises with slope ≤ 1 (the harder the limiter works, the more loudness it
takes back) up to a maximum: pedalboard's limiter saturates, and past that point more gain gives
a *quieter* output (measured: a 180 s master peaked at −11.2 LUFS under a −1.1 dB limiter
ceiling and fell to −14.1 LUFS at 9 dB more gain). Each evaluation is a whole limiter render and
a loudness measurement, so :func:`search_gain` spends as few as it can:

- a secant step from the last two points on the rising side (the first from a slope guess, e.g.
  the one the excerpts' search ended with), at most ``max_step_db`` up;
- once the target is bracketed (a point below and one above), regula falsi inside the bracket,
  kept 5 % away from its ends (L is smooth and concave there, so this converges in a few steps);
- a point that is lower than one at a smaller gain while both are under the target means the
  maximum was passed: one parabolic step toward the maximum, and if that is still under the
  target, the target is unreachable at this ceiling (the loudest point is returned);
- ``stop(g, L)`` (e.g. "more than 8 dB of limiting") ends a search that still has to go up;
- two points above the target with the same value at different gains mean the function is flat
  there (a limiter that is not engaged: lower gains cannot bring it down), so the search ends
  (``flat``) instead of stepping down without end.

The result's ``best`` is the evaluated point nearest the target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class GainSearch:
    """``points``: every ``(gain dB, loudness LUFS)`` evaluated, in order; ``best``: the one
    nearest the target; ``reached``: within the tolerance; ``saturated``: the maximum of ``L``
    was passed under the target; ``stopped``: ``stop`` ended the search; ``flat``: the values
    above the target did not move with the gain (module docstring); ``slope``: the last secant
    slope (dLU/dB) near ``best``."""

    points: list[tuple[float, float]] = field(default_factory=list)
    best: tuple[float, float] | None = None
    reached: bool = False
    saturated: bool = False
    stopped: bool = False
    flat: bool = False
    slope: float = 1.0


def _parabola_vertex(p: list[tuple[float, float]]) -> float | None:
    """Gain of the vertex of the parabola through three points (``None`` if not a maximum)."""
    (x0, y0), (x1, y1), (x2, y2) = p
    d = (x0 - x1) * (x0 - x2) * (x1 - x2)
    if d == 0.0:
        return None
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / d
    return -b / (2.0 * a) if a < 0.0 else None


def search_gain(measure: Callable[[float], float], target: float, tolerance: float, start_db: float,
                slope: float = 1.0, max_evals: int = 6, max_step_db: float = 6.0,
                stop: Callable[[float, float], bool] | None = None,
                min_slope: float = 0.05, flat_tolerance: float = 1e-4) -> GainSearch:
    """Find ``g`` with ``|measure(g) − target| ≤ tolerance`` in at most ``max_evals`` calls,
    starting at ``start_db`` with the slope guess ``slope`` (module docstring)."""
    res = GainSearch(slope=float(min(max(slope, min_slope), 1.0)))
    g = float(start_db)
    peak_tried = False
    for _ in range(max(1, int(max_evals))):
        level = float(measure(g))
        res.points.append((g, level))
        if res.best is None or abs(level - target) < abs(res.best[1] - target):
            res.best = (g, level)
        if abs(level - target) <= tolerance:
            res.reached = True
            break
        below = sorted(p for p in res.points if p[1] < target)
        above = sorted(p for p in res.points if p[1] > target)
        if len(res.points) >= 2:
            (g0, l0), (g1, l1) = res.points[-2], res.points[-1]
            if g1 != g0:
                res.slope = float(min(max((l1 - l0) / (g1 - g0), min_slope), 1.0))
        rising_below = [p for p in below if above and p[0] < above[0][0]]
        if rising_below:  # bracketed on the rising side
            lo, hi = max(rising_below, key=lambda p: p[0]), above[0]
            w = hi[0] - lo[0]
            g_next = lo[0] + (target - lo[1]) * w / (hi[1] - lo[1])
            g = min(max(g_next, lo[0] + 0.05 * w), hi[0] - 0.05 * w)
            continue
        if above:  # only points above the target (or above ones at lower gains): step down
            if len(above) >= 2 and abs(above[0][1] - above[-1][1]) <= flat_tolerance \
                    and above[-1][0] - above[0][0] >= 0.05:
                res.flat = True   # flat above the target: no lower gain gets there
                break
            g = res.points[-1][0] - min((res.points[-1][1] - target) / res.slope, 2.0 * max_step_db)
            continue
        # every point is under the target
        top = max(below, key=lambda p: p[1])
        passed = any(p[0] > top[0] for p in below)
        if passed:  # the maximum lies around ``top``: one step toward it, then give up
            res.saturated = True
            if peak_tried:
                break
            peak_tried = True
            i = below.index(top)
            trio = below[max(0, i - 1):i + 2]
            v = _parabola_vertex(trio) if len(trio) == 3 else None
            lo_g = below[i - 1][0] if i > 0 else top[0] - 1.0
            hi_g = below[i + 1][0] if i + 1 < len(below) else top[0] + 1.0
            g = v if v is not None and lo_g < v < hi_g and abs(v - top[0]) > 1e-3 else 0.5 * (top[0] + (hi_g if i + 1 < len(below) else lo_g))
            continue
        last = res.points[-1]
        if stop is not None and stop(*last):
            res.stopped = True
            break
        step = (target - last[1]) / res.slope
        g = last[0] + min(step, max_step_db)
    return res
