"""Inference rendering of a chain: pedalboard (or a plugin) where an effect has a renderer, the exact
torch form where it does not; static values or a parameter trace; any sample rate; full length.

Automation streams blocks through each effect with ``reset=False`` and sets new values at block
boundaries (DESIGN.md §2: pedalboard applies changed parameters at the chunk boundary). Latency is
compensated so the output has the input's exact length and alignment:

- pedalboard built-ins (and VST3 plugins after ``reset()``, which afx's plugin renderer always
  does first) withhold their latency ``L`` in streaming: zeros are fed at the end to flush, and the
  output is the first ``T`` samples;
- a renderer whose stream comes back delayed by ``L`` (``delays_stream``; measured with pedalboard
  0.9.26 only for a never-run, never-reset VST3 instance) gets ``L`` zeros at the end and its first
  ``L`` samples dropped.

Effects are rendered one after the other over the whole signal (effects are causal and in series,
so this equals interleaving them block by block).

An automation trace is validated once per parameter, vectorized (:func:`check_block_values`: the
same completion, range check and clipping as ``Effect.check_values`` on every block), and the
per-block settings are handed to pedalboard twins without validating them again
(``PedalboardRenderer.set_checked_values``): the output is bit-identical to validating block by block.
Consecutive effects whose twins treat every channel on its own (``Effect.channels_independent``:
EQ, compressor, gain, clippers; not the limiter, whose detector links the channels) render
multichannel audio one channel per thread (pedalboard releases the GIL), which gives the same
samples as rendering the channels together (tests); consecutive latency-free twins with automation
stream through one board (one pedalboard call per block instead of one per effect and block).

A static EQ (``Effect.linear_time_invariant``) on at least :data:`IR_RENDER_MIN_SAMPLES` samples is
rendered as the FFT convolution with its twin's impulse response (:mod:`afxcli.dsp.irconv`: the
twin's float32 coefficients, cascaded in float64): the same filter, ~5× faster than its biquads
for the 29-band matched EQ of ``afx master`` (``benchmarks/render_speed.py``), and closer to the
exact recursion than pedalboard's float32 one (within 6e-4 of pedalboard's samples on loud music).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .effects.base import Effect, PedalboardRenderer, make_renderer
from .cpus import free_cores
from .effects.chain import Chain
from .errors import AfxError
from .lazy import torch
from .trace import ParameterTrace, trace_specs

#: Default control block for automation (samples at the render rate).
DEFAULT_BLOCK_SIZE = 256
#: A static linear time-invariant effect (``Effect.linear_time_invariant``: a static EQ) on at least
#: this many samples renders by FFT convolution with its twin's impulse response
#: (:func:`render_by_impulse_response`); shorter audio runs the twin itself.
IR_RENDER_MIN_SAMPLES = 1 << 17


def check_block_values(effect: Effect, arrays: Mapping[str, np.ndarray | float],
                       n_blocks: int) -> dict[str, np.ndarray]:
    """``Effect.check_values`` on every block at once: ``arrays`` maps parameter names to one value
    or ``(n_blocks,)`` values; returns every parameter of ``effect`` as ``(n_blocks,)`` float64
    (missing ones at their defaults), each checked finite and inside its range with
    ``ParamSpec.validate``'s tolerance and clipped into it. The first offending block raises the
    one-line error ``check_values`` would."""
    unknown = set(arrays) - set(effect.param_names)
    if unknown:
        effect.check_values({k: 0.0 for k in unknown})  # raises the one-line error naming them
    out = {}
    for spec in effect.specs:
        if spec.name not in arrays:
            out[spec.name] = np.full(n_blocks, float(spec.default))
            continue
        a = np.broadcast_to(np.asarray(arrays[spec.name], dtype=np.float64), (n_blocks,))
        out[spec.name] = spec.validate_array(a, where=effect.kind)
    return out


def checked_blocks(effect: Effect, arrays: Mapping[str, np.ndarray | float], n_blocks: int) -> list[dict[str, float]]:
    """Per-block value dicts (Python floats, ``effect.param_names`` order) of :func:`check_block_values`."""
    checked = check_block_values(effect, arrays, n_blocks)
    names = effect.param_names
    rows = np.stack([checked[n] for n in names], axis=1).tolist()
    return [dict(zip(names, r)) for r in rows]


def stream_aligned(renderer, feeds: Iterable[np.ndarray], n: int, channels: int,
                   flush_chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Run ``renderer`` (``reset=False``) over the input blocks ``feeds`` (``(channels, k)`` each,
    ``n`` samples in all), then over silence in blocks of at most ``flush_chunk`` samples until the
    samples it withholds (its latency) are out. Yields ``(start, piece)`` in order: the output
    samples that belong at ``start … start + piece length`` of the aligned ``(channels, n)``
    output (latency compensated as the module notes say). ``flush_chunk`` should not exceed the
    longest block fed: pedalboard re-prepares (and withholds its latency again) when a call exceeds
    the block size it saw."""
    lat = int(renderer.latency_samples)
    skip = lat if renderer.delays_stream else 0      # stream samples before the aligned output
    got = 0                                          # stream samples out so far

    def aligned(o: np.ndarray):
        nonlocal got
        lo = got - skip
        got += o.shape[-1]
        s0, s1 = max(lo, 0), min(got - skip, n)
        return (s0, o[:, s0 - lo:s1 - lo]) if s1 > s0 else None

    for block in feeds:
        piece = aligned(renderer.process(block, reset=False))
        if piece is not None:
            yield piece
    chunk = max(1, int(flush_chunk))
    for _ in range(64 + 4 * lat // chunk):
        if got >= n + skip:
            break
        piece = aligned(renderer.process(np.zeros((channels, min(chunk, max(n + skip - got, 1))), np.float32),
                                         reset=False))
        if piece is not None:
            yield piece
    if got < n + skip:
        raise AfxError(f"internal: renderer returned {max(got - skip, 0)} samples for {n} (latency {lat})")


def _stream(renderer, audio: np.ndarray, blocks: Sequence[Mapping[str, float]] | None,
            block_size: int, checked: bool = False) -> np.ndarray:
    """Feed ``audio`` ``(channels, samples)`` through ``renderer`` in blocks, updating values per
    block (``blocks[k]`` for block ``k``; ``None`` = one block), flush and align
    (:func:`stream_aligned`). ``checked``: the blocks come from :func:`checked_blocks` (a
    pedalboard twin then skips validating them)."""
    c, n = audio.shape[0], audio.shape[-1]
    if blocks is None:
        feeds: Iterable[np.ndarray] = [audio]
    else:
        setter = renderer.set_checked_values if checked and isinstance(renderer, PedalboardRenderer) \
            else renderer.set_values

        def per_block() -> Iterator[np.ndarray]:
            for k, vals in enumerate(blocks):
                seg = audio[:, k * block_size:(k + 1) * block_size]
                if seg.shape[-1] == 0:
                    break
                setter(vals)
                yield seg

        feeds = per_block()
    y = np.empty((c, n), np.float32)
    flush = n if blocks is None else min(block_size, n)
    for s0, piece in stream_aligned(renderer, feeds, n, c, flush):
        y[:, s0:s0 + piece.shape[-1]] = piece
    return y


def render_effect(effect: Effect, audio: np.ndarray, values: Mapping[str, float] | None = None,
                  blocks: Sequence[Mapping[str, float]] | None = None,
                  block_size: int = DEFAULT_BLOCK_SIZE, checked: bool = False) -> np.ndarray:
    """Render one effect on ``audio`` ``(channels, samples)`` float32 with static ``values`` or
    per-block ``blocks`` (list of value dicts, one per ``block_size`` samples; ``checked``: already
    complete and validated, as :func:`checked_blocks` gives). Returns ``(channels, samples)`` float32."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    first = effect.check_values(values if blocks is None else blocks[0])
    if blocks is None and _by_impulse_response(effect, audio.shape[-1]):
        y = render_by_impulse_response(effect, first, audio)
        if y is not None:
            return y
    renderer = make_renderer(effect, first)
    if renderer is not None:
        if blocks is not None and not checked:
            blocks = [effect.check_values(b) for b in blocks]
        return _stream(renderer, audio, blocks, block_size, checked=blocks is not None)
    # exact torch form
    names = effect.param_names
    if blocks is None:
        p = torch.tensor([[first[nm] for nm in names]], dtype=torch.float64)
    else:
        full = blocks if checked else [effect.check_values(b) for b in blocks]
        p = torch.tensor([[[b[nm] for b in full] for nm in names]], dtype=torch.float64)
    with torch.no_grad():
        y = effect(torch.from_numpy(audio).to(torch.float64).unsqueeze(0), p,
                   block_size=None if blocks is None else block_size, mode="exact")
    return y[0].to(torch.float32).numpy()


def _by_impulse_response(effect: Effect, n_samples: int) -> bool:
    """Whether a static render of ``effect`` on ``n_samples`` goes by :func:`render_by_impulse_response`."""
    return (bool(getattr(effect, "linear_time_invariant", False)) and n_samples >= IR_RENDER_MIN_SAMPLES
            and callable(getattr(effect, "twin_sections", None)))


def render_by_impulse_response(effect: Effect, values: Mapping[str, float], audio: np.ndarray) -> np.ndarray | None:
    """``audio`` ``(channels, samples)`` float32 through a static EQ (``effect.twin_sections``: its
    pedalboard twin's coefficients) as the convolution with that cascade's impulse response
    (:mod:`afxcli.dsp.irconv`); ``None`` when the response does not decay (the caller then runs the
    twin). FFTs use every free core in the main thread, one in a render thread (those already run
    one channel each)."""
    import threading

    from .dsp.irconv import fft_convolve, sections_impulse_response

    h = sections_impulse_response(effect.twin_sections(values))
    if h is None:
        return None
    workers = free_cores() if threading.current_thread() is threading.main_thread() else 1
    return fft_convolve(audio, h, workers=workers)


def _per_channel(fx: Effect) -> bool:
    return bool(fx.channels_independent) and fx.has_twin and getattr(fx, "make_renderer", None) is None


def _combinable(fx: Effect) -> bool:
    """A pedalboard twin without latency: streaming several such effects block by block through one
    board gives every plugin the same input and updates as streaming them one after the other."""
    if not (fx.has_twin and getattr(fx, "make_renderer", None) is None):
        return False
    return int(PedalboardRenderer(fx, fx.default_values()).latency_samples) == 0


#: Shortest audio (samples) that :func:`_stream_together` splits into a two-thread pipeline.
PIPELINE_MIN_SAMPLES = 1 << 20


def _stream_together(group: Sequence[tuple], audio: np.ndarray, block_size: int,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Stream ``audio`` through the twins of the ``(effect, static values | None, checked blocks |
    None)`` jobs chained in one pedalboard board (one call per block instead of one per effect and
    block), each effect's values set per block; every twin has zero latency (:func:`_combinable`).

    On long audio in the main thread with a free core (a mono file: multichannel runs go one channel
    per thread instead, :func:`_render_jobs`), the first effect streams in a thread of its own, one
    block ahead of the board of the others (a two-stage pipeline: pedalboard releases the GIL while it
    renders). The same blocks reach every plugin with the same updates either way, so the samples
    are the same (tested). ``out``: a float32 ``(channels, samples)`` array (not ``audio``) that the
    result is written into and returned; by default a new one."""
    import threading

    import pedalboard

    audio = np.ascontiguousarray(audio, dtype=np.float32)
    renderers, schedules = [], []
    for fx, vals, blocks in group:
        renderers.append(PedalboardRenderer(fx, fx.check_values(vals) if blocks is None else blocks[0]))
        schedules.append(blocks)
    sr = renderers[0].effect.sample_rate
    n = audio.shape[-1]
    n_blocks = min(len(b) for b in schedules if b is not None)
    stages = [list(range(len(renderers)))]
    # in the main thread only: per-channel render threads already keep the cores busy
    if (len(renderers) > 1 and n >= PIPELINE_MIN_SAMPLES and threading.current_thread() is threading.main_thread()
            and free_cores() > 1):
        stages = [[0], list(range(1, len(renderers)))]
    boards = [pedalboard.Pedalboard([p for i in st for p in renderers[i].plugins]) for st in stages]

    def step(stage: int, k: int, seg: np.ndarray) -> np.ndarray:
        for i in stages[stage]:
            if schedules[i] is not None and k < n_blocks:   # past the automation: the last values stay
                renderers[i].set_checked_values(schedules[i][k])
        return boards[stage](seg, sr, reset=False)

    segs = [audio[:, k * block_size:(k + 1) * block_size] for k in range(n_blocks)]
    segs = [seg for seg in segs if seg.shape[-1]]
    got = sum(seg.shape[-1] for seg in segs)
    if got < n:  # the automation stops short of the audio: the rest with the last values
        segs.append(np.ascontiguousarray(audio[:, got:]))
    y = np.empty((audio.shape[0], n), np.float32) if out is None else out   # blocks land in place
    pos = 0

    def put(o: np.ndarray) -> None:
        nonlocal pos
        if pos + o.shape[-1] > n:
            raise AfxError(f"internal: combined render returned more than {n} samples")
        y[:, pos:pos + o.shape[-1]] = o
        pos += o.shape[-1]

    if len(stages) == 1:
        for k, seg in enumerate(segs):
            put(step(0, k, seg))
    else:
        import queue

        firsts: queue.SimpleQueue = queue.SimpleQueue()

        def first_stage() -> None:
            try:
                for k, seg in enumerate(segs):
                    firsts.put(step(0, k, seg))
            except BaseException as e:  # noqa: BLE001 - raised again in the calling thread
                firsts.put(e)

        worker = threading.Thread(target=first_stage, name="afx-render-stage", daemon=True)
        worker.start()
        try:
            for k in range(len(segs)):
                a = firsts.get()
                if isinstance(a, BaseException):
                    raise a
                put(step(1, k, a))
        finally:
            worker.join()
    if pos != n:
        raise AfxError(f"internal: combined render returned {pos} samples for {n}")
    return y


def _render_jobs(jobs: Sequence[tuple], y: np.ndarray, block_size: int, threads: int | None = None) -> np.ndarray:
    """Render ``(effect, static values | None, checked blocks | None)`` jobs in series; runs of
    :func:`_per_channel` effects on multichannel audio go one channel per thread (at most
    ``threads``, default :func:`free_cores`), except a static EQ on long audio, which convolves
    every channel in one call (:func:`render_by_impulse_response`)."""
    threads = min(y.shape[0], threads or free_cores())

    def run(group: Sequence[tuple], a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if len(group) > 1 and any(b is not None for _, _, b in group) and all(_combinable(fx) for fx, _, _ in group):
            return _stream_together(group, a, block_size, out)
        for fx, vals, blocks in group:
            a = render_effect(fx, a, vals) if blocks is None else \
                render_effect(fx, a, blocks=blocks, block_size=block_size, checked=True)
        if out is not None:
            out[...] = a
            return out
        return a

    def threaded(job: tuple) -> bool:
        # a static EQ on long audio convolves all channels at once (render_by_impulse_response):
        # it ends a per-channel run, so its response is computed once, not once per channel thread
        fx, _, blocks = job
        return _per_channel(fx) and not (blocks is None and _by_impulse_response(fx, y.shape[-1]))

    i = 0
    while i < len(jobs):
        j = i
        while j < len(jobs) and threaded(jobs[j]):
            j += 1
        if threads > 1 and j > i:
            from concurrent.futures import ThreadPoolExecutor

            group, src = jobs[i:j], y
            y = np.empty_like(src)   # each channel's result lands in place: no second whole-length copy

            def one_channel(c: int) -> None:
                run(group, src[c:c + 1], y[c:c + 1])

            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="afx-render") as ex:
                list(ex.map(one_channel, range(src.shape[0])))
            del src
            i = j
        else:
            y = run(jobs[i:max(j, i + 1)], y)
            i = max(j, i + 1)
    return y


def render_chain(chain: Chain, audio: np.ndarray,
                 values: Sequence[Mapping[str, float]] | ParameterTrace | None = None,
                 block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Render ``audio`` ``(channels, samples)`` (at ``chain.sample_rate``) through ``chain``.

    ``values``: per-effect physical values (static), a :class:`ParameterTrace` (automation; it is
    resampled to ``block_size`` control blocks at the chain's rate, so a trace made at another
    rate or hop applies at the same times), or ``None`` for fixed/default values.
    Returns float32 ``(channels, samples)``, same length and alignment as the input.
    """
    if audio.ndim != 2:
        raise AfxError(f"audio must be (channels, samples), got shape {audio.shape}")
    y = np.ascontiguousarray(audio, dtype=np.float32)
    if values is None:
        values = chain.base_values()
    if isinstance(values, ParameterTrace):
        tr = values
        base = Chain.flatten(chain.labels, chain.base_values())
        if tr.is_static:
            flat = {**base, **tr.frame_values(0)}
            return render_chain(chain, y, chain.values_from_flat({k: flat[k] for k in chain.keys()}), block_size)
        blk = tr.to_blocks(block_size, chain.sample_rate, trace_specs(chain), n_samples=y.shape[-1])
        jobs = []  # (effect, static values or None, checked blocks or None)
        for lab, fx in zip(chain.labels, chain.effects):
            keys = [f"{lab}.{n}" for n in fx.param_names]
            if all(k not in blk.params or np.all(blk.params[k] == blk.params[k][0]) for k in keys):
                vals = {n: (float(blk.params[k][0]) if k in blk.params else base[k])
                        for n, k in zip(fx.param_names, keys)}
                jobs.append((fx, vals, None))
            else:
                arrays = {n: (blk.params[k] if k in blk.params else base[k]) for n, k in zip(fx.param_names, keys)}
                jobs.append((fx, None, checked_blocks(fx, arrays, blk.n_frames)))
        return _render_jobs(jobs, y, block_size)
    if len(values) != len(chain.effects):
        raise AfxError(f"expected values for {len(chain.effects)} effects, got {len(values)}")
    return render_series(chain.effects, values, y)


def render_series(effects: Sequence[Effect], values: Sequence[Mapping[str, float]], audio: np.ndarray) -> np.ndarray:
    """Render ``audio`` ``(channels, samples)`` through ``effects`` in series with static ``values``
    (one mapping per effect): :func:`render_effect` on each, channel-independent runs one channel
    per thread. Returns float32 ``(channels, samples)``."""
    y = np.ascontiguousarray(audio, dtype=np.float32)
    return _render_jobs([(fx, v, None) for fx, v in zip(effects, values)], y, DEFAULT_BLOCK_SIZE)
