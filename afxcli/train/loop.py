"""The generic training loop behind ``afx train``.

``train(config, out_dir)`` builds the task named in the config (:mod:`afxcli.train.tasks`), then
repeats: batch → ``task.loss`` → backward → gradient clipping → Adam/AdamW step at the scheduled
learning rate; validates every ``val_every_steps`` (early stopping after ``patience`` validations
without an improvement of ``min_delta``), checkpoints every ``checkpoint_every_steps`` and at the
end, and appends one JSON line per logged step to ``log.jsonl``.

Interruption and resumption (a background run dies with its session):

- ``last.pt`` is written atomically; a run killed at any moment resumes from the last one written;
- SIGINT/SIGTERM/SIGHUP or ``max_seconds`` stop the loop after the current step, checkpointed;
- ``resume=True`` restores model, optimizer, step, the global RNG states (python, NumPy, torch),
  the best validation loss and early-stopping count and the task's own state (e.g. an SPSA ε
  schedule). Data are addressed by step (:mod:`afxcli.train.data`) and the learning rate is a
  pure function of the step, so a resumed run reproduces an uninterrupted one bit for bit
  (tested). Log lines after the resumed step are dropped so the log reads as one run.

Learning-rate schedules (:class:`LRSchedule`): ``constant`` and ``cosine`` (each with optional
linear warm-up; cosine anneals to ``min_lr_fraction·lr``, Loshchilov & Hutter, SGDR, 2017) and
``one_cycle`` (Smith & Topin, "Super-convergence", 2019: cosine rise from ``lr/div_factor`` to
``lr`` over ``pct_start`` of the steps, then cosine fall to ``lr/(div_factor·final_div_factor)``).
"""
from __future__ import annotations

import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..errors import AfxError
from .checkpoint import (BEST_NAME, LAST_NAME, LOG_NAME, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)

#: Config keys that may differ between a checkpoint and the config resuming it (they do not
#: change what the run computes).
RESUMABLE_CHANGES = frozenset({"max_seconds", "workers", "threads", "log_every_steps",
                               "checkpoint_every_steps"})


class LRSchedule:
    """Learning rate as a pure function of the optimizer step (0-based), from the config keys
    ``schedule``, ``lr``, ``steps``, ``warmup_steps``, ``min_lr_fraction``, ``one_cycle_*``."""

    def __init__(self, config: dict) -> None:
        self.kind = config["schedule"]
        self.lr = float(config["lr"])
        self.steps = int(config["steps"])
        self.warmup = int(config.get("warmup_steps", 0))
        self.min_fraction = float(config.get("min_lr_fraction", 0.0))
        self.pct_start = float(config.get("one_cycle_pct_start", 0.3))
        self.div = float(config.get("one_cycle_div_factor", 25.0))
        self.final_div = float(config.get("one_cycle_final_div_factor", 1e4))

    @staticmethod
    def _cos(start: float, end: float, frac: float) -> float:
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))

    def __call__(self, step: int) -> float:
        if self.kind == "one_cycle":
            rise = max(1, int(round(self.pct_start * self.steps)) - 1)
            fall = max(1, self.steps - 1 - rise)
            lo = self.lr / self.div
            if step <= rise:
                return self._cos(lo, self.lr, step / rise)
            return self._cos(self.lr, lo / self.final_div, (step - rise) / fall)
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            span = max(1, self.steps - self.warmup - 1)
            return self._cos(self.lr, self.lr * self.min_fraction, (step - self.warmup) / span)
        raise AfxError(f"unknown schedule {self.kind!r}")


def make_optimizer(params: list[torch.nn.Parameter], config: dict) -> torch.optim.Optimizer:
    """Adam or AdamW (``optimizer``) with ``lr``, ``betas`` and ``weight_decay``."""
    cls = torch.optim.AdamW if config["optimizer"] == "adamw" else torch.optim.Adam
    return cls(params, lr=float(config["lr"]), betas=tuple(config["betas"]),
               weight_decay=float(config["weight_decay"]))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What a run did: where its files are, how far it got and the validation losses."""

    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    step: int
    steps: int
    stop_reason: str  # "finished", "early_stopped", "interrupted", "time_limit", "already_finished"
    best_val_loss: float | None
    best_step: int | None
    val_history: list[dict] = field(default_factory=list)  # {"step", "val_loss"} this session

    @property
    def finished(self) -> bool:
        return self.stop_reason in ("finished", "early_stopped", "already_finished")


class _StopFlag:
    """Set by SIGINT/SIGTERM/SIGHUP while the loop runs (handlers restored afterwards)."""

    SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                try:
                    self._old[s] = signal.signal(s, self._handle)
                except (ValueError, OSError):
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Progress:
    """A rich progress bar on stderr (terminal only, not when quiet)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("train", total=total, completed=start, info="")
        self._bar.start()

    def update(self, step: int, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _config_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]


def _trim_log(path: Path, step: int) -> None:
    """Keep only log lines up to ``step`` (after resuming from that step)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    write_text_atomic(path, "".join(x + "\n" for x in kept))


def load_initial_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load the model weights of checkpoint ``path`` into ``model`` (fine-tuning start); the
    architecture must match exactly (one-line AfxError naming the first differing tensor)."""
    ck = load_checkpoint(path)
    state = ck.get("model_state")
    if not isinstance(state, dict):
        raise AfxError(f"{path}: the checkpoint holds no model weights")
    own = model.state_dict()
    for k, v in own.items():
        if k not in state or tuple(state[k].shape) != tuple(v.shape):
            got = tuple(state[k].shape) if k in state else "missing"
            raise AfxError(f"{path}: init_weights does not fit this model ({k}: {got}, model {tuple(v.shape)})")
    extra = sorted(set(state) - set(own))
    if extra:
        raise AfxError(f"{path}: init_weights has tensors this model lacks ({extra[0]} …)")
    model.load_state_dict(state)


def train(config: dict, out_dir: str | Path, resume: bool = True, quiet: bool = False,
          progress: bool | None = None, stop_at_step: int | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by a validated ``config`` in ``out_dir``.

    Args:
        config: from :func:`afxcli.train.config.load_config` (task, loop keys, data, chain).
        out_dir: run folder: ``last.pt``, ``best.pt``, ``log.jsonl``.
        resume: continue from ``out_dir/last.pt`` when it exists (its config must match, except
            :data:`RESUMABLE_CHANGES`); False starts over (the old log is replaced).
        quiet: no progress bar and no status lines.
        progress: force the progress bar on/off (default: on for a terminal unless quiet).
        stop_at_step: stop (checkpointed, resumable, like an interruption) once this step is
            reached — for tests and for running a long job in slices.
        log: where status lines go (default: stderr).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    try:
        return _train(config, out, resume, quiet, progress, stop_at_step, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(config: dict, out: Path, resume: bool, quiet: bool, progress: bool | None,
           stop_at_step: int | None, log: Callable[[str], None] | None) -> TrainResult:
    from .tasks import get_task

    last_path, best_path, log_path = out / LAST_NAME, out / BEST_NAME, out / LOG_NAME
    say = (lambda m: None) if quiet else (log or (lambda m: print(m, file=sys.stderr, flush=True)))

    seed_everything(int(config["seed"]))
    task = get_task(config["task"])(config)
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AfxError(f"task {config['task']}: the model has no trainable parameters")
    optimizer = make_optimizer(params, config)
    schedule = LRSchedule(config)
    total = int(config["steps"])

    step, best_val, best_step, bad_vals = 0, None, None, 0
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        diff = _config_diff(ck["config"], config)
        if diff:
            raise AfxError(f"{last_path}: config differs from the checkpoint's in {', '.join(diff)}; "
                           "use --no-resume or another --out folder")
        model.load_state_dict(ck["model_state"])
        optimizer.load_state_dict(ck["optimizer_state"])
        step, best_val, best_step, bad_vals = int(ck["step"]), ck["best_val_loss"], ck["best_step"], int(ck["bad_validations"])
        task.load_state_dict(ck.get("extra") or {})
        set_rng_state(ck["rng"])
        _trim_log(log_path, step)
        if ck.get("finished"):
            say(f"{last_path}: already finished at step {step} ({ck.get('stop_reason')})")
            return TrainResult(out, last_path, best_path if best_path.is_file() else None, step, total,
                               "already_finished", best_val, best_step)
        say(f"resuming {config['task']} from step {step} of {total} ({last_path})")
    else:  # a fresh start: nothing of an older run in this folder may pass for this one's
        for stale in (log_path, best_path, last_path):
            if stale.exists():
                stale.unlink()
        if config.get("init_weights"):
            load_initial_weights(model, config["init_weights"])
            say(f"starting from the weights of {config['init_weights']}")

    def payload(finished: bool, reason: str) -> dict:
        return {"task": config["task"], "config": config, "chain_spec": task.chain_spec,
                "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                "step": step, "best_val_loss": best_val, "best_step": best_step,
                "bad_validations": bad_vals, "rng": rng_state(), "extra": task.state_dict(),
                "finished": finished, "stop_reason": reason}

    val_batches = task.val_batches()
    val_every, ckpt_every = int(config["val_every_steps"]), int(config["checkpoint_every_steps"])
    history: list[dict] = []
    reason = "finished"
    t_start = time.monotonic()
    show = (not quiet and sys.stderr.isatty()) if progress is None else (progress and not quiet)
    bar = _Progress(total, step, show)
    generator = torch.Generator().manual_seed(int(config["seed"]))  # keep the global RNG untouched
    loader = torch.utils.data.DataLoader(
        task.train_dataset(), num_workers=int(config["workers"]), generator=generator,
        batch_sampler=_sampler(int(config["batch_size"]), step, total - step))

    def validate() -> float:
        nonlocal best_val, best_step, bad_vals
        model.eval()
        with torch.no_grad():
            losses = [float(task.val_loss(b)) for b in val_batches]
        model.train()
        v = float(np.mean(losses)) if losses else float("nan")
        improved = best_val is None or v < best_val - float(config["min_delta"])
        if improved:
            best_val, best_step, bad_vals = v, step, 0
            save_checkpoint(best_path, payload(False, "best"))
        else:
            bad_vals += 1
        entry = {"step": step, "val_loss": v, "best_val_loss": best_val}
        history.append(entry)
        logf.write(json.dumps(entry) + "\n")
        logf.flush()
        return v

    try:
        with open(log_path, "a") as logf, _StopFlag() as stop:
            if step == 0 and val_batches:
                v0 = validate()
                say(f"step 0: val_loss {v0:.6g}")
            model.train()
            for batch in loader:
                lr = schedule(step)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = task.loss(batch, step)
                if not torch.isfinite(loss.detach()):
                    raise AfxError(f"loss is {float(loss.detach())} at step {step}; lower lr or check the data "
                                   f"(last good checkpoint: {last_path})")
                loss.backward()
                loss_value = float(loss.detach())
                if config["grad_clip_norm"] is not None:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, float(config["grad_clip_norm"])))
                else:
                    gnorm = float(torch.linalg.vector_norm(torch.stack(
                        [p.grad.detach().norm() for p in params if p.grad is not None])))
                if math.isfinite(gnorm):
                    optimizer.step()
                else:
                    # an inf/NaN gradient (e.g. a chain adjoint at an extreme setting) would turn every
                    # weight into NaN through the clipping (x·c/inf); skip this update, as mixed-precision
                    # loss scalers do, and log it
                    optimizer.zero_grad(set_to_none=True)
                    logf.write(json.dumps({"step": step + 1, "skipped_update": "non-finite gradient",
                                           "loss": loss_value}) + "\n")
                    logf.flush()
                step += 1
                task.on_step_end(step)
                dt = time.perf_counter() - t0
                if step % int(config["log_every_steps"]) == 0 or step == total:
                    logf.write(json.dumps({"step": step, "loss": loss_value, "lr": lr, "grad_norm": gnorm,
                                           "time_s": round(dt, 6)}) + "\n")
                    logf.flush()
                info = f"loss {loss_value:.4g} lr {lr:.2e}"
                if val_batches and ((val_every and step % val_every == 0) or step == total):
                    v = validate()
                    info += f" val {v:.4g}"
                    if not show:
                        say(f"step {step}: loss {loss_value:.6g} val_loss {v:.6g} (best {best_val:.6g} at {best_step})")
                    if config["patience"] and bad_vals >= int(config["patience"]):
                        reason = "early_stopped"
                bar.update(step, info)
                if step >= total:
                    break
                if reason == "early_stopped":
                    break
                if stop.signum is not None:
                    reason = "interrupted"
                    break
                if config["max_seconds"] is not None and time.monotonic() - t_start >= float(config["max_seconds"]):
                    reason = "time_limit"
                    break
                if stop_at_step is not None and step >= stop_at_step:
                    reason = "interrupted"
                    break
                if ckpt_every and step % ckpt_every == 0:
                    save_checkpoint(last_path, payload(False, "running"))
    finally:  # a second signal (KeyboardInterrupt mid-step) leaves the last periodic checkpoint as is
        bar.close()
    finished = reason in ("finished", "early_stopped")
    save_checkpoint(last_path, payload(finished, reason))
    if reason == "interrupted" or reason == "time_limit":
        say(f"stopped at step {step} of {total} ({reason}); resume with the same command")
    return TrainResult(out, last_path, best_path if best_path.is_file() else None, step, total, reason,
                       best_val, best_step, history)


def _sampler(batch_size: int, start_step: int, steps: int):
    from .data import StepBatchSampler

    return StepBatchSampler(batch_size, start_step, max(0, steps))
