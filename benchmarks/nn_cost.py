"""Size and CPU cost of afx's analysis networks (front end + encoder, and the full models).

For every front end (log-mel, |STFT|^0.3, CQT) × encoder (MobileNetV2-style, time–frequency) at the
model rate, with default settings, and for the frame-wise model (log-mel + MobileNet + head,
DeepAFx geometry) and the style model (shared analyzer on input and reference + controller):
parameter count, and milliseconds to analyze one 5 s stereo clip (batch 1, eval mode, no grad) on
the CPU with 1 thread and with torch's default thread count; median over ``--repeats`` runs after
one warm-up. Also the cost of one training step (forward + backward, batch 8, train mode) for
three analyzers with a 16-parameter head, at 1 thread.

Usage: .venv/bin/python benchmarks/nn_cost.py [--repeats 7] [--sample-rate 22050] [--seconds 5]
Prints ``nn_params_<name>: N params``, ``nn_ms_per_5s_clip_<name>_{1thread,default_threads}: X ms``
and ``nn_ms_train_step_8x5s_<name>_1thread: X ms``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from afxcli.nn import BlindModel, FrameWiseModel, StyleModel, make_analyzer


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sample-rate", type=float, default=22050.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    sr = args.sample_rate
    n = int(round(args.seconds * sr))
    clip = 0.1 * torch.randn(1, 2, n)
    reference = 0.1 * torch.randn(1, 2, n)

    models: dict[str, tuple[torch.nn.Module, tuple]] = {}
    for fe in ("logmel", "stft", "cqt"):
        for enc in ("mobilenet", "tfe"):
            models[f"{fe}_{enc}"] = (make_analyzer(fe, enc, sr), (clip,))
    models["framewise_logmel_mobilenet"] = (
        FrameWiseModel(make_analyzer("logmel", "mobilenet", sr), n_params=16), (clip,))
    models["style_logmel_mobilenet"] = (
        StyleModel(make_analyzer("logmel", "mobilenet", sr), n_params=16), (clip, reference))

    default_threads = torch.get_num_threads()
    results = []
    for name, (model, inputs) in models.items():
        model.eval()
        params = sum(p.numel() for p in model.parameters())

        def run(model=model, inputs=inputs):
            with torch.no_grad():
                model(*inputs)

        torch.set_num_threads(1)
        ms_1 = median_ms(run, args.repeats)
        torch.set_num_threads(default_threads)
        ms_d = median_ms(run, args.repeats)
        results.append((name, params, ms_1, ms_d))
        print(f"# {name}: {params} params, {ms_1:.1f} ms (1 thread), {ms_d:.1f} ms ({default_threads} threads)",
              flush=True)

    torch.set_num_threads(1)
    batch = 0.1 * torch.randn(8, 2, n)
    train_results = []
    for fe, enc in (("logmel", "mobilenet"), ("logmel", "tfe"), ("cqt", "tfe")):
        model = BlindModel(make_analyzer(fe, enc, sr), n_params=16).train()

        def step(model=model):
            model.zero_grad(set_to_none=True)
            model(batch).square().mean().backward()

        ms = median_ms(step, max(3, args.repeats // 2))
        train_results.append((f"{fe}_{enc}", ms))
        print(f"# train step {fe}_{enc}: {ms:.1f} ms (batch 8, 1 thread)", flush=True)
    torch.set_num_threads(default_threads)

    secs = f"{args.seconds:g}s"
    print(f"# model rate {sr:g} Hz, {args.seconds:g} s stereo clip, batch 1, median of {args.repeats}; "
          f"default threads = {default_threads}; load average at the end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (a loaded shared machine slows the multi-thread figures most)")
    for name, params, ms_1, ms_d in results:
        print(f"nn_params_{name}: {params} params")
    for name, params, ms_1, ms_d in results:
        print(f"nn_ms_per_{secs}_clip_{name}_1thread: {ms_1:.1f} ms")
        print(f"nn_ms_per_{secs}_clip_{name}_default_threads: {ms_d:.1f} ms")
    for name, ms in train_results:
        print(f"nn_ms_train_step_8x{secs}_{name}_1thread: {ms:.1f} ms")


if __name__ == "__main__":
    main()
