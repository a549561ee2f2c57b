#!/usr/bin/env python3
"""Train (or resume) a DeepAFx-ST style-transfer model: the ``style`` task of ``afx train``.

Long runs are meant for the background and are resumable: run the same command again after an
interruption (SIGINT/SIGTERM/SIGHUP, ``--max-minutes`` or a crash) and it continues from
``OUT/last.pt`` bit for bit (``afxcli.train.loop``)::

    nohup .venv/bin/python scripts/train_style.py --config configs/style_music.json \\
        --out runs/style_music --max-minutes 600 > runs/style_music.log 2>&1 &

At the end (finished or stopped) it evaluates the best checkpoint (else the last) on the fixed
validation pairs of the config's validation split (synthetic full-reference pairs, DeepAFx-ST §4.1)
and prints, as ``name: value unit`` lines:

- ``style_val_mrstft_input`` — MR-STFT error of the input vs the target,
- ``style_val_mrstft_model`` — of the model's output (real chain, exact mode) vs the target,
- ``style_val_mrstft_reduction`` — ``1 − model/input`` in %,
- ``style_seconds_per_step`` — mean time of an optimizer step (forward, backward, update) over the
  last 200 logged steps, data loading excluded; ``style_wall_seconds_per_step`` — this session's
  wall time (data, validation and checkpoints included) per step,
- ``style_step`` — the step reached.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from afxcli.errors import AfxError  # noqa: E402
from afxcli.train import load_config, load_for_inference, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="style config (configs/style_music.json, configs/style_speech.json)")
    ap.add_argument("--out", required=True, help="run folder (last.pt, best.pt, log.jsonl)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (checkpointed) after this wall time")
    ap.add_argument("--steps", type=int, default=None, help="override the config's total steps (changes the schedule)")
    ap.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    ap.add_argument("--no-eval", action="store_true", help="skip the final validation figures")
    args = ap.parse_args(argv)

    overrides = {}
    if args.max_minutes is not None:
        overrides["max_seconds"] = max(1.0, 60.0 * args.max_minutes)
    if args.steps is not None:
        overrides["steps"] = args.steps
    try:
        config = load_config(args.config, "style", overrides)
        start_step = _resume_step(Path(args.out)) if not args.fresh else 0
        t0 = time.monotonic()
        result = train(config, args.out, resume=not args.fresh, progress=False)
        wall = time.monotonic() - t0
        print(f"stop_reason: {result.stop_reason}", file=sys.stderr)
        if args.no_eval:
            return 0
        figures = evaluate_run(Path(args.out))
    except AfxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    times = _session_step_times(Path(args.out) / "log.jsonl", result.step)
    for k, v in figures.items():
        unit = "%" if k.endswith("reduction") else ""
        print(f"{k}: {v:.4f} {unit}".rstrip())
    if times:
        print(f"style_seconds_per_step: {np.mean(times):.3f} s")
    done = result.step - start_step
    if done > 0:
        print(f"style_wall_seconds_per_step: {wall / done:.3f} s")
    print(f"style_step: {result.step} steps")
    return 0


def _resume_step(out: Path) -> int:
    """The step ``out/last.pt`` holds (0 when there is none)."""
    from afxcli.train import load_checkpoint

    return int(load_checkpoint(out / "last.pt")["step"]) if (out / "last.pt").is_file() else 0


def _session_step_times(log_path: Path, last_step: int) -> list[float]:
    """``time_s`` of the logged optimizer steps (the last 200 up to ``last_step``)."""
    if not log_path.is_file():
        return []
    out = []
    for line in log_path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if "time_s" in e and e.get("step", 0) <= last_step:
            out.append(float(e["time_s"]))
    return out[-200:]


def evaluate_run(out: Path) -> dict[str, float]:
    """Validation MR-STFT of input and model (best checkpoint, else last) on the fixed validation pairs."""
    from afxcli.effects.chain import Chain
    from afxcli.train.style import evaluate, style_val_batches

    model, chain_spec, ck_config = load_for_inference(out)
    chain = Chain(chain_spec, ck_config["data"]["sample_rate"])
    with torch.no_grad():
        r = evaluate(model, chain, style_val_batches(ck_config, chain_spec))
    return {"style_val_mrstft_input": r["mrstft_input"], "style_val_mrstft_model": r["mrstft_model"],
            "style_val_mrstft_reduction": r["reduction_pct"]}


if __name__ == "__main__":
    sys.exit(main())
