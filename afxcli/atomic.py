"""Atomic file writes: a temporary file in the destination folder, flushed to disk, then
``os.replace`` over the target. Readers see either the old file or the complete new one, and a
failure (including Ctrl-C) leaves no partial or temporary file behind."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import AfxError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", make_parents: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it is fsynced, given
    the existing file's permissions (or the umask's) and renamed over ``path``.

    Raises a one-line :class:`AfxError` naming ``path`` when its folder is missing (unless
    ``make_parents``), is not a folder, or ``path`` itself is a folder."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, not mode {mode!r}")
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        raise AfxError(f"{p}: output folder {folder} does not exist")
    if not folder.is_dir():
        raise AfxError(f"{p}: {folder} is not a folder")
    if p.is_dir():
        raise AfxError(f"{p}: is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise AfxError(f"{p}: cannot write in {folder} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.stat().st_mode & 0o7777 if p.exists() else (0o666 & ~_UMASK))
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically, creating its folder if needed."""
    import torch

    with atomic_open(path, "wb", make_parents=True) as f:
        torch.save(obj, f)
    return Path(path)
