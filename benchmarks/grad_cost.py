"""Cost of a training step through an effect chain, per gradient strategy (DeepAFx §2.2-2.3).

Chain: peq (4 peaks) -> compressor -> limiter, all parameters free (P = 25). A batch of ``--batch``
stereo clips of ``--seconds`` at 44.1 kHz. One step = forward + L1 loss against a fixed target
+ backward to the normalized parameters ``q``:

- ``forward``: black-box forward only (a forward-only stateful :class:`BlackBoxLayer`, ``pairs=0``,
  ``M`` instances: render + L1 loss, no grad); the reference every ratio divides by;
- ``ad``: autodiff through the torch twins (``chain(x, q, mode="train")``, float32);
- ``spsa_1`` / ``spsa_4``: SPSA with 1 / 4 draws through the stateful layer (3M / 9M instances);
- ``fd``: central finite differences through the stateless renderer (2P renders per item).

Each stateful step feeds the next frame of the same clips (instances keep their state). Times are
the median of ``--repeats`` steps after one warm-up step. The black-box speed-up is the forward
render with 2 workers against 1 worker. The load average (os.getloadavg) is printed before and
after: on a shared machine the other processes' load lowers the parallel speed-up.

Usage: .venv/bin/python benchmarks/grad_cost.py [--batch 4] [--seconds 2] [--repeats 5] [--workers 2]
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


def median_step(step, repeats: int) -> float:
    step(0)  # warm-up (numba compilation, instance creation)
    times = []
    for k in range(1, repeats + 1):
        t0 = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fd-repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="threads of the black-box strategies")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    load_before = os.getloadavg()
    chain = Chain(SPEC, SR)
    M, P = args.batch, chain.n_free
    frame = int(args.seconds * SR)
    n_frames = max(args.repeats, args.fd_repeats) + 1
    audio = signal(M, args.seconds, n_frames)
    rng = np.random.default_rng(1)
    q_np = rng.uniform(0.2, 0.8, (M, P))
    target_q = rng.uniform(0.2, 0.8, (M, P))
    target = torch.from_numpy(StatelessRenderer(chain, SR, workers=args.workers).render(audio[..., :frame], target_q))

    def x_of(k: int) -> np.ndarray:
        return np.ascontiguousarray(audio[..., k * frame:(k + 1) * frame])

    results: dict[str, float] = {}

    # forward only: black-box render (stateful layer) + loss, no gradient
    def forward_step(layer):
        def step(k):
            y = torch.from_numpy(layer.render(x_of(k), q_np))
            (y - target).abs().mean().item()
        return step

    with BlackBoxLayer(chain, SR, M, workers=args.workers, pairs=0) as layer:
        results["forward"] = median_step(forward_step(layer), args.repeats)

    # AD through the torch twins (train mode)
    ad = make_chain_fn(chain, "ad")

    def ad_step(k):
        q = torch.tensor(q_np, dtype=torch.float32, requires_grad=True)
        y = ad(torch.from_numpy(x_of(k)), q)
        (y - target).abs().mean().backward()
    results["ad"] = median_step(ad_step, args.repeats)

    # SPSA (stateful layer) and FD (stateless renderer)
    def bb_step(fn):
        def step(k):
            q = torch.tensor(q_np, dtype=torch.float32, requires_grad=True)
            y = fn(torch.from_numpy(x_of(k)), q)
            (y - target).abs().mean().backward()
            fn.step()
            assert q.grad is not None and torch.isfinite(q.grad).all()
        return step

    for name, draws in (("spsa_1", 1), ("spsa_4", 4)):
        fn = make_chain_fn(chain, "spsa", draws=draws, workers=args.workers, seed=0)
        results[name] = median_step(bb_step(fn), args.repeats)
        fn.close()
    fn = make_chain_fn(chain, "fd", workers=args.workers)
    results["fd"] = median_step(bb_step(fn), args.fd_repeats)
    fn.close()

    # black-box layer speed-up from 1 to 2 workers (forward render only)
    per_workers = {}
    for w in (1, 2):
        with BlackBoxLayer(chain, SR, M, workers=w, pairs=0) as layer:
            per_workers[w] = median_step(lambda k, layer=layer: layer.render(x_of(k), q_np), args.repeats)
    load_after = os.getloadavg()

    print(f"# chain peq(4 peaks) -> compressor -> limiter, P = {P}; batch {M} x 2 ch x {args.seconds:g} s "
          f"at {SR} Hz; black-box workers {args.workers}; torch threads {torch.get_num_threads()}; "
          f"{os.cpu_count()} CPUs")
    print(f"# load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"# forward render 1 worker {per_workers[1]:.4f} s, 2 workers {per_workers[2]:.4f} s")
    for name, s in results.items():
        print(f"grad_step_s_{name}: {s:.4f} s")
    for name, s in results.items():
        if name != "forward":
            print(f"grad_step_ratio_{name}: {s / results['forward']:.3f} x")
    print(f"blackbox_speedup_2_workers: {per_workers[1] / per_workers[2]:.3f} x")
    print(f"load_average_1min: {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
