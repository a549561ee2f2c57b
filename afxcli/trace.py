"""Parameter traces: time-varying effect settings a person can read, tweak and export.

A :class:`ParameterTrace` holds, for every parameter of every effect in a chain, one value per
frame in physical units; frame ``k`` covers samples ``[k*hop, (k+1)*hop)`` at ``sample_rate``. A
static setting is a trace with one frame.

Smoothing follows DeepAFx (Martínez Ramírez et al., ICASSP 2021, §2.4): frame-wise predictions are
lowpass filtered across frames (zero-phase, so automation is not delayed) and then turned into
per-block control values (e.g. 64–512 samples) for rendering. Smoothing happens in normalized
parameter space, so log-scaled parameters (frequencies, times) move geometrically.

JSON format (``"format": "afx-trace"``, ``"version": 1``)::

    {"format": "afx-trace", "version": 1, "sample_rate": 44100, "hop": 512, "n_frames": 3,
     "n_samples": 1536 | null,
     "chain": { ...chain spec... },
     "params": {"eq.peak1_gain_db": [1.0, 1.5, 2.0], "compressor.ratio": 4.0, ...},
     "units": {"eq.peak1_gain_db": "dB", ...}}

A parameter whose value never changes is stored as a number.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import write_json_atomic
from .errors import AfxError

TRACE_FORMAT = "afx-trace"
TRACE_VERSION = 1


@dataclass
class ParameterTrace:
    """Per-frame parameter values in physical units.

    Attributes:
        chain: the chain spec (``afx-chain`` JSON object) the values belong to.
        sample_rate: rate the hop is counted at (Hz).
        hop: samples per frame (the control block size when rendering).
        params: ``{"<label>.<param>": array (n_frames,)}`` physical values; every parameter of
            every effect of the chain.
        n_samples: length of the audio the trace was made for, if known.
        units: ``{"<label>.<param>": unit}`` for display.
        description: free text (what the preset is for); kept through JSON.
    """

    chain: dict
    sample_rate: float
    hop: int
    params: dict[str, np.ndarray]
    n_samples: int | None = None
    units: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not (self.sample_rate > 0 and math.isfinite(self.sample_rate)):
            raise AfxError(f"trace: invalid sample rate {self.sample_rate}")
        if int(self.hop) < 1:
            raise AfxError(f"trace: hop must be ≥ 1 sample, got {self.hop}")
        self.hop = int(self.hop)
        lengths = set()
        arrays = {}
        for k, v in self.params.items():
            a = np.atleast_1d(np.asarray(v, dtype=np.float64))
            if a.ndim != 1 or not np.all(np.isfinite(a)):
                raise AfxError(f"trace: parameter {k} must be a finite number or 1-D list")
            arrays[k] = a
            if a.size > 1:
                lengths.add(a.size)
        if len(lengths) > 1:
            raise AfxError(f"trace: parameters have different frame counts {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        self.params = {k: (np.full(n, a[0]) if a.size == 1 else a) for k, a in arrays.items()}

    # ----- shape -----------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return next(iter(self.params.values())).size if self.params else 1

    @property
    def is_static(self) -> bool:
        return all(np.all(a == a[0]) for a in self.params.values())

    @property
    def hop_seconds(self) -> float:
        return self.hop / self.sample_rate

    def frame_values(self, k: int) -> dict[str, float]:
        """``{"<label>.<param>": value}`` at frame ``k``."""
        return {key: float(a[min(k, a.size - 1)]) for key, a in self.params.items()}

    def reduce(self, how: str = "median") -> dict[str, float]:
        """One value per parameter over all frames: ``median`` or ``mean``."""
        if how not in ("median", "mean"):
            raise AfxError(f"reduce must be 'median' or 'mean', not {how!r}")
        f = np.median if how == "median" else np.mean
        return {k: float(f(a)) for k, a in self.params.items()}

    def at(self, seconds: float) -> dict[str, float]:
        """Values in force at ``seconds`` from the start."""
        if not math.isfinite(seconds) or seconds < 0:
            raise AfxError(f"--at must be a time ≥ 0 s, got {seconds}")
        return self.frame_values(int(seconds * self.sample_rate // self.hop))

    # ----- construction ------------------------------------------------------------------------
    @classmethod
    def static(cls, chain_spec: dict, values: Mapping[str, float], sample_rate: float,
               hop: int = 512, units: Mapping[str, str] | None = None) -> "ParameterTrace":
        return cls(chain=chain_spec, sample_rate=sample_rate, hop=hop,
                   params={k: np.array([float(v)]) for k, v in values.items()}, units=dict(units or {}))

    # ----- DeepAFx smoothing -------------------------------------------------------------------
    def smoothed(self, specs: Mapping[str, Any], cutoff_hz: float = 4.0) -> "ParameterTrace":
        """Zero-phase lowpass across frames (2nd-order Butterworth, applied forward and backward,
        so 4th-order magnitude and no delay) in normalized space. ``specs`` maps keys to
        :class:`~afxcli.params.ParamSpec` (keys without a spec are smoothed linearly).
        ``cutoff_hz`` is the parameter-change bandwidth; at or above the frame rate's Nyquist
        it is a no-op."""
        from .filters import rbj_low_pass, sosfiltfilt_odd

        frame_rate = self.sample_rate / self.hop
        n = self.n_frames
        if n < 4 or cutoff_hz >= 0.5 * frame_rate:
            return self.copy()
        # scipy.signal.butter(2, ·, output="sos") and sosfiltfilt(padlen=pad) without scipy.signal:
        # the Butterworth is the cookbook lowpass with Q = 1/√2 (afxcli.filters; equal, tests)
        sos = rbj_low_pass(frame_rate, cutoff_hz)
        out = {k: a.copy() for k, a in self.params.items()}
        moving = [k for k, a in self.params.items() if not np.all(a == a[0])]
        if moving:
            u = np.stack([specs[k].normalize(self.params[k]) if specs.get(k) is not None else self.params[k]
                          for k in moving])
            v = sosfiltfilt_odd(sos, u, padlen=min(n - 1, 3 * 6))
            for k, row in zip(moving, v):
                spec = specs.get(k)
                out[k] = spec.denormalize(row) if spec is not None else row
        return ParameterTrace(self.chain, self.sample_rate, self.hop, out, self.n_samples, dict(self.units))

    def to_blocks(self, block_size: int, sample_rate: float | None = None,
                  specs: Mapping[str, Any] | None = None,
                  n_samples: int | None = None) -> "ParameterTrace":
        """Resample to control blocks of ``block_size`` samples at ``sample_rate`` (default: the
        trace's). Values are interpolated linearly (in normalized space where ``specs`` gives one)
        between frame centers; block ``k`` takes the value at its center. ``n_samples`` (default
        the trace's) sets how many blocks there are."""
        sr = float(sample_rate or self.sample_rate)
        if block_size < 1:
            raise AfxError(f"block size must be ≥ 1 sample, got {block_size}")
        total_s = (n_samples / sr) if n_samples is not None else (
            self.n_samples / self.sample_rate if self.n_samples is not None else self.n_frames * self.hop_seconds)
        n_blocks = max(1, math.ceil(total_s * sr / block_size - 1e-9))
        t_blocks = (np.arange(n_blocks) + 0.5) * block_size / sr
        t_frames = (np.arange(self.n_frames) + 0.5) * self.hop_seconds
        specs = specs or {}
        out = {}
        for k, a in self.params.items():
            if a.size == 1 or np.all(a == a[0]):
                out[k] = np.full(n_blocks, a[0])
                continue
            spec = specs.get(k)
            u = spec.normalize(a) if spec is not None else a
            v = np.interp(t_blocks, t_frames, u)
            out[k] = spec.denormalize(v) if spec is not None else v
        n_out = n_samples if n_samples is not None else (
            round(self.n_samples * sr / self.sample_rate) if self.n_samples is not None else None)
        return ParameterTrace(self.chain, sr, block_size, out, n_out, dict(self.units))

    def copy(self) -> "ParameterTrace":
        return ParameterTrace(self.chain, self.sample_rate, self.hop,
                              {k: a.copy() for k, a in self.params.items()}, self.n_samples, dict(self.units),
                              self.description)

    # ----- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        params: dict[str, Any] = {}
        for k, a in self.params.items():
            params[k] = float(a[0]) if np.all(a == a[0]) else [float(x) for x in a]
        return {"format": TRACE_FORMAT, "version": TRACE_VERSION, "sample_rate": self.sample_rate,
                "hop": self.hop, "n_frames": self.n_frames, "n_samples": self.n_samples,
                "chain": self.chain, "params": params, "units": self.units,
                **({"description": self.description} if self.description else {})}

    @classmethod
    def from_json(cls, data: Any, where: str = "trace") -> "ParameterTrace":
        if not isinstance(data, dict) or data.get("format") != TRACE_FORMAT:
            raise AfxError(f"{where}: not an afx parameter trace (missing \"format\": \"{TRACE_FORMAT}\")")
        if int(data.get("version", 0)) > TRACE_VERSION or int(data.get("version", 0)) < 1:
            raise AfxError(f"{where}: unsupported trace version {data.get('version')}")
        try:
            tr = cls(chain=data["chain"], sample_rate=float(data["sample_rate"]), hop=int(data["hop"]),
                     params=dict(data["params"]), n_samples=data.get("n_samples"),
                     units=dict(data.get("units") or {}), description=str(data.get("description") or ""))
        except KeyError as e:
            raise AfxError(f"{where}: trace lacks field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise AfxError(f"{where}: malformed trace ({e})") from None
        nf = data.get("n_frames")
        if nf is not None and int(nf) != tr.n_frames and not tr.is_static:
            raise AfxError(f"{where}: n_frames={nf} but the arrays have {tr.n_frames} frames")
        return tr

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temporary file in the same folder, then rename)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "ParameterTrace":
        return cls.from_json(read_json(path), where=str(path))


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if p.is_dir():
        raise AfxError(f"{p}: is a directory, not a JSON file")
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise AfxError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AfxError(f"{p}: not readable JSON ({e.__class__.__name__})") from None


def trace_specs(chain) -> dict:
    """``{"<label>.<param>": ParamSpec}`` for every parameter of a :class:`~afxcli.effects.chain.Chain`."""
    return {f"{lab}.{s.name}": s for lab, fx in zip(chain.labels, chain.effects) for s in fx.specs}


def units_of(chain) -> dict[str, str]:
    return {k: s.unit for k, s in trace_specs(chain).items()}

