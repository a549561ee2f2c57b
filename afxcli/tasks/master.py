"""Mastering (``afx master``): EQ → compressor → loudness gain → true-peak brickwall limiter.

Flow per file (DeepAFx §3.3 mastering chain idea; DeepAFx-ST for the parameters):

1. parameters: the style model's chain (EQ → compressor …) predicted from the input and the
   reference embeddings (or an adaptive preset's embedding), **or** the DeepAFx-ST §3.3 rule-based
   baseline (matched FIR EQ, compressor threshold lowered until the loudness matches), **or** a
   parameter preset (afx trace/preset JSON), **or** none (loudness only);
2. optional ``--refine N``: N Adam steps on the chain's normalized parameters through the torch
   twins against the reference's features (:mod:`afxcli.tasks.refine`);
3. one pedalboard render of the chain up to the limiter on the whole file at its own rate;
4. the loudness stage (:func:`afxcli.tasks.loudness.match_loudness`): gain to the target (the
   reference's integrated loudness, a loudness preset's target or ``--lufs``; within 0.01 LU where
   the limiter can get there, a note where not) and the true-peak limiter at the ceiling, its input
   gain searched with few whole-file renders; the ceiling is never exceeded;
5. output file, JSON report (levels of input/output/reference, the chain settings, loudness-stage
   and refinement figures), optional PNG plot and parameter trace.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import AfxError
from .reference import ReferenceEmbedding
from .loudness import (DEFAULT_CEILING_DBTP, DEFAULT_TARGET_LUFS, LoudnessPreset, check_target,
                       is_loudness_preset, load_loudness_preset, match_loudness)

METHODS = ("auto", "model", "rule-based")
#: Labels of the two stages afx appends to every mastering chain.
LOUDNESS_LABEL = "loudness"
LIMITER_LABEL = "ceiling"


#: Modules every mastering run needs, slowest first to import. No ``scipy.signal`` (~1–1.5 s) on
#: the default path: K-weighting, trace smoothing and the true-peak filter are
#: :mod:`afxcli.filters`, the analysis resampling is soxr. torch is not
#: among them: the shipped model runs in NumPy and the effects render through pedalboard; only
#: ``--refine``, the report's feature distances and a model without its NumPy export import it,
#: and always in the main thread (:func:`import_torch_here`): scipy's array-API checks look torch
#: up in ``sys.modules`` and fail on a half-imported one that another thread is still importing.
PREFETCH_MODULES = ("afxcli.effects.chain", "afxcli.render", "soxr")


#: Shortest input ``afx master`` takes, seconds: one BS.1770 gating block (its loudness is undefined below).
MIN_MASTER_SECONDS = 0.4


def import_torch_here() -> None:
    """Import torch (and the refinement module) in the calling thread, before any side thread
    may need it."""
    import importlib

    importlib.import_module("afxcli.tasks.refine")


def prefetch_imports(modules: tuple[str, ...] = PREFETCH_MODULES) -> threading.Thread:
    """Import ``modules`` in a background (daemon) thread so that their import overlaps the file
    reading and the numpy/scipy work the main thread does first (both release the GIL for their
    C parts). A module the main thread needs meanwhile waits on that module's import lock; a
    failed import is left for the main thread to raise where it uses it. Returns the thread."""
    import importlib

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the main thread imports it again and reports
                pass

    t = threading.Thread(target=run, name="afx-prefetch-imports", daemon=True)
    t.start()
    return t


def master_chain_spec(effects: list[dict], ceiling_dbtp: float) -> dict:
    """``effects`` (chain entries) + a fixed loudness gain + a true-peak limiter with a fixed ceiling."""
    return {"effects": [*effects,
                        {"type": "gain", "label": LOUDNESS_LABEL, "fixed": {"gain_db": 0.0}},
                        {"type": "limiter", "label": LIMITER_LABEL, "options": {"true_peak": True},
                         "fixed": {"ceiling_db": float(ceiling_dbtp)}}]}


@dataclass
class MasterResult:
    input: Path
    output: Path
    sample_rate: int
    channels: int
    seconds: float
    method: str
    report: dict
    notes: list[str] = field(default_factory=list)


class MasterContext(ReferenceEmbedding):
    """Shared by every file of a batch: reference (read, measured and embedded once), presets,
    model (loaded once), targets. Thread-safe."""

    def __init__(self, ref: Path | None = None, preset: str | None = None, lufs: float | None = None,
                 ceiling: float | None = None, method: str = "auto", model: str | Path | None = None,
                 refine_steps: int = 0, time_varying: bool | None = None,
                 read_ahead: Path | None = None) -> None:
        from ..audio import read_audio
        from .style import (DEFAULT_MODELS, StylePredictor, check_preset_model, is_style_preset,
                            load_style_preset, resolve_model_for_preset, resolve_preset_path)

        # ``read_ahead``: an input to decode in a side thread meanwhile (``master_file`` takes it)
        self._read_ahead = (Path(read_ahead), _read_in_thread(Path(read_ahead))) if read_ahead is not None else None

        if method not in METHODS:
            raise AfxError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
        if refine_steps < 0:
            raise AfxError(f"--refine must be ≥ 0 steps, got {refine_steps}")
        self.ref_path = Path(ref) if ref is not None else None
        self.ref_audio, self.ref_sr = read_audio(ref) if ref is not None else (None, None)
        self.loudness_preset: LoudnessPreset | None = None
        self.style_preset = None
        self.param_preset: Path | None = None
        if preset is not None:
            if is_loudness_preset(preset):
                self.loudness_preset = load_loudness_preset(preset)
            else:
                p = resolve_preset_path(preset, ("loudness", "music", "speech", ""))
                try:
                    data = json.loads(p.read_text())
                except (OSError, ValueError) as e:
                    raise AfxError(f"{p}: cannot read preset ({type(e).__name__})") from None
                if is_style_preset(data):
                    self.style_preset = load_style_preset(p)
                else:
                    from .export import load_preset

                    load_preset(p)
                    self.param_preset = p
        self.ceiling = float(ceiling) if ceiling is not None else (
            self.loudness_preset.ceiling_dbtp if self.loudness_preset else DEFAULT_CEILING_DBTP)
        self.lufs_override = float(lufs) if lufs is not None else None
        check_target(self.lufs_override if lufs is not None else -14.0, self.ceiling)
        self.ref_lufs = None
        if self.ref_audio is not None:
            from ..blas import one_blas_thread
            from .loudness import fast_lufs as measure

            with one_blas_thread():
                self.ref_lufs = measure(self.ref_audio, self.ref_sr)
            if not math.isfinite(self.ref_lufs):
                raise AfxError(f"{self.ref_path}: reference is silent or shorter than 0.4 s")
        has_style = self.ref_audio is not None or self.style_preset is not None
        if method == "auto":
            if self.param_preset is not None or not has_style:
                method = "none"
            elif model is not None or DEFAULT_MODELS["music"].exists() or self.style_preset is not None:
                method = "model"
            else:
                method = "rule-based"
        elif self.param_preset is not None:
            raise AfxError("a parameter preset is rendered as it is; leave out --method")
        elif method == "rule-based" and self.ref_audio is None:
            raise AfxError("--method rule-based needs --ref REF")
        elif method == "model" and not has_style:
            raise AfxError("--method model needs --ref REF or an adaptive style preset")
        if self.param_preset is not None:
            method = "preset"
        self.method = method
        if time_varying is None:  # measured better on every master_eval distance: the model's default
            time_varying = method == "model" and not refine_steps
        self.time_varying = bool(time_varying)
        if self.time_varying and method != "model":
            raise AfxError("--time-varying needs the model method (frame-wise predictions)")
        if self.time_varying and refine_steps:
            raise AfxError("--refine works on a static chain; leave out --time-varying")
        self.refine_steps = int(refine_steps)
        if self.refine_steps and self.ref_audio is None:
            raise AfxError("--refine needs --ref REF (it matches the reference's features)")
        if self.refine_steps:
            import_torch_here()
        self.predictor = (StylePredictor.load(resolve_model_for_preset(model, "music", self.style_preset))
                          if method == "model" else None)
        check_preset_model(self.style_preset, self.predictor)
        self._lock = threading.Lock()
        self.reference_thread = self.prefetch_reference()  # overlaps the first input's decoding and analysis

    @property
    def target_lufs(self) -> float:
        if self.lufs_override is not None:
            return self.lufs_override
        if self.loudness_preset is not None:
            return self.loudness_preset.target_lufs
        if self.ref_lufs is not None:
            return float(np.clip(self.ref_lufs, -70.0, 0.0))
        return DEFAULT_TARGET_LUFS

    @property
    def target_source(self) -> str:
        if self.lufs_override is not None:
            return "--lufs"
        if self.loudness_preset is not None:
            return f"preset {self.loudness_preset.name}"
        if self.ref_lufs is not None:
            return "reference"
        return "default (streaming)"

    def reference_levels(self) -> dict | None:
        """The reference's file, LUFS, true peak and crest (measured once per batch)."""
        from .report import levels

        if self.ref_audio is None:
            return None
        return dict(self._once("levels", lambda: {"file": str(self.ref_path),
                                                  **levels(self.ref_audio, self.ref_sr, lufs_value=self.ref_lufs)}))

    def take_read_ahead(self, path: Path):
        """``(audio, sample_rate)`` of ``path`` if it was read ahead (once), else None; a read
        error is raised here, as ``read_audio`` would."""
        with self._lock:
            item, self._read_ahead = self._read_ahead, None
        if item is None or item[0] != Path(path):
            return None
        done, box = item[1]
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["audio"]


def _read_in_thread(path: Path):
    """Start decoding ``path`` in a daemon thread (libsndfile releases the GIL): ``(event, box)``;
    after ``event`` the box holds ``audio`` (what ``read_audio`` returns) or ``error``."""
    from ..audio import read_audio

    done, box = threading.Event(), {}

    def run() -> None:
        try:
            box["audio"] = read_audio(path)
        except Exception as e:  # noqa: BLE001 - re-raised in the thread that takes it
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="afx-read-ahead", daemon=True).start()
    return done, box


#: Time-varying mastering (``--time-varying``): frame hop of the predictions (s; the model's
#: :meth:`~afxcli.tasks.style.StylePredictor.prediction_hop_samples` nearest to it, a whole number
#: of front-end frames, is used: :func:`prediction_hop`) and the cutoff of
#: the DeepAFx zero-phase lowpass that smooths them into automation (Hz; 0.2 Hz keeps changes
#: to the scale of song sections, ~5 s, so the chain never "pumps" with the beat).
AUTOMATION_HOP_SECONDS = 1.0
AUTOMATION_CUTOFF_HZ = 0.2
#: Effect types whose frame-wise predictions are held at their median in the automation: the
#: model's plain output gain, frame by frame, rides the level with the section's loudness (a slow
#: AGC that flattens a song's macro-dynamics; the loudness stage sets the level anyway). Measured
#: on ``benchmarks/master_eval.py --n 10 --max-seconds 60`` (2026-12-04): held, the crest-factor
#: error went 2.07 -> 1.80 dB, MSD 5.30 -> 5.22 dB and the centroid error 249 -> 239 Hz (20 pairs:
#: 2.30 -> 2.27 dB, 5.269 -> 5.259 dB, 241 -> 232 Hz).
STATIC_EFFECT_TYPES = ("gain",)
#: Control block (samples) the automation is rendered with: at a 0.2 Hz smoothing cutoff a setting
#: moves by a negligible step per 2048 samples (46 ms at 44.1 kHz), and pedalboard's per-call
#: overhead made 256-sample blocks cost 2.5× the whole static master on a 3-minute song. The trace
#: is written block by block at this hop: ``afx render --block-size 2048`` reproduces the master.
AUTOMATION_BLOCK = 2048


def model_automation(pred, audio: np.ndarray, sr: int, ref_embedding: np.ndarray,
                     model_effects: list[dict] | None = None, q: np.ndarray | None = None,
                     lead: list[dict] | None = None):
    """Frame-wise predictions of ``pred`` for ``audio`` against one reference embedding, smoothed
    into a :class:`~afxcli.trace.ParameterTrace` of the chain ``model_effects`` (default: the
    model's) at ``sr`` (DeepAFx §2.3: frame-wise parameters, lowpass-filtered across frames).
    ``q``: the normalized frame predictions ``(frames, n_free)`` when already made
    (:func:`frame_predictions`). ``lead``: static values of effects that ``model_effects`` starts
    with before the model's own (the matched EQ stage), held constant in the trace."""
    from ..effects.chain import Chain, normalize_spec
    from ..trace import ParameterTrace, trace_specs, units_of

    lead = list(lead or [])
    if q is None:
        q = frame_predictions(pred, audio, sr, ref_embedding)
    if model_effects is None:
        model_effects = normalize_spec(pred.chain_spec)["effects"]
    chain = Chain({"effects": model_effects}, sr)
    q = np.atleast_2d(q)
    params = {f"{lab}.{n}": np.full(q.shape[0], float(v[n]))
              for lab, fx, v in zip(chain.labels, chain.effects, lead) for n in fx.param_names}
    params.update(pred.values_frames(q, Chain({"effects": model_effects[len(lead):]}, sr)))
    for lab, fx in zip(chain.labels, model_effects):   # plain gains: held (STATIC_EFFECT_TYPES)
        if fx.get("type") in STATIC_EFFECT_TYPES:
            for key in [k for k in params if k.startswith(f"{lab}.")]:
                params[key] = np.full(params[key].shape, float(np.median(params[key])))
    # frame k of the predictions covers [k·hop, (k + 1)·hop) at the model rate (exact: a whole
    # number of model samples); to_blocks places the frames in time at the file's rate
    hop_model, model_sr = prediction_hop(pred)
    tr = ParameterTrace(chain.spec, model_sr, hop_model, params, None, units_of(chain))
    specs = trace_specs(chain)
    blocks = tr.smoothed(specs, AUTOMATION_CUTOFF_HZ).to_blocks(AUTOMATION_BLOCK, sr, specs, int(audio.shape[1]))
    return blocks, chain


def prediction_hop(pred) -> tuple[int, float]:
    """``(hop samples, model sample rate)`` of the frame-wise predictions: the whole number of the
    model's front-end frames nearest :data:`AUTOMATION_HOP_SECONDS`."""
    return pred.prediction_hop_samples(AUTOMATION_HOP_SECONDS), float(pred.sample_rate)


def frame_predictions(pred, audio: np.ndarray, sr: int, ref_embedding: np.ndarray | Callable[[], np.ndarray],
                      match_values: dict | None = None) -> np.ndarray:
    """Normalized predictions ``(frames, n_free)`` of ``pred`` every :func:`prediction_hop` for
    ``audio`` against ``ref_embedding`` (no effect or torch import on the NumPy backend), or a
    zero-argument callable that returns it, called once the input's frames are embedded;
    ``match_values``: the matched EQ stage's gains at the model rate, for a model that has one."""
    hop_model, model_sr = prediction_hop(pred)
    e, _ = pred.embed_frames(audio, sr, hop_model / model_sr, match_values=match_values)
    return pred.predict_normalized(e, ref_embedding() if callable(ref_embedding) else ref_embedding)


def _chain_and_values(audio: np.ndarray, sr: int, ctx: MasterContext, notes: list[str]):
    """(chain, per-effect values, pre-processing FIR or None, description, chain input, automation)
    for this file; the chain input is ``audio`` or, for the rule-based method, ``audio`` through its
    FIR (filtered once: the threshold search and the render share it). ``automation`` is a
    :class:`~afxcli.trace.ParameterTrace` of the effects before the loudness stage
    (``--time-varying``; ``values`` then holds their median settings), else None."""
    fir, described, x, automation = None, {}, audio, None
    if ctx.method == "model":
        pred = ctx.predictor
        # the analysis first (NumPy backend): the effects' import (prefetch_imports) goes on meanwhile
        ref_spectra = ctx.reference_spectra() if pred.match_eq else None
        if ctx.time_varying:
            lead, g_model = [], None
            if pred.match_eq:   # the matched EQ stage: at the model rate (analysis) and at the file's
                g_model, g_file = pred.match_stage(audio, sr, ref_spectra)
                lead = [g_file]
            q = frame_predictions(pred, audio, sr, ctx.reference_embedding, g_model)
        else:
            static = pred.predict(audio, sr, ref_embedding=ctx.reference_embedding, ref_spectra=ref_spectra)
        from ..effects.chain import Chain, normalize_spec

        model_effects = normalize_spec(pred.render_spec)["effects"]
        chain = Chain(master_chain_spec(model_effects, ctx.ceiling), sr)
        tail = [dict(v) for v in chain.base_values()[len(model_effects):]]
        if ctx.time_varying:
            automation, sub = model_automation(pred, audio, sr, ctx.reference_embedding(), model_effects, q, lead)
            values = sub.values_from_flat(automation.reduce("median")) + tail
        else:
            values = static + tail
        described = {"model_id": pred.model_id, "model": str(pred.path) if pred.path else None,
                     "time_varying": bool(ctx.time_varying)}
    elif ctx.method == "rule-based":
        from ..effects.chain import Chain
        from .rulebased import design_matched_eq, search_threshold

        fir = design_matched_eq(audio, sr, ctx.ref_audio, ctx.ref_sr)
        x = fir.apply(audio)
        search = search_threshold(x, sr, float(ctx.ref_lufs))
        chain = Chain(master_chain_spec([{"type": "compressor"}], ctx.ceiling), sr)
        values = [dict(search.values)] + [dict(v) for v in chain.base_values()[1:]]
        described = {"fir_eq": {"taps": int(fir.taps.size), "band_gains_db": fir.band_gains_db()},
                     "compressor_search": {"evaluations": search.evaluations, "lufs": round(search.lufs, 3),
                                           "toward_lufs": round(float(ctx.ref_lufs), 3)}}
    elif ctx.method == "preset":
        from ..effects.chain import Chain
        from .export import load_preset
        from .render import fit_trace

        spec, trace = load_preset(ctx.param_preset)
        effects = [e for e in spec["effects"]]
        chain = Chain(master_chain_spec(effects, ctx.ceiling), sr)
        trace, clipped = fit_trace(trace, Chain(spec, sr))
        if clipped:
            notes.append(f"preset values clipped to this rate's ranges: {', '.join(clipped)}")
        flat = trace.frame_values(0) if trace.is_static else trace.reduce("median")
        if not trace.is_static:
            notes.append("time-varying preset reduced to its median setting")
        values = Chain(spec, sr).values_from_flat(flat) + [dict(v) for v in chain.base_values()[len(effects):]]
        described = {"preset": str(ctx.param_preset)}
    else:
        from ..effects.chain import Chain

        # loudness gain + limiter: the gain is part of the chain so that the trace reproduces the master
        chain = Chain(master_chain_spec([], ctx.ceiling), sr)
        values = chain.base_values()
    return chain, values, fir, described, x, automation


def _render_until_limiter(chain, values, audio: np.ndarray, automation=None) -> np.ndarray:
    """Render every effect before the final limiter (and the loudness gain) with pedalboard
    (``automation``: a trace of exactly those effects, rendered with per-block updates)."""
    from ..render import render_chain, render_series

    if automation is not None:
        from ..effects.chain import Chain

        return render_chain(Chain(automation.chain, chain.sample_rate), audio, automation,
                            block_size=automation.hop)
    keep = [i for i, lab in enumerate(chain.labels) if lab not in (LOUDNESS_LABEL, LIMITER_LABEL)]
    return render_series([chain.effects[i] for i in keep], [values[i] for i in keep], audio)


def master_file(input_path: Path, output_path: Path, ctx: MasterContext, report_path: Path | None = None,
                plot_path: Path | None = None, trace_path: Path | None = None) -> MasterResult:
    """Master one file (whole length, own rate); write the output (and report/plot/trace) atomically.

    The report's measurements of the input and the reference (true peak, crest, features) do not
    depend on the render: they run in a side thread meanwhile (their FFTs and the pedalboard
    render release the GIL), and the report waits for them. The ones only the JSON report shows
    (the input's and the reference's true peak and levels, the feature distances) are measured only
    when ``report_path`` is given; otherwise ``MasterResult.report`` has ``None`` for the input's
    true peak and no ``reference`` levels or ``feature_distance_db``."""
    from concurrent.futures import ThreadPoolExecutor

    from ..blas import one_blas_thread

    side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="afx-report")
    try:
        with one_blas_thread():  # small products only (afxcli.blas)
            return _master_file(input_path, output_path, ctx, report_path, plot_path, trace_path, side)
    finally:
        side.shutdown(wait=True, cancel_futures=True)


def _input_and_reference_features(audio: np.ndarray, sr: int, ctx: MasterContext, max_hz: float):
    from .refine import recording_features

    return recording_features(audio, sr, max_hz), ctx.reference_features(max_hz)


def _master_file(input_path: Path, output_path: Path, ctx: MasterContext, report_path: Path | None,
                 plot_path: Path | None, trace_path: Path | None, side) -> MasterResult:
    from ..audio import read_audio, write_audio
    from .loudness import fast_lufs as measure_lufs
    from ..trace import ParameterTrace, units_of
    from .report import _finite, crest_db, levels, plot_master, smoothed_spectrum_db, write_report

    t0 = time.perf_counter()
    audio, sr = ctx.take_read_ahead(input_path) or read_audio(input_path)

    too_short = f"too short to master (needs at least {MIN_MASTER_SECONDS:g} s)"

    def checked_lufs(v: float) -> float:
        if math.isnan(v):
            raise AfxError(too_short)
        if not math.isfinite(v):
            raise AfxError("input is silent")
        return v

    if audio.shape[-1] < MIN_MASTER_SECONDS * sr:   # before any analysis: no loudness to measure
        raise AfxError(too_short)
    # the model's analysis does not need the input's loudness: measure it in the side thread meanwhile
    in_lufs_f = side.submit(measure_lufs, audio, sr)
    if ctx.method == "model":
        notes: list[str] = []
        chain, values, fir, described, x, automation = _chain_and_values(audio, sr, ctx, notes)
    in_lufs = checked_lufs(in_lufs_f.result())
    full_report = report_path is not None
    in_levels = side.submit(levels, audio, sr, lufs_value=in_lufs,
                            true_peak=None if full_report else float("nan"))  # nan: not measured
    ref_levels = side.submit(ctx.reference_levels) if full_report else None
    feature_hz = 0.95 * min(sr, ctx.ref_sr) / 2 if ctx.ref_audio is not None and full_report else None
    if feature_hz is not None:
        import_torch_here()  # the feature distances (torch) run in the side thread
    features = (side.submit(_input_and_reference_features, audio, sr, ctx, feature_hz)
                if feature_hz is not None else None)
    if ctx.method != "model":
        notes = []
        chain, values, fir, described, x, automation = _chain_and_values(audio, sr, ctx, notes)
    t_params = time.perf_counter()
    refine_info = None
    if ctx.refine_steps:
        from .refine import refine_toward_reference

        res = refine_toward_reference(chain, values, x, sr, ctx.ref_sr, ctx.reference_features, ctx.refine_steps)
        values = [dict(v) for v in res.values_after]
        refine_info = res.to_dict()
    t_refine = time.perf_counter()
    pre = _render_until_limiter(chain, values, x, automation)
    lim_index = chain.labels.index(LIMITER_LABEL)
    loud = match_loudness(pre, sr, ctx.target_lufs, ctx.ceiling,
                          release_ms=float(values[lim_index]["release_ms"]),
                          input_lufs=in_lufs if pre is audio else None)  # nothing before the limiter
    notes.extend(loud.notes)
    y = loud.audio
    if not np.all(np.isfinite(y)):
        raise AfxError("render produced non-finite samples")
    if features is not None:
        from .refine import recording_features

        out_features = side.submit(recording_features, y, sr, feature_hz)  # while the file is written
    out_crest = side.submit(crest_db, y)  # while the file is written
    write_audio(output_path, y, sr)
    t_render = time.perf_counter()

    from ..effects.chain import Chain

    # settings actually used: loudness gain and the limiter's (possibly lowered) ceiling
    used = [dict(v) for v in values]
    if LOUDNESS_LABEL in chain.labels:
        used[chain.labels.index(LOUDNESS_LABEL)]["gain_db"] = float(np.clip(loud.gain_db, -24.0, 24.0))
        if abs(loud.gain_db) > 24.0:
            notes.append(f"loudness gain {loud.gain_db:.1f} dB is outside the gain effect's ±24 dB: "
                         "the trace does not reproduce it exactly")
    used[lim_index]["ceiling_db"] = float(np.clip(loud.limiter_ceiling_db, -24.0, 0.0))
    flat = Chain.flatten(chain.labels, used)
    units = units_of(chain)
    report = {
        "input": {"file": str(input_path), **in_levels.result()},
        "output": {"file": str(output_path), "lufs": round(loud.output_lufs, 4),
                   "true_peak_dbtp": round(loud.true_peak_dbtp, 4),
                   "crest_db": _finite(out_crest.result())},
        "reference": ref_levels.result() if ref_levels is not None else None,
        "sample_rate": sr, "channels": int(audio.shape[0]), "seconds": round(audio.shape[1] / sr, 4),
        "method": ctx.method,
        "target_lufs": ctx.target_lufs, "target_source": ctx.target_source, "ceiling_dbtp": ctx.ceiling,
        "loudness": loud.to_dict(),
        "chain": {"spec": chain.spec, "values": flat, "units": units, **described},
        "refine": refine_info,
        "notes": notes,
        "timing_s": {"parameters": round(t_params - t0, 3), "refine": round(t_refine - t_params, 3),
                     "render_and_loudness": round(t_render - t_refine, 3)},
    }
    if features is not None:
        from .refine import distance

        in_f, ref_f = features.result()
        report["feature_distance_db"] = {"input": round(float(distance(in_f, ref_f)), 4),
                                         "output": round(float(distance(out_features.result(), ref_f)), 4)}
    hop_model, model_sr = prediction_hop(ctx.predictor) if automation is not None else (None, None)
    if automation is not None:  # the report gives each automated parameter's range
        report["chain"]["automation"] = {
            "hop_seconds": hop_model / model_sr, "hop_model_samples": hop_model, "model_sample_rate": model_sr,
            "smoothing_cutoff_hz": AUTOMATION_CUTOFF_HZ,
            "ranges": {k: [round(float(a.min()), 4), round(float(a.max()), 4)]
                       for k, a in automation.params.items() if not np.all(a == a[0])}}
    if trace_path is not None:
        if automation is not None:
            params = {k: (automation.params[k] if k in automation.params else np.full(automation.n_frames, v))
                      for k, v in flat.items()}
            tr = ParameterTrace(chain.spec, sr, automation.hop, params, units=units)
        else:
            tr = ParameterTrace.static(chain.spec, flat, sr, units=units)
        tr.n_samples = int(audio.shape[1])
        tr.description = (f"afx master ({ctx.method}) of {Path(input_path).name}"
                          + (" after a matched FIR EQ that is not part of this chain" if fir is not None else "")
                          + (f"; model predictions every {hop_model} samples at "
                             f"{model_sr:g} Hz, smoothed and resampled to "
                             f"automation in blocks of {automation.hop} samples: render with --block-size "
                             f"{automation.hop} to reproduce it exactly" if automation is not None else ""))
        tr.save(trace_path)
        report["trace"] = str(trace_path)
    if plot_path is not None:
        spectra = {"input": (*smoothed_spectrum_db(audio, sr), in_lufs)}
        if ctx.ref_audio is not None:
            spectra["reference"] = (*smoothed_spectrum_db(ctx.ref_audio, ctx.ref_sr), ctx.ref_lufs)
        spectra["output"] = (*smoothed_spectrum_db(y, sr), loud.output_lufs)
        settings = {"method": ctx.method, "target": f"{ctx.target_lufs:.1f} LUFS ({ctx.target_source})",
                    "output": f"{loud.output_lufs:.2f} LUFS, {loud.true_peak_dbtp:.2f} dBTP"}
        settings.update({k: f"{v:.3g} {units.get(k, '')}".rstrip() for k, v in flat.items()
                         if not k.startswith("eq.") or k.endswith("gain_db")})
        if fir is not None:
            settings["fir eq"] = " ".join(f"{k}:{v:+.0f}" for k, v in list(fir.band_gains_db().items())[::3])
        auto = None
        if automation is not None:
            t = (np.arange(automation.n_frames) + 0.5) * automation.hop_seconds
            auto = {f"{k} ({units.get(k, '')})": (t, a) for k, a in automation.params.items()
                    if not np.all(a == a[0]) and (k.endswith("gain_db") or k.endswith("threshold_db"))}
        plot_master(plot_path, spectra, f"afx master: {Path(input_path).name}", auto or None, settings)
        report["plot"] = str(plot_path)
    if report_path is not None:
        write_report(report_path, report)
    return MasterResult(Path(input_path), Path(output_path), sr, int(y.shape[0]), y.shape[1] / sr,
                        ctx.method, report, notes)
