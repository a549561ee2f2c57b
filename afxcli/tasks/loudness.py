"""Loudness stage of ``afx master``: gain to a target integrated loudness, then a true-peak
brickwall limiter at the ceiling, iterated until the loudness lands and the true peak holds.

Flow: audio ``(channels, samples)`` → integrated loudness (ITU-R BS.1770-4 via pyloudnorm,
:func:`afxcli.metrics.lufs`, whole file) → gain ``g = target − L`` → pedalboard
``BrickwallLimiter(true_peak=True)`` (the ``limiter`` effect) at the ceiling → measure loudness and
true peak (:func:`afxcli.metrics.true_peak_dbtp`, BS.1770-4 Annex 2) → correct the gain (secant
step, the limiter makes loudness grow by less than 1 dB per dB of gain) and, when the limiter lets an
inter-sample peak over the ceiling, lower the limiter's own ceiling by the overshoot and render
again. The output's true peak never exceeds the ceiling: if the rounds run out while it does, a
plain gain reduction takes the peak under the ceiling (the loudness then misses; the result says so).

Presets (``presets/loudness/*.json``, ``"format": "afx-loudness-preset"``) name targets such as
``streaming`` (−14 LUFS, −1 dBTP) or ``broadcast`` (EBU R128: −23 LUFS, −1 dBTP).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AfxError

#: Format tag of a loudness preset file.
LOUDNESS_PRESET_FORMAT = "afx-loudness-preset"
#: Folder of the shipped loudness presets.
LOUDNESS_PRESET_DIR = Path(__file__).resolve().parents[2] / "presets" / "loudness"
#: Target when nothing else gives one (streaming services' common −14 LUFS).
DEFAULT_TARGET_LUFS = -14.0
DEFAULT_CEILING_DBTP = -1.0
#: More loudness lost in the limiter than this (LU) counts as excessive limiting.
DEFAULT_MAX_LIMITING_DB = 8.0


@dataclass
class LoudnessPreset:
    name: str
    target_lufs: float
    ceiling_dbtp: float
    description: str = ""
    path: Path | None = None


def list_loudness_presets() -> list[str]:
    return sorted(p.stem for p in LOUDNESS_PRESET_DIR.glob("*.json"))


def load_loudness_preset(name_or_path: str | Path) -> LoudnessPreset:
    """A loudness preset by name (``streaming``, ``podcast``, ...) or path to its JSON."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = LOUDNESS_PRESET_DIR / f"{name_or_path}.json"
        if not p.is_file():
            raise AfxError(f"unknown loudness preset {str(name_or_path)!r} "
                           f"(shipped: {', '.join(list_loudness_presets())})")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise AfxError(f"{p}: cannot read loudness preset ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != LOUDNESS_PRESET_FORMAT:
        raise AfxError(f"{p}: not an afx loudness preset (format {LOUDNESS_PRESET_FORMAT!r})")
    try:
        target, ceiling = float(data["target_lufs"]), float(data["ceiling_dbtp"])
    except (KeyError, TypeError, ValueError):
        raise AfxError(f"{p}: loudness preset needs numeric target_lufs and ceiling_dbtp") from None
    check_target(target, ceiling)
    return LoudnessPreset(str(data.get("name", p.stem)), target, ceiling, str(data.get("description", "")), p)


def is_loudness_preset(name_or_path: str | Path) -> bool:
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        return (LOUDNESS_PRESET_DIR / f"{name_or_path}.json").is_file()
    try:
        return json.loads(p.read_text()).get("format") == LOUDNESS_PRESET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_target(target_lufs: float, ceiling_dbtp: float) -> None:
    if not (math.isfinite(target_lufs) and -70.0 <= target_lufs <= 0.0):
        raise AfxError(f"loudness target must be between -70 and 0 LUFS, got {target_lufs}")
    if not (math.isfinite(ceiling_dbtp) and -24.0 <= ceiling_dbtp <= 0.0):
        raise AfxError(f"true-peak ceiling must be between -24 and 0 dBTP, got {ceiling_dbtp}")


@dataclass
class LoudnessResult:
    """Outcome of :func:`match_loudness`. ``audio`` is ``(channels, samples)`` float32."""

    audio: np.ndarray
    input_lufs: float
    target_lufs: float
    output_lufs: float
    true_peak_dbtp: float
    ceiling_dbtp: float
    gain_db: float
    limiter_ceiling_db: float
    limiting_db: float          # loudness lost in the limiter: gain − (output − input) LU
    rounds: int
    reached: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("input_lufs", "target_lufs", "output_lufs", "true_peak_dbtp",
                                                "ceiling_dbtp", "gain_db", "limiter_ceiling_db", "limiting_db",
                                                "rounds", "reached", "notes")}


def _limit(audio: np.ndarray, sr: float, gain_db: float, ceiling_db: float, release_ms: float,
           lookahead_ms: float) -> np.ndarray:
    from ..effects import create
    from ..render import render_effect

    y = audio * np.float32(10.0 ** (gain_db / 20.0))
    lim = create("limiter", sr, true_peak=True, lookahead_ms=lookahead_ms)
    return render_effect(lim, y, {"ceiling_db": float(np.clip(ceiling_db, -24.0, 0.0)),
                                  "release_ms": float(np.clip(release_ms, 1.0, 1000.0))})


def match_loudness(audio: np.ndarray, sample_rate: float, target_lufs: float,
                   ceiling_dbtp: float = DEFAULT_CEILING_DBTP, tolerance_lu: float = 0.1,
                   max_rounds: int = 6, release_ms: float = 100.0, lookahead_ms: float = 5.0,
                   max_limiting_db: float = DEFAULT_MAX_LIMITING_DB,
                   input_lufs: float | None = None) -> LoudnessResult:
    """Gain + true-peak limiter so that the integrated loudness is ``target_lufs`` (± ``tolerance_lu``)
    and the true peak is ≤ ``ceiling_dbtp``. ``audio`` ``(channels, samples)`` at ``sample_rate``.

    Gain alone is used when it already keeps the true peak under the ceiling (exact, no limiter).
    Raises AfxError for silent audio or audio shorter than one 400 ms loudness block.
    """
    from ..metrics import lufs, true_peak_dbtp

    check_target(target_lufs, ceiling_dbtp)
    x = np.ascontiguousarray(audio, dtype=np.float32)
    l_in = lufs(x, sample_rate) if input_lufs is None else float(input_lufs)
    if math.isnan(l_in):
        raise AfxError("audio too short to measure loudness (needs at least 0.4 s)")
    if not math.isfinite(l_in):
        raise AfxError("audio is silent: no loudness to match")
    notes: list[str] = []
    tp_in = true_peak_dbtp(x, sample_rate)
    gain = target_lufs - l_in
    # Fast exact path: plain gain already meets both constraints.
    if tp_in + gain <= ceiling_dbtp:
        y = x * np.float32(10.0 ** (gain / 20.0))
        l_out, tp = lufs(y, sample_rate), true_peak_dbtp(y, sample_rate)
        if tp <= ceiling_dbtp:
            return LoudnessResult(y, l_in, target_lufs, l_out, tp, ceiling_dbtp, gain, ceiling_dbtp, 0.0, 1,
                                  abs(l_out - target_lufs) <= tolerance_lu, notes)
    lim_ceiling = ceiling_dbtp
    best: tuple | None = None
    prev: tuple[float, float] | None = None  # (gain, loudness) of the previous round
    rounds = 0
    saturated = False
    y, l_out, tp = x, l_in, tp_in
    for rounds in range(1, max_rounds + 1):
        y = _limit(x, sample_rate, gain, lim_ceiling, release_ms, lookahead_ms)
        l_out, tp = lufs(y, sample_rate), true_peak_dbtp(y, sample_rate)
        if tp > ceiling_dbtp:  # inter-sample overshoot of the limiter: lower its ceiling, render again
            lim_ceiling -= (tp - ceiling_dbtp) + 0.02
            if lim_ceiling < -24.0:
                break
            continue
        err = target_lufs - l_out
        if best is None or abs(err) < abs(best[2] - target_lufs):
            best = (y, gain, l_out, tp, lim_ceiling)
        if abs(err) <= tolerance_lu:
            break
        slope = 1.0
        if prev is not None and abs(gain - prev[0]) > 1e-6:
            slope = (l_out - prev[1]) / (gain - prev[0])
            if slope < 0.05:
                saturated = True  # pedalboard's limiter: past ~10 dB of limiting more gain is not louder
                break
            slope = float(min(slope, 1.0))
        prev = (gain, l_out)
        limiting = gain - (l_out - l_in)
        if err > 0 and limiting > max_limiting_db:
            break  # more gain only adds limiting
        gain = gain + float(np.clip(err / slope, -12.0, 6.0))
    if best is None:  # never got under the ceiling by limiting alone: pull the level down
        peak_over = max(0.0, tp - ceiling_dbtp) + 0.02
        y = y * np.float32(10.0 ** (-peak_over / 20.0))
        gain -= peak_over
        l_out, tp = lufs(y, sample_rate), true_peak_dbtp(y, sample_rate)
        notes.append(f"limiter could not hold the ceiling; level lowered by {peak_over:.2f} dB")
        best = (y, gain, l_out, tp, lim_ceiling)
    y, gain, l_out, tp, lim_ceiling = best
    limiting = gain - (l_out - l_in)
    reached = abs(l_out - target_lufs) <= tolerance_lu
    if not reached and saturated:
        notes.append(f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS): the limiter saturates "
                     f"(more gain does not make it louder at a {ceiling_dbtp:.1f} dBTP ceiling)")
    elif not reached:
        notes.append(f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS): it would need more "
                     f"than {max_limiting_db:.0f} dB of limiting at a {ceiling_dbtp:.1f} dBTP ceiling"
                     if limiting > max_limiting_db else
                     f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS) in {rounds} rounds")
    elif limiting > max_limiting_db:
        notes.append(f"target reached with {limiting:.1f} dB of limiting (excessive; consider a lower target)")
    return LoudnessResult(np.ascontiguousarray(y, dtype=np.float32), l_in, target_lufs, l_out, tp,
                          ceiling_dbtp, gain, lim_ceiling, limiting, rounds, reached, notes)
