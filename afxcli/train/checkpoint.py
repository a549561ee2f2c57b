"""Checkpoints: everything needed to resume a run, or to use its model, in one file.

A checkpoint is a ``torch.save`` dict (loaded with ``weights_only=True``: plain containers, numbers,
strings and tensors only, so loading runs no pickled code)::

    format "afx-checkpoint", version 1, task, config (the complete validated config, JSON-able),
    chain_spec, model_state, optimizer_state, step, best_val_loss, best_step, bad_validations,
    rng (python / numpy / torch generator states), extra (task state, e.g. an SPSA ε schedule),
    finished (bool), stop_reason

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``): an interrupted save
leaves the previous checkpoint intact. A run folder holds ``last.pt`` (latest state), ``best.pt``
(the model with the lowest validation loss) and ``log.jsonl``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import torch_save_atomic
from ..errors import AfxError

CHECKPOINT_FORMAT = "afx-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
LOG_NAME = "log.jsonl"
PROXY_NAME = "proxy.pt"


def _is_proxy_checkpoint(path: Path) -> bool:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_checkpoint reports unreadable files
        return False
    return isinstance(data, dict) and data.get("format") == "afx-proxy"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (with format and version added) to ``path`` atomically."""
    p = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    torch_save_atomic(data, p)
    return p


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (``weights_only``); one-line AfxError for a missing or foreign file."""
    p = Path(path)
    if p.is_dir():
        p = p / LAST_NAME
    if not p.is_file():
        raise AfxError(f"{p}: no such checkpoint")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise AfxError(f"{p}: not a readable afx checkpoint ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise AfxError(f"{p}: not an afx checkpoint")
    if int(data.get("version", 0)) > CHECKPOINT_VERSION:
        raise AfxError(f"{p}: checkpoint version {data.get('version')} is newer than this afx understands")
    return data


def rng_state() -> dict:
    """Python, NumPy and torch (CPU) global generator states, as checkpoint-safe containers."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def load_for_inference(path: str | Path) -> tuple[torch.nn.Module, dict | None, dict]:
    """Load a trained model in one call: ``(model, chain_spec, config)``.

    The task named in the checkpoint rebuilds its model from the stored config (and chain spec),
    loads the weights and returns it in eval mode. ``path`` may be a run folder (its ``best.pt``
    when there is one, else ``last.pt``) or a checkpoint file.
    """
    from .tasks import get_task

    p = Path(path)
    if p.is_dir():
        if (p / BEST_NAME).is_file() or (p / LAST_NAME).is_file():
            p = p / BEST_NAME if (p / BEST_NAME).is_file() else p / LAST_NAME
        elif (p / PROXY_NAME).is_file():
            p = p / PROXY_NAME
    if p.is_file() and _is_proxy_checkpoint(p):  # `afx train proxy` output
        from ..grad.proxy import load_proxy, read_proxy_checkpoint

        model, chain = load_proxy(p)
        ck = read_proxy_checkpoint(p)
        return model, chain.spec, {"task": "proxy", "sample_rate": chain.sample_rate,
                                   "model": ck.get("config"), "train": ck.get("train_config")}
    data = load_checkpoint(p)
    cls = get_task(str(data["task"]))
    model = cls.build_model(data["config"], data.get("chain_spec"))
    try:
        model.load_state_dict(data["model_state"])
    except RuntimeError as e:
        raise AfxError(f"{p}: weights do not fit the {data['task']} model ({' '.join(str(e).split())[:200]})") from None
    model.eval()
    return model, data.get("chain_spec"), data["config"]
