"""Multiband dynamics: Linkwitz–Riley (LR4) band split, a JUCE-style compressor or noise gate per
band, bands summed (DeepAFx's multiband compressor / multiband noise gate Fx layers, Martínez Ramírez
et al. 2021, Sec. 3.1–3.2).

Split: :func:`afxcli.dsp.crossover.linkwitz_riley_split` (allpass-compensated LR4 tree), so with every
band left untouched the output is the allpass-filtered input (flat magnitude). Per band:
:func:`afxcli.effects.dynamics.juce_compressor` (JUCE ``dsp::Compressor``) followed by makeup gain,
or :func:`afxcli.effects.dynamics.juce_noise_gate` (JUCE ``dsp::NoiseGate``), both per channel.

Parameters (``n_bands`` option, default 3; bands numbered from the lowest):
``crossover1_hz`` … ``crossover{n-1}_hz`` and, per band ``k``, ``band{k}_threshold_db``,
``band{k}_ratio``, ``band{k}_attack_ms``, ``band{k}_release_ms`` (+ ``band{k}_makeup_db`` for the
compressor). Crossovers are ascending by construction: crossover ``j`` lives in the ``j``-th of
``n-1`` equal log-frequency segments of ``[20 Hz, max_freq_hz(sr)]`` (disjoint ranges; a shared
endpoint gives equal crossovers, which the split accepts). No pedalboard twin: the exact torch form
renders at inference.
"""
from __future__ import annotations

import math

from ..errors import AfxError
from ..lazy import lazy_module, torch
from ..params import ParamSpec, max_freq_hz
from .base import Effect, register
from .dynamics import _db_to_gain, compressor_specs, gate_specs, juce_compressor, juce_noise_gate

#: The Linkwitz-Riley crossover (torch), imported on first use.
_crossover = lazy_module("afxcli.dsp.crossover")

#: Lowest crossover frequency (Hz).
MIN_CROSSOVER_HZ = 20.0
MAX_BANDS = 6


def crossover_specs(n_bands: int, sample_rate: float) -> list[ParamSpec]:
    """``n_bands - 1`` crossover specs on disjoint, ascending log-frequency segments of
    ``[20 Hz, max_freq_hz(sr)]``; each default is its segment's geometric centre."""
    lo, hi = math.log(MIN_CROSSOVER_HZ), math.log(max_freq_hz(sample_rate))
    n = n_bands - 1
    edges = [math.exp(lo + (hi - lo) * j / n) for j in range(n + 1)]
    return [ParamSpec(f"crossover{j + 1}_hz", "Hz", edges[j], edges[j + 1],
                      math.sqrt(edges[j] * edges[j + 1]), "log") for j in range(n)]


class _Multiband(Effect):
    _band_specs = staticmethod(compressor_specs)

    def __init__(self, sample_rate: float, n_bands: int = 3, **options):
        if options:
            raise AfxError(f"{self.kind}: unknown option(s) {', '.join(sorted(options))} (it has: n_bands)")
        if isinstance(n_bands, bool) or not isinstance(n_bands, (int, float)) or int(n_bands) != n_bands \
                or not 2 <= int(n_bands) <= MAX_BANDS:
            raise AfxError(f"{self.kind}: n_bands={n_bands!r} must be an integer from 2 to {MAX_BANDS}")
        super().__init__(sample_rate, n_bands=int(n_bands))

    @property
    def n_bands(self) -> int:
        return int(self.options["n_bands"])

    def _make_specs(self):
        specs = crossover_specs(self.n_bands, self.sample_rate)
        for k in range(self.n_bands):
            specs += self._band_specs(f"band{k + 1}_")
        return specs

    def _split(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None) -> torch.Tensor:
        """``(batch, channels, samples)`` -> ``(batch * n_bands, channels, samples)`` bands."""
        cross = params[:, : self.n_bands - 1].to(torch.float64)  # (batch, n-1[, blocks])
        bands = _crossover.linkwitz_riley_split(x, cross, self.sample_rate, block_size)  # (b, nb, c, n)
        b, nb, c, n = bands.shape
        return bands.reshape(b * nb, c, n)

    def _band_param(self, params: torch.Tensor, name: str, n: int, block_size: int | None,
                    dtype: torch.dtype) -> torch.Tensor:
        """Per-band parameter ``name`` (e.g. ``threshold_db``) as ``(batch * n_bands, 1 | samples)``,
        band-major within each batch item (matching :meth:`_split`)."""
        cols = [self.param(params, f"band{k + 1}_{name}", n, block_size) for k in range(self.n_bands)]
        return torch.stack(cols, dim=1).reshape(-1, cols[0].shape[-1]).to(dtype)

    def _sum(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        return y.reshape(batch, self.n_bands, *y.shape[1:]).sum(dim=1)


@register
class MultibandCompressor(_Multiband):
    """Multiband compressor: LR4 split, JUCE compressor + makeup per band, summed.

    ``x`` ``(batch, channels, samples)``, params ``(batch, n[, blocks])`` -> ``(batch, channels,
    samples)``."""

    kind = "multiband_compressor"
    _band_specs = staticmethod(compressor_specs)

    def process(self, x, params, block_size, mode):
        b, _, n = x.shape
        bands = self._split(x, params, block_size)
        p = {k: self._band_param(params, k, n, block_size, x.dtype)
             for k in ("threshold_db", "ratio", "attack_ms", "release_ms", "makeup_db")}
        y = juce_compressor(bands, p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"],
                            self.sample_rate)
        y = y * _db_to_gain(p["makeup_db"]).unsqueeze(1)
        return self._sum(y, b)


@register
class MultibandGate(_Multiband):
    """Multiband noise gate / expander: LR4 split, JUCE noise gate per band, summed.

    ``x`` ``(batch, channels, samples)``, params ``(batch, n[, blocks])`` -> ``(batch, channels,
    samples)``."""

    kind = "multiband_gate"
    _band_specs = staticmethod(gate_specs)

    def process(self, x, params, block_size, mode):
        b, _, n = x.shape
        bands = self._split(x, params, block_size)
        p = {k: self._band_param(params, k, n, block_size, x.dtype)
             for k in ("threshold_db", "ratio", "attack_ms", "release_ms")}
        y = juce_noise_gate(bands, p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"],
                            self.sample_rate)
        return self._sum(y, b)
