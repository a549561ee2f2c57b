"""Training: datasets, the loop, checkpoints, tasks and configs behind ``afx train``.

``run_training(task, config_path, out_dir, resume=True)`` is the one call the CLI makes:
config file → validated config (:mod:`.config`) → the task's loop (:func:`.loop.train`, or the
task's own ``run``) → :class:`~afxcli.train.loop.TrainResult`. ``load_for_inference(path)``
returns ``(model, chain_spec, config)`` from a checkpoint or run folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .checkpoint import load_checkpoint, load_for_inference, save_checkpoint  # noqa: F401
from .config import load_config, validate_config  # noqa: F401
from .loop import LRSchedule, TrainResult, train  # noqa: F401
from .tasks import TASKS, Task, get_task, register_task  # noqa: F401


def run_training(task: str | None, config_path: str | Path | None, out_dir: str | Path, resume: bool = True,
                 quiet: bool = False, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> TrainResult:
    """Validate the config for ``task`` and train (resuming from ``out_dir`` when asked)."""
    config = load_config(config_path, task, overrides)
    cls = get_task(config["task"])
    if cls.run is not None:
        return cls.run(config, out_dir, resume=resume, quiet=quiet, **kwargs)
    return train(config, out_dir, resume=resume, quiet=quiet, **kwargs)
