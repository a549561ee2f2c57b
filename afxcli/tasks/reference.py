"""The reference side shared by ``afx master`` and ``afx style-transfer`` (no heavy imports)."""
from __future__ import annotations

import numpy as np


class ReferenceEmbedding:
    """Mixin for a batch context with ``style_preset``, ``predictor``, ``ref_audio``, ``ref_sr``,
    ``_ref_embedding`` (initially ``None``) and ``_lock`` (a ``threading.Lock``): the style
    embedding to match — an adaptive preset's stored one, or the reference's, computed once per
    batch however many worker threads ask."""

    def reference_embedding(self) -> np.ndarray:
        if self.style_preset is not None:
            return self.style_preset.embedding
        with self._lock:
            if self._ref_embedding is None:
                self._ref_embedding = self.predictor.embed(self.ref_audio, self.ref_sr)
            return self._ref_embedding

    def reference_spectrum(self):
        """An adaptive preset's stored spectrum ``((freqs_hz, power), rate)`` (None with a
        reference recording, whose own spectrum is used, or a preset without one)."""
        return self.style_preset.spectrum if self.style_preset is not None else None
