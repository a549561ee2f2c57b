"""afx: audio production with interpretable effect chains driven by small neural networks."""

__version__ = "0.1.0"
