"""Cost of a training step through an effect chain, per gradient strategy (DeepAFx §2.2-2.3).

Chain: peq (4 peaks) -> compressor -> limiter, all parameters free (P = 25). A batch of ``--batch``
stereo clips of ``--seconds`` at 44.1 kHz. One step = forward + L1 loss against a fixed target
+ backward to the normalized parameters ``q``:

- ``forward``: black-box forward only (a forward-only stateful :class:`BlackBoxLayer`, ``pairs=0``,
  ``M`` instances: render + L1 loss, no grad); the reference every ratio divides by;
- ``ad``: autodiff through the torch twins (``chain(x, q, mode="train")``, float32);
- ``spsa_1`` / ``spsa_4``: SPSA with 1 / 4 draws through the stateful layer (3M / 9M instances);
- ``fd``: central finite differences through the stateless renderer (2P renders per item).

Each stateful step feeds the next frame of the same clips (instances keep their state) with new
parameters (as an encoder predicts them every step). Each strategy's steps alternate with
forward-only steps (one warm-up each) so that the load of a shared machine hits both alike;
``grad_step_s_*`` are median wall seconds, ``grad_step_ratio_*`` the median of the per-step ratios
to the adjacent forward-only step (CPU-time ratios are printed too). The black-box speed-up is the
forward render with 2 workers against 1 worker (alternated). Printed with it: the load average
(os.getloadavg) before and after, the CPU share the process got, the speed-up a GIL-free hashlib
workload gets from 2 threads at the same time (what the machine's load allows), and whether two
threads' renders overlap in time (they can only if pedalboard releases the GIL).

Usage: .venv/bin/python benchmarks/grad_cost.py [--batch 4] [--seconds 2] [--repeats 5] [--workers 2]
       [--torch-threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from afxcli.effects.chain import Chain
from afxcli.grad import BlackBoxLayer, StatelessRenderer, make_chain_fn

SR = 44100
SPEC = {"effects": [{"type": "peq", "options": {"n_peaks": 4}}, {"type": "compressor"}, {"type": "limiter"}]}


def signal(batch: int, seconds: float, frames: int) -> np.ndarray:
    """``(batch, 2, frames * seconds * SR)`` float32 music-like test audio (beats, tones, noise)."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR) * frames
    t = np.arange(n) / SR
    out = np.empty((batch, 2, n), np.float32)
    for b in range(batch):
        beat = np.exp(-((t * rng.uniform(1.5, 2.5)) % 1.0) * 8.0)
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 200) * t) * (0.5 + beat)
        x += 0.1 * rng.standard_normal(n) * beat + 0.1 * np.sin(2 * np.pi * rng.uniform(400, 900) * t)
        out[b] = np.stack([x, 0.9 * np.roll(x, 37)])
    return out


def paired(reference, step, repeats: int) -> tuple[float, float, float, float]:
    """Alternate ``reference`` and ``step`` ``repeats`` times (after one warm-up each), so a
    changing load on a shared machine hits both alike. Returns the median wall seconds of each,
    the median of the per-repeat wall ratios step/reference and the ratio of the summed process
    CPU seconds."""
    reference(0)
    step(0)
    ref_t, t, ratios, ref_cpu, cpu = [], [], [], 0.0, 0.0
    for k in range(1, repeats + 1):
        c0, t0 = time.process_time(), time.perf_counter()
        reference(k)
        c1, t1 = time.process_time(), time.perf_counter()
        step(k)
        c2, t2 = time.process_time(), time.perf_counter()
        ref_t.append(t1 - t0)
        t.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
        ref_cpu += c1 - c0
        cpu += c2 - c1
    return statistics.median(ref_t), statistics.median(t), statistics.median(ratios), cpu / ref_cpu


def render_overlap(chain: Chain, x: np.ndarray, q: np.ndarray, calls: int = 6) -> float:
    """Two threads render through their own instances; returns the fraction of the first thread's
    render time during which the other thread was inside a render too. Positive means pedalboard
    released the GIL (with the GIL held for a whole call, calls could not overlap); the fraction
    itself depends on how many cores the OS gives this process."""
    import threading

    spans: list[list[tuple[float, float]]] = [[], []]
    layers = [BlackBoxLayer(chain, SR, 1, pairs=0) for _ in range(2)]
    for layer in layers:
        layer.render(x[:1], q[:1])

    def work(i: int) -> None:
        for _ in range(calls):
            t0 = time.perf_counter()
            layers[i].render(x[:1], q[:1])
            spans[i].append((t0, time.perf_counter()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(b - a for a, b in spans[0])
    inside = sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans[0] for c, d in spans[1])
    return inside / total


def control_speedup(repeats: int = 5) -> float:
    """Speed-up of a known GIL-free workload (hashlib.sha256 on 32 MB, 2 digests) from 1 to 2
    threads right now: what this machine's load allows any 2-worker speed-up to be."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    buf = np.random.default_rng(0).bytes(1 << 25)
    ratios = []
    with ThreadPoolExecutor(2) as ex:
        for _ in range(repeats):
            t0 = time.perf_counter()
            hashlib.sha256(buf).digest()
            hashlib.sha256(buf).digest()
            t1 = time.perf_counter()
            list(ex.map(lambda _: hashlib.sha256(buf).digest(), range(2)))
            ratios.append((t1 - t0) / (time.perf_counter() - t1))
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fd-repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="threads of the black-box strategies")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (AD and the loss); 1 on a shared machine")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)

    load_before = os.getloadavg()
    chain = Chain(SPEC, SR)
    M, P = args.batch, chain.n_free
    frame = int(args.seconds * SR)
    n_frames = max(args.repeats, args.fd_repeats) + 1
    audio = signal(M, args.seconds, n_frames)
    rng = np.random.default_rng(1)
    # new parameters every step, as an encoder's predictions are during training or validation
    q_steps = rng.uniform(0.2, 0.8, (n_frames, M, P))
    target_q = rng.uniform(0.2, 0.8, (M, P))
    target = torch.from_numpy(StatelessRenderer(chain, SR, workers=args.workers).render(audio[..., :frame], target_q))

    def x_of(k: int) -> np.ndarray:
        return np.ascontiguousarray(audio[..., k * frame:(k + 1) * frame])

    # black-box layer speed-up from 1 to 2 workers (forward render only, alternated), measured first,
    # before the other strategies have run
    layers = {w: BlackBoxLayer(chain, SR, M, workers=w, pairs=0) for w in (1, 2)}
    one, two, _, _ = paired(lambda k: layers[1].render(x_of(k % n_frames), q_steps[k % n_frames]),
                            lambda k: layers[2].render(x_of(k % n_frames), q_steps[k % n_frames]), args.repeats)
    share = {}  # CPU seconds this process got per wall second while rendering with w workers
    for w, layer in layers.items():
        c0, t0 = time.process_time(), time.perf_counter()
        for k in range(args.repeats):
            layer.render(x_of(k % n_frames), q_steps[k % n_frames])
        share[w] = (time.process_time() - c0) / (time.perf_counter() - t0)
    for layer in layers.values():
        layer.close()

    results: dict[str, tuple[float, float, float, float]] = {}

    # forward only: black-box render (a forward-only stateful layer) + loss, no gradient
    fwd_layer = BlackBoxLayer(chain, SR, M, workers=args.workers, pairs=0)

    def forward_step(k):
        y = torch.from_numpy(fwd_layer.render(x_of(k % n_frames), q_steps[k % n_frames]))
        (y - target).abs().mean().item()

    # AD through the torch twins (train mode)
    ad = make_chain_fn(chain, "ad")

    def ad_step(k):
        q = torch.tensor(q_steps[k % n_frames], dtype=torch.float32, requires_grad=True)
        y = ad(torch.from_numpy(x_of(k % n_frames)), q)
        (y - target).abs().mean().backward()
    results["ad"] = paired(forward_step, ad_step, args.repeats)

    # SPSA (stateful layer) and FD (stateless renderer)
    def bb_step(fn):
        def step(k):
            q = torch.tensor(q_steps[k % n_frames], dtype=torch.float32, requires_grad=True)
            y = fn(torch.from_numpy(x_of(k % n_frames)), q)
            (y - target).abs().mean().backward()
            fn.step()
            assert q.grad is not None and torch.isfinite(q.grad).all()
        return step

    for name, draws in (("spsa_1", 1), ("spsa_4", 4)):
        fn = make_chain_fn(chain, "spsa", draws=draws, workers=args.workers, seed=0)
        results[name] = paired(forward_step, bb_step(fn), args.repeats)
        fn.close()
    fn = make_chain_fn(chain, "fd", workers=args.workers)
    results["fd"] = paired(forward_step, bb_step(fn), args.fd_repeats)
    fn.close()
    fwd_s = statistics.median([r[0] for r in results.values()])
    fwd_layer.close()

    overlap = render_overlap(chain, x_of(0), q_steps[0])
    control = control_speedup()
    load_after = os.getloadavg()

    print(f"# chain peq(4 peaks) -> compressor -> limiter, P = {P}; batch {M} x 2 ch x {args.seconds:g} s "
          f"at {SR} Hz; black-box workers {args.workers}; torch threads {torch.get_num_threads()}; "
          f"{os.cpu_count()} CPUs")
    print(f"# load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"# forward render 1 worker {one:.4f} s, 2 workers {two:.4f} s (medians, alternated)")
    print(f"# CPU share while rendering (CPU s per wall s): 1 worker {share[1]:.2f}, 2 workers {share[2]:.2f} "
          f"(2 workers can only speed up when the process gets more than one core)")
    print(f"# control: a GIL-free hashlib workload speeds up {control:.2f} x from 1 to 2 threads right now")
    print(f"# GIL check: two threads' renders overlapped {100 * overlap:.0f}% of the time "
          f"(0% if pedalboard held the GIL)")
    for name, (_, _, _, cpu_ratio) in results.items():
        print(f"# {name}: CPU-time ratio to the forward-only step {cpu_ratio:.3f} x")
    print(f"grad_step_s_forward: {fwd_s:.4f} s")
    for name, (_, s_step, _, _) in results.items():
        print(f"grad_step_s_{name}: {s_step:.4f} s")
    for name, (_, _, ratio, _) in results.items():
        print(f"grad_step_ratio_{name}: {ratio:.3f} x")
    print(f"blackbox_speedup_2_workers: {one / two:.3f} x")
    print(f"load_average_1min: {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
