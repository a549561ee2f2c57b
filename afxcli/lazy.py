"""Modules imported on first use: ``torch = lazy_module("torch")`` lets the effects, chains and
parameter specs be imported (and rendered with pedalboard) without importing torch, which takes
seconds; the torch forms import it the first time they touch it."""
from __future__ import annotations

import importlib
import sys
from typing import Any


class LazyModule:
    """Stands for the module ``name``; the first attribute access imports it."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def __getattr__(self, attr: str) -> Any:
        mod = self._module
        if mod is None:
            mod = importlib.import_module(self._name)
            object.__setattr__(self, "_module", mod)
        return getattr(mod, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)


def is_tensor(x: Any) -> bool:
    """``isinstance(x, torch.Tensor)`` without importing torch (no tensor exists before it is)."""
    tensor = getattr(sys.modules.get("torch"), "Tensor", None)  # None also while torch is half-imported
    return tensor is not None and isinstance(x, tensor)


torch = lazy_module("torch")
