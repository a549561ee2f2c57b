#!/usr/bin/env python3
"""Toy convergence task: learn a static EQ → compressor setting through a gradient strategy.

A hidden random setting (6 normalized parameters: low-shelf, peak and high-shelf gains, peak
frequency, compressor threshold and ratio; ``afxcli.train.tasks.TOY_CHAIN``) renders targets from
generated music-like clips; a free parameter vector (``--model vector``) or a tiny network with a
constant input (``--model net``) starting at mid-range is trained through the chain with the chosen
strategy so that input → target. The loss is DeepAFx-ST's MR-STFT + 100·MAE (``afxcli.losses``);
validation renders the **real** chain (torch twins in exact mode) at the learned setting on 8
held-out clips. For ``half_hybrid`` a small neural proxy of the chain is trained first
(``afxcli.grad.proxy.train_proxy``, targets rendered by pedalboard) and gradients flow through it
while validation still uses the real chain (DeepAFx-ST NP-HH).

Prints ``toy_val_loss_start_<strategy>``, ``toy_val_loss_end_<strategy>``,
``toy_param_error_<strategy>`` (mean |q − q_hidden|) and ``toy_val_loss_drop_<strategy>: X %``
(target ≥ 90 %). Runs are resumable (run the same command again); ``--fresh`` starts over.

    python scripts/toy_task.py --strategy ad
    python scripts/toy_task.py --strategy spsa
    python scripts/toy_task.py --strategy half_hybrid
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from afxcli.train import load_checkpoint, load_config, train
from afxcli.train.data import music_like
from afxcli.train.tasks import TOY_CHAIN

#: Per strategy: steps, batch size, peak lr (cosine decay to 2 %) and strategy options, tuned here.
#: SPSA draws one Rademacher vector per batch item, so a batch of 8 averages 8 estimates of the
#: shared setting's gradient: with 4 the peak frequency (whose gradient vanishes at the 0 dB start)
#: stayed drowned in the other parameters' noise and the drop stopped at 89.7 % after 250 steps.
DEFAULTS = {
    "ad": {"steps": 100, "batch_size": 4, "lr": 0.05, "options": {}},
    "spsa": {"steps": 300, "batch_size": 8, "lr": 0.05, "options": {"epsilon": 0.02}},
    "fd": {"steps": 100, "batch_size": 4, "lr": 0.05, "options": {"epsilon": 0.01}},
    "half_hybrid": {"steps": 400, "batch_size": 4, "lr": 0.05, "options": {}},
    "full_hybrid": {"steps": 300, "batch_size": 4, "lr": 0.05, "options": {}},
    "proxy": {"steps": 150, "batch_size": 4, "lr": 0.05, "options": {}},
}
SAMPLE_RATE = 22050
CLIP_SAMPLES = 8192
LOSS_OPTIONS = {"fft_sizes": [64, 256, 1024, 4096], "time_weight": 100.0}


def music_source(rng: np.random.Generator, n_items: int, n_samples: int, split: str = "train") -> np.ndarray:
    """Audio source for proxy training: the toy's generated music-like clips, ``(n_items, n_samples)``."""
    return np.stack([music_like(rng, SAMPLE_RATE, n_samples, 1)[0] for _ in range(n_items)])


def train_toy_proxy(out: Path, steps: int, seed: int, model_config: dict, lr: float, time_weight: float,
                    stft_windows: tuple[int, ...] = (64, 256, 1024), eq_lr_scale: float = 1.0) -> Path:
    from afxcli.grad.proxy import train_proxy

    path = out / "proxy.pt"
    t0 = time.time()
    _, hist = train_proxy(TOY_CHAIN, SAMPLE_RATE, audio_source=music_source, steps=steps, batch=8,
                          clip_samples=CLIP_SAMPLES, lr=lr, seed=seed, checkpoint_path=path, resume=True,
                          model_config=model_config, checkpoint_every=50, val_every=100, val_items=16, time_weight=time_weight,
                          stft_windows=stft_windows, eq_lr_scale=eq_lr_scale,
                          log=lambda m: print(f"proxy {m}", file=sys.stderr, flush=True))
    v = [h for h in hist if "val_rel_mae" in h]
    if v:
        print(f"toy_proxy_val_rel_mae: {v[-1]['val_rel_mae']:.4f} (start {v[0]['val_rel_mae']:.4f}, "
              f"{time.time() - t0:.0f} s)", flush=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", default="ad", choices=sorted(DEFAULTS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--epsilon", type=float, default=None, help="SPSA/FD perturbation (normalized units)")
    ap.add_argument("--model", default="vector", choices=["vector", "net"])
    ap.add_argument("--batch-size", type=int, default=None)
    # proxy: DeepAFx-ST's TCN shape (kernel 13, dilations 1, 8, 64, 512) at width 16; of the variants
    # tried (10 blocks of kernel 3, width 24/32, gain output, time weight 1) none did better per minute.
    # half_hybrid: the plain TCN proxy (2000 steps, val rel. MAE 0.22) stops at a 79 % drop. With the
    # minimum-phase EQ branch and gain output (--proxy-eq-bands 48 --proxy-gain-db 1
    # --proxy-eq-lr-scale 10) the drop depended more on the particular proxy than on its error:
    # 300 steps 92.1 % (val rel. MAE 0.18), 600 steps 85.3 % (0.14), 1000 steps 83.7 % (0.10), with
    # --proxy-level-window 32 at 600 steps 88.8 %; the misses are the compressor's threshold/ratio
    # trade-off (a valley of near-equal loss) landing elsewhere under the proxy than under the chain.
    # The 300-step recipe over seeds 0/1/2 (--seed): 92.1 / 91.3 / 84.2 %.
    ap.add_argument("--proxy-steps", type=int, default=300)
    ap.add_argument("--proxy-lr", type=float, default=3e-3)
    ap.add_argument("--proxy-width", type=int, default=16)
    ap.add_argument("--proxy-kernel", type=int, default=13)
    ap.add_argument("--proxy-dilations", default="1,8,64,512")
    ap.add_argument("--proxy-gain-db", type=float, default=1.0,
                    help="BE-AFX gain output y = g·x with g up to this many dB (0 or less: direct output)")
    ap.add_argument("--proxy-eq-bands", type=int, default=48,
                    help="minimum-phase EQ branch with this many log-spaced magnitude points (0: off)")
    ap.add_argument("--proxy-eq-fft", type=int, default=2048, help="EQ branch impulse-response length")
    ap.add_argument("--proxy-level-window", type=int, default=0,
                    help="give the TCN the short-term level in dB over this many samples (0: off)")
    ap.add_argument("--proxy-eq-lr-scale", type=float, default=10.0, help="EQ branch lr = proxy lr × this")
    ap.add_argument("--proxy-stft", default="64,256,1024", help="MR-STFT windows of the proxy's loss")
    ap.add_argument("--proxy-time-weight", type=float, default=100.0, help="α of the proxy's MR-STFT + α·MAE loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden-seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=Path("runs/toy"))
    ap.add_argument("--fresh", action="store_true", help="delete the run folder first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    s = args.strategy
    d = DEFAULTS[s]
    out = args.out / s
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    options = dict(d["options"])
    if args.epsilon is not None:
        options["epsilon"] = args.epsilon
    task_options = {"strategy": s, "strategy_options": options, "model": args.model,
                    "hidden_seed": args.hidden_seed, "loss": "mrstft", "loss_options": LOSS_OPTIONS}
    if s in ("proxy", "half_hybrid", "full_hybrid"):
        pcfg = {"width": args.proxy_width, "kernel_size": args.proxy_kernel,
                "dilations": [int(v) for v in args.proxy_dilations.split(",")]}
        if args.proxy_gain_db is not None and args.proxy_gain_db > 0:
            pcfg.update(gain_output=True, max_gain_db=args.proxy_gain_db)
        if args.proxy_level_window:
            pcfg["level_window"] = args.proxy_level_window
        if args.proxy_eq_bands:
            pcfg.update(eq_bands=args.proxy_eq_bands, eq_fft=args.proxy_eq_fft)
        task_options["proxy_path"] = str(train_toy_proxy(out, args.proxy_steps, args.seed, pcfg, args.proxy_lr,
                                                          args.proxy_time_weight,
                                                          tuple(int(v) for v in args.proxy_stft.split(",")),
                                                          args.proxy_eq_lr_scale))
    steps = args.steps or d["steps"]
    config = load_config(None, "toy", {
        "seed": args.seed, "steps": steps, "lr": args.lr or d["lr"], "batch_size": args.batch_size or d["batch_size"],
        "schedule": "cosine", "min_lr_fraction": 0.02, "val_every_steps": max(1, steps // 5),
        "checkpoint_every_steps": 25, "threads": args.threads,
        "data": {"sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES, "items_per_epoch": 256, "val_items": 8},
        "task_options": task_options})
    t0 = time.time()
    res = train(config, out / "run")
    seconds = time.time() - t0
    lines = [x for x in (out / "run" / "log.jsonl").read_text().splitlines() if "val_loss" in x]
    vals = [json.loads(x) for x in lines]
    start, end = vals[0]["val_loss"], vals[-1]["val_loss"]
    from afxcli.train.tasks import ToyTask

    task = ToyTask(config)
    task.model.load_state_dict(load_checkpoint(out / "run" / "last.pt")["model_state"])
    print(f"toy_steps_{s}: {res.step} steps ({seconds:.0f} s this session)")
    print(f"toy_val_loss_start_{s}: {start:.5f}")
    print(f"toy_val_loss_end_{s}: {end:.5f}")
    print(f"toy_param_error_{s}: {task.parameter_error():.4f} normalized")
    print(f"toy_val_loss_drop_{s}: {100.0 * (1.0 - end / start):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
