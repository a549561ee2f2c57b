"""Real-time factors of a mastering chain (6-band EQ -> compressor -> true-peak limiter).

Renders 60 s of stereo 44.1 kHz audio three ways and prints audio seconds per compute second:
  - pedalboard render (afx inference path, `render_chain` with the pedalboard twins; a static EQ on
    over 2^17 samples convolves with its twin's impulse response),
  - torch inference render (exact mode, no grad),
  - torch forward + backward (train mode: frequency-sampled EQ, gradients to the parameters);
and the matched-EQ stage of ``afx master`` (29-band 1/3-octave graphic EQ with shelved ends, static,
random ±9 dB gains) two ways: the pedalboard twin's own biquads (one call over the whole file) and
``render_effect``'s FFT convolution with the twin's impulse response (:mod:`afxcli.dsp.irconv`),
with their speed ratio (same run) and the largest difference between the two.
The torch limiter is afx's differentiable approximation of pedalboard's BrickwallLimiter.

Usage: .venv/bin/python benchmarks/render_speed.py [--seconds 60] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from afxcli.effects.chain import Chain
from afxcli.render import render_chain

SPEC = {"effects": [
    {"type": "peq", "options": {"n_peaks": 4}},
    {"type": "compressor"},
    {"type": "limiter", "options": {"true_peak": True}},
]}


def test_signal(seconds: float, sr: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    beat = np.exp(-((t * 2.0) % 1.0) * 8.0)
    x = 0.25 * np.sin(2 * np.pi * 110 * t) * (0.5 + beat) + 0.1 * rng.standard_normal(n) * beat
    x = x + 0.1 * np.sin(2 * np.pi * 660 * t + np.sin(2 * np.pi * 0.3 * t))
    return np.stack([x, np.roll(x, 37) * 0.9]).astype(np.float32)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sr = 44100
    torch.set_num_threads(1)
    x = test_signal(args.seconds, sr)
    chain = Chain(SPEC, sr)
    rng = np.random.default_rng(1)
    q = torch.tensor(rng.uniform(0.2, 0.8, (1, chain.n_free)), dtype=torch.float32)
    values = [{n: float(v) for n, v in zip(fx.param_names, p[0].tolist())}
              for fx, p in zip(chain.effects, chain.denormalize(q.double()))]
    xt = torch.from_numpy(x).unsqueeze(0)

    render_chain(chain, x[:, :sr], values)  # warm-up (numba compile, plugin setup)
    with torch.no_grad():
        chain(xt[..., :sr], q, mode="exact")

    t_pb = best_of(lambda: render_chain(chain, x, values), args.repeats)

    def torch_inference():
        with torch.no_grad():
            chain(xt, q, mode="exact")

    t_inf = best_of(torch_inference, args.repeats)

    def torch_train():
        qq = q.clone().requires_grad_(True)
        y = chain(xt, qq, mode="train")
        y.square().mean().backward()

    torch_train()
    t_train = best_of(torch_train, args.repeats)

    import pedalboard

    from afxcli.effects import create
    from afxcli.render import render_effect

    geq = create("geq", sr, bands="third", shelves=True)
    g_vals = geq.check_values({k: float(v) for k, v in zip(geq.param_names, rng.uniform(-9, 9, len(geq.param_names)))})
    t_geq_pb = best_of(lambda: pedalboard.Pedalboard(geq.to_pedalboard(g_vals))(x, sr), args.repeats)
    t_geq_ir = best_of(lambda: render_effect(geq, x, g_vals), args.repeats)
    diff = np.max(np.abs(render_effect(geq, x, g_vals) - pedalboard.Pedalboard(geq.to_pedalboard(g_vals))(x, sr)))

    print(f"audio: {args.seconds:g} s stereo {sr} Hz, chain: peq(6 bands) -> compressor -> limiter(true peak)")
    print(f"render_rtf_pedalboard: {args.seconds / t_pb:.1f} x")
    print(f"render_rtf_torch_inference: {args.seconds / t_inf:.1f} x")
    print(f"render_rtf_torch_forward_backward: {args.seconds / t_train:.1f} x")
    print(f"render_rtf_geq29_pedalboard: {args.seconds / t_geq_pb:.1f} x")
    print(f"render_rtf_geq29_impulse_response: {args.seconds / t_geq_ir:.1f} x")
    print(f"render_geq29_speedup: {t_geq_pb / t_geq_ir:.2f} x")
    print(f"render_geq29_max_difference: {diff:.2e} full scale")


if __name__ == "__main__":
    main()
