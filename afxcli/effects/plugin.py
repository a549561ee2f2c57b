"""Any VST3 plugin as an afx effect (black box), hosted headless by pedalboard.

``{"type": "vst3", "options": {"path": "/usr/lib/vst3/ZamCompX2.vst3", "fixed": {...}}}``

**Parameters** are read from the plugin (``pedalboard.load_plugin(path).parameters``) and mapped to
:class:`~afxcli.params.ParamSpec`: the name is pedalboard's snake_case name, which already ends with
the plugin's unit label (``threshold_db``, ``attack_ms``, ``frequency_1_hz``), prefixed ``p_`` when
it starts with a digit (``32hz_db`` -> ``p_32hz_db``); range and default are the plugin's own (its
display text at raw values 0, 1 and the default raw value); ``log`` scale for positive ranges in
Hz/ms/s/octaves or with a ratio/bandwidth-like name, ``lin`` otherwise. Hz ranges are capped at
:func:`~afxcli.params.max_freq_hz` of the sample rate.

What is *not* a free parameter (every exclusion is listed with its reason in :meth:`describe`):

1. parameters the plugin marks non-automatable (host/internal settings such as buffer size,
   sample rate, latency, and read-only outputs such as DPF meters);
2. names of meters, monitors and routing: gain reduction, meter, output level, latency,
   sidechain, bypass, listen/solo, program (preset selector);
3. parameters whose value changes while the plugin processes audio (an output/meter that claims to
   be automatable), found by rendering a loud probe at load time;
4. **switches**: booleans, string choices and discrete parameters with at most
   :data:`MAX_SWITCH_STEPS` steps. A continuous [0, 1] normalization cannot represent a choice
   sensibly (a network or SPSA would flip it between blocks), so switches are not in ``specs``; they
   keep the plugin default or take a value given in the ``fixed`` option (the plugin's own value:
   number, bool or one of its strings) and are listed under ``switches`` in :meth:`describe`;
5. continuous parameters pinned by the ``fixed`` option (they leave the free set).

**Setting values**: a physical value is converted to the plugin's raw [0, 1] value by the plugin's
own text parser (``get_raw_value_for_text``), checked at load time to round-trip through
``get_text_for_raw_value``; when it does not, the raw value is interpolated from pedalboard's
1000-step scan of the parameter. Raw values are written to each instance's parameter
(``raw_value``; assigning ``.value`` on a parameter object is ignored by pedalboard) and **read back**
(raw value and displayed value) after every change; a value that did not take raises
:class:`~afxcli.errors.AfxError`.

**Channels**: a plugin that refuses a stereo block but accepts mono (ZamComp, ZamEQ2, ZamGEQ31,
ZamDynamicEQ...) runs one instance per channel; a stereo-only plugin given mono audio processes
``[x, x]`` and returns the mean of its two outputs.

**Latency and streaming** (measured with pedalboard 0.9.26 and ZaMaximX2, 480 samples): a one-shot
call (``reset=True``) compensates the plugin's reported latency (output aligned, same length); in
streaming (``reset=False``) pedalboard *withholds* the first ``reported_latency_samples`` of output
(the first chunk comes back shorter, zeros fed at the end flush it), exactly like its built-ins, so
:class:`VST3Renderer` has ``delays_stream = False``. This holds once the instance has been
``reset()``: a freshly loaded, never-run instance reports its latency but withholds nothing, so its
stream comes back *delayed* by it (a click at sample 1000 came out at 1480). The renderer therefore
resets every instance before its first block. (The stream mode is measured per plugin at load
time; a pedalboard that delayed the stream instead would be reported as ``delays_stream = True``.)
pedalboard re-prepares a plugin (which clears its state) when a call is longer than every earlier
call since the last reset, so the renderer splits blocks to at most the first block's length.

**Values through pedalboard's own attribute setter** (``plugin.release_ms = 30``) may be snapped to
its 1000-step scan grid (30 ms -> 30.007 ms, -1 dB -> -0.99 dB on ZaMaximX2) when the plugin's
parsed raw value falls between grid points; afx writes the parser's raw value, so it is exact.
Parameter changes reach the plugin's processor (and its saved state, ``preset_data``) with the next
process call (VST3 parameter queues); :meth:`VST3Effect.vstpreset_bytes` renders 64 samples of
silence before reading the state.

**Threads and instances**: pedalboard loads (and re-instantiates, on ``reset()``, plugins whose reset
keeps audio, e.g. ZamTube) only on the main thread. Instances are pooled per effect and reset
before reuse; :meth:`VST3Effect.preload` fills the pool on the main thread so that ``process`` can
run in worker threads. Loading costs 0.05-0.3 s per instance for most zam plugins (pedalboard
scans every parameter's display text); ZamVerb takes minutes (each scanned "room" value reloads an
impulse response) and is impractical.
"""
from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AfxError
from ..lazy import torch
from ..params import ParamSpec, max_freq_hz
from .base import Effect, Renderer, register

#: Discrete parameters with at most this many steps are switches (booleans, modes, choices).
MAX_SWITCH_STEPS = 128

#: Names (pedalboard snake_case) of meters, monitors, routing and preset selectors: never free.
EXCLUDED_NAME_RE = re.compile(
    r"gain_?reduction|(^|_)gr(_|$)|meter|^output_level|^out_level|^output_(left|right|low|medium|high)"
    r"|latency|side_?chain|bypass|(^|_)listen|(^|_)solo|program|buffer_size|sample_rate"
)
_FREQ_UNITS = {"hz": 1.0, "khz": 1000.0}
_LOG_UNITS = {"hz", "khz", "ms", "s", "sec", "oct", "octave", "octaves"}
_LOG_NAME_RE = re.compile(r"ratio|bandwidth|(^|_)q(_|$)")
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf", re.IGNORECASE)

PLUGIN_MISSING_REASON = "Debian package zam-plugins not installed (apt-get install zam-plugins)"


def parse_number(text: str | None) -> float:
    """First number in a plugin's display text (``"25.000000"``, ``"-3.5 dB"``), NaN if none."""
    if not text:
        return math.nan
    m = _FLOAT_RE.search(str(text))
    return float(m.group(0)) if m else math.nan


def _fmt(v: float) -> str:
    """A value as text for the plugin's parser (plain decimal, no exponent)."""
    s = f"{float(v):.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _load(path: str):
    import pedalboard

    if not os.path.exists(path):
        raise AfxError(f"vst3: plugin not found: {path}")
    try:
        return pedalboard.load_plugin(path)
    except Exception as e:  # ImportError, RuntimeError, ValueError from the plugin host
        msg = " ".join(str(e).split()) or type(e).__name__
        raise AfxError(f"vst3: cannot load plugin {path}: {msg[:300]}") from None


@dataclass
class _Param:
    """One plugin parameter as afx sees it (values are physical, raw values in [0, 1])."""

    attr: str                 # pedalboard's attribute name (``plugin.<attr>``)
    cpp_name: str             # the plugin's own parameter name
    index: int                # position in the plugin's parameter list
    kind: str                 # "float" | "switch"
    unit: str = ""
    spec: ParamSpec | None = None
    text_ok: bool = False     # the plugin's text parser round-trips
    table_val: np.ndarray | None = None   # scanned values (sorted) ...
    table_raw: np.ndarray | None = None   # ... and the raw values that show them
    tol_scale: float = 0.0    # read-back tolerance floor (physical units)
    valid_values: list = field(default_factory=list)
    default_raw: float = 0.0
    wrapper: Any = None       # pedalboard AudioProcessorParameter (scan instance; for switches)

    def raw_for(self, cpp, value: float) -> float:
        """Raw [0, 1] value showing physical ``value`` (``cpp``: this parameter on any instance)."""
        if self.text_ok:
            return float(cpp.get_raw_value_for_text(_fmt(value)))
        return float(np.interp(value, self.table_val, self.table_raw))

    def tolerance(self, value: float) -> float:
        """How far the displayed value may be from the target: 0.1 % of the range where the
        plugin's text parser is used, else 0.6 of the local scan step (table interpolation)."""
        if self.text_ok or self.table_val is None or len(self.table_val) < 3:
            return self.tol_scale
        i = int(min(max(np.searchsorted(self.table_val, value), 1), len(self.table_val) - 2))
        step = max(self.table_val[i + 1] - self.table_val[i], self.table_val[i] - self.table_val[i - 1])
        return max(self.tol_scale, 0.6 * float(step))


@dataclass
class _PluginInfo:
    path: str
    name: str
    manufacturer: str
    version: str
    params: list[_Param]
    excluded: dict[str, str]
    mono: bool                # refuses stereo, accepts mono: one instance per channel
    channels_ok: tuple[int, ...]
    latency_samples: int      # reported by the plugin at load time
    delays_stream: bool       # measured stream mode (False: latency withheld)
    persists_on_reset: bool = False  # reset() keeps audio: pedalboard re-instantiates instead


def _names(plugin) -> dict[str, Any]:
    return dict(plugin.parameters.items())


def _classify(attr: str, par) -> tuple[str, str]:
    """("float"|"switch"|"exclude", reason)."""
    if not par.is_automatable:
        return "exclude", "not automatable (host/internal setting or read-only output)"
    if EXCLUDED_NAME_RE.search(attr):
        return "exclude", "meter, monitor, routing or preset selector (by name)"
    steps = int(par.num_steps)
    if par.type is not float or par.is_boolean or (2 <= steps <= MAX_SWITCH_STEPS):
        return "switch", f"switch ({len(par.valid_values)} values); set it with option 'fixed'"
    return "float", ""


def _scan(path: str, sample_rate: float) -> _PluginInfo:
    """Load ``path`` once and read everything afx needs (parameters, channels, latency)."""
    plugin = _load(path)
    wrappers = _names(plugin)
    cpp_list = list(plugin._parameters)
    index_of = {cp.name: i for i, cp in enumerate(cpp_list)}
    params: list[_Param] = []
    excluded: dict[str, str] = {}
    for attr, par in wrappers.items():
        cpp_name = par.name
        kind, reason = _classify(attr, par)
        if kind == "exclude":
            excluded[attr] = reason
            continue
        p = _Param(attr=attr, cpp_name=cpp_name, index=index_of[cpp_name], kind=kind,
                   default_raw=float(par.default_raw_value), wrapper=par,
                   valid_values=list(par.valid_values))
        if kind == "switch":
            params.append(p)
            continue
        label = (par.label or "").strip()
        p.unit = label
        # Scanned (value, raw) table from pedalboard's 1000-step scan of the display text.
        items = [(float(v), 0.5 * (lo + hi)) for (lo, hi), v in par.ranges.items()
                 if isinstance(v, float) and math.isfinite(v)]
        if len(items) < 2:
            excluded[attr] = "fewer than two finite values"
            continue
        vals = np.array([a for a, _ in items])
        raws = np.array([b for _, b in items])
        order = np.argsort(vals, kind="stable")
        vals, raws = vals[order], raws[order]
        if not (np.all(np.diff(raws) > 0) or np.all(np.diff(raws) < 0)):
            excluded[attr] = "value is not monotonic in the raw value"
            continue
        p.table_val, p.table_raw = vals, raws
        vmin, vmax = float(vals[0]), float(vals[-1])
        cp = cpp_list[p.index]
        p.tol_scale = 1e-3 * (vmax - vmin) + 1e-9
        checks = [vmin, vmax] + [vmin + f * (vmax - vmin) for f in (0.1, 0.37, 0.5, 0.83)]
        p.text_ok = all(
            abs(parse_number(cp.get_text_for_raw_value(float(cp.get_raw_value_for_text(_fmt(v))))) - v)
            <= p.tol_scale for v in checks)
        default = parse_number(cp.get_text_for_raw_value(p.default_raw))
        if not math.isfinite(default):
            default = float(np.interp(p.default_raw, raws[::-1] if raws[0] > raws[-1] else raws,
                                      vals[::-1] if raws[0] > raws[-1] else vals))
        snapped = round(default, 4)
        if abs(snapped - default) <= p.tol_scale:   # display noise such as 0.000001 dB
            default = snapped
        unit_key = label.lower()
        if unit_key in _FREQ_UNITS:
            cap = max_freq_hz(sample_rate) / _FREQ_UNITS[unit_key]
            if vmin >= cap:
                excluded[attr] = f"frequency range starts above max_freq_hz({sample_rate:g})"
                continue
            vmax = min(vmax, cap)
        positive = vmin > 0
        scale = "log" if positive and (unit_key in _LOG_UNITS or _LOG_NAME_RE.search(attr)) else "lin"
        unit = label if label else (":1" if "ratio" in attr else "")
        name = f"p_{attr}" if attr[:1].isdigit() else attr
        p.spec = ParamSpec(name, unit, vmin, vmax, float(min(max(default, vmin), vmax)), scale)
        params.append(p)

    # Channel layouts: pedalboard raises ValueError for a channel count the plugin refuses.
    channels_ok = []
    for ch in (2, 1):
        try:
            plugin(np.zeros((ch, 64), np.float32), sample_rate, reset=True)
            channels_ok.append(ch)
        except ValueError:
            pass
    if not channels_ok:
        raise AfxError(f"vst3: plugin {path} processes neither mono nor stereo audio")
    ch = channels_ok[0]
    # Outputs that claim to be automatable: values that move while loud audio is processed.
    # (Parameter objects are fetched again after every reset: pedalboard re-instantiates plugins
    # whose reset does not clear their audio, e.g. ZamTube, and the old objects dangle.)
    cpp_list = list(plugin._parameters)
    before = [cp.raw_value for cp in cpp_list]
    rng = np.random.default_rng(0)
    n = int(0.25 * sample_rate)
    t = np.arange(n) / sample_rate
    probe = (0.9 * np.sin(2 * np.pi * 220 * t) * (t > 0.05) + 0.3 * rng.standard_normal(n))
    plugin(np.tile(probe.astype(np.float32), (ch, 1)), sample_rate, reset=True)
    cpp_list = list(plugin._parameters)
    after = [cp.raw_value for cp in cpp_list]
    moved = {cpp_list[i].name for i in range(len(cpp_list)) if abs(after[i] - before[i]) > 1e-7}
    for p in list(params):
        if p.cpp_name in moved:
            params.remove(p)
            excluded[p.attr] = "changes while processing (an output/meter)"
    # Stream mode: how many samples a fresh stream withholds, against the reported latency.
    plugin.reset()
    latency = int(plugin.reported_latency_samples)
    m = max(4096, 2 * latency)
    out = plugin(np.zeros((ch, m), np.float32), sample_rate, reset=False)
    withheld = m - out.shape[-1]
    latency = int(plugin.reported_latency_samples)
    if withheld == latency:
        delays = False
    elif withheld == 0 and latency > 0:
        delays = True
    else:
        raise AfxError(f"vst3: plugin {path} withholds {withheld} samples but reports a latency "
                       f"of {latency}; cannot align it")
    # pedalboard classifies each loaded instance by feeding it audio around a reset; the test is
    # borderline for some plugins (ZamTube: 1 load in 30 says "clears"), and a misclassified
    # instance keeps the test's audio and is never cleaned by reset(). Two loads decide.
    persists = _persists(plugin) or _persists(_load(path))
    return _PluginInfo(path=path, name=str(plugin.name), manufacturer=str(getattr(plugin, "manufacturer_name", "")),
                       version=str(getattr(plugin, "version", "")), params=params, excluded=excluded,
                       mono=(channels_ok == [1]), channels_ok=tuple(channels_ok),
                       latency_samples=latency, delays_stream=delays, persists_on_reset=persists)


def _persists(plugin) -> bool:
    return "Persists" in str(getattr(plugin, "_reload_type", ""))


_SCAN_CACHE: dict[tuple, _PluginInfo] = {}
_SCAN_LOCK = threading.Lock()


def plugin_info(path: str, sample_rate: float) -> _PluginInfo:
    """:func:`_scan` cached per (real path, modification time, sample rate)."""
    real = os.path.realpath(path)
    try:
        mtime = os.path.getmtime(real)
    except OSError:
        raise AfxError(f"vst3: plugin not found: {path}") from None
    key = (real, mtime, float(sample_rate))
    with _SCAN_LOCK:
        if key not in _SCAN_CACHE:
            _SCAN_CACHE[key] = _scan(path, sample_rate)
        return _SCAN_CACHE[key]


@register
class VST3Effect(Effect):
    """A VST3 plugin as a black-box effect (no gradient; see the module docstring).

    Options:
        path: the ``.vst3`` bundle.
        fixed: ``{name: value}`` for switches (the plugin's own value) and continuous parameters
            to pin (physical units); pinned continuous parameters leave the free set.

    ``process``: ``x`` ``(batch, channels, samples)``, params ``(batch, n)`` or ``(batch, n, blocks)``
    (physical units, held per ``block_size`` block) -> ``(batch, channels, samples)`` without
    gradient, each item rendered from a fresh plugin state, aligned (latency compensated) and of
    the input's length.
    """

    kind = "vst3"
    differentiable = False
    has_twin = False

    def _make_specs(self) -> Sequence[ParamSpec]:
        path = self.options.get("path")
        if not isinstance(path, str) or not path:
            raise AfxError("vst3: option 'path' (a .vst3 bundle) is required")
        unknown = set(self.options) - {"path", "fixed"}
        if unknown:
            raise AfxError(f"vst3: unknown option(s) {', '.join(sorted(unknown))} (it has: path, fixed)")
        self._info = plugin_info(path, self.sample_rate)
        fixed = self.options.get("fixed") or {}
        if not isinstance(fixed, Mapping):
            raise AfxError(f"vst3 {path}: option 'fixed' must be an object {{name: value}}")
        by_name = {}
        for p in self._info.params:
            by_name[p.attr] = p
            if p.spec is not None:
                by_name[p.spec.name] = p
        self._fixed_raw: dict[int, tuple[str, float]] = {}   # index -> (attr, raw)
        pinned = set()
        for key, value in fixed.items():
            p = by_name.get(key)
            if p is None:
                why = self._info.excluded.get(key)
                raise AfxError(f"vst3 {path}: cannot fix {key!r}" + (f": {why}" if why else
                               f" (settable: {', '.join(sorted(q.attr for q in self._info.params))})"))
            if p.kind == "switch":
                v = value
                if p.wrapper.type is bool and isinstance(value, (int, float)) and value in (0, 1):
                    v = bool(value)
                try:
                    raw = float(p.wrapper.get_raw_value_for(v))
                except ValueError as e:
                    raise AfxError(f"vst3 {path}: {key}={value!r}: {' '.join(str(e).split())}") from None
            else:
                v = p.spec.validate(value, where=f"vst3 {path}")
                raw = None
            self._fixed_raw[p.index] = (p.attr, raw if raw is not None else float(v))
            pinned.add(p.attr)
        self._fixed_is_raw = {p.index: p.kind == "switch" for p in self._info.params if p.attr in pinned}
        self._free = [p for p in self._info.params if p.kind == "float" and p.attr not in pinned]
        self._pool: list[list] = []
        self._pool_lock = threading.Lock()
        return [p.spec for p in self._free]

    # ----- instances --------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.options["path"]

    @property
    def latency_samples(self) -> int:
        return self._info.latency_samples

    def _new_instance(self):
        inst = _load(self.path)
        for _ in range(8):  # replace instances pedalboard misclassified (see _scan)
            if not self._info.persists_on_reset or _persists(inst):
                break
            inst = _load(self.path)
        cps = list(inst._parameters)
        for idx, (attr, val) in self._fixed_raw.items():
            cp = cps[idx]
            p = next(q for q in self._info.params if q.index == idx)
            raw = val if self._fixed_is_raw[idx] else p.raw_for(cp, val)
            _set_raw(cp, raw, f"vst3 {self.path}: {attr}")
        return inst

    def preload(self, count: int) -> None:
        """Create ``count`` plugin instances into the pool. pedalboard can only load (and
        re-instantiate) plugins on the main thread: call this there before rendering items in
        worker threads (``process`` then takes pooled instances)."""
        self._release([self._new_instance() for _ in range(max(0, int(count)))])

    def _acquire(self, n: int) -> list:
        """``n`` plugin instances (from the pool, reset, or newly loaded)."""
        with self._pool_lock:
            got = [self._pool.pop() for _ in range(min(n, len(self._pool)))]
        return got + [self._new_instance() for _ in range(n - len(got))]

    def _release(self, instances: list) -> None:
        with self._pool_lock:
            self._pool.extend(instances)

    _UNPICKLED = ("_info", "_fixed_raw", "_fixed_is_raw", "_free", "_pool", "_pool_lock")

    def __getstate__(self):
        """Pickle/deepcopy without the pedalboard objects (not picklable); they are rebuilt."""
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_specs()

    # ----- rendering --------------------------------------------------------------------------
    def make_renderer(self, values: Mapping[str, float]) -> "VST3Renderer":
        """Stateful streaming renderer (fresh plugin state) with ``values`` (physical units)."""
        return VST3Renderer(self, values)

    def process(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None,
                mode: str) -> torch.Tensor:
        batch, channels, n = x.shape
        xs = x.detach().to("cpu", torch.float32).numpy()
        p = params.detach().to("cpu", torch.float64).numpy()
        lo = np.array([s.min for s in self.specs])
        hi = np.array([s.max for s in self.specs])
        out = np.empty((batch, channels, n), np.float32)
        if p.ndim == 2:
            segments = [(0, n, 0)]
        else:
            nb = p.shape[-1]
            bs = block_size or max(1, math.ceil(n / nb))
            segments = [(k * bs, n if k == nb - 1 else min(n, (k + 1) * bs), k)
                        for k in range(nb) if k * bs < n]
        for b in range(batch):
            r = VST3Renderer(self, None, pooled=True)
            try:
                chunks = []
                for start, end, k in segments:
                    vec = p[b] if p.ndim == 2 else p[b, :, k]
                    r._set_vector(np.clip(vec, lo, hi))
                    chunks.append(r.process(xs[b, :, start:end]))
                out[b] = r.flush_aligned(chunks, n)
            finally:
                r.close()
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def vstpreset_bytes(self, values: Mapping[str, float]) -> bytes:
        """The plugin's state with ``values`` (and the ``fixed`` options) in ``.vstpreset`` format
        (pedalboard ``VST3Plugin.preset_data``); load it with ``plugin.load_preset(file)`` or by
        assigning ``plugin.preset_data``."""
        r = VST3Renderer(self, values, pooled=True)
        try:
            ch = 1 if self._info.mono else self._info.channels_ok[0]
            # VST3 delivers parameter changes to the processor (whose state the preset holds)
            # with the next process call: render a few samples of silence first.
            r.process(np.zeros((ch, 64), np.float32))
            return bytes(r.instances[0].preset_data)
        finally:
            r.close()

    def plugin_values(self, instance) -> dict[str, float]:
        """Free parameter values displayed by a plugin ``instance`` (physical units)."""
        cps = list(instance._parameters)
        return {p.spec.name: parse_number(cps[p.index].string_value) for p in self._free}

    def describe(self) -> dict:
        d = super().describe()
        info = self._info
        d["plugin"] = {
            "path": self.path, "real_path": info.path and os.path.realpath(info.path),
            "name": info.name, "manufacturer": info.manufacturer, "version": info.version,
            "latency_samples": info.latency_samples,
            "channels": "mono (one instance per channel)" if info.mono else "stereo",
        }
        d["plugin_params"] = {p.spec.name: p.attr for p in self._free}
        d["switches"] = {p.attr: [v if isinstance(v, (str, bool)) else float(v) for v in p.valid_values]
                         for p in info.params if p.kind == "switch"}
        d["excluded"] = dict(info.excluded)
        return d


def _set_raw(cp, raw: float, where: str) -> None:
    """Write a raw value to a plugin parameter and check it reads back."""
    raw = float(min(max(raw, 0.0), 1.0))
    cp.raw_value = raw
    back = float(cp.raw_value)
    if abs(back - raw) > 1e-6:
        raise AfxError(f"{where}: plugin did not take raw value {raw:.6f} (reads back {back:.6f})")


class VST3Renderer(Renderer):
    """Streams audio through plugin instances of a :class:`VST3Effect` (one per channel for a
    mono plugin). Blocks are float32 ``(channels, samples)``; the latency is withheld (see the module
    docstring), so ``delays_stream`` is ``False`` with pedalboard 0.9.26."""

    def __init__(self, effect: VST3Effect, values: Mapping[str, float] | None, pooled: bool = False):
        self.effect = effect
        self.delays_stream = effect._info.delays_stream
        self.values = effect.check_values(values or {})
        self._vec = np.array([self.values[s.name] for s in effect.specs], np.float64)
        self._applied: np.ndarray | None = None
        self.instances: list | None = None
        self._channels: int | None = None
        self._max_call = 0
        self._pooled = pooled
        self._cps: list[list] = []

    # --- values ---
    def set_values(self, values: Mapping[str, float]) -> None:
        new = self.effect.check_values(values)
        self.values = new
        self._set_vector(np.array([new[s.name] for s in self.effect.specs], np.float64))

    def _set_vector(self, vec: np.ndarray) -> None:
        self._vec = np.asarray(vec, np.float64)
        if self.instances is not None:
            self._apply()

    def _apply(self) -> None:
        eff = self.effect
        changed = (range(len(self._vec)) if self._applied is None
                   else np.nonzero(self._vec != self._applied)[0])
        for i in changed:
            p = eff._free[i]
            v = float(self._vec[i])
            raw = None
            for cps in self._cps:
                cp = cps[p.index]
                if raw is None:
                    raw = p.raw_for(cp, v)
                _set_raw(cp, raw, f"vst3 {eff.path}: {p.spec.name}={v:g}")
                shown = parse_number(cp.string_value)
                if math.isfinite(shown) and abs(shown - v) > p.tolerance(v):
                    raise AfxError(f"vst3 {eff.path}: {p.spec.name}={v:g} did not take effect "
                                   f"(plugin shows {cp.string_value!r})")
        self._applied = self._vec.copy()

    # --- audio ---
    def _ensure(self, channels: int) -> None:
        if self.instances is not None:
            if channels != self._channels:
                raise AfxError(f"vst3 {self.effect.path}: stream changed from {self._channels} to "
                               f"{channels} channels")
            return
        info = self.effect._info
        if channels in info.channels_ok:
            n_inst = 1
        elif 1 in info.channels_ok:
            n_inst = channels
        elif channels == 1 and 2 in info.channels_ok:
            n_inst = 1
        else:
            raise AfxError(f"vst3 {self.effect.path}: cannot process {channels}-channel audio "
                           f"(the plugin takes {' or '.join(map(str, info.channels_ok))} channels)")
        self.instances = (self.effect._acquire(n_inst) if self._pooled
                          else [self.effect._new_instance() for _ in range(n_inst)])
        # A fresh pedalboard instance does not withhold its latency on its first stream; after
        # reset() it does (measured with ZaMaximX2). Reset every instance so all streams agree.
        self._reset_instances()
        self._channels = channels
        self._applied = None
        self._apply()

    def _reset_instances(self) -> None:
        for inst in self.instances:
            inst.reset()
        # parameter objects, looked up again after a reset (pedalboard may re-instantiate a plugin)
        self._cps = [list(inst._parameters) for inst in self.instances]
        self._max_call = 0

    def _call(self, inst, block: np.ndarray) -> np.ndarray:
        return inst(block, self.effect.sample_rate, reset=False)

    def process(self, block: np.ndarray, reset: bool = False) -> np.ndarray:
        """Process one block ``(channels, samples)``; ``reset=True`` clears the plugin state first
        (unlike pedalboard's ``reset=True`` it does not flush the tail, so streaming continues)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2:
            raise AfxError(f"vst3: audio blocks must be (channels, samples), got {block.shape}")
        ch, n = block.shape
        self._ensure(ch)
        if reset:
            self._reset_instances()
            self._applied = None
            self._apply()
        if n == 0:
            return np.zeros((ch, 0), np.float32)
        if self._max_call == 0:
            self._max_call = min(n, 8192)
        outs = []
        for s in range(0, n, self._max_call):
            outs.append(self._process_now(block[:, s:s + self._max_call]))
        return np.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]

    def _process_now(self, block: np.ndarray) -> np.ndarray:
        ch = block.shape[0]
        info = self.effect._info
        if ch in info.channels_ok:
            return self._call(self.instances[0], block)
        if 1 in info.channels_ok:
            ys = [self._call(inst, block[c:c + 1]) for c, inst in enumerate(self.instances)]
            return np.concatenate(ys, axis=0)
        y = self._call(self.instances[0], np.concatenate([block, block], axis=0))
        return y.mean(axis=0, keepdims=True)

    def flush_aligned(self, chunks: list[np.ndarray], n: int) -> np.ndarray:
        """Concatenate streamed ``chunks`` of an ``n``-sample input, flush the latency with zeros
        and return the aligned ``(channels, n)`` output."""
        lat = self.latency_samples
        ch = self._channels
        got = sum(c.shape[-1] for c in chunks)
        need = n + (lat if self.delays_stream else 0)
        if got < need:
            chunks = chunks + [self.process(np.zeros((ch, need - got), np.float32))]
        y = np.concatenate(chunks, axis=-1)
        y = y[:, lat:lat + n] if self.delays_stream else y[:, :n]
        if y.shape[-1] != n:
            raise AfxError(f"vst3 {self.effect.path}: got {y.shape[-1]} samples back for {n} "
                           f"(latency {lat})")
        return y

    @property
    def latency_samples(self) -> int:
        if self.instances:
            return int(self.instances[0].reported_latency_samples)
        return self.effect._info.latency_samples

    def close(self) -> None:
        """Give pooled instances back to the effect (they are reset before reuse)."""
        if self._pooled and self.instances:
            self.effect._release(self.instances)
        self.instances = None
