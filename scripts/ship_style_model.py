#!/usr/bin/env python3
"""Ship a trained style model: ``models/style_<domain>.pt`` (weights for inference), its NumPy export
``models/style_<domain>.npz`` (torch-free inference, :mod:`afxcli.nn.numpy_infer`) and its model
card ``models/style_<domain>.json``, with figures measured on held-out audio.

The shipped file is the run's best checkpoint (lowest validation loss) without the optimizer and
generator states: format "afx-checkpoint", task, the complete config, chain spec, model weights,
the step and validation loss it was taken at. The card records the data (corpora, split, hours),
the training (config file, exact command, steps reached, wall time per step), and the DeepAFx-ST
§4.1 figures of ``benchmarks/style_eval.py`` on the corpus's **validation split** (tracks or
speakers never trained on) for input, rule-based baseline and model.

    .venv/bin/python scripts/ship_style_model.py --run runs/style_music --domain music \\
        --config configs/style_music.json --n 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from afxcli.atomic import torch_save_atomic, write_json_atomic  # noqa: E402
from afxcli.train import load_checkpoint  # noqa: E402

KEEP = ("task", "config", "chain_spec", "model_state", "step", "best_val_loss", "best_step")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder (best.pt, last.pt, log.jsonl)")
    ap.add_argument("--domain", required=True, choices=("music", "speech"))
    ap.add_argument("--config", required=True, help="the config file the run was trained with")
    ap.add_argument("--n", type=int, default=50, help="style_eval pairs for the card")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(ROOT / "models"))
    ap.add_argument("--level-own-gain-weight", type=float, default=None,
                    help="set task_options.level_own_gain_weight in the shipped config (inference only: the "
                         "share of the network's own output gain in the output level; choose it with "
                         "benchmarks/style_eval.py --level-weights on pairs other than the card's)")
    ap.add_argument("--note", action="append", default=[], help="a line for the card's notes (repeatable)")
    args = ap.parse_args(argv)

    run = Path(args.run)
    src = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    data = load_checkpoint(src)
    last = load_checkpoint(run / "last.pt") if (run / "last.pt").is_file() else data
    if args.level_own_gain_weight is not None:
        if not 0.0 <= args.level_own_gain_weight <= 1.0:
            ap.error("--level-own-gain-weight must be in [0, 1]")
        data["config"] = {**data["config"], "task_options": {**data["config"]["task_options"],
                                                             "level_own_gain_weight": args.level_own_gain_weight}}
    ship = {"format": data["format"], "version": data["version"], **{k: data.get(k) for k in KEEP},
            "finished": True, "stop_reason": "shipped"}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"style_{args.domain}.pt"
    torch_save_atomic(ship, weights)
    from afxcli.nn.numpy_infer import export_npz, sha256_of

    sha = sha256_of(weights)

    npz = export_npz(weights)  # torch-free inference weights, tied to this .pt by its SHA-256

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import style_eval  # noqa: E402
    from afxcli import datasets
    from afxcli.tasks.style import StylePredictor

    corpus, sr, channels = style_eval.DOMAINS[args.domain]
    files = datasets.files(corpus, "val")
    predictor = StylePredictor.load(weights)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = style_eval.evaluate_pairs(files, sr, channels, args.n, args.seed, 10.0, predictor,
                                       groups=datasets.groups(corpus, "val"))
    eval_s = time.perf_counter() - t0
    lines = style_eval.figure_lines(args.domain, result)

    cfg = data["config"]
    names = cfg["data"]["corpus"]
    names = [names] if isinstance(names, str) else list(names)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    step_times = [e["time_s"] for e in log if "time_s" in e]
    opts = cfg["task_options"]
    time_weight = float((opts.get("loss_options") or {}).get("time_weight", 100.0))
    loss_text = f"{opts.get('loss', 'mrstft')}" + (f" + {time_weight:g}·MAE" if time_weight else " (no time-domain term)")
    fe = opts.get("frontend_options") or {}
    card = {
        "model": f"style_{args.domain}",
        "file": weights.name, "sha256": sha, "bytes": weights.stat().st_size,
        "parameters": int(sum(v.numel() for v in data["model_state"].values() if v.is_floating_point())),
        "method": "DeepAFx-ST self-supervised production style transfer (Steinmetz et al., JAES 2022, §2.1): "
                  "one clip, two random styles, halves swapped; "
                  + (f"a DSP first stage matches the input's long-term spectrum to the reference's "
                     f"({cfg['data']['match_eq']}-octave graphic EQ fitted to the DeepAFx-ST §3.3 matching "
                     f"response, afxcli/tasks/eqmatch.py), the network sees and processes its output; "
                     if cfg["data"].get("match_eq") else "")
                  + "shared-weight analyzer (log-mel → "
                  "production statistics → learned projection) on input and reference → controller MLP → "
                  f"{sum(len(e.get('free', {})) for e in data['chain_spec']['effects'])} "
                  f"chain parameters; loss {loss_text} through the chain's torch twins (AD).",
        "analyzer": {"frontend": opts.get("frontend"), "frontend_options": fe, "encoder": opts.get("encoder"),
                     "encoder_options": opts.get("encoder_options") or {}, "controller_hidden": opts.get("hidden")},
        "chain": data["chain_spec"],
        "data": {
            "corpora": {n: datasets.summary(n) for n in names},
            "split": "fixed, by track (music) or speaker (speech): scripts/data/README.md",
            "recipe": "bash scripts/data/build_all.sh (Debian/PyPI packages only; nothing audio committed)",
            "model_rate_hz": cfg["data"]["sample_rate"], "clip_samples": cfg["data"]["clip_samples"],
        },
        "training": {
            "config": args.config,
            "command": f".venv/bin/python scripts/train_style.py --config {args.config} --out {args.run}",
            "ship_command": f".venv/bin/python scripts/ship_style_model.py --run {args.run} --domain {args.domain} "
                            f"--config {args.config} --n {args.n}"
                            + (f" --level-own-gain-weight {args.level_own_gain_weight:g}"
                               if args.level_own_gain_weight is not None else ""),
            "level_own_gain_weight": float(cfg["task_options"].get("level_own_gain_weight", 0.0)),
            "init_weights": cfg.get("init_weights"),
            "steps_planned": cfg["steps"], "steps_reached": int(last.get("step", 0)),
            "shipped_step": int(data.get("step", 0)), "best_val_loss": data.get("best_val_loss"),
            "batch_size": cfg["batch_size"], "lr": cfg["lr"], "schedule": cfg["schedule"],
            "seconds_per_step_mean": round(sum(step_times) / len(step_times), 4) if step_times else None,
            "hardware": "2 CPU cores (no GPU)",
            "validation_curve": [{"step": e["step"], "val_loss": round(e["val_loss"], 5)} for e in log if "val_loss" in e],
        },
        "evaluation": {
            "benchmark": f".venv/bin/python benchmarks/style_eval.py --domains {args.domain} --n {args.n} "
                         f"--seed {args.seed} --{args.domain}-model {weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights}",
            "data": f"{corpus} validation split ({len(files)} files never trained on), {args.n} synthetic "
                    f"full-reference pairs of 10 s at {sr} Hz, {channels} ch (DeepAFx-ST §4.1)",
            "figures": {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines},
            "seconds": round(eval_s, 1),
        },
    }
    if args.note:
        card["notes"] = list(args.note)
    card_path = out_dir / f"style_{args.domain}.json"
    write_json_atomic(card_path, card)
    print(f"shipped {weights} ({weights.stat().st_size / 1e6:.2f} MB, step {ship['step']}), {npz} and {card_path}",
          file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
