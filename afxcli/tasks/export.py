"""``export-preset``: turn an afx parameter trace (or chain spec) into a static preset for other tools.

Flow: preset/trace/chain JSON -> one static setting (``--at SECONDS`` or ``--reduce median|mean``)
-> validated per-effect values at the target sample rate -> text in the chosen format:

``json``
    afx's own preset: a *static* ``afx-trace`` (one frame, see :mod:`afxcli.trace`), so the same
    file serves ``render --trace`` and ``export-preset``. Exporting it again gives byte-identical
    text (floats are written with ``repr`` precision and re-validated unchanged).
``ffmpeg``
    An ``-af`` filter string (``ffmpeg -i in.wav -af "$(cat preset.txt)" out.wav``). It starts with
    ``aresample=<sr>`` (then ``aformat`` to float samples, so integer input gets headroom) because EQ sections are written as ``biquad`` coefficients and dynamics time
    constants are converted per sample, both **specific to that rate** (``--sample-rate`` sets it;
    default the trace's). Mapping and accuracy (ffmpeg 5.1, measured against afx's own render):

    - ``peq``/``geq`` -> one ``biquad=b0:b1:b2:a0=1:a1:a2`` per section (sections from the
      effect's ``biquad_sections``, JUCE ``IIR::Coefficients`` = RBJ cookbook), with the float32
      coefficients pedalboard computes for them (:func:`eq_render_coefficients`), i.e. the
      filter afx's render applies. ``biquad`` was chosen over ``equalizer``/``lowshelf``/
      ``highshelf`` because those redesign the filter in double precision from (f, Q, gain): the
      float32 coefficient rounding of pedalboard alone moves low, narrow sections by up to about
      -50 dBFS, more than the -60 dBFS budget. ffmpeg then filters in double precision (it matches
      a float64 recursion with these coefficients to about -120 dBFS); what remains is pedalboard's
      own float32 recursion round-off: -63 to -97 dBFS max abs error on full-scale test music for
      random settings with sections at >= 50 Hz (24 draws), but up to about -51 dBFS when a 20 Hz,
      Q ~ 10 boost is in the chain (there ffmpeg is closer to the exact filter than afx's float32
      render is; see tests/test_export.py).
    - ``gain`` -> ``volume=<dB>dB`` (exact).
    - ``compressor`` (JUCE ``dsp::Compressor``) -> ``acompressor`` with ``detection=peak``,
      ``knee=1`` (hard), threshold as a linear level, makeup as a following ``volume``, and attack /
      release converted so that ffmpeg's per-sample coefficient ``4000 / (t * sr)`` equals JUCE's
      ``1 - exp(-2*pi*1000 / (sr * t))`` (libavfilter ``af_sidechaincompress.c`` uses the same peak
      detector and gain law ``(env / thr)^(1/ratio - 1)``): -106 dBFS (mono) and -132 dBFS
      (stereo) max abs error measured for gain + compressor + clip + distortion. JUCE compresses
      each channel on its own, so by default the filter runs per channel (``pan`` to stereo, then
      ``channelsplit``/``join``; mono input comes out as two identical channels). ``channels=1``
      gives a plain ``link=maximum`` string that keeps the channel count: exact for mono, but a
      linked approximation for stereo (-4.4 dBFS max abs error on the stereo example music).
    - ``compressor_soft`` -> ``acompressor`` ``link=maximum`` (afx's detector is linked on the
      channel maximum), ``knee = 10^(knee_db/20)`` (ffmpeg's knee spans ``thr/sqrt(k)..thr*sqrt(k)``,
      at most 8 = 18 dB), time constants converted like above. **Approximation**: afx smooths the
      gain reduction in dB, ffmpeg the level.
    - ``gate`` (JUCE ``dsp::NoiseGate``) -> ``agate`` (``detection=rms``, ``range=0``, hard knee, same
      time conversion). **Approximation**: JUCE cascades an RMS pre-filter (50 ms release) with the
      attack/release filter; ffmpeg has one detector (-20 to -40 dBFS max abs error measured).
    - ``limiter`` (pedalboard ``BrickwallLimiter``) -> ``alimiter`` with ``limit`` = ceiling,
      ``attack`` = lookahead, ``release``, ``level=disabled`` (no auto makeup), ``latency=1``
      (time-aligned). **Approximation**: different gain-smoothing law and no true-peak detection
      (about -11 dBFS max abs error measured on loud test music; both hold the ceiling).
    - ``hard_clip`` -> ``volume=-T dB, asoftclip=type=hard, volume=+T dB`` (exact; ``asoftclip``'s
      own ``threshold`` cannot exceed 1).
    - ``distortion`` -> ``volume=<drive>dB, asoftclip=type=tanh`` (exact to ~1e-7).
    - anything else (``clipper``, polynomial clippers, multiband, ``vst3``) -> :class:`AfxError`
      naming the effect.
``easyeffects``
    An EasyEffects (7.x, LSP plugins) output preset: ``{"output": {"blocklist": [],
    "plugins_order": [...], "equalizer#0": {...}, ...}}``. Mapping (all approximations except
    the EQ band frequencies/gains/Q, which are carried exactly):

    - ``peq``/``geq`` -> ``equalizer#N`` (IIR), bands ``Lo-shelf``/``Bell``/``Hi-shelf`` in mode
      ``"APO (DR)"`` (LSP's Equalizer-APO filters, RBJ-cookbook digital designs like JUCE's;
      an EasyEffects/LSP too old to know that mode uses its default band mode), slope ``x1``,
      identical left/right.
    - ``compressor``/``compressor_soft`` -> ``compressor#N`` (Downward, Peak sidechain; JUCE's
      unlinked compressor uses ``stereo-split`` Left/Right; knee ``-knee_db/2`` because LSP's knee
      spans ``thr+knee .. thr-knee``; attack/release in ms passed through although LSP's time
      constants are defined differently).
    - ``gate`` -> ``expander#N`` in Downward mode with the same threshold and ratio (JUCE's
      NoiseGate is a downward expander with a ratio; LSP's gate has no ratio), RMS sidechain.
    - ``limiter`` -> ``limiter#N`` (threshold = ceiling, lookahead, release; no automatic level,
      no oversampling, so no true-peak detection).
    - ``gain`` -> folded into the ``input-gain`` of the next plugin (or ``output-gain`` of the
      previous one); a chain of gains only becomes an equalizer with one ``Off`` band.
    - anything else -> :class:`AfxError` naming the effect.
``pedalboard``
    A runnable Python script (``python preset.py IN OUT``) that builds the chain with pedalboard's
    built-ins, with exactly the values afx passes to each effect's twin (:data:`PEDALBOARD_CODE`,
    checked at export against the effect's own ``to_pedalboard``; reading attributes back is not
    enough: pedalboard stores filter gains linearly, so a read-back ``gain_db`` can drift by an
    ulp when set again). Effects
    without a pedalboard built-in are rendered in the script by afx itself (``afxcli`` must be
    importable there). A ``vst3`` effect is loaded with ``pedalboard.load_plugin`` and restored
    from its saved state with afx's values (the effect's ``vstpreset_bytes``, embedded in the
    script and assigned to ``plugin.preset_data``: setting attributes would go through pedalboard's
    own value conversion, while afx sets raw values through the plugin's text parser); mono-only
    plugins get one instance per channel, as in afx. With an output path the same state is also
    written as ``<out stem>.vstpreset`` (``<out stem>.<label>.vstpreset`` when there are several)
    next to the script, for DAWs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..effects.chain import CHAIN_FORMAT, Chain, normalize_spec
from ..errors import AfxError
from ..atomic import write_bytes_atomic, write_text_atomic
from ..trace import TRACE_FORMAT, ParameterTrace, read_json, trace_specs, units_of

#: Output formats of :func:`export_preset`.
FORMATS = ("json", "ffmpeg", "easyeffects", "pedalboard")
#: Sample rate given to a bare chain spec (it has none of its own) unless ``sample_rate`` is set.
DEFAULT_CHAIN_SAMPLE_RATE = 48000.0


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _prefixed(path: Path, err: AfxError) -> AfxError:
    msg = str(err)
    return AfxError(msg if msg.startswith(str(path)) else f"{path}: {msg}")


def load_preset(path: str | Path, sample_rate: float | None = None) -> tuple[dict, ParameterTrace]:
    """Read an afx preset, parameter trace or chain spec.

    Accepts ``afx-trace`` JSON (a parameter trace; an afx JSON preset is a static one) and
    ``afx-chain`` JSON (values = fixed values, else defaults; sample rate ``sample_rate`` or
    :data:`DEFAULT_CHAIN_SAMPLE_RATE`). Every value is checked against its parameter range.

    Returns ``(chain_spec, trace)``: the validated chain spec (canonical form) and the trace.
    Raises a one-line :class:`AfxError` naming the file for anything wrong.
    """
    p = Path(path)
    data = read_json(p)  # one-line errors naming the file
    try:
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt == TRACE_FORMAT:
            trace = ParameterTrace.from_json(data, where=str(p))
            spec = normalize_spec(trace.chain)
            chain = Chain(spec, trace.sample_rate)
            specs = trace_specs(chain)
            unknown = [k for k in trace.params if k not in specs]
            if unknown:
                raise AfxError(f"parameter(s) {', '.join(unknown)} not in the chain "
                               f"(effects: {', '.join(chain.labels)})")
            for k, a in trace.params.items():
                lab = k.split(".", 1)[0]
                specs[k].validate(float(np.min(a)), where=lab)
                specs[k].validate(float(np.max(a)), where=lab)
            return spec, trace
        if isinstance(data, list) or (isinstance(data, dict) and fmt in (None, CHAIN_FORMAT)
                                      and "effects" in data):
            spec = normalize_spec(data)
            sr = _check_rate(sample_rate if sample_rate is not None else DEFAULT_CHAIN_SAMPLE_RATE)
            chain = Chain(spec, sr)
            trace = ParameterTrace.static(spec, Chain.flatten(chain.labels, chain.base_values()), sr,
                                          units=units_of(chain))
            return spec, trace
        raise AfxError(f"not an afx preset, parameter trace or chain spec "
                       f"(format {fmt!r}; expected {TRACE_FORMAT!r} or {CHAIN_FORMAT!r})")
    except AfxError as e:
        raise _prefixed(p, e) from None


def _check_rate(sample_rate: Any) -> float:
    try:
        sr = float(sample_rate)
    except (TypeError, ValueError):
        raise AfxError(f"sample rate must be a number of Hz, not {sample_rate!r}") from None
    if not (math.isfinite(sr) and sr > 0):
        raise AfxError(f"sample rate must be a positive number of Hz, not {sample_rate!r}")
    return sr


def select_values(trace: ParameterTrace, at: float | None = None,
                  reduce: str | None = None) -> dict[str, float]:
    """One static setting ``{"<label>.<param>": value}`` from a trace: the values in force at
    ``at`` seconds, or the ``reduce`` (``median``/``mean``) over frames; with neither, the only
    frame of a static trace or the median of a time-varying one. Both given -> :class:`AfxError`."""
    if at is not None and reduce is not None:
        raise AfxError("give either --at or --reduce, not both")
    if at is not None:
        try:
            seconds = float(at)
        except (TypeError, ValueError):
            raise AfxError(f"--at must be a time in seconds, not {at!r}") from None
        return trace.at(seconds)
    if reduce is not None:
        return trace.reduce(reduce)
    return trace.frame_values(0) if trace.is_static else trace.reduce("median")


@dataclass
class StaticSetting:
    """A chain and one static setting of it at ``sample_rate``.

    Attributes:
        source: the file it came from.
        chain_json: the ``chain`` object to write back (the trace's, verbatim).
        trace: the trace it was selected from.
        chain: :class:`~afxcli.effects.chain.Chain` built at ``sample_rate``.
        values: per effect, complete validated physical values.
        clipped: keys whose values were clipped into the ranges at ``sample_rate`` (only when it
            differs from the trace's rate, e.g. a 16 kHz shelf exported for 22.05 kHz; ``afx
            render`` clips the same way).
    """

    source: Path
    chain_json: dict
    trace: ParameterTrace
    chain: Chain
    values: list[dict[str, float]]
    clipped: list[str] = field(default_factory=list)

    @property
    def sample_rate(self) -> float:
        return self.chain.sample_rate

    def flat(self) -> dict[str, float]:
        return Chain.flatten(self.chain.labels, self.values)

    def items(self):
        """``(label, effect, values, spec entry)`` per effect in chain order."""
        return zip(self.chain.labels, self.chain.effects, self.values, self.chain.spec["effects"])


def resolve_setting(src_path: str | Path, at: float | None = None, reduce: str | None = None,
                    sample_rate: float | None = None) -> StaticSetting:
    """Load ``src_path`` (see :func:`load_preset`), select one setting (:func:`select_values`) and
    validate it at ``sample_rate`` (default: the trace's; values are clipped into the ranges at
    another rate, see :attr:`StaticSetting.clipped`)."""
    p = Path(src_path)
    if at is not None and reduce is not None:  # before touching the file
        raise AfxError("give either --at or --reduce, not both")
    spec, trace = load_preset(p, sample_rate)
    try:
        selected = select_values(trace, at, reduce)
        sr = _check_rate(sample_rate) if sample_rate is not None else trace.sample_rate
        chain = Chain(spec, sr)
        flat = {**Chain.flatten(chain.labels, chain.base_values()), **selected}
        clipped = []
        if sr != trace.sample_rate:
            specs = trace_specs(chain)
            for k, v in flat.items():
                c = float(specs[k].clip(v)) if k in specs else v
                if c != v:
                    clipped.append(k)
                    flat[k] = c
        values = chain.values_from_flat(flat)
    except AfxError as e:
        raise _prefixed(p, e) from None
    return StaticSetting(p, trace.chain, trace, chain, values, clipped)


# ------------------------------------------------------------------------------------------------
# number formatting
# ------------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    """Shortest text that reads back as the same float, never in exponent notation (ffmpeg's
    option parser and ``dB`` suffix are happier without it)."""
    v = float(x)
    if not math.isfinite(v):
        raise AfxError(f"internal: non-finite value {v} in an export")
    return np.format_float_positional(v, unique=True, trim="-")


def _db_to_lin(db: float) -> float:
    return 10.0 ** (float(db) / 20.0)


# ------------------------------------------------------------------------------------------------
# json
# ------------------------------------------------------------------------------------------------
def to_json_preset(setting: StaticSetting) -> str:
    """The setting as a static ``afx-trace`` (afx's JSON preset), pretty-printed, newline-terminated."""
    tr = ParameterTrace.static(setting.chain_json, setting.flat(), setting.sample_rate,
                               hop=setting.trace.hop, units=units_of(setting.chain))
    tr.description = getattr(setting.trace, "description", "")
    return json.dumps(tr.to_json(), indent=2) + "\n"


# ------------------------------------------------------------------------------------------------
# ffmpeg
# ------------------------------------------------------------------------------------------------
#: ffmpeg 5.1 option ranges used below (``ffmpeg -h filter=NAME``).
_FF_COMP_THRESHOLD = (0.000976563, 1.0)
_FF_TIME_MS = (0.01, 2000.0)  # acompressor attack; release allows 9000, agate 9000 both
_FF_ALIMITER_LIMIT = (0.0625, 1.0)
_FF_ALIMITER_ATTACK_MS = (0.1, 80.0)
_FF_ALIMITER_RELEASE_MS = (1.0, 8000.0)


def _in_range(value: float, lo: float, hi: float, what: str, label: str, kind: str) -> float:
    if not (lo - 1e-12 <= value <= hi + 1e-12):
        raise AfxError(f"effect {label!r} ({kind}): {what}={value:g} is outside ffmpeg's range "
                       f"[{lo:g}, {hi:g}]")
    return min(max(value, lo), hi)


def ffmpeg_time_ms(coefficient: float, sample_rate: float, lo: float = 0.01, hi: float = 9000.0) -> float:
    """ffmpeg ``acompressor``/``agate`` time (ms) whose per-sample smoothing coefficient
    ``min(1, 4000 / (t * sr))`` (libavfilter ``af_sidechaincompress.c`` / ``af_agate.c``) equals
    ``1 - coefficient`` of an afx one-pole ``env += (1 - c) * (level - env)``; clamped to ffmpeg's
    option range ``[lo, hi]``."""
    k = 1.0 - float(coefficient)
    t = 4000.0 / (sample_rate * k) if k > 0 else hi
    return min(max(t, lo), hi)


def juce_ballistics_coefficient(time_ms: float, sample_rate: float) -> float:
    """JUCE ``BallisticsFilter``: ``exp(-2*pi*1000 / (sr * t_ms))``, 0 below 1e-3 ms (the same rule
    as :func:`afxcli.dsp.ballistics.juce_coefficient`)."""
    t = float(time_ms)
    return 0.0 if t < 1e-3 else math.exp(-2.0 * math.pi * 1000.0 / (sample_rate * t))


def time_constant_coefficient(time_ms: float, sample_rate: float) -> float:
    """One-pole ``exp(-1000 / (sr * t_ms))`` (as :func:`afxcli.dsp.ballistics.time_constant_coefficient`)."""
    t = float(time_ms)
    return 0.0 if t < 1e-3 else math.exp(-1000.0 / (sample_rate * t))


@dataclass
class _FFContext:
    sample_rate: float
    channels: int | None
    label: str
    kind: str
    n_split: int = 0

    def per_channel(self, filt: str) -> str:
        """``filt`` run on each channel of a stereo stream on its own (unlinked), or as-is for
        ``channels=1``. The first split is preceded by ``pan=stereo|FL=FL+FC|FR=FR+FC``: stereo
        passes unchanged (bit-exact), mono becomes two identical channels at unity gain (ffmpeg's
        automatic mono->stereo conversion would scale them by -3 dB). Each branch ends in
        ``aformat=sample_fmts=dblp``: left to itself ffmpeg 5.1 negotiates 64-bit *integer*
        samples for ``join`` and clips everything beyond full scale."""
        if self.channels == 1:
            return filt
        i = self.n_split
        self.n_split += 1
        pan = "pan=stereo|FL=FL+FC|FR=FR+FC," if i == 0 else ""
        return (f"{pan}channelsplit=channel_layout=stereo[afxL{i}][afxR{i}];"
                f"[afxL{i}]{filt},aformat=sample_fmts=dblp[afxl{i}];"
                f"[afxR{i}]{filt},aformat=sample_fmts=dblp[afxr{i}];"
                f"[afxl{i}][afxr{i}]join=inputs=2:channel_layout=stereo")


def _ff_gain(fx, v, ctx: _FFContext) -> list[str]:
    return [f"volume={_num(v['gain_db'])}dB"]


def eq_render_coefficients(fx, values: Mapping[str, float]) -> list[tuple[list[float], list[float]]]:
    """``[(b, a), ...]`` per section of an EQ effect, normalized (``a[0] = 1``): the float32
    coefficients pedalboard/JUCE compute for the sections of ``fx.biquad_sections(values)``
    (:func:`afxcli.dsp.biquad.juce_coefficients_f32`), i.e. the filter afx's render really applies.
    (The float64 design differs from it by float32 coefficient rounding, up to about -50 dBFS on
    full-scale music for low, narrow sections; afx's render is the reference.)"""
    sections = fx.biquad_sections(values)
    try:
        from ..dsp.biquad import SECTION_KINDS, juce_coefficients_f32
    except ImportError:  # pragma: no cover - float64 design as a fallback
        SECTION_KINDS = juce_coefficients_f32 = None
    if juce_coefficients_f32 is not None and all(s["kind"] in SECTION_KINDS for s in sections):
        c = juce_coefficients_f32([SECTION_KINDS[s["kind"]] for s in sections], fx.sample_rate,
                                  [s["freq_hz"] for s in sections], [s["q"] for s in sections],
                                  [s["gain_db"] for s in sections]).astype(np.float64)
        return [([r[0], r[1], r[2]], [1.0, r[3], r[4]]) for r in c.tolist()]
    out = []
    for s in sections:
        b = [float(c) for c in s["b"]]
        a = [float(c) for c in s["a"]]
        out.append(([c / a[0] for c in b], [c / a[0] for c in a]))
    return out


def _ff_eq(fx, v, ctx: _FFContext) -> list[str]:
    out = []
    for b, a in eq_render_coefficients(fx, v):
        if b == a:  # 0 dB section: the identity
            continue
        out.append(f"biquad=b0={_num(b[0])}:b1={_num(b[1])}:b2={_num(b[2])}:"
                   f"a0=1:a1={_num(a[1])}:a2={_num(a[2])}")
    return out


def _ff_compressor(fx, v, ctx: _FFContext) -> list[str]:
    sr = ctx.sample_rate
    thr = _in_range(_db_to_lin(v["threshold_db"]), *_FF_COMP_THRESHOLD, "threshold", ctx.label, ctx.kind)
    att = ffmpeg_time_ms(juce_ballistics_coefficient(v["attack_ms"], sr), sr, *_FF_TIME_MS)
    rel = ffmpeg_time_ms(juce_ballistics_coefficient(v["release_ms"], sr), sr, 0.01, 9000.0)
    comp = (f"acompressor=threshold={_num(thr)}:ratio={_num(v['ratio'])}:attack={_num(att)}:"
            f"release={_num(rel)}:makeup=1:knee=1:detection=peak:link=maximum")
    out = [ctx.per_channel(comp)]
    if v.get("makeup_db", 0.0) != 0.0:
        out.append(f"volume={_num(v['makeup_db'])}dB")
    return out


def _ff_compressor_soft(fx, v, ctx: _FFContext) -> list[str]:
    sr = ctx.sample_rate
    thr = _in_range(_db_to_lin(v["threshold_db"]), *_FF_COMP_THRESHOLD, "threshold", ctx.label, ctx.kind)
    knee = min(max(_db_to_lin(v["knee_db"]), 1.0), 8.0)
    att = ffmpeg_time_ms(time_constant_coefficient(v["attack_ms"], sr), sr, *_FF_TIME_MS)
    rel = ffmpeg_time_ms(time_constant_coefficient(v["release_ms"], sr), sr, 0.01, 9000.0)
    out = [f"acompressor=threshold={_num(thr)}:ratio={_num(v['ratio'])}:attack={_num(att)}:"
           f"release={_num(rel)}:makeup=1:knee={_num(knee)}:detection=peak:link=maximum"]
    if v.get("makeup_db", 0.0) != 0.0:
        out.append(f"volume={_num(v['makeup_db'])}dB")
    return out


def _ff_gate(fx, v, ctx: _FFContext) -> list[str]:
    sr = ctx.sample_rate
    thr = _in_range(_db_to_lin(v["threshold_db"]), 0.0, 1.0, "threshold", ctx.label, ctx.kind)
    att = ffmpeg_time_ms(juce_ballistics_coefficient(v["attack_ms"], sr), sr, 0.01, 9000.0)
    rel = ffmpeg_time_ms(juce_ballistics_coefficient(v["release_ms"], sr), sr, 0.01, 9000.0)
    gate = (f"agate=threshold={_num(thr)}:ratio={_num(v['ratio'])}:attack={_num(att)}:"
            f"release={_num(rel)}:range=0:knee=1:detection=rms:link=maximum")
    return [ctx.per_channel(gate)]


def _ff_limiter(fx, v, ctx: _FFContext) -> list[str]:
    limit = _in_range(_db_to_lin(v["ceiling_db"]), *_FF_ALIMITER_LIMIT, "ceiling", ctx.label, ctx.kind)
    look = min(max(float(fx.options.get("lookahead_ms", 5.0)), _FF_ALIMITER_ATTACK_MS[0]), _FF_ALIMITER_ATTACK_MS[1])
    rel = min(max(float(v["release_ms"]), _FF_ALIMITER_RELEASE_MS[0]), _FF_ALIMITER_RELEASE_MS[1])
    return [f"alimiter=limit={_num(limit)}:attack={_num(look)}:release={_num(rel)}:"
            f"level=disabled:latency=1"]


def _ff_hard_clip(fx, v, ctx: _FFContext) -> list[str]:
    t = float(v["threshold_db"])
    return [f"volume={_num(-t)}dB:precision=double", "asoftclip=type=hard",
            f"volume={_num(t)}dB:precision=double"]


def _ff_distortion(fx, v, ctx: _FFContext) -> list[str]:
    return [f"volume={_num(v['drive_db'])}dB:precision=double", "asoftclip=type=tanh"]


#: effect kind -> converter ``(effect, values, context) -> [filter, ...]``.
FFMPEG_FILTERS: dict[str, Callable[..., list[str]]] = {
    "gain": _ff_gain,
    "peq": _ff_eq,
    "geq": _ff_eq,
    "compressor": _ff_compressor,
    "compressor_soft": _ff_compressor_soft,
    "gate": _ff_gate,
    "limiter": _ff_limiter,
    "hard_clip": _ff_hard_clip,
    "distortion": _ff_distortion,
}


def to_ffmpeg(setting: StaticSetting, channels: int | None = None) -> str:
    """ffmpeg ``-af`` filter string (one line, no newline) for the setting; see the module notes.

    ``channels``: with ``None``/2 per-channel dynamics (JUCE compressor, gate) run on each channel
    of a stereo stream (exact; mono input comes out as two identical channels); with 1 they run
    once with ``link=maximum`` (exact for mono, a linked approximation for stereo, and the channel
    count is kept). Chains without per-channel dynamics keep the channel count either way."""
    if channels not in (None, 1, 2):
        raise AfxError(f"ffmpeg export: channels must be 1 or 2, not {channels!r}")
    sr = setting.sample_rate
    if sr != int(sr):
        raise AfxError(f"ffmpeg export needs an integer sample rate, not {sr:g} Hz")
    # float samples from the start: with integer input ffmpeg would otherwise run biquad (and
    # volume) on integers, clipping boosts above full scale between filters
    parts = [f"aresample={int(sr)}", "aformat=sample_fmts=flt|fltp|dbl|dblp"]
    split = 0
    for label, fx, vals, _entry in setting.items():
        conv = FFMPEG_FILTERS.get(fx.kind)
        if conv is None:
            raise AfxError(f"effect {label!r} ({fx.kind}) has no ffmpeg equivalent "
                           f"(ffmpeg can carry: {', '.join(sorted(FFMPEG_FILTERS))}); "
                           f"export it as json or pedalboard instead")
        ctx = _FFContext(sr, channels, label, fx.kind, split)
        parts.extend(conv(fx, vals, ctx))
        split = ctx.n_split
    return ",".join(parts)


# ------------------------------------------------------------------------------------------------
# EasyEffects
# ------------------------------------------------------------------------------------------------
#: afx EQ section kind -> EasyEffects band type.
_EE_BAND_TYPE = {"low_shelf": "Lo-shelf", "peak": "Bell", "high_shelf": "Hi-shelf"}
_EE_MAX_BANDS = 32
_EE_GAIN_RANGE_DB = 36.0


def _ee_band(freq_hz: float, gain_db: float, q: float, band_type: str) -> dict:
    return {"frequency": float(freq_hz), "gain": float(gain_db), "mode": "APO (DR)", "mute": False,
            "q": float(q), "slope": "x1", "solo": False, "type": band_type, "width": 4.0}


def _ee_equalizer(bands: Sequence[dict]) -> dict:
    left = {f"band{i}": dict(b) for i, b in enumerate(bands)}
    right = {f"band{i}": dict(b) for i, b in enumerate(bands)}
    return {"balance": 0.0, "bypass": False, "input-gain": 0.0, "output-gain": 0.0, "mode": "IIR",
            "num-bands": len(bands), "pitch-left": 0.0, "pitch-right": 0.0, "split-channels": False,
            "left": left, "right": right}


def _ee_eq(fx, v, label) -> tuple[str, dict]:
    sections = fx.biquad_sections(v)
    if len(sections) > _EE_MAX_BANDS:
        raise AfxError(f"effect {label!r} ({fx.kind}): {len(sections)} bands, EasyEffects' equalizer "
                       f"has at most {_EE_MAX_BANDS}")
    bands = []
    for s in sections:
        if s["kind"] not in _EE_BAND_TYPE:
            raise AfxError(f"effect {label!r} ({fx.kind}): section kind {s['kind']!r} has no "
                           "EasyEffects band type")
        bands.append(_ee_band(s["freq_hz"], s["gain_db"], s["q"], _EE_BAND_TYPE[s["kind"]]))
    return "equalizer", _ee_equalizer(bands)


def _ee_sidechain(mode: str, sc_type: str) -> dict:
    return {"lookahead": 0.0, "mode": mode, "preamp": 0.0, "reactivity": 10.0, "source": "Middle",
            "stereo-split-source": "Left/Right", "type": sc_type}


def _ee_dynamics_common() -> dict:
    return {"bypass": False, "dry": -100.0, "wet": 0.0, "hpf-frequency": 10.0, "hpf-mode": "off",
            "lpf-frequency": 20000.0, "lpf-mode": "off", "input-gain": 0.0, "output-gain": 0.0,
            "release-threshold": -100.0, "mode": "Downward"}


def _ee_compressor(fx, v, label) -> tuple[str, dict]:
    knee_db = float(v.get("knee_db", 0.0))  # hard knee for the JUCE compressor
    linked = fx.kind == "compressor_soft"
    return "compressor", {
        **_ee_dynamics_common(), "attack": float(v["attack_ms"]), "release": float(v["release_ms"]),
        "threshold": float(v["threshold_db"]), "ratio": float(v["ratio"]),
        "knee": max(-knee_db / 2.0, -23.99) if knee_db else 0.0, "makeup": float(v.get("makeup_db", 0.0)),
        "boost-amount": 6.0, "boost-threshold": -72.0,
        "sidechain": _ee_sidechain("Peak", "Feed-forward"), "stereo-split": not linked}


def _ee_gate(fx, v, label) -> tuple[str, dict]:
    return "expander", {
        **_ee_dynamics_common(), "attack": float(v["attack_ms"]), "release": float(v["release_ms"]),
        "threshold": float(v["threshold_db"]), "ratio": float(v["ratio"]), "knee": 0.0, "makeup": 0.0,
        "sidechain": _ee_sidechain("RMS", "Internal"), "stereo-split": True}


def _ee_limiter(fx, v, label) -> tuple[str, dict]:
    look = float(fx.options.get("lookahead_ms", 5.0))
    return "limiter", {
        "alr": False, "alr-attack": 5.0, "alr-knee": 0.0, "alr-release": 50.0,
        "attack": look, "bypass": False, "dithering": "None", "external-sidechain": False,
        "gain-boost": False, "input-gain": 0.0, "lookahead": look, "mode": "Herm Thin",
        "output-gain": 0.0, "oversampling": "None", "release": float(v["release_ms"]),
        "sidechain-preamp": 0.0, "stereo-link": 100.0, "threshold": float(v["ceiling_db"])}


#: effect kind -> converter ``(effect, values, label) -> (EasyEffects plugin name, settings)``.
EASYEFFECTS_PLUGINS: dict[str, Callable[..., tuple[str, dict]]] = {
    "peq": _ee_eq,
    "geq": _ee_eq,
    "compressor": _ee_compressor,
    "compressor_soft": _ee_compressor,
    "gate": _ee_gate,
    "limiter": _ee_limiter,
}


def to_easyeffects(setting: StaticSetting) -> str:
    """EasyEffects output preset JSON (indent 4, newline-terminated); see the module notes."""
    order: list[str] = []
    plugins: dict[str, dict] = {}
    counts: dict[str, int] = {}
    pending_db = 0.0  # gain effects waiting for a plugin to carry them

    def add_gain(key: str, field: str, db: float) -> None:
        new = plugins[key][field] + db
        if abs(new) > _EE_GAIN_RANGE_DB:
            raise AfxError(f"EasyEffects export: {new:g} dB of gain on {key} exceeds ±{_EE_GAIN_RANGE_DB:g} dB")
        plugins[key][field] = new

    for label, fx, vals, _entry in setting.items():
        if fx.kind == "gain":
            if order:
                add_gain(order[-1], "output-gain", float(vals["gain_db"]))
            else:
                pending_db += float(vals["gain_db"])
            continue
        conv = EASYEFFECTS_PLUGINS.get(fx.kind)
        if conv is None:
            raise AfxError(f"effect {label!r} ({fx.kind}) has no EasyEffects equivalent "
                           f"(EasyEffects can carry: gain, {', '.join(sorted(EASYEFFECTS_PLUGINS))})")
        name, settings = conv(fx, vals, label)
        idx = counts.get(name, 0)
        counts[name] = idx + 1
        key = f"{name}#{idx}"
        order.append(key)
        plugins[key] = settings
        if pending_db:
            add_gain(key, "input-gain", pending_db)
            pending_db = 0.0
    if not order:  # gains only: an equalizer with one band switched off carries them
        key = "equalizer#0"
        order.append(key)
        plugins[key] = _ee_equalizer([{**_ee_band(1000.0, 0.0, 0.707, "Off")}])
        add_gain(key, "output-gain", pending_db)
    return json.dumps({"output": {"blocklist": [], "plugins_order": order, **plugins}}, indent=4) + "\n"


# ------------------------------------------------------------------------------------------------
# pedalboard
# ------------------------------------------------------------------------------------------------
def _pb_ctor_args(plugin) -> list[str]:
    """Constructor argument names of a pedalboard built-in, read from its pybind11 signature
    (``__init__(self: pedalboard_native.Gain, gain_db: float = 1.0) -> None``)."""
    import re

    doc = (type(plugin).__init__.__doc__ or "").strip().splitlines()
    m = re.match(r"__init__\((.*)\)\s*->", doc[0]) if doc else None
    if not m:
        raise AfxError(f"internal: cannot read the constructor of pedalboard.{type(plugin).__name__}")
    names = re.findall(r"(\w+)\s*:", m.group(1))
    return [n for n in names if n != "self"]


def _pb_plugin_code(plugin) -> str:
    import pedalboard

    cls = type(plugin).__name__
    if getattr(pedalboard, cls, None) is not type(plugin):
        raise AfxError(f"internal: {cls} is not a pedalboard built-in")
    args = ", ".join(f"{n}={getattr(plugin, n)!r}" for n in _pb_ctor_args(plugin))
    return f"pedalboard.{cls}({args})"


def _pb_call(cls: str, kwargs: Mapping[str, Any]) -> str:
    return f"pedalboard.{cls}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def _pb_eq(fx, v) -> list[tuple[str, dict]]:
    cls = {"peak": "PeakFilter", "low_shelf": "LowShelfFilter", "high_shelf": "HighShelfFilter"}
    return [(cls[s["kind"]], {"cutoff_frequency_hz": float(s["freq_hz"]), "gain_db": float(s["gain_db"]),
                              "q": float(s["q"])}) for s in fx.biquad_sections(v)]


def _pb_dyn(cls: str, v: Mapping[str, float]) -> tuple[str, dict]:
    return (cls, {k: float(v[k]) for k in ("threshold_db", "ratio", "attack_ms", "release_ms")})


#: effect kind -> ``[(pedalboard class name, constructor kwargs), ...]``: the values afx passes to
#: its twin, verbatim.
PEDALBOARD_CODE: dict[str, Callable[[Any, Mapping[str, float]], list[tuple[str, dict]]]] = {
    "gain": lambda fx, v: [("Gain", {"gain_db": float(v["gain_db"])})],
    "peq": _pb_eq,
    "geq": _pb_eq,
    "compressor": lambda fx, v: [_pb_dyn("Compressor", v), ("Gain", {"gain_db": float(v["makeup_db"])})],
    "gate": lambda fx, v: [_pb_dyn("NoiseGate", v)],
    "limiter": lambda fx, v: [("BrickwallLimiter", {
        "ceiling_db": float(v["ceiling_db"]), "release_ms": float(v["release_ms"]),
        "lookahead_ms": float(fx.options.get("lookahead_ms", 5.0)),
        "true_peak": bool(fx.options.get("true_peak", True))})],
    "hard_clip": lambda fx, v: [("Clipping", {"threshold_db": float(v["threshold_db"])})],
    "distortion": lambda fx, v: [("Distortion", {"drive_db": float(v["drive_db"])})],
}


def _pb_effect_code(fx, values: Mapping[str, float]) -> list[str]:
    """Constructor calls for a twin effect, checked against the effect's own ``to_pedalboard``:
    the plugins they build must read back exactly like the twin's (class and every constructor
    attribute). Kinds outside :data:`PEDALBOARD_CODE` (or failing the check) fall back to the
    twin's read-back attributes (exact up to pedalboard's float32 storage)."""
    import pedalboard

    twin = fx.to_pedalboard(values)
    maker = PEDALBOARD_CODE.get(fx.kind)
    if maker is not None:
        calls = maker(fx, values)
        built = [getattr(pedalboard, cls)(**kw) for cls, kw in calls]
        if len(built) == len(twin) and all(
                type(a) is type(b) and all(getattr(a, n) == getattr(b, n) for n in _pb_ctor_args(a))
                for a, b in zip(built, twin)):
            return [_pb_call(cls, kw) for cls, kw in calls]
    return [_pb_plugin_code(p) for p in twin]


def _vst3_is_mono(fx) -> bool:
    info = getattr(fx, "_info", None)
    if info is not None and hasattr(info, "mono"):
        return bool(info.mono)
    return str(fx.describe().get("plugin", {}).get("channels", "")).startswith("mono")


#: Helper written into snippets that host a VST3 plugin.
_VST3_HELPER = '''

def run_vst3(path, preset_data, mono, audio, sample_rate):
    """A VST3 plugin restored from its saved state (.vstpreset bytes), rendered like afx does:
    primed with a little silence and reset (until a plugin has processed once, pedalboard does
    not know its latency and returns the stream delayed by it), then streamed (reset=False),
    flushed with reported_latency_samples of silence and the first n samples kept (pedalboard
    withholds a prepared plugin's latency in streaming). Mono-only plugins get one instance per
    channel; a stereo plugin given mono audio processes [x, x] and returns the mean of its outputs
    (as afx does)."""
    def render(x):
        plugin = pedalboard.load_plugin(path)
        plugin.preset_data = preset_data
        plugin(np.zeros((x.shape[0], 64), np.float32), sample_rate, reset=False)
        plugin.reset()
        n = x.shape[1]
        y = plugin(x, sample_rate, reset=False)
        latency = int(plugin.reported_latency_samples)
        if latency:
            tail = plugin(np.zeros((x.shape[0], latency), np.float32), sample_rate, reset=False)
            y = np.concatenate([y, tail], axis=1)
        return y[:, :n]

    if mono:
        return np.concatenate([render(audio[c:c + 1]) for c in range(audio.shape[0])])
    if audio.shape[0] == 1:
        return render(np.concatenate([audio, audio])).mean(axis=0, keepdims=True)
    return render(audio)
'''


def vstpreset_paths(out_path: Path, labels: Sequence[str]) -> dict[str, Path]:
    """Where the ``.vstpreset`` of each vst3 effect goes next to the snippet ``out_path``."""
    if len(labels) == 1:
        return {labels[0]: out_path.with_suffix(".vstpreset")}
    return {lab: out_path.with_suffix(f".{lab}.vstpreset") for lab in labels}


def to_pedalboard_snippet(setting: StaticSetting, vstpresets: Mapping[str, Path] | None = None) -> str:
    """A runnable script ``python SCRIPT INPUT OUTPUT`` rendering the setting; see the module notes."""
    body: list[str] = []
    board: list[str] = []  # consecutive built-ins collected into one Pedalboard
    uses_afx = False
    uses_vst3 = False
    chain_desc = " -> ".join(f"{lab} ({fx.kind})" for lab, fx in zip(setting.chain.labels, setting.chain.effects))

    def flush() -> None:
        if board:
            body.append("    y = pedalboard.Pedalboard([")
            body.extend(board)
            body.append("    ])(y, sample_rate)")
            board.clear()

    for label, fx, vals, entry in setting.items():
        if fx.has_twin and fx.kind != "vst3":
            board.append(f"        # {label} ({fx.kind})")
            for call in _pb_effect_code(fx, vals):
                board.append(f"        {call},")
            continue
        flush()
        opts = dict(entry.get("options") or {})
        if fx.kind == "vst3" and hasattr(fx, "vstpreset_bytes"):
            import base64

            note = f" (same state as {vstpresets[label].name})" if vstpresets and label in vstpresets else ""
            b64 = base64.b64encode(bytes(fx.vstpreset_bytes(vals))).decode("ascii")
            lines = [b64[i:i + 88] for i in range(0, len(b64), 88)] or [""]
            uses_vst3 = True
            body.append(f"    # {label} (vst3): plugin state with afx's values{note}")
            body.append("    state = base64.b64decode(")
            body.extend(f"        {ln!r}" for ln in lines)
            body.append("    )")
            body.append(f"    y = run_vst3({str(opts.get('path'))!r}, state, {_vst3_is_mono(fx)!r}, y, sample_rate)")
            continue
        if fx.kind == "vst3":
            body.append(f"    # {label} (vst3): rendered by afx")
        else:
            body.append(f"    # {label} ({fx.kind}): no pedalboard built-in, rendered by afx's exact form")
        uses_afx = True
        body.append(f"    y = render_effect(create({fx.kind!r}, sample_rate, **{opts!r}), y,")
        body.append(f"                      {dict((k, float(v)) for k, v in vals.items())!r})")
    flush()

    header = [
        "#!/usr/bin/env python3",
        f'"""afx preset {setting.source.name!r} as a pedalboard chain (generated by afx export-preset).',
        "",
        "Usage: python THIS_SCRIPT INPUT OUTPUT   (any sample rate; values are physical units)",
        "",
        f"Chain: {chain_desc}",
    ]
    if uses_afx:
        header += ["", "Effects without a pedalboard built-in are rendered by afx itself, so run this",
                   "with a Python that can import afxcli (e.g. afx's own .venv)."]
    header += ['"""'] + (["import base64"] if uses_vst3 else []) + [
        "import sys", "", "import numpy as np", "import pedalboard", "import soundfile as sf"]
    if uses_afx:
        header += ["", "from afxcli.effects import create", "from afxcli.render import render_effect"]
    if uses_vst3:
        header += _VST3_HELPER.rstrip("\n").split("\n")
    code = header + [
        "", "",
        "def process(audio, sample_rate):",
        '    """float32 audio (channels, samples) -> float32 (channels, samples)."""',
        "    y = np.ascontiguousarray(audio, dtype=np.float32)",
        *body,
        "    return y",
        "", "",
        "def main(argv):",
        "    if len(argv) != 3:",
        '        print(f"usage: {argv[0]} INPUT OUTPUT", file=sys.stderr)',
        "        return 2",
        '    audio, sample_rate = sf.read(argv[1], dtype="float32", always_2d=True)',
        "    y = process(audio.T, sample_rate)",
        '    subtype = "FLOAT" if argv[2].lower().endswith(".wav") else None',
        "    sf.write(argv[2], y.T, sample_rate, subtype=subtype)",
        "    return 0",
        "", "",
        'if __name__ == "__main__":',
        "    sys.exit(main(sys.argv))",
    ]
    return "\n".join(code) + "\n"


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def export_preset(src_path: str | Path, fmt: str, out_path: str | Path | None = None,
                  at: float | None = None, reduce: str | None = None,
                  sample_rate: float | None = None, channels: int | None = None) -> str:
    """Export a static setting of an afx preset / trace / chain spec as ``fmt``.

    Args:
        src_path: ``afx-trace`` (trace or afx JSON preset) or ``afx-chain`` JSON.
        fmt: one of :data:`FORMATS` (``json``, ``ffmpeg``, ``easyeffects``, ``pedalboard``).
        out_path: if given, the text is written there atomically (never over ``src_path``); for
            ``pedalboard`` with ``vst3`` effects their ``.vstpreset`` files are written beside it.
        at: take the values in force at this time (seconds) ...
        reduce: ... or reduce the trace over time (``median``/``mean``); default median for a
            time-varying trace. Giving both is an error.
        sample_rate: rate the setting is validated and (ffmpeg) coefficients are computed at;
            default the trace's (48 kHz for a bare chain spec).
        channels: ffmpeg only: 1 = mono-style string for per-channel dynamics (see :func:`to_ffmpeg`).
    Returns:
        The exported text (what is written to ``out_path``).
    """
    if fmt not in FORMATS:
        raise AfxError(f"unknown preset format {fmt!r} (choose from: {', '.join(FORMATS)})")
    src = Path(src_path)
    out = Path(out_path) if out_path is not None else None
    if out is not None and _same_file(out, src):
        raise AfxError(f"{out}: refusing to overwrite the input preset {src}")
    if out is not None and out.is_dir():
        raise AfxError(f"{out}: is a directory, give a file name")
    setting = resolve_setting(src, at, reduce, sample_rate)
    extra: dict[Path, bytes] = {}
    if fmt == "json":
        text = to_json_preset(setting)
    elif fmt == "ffmpeg":
        text = to_ffmpeg(setting, channels)
    elif fmt == "easyeffects":
        text = to_easyeffects(setting)
    else:
        vst_labels = [lab for lab, fx in zip(setting.chain.labels, setting.chain.effects) if fx.kind == "vst3"]
        paths: dict[str, Path] = {}
        if out is not None and vst_labels:
            paths = vstpreset_paths(out, vst_labels)
            for lab, fx, vals, _e in setting.items():
                if lab in paths:
                    make = getattr(fx, "vstpreset_bytes", None)
                    if make is None:
                        raise AfxError(f"effect {lab!r} (vst3) cannot write a .vstpreset yet")
                    if _same_file(paths[lab], src):
                        raise AfxError(f"{paths[lab]}: refusing to overwrite the input preset {src}")
                    extra[paths[lab]] = bytes(make(vals))
        text = to_pedalboard_snippet(setting, paths)
    if out is not None:
        try:
            write_text_atomic(out, text if text.endswith("\n") else text + "\n")
            for path, data in extra.items():
                write_bytes_atomic(path, data)
        except OSError as e:
            raise AfxError(f"{e.filename or out}: cannot write ({e.strerror or e.__class__.__name__})") from None
    return text


