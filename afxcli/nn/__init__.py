"""Networks that turn audio into effect parameters (DESIGN.md §4).

audio ``(batch, channels, samples)`` at the model rate
  → front end (:mod:`.frontends`: log-mel + batch norm, ``|STFT|^0.3``, CQT)
  → encoder (:mod:`.encoders`: MobileNetV2-style, time–frequency) → embedding or per-frame embeddings
  → controller (:mod:`.controller`: style / blind heads) → ``q (batch, P)`` in (0, 1)
    or frame-wise head (:mod:`.framewise`) → ``q (batch, P, frames)`` in (0, 1)
  → ``Chain.denormalize(q)`` → physical parameters.
"""
from .controller import BlindModel, ParamHead, StyleController, StyleModel
from .encoders import ENCODERS, Analyzer, Encoder, MobileNetEncoder, TFEncoder, make_analyzer, make_encoder
from .framewise import FrameWiseHead, FrameWiseModel, frames_to_blocks
from .frontends import CQT, FRONTENDS, FrontEnd, LogMel, PowerSTFT, make_frontend

__all__ = [
    "Analyzer", "BlindModel", "Encoder", "CQT", "ENCODERS", "FRONTENDS", "FrameWiseHead", "FrameWiseModel",
    "FrontEnd", "LogMel", "MobileNetEncoder", "ParamHead", "PowerSTFT", "StyleController",
    "StyleModel", "TFEncoder", "frames_to_blocks", "make_analyzer", "make_encoder", "make_frontend",
]
