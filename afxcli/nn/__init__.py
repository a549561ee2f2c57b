"""Networks that turn audio into effect parameters (DESIGN.md §4).

audio ``(batch, channels, samples)`` at the model rate
  → front end (:mod:`.frontends`: log-mel + batch norm, ``|STFT|^0.3``, CQT)
  → encoder (:mod:`.encoders`: MobileNetV2-style, time–frequency) → embedding or per-frame embeddings
  → controller (:mod:`.controller`: style / blind heads) → ``q (batch, P)`` in (0, 1)
    or frame-wise head (:mod:`.framewise`) → ``q (batch, P, frames)`` in (0, 1)
  → ``Chain.denormalize(q)`` → physical parameters.

The names below are imported on first use (PEP 562), so that :mod:`.numpy_infer` (the torch-free
inference of the shipped style models) can be imported without torch.
"""
from importlib import import_module

_EXPORTS = {
    "BlindModel": "controller", "ParamHead": "controller", "StyleController": "controller",
    "StyleModel": "controller",
    "ENCODERS": "encoders", "Analyzer": "encoders", "Encoder": "encoders", "MobileNetEncoder": "encoders",
    "TFEncoder": "encoders", "make_analyzer": "encoders", "make_encoder": "encoders",
    "FrameWiseHead": "framewise", "FrameWiseModel": "framewise", "frames_to_blocks": "framewise",
    "CQT": "frontends", "FRONTENDS": "frontends", "FrontEnd": "frontends", "LogMel": "frontends",
    "PowerSTFT": "frontends", "make_frontend": "frontends",
}

__all__ = sorted(_EXPORTS)


_SUBMODULES = ("controller", "encoders", "framewise", "frontends", "stats", "numpy_infer")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
