"""How gradients cross a chain: one entry point for every strategy (DESIGN.md §3; DeepAFx-ST §2.3).

``make_chain_fn(chain, strategy, **options)`` returns a callable ``fn(x, q) -> y`` with ``x``
``(batch, channels, samples)``, ``q`` normalized free parameters ``(batch, P)`` in [0, 1] and ``y``
``(batch, channels, samples)``, differentiable with respect to ``q``:

- ``"ad"``: autodiff through the torch twins, ``chain(x, q, mode=...)`` (``mode="train"`` by
  default; ``"exact"`` is the twin path pedalboard renders). Needs every effect differentiable.
  Also passes gradients to ``x``.
- ``"spsa"``: DeepAFx eq. 2 through a black-box renderer (:mod:`afxcli.grad.spsa`); options
  ``epsilon`` (float or :class:`EpsilonSchedule`), ``draws``, ``seed``/``rng``, and the renderer
  (below). No gradient to ``x``.
- ``"fd"``: central finite differences (:mod:`afxcli.grad.fd`); option ``epsilon``. No gradient to ``x``.
- ``"proxy"``, ``"half_hybrid"``, ``"full_hybrid"``: the neural proxy strategies of DeepAFx-ST
  (NP, NP-HH, NP-FH), provided by :mod:`afxcli.grad.proxy` (imported on first use; its
  ``make_proxy_chain_fn(chain, strategy, **options)`` builds the callable).

Black-box renderer options (``spsa``, ``fd``): ``renderer`` (any object with ``render`` and
``render_perturbed``), else one is built at the chain's sample rate (forward and gradient renders
alike) on the first call, sized by that call's batch: ``stateful`` (default ``True`` for SPSA: a
:class:`BlackBoxLayer` with ``3M`` instances, ``(2K+1)M`` for ``K`` draws; default ``False`` for FD:
a :class:`StatelessRenderer`; ``stateful=True`` for FD builds ``(2P+1)M`` instances), ``workers``
and ``batch_size``. The returned :class:`ChainFn` exposes ``renderer`` (for ``swap``/``reset``),
``epsilon`` and :meth:`ChainFn.step` (advances an ε schedule).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..effects.chain import Chain
from ..errors import AfxError
from .blackbox import BlackBoxLayer, StatelessRenderer
from .fd import DEFAULT_FD_EPSILON, fd_render
from .spsa import DEFAULT_EPSILON, EpsilonSchedule, epsilon_value, spsa_render

__all__ = ["STRATEGIES", "PROXY_STRATEGIES", "ChainFn", "make_chain_fn"]

#: Strategies implemented here.
BLACKBOX_STRATEGIES = ("spsa", "fd")
#: Strategies provided by :mod:`afxcli.grad.proxy`.
PROXY_STRATEGIES = ("proxy", "half_hybrid", "full_hybrid")
STRATEGIES = ("ad", *BLACKBOX_STRATEGIES, *PROXY_STRATEGIES)


class ChainFn:
    """``fn(x (batch, C, T), q (batch, P)) -> y (batch, C, T)`` with gradients to ``q`` by one
    strategy. Attributes: ``chain``, ``strategy``, ``renderer`` (black-box strategies; built on the
    first call unless given), ``epsilon``."""

    def __init__(self, chain: Chain, strategy: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 renderer: Any = None, epsilon: float | EpsilonSchedule | None = None) -> None:
        self.chain = chain
        self.strategy = strategy
        self._fn = fn
        self.renderer = renderer
        self.epsilon = epsilon

    def __call__(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise AfxError(f"{self.strategy}: audio must be (batch, channels, samples), got {tuple(x.shape)}")
        if q.dim() != 2 or q.shape != (x.shape[0], self.chain.n_free):
            raise AfxError(f"{self.strategy}: q must be (batch={x.shape[0]}, {self.chain.n_free}), got {tuple(q.shape)}")
        return self._fn(x, q)

    def step(self) -> None:
        """Advance the ε schedule (if any) by one training step."""
        if isinstance(self.epsilon, EpsilonSchedule):
            self.epsilon.step()

    def close(self) -> None:
        close = getattr(self.renderer, "close", None)
        if close is not None:
            close()


def _epsilon(options: dict, default: float) -> float | EpsilonSchedule:
    eps = options.pop("epsilon", default)
    if not isinstance(eps, EpsilonSchedule):
        epsilon_value(eps)  # validate now, not at the first backward
    return eps


def make_chain_fn(chain: Chain, strategy: str, **options: Any) -> ChainFn:
    """Build the differentiable render of ``chain`` for ``strategy`` (see the module docstring)."""
    if not isinstance(chain, Chain):
        raise AfxError("make_chain_fn needs a Chain (afxcli.effects.chain.Chain)")
    if strategy not in STRATEGIES:
        raise AfxError(f"unknown gradient strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    opts = dict(options)

    if strategy == "ad":
        mode = opts.pop("mode", "train")
        block_size = opts.pop("block_size", None)
        if opts:
            raise AfxError(f"strategy 'ad': unknown option(s) {', '.join(sorted(opts))}")
        if not chain.differentiable:
            bad = [lab for lab, fx in zip(chain.labels, chain.effects) if not fx.differentiable]
            raise AfxError(f"strategy 'ad' needs differentiable effects; {', '.join(bad)} "
                           f"{'is a black box' if len(bad) == 1 else 'are black boxes'} (use spsa, fd or a proxy)")
        return ChainFn(chain, "ad", lambda x, q: chain(x, q, block_size=block_size, mode=mode))

    if strategy in PROXY_STRATEGIES:
        try:
            from .proxy import make_proxy_chain_fn
        except ImportError as e:
            raise AfxError(f"strategy {strategy!r} needs afxcli.grad.proxy ({e})") from None
        return make_proxy_chain_fn(chain, strategy, **opts)

    # black-box strategies
    if strategy == "spsa":
        eps = _epsilon(opts, DEFAULT_EPSILON)
        draws = int(opts.pop("draws", 1))
        if draws < 1:
            raise AfxError(f"spsa: draws must be at least 1, got {draws}")
    else:
        eps = _epsilon(opts, DEFAULT_FD_EPSILON)
        draws = chain.n_free
    rng = opts.pop("rng", None)
    seed = opts.pop("seed", None)
    rng = rng if rng is not None else np.random.default_rng(seed)
    renderer = opts.pop("renderer", None)
    stateful = bool(opts.pop("stateful", strategy == "spsa"))
    workers = int(opts.pop("workers", 1))
    batch_size = opts.pop("batch_size", None)
    if opts:
        raise AfxError(f"strategy {strategy!r}: unknown option(s) {', '.join(sorted(opts))}")

    fn = ChainFn(chain, strategy, lambda x, q: None, renderer=renderer, epsilon=eps)

    def ensure_renderer(batch: int):
        if fn.renderer is None:
            if stateful:
                fn.renderer = BlackBoxLayer(chain, chain.sample_rate, batch_size or batch, workers=workers,
                                            stateful=True, pairs=draws)
            else:
                fn.renderer = StatelessRenderer(chain, chain.sample_rate, workers=workers)
        return fn.renderer

    if strategy == "spsa":
        fn._fn = lambda x, q: spsa_render(x, q, ensure_renderer(x.shape[0]), fn.epsilon, draws, rng)
    else:
        fn._fn = lambda x, q: fd_render(x, q, ensure_renderer(x.shape[0]), fn.epsilon)
    return fn
