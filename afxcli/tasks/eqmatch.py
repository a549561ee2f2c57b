"""Matched graphic EQ: the DSP spectral match that afx's style models start from.

The rule-based baseline of DeepAFx-ST (§3.3) matches the reference's long-term spectrum with a FIR
filter; here the same desired response (:func:`afxcli.tasks.rulebased.matched_response_db`: ratio of
the 1/3-octave smoothed average spectra, level removed) is fitted by an ISO **graphic EQ**
(:class:`afxcli.effects.eq.GraphicEQ`, constant-Q RBJ peaking sections, one pedalboard
``PeakFilter`` each), so the match is an ordinary, readable effect: one gain per 1/3-octave band.

Fit: the response of the cascade is evaluated exactly (:func:`afxcli.filters.sos_response_db`) on a
log-spaced grid between the response's lower edge and its top (``f_top``); the band gains follow
Gauss–Newton steps on ``‖D − R(g)‖² + μ‖Δg‖²``, ``g ← clip(g + (BᵀB + λI + μΔᵀΔ)⁻¹ (Bᵀ(D − R(g)) −
μΔᵀΔg))``, with ``B`` the response of each band at +1 dB (a peaking section's dB response is nearly
linear in its gain), a small step ridge ``λ`` that keeps bands the grid does not see (above
``f_top``) at 0 dB, and ``Δ`` the differences of neighbouring band gains: neighbouring
constant-Q bands overlap, so without ``μ`` the least-squares gains alternate (±5 dB from band to
band on average on the 10 ``benchmarks/master_eval.py`` pairs, many at the ±12 dB clip) for a
response that barely differs; ``μ`` = :data:`SMOOTHNESS` halves that alternation and, with fewer
gains stuck at the clip, fits the response *better* (RMS error over the fit grid on those pairs:
μ = 0 3.23 dB, μ = 1 2.87 dB, μ = 3 3.12 dB, μ = 10 3.56 dB; neighbour differences 5.2, 3.1, 2.2,
1.4 dB).

A style model with ``"match_eq"`` in its config (:mod:`afxcli.train.style`) sees the input *after*
this stage and predicts the rest of the chain (its parametric EQ then corrects what the spectral
match got wrong): the network's job starts from the DSP estimate instead of from nothing.
"""
from __future__ import annotations

import numpy as np

#: Label of the matched EQ stage in chains and traces.
MATCH_EQ_LABEL = "match"
#: Grid points of the fit (log-spaced).
FIT_POINTS = 240
#: The response's level is removed between 30 Hz and this frequency (Hz): the same band at every
#: rate from 16 kHz up, so the stage's broadband gain at the model rate (what the network saw in
#: training) and at the file's rate (what is rendered) agree.
LEVEL_TOP_HZ = 7000.0
#: Weight ``μ`` of the neighbouring-gain difference penalty of :func:`fit_graphic_eq` (module notes).
SMOOTHNESS = 3.0


def match_eq_spec(bands: str = "third") -> dict:
    """The chain spec entry of the matched EQ stage (every band gain free; shelves at the ends)."""
    return {"type": "geq", "label": MATCH_EQ_LABEL, "options": {"bands": bands, "shelves": True}}


def fit_graphic_eq(freqs_hz: np.ndarray, response_db: np.ndarray, sample_rate: float,
                   f_low_hz: float, f_top_hz: float, bands: str = "third", max_gain_db: float = 12.0,
                   iterations: int = 4, ridge: float = 0.05, smoothness: float | None = None) -> dict[str, float]:
    """Band gains ``{band_<f>hz_gain_db: dB}`` of a :class:`~afxcli.effects.eq.GraphicEQ` at
    ``sample_rate`` whose response best fits ``response_db`` (on ``freqs_hz``) between ``f_low_hz``
    and ``f_top_hz`` (least squares over log frequency plus ``smoothness`` (default :data:`SMOOTHNESS`)
    times the squared differences of neighbouring gains; gains clipped to ± ``max_gain_db``)."""
    from ..effects.eq import GraphicEQ
    from ..filters import rbj_high_shelf, rbj_low_shelf, rbj_peak, sos_response_db

    geq = GraphicEQ(sample_rate, **match_eq_spec(bands)["options"])
    sections = geq.sections             # (kind, center_hz, gain key, q), one per band
    design = {"peak": rbj_peak, "low_shelf": rbj_low_shelf, "high_shelf": rbj_high_shelf}
    keys = [sec[2] for sec in sections]
    max_gain_db = min(float(max_gain_db), geq.GAIN_DB)
    top = min(float(f_top_hz), 0.49 * sample_rate)
    grid = np.geomspace(max(20.0, float(f_low_hz)), top, FIT_POINTS)
    target = np.interp(np.log(grid), np.log(np.maximum(freqs_hz, 1e-3)), response_db)

    def cascade(gains) -> np.ndarray:
        return np.stack([design[kind](sample_rate, fc, gk, q) for (kind, fc, _, q), gk in zip(sections, gains)])

    basis = np.stack([sos_response_db(cascade(np.eye(len(keys))[i]), sample_rate, grid)
                      for i in range(len(keys))], axis=1)
    mu = SMOOTHNESS if smoothness is None else float(smoothness)
    diff = np.diff(np.eye(len(keys)), axis=0)
    smooth = mu * diff.T @ diff
    lhs = basis.T @ basis + ridge * np.eye(len(keys)) + smooth
    g = np.zeros(len(keys))
    for _ in range(iterations):
        resid = target - sos_response_db(cascade(g), sample_rate, grid)
        g = np.clip(g + np.linalg.solve(lhs, basis.T @ resid - smooth @ g), -max_gain_db, max_gain_db)
    return {k: float(v) for k, v in zip(keys, g)}


def design_matched_geq(audio: np.ndarray, sample_rate: float, ref_audio: np.ndarray | None, ref_rate: float,
                       bands: str = "third", max_gain_db: float = 12.0, f_low_hz: float = 30.0,
                       ref_spectrum: tuple[np.ndarray, np.ndarray] | None = None,
                       smoothness: float | None = None) -> dict[str, float]:
    """Graphic-EQ band gains moving the smoothed average spectrum of ``audio`` toward ``ref_audio``'s
    (both ``(channels, samples)``, each at its own rate; or toward a stored ``ref_spectrum``,
    :func:`~afxcli.tasks.rulebased.smoothed_spectrum` at ``ref_rate``), for a :func:`match_eq_spec`
    stage at ``sample_rate``; ``smoothness``: :func:`fit_graphic_eq`'s (None: :data:`SMOOTHNESS`)."""
    from .rulebased import matched_response_db

    f, d, f_known = matched_response_db(audio, sample_rate, ref_audio, ref_rate, f_low_hz=f_low_hz,
                                        f_max_hz=LEVEL_TOP_HZ, ref_spectrum=ref_spectrum)
    # fitted up to where the response is known (the FIR design follows it there too)
    return fit_graphic_eq(f, d, sample_rate, f_low_hz, f_known, bands, max_gain_db, smoothness=smoothness)


def apply_matched_geq(audio: np.ndarray, sample_rate: float, values: dict[str, float],
                      bands: str = "third") -> np.ndarray:
    """Render the matched EQ stage with pedalboard: ``(channels, samples)`` → float32, same shape."""
    from ..effects.chain import Chain
    from ..render import render_chain

    chain = Chain({"effects": [match_eq_spec(bands)]}, sample_rate)
    return render_chain(chain, np.asarray(audio, dtype=np.float32), [values])


def spectrum_to_json(freqs_hz: np.ndarray, power: np.ndarray, sample_rate: float, points: int = 160) -> dict:
    """A smoothed spectrum (:func:`~afxcli.tasks.rulebased.smoothed_spectrum`) for a preset file: its
    power in dB on ``points`` log-spaced frequencies from 20 Hz to Nyquist (1/3-octave smoothed
    already, so ~1/24 octave loses nothing)."""
    grid = np.geomspace(20.0, sample_rate / 2, points)
    db = 10.0 * np.log10(np.interp(grid, freqs_hz, power) + 1e-20)
    return {"sample_rate": float(sample_rate), "freqs_hz": [round(float(v), 3) for v in grid],
            "power_db": [round(float(v), 3) for v in db]}


def spectrum_from_json(data: dict) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """``((freqs_hz, power), sample_rate)`` from :func:`spectrum_to_json`'s object."""
    f = np.asarray(data["freqs_hz"], dtype=np.float64)
    p = 10.0 ** (np.asarray(data["power_db"], dtype=np.float64) / 10.0)
    if f.ndim != 1 or f.shape != p.shape or f.size < 2 or not np.all(np.diff(f) > 0):
        raise ValueError("spectrum: freqs_hz and power_db must be equal-length increasing lists")
    return (f, p), float(data["sample_rate"])
