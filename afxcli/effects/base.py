"""The contract every afx effect follows.

An effect is an object called like a ``torch.nn.Module`` (it holds no weights, so it is a plain
object, and torch is imported only when its torch form first runs: building effects and rendering
their pedalboard twins needs no torch), built for one sample rate with structural ``options`` (e.g. the
number of EQ peaks). Its parameters are declared once, as :class:`~afxcli.params.ParamSpec` objects,
in a fixed order. The torch form processes ``x`` of shape ``(batch, channels, samples)`` with
physical-unit parameters shaped either

- ``(batch, n_params)``: static, or
- ``(batch, n_params, blocks)``: time-varying, held constant over consecutive blocks of
  ``block_size`` samples (block ``k`` covers samples ``[k*block_size, (k+1)*block_size)``), which is
  exactly how a pedalboard render that updates parameters between ``reset=False`` chunks behaves.

Where pedalboard has the effect, :meth:`Effect.to_pedalboard` builds its **twin**: plugins that
render the same output as :meth:`Effect.forward` in ``mode="exact"``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import AfxError
from ..lazy import torch
from ..params import ParamSpec

#: Registry of effect classes by their ``kind`` (the ``type`` field of a chain spec).
REGISTRY: dict[str, type["Effect"]] = {}


def register(cls: type["Effect"]) -> type["Effect"]:
    """Class decorator adding an effect to :data:`REGISTRY` under ``cls.kind``."""
    if not getattr(cls, "kind", None):
        raise TypeError(f"{cls.__name__} has no kind")
    if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
        raise TypeError(f"effect kind {cls.kind!r} registered twice")
    REGISTRY[cls.kind] = cls
    return cls


def expand_blocks(p: torch.Tensor, n_samples: int, block_size: int | None) -> torch.Tensor:
    """Hold time-varying parameters per block: ``(batch, n, blocks)`` -> ``(batch, n, samples)``.

    Static ``(batch, n)`` input is returned as ``(batch, n, 1)`` (broadcasts over samples).
    ``block_size=None`` means ``ceil(samples / blocks)``. The last block's value extends to the end.
    """
    if p.dim() == 2:
        return p.unsqueeze(-1)
    if p.dim() != 3:
        raise ValueError(f"parameters must be (batch, n) or (batch, n, blocks), got {tuple(p.shape)}")
    blocks = p.shape[-1]
    if block_size is None:
        block_size = max(1, math.ceil(n_samples / blocks))
    idx = torch.clamp(torch.arange(n_samples, device=p.device) // block_size, max=blocks - 1)
    return p.index_select(-1, idx)


class Effect:
    """Base class of afx effects. Subclasses set :attr:`kind` and implement :meth:`_make_specs`
    and :meth:`process`; those with a pedalboard twin implement :meth:`to_pedalboard` (and
    :meth:`apply_pedalboard` if parameters can change between streamed chunks).

    Calling an effect runs :meth:`forward` (like a ``torch.nn.Module``; effects hold no weights,
    so they are plain objects: building one and rendering its pedalboard twin imports no torch)."""

    #: Registry name, used as ``type`` in chain specs.
    kind: ClassVar[str] = ""
    #: Whether :meth:`forward` carries gradients to the parameters (False for black boxes).
    differentiable: ClassVar[bool] = True
    #: Whether :meth:`to_pedalboard` exists for this effect.
    has_twin: ClassVar[bool] = False
    #: Whether the pedalboard twin processes every channel on its own (no linked detection), so
    #: that rendering the channels separately (in parallel threads) gives the same samples.
    channels_independent: ClassVar[bool] = False
    #: Whether the twin with static values is a linear time-invariant filter (a static EQ): a long
    #: static render may then convolve with the twin's own impulse response
    #: (:mod:`afxcli.dsp.irconv`) instead of running it sample by sample.
    linear_time_invariant: ClassVar[bool] = False

    def __init__(self, sample_rate: float, **options: Any) -> None:
        if not (isinstance(sample_rate, (int, float)) and math.isfinite(sample_rate) and sample_rate > 0):
            raise AfxError(f"{self.kind}: invalid sample rate {sample_rate!r}")
        self.sample_rate = float(sample_rate)
        self.options: dict[str, Any] = dict(options)
        self._specs: tuple[ParamSpec, ...] = tuple(self._make_specs())
        names = [s.name for s in self._specs]
        if len(set(names)) != len(names):
            raise TypeError(f"{self.kind}: duplicate parameter names {names}")

    # ----- parameters -------------------------------------------------------------------------
    def _make_specs(self) -> Sequence[ParamSpec]:
        """Parameter specs for ``self.sample_rate`` and ``self.options`` (in a fixed order)."""
        raise NotImplementedError

    @property
    def specs(self) -> tuple[ParamSpec, ...]:
        return self._specs

    @property
    def param_names(self) -> list[str]:
        return [s.name for s in self._specs]

    def spec(self, name: str) -> ParamSpec:
        for s in self._specs:
            if s.name == name:
                return s
        raise AfxError(f"{self.kind} has no parameter {name!r} (it has: {', '.join(self.param_names)})")

    def default_values(self) -> dict[str, float]:
        return {s.name: s.default for s in self._specs}

    def random_values(self, rng: np.random.Generator) -> dict[str, float]:
        """Uniform draw in normalized space (log parameters are log-uniform)."""
        return {s.name: float(s.denormalize(float(rng.uniform()))) for s in self._specs}

    def check_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Complete ``values`` with defaults and validate every one (one-line :class:`AfxError`)."""
        unknown = set(values) - set(self.param_names)
        if unknown:
            raise AfxError(
                f"{self.kind}: unknown parameter(s) {', '.join(sorted(unknown))} "
                f"(it has: {', '.join(self.param_names)})"
            )
        out = self.default_values()
        for k, v in values.items():
            out[k] = self.spec(k).validate(v, where=self.kind)
        return out

    def values_to_tensor(self, values: Mapping[str, float], batch: int = 1,
                         dtype: "torch.dtype | None" = None) -> torch.Tensor:
        """``{name: value}`` -> physical parameter tensor ``(batch, n_params)`` (``dtype`` default float32)."""
        dtype = torch.float32 if dtype is None else dtype
        full = self.check_values(values)
        row = torch.tensor([full[n] for n in self.param_names], dtype=dtype)
        return row.unsqueeze(0).repeat(batch, 1)

    # ----- torch processing -------------------------------------------------------------------
    @property
    def latency_samples(self) -> int:
        """Latency of the pedalboard twin (the torch forward is always time-aligned)."""
        return 0

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None = None,
                mode: str = "exact") -> torch.Tensor:
        """Process ``x`` ``(batch, channels, samples)`` with physical ``params`` ``(batch, n)`` or
        ``(batch, n, blocks)``. ``mode="exact"`` is the inference/twin path; ``mode="train"``
        may use a faster approximation (e.g. frequency-sampled filters) where the effect has one.
        Returns ``(batch, channels, samples)``."""
        if x.dim() != 3:
            raise ValueError(f"{self.kind}: audio must be (batch, channels, samples), got {tuple(x.shape)}")
        if params.dim() not in (2, 3) or params.shape[0] != x.shape[0] or params.shape[1] != len(self._specs):
            raise ValueError(
                f"{self.kind}: params must be (batch={x.shape[0]}, n={len(self._specs)}[, blocks]), "
                f"got {tuple(params.shape)}"
            )
        if mode not in ("exact", "train"):
            raise ValueError(f"mode must be 'exact' or 'train', not {mode!r}")
        return self.process(x, params, block_size, mode)

    def process(self, x: torch.Tensor, params: torch.Tensor, block_size: int | None,
                mode: str) -> torch.Tensor:
        raise NotImplementedError

    def param(self, params: torch.Tensor, name: str, n_samples: int | None = None,
              block_size: int | None = None) -> torch.Tensor:
        """One parameter from a ``(batch, n[, blocks])`` tensor: ``(batch, 1)`` if static, or
        ``(batch, samples)`` held per block if time-varying and ``n_samples`` is given."""
        i = self.param_names.index(name)
        p = params[:, i]
        if p.dim() == 1:
            return p.unsqueeze(-1)
        if n_samples is None:
            return p
        return expand_blocks(p.unsqueeze(1), n_samples, block_size)[:, 0]

    # ----- pedalboard twin --------------------------------------------------------------------
    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        """pedalboard plugins rendering this effect with ``values`` (physical units)."""
        raise AfxError(f"effect {self.kind!r} has no pedalboard twin")

    def update_pedalboard(self, plugins: list, values: Mapping[str, float]) -> None:
        """Set new ``values`` on plugins made by :meth:`to_pedalboard`, keeping their state
        (validated by :meth:`check_values`, then :meth:`apply_pedalboard`)."""
        self.apply_pedalboard(plugins, self.check_values(values))

    def apply_pedalboard(self, plugins: list, checked: Mapping[str, float]) -> None:
        """Set values that :meth:`check_values` already completed and validated on the plugins
        (the streaming renderer validates a whole automation trace at once). Effects that can be
        automated override this."""
        raise AfxError(f"effect {self.kind!r} cannot be automated through pedalboard")

    # ----- description ------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able description: kind, options and parameter specs."""
        return {"type": self.kind, "options": dict(self.options),
                "params": [s.to_dict() for s in self._specs]}

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, sample_rate={self.sample_rate:g}, options={self.options}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Renderer:
    """Stateful block renderer of one effect with fixed-then-updatable values (inference path).

    Audio blocks are NumPy float32 ``(channels, samples)`` at the sample rate the effect was built
    for. ``process(block, reset=False)`` over consecutive blocks must equal one long render.
    Latency conventions (see :mod:`afxcli.render`, which compensates both):

    - ``delays_stream = False`` (pedalboard built-ins): the first ``latency_samples`` of output
      are withheld (a chunk may come back shorter); feeding ``latency_samples`` of zeros flushes.
    - ``delays_stream = True``: each chunk comes back at full length, the whole stream delayed by
      ``latency_samples`` (pedalboard does this for a VST3 instance that was never run nor reset;
      afx's VST3 renderer resets first, so it withholds like the built-ins).
    """

    delays_stream: bool = False

    def set_values(self, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def process(self, block: np.ndarray, reset: bool = False) -> np.ndarray:
        raise NotImplementedError

    @property
    def latency_samples(self) -> int:
        return 0


class PedalboardRenderer(Renderer):
    """Renderer over an effect's pedalboard twin (``Effect.to_pedalboard``)."""

    delays_stream = False

    def __init__(self, effect: "Effect", values: Mapping[str, float]) -> None:
        import pedalboard

        self.effect = effect
        self.values = effect.check_values(values)
        self.plugins = effect.to_pedalboard(self.values)
        self.board = pedalboard.Pedalboard(self.plugins)
        self._latency: int | None = None

    def set_values(self, values: Mapping[str, float]) -> None:
        self.set_checked_values(self.effect.check_values(values))

    def set_checked_values(self, checked: dict[str, float]) -> None:
        """:meth:`set_values` for values already completed and validated by ``check_values``."""
        if checked != self.values:
            self.effect.apply_pedalboard(self.plugins, checked)
            self.values = checked

    def process(self, block: np.ndarray, reset: bool = False) -> np.ndarray:
        return self.board(np.ascontiguousarray(block, dtype=np.float32), self.effect.sample_rate, reset=reset)

    @property
    def latency_samples(self) -> int:
        """Samples a fresh twin withholds in streaming, measured on silence once per effect type,
        sample rate and options (a built-in's latency depends only on those, e.g. the limiter's
        lookahead and true-peak options)."""
        if self._latency is None:
            key = (type(self.effect).__name__, self.effect.sample_rate, repr(sorted(self.effect.options.items())))
            if key not in _LATENCY_CACHE:
                import pedalboard

                probe = pedalboard.Pedalboard(self.effect.to_pedalboard(self.values))
                n = 1 << 15
                out = probe(np.zeros((1, n), np.float32), self.effect.sample_rate, reset=False)
                _LATENCY_CACHE[key] = n - out.shape[-1]
            self._latency = _LATENCY_CACHE[key]
        return self._latency


#: Measured streaming latency of pedalboard twins, by (effect class, sample rate, options).
_LATENCY_CACHE: dict[tuple, int] = {}


def make_renderer(effect: Effect, values: Mapping[str, float]) -> Renderer | None:
    """The inference renderer of ``effect`` (its own ``make_renderer`` if it defines one, else its
    pedalboard twin), or ``None`` when it has neither (then the exact torch form renders it)."""
    own = getattr(effect, "make_renderer", None)
    if own is not None:
        return own(values)
    if effect.has_twin:
        return PedalboardRenderer(effect, values)
    return None
