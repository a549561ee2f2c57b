"""The reference side shared by ``afx master`` and ``afx style-transfer`` (no heavy imports)."""
from __future__ import annotations

import numpy as np


class ReferenceEmbedding:
    """Mixin for a batch context with ``style_preset``, ``predictor``, ``ref_audio``, ``ref_sr``,
    ``_ref_embedding`` (initially ``None``) and ``_lock`` (a ``threading.Lock``): the style
    embedding to match — an adaptive preset's stored one, or the reference's, computed once per
    batch however many worker threads ask (and, for a model with a matched EQ stage, the reference's
    spectra, and the features test-time refinement matches)."""

    def reference_features(self, max_hz: float):
        """The reference recording's :func:`afxcli.tasks.refine.recording_features` up to
        ``max_hz`` (computed once per batch and band limit; imports torch)."""
        from .refine import recording_features

        key = round(max_hz)
        with self._lock:
            cache = self.__dict__.setdefault("_ref_features", {})
            if key not in cache:
                cache[key] = recording_features(self.ref_audio, self.ref_sr, max_hz)
            return cache[key]

    def reference_embedding(self) -> np.ndarray:
        if self.style_preset is not None:
            return self.style_preset.embedding
        with self._lock:
            if self._ref_embedding is None:
                self._ref_embedding = self.predictor.embed(self.ref_audio, self.ref_sr)
            return self._ref_embedding

    def reference_spectra(self):
        """The reference side of a matched EQ stage (:meth:`afxcli.tasks.style.StylePredictor.
        reference_spectra`), computed once per batch; an adaptive preset's stored spectrum stands
        at both rates; None when there is neither."""
        if self.style_preset is not None:
            s = self.style_preset.spectrum
            return None if s is None else (s, s)
        with self._lock:
            if getattr(self, "_ref_spectra", None) is None:
                self._ref_spectra = self.predictor.reference_spectra(self.ref_audio, self.ref_sr)
            return self._ref_spectra
