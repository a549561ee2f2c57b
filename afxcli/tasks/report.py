"""Per-file reports of ``afx master``: level figures, the JSON report and the ``--plot`` PNG.

Level figures of a recording ``(channels, samples)``: integrated loudness (LUFS, BS.1770-4,
pyloudnorm's algorithm vectorized), true peak (dBTP, BS.1770-4 Annex 2, as :mod:`afxcli.metrics`
computes it; see :mod:`afxcli.tasks.loudness`) and crest factor (dB, sample peak over RMS). The plot shows the 1/3-octave-smoothed average spectra (Welch, mono mix) of
input, reference and output, each normalized to its own loudness so the shapes compare, and, when
the chain setting varies over time, the parameter automation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import AfxError

REPORT_FORMAT = "afx-master-report"
REPORT_VERSION = 1


def _finite(v: float) -> float | None:
    return round(float(v), 4) if v is not None and math.isfinite(v) else None


def levels(audio: np.ndarray, sample_rate: float, lufs_value: float | None = None,
           true_peak: float | None = None) -> dict:
    """``{"lufs", "true_peak_dbtp", "crest_db"}`` of ``audio`` ``(channels, samples)`` (``None`` where
    undefined, e.g. silence); already measured values may be passed in."""
    from .loudness import fast_lufs as lufs, fast_true_peak_dbtp as true_peak_dbtp

    return {"lufs": _finite(lufs(audio, sample_rate) if lufs_value is None else lufs_value),
            "true_peak_dbtp": _finite(true_peak_dbtp(audio, sample_rate) if true_peak is None else true_peak),
            "crest_db": _finite(crest_db(audio))}


def crest_db(audio: np.ndarray) -> float:
    """Crest factor ``20·log10(max|x| / RMS)`` over all channels (sample peak), the definition of
    :func:`afxcli.metrics.crest_factor_db`, without its float64 copy: squares in the input's
    precision, summed pairwise into a float64 accumulator, in chunks. ``audio`` ``(channels,
    samples)`` or ``(samples,)``; ``nan`` for silence or no samples."""
    a = np.asarray(audio)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    a = a.reshape(-1)
    if a.size == 0:
        return float("nan")
    peak, energy = 0.0, 0.0
    for s in range(0, a.size, 1 << 18):
        c = a[s:s + (1 << 18)]
        peak = max(peak, float(np.max(np.abs(c))))
        energy += float(np.square(c).sum(dtype=np.float64))
    if energy == 0.0:
        return float("nan")
    return 20.0 * math.log10(peak / math.sqrt(energy / a.size))


def write_report(path: str | Path, report: Mapping) -> None:
    from ..atomic import write_json_atomic

    write_json_atomic(path, {"format": REPORT_FORMAT, "version": REPORT_VERSION, **report})


def smoothed_spectrum_db(audio: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """1/3-octave smoothed average power spectrum of the mono mix, dB, ``(freqs_hz, db)``."""
    from .rulebased import average_spectrum, smooth_fractional_octave

    f, p = average_spectrum(audio, sample_rate)
    return f, 10.0 * np.log10(smooth_fractional_octave(f, p) + 1e-20)


def plot_master(path: str | Path, spectra: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
                title: str, automation: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                settings: Mapping[str, str] | None = None) -> Path:
    """Write a PNG: ``spectra`` ``{name: (freqs_hz, power_db, lufs)}`` (each shifted by −LUFS so
    shapes compare), optional ``automation`` ``{param: (times_s, values)}`` and a text box of
    ``settings``. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise AfxError(f"{p}: --plot writes a PNG; give a .png file name")
    if not p.parent.is_dir() and str(p.parent):
        raise AfxError(f"{p}: output folder {p.parent} does not exist")
    rows = 2 if automation else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 4.2 * rows), squeeze=False)
    ax = axes[0, 0]
    for name, (f, db, loud) in spectra.items():
        keep = f >= 20
        shift = -loud if loud is not None and math.isfinite(loud) else 0.0
        ax.semilogx(f[keep], db[keep] + shift, label=f"{name} ({loud:.1f} LUFS)" if loud is not None else name, lw=1.2)
    ax.set_xlim(20, max(float(f.max()) for f, _, _ in spectra.values()))
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power re. loudness (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if settings:
        text = "\n".join(f"{k}: {v}" for k, v in settings.items())
        ax.text(0.01, 0.02, text, transform=ax.transAxes, fontsize=6.5, family="monospace",
                va="bottom", bbox={"facecolor": "white", "alpha": 0.75, "lw": 0})
    if automation:
        ax2 = axes[1, 0]
        for name, (t, v) in automation.items():
            ax2.plot(t, v, label=name, lw=1.0)
        ax2.set_xlabel("time (s)")
        ax2.set_ylabel("value (physical units)")
        ax2.legend(fontsize=7)
        ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = p.with_name(f".{p.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(p)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return p
