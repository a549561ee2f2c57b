"""The reference side shared by ``afx master`` and ``afx style-transfer`` (no heavy imports)."""
from __future__ import annotations

import threading

import numpy as np


class ReferenceEmbedding:
    """Mixin for a batch context with ``style_preset``, ``predictor``, ``ref_audio``, ``ref_sr``
    and ``_lock`` (a ``threading.Lock``): the style embedding to match — an adaptive preset's
    stored one, or the reference's, computed once per batch however many worker threads ask (and,
    for a model with a matched EQ stage, the reference's spectra, and the features test-time
    refinement matches). Each item has its own lock (:meth:`_once`): a thread waiting for one
    item is not held up by another item being computed."""

    def _once(self, key, compute):
        """``compute()``, the first time ``key`` is asked for in this batch; its cached value
        after that. Threads asking for the same key wait for the one computing it; a failure is
        not cached (the next caller computes it again and gets the error)."""
        with self._lock:
            locks = self.__dict__.setdefault("_once_locks", {})
            cache = self.__dict__.setdefault("_once_values", {})
            lock = locks.setdefault(key, threading.Lock())
        with lock:
            if key not in cache:
                cache[key] = compute()
            return cache[key]

    def reference_features(self, max_hz: float):
        """The reference recording's :func:`afxcli.tasks.refine.recording_features` up to
        ``max_hz`` (computed once per batch and band limit; imports torch)."""
        from .refine import recording_features

        return self._once(("features", round(max_hz)),
                          lambda: recording_features(self.ref_audio, self.ref_sr, max_hz))

    def prefetch_reference(self) -> threading.Thread | None:
        """Start the reference's analysis (its matched-EQ spectra when the model has that stage,
        then its embedding) in a daemon thread, so that it overlaps the first input's decoding and
        analysis instead of preceding them; None when there is nothing to analyze (no model, or
        an adaptive preset). The results land in the once-per-batch caches (:meth:`_once`), so a
        caller that gets there first waits for them or computes them itself; an error is left for
        that caller to raise. It leaves BLAS's thread count alone (process-wide: the caller sets
        it, :mod:`afxcli.blas`)."""
        if self.predictor is None or self.ref_audio is None or self.style_preset is not None:
            return None

        def run() -> None:
            try:
                if self.predictor.match_eq:
                    self.reference_spectra()
                self.reference_embedding()
            except Exception:  # noqa: BLE001 - the caller computes it again and reports
                pass

        t = threading.Thread(target=run, name="afx-reference", daemon=True)
        t.start()
        return t

    def finish_reference(self) -> None:
        """Wait for :meth:`prefetch_reference`'s thread, if one was started. Call it before the
        process exits: a batch whose inputs all fail early (an unreadable file) would otherwise end
        the interpreter while that thread is inside native code, which aborts the process
        ("terminate called without an active exception", exit status 134) instead of letting it
        exit with its error status."""
        t = getattr(self, "reference_thread", None)
        if t is not None:
            t.join()

    def reference_embedding(self) -> np.ndarray:
        """The embedding ``(embed_dim,)`` to match: the adaptive preset's, or the reference's."""
        if self.style_preset is not None:
            return self.style_preset.embedding
        return self._once("embedding", lambda: self.predictor.embed(self.ref_audio, self.ref_sr))

    def reference_spectra(self):
        """The reference side of a matched EQ stage (:meth:`afxcli.tasks.style.StylePredictor.
        reference_spectra`), computed once per batch; an adaptive preset's stored spectrum stands
        at both rates; None when there is neither."""
        if self.style_preset is not None:
            s = self.style_preset.spectrum
            return None if s is None else (s, s)
        return self._once("spectra", lambda: self.predictor.reference_spectra(self.ref_audio, self.ref_sr))
