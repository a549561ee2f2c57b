"""Effect chains built from JSON specs.

A chain spec is a JSON object::

    {"format": "afx-chain", "version": 1,
     "effects": [
        {"type": "peq", "label": "eq", "options": {"n_peaks": 4},
         "fixed": {"low_shelf_q": 0.707},
         "free": {"peak1_gain_db": {"min": -6, "max": 6}, "peak1_freq_hz": {}}},
        {"type": "compressor", "free": "all"},
        {"type": "vst3", "options": {"path": "/usr/lib/vst3/ZaMaximX2.vst3"}, "free": []}
     ]}

Per effect: ``type`` (a registered kind), optional ``label`` (unique within the chain; default the
type, suffixed ``_2``, ``_3`` … on repeats), ``options`` (structural, e.g. number of bands or a
plugin path), ``fixed`` (physical values that never change) and ``free`` (the parameters a model
predicts: ``"all"`` (default), a list of names, or a mapping name -> ``{"min", "max"}`` range
overrides). A parameter that is neither fixed nor free keeps its default. Fixed values win over
``free``. A frequency override above what the chain's rate allows (``0.45·rate``,
:func:`afxcli.params.max_freq_hz`) is lowered to that limit (a band's range may shrink to one
value), so one chain file — a shipped model's chain among them — works at every rate; any other
out-of-range override is an error.

Free parameters are addressed as ``"<label>.<param>"`` and ordered effect by effect, in each effect's
spec order. A model predicts them normalized to [0, 1] (:meth:`Chain.denormalize`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import AfxError
from ..lazy import torch
from ..params import ParamSpec
from . import create

CHAIN_FORMAT = "afx-chain"
CHAIN_VERSION = 1


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class FreeParam:
    """A parameter a model controls: effect index, qualified key and its (possibly narrowed) spec."""

    effect_index: int
    key: str  # "<label>.<param>"
    spec: ParamSpec


def _labels(effects: Sequence[Mapping[str, Any]]) -> list[str]:
    labels: list[str] = []
    counts: dict[str, int] = {}
    for e in effects:
        base = str(e.get("label") or e["type"])
        counts[base] = counts.get(base, 0) + 1
        label = base if counts[base] == 1 else f"{base}_{counts[base]}"
        if label in labels:
            raise AfxError(f"chain: duplicate effect label {label!r}")
        labels.append(label)
    return labels


def normalize_spec(spec: Any) -> dict:
    """Validate a chain spec (dict or list of effect entries) and return it in canonical form."""
    if isinstance(spec, list):
        spec = {"effects": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("effects"), list) or not spec["effects"]:
        raise AfxError("chain spec must be an object with a non-empty 'effects' list")
    if spec.get("format", CHAIN_FORMAT) != CHAIN_FORMAT:
        raise AfxError(f"not a chain spec (format {spec.get('format')!r}, expected {CHAIN_FORMAT!r})")
    if int(spec.get("version", CHAIN_VERSION)) > CHAIN_VERSION:
        raise AfxError(f"chain spec version {spec.get('version')} is newer than this afx understands")
    effects = []
    for i, e in enumerate(spec["effects"]):
        if not isinstance(e, dict) or "type" not in e:
            raise AfxError(f"chain effect #{i + 1} must be an object with a 'type'")
        unknown = set(e) - {"type", "label", "options", "fixed", "free"}
        if unknown:
            raise AfxError(f"chain effect #{i + 1} ({e['type']}): unknown field(s) {', '.join(sorted(unknown))}")
        free = e.get("free", "all")
        if not (free == "all" or isinstance(free, (list, dict))):
            raise AfxError(f"chain effect #{i + 1} ({e['type']}): 'free' must be \"all\", a list or an object")
        effects.append({"type": str(e["type"]), **({"label": str(e["label"])} if e.get("label") else {}),
                        "options": dict(e.get("options") or {}), "fixed": dict(e.get("fixed") or {}),
                        "free": free})
    return {"format": CHAIN_FORMAT, "version": CHAIN_VERSION, "effects": effects}


class Chain:
    """A series of effects at one sample rate, with the split into fixed and free parameters.

    ``forward(x, q)`` (or calling the chain) takes audio ``(batch, channels, samples)`` and normalized
    free parameters ``(batch, n_free)`` or ``(batch, n_free, blocks)`` and returns ``(batch, channels,
    samples)``. A plain object (no weights): building a chain imports no torch.
    """

    def __init__(self, spec: Any, sample_rate: float) -> None:
        self.spec = normalize_spec(spec)
        self.sample_rate = float(sample_rate)
        entries = self.spec["effects"]
        self.labels = _labels(entries)
        self.effects = [create(e["type"], sample_rate, **e["options"]) for e in entries]
        self.fixed: list[dict[str, float]] = []
        free: list[FreeParam] = []
        for i, (e, fx, label) in enumerate(zip(entries, self.effects, self.labels)):
            fixed = fx.check_values(e["fixed"]) if e["fixed"] else {}
            self.fixed.append({k: fixed[k] for k in e["fixed"]})
            if e["free"] == "all":
                wanted: dict[str, dict] = {n: {} for n in fx.param_names}
            elif isinstance(e["free"], list):
                wanted = {str(n): {} for n in e["free"]}
            else:
                wanted = {str(n): dict(r or {}) for n, r in e["free"].items()}
            for name in fx.param_names:  # spec order
                if name not in wanted or name in e["fixed"]:
                    continue
                r = wanted.pop(name)
                ps = fx.spec(name)
                if r:
                    bad = set(r) - {"min", "max"}
                    if bad:
                        raise AfxError(f"chain {label}.{name}: range override takes only min/max, not {sorted(bad)}")
                    lo_req, hi_req = r.get("min", ps.min), r.get("max", ps.max)
                    if ps.unit == "Hz":  # the rate's upper limit lowers the range, never refuses it
                        lo_req, hi_req = (min(float(v), ps.max) if _finite(v) else v for v in (lo_req, hi_req))
                    lo = ps.validate(lo_req, where=label)
                    hi = ps.validate(hi_req, where=label)
                    ps = ps.with_range(lo, hi)
                free.append(FreeParam(i, f"{label}.{name}", ps))
            if wanted and e["free"] != "all":
                fx.spec(next(iter(wanted)))  # raises a one-line error naming the unknown parameter
        self.free = free

    # ----- parameter bookkeeping ------------------------------------------------------------
    @property
    def n_free(self) -> int:
        return len(self.free)

    @property
    def free_keys(self) -> list[str]:
        return [f.key for f in self.free]

    @property
    def free_specs(self) -> list[ParamSpec]:
        return [f.spec for f in self.free]

    def keys(self) -> list[str]:
        """Every parameter of every effect as ``"<label>.<param>"``, in chain order."""
        return [f"{lab}.{n}" for lab, fx in zip(self.labels, self.effects) for n in fx.param_names]

    def base_values(self) -> list[dict[str, float]]:
        """Per effect: defaults overridden by fixed values (physical units)."""
        out = []
        for fx, fixed in zip(self.effects, self.fixed):
            v = fx.default_values()
            v.update(fixed)
            out.append(v)
        return out

    def denormalize(self, q: torch.Tensor) -> list[torch.Tensor]:
        """Normalized free parameters ``(batch, n_free[, blocks])`` -> per-effect physical
        parameter tensors ``(batch, n_params[, blocks])`` (fixed and default values filled in)."""
        if q.dim() not in (2, 3) or q.shape[1] != self.n_free:
            raise ValueError(f"expected (batch, {self.n_free}[, blocks]) normalized parameters, got {tuple(q.shape)}")
        base = self.base_values()
        per_effect: list[list[torch.Tensor]] = []
        tail = q.shape[2:]
        for fx, vals in zip(self.effects, base):
            cols = [torch.full((q.shape[0], *tail), float(vals[n]), dtype=q.dtype, device=q.device)
                    for n in fx.param_names]
            per_effect.append(cols)
        for j, f in enumerate(self.free):
            idx = self.effects[f.effect_index].param_names.index(f.key.split(".", 1)[1])
            per_effect[f.effect_index][idx] = f.spec.denormalize(q[:, j])
        return [torch.stack(cols, dim=1) for cols in per_effect]

    def normalize_values(self, values: Sequence[Mapping[str, float]]) -> torch.Tensor:
        """Per-effect physical values -> normalized free vector ``(1, n_free)``."""
        row = []
        for f in self.free:
            name = f.key.split(".", 1)[1]
            row.append(float(f.spec.normalize(float(values[f.effect_index][name]))))
        return torch.tensor([row], dtype=torch.float32)

    def values_from_flat(self, flat: Mapping[str, float]) -> list[dict[str, float]]:
        """``{"<label>.<param>": value}`` (any subset) -> complete per-effect values (validated)."""
        base = self.base_values()
        index = {lab: i for i, lab in enumerate(self.labels)}
        for key, v in flat.items():
            lab, _, name = key.partition(".")
            if lab not in index:
                raise AfxError(f"unknown effect label {lab!r} in {key!r} (chain has: {', '.join(self.labels)})")
            fx = self.effects[index[lab]]
            base[index[lab]][name] = fx.spec(name).validate(v, where=lab)
        return base

    @staticmethod
    def flatten(labels: Sequence[str], values: Sequence[Mapping[str, float]]) -> dict[str, float]:
        return {f"{lab}.{k}": float(v) for lab, vals in zip(labels, values) for k, v in vals.items()}

    # ----- processing -----------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x: torch.Tensor, q: torch.Tensor, block_size: int | None = None,
                mode: str = "train") -> torch.Tensor:
        """Torch render: ``x`` ``(batch, channels, samples)``, ``q`` normalized ``(batch, n_free[, blocks])``."""
        return self.forward_physical(x, self.denormalize(q), block_size, mode)

    def forward_physical(self, x: torch.Tensor, params: Sequence[torch.Tensor],
                         block_size: int | None = None, mode: str = "train") -> torch.Tensor:
        """Torch render with per-effect physical parameters ``(batch, n_i[, blocks])``."""
        for fx, p in zip(self.effects, params):
            x = fx(x, p.to(x.dtype), block_size=block_size, mode=mode)
        return x

    @property
    def differentiable(self) -> bool:
        return all(fx.differentiable for fx in self.effects)

    def describe(self) -> dict:
        """The spec plus each effect's resolved parameter specs (for traces and reports)."""
        return {**self.spec, "resolved": [
            {"label": lab, **fx.describe()} for lab, fx in zip(self.labels, self.effects)]}


def load_chain_spec(path: str | Path) -> dict:
    """Read and validate a chain spec JSON file (one-line errors naming the file)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise AfxError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AfxError(f"{p}: not a readable JSON chain spec ({e.__class__.__name__})") from None
    try:
        return normalize_spec(data)
    except AfxError as e:
        raise AfxError(f"{p}: {e}") from None
