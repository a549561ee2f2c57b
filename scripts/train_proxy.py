#!/usr/bin/env python
"""Train a neural proxy (FiLM-conditioned TCN, DeepAFx-ST §3.5) of an afx chain.

Targets are rendered by the real chain (pedalboard twins, VST3 plugins) with uniformly random
normalized parameters per clip, on audio from a folder (or generated test signals when none is
given). After training, the NP-FH gradient of the best checkpoint is compared with central finite
differences of the real chain on held-out items (:func:`afxcli.grad.proxy.gradient_agreement`).
Checkpoints (model, best-validation model, optimizer, step, configs, chain spec, sample
rate) are written every ``--checkpoint-every`` steps; running the same command again resumes.
The last lines are figures ``name: value unit``.

Examples (from the repository root)::

    # compressor proxy (BE-AFX sigmoid gain output), generated signals, 16 kHz, ~3 min on one core
    .venv/bin/python scripts/train_proxy.py \\
        '[{"type": "compressor", "fixed": {"makeup_db": 0}, "free": ["threshold_db", "ratio", "attack_ms", "release_ms"]}]' \\
        --sample-rate 16000 --steps 1000 --batch 8 --clip-samples 8192 --lr 3e-3 \\
        --width 16 --kernel-size 5 --dilations 1,4,16,64,256 --gain-output \\
        --checkpoint /tmp/comp_proxy.pt

    # any chain spec file, audio from a folder (every 10th file held out for validation)
    .venv/bin/python scripts/train_proxy.py presets/master_gentle.json --audio ~/music \\
        --sample-rate 44100 --checkpoint proxies/master.pt

The checkpoint loads with ``afxcli.grad.proxy.load_proxy(path)`` and plugs into training through
``afxcli.grad.make_chain_fn(chain, "full_hybrid" | "half_hybrid" | "proxy", path=path)``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from afxcli.effects.chain import Chain, load_chain_spec, normalize_spec
from afxcli.errors import AfxError
from afxcli.grad.proxy import ProxyConfig, ProxyTCN, gradient_agreement, load_proxy, train_proxy


def _chain_spec(text: str) -> dict:
    s = text.strip()
    if s.startswith("[") or s.startswith("{"):
        try:
            return normalize_spec(json.loads(s))
        except json.JSONDecodeError as e:
            raise AfxError(f"inline chain spec is not JSON ({e})") from None
    spec = load_chain_spec(s)
    if "effects" not in spec:  # a preset file may wrap the chain
        raise AfxError(f"{s}: no chain spec")
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chain", help="chain spec: a JSON file or inline JSON")
    ap.add_argument("--audio", type=Path, default=None,
                    help="audio file or folder (default: generated test signals)")
    ap.add_argument("--sample-rate", type=float, default=44100.0, help="proxy and chain rate in Hz")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--clip-samples", type=int, default=16384)
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine decay to 0.1x)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=Path("proxy.pt"))
    ap.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-items", type=int, default=16)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--kernel-size", type=int, default=13)
    ap.add_argument("--dilations", default="1,8,64,512", help="comma-separated dilation per block")
    ap.add_argument("--non-causal", action="store_true")
    ap.add_argument("--gain-output", action="store_true", help="BE-AFX: y = g·x, g from a sigmoid")
    ap.add_argument("--max-gain-db", type=float, default=0.0, help="gain-output ceiling in dB")
    ap.add_argument("--workers", type=int, default=1, help="threads rendering targets")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="torch device for the proxy (cpu, cuda)")
    args = ap.parse_args(argv)

    try:
        torch.set_num_threads(max(1, args.threads))
        chain = Chain(_chain_spec(args.chain), args.sample_rate)
        cfg = ProxyConfig(n_params=chain.n_free, width=args.width, kernel_size=args.kernel_size,
                          dilations=tuple(int(d) for d in args.dilations.split(",") if d.strip()),
                          causal=not args.non_causal, gain_output=args.gain_output,
                          max_gain_db=args.max_gain_db)
        print(f"chain: {', '.join(chain.free_keys)} at {chain.sample_rate:g} Hz", flush=True)
        print(f"proxy: {ProxyTCN(cfg).n_weights} weights, receptive field {cfg.receptive_field_samples} samples "
              f"({1000 * cfg.receptive_field_samples / chain.sample_rate:.1f} ms)", flush=True)
        t0 = time.perf_counter()
        model, history = train_proxy(
            chain, None, args.audio, steps=args.steps, batch=args.batch, clip_samples=args.clip_samples,
            lr=args.lr, seed=args.seed, checkpoint_path=args.checkpoint, resume=not args.no_resume,
            model_config=cfg, checkpoint_every=args.checkpoint_every, val_every=args.val_every,
            val_items=args.val_items, workers=args.workers, device=args.device, log=lambda s: print(s, flush=True))
        wall = time.perf_counter() - t0
        vals = [h for h in history if "val_mae" in h]
        first, last = vals[0], vals[-1]
        best = min(vals, key=lambda h: h["val_loss"])
        steps = [h["seconds"] for h in history if "seconds" in h]
        print(f"checkpoint: {args.checkpoint} (step {history[-1]['step']}, best at step {best['step']})")
        print(f"proxy_weights: {model.n_weights} count")
        print(f"receptive_field: {model.receptive_field_samples} samples")
        print(f"val_mae_untrained: {first['val_mae']:.5g} abs")
        print(f"val_mae: {last['val_mae']:.5g} abs")
        print(f"val_mae_best: {best['val_mae']:.5g} abs")
        print(f"val_rel_mae_best: {best['val_rel_mae']:.4g} ratio")
        print(f"identity_mae: {last['identity_mae']:.5g} abs")
        print(f"error_drop: {first['val_mae'] / best['val_mae']:.3g} x")
        best_model, _ = load_proxy(args.checkpoint, which="best")
        ga = gradient_agreement(best_model.to(args.device), chain, n_items=args.val_items,
                                clip_samples=args.clip_samples, seed=args.seed, source=args.audio)
        print(f"grad_cosine_vs_fd: {ga['grad_cosine']:.3f} cosine")
        print(f"grad_sign_agreement_vs_fd: {100 * ga['grad_sign_agreement']:.1f} %")
        if steps:
            print(f"step_time: {sum(steps) / len(steps):.4g} s")
        print(f"wall_time: {wall:.4g} s")
    except AfxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
