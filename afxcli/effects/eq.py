"""EQ family: parametric EQ (low shelf, N peaks, high shelf) and ISO graphic EQ.

Both are cascades of RBJ-cookbook biquads exactly as JUCE ``dsp::IIR::Coefficients`` builds them
(:mod:`afxcli.dsp.biquad`), which is what pedalboard's ``LowShelfFilter`` / ``PeakFilter`` /
``HighShelfFilter`` run, so the pedalboard twin is one plugin per section.

Rendering paths (``forward(x, params, block_size, mode)``):

- ``mode="exact"``: the exact biquad recursion (:func:`afxcli.dsp.biquad.biquad`), coefficients per
  block for time-varying parameters (filter states persist across blocks, as in pedalboard when
  values change between ``reset=False`` chunks). For float32 audio the recursion and the
  coefficients are computed in float32 exactly as pedalboard does (coefficients from
  :func:`~afxcli.dsp.biquad.juce_coefficients_f32`, gradients through the float64 formulas:
  straight-through), which makes the output bit-identical to the twin. float64 audio is filtered in
  float64 with float64 coefficients (the ideal filter; it differs from pedalboard by pedalboard's
  own float32 round-off, up to ~2e-3 for a 20 Hz, Q 10, +18 dB boost).
- ``mode="train"``: frequency sampling (DeepAFx-ST) for static parameters where it pays off;
  time-varying parameters always take the exact path. Option ``train_filter``: ``"auto"`` (default:
  frequency sampling on an accelerator, the exact kernel on CPU, where the numba recursion is far
  cheaper than a 4x-padded FFT: 60 s stereo, 6 sections, forward+backward 1.3 s exact vs 19 s
  frequency-sampled on one core), ``"fs"`` or ``"exact"``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AfxError
from ..lazy import lazy_module, torch
from ..params import ParamSpec, max_freq_hz
from .base import Effect, register

#: Lowest frequency any EQ section may take (Hz).
MIN_FREQ_HZ = 20.0

#: The biquad kernels (numba, torch), imported on first use.
_biquad = lazy_module("afxcli.dsp.biquad")
#: Section kind -> coefficient formula name in :mod:`afxcli.dsp.biquad`.
_FORMULAS = {"peak": "make_peak_filter", "low_shelf": "make_low_shelf", "high_shelf": "make_high_shelf"}


class _BiquadEQ(Effect):
    """A fixed cascade of shelf/peak sections. Subclasses define :meth:`_layout`: one tuple per
    section ``(kind, freq, gain, q)`` where ``freq``/``gain``/``q`` are either a parameter name
    (``str``) or a fixed value (``float``)."""

    differentiable = True
    has_twin = True
    channels_independent = True  # one biquad cascade per channel
    linear_time_invariant = True  # with static values
    _allowed_options: tuple[str, ...] = ()
    TRAIN_FILTERS = ("auto", "fs", "exact")

    def __init__(self, sample_rate: float, **options: Any) -> None:
        train_filter = options.pop("train_filter", "auto")
        if train_filter not in self.TRAIN_FILTERS:
            raise AfxError(f"{self.kind}: train_filter must be one of {', '.join(self.TRAIN_FILTERS)}, "
                           f"not {train_filter!r}")
        self.train_filter = train_filter
        unknown = set(options) - set(self._allowed_options)
        if unknown:
            raise AfxError(f"{self.kind}: unknown option(s) {', '.join(sorted(unknown))} "
                           f"(it has: {', '.join(self._allowed_options) or 'none'})")
        super().__init__(sample_rate, **options)
        if train_filter != "auto":
            self.options["train_filter"] = train_filter
        self._sections = self._layout()

    def _layout(self) -> list[tuple[str, Any, Any, Any]]:
        raise NotImplementedError

    @property
    def n_sections(self) -> int:
        return len(self._sections)

    @property
    def sections(self) -> list[tuple[str, Any, Any, Any]]:
        """The layout: ``(kind, freq, gain, q)`` per section in processing order, each of the last
        three a parameter name or a fixed value."""
        return list(self._sections)

    # ----- parameters -> (freq, q, gain) per section ----------------------------------------------
    def _section_values(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``params`` ``(batch, n[, blocks])`` -> ``freq_hz``, ``q``, ``gain_db`` each
        ``(batch, n_sections[, blocks])`` float64."""
        p = params.to(torch.float64)
        index = {n: i for i, n in enumerate(self.param_names)}

        def pick(v):
            if isinstance(v, str):
                return p[:, index[v]]
            return torch.full_like(p[:, 0], float(v))

        out = []
        for j in (1, 3, 2):  # freq, q, gain
            out.append(torch.stack([pick(sec[j]) for sec in self._sections], dim=1))
        return out[0], out[1], out[2]

    def coefficients(self, params: torch.Tensor) -> torch.Tensor:
        """Differentiable float64 coefficients ``(batch, n_sections, 5)`` for static ``params``
        ``(batch, n)``, or ``(batch, n_sections, 5, blocks)`` for ``(batch, n, blocks)``."""
        freq, q, gain = self._section_values(params)
        gain_factor = torch.pow(10.0, gain / 20.0)
        cs = [getattr(_biquad, _FORMULAS[sec[0]])(self.sample_rate, freq[:, i], q[:, i], gain_factor[:, i])
              for i, sec in enumerate(self._sections)]  # each (batch[, blocks], 5)
        c = torch.stack(cs, dim=1)
        return c if params.dim() == 2 else c.transpose(-1, -2)

    def coefficients_f32(self, params: torch.Tensor) -> torch.Tensor:
        """pedalboard's float32 coefficients (not differentiable), same shape as :meth:`coefficients`."""
        freq, q, gain = (t.detach().cpu().numpy() for t in self._section_values(params))
        kinds = np.array([_biquad.SECTION_KINDS[sec[0]] for sec in self._sections])
        kinds = kinds.reshape((1, -1) + (1,) * (freq.ndim - 2))
        c = torch.from_numpy(_biquad.juce_coefficients_f32(kinds, self.sample_rate, freq, q, gain)).to(params.device)
        return c if params.dim() == 2 else c.transpose(-1, -2)

    # ----- torch processing -------------------------------------------------------------------
    def process(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None,
                mode: str) -> torch.Tensor:
        """``x`` ``(batch, channels, samples)``, physical ``params`` ``(batch, n[, blocks])``
        -> ``(batch, channels, samples)`` in ``x.dtype``."""
        c64 = self.coefficients(params)
        if mode == "train" and params.dim() == 2 and (
                self.train_filter == "fs" or (self.train_filter == "auto" and x.device.type != "cpu")):
            return _biquad.fs_filter(x, c64)
        if x.dtype == torch.float32:
            c32 = self.coefficients_f32(params)
            # forward: pedalboard's float32 coefficients; backward: d(c64)/d(params)
            c = (c64 + (c32.to(torch.float64) - c64).detach()).to(torch.float32)
            return _biquad.biquad_cascade(x, c, block_size)
        return _biquad.biquad_cascade(x.to(torch.float64), c64, block_size).to(x.dtype)

    # ----- export -----------------------------------------------------------------------------
    def biquad_sections(self, values: Mapping[str, float]) -> list[dict]:
        """The sections in processing order for physical ``values`` (missing ones take defaults):
        ``{"kind", "freq_hz", "q", "gain_db", "b": [b0, b1, b2], "a": [1.0, a1, a2]}`` in float64
        (the RBJ/JUCE formulas evaluated in double precision)."""
        v = self.check_values(values)
        row = torch.tensor([[v[n] for n in self.param_names]], dtype=torch.float64)
        freq, q, gain = self._section_values(row)
        c = self.coefficients(row)[0]
        return [{"kind": sec[0], "freq_hz": float(freq[0, i]), "q": float(q[0, i]),
                 "gain_db": float(gain[0, i]), "b": [float(c[i, 0]), float(c[i, 1]), float(c[i, 2])],
                 "a": [1.0, float(c[i, 3]), float(c[i, 4])]}
                for i, sec in enumerate(self._sections)]

    # ----- pedalboard twin --------------------------------------------------------------------
    def section_settings(self, values: Mapping[str, float]) -> list[tuple[str, float, float, float]]:
        """``(kind, freq_hz, gain_db, q)`` per section for physical ``values`` (validated, plain
        Python: cheap enough to run on every streamed block)."""
        return self._settings_of(self.check_values(values))

    def _settings_of(self, v: Mapping[str, float]) -> list[tuple[str, float, float, float]]:
        return [(sec[0], *(float(v[x]) if isinstance(x, str) else float(x) for x in sec[1:]))
                for sec in self._sections]

    def twin_sections(self, values: Mapping[str, float]) -> np.ndarray:
        """Sections ``(n, 6)`` ``[b0, b1, b2, 1, a1, a2]`` of the pedalboard twin for ``values``: the
        float32 coefficients its filters compute (:func:`afxcli.filters.juce_sections_f32`; NumPy,
        no torch), as float64."""
        from ..filters import juce_sections_f32

        return juce_sections_f32(self.section_settings(values), self.sample_rate)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        """One pedalboard plugin per section: ``LowShelfFilter`` / ``PeakFilter`` / ``HighShelfFilter``."""
        import pedalboard

        cls = {"peak": pedalboard.PeakFilter, "low_shelf": pedalboard.LowShelfFilter,
               "high_shelf": pedalboard.HighShelfFilter}
        return [cls[kind](cutoff_frequency_hz=freq, gain_db=gain, q=q)
                for kind, freq, gain, q in self.section_settings(values)]

    def apply_pedalboard(self, plugins: list, checked: Mapping[str, float]) -> None:
        sections = self._settings_of(checked)
        if len(plugins) != len(sections):
            raise AfxError(f"{self.kind}: expected {len(sections)} plugins, got {len(plugins)}")
        for plugin, (_, freq, gain, q) in zip(plugins, sections):
            plugin.cutoff_frequency_hz = freq
            plugin.gain_db = gain
            plugin.q = q


@register
class ParametricEQ(_BiquadEQ):
    """Parametric EQ: low shelf, ``n_peaks`` peaking filters, high shelf (RBJ cookbook / JUCE).

    Option ``n_peaks`` (int, 0..16, default 4). Parameters, in order::

        low_shelf_freq_hz  20 .. min(2000, fmax) Hz, log, default 100
        low_shelf_gain_db  -18 .. 18 dB, lin, default 0
        low_shelf_q        0.3 .. 2, log, default 0.707
        peak<i>_freq_hz    20 .. fmax Hz, log, defaults spread geometrically over 150 .. min(6000, fmax)
        peak<i>_gain_db    -18 .. 18 dB, lin, default 0
        peak<i>_q          0.1 .. 10, log, default 0.707
        high_shelf_freq_hz min(1000, fmax) .. fmax Hz, log, default min(8000, fmax)
        high_shelf_gain_db -18 .. 18 dB, lin, default 0
        high_shelf_q       0.3 .. 2, log, default 0.707

    with ``fmax = max_freq_hz(sample_rate)``. Defaults are flat (all gains 0 dB).
    Twin: pedalboard ``LowShelfFilter``, ``PeakFilter`` x ``n_peaks``, ``HighShelfFilter``.
    """

    kind = "peq"
    _allowed_options = ("n_peaks",)
    GAIN_DB = 18.0
    PEAK_Q = (0.1, 10.0)
    SHELF_Q = (0.3, 2.0)
    DEFAULT_Q = 1.0 / math.sqrt(2.0)

    @property
    def n_peaks(self) -> int:
        n = self.options.get("n_peaks", 4)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= int(n) <= 16:
            raise AfxError(f"peq: n_peaks must be an integer in 0..16, got {n!r}")
        return int(n)

    def _make_specs(self) -> Sequence[ParamSpec]:
        fmax = max_freq_hz(self.sample_rate)
        if fmax <= 2 * MIN_FREQ_HZ:
            raise AfxError(f"peq: sample rate {self.sample_rate:g} Hz is too low for an EQ")
        g, dq = self.GAIN_DB, self.DEFAULT_Q
        ls_max = min(2000.0, fmax)
        hs_min = min(1000.0, fmax / 2)
        specs = [ParamSpec("low_shelf_freq_hz", "Hz", MIN_FREQ_HZ, ls_max, min(100.0, ls_max), "log"),
                 ParamSpec("low_shelf_gain_db", "dB", -g, g, 0.0, "lin"),
                 ParamSpec("low_shelf_q", "", *self.SHELF_Q, dq, "log")]
        n = self.n_peaks
        lo, hi = 150.0, min(6000.0, fmax)
        for i in range(n):
            f = lo * (hi / lo) ** (i / (n - 1)) if n > 1 else math.sqrt(lo * hi)
            specs += [ParamSpec(f"peak{i + 1}_freq_hz", "Hz", MIN_FREQ_HZ, fmax, f, "log"),
                      ParamSpec(f"peak{i + 1}_gain_db", "dB", -g, g, 0.0, "lin"),
                      ParamSpec(f"peak{i + 1}_q", "", *self.PEAK_Q, dq, "log")]
        specs += [ParamSpec("high_shelf_freq_hz", "Hz", hs_min, fmax, min(8000.0, fmax), "log"),
                  ParamSpec("high_shelf_gain_db", "dB", -g, g, 0.0, "lin"),
                  ParamSpec("high_shelf_q", "", *self.SHELF_Q, dq, "log")]
        return specs

    def _layout(self):
        sec = [("low_shelf", "low_shelf_freq_hz", "low_shelf_gain_db", "low_shelf_q")]
        sec += [("peak", f"peak{i}_freq_hz", f"peak{i}_gain_db", f"peak{i}_q") for i in range(1, self.n_peaks + 1)]
        sec += [("high_shelf", "high_shelf_freq_hz", "high_shelf_gain_db", "high_shelf_q")]
        return sec


#: ISO 266 nominal band centers (Hz), with their index ``k`` on the base-10 series
#: ``f_k = 1000 * 10**(k/10)`` (IEC 61260-1 exact mid-band frequencies; the 1/3-octave series).
ISO_THIRD_OCTAVE = [(k, nominal) for k, nominal in zip(range(-16, 14), [
    25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600,
    2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000])]
ISO_OCTAVE = [(k, nominal) for k, nominal in ISO_THIRD_OCTAVE if k % 3 == 0 and nominal >= 31.5]


def constant_q(bandwidth_octaves: float) -> float:
    """Q of a band ``N`` octaves wide: ``sqrt(2**N) / (2**N - 1)`` (the analog bandwidth-Q relation
    of the RBJ cookbook; for its peaking EQ the band edges are the half-gain (dB) points).
    Octave: 1.4142; third octave: 4.3185."""
    r = 2.0 ** bandwidth_octaves
    return math.sqrt(r) / (r - 1.0)


def _band_label(nominal: float) -> str:
    s = f"{nominal:g}".replace(".", "p")
    return f"band_{s}hz_gain_db"


@register
class GraphicEQ(_BiquadEQ):
    """Graphic EQ: one constant-Q peaking filter per ISO 266 band.

    Option ``bands``: ``"octave"`` (31.5 Hz .. 16 kHz, Q = sqrt(2) = 1.414) or ``"third"``
    (25 Hz .. 20 kHz, Q = 4.318), Q from :func:`constant_q`. Filter centers are the exact IEC 61260-1
    base-10 mid-band frequencies ``1000 * 10**(k/10)`` (e.g. 31.62 Hz for the band named 31.5 Hz);
    bands whose center exceeds ``max_freq_hz(sample_rate)`` are dropped. Parameters
    ``band_<nominal>hz_gain_db`` (``p`` for a decimal point: ``band_31p5hz_gain_db``), -12 .. 12 dB,
    default 0. Twin: one pedalboard ``PeakFilter`` per band.

    Option ``shelves`` (default false): the lowest and the highest band kept are shelves instead of
    peaks (Q 1/√2, corners one octave inside the band: twice the lowest center, half the highest),
    which reach their gain near the band's center and hold it beyond, down to DC and up to Nyquist
    (a graphic EQ whose top band is a peak cannot shape the region above it: at 44.1 kHz the
    16–22 kHz octave, a quarter of an STFT's bins).
    """

    kind = "geq"
    _allowed_options = ("bands", "shelves")
    GAIN_DB = 12.0

    @property
    def band_kind(self) -> str:
        b = self.options.get("bands", "octave")
        if b not in ("octave", "third"):
            raise AfxError(f"geq: bands must be 'octave' or 'third', got {b!r}")
        return b

    @property
    def q(self) -> float:
        return constant_q(1.0 if self.band_kind == "octave" else 1.0 / 3.0)

    @property
    def bands(self) -> list[tuple[float, float]]:
        """``(nominal_hz, center_hz)`` of the bands kept at this sample rate."""
        table = ISO_OCTAVE if self.band_kind == "octave" else ISO_THIRD_OCTAVE
        fmax = max_freq_hz(self.sample_rate)
        out = [(float(nom), 1000.0 * 10.0 ** (k / 10.0)) for k, nom in table]
        out = [(n, c) for n, c in out if c <= fmax]
        if not out:
            raise AfxError(f"geq: no band fits below {fmax:g} Hz at sample rate {self.sample_rate:g}")
        return out

    def _make_specs(self) -> Sequence[ParamSpec]:
        return [ParamSpec(_band_label(n), "dB", -self.GAIN_DB, self.GAIN_DB, 0.0, "lin") for n, _ in self.bands]

    def _layout(self):
        q = self.q
        out = [("peak", center, _band_label(n), q) for n, center in self.bands]
        if self.options.get("shelves", False) and len(out) >= 2:
            shelf_q = 1.0 / math.sqrt(2.0)
            out[0] = ("low_shelf", 2.0 * out[0][1], out[0][2], shelf_q)
            out[-1] = ("high_shelf", 0.5 * out[-1][1], out[-1][2], shelf_q)
        return out
