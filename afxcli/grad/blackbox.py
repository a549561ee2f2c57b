"""Rendering a chain as a black box for gradient estimation (DeepAFx §2.3).

Two renderers share one API, which the SPSA and finite-difference autograd Functions
(:mod:`afxcli.grad.spsa`, :mod:`afxcli.grad.fd`) call::

    y = renderer.render(x_np, q_np)                       # x (M, C, T) float32, q (M, P) in [0, 1]
    y_plus, y_minus = renderer.render_perturbed(x_np, q_plus, q_minus)
                                                          # q± (M, P) or (K, M, P) -> (M|K,M, C, T)

- :class:`BlackBoxLayer` is the **stateful** layer of DeepAFx §2.3: each of the ``M`` batch slots
  owns one *main* chain instance and ``pairs`` pairs of perturbation instances (``+`` and ``-``),
  i.e. ``(2·pairs + 1)·M`` instances (``3M`` for SPSA with one draw, as in the paper; ``(2P + 1)M``
  for finite differences over ``P`` parameters). A slot is fed consecutive frames of one clip until
  :meth:`BlackBoxLayer.swap` / :meth:`BlackBoxLayer.reset` gives it fresh instances. The ``±``
  instances receive the same frames as main, each with its own perturbed values, so their state
  follows the perturbed trajectory and approximates main's; perturbation renders never touch the
  main instance. Slots render in parallel in a thread pool (pedalboard releases the GIL; each
  instance is used by one thread at a time).
- :class:`StatelessRenderer` renders every call from fresh instances with
  :func:`afxcli.render.render_chain` (latency compensated): for batches of independent clips, and
  for finite differences with any number of perturbations. (Chains with a VST3 effect render
  serially there: pedalboard loads VST3 plugins only on the main thread.)

Instances are built with :func:`afxcli.effects.base.make_renderer` (pedalboard twins or VST3
plugins). An effect with no renderer (e.g. ``multiband_compressor``, ``taylor_clipper``) is rendered
by its exact torch form **statelessly**: each frame starts from a fresh state (exact for memoryless
effects such as the clippers; for stateful ones the state is lost at frame boundaries).

Latency: the layer passes the renderers' streaming behaviour through. A chain whose renderers report
a total latency ``L`` (e.g. pedalboard's ``Limiter``, 280 samples at 44.1 kHz) returns each slot's
stream delayed by ``L`` samples (``L`` zeros at the start of a clip), so the concatenated frames
equal one long streamed render of the clip (with the same per-frame values) exactly; the lag
against the input is what DeepAFx's delay-invariant loss (eqs. 3-4) absorbs. Keep the frame length
constant within a clip (pedalboard re-prepares when a call is longer than the ones before).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..effects.base import Effect, make_renderer
from ..effects.chain import Chain
from ..errors import AfxError

__all__ = ["BlackBoxLayer", "StatelessRenderer", "as_chain", "chain_values"]


def as_chain(chain_spec: Any, sample_rate: float) -> Chain:
    """A :class:`Chain` from a spec (dict/list) or an existing chain (its rate must match)."""
    if isinstance(chain_spec, Chain):
        if float(chain_spec.sample_rate) != float(sample_rate):
            raise AfxError(f"chain built for {chain_spec.sample_rate:g} Hz used at {sample_rate:g} Hz")
        return chain_spec
    return Chain(chain_spec, sample_rate)


def chain_values(chain: Chain, q: np.ndarray) -> list[list[dict[str, float]]]:
    """Normalized free parameters ``q`` ``(M, P)`` (clipped to [0, 1]) -> per item, per effect
    physical values ``{name: value}`` (BE-AFX eqs. 7-8 via :meth:`Chain.denormalize`)."""
    q = np.asarray(q, np.float64)
    if q.ndim != 2 or q.shape[1] != chain.n_free:
        raise AfxError(f"expected normalized parameters of shape (batch, {chain.n_free}), got {q.shape}")
    per_effect = chain.denormalize(torch.from_numpy(np.clip(q, 0.0, 1.0)))
    out: list[list[dict[str, float]]] = [[] for _ in range(q.shape[0])]
    for fx, p in zip(chain.effects, per_effect):
        lo = np.array([s.min for s in fx.specs])
        hi = np.array([s.max for s in fx.specs])
        vals = np.clip(p.numpy(), lo, hi)  # guard float rounding of the log scale at the bounds
        names = fx.param_names
        for m in range(q.shape[0]):
            out[m].append(dict(zip(names, vals[m].tolist())))
    return out


def _check_batch(x: np.ndarray, q: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.asarray(q, np.float64)
    if x.ndim != 3:
        raise AfxError(f"audio must be (batch, channels, samples), got shape {x.shape}")
    if q.ndim != 2 or q.shape[0] != x.shape[0]:
        raise AfxError(f"parameters must be (batch={x.shape[0]}, n_free), got shape {q.shape}")
    if batch is not None and x.shape[0] != batch:
        raise AfxError(f"this black-box layer has {batch} slots, got a batch of {x.shape[0]}")
    return x, q


def _stack_perturbed(q_plus: np.ndarray, q_minus: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """q± as ``(K, M, P)`` plus whether the caller passed ``(M, P)``."""
    qp = np.asarray(q_plus, np.float64)
    qm = np.asarray(q_minus, np.float64)
    if qp.shape != qm.shape or qp.ndim not in (2, 3):
        raise AfxError(f"q_plus and q_minus must both be (M, P) or (K, M, P), got {qp.shape} and {qm.shape}")
    single = qp.ndim == 2
    return (qp[None], qm[None], True) if single else (qp, qm, False)


class _Pool:
    """Runs independent tasks serially (``workers == 1``) or in a thread pool."""

    def __init__(self, workers: int) -> None:
        if int(workers) < 1:
            raise AfxError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers)
        self._ex = ThreadPoolExecutor(self.workers, thread_name_prefix="afx-blackbox") if self.workers > 1 else None

    def run(self, tasks: Sequence[Callable[[], Any]]) -> list:
        if self._ex is None or len(tasks) <= 1:
            return [t() for t in tasks]
        return [f.result() for f in [self._ex.submit(t) for t in tasks]]

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True)
            self._ex = None


def _new_renderer(fx: Effect, values: dict[str, float]):
    """A fresh streaming renderer (VST3 instances come from the effect's pool and go back on reset)."""
    from ..effects.plugin import VST3Effect, VST3Renderer

    if isinstance(fx, VST3Effect):
        return VST3Renderer(fx, values, pooled=True)
    return make_renderer(fx, values)


class _Stage:
    """One effect of one chain instance: a streaming renderer whose output is re-timed to exactly
    one frame per frame (withheld latency becomes leading zeros), or the stateless torch form."""

    def __init__(self, fx: Effect, values: dict[str, float]) -> None:
        self.fx = fx
        self.renderer = _new_renderer(fx, values)
        self._buf: np.ndarray | None = None  # output produced but not yet emitted (channels, n)

    def process(self, block: np.ndarray, values: dict[str, float]) -> np.ndarray:
        if self.renderer is None:
            p = torch.tensor([[values[n] for n in self.fx.param_names]], dtype=torch.float64)
            with torch.no_grad():
                y = self.fx(torch.from_numpy(block.astype(np.float64))[None], p, mode="exact")
            return y[0].to(torch.float32).numpy()
        r = self.renderer
        r.set_values(values)
        out = np.asarray(r.process(block, reset=False), dtype=np.float32)
        if self._buf is None:
            lead = 0 if r.delays_stream else int(r.latency_samples)
            self._buf = np.zeros((block.shape[0], lead), np.float32)
        buf = np.concatenate([self._buf, out], axis=-1) if self._buf.shape[-1] else out
        n = block.shape[-1]
        if buf.shape[-1] < n:
            raise AfxError(f"internal: {self.fx.kind} renderer returned {out.shape[-1]} samples for a "
                           f"{n}-sample frame (latency {r.latency_samples})")
        self._buf = buf[:, n:]
        return np.ascontiguousarray(buf[:, :n])

    def close(self) -> None:
        close = getattr(self.renderer, "close", None)
        if close is not None:
            close()
        self.renderer = None


class _Instance:
    """One chain instance (one batch slot's main, ``+`` or ``-`` copy); built on its first frame."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.stages: list[_Stage] | None = None

    def build(self, values: list[dict[str, float]], channels: int) -> None:
        """Create the renderers (on the calling thread: VST3 plugins load only on the main thread)."""
        if self.stages is None:
            self.stages = [_Stage(fx, v) for fx, v in zip(self.chain.effects, values)]
            for st in self.stages:
                if st.renderer is not None:  # VST3 renderers load their instances on the first call
                    st.renderer.process(np.zeros((channels, 0), np.float32))

    def process(self, frame: np.ndarray, values: list[dict[str, float]]) -> np.ndarray:
        self.build(values, frame.shape[0])
        y = frame
        for st, v in zip(self.stages, values):
            y = st.process(y, v)
        return y

    def reset(self) -> None:
        for st in self.stages or []:
            st.close()
        self.stages = None


class BlackBoxLayer:
    """Stateful black-box chain layer with per-item instances (DeepAFx §2.3).

    Args:
        chain_spec: chain spec (dict/list, see :mod:`afxcli.effects.chain`) or a :class:`Chain`.
        sample_rate: rate of every render (the forward and the gradient renders alike).
        batch_size: ``M``, the number of slots.
        workers: threads rendering slots/instances in parallel.
        stateful: ``False`` makes every call render from fresh instances (delegates to
            :class:`StatelessRenderer`, latency compensated).
        pairs: perturbation instance pairs per slot (1 for SPSA with one draw; ``K`` draws need
            ``K``; central finite differences need ``P``; 0 for a forward-only layer of ``M``
            instances, e.g. inference or validation, whose :meth:`render_perturbed` raises).

    Shapes: ``x`` ``(M, channels, frame_samples)`` float32, ``q`` ``(M, P)`` normalized in [0, 1].
    Call :meth:`render` once per frame, then (for a gradient) :meth:`render_perturbed` with the same
    frame. If a frame's perturbed render is skipped (no backward), the ``±`` instances are fed that
    frame at the main values before the next frame, so they never fall out of step (that costs the
    two renders a backward would have; validate with a ``pairs=0`` layer instead). The batch size
    is fixed: every call renders all ``M`` slots.
    """

    def __init__(self, chain_spec: Any, sample_rate: float, batch_size: int, workers: int = 1,
                 stateful: bool = True, pairs: int = 1) -> None:
        self.chain = as_chain(chain_spec, sample_rate)
        self.sample_rate = float(sample_rate)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise AfxError(f"batch_size must be at least 1, got {batch_size}")
        if int(pairs) < 0:
            raise AfxError(f"pairs must be at least 0, got {pairs}")
        self.pairs = int(pairs)
        self.stateful = bool(stateful)
        self._pool = _Pool(workers)
        self.workers = self._pool.workers
        if not self.stateful:
            self._pool.close()
            self._stateless = StatelessRenderer(self.chain, sample_rate, workers=workers)
            self._pool = self._stateless._pool
            self.workers = self._pool.workers
            return
        M = self.batch_size
        self.main = [_Instance(self.chain) for _ in range(M)]
        self.plus = [[_Instance(self.chain) for _ in range(M)] for _ in range(self.pairs)]
        self.minus = [[_Instance(self.chain) for _ in range(M)] for _ in range(self.pairs)]
        self._pending: tuple[np.ndarray, list] | None = None  # last main frame not yet given to ±
        self.frames_rendered = np.zeros(M, np.int64)  # frames since each slot's last swap

    @property
    def n_instances(self) -> int:
        """Chain instances held: ``(2·pairs + 1)·M``."""
        return (2 * self.pairs + 1) * self.batch_size

    # ----- main path ----------------------------------------------------------------------------
    def render(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Render the next frame of every slot through its main instance: ``(M, C, T)``."""
        if not self.stateful:
            return self._stateless.render(x, q)
        x, q = _check_batch(x, q, self.batch_size)
        self._catch_up()
        vals = chain_values(self.chain, q)
        for m, inst in enumerate(self.main):
            inst.build(vals[m], x.shape[1])
        ys = self._pool.run([(lambda m=m: self.main[m].process(x[m], vals[m])) for m in range(self.batch_size)])
        self._pending = (x.copy(), vals) if self.pairs else None
        self.frames_rendered += 1
        return np.stack(ys)

    def render_perturbed(self, x: np.ndarray, q_plus: np.ndarray, q_minus: np.ndarray):
        """Render the frame last given to :meth:`render` through the ``±`` instances at ``q_plus`` /
        ``q_minus`` ``(M, P)`` (pair 0) or ``(K, M, P)`` (pairs ``0..K-1``, ``K <= pairs``; the other
        pairs advance at the main values). Returns ``(y_plus, y_minus)`` shaped like q± with
        ``(C, T)`` appended. The main instances are not touched."""
        if not self.stateful:
            return self._stateless.render_perturbed(x, q_plus, q_minus)
        qp, qm, single = _stack_perturbed(q_plus, q_minus)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.pairs == 0:
            raise AfxError("this black-box layer is forward-only (pairs=0): no perturbation instances")
        if self._pending is None or self._pending[0].shape != x.shape or not np.array_equal(self._pending[0], x):
            raise AfxError("render_perturbed must follow render() of the same frame (the ± instances "
                           "follow the main stream frame by frame)")
        K = qp.shape[0]
        if K > self.pairs:
            raise AfxError(f"{K} perturbation draws need {K} instance pairs per slot; this layer has "
                           f"{self.pairs} (BlackBoxLayer(..., pairs={K}))")
        M = self.batch_size
        main_vals = self._pending[1]
        tasks = []
        for k in range(self.pairs):
            if k < K:
                _check_batch(x, qp[k], M)
                _check_batch(x, qm[k], M)
                vp, vm = chain_values(self.chain, qp[k]), chain_values(self.chain, qm[k])
            else:
                vp = vm = main_vals
            for m in range(M):
                self.plus[k][m].build(vp[m], x.shape[1])
                self.minus[k][m].build(vm[m], x.shape[1])
                tasks.append(lambda k=k, m=m, v=vp[m]: self.plus[k][m].process(x[m], v))
                tasks.append(lambda k=k, m=m, v=vm[m]: self.minus[k][m].process(x[m], v))
        ys = self._pool.run(tasks)
        self._pending = None
        C, T = x.shape[1:]
        y = np.stack(ys).reshape(self.pairs, M, 2, C, T)[:K]
        y_plus, y_minus = y[:, :, 0], y[:, :, 1]
        return (y_plus[0], y_minus[0]) if single else (y_plus, y_minus)

    def _catch_up(self) -> None:
        """Feed a pending frame to the ``±`` instances at the main values (no perturbed render came)."""
        if self._pending is None:
            return
        x, vals = self._pending
        for side in (self.plus, self.minus):
            for row in side:
                for m, inst in enumerate(row):
                    inst.build(vals[m], x.shape[1])
        tasks = [lambda inst=inst, m=m: inst.process(x[m], vals[m])
                 for side in (self.plus, self.minus) for row in side for m, inst in enumerate(row)]
        self._pool.run(tasks)
        self._pending = None

    # ----- clip swaps ---------------------------------------------------------------------------
    def reset(self, items: Iterable[int] | None = None) -> None:
        """Give slots ``items`` (default: all) fresh instances (main and ``±``): the next frame
        starts a new clip from a cleared state."""
        if not self.stateful:
            return
        idx = range(self.batch_size) if items is None else [int(i) for i in items]
        self._catch_up()
        for m in idx:
            if not 0 <= m < self.batch_size:
                raise AfxError(f"slot {m} out of range (batch of {self.batch_size})")
            self.main[m].reset()
            for k in range(self.pairs):
                self.plus[k][m].reset()
                self.minus[k][m].reset()
            self.frames_rendered[m] = 0

    def swap(self, item_index: int) -> None:
        """Slot ``item_index`` starts a new clip (fresh instances) with its next frame."""
        self.reset([item_index])

    def close(self) -> None:
        """Reset all instances (VST3 instances go back to their effect's pool) and stop the threads."""
        self.reset()
        self._pool.close()

    def __enter__(self) -> "BlackBoxLayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StatelessRenderer:
    """Renders every call from fresh instances (:func:`afxcli.render.render_chain`, latency
    compensated, output aligned with the input). Same API as :class:`BlackBoxLayer`; any number
    of perturbations per call (finite differences need ``P``).

    Shapes: ``x`` ``(M, C, T)`` float32, ``q`` ``(M, P)``; ``q±`` ``(M, P)`` or ``(K, M, P)``.
    """

    stateful = False

    def __init__(self, chain_spec: Any, sample_rate: float, workers: int = 1) -> None:
        from ..effects.plugin import VST3Effect

        self.chain = as_chain(chain_spec, sample_rate)
        self.sample_rate = float(sample_rate)
        # VST3 plugins load only on the main thread and every render here loads fresh ones:
        # chains with a VST3 effect render serially.
        if any(isinstance(fx, VST3Effect) for fx in self.chain.effects):
            workers = 1
        self._pool = _Pool(workers)
        self.workers = self._pool.workers

    def _render_one(self, audio: np.ndarray, values: list[dict[str, float]]) -> np.ndarray:
        from ..render import render_chain

        return render_chain(self.chain, audio, values)

    def render(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        x, q = _check_batch(x, q)
        vals = chain_values(self.chain, q)
        return np.stack(self._pool.run([(lambda m=m: self._render_one(x[m], vals[m])) for m in range(x.shape[0])]))

    def render_perturbed(self, x: np.ndarray, q_plus: np.ndarray, q_minus: np.ndarray):
        qp, qm, single = _stack_perturbed(q_plus, q_minus)
        x = np.ascontiguousarray(x, dtype=np.float32)
        K, M = qp.shape[:2]
        tasks = []
        for k in range(K):
            _check_batch(x, qp[k])
            _check_batch(x, qm[k])
            vp, vm = chain_values(self.chain, qp[k]), chain_values(self.chain, qm[k])
            for m in range(M):
                tasks.append(lambda m=m, v=vp[m]: self._render_one(x[m], v))
                tasks.append(lambda m=m, v=vm[m]: self._render_one(x[m], v))
        C, T = x.shape[1:]
        y = np.stack(self._pool.run(tasks)).reshape(K, M, 2, C, T)
        y_plus, y_minus = y[:, :, 0], y[:, :, 1]
        return (y_plus[0], y_minus[0]) if single else (y_plus, y_minus)

    def reset(self, items: Iterable[int] | None = None) -> None:
        """Nothing to reset (every call starts fresh)."""

    def swap(self, item_index: int) -> None:
        """Nothing to swap (every call starts fresh)."""

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "StatelessRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
