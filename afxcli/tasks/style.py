"""Style transfer (``afx style-transfer``): DeepAFx-ST inference on whole files.

audio → mono analysis copy at the model rate → shared encoder, long files by windows averaged
(:meth:`Analyzer.embed_windows`) → embedding of the input and of the reference (or an adaptive
preset's stored embedding) → controller → normalized chain parameters → physical values (denormalized
with the chain at the model rate, where the model learned them, then clipped into the ranges at the
file's rate) → pedalboard render of the chain at the file's own rate, full length → audio (+ trace).

:class:`StylePredictor` is the small interface the commands use: ``StylePredictor.load(path)``,
``embed(audio, sr)``, ``predict(input_audio, input_sr, ref_audio, ref_sr)`` → per-effect values.
It loads a checkpoint of the ``style`` training task through
:func:`afxcli.train.checkpoint.load_for_inference`.

Adaptive presets (``"format": "afx-style-preset"``): a stored style embedding with a description
and the id of the model that made it, used in place of a reference embedding.
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import AfxError
from .reference import ReferenceEmbedding

STYLE_PRESET_FORMAT = "afx-style-preset"
STYLE_PRESET_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
#: Shipped models by name (``--model music``); trained by ``scripts/train_style.py``.
DEFAULT_MODELS = {"music": MODELS_DIR / "style_music.pt", "speech": MODELS_DIR / "style_speech.pt"}
#: Analysis window when the checkpoint does not say how long its training clips were.
DEFAULT_WINDOW_SECONDS = 5.0
#: At most this many analysis windows per file, evenly spread over it (speed on long files).
MAX_WINDOWS = 12


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def save_style_checkpoint(path: str | Path, model, chain_spec: dict, config: dict) -> Path:
    """Write ``model`` as a ``style``-task checkpoint readable by :meth:`StylePredictor.load`."""
    from ..train.checkpoint import save_checkpoint

    return save_checkpoint(path, {"task": "style", "config": config, "chain_spec": chain_spec,
                                  "model_state": model.state_dict(), "step": 0})


def resolve_model_path(model: str | Path | None, kind: str = "music") -> Path:
    """``None`` → the shipped model of ``kind``; ``music``/``speech`` → that shipped model; else a path."""
    if model is None:
        model = kind
    p = DEFAULT_MODELS.get(str(model), Path(model))
    if not p.exists():
        hint = " (the shipped models are trained by scripts/train_style.py; or use --method rule-based)" \
            if str(model) in DEFAULT_MODELS else ""
        raise AfxError(f"{p}: no such model{hint}")
    return p


def resolve_model_for_preset(model: str | Path | None, kind: str, preset: "StylePreset | None") -> Path:
    """The model to run with an adaptive ``preset`` (an embedding means something only to the
    model that made it): with no ``model`` given, the shipped model whose id (the first 16 hex
    digits of the ``.pt``'s SHA-256) is the preset's ``model_id``; else ``model`` as
    :func:`resolve_model_path` resolves it. Without a preset, or for a preset that records no
    model, just :func:`resolve_model_path`. :func:`check_preset_model` then checks the loaded
    model."""
    if preset is None or not preset.model_id or model is not None:
        return resolve_model_path(model, kind)
    from ..nn.numpy_infer import sha256_of

    for p in DEFAULT_MODELS.values():
        if p.is_file() and sha256_of(p)[:16] == preset.model_id:
            return p
    raise AfxError(f"{preset.path}: made with model {preset.model_id}, which is not a shipped model; "
                   "give --model PATH, the model it was made with")


def check_preset_model(preset: "StylePreset | None", predictor: "StylePredictor | None") -> None:
    """Refuse an adaptive preset whose embedding was made with another model than ``predictor``
    (a different id, or a different embedding size)."""
    if preset is None or predictor is None:
        return
    if preset.embedding.size != predictor.embed_dim:
        raise AfxError(f"{preset.path}: embedding of size {preset.embedding.size}, the model's is "
                       f"{predictor.embed_dim} (made with another model)")
    if preset.model_id and predictor.model_id and preset.model_id != predictor.model_id:
        raise AfxError(f"{preset.path}: made with model {preset.model_id}, not with {predictor.path} "
                       f"({predictor.model_id}); leave out --model or give the model it was made with")


class StylePredictor:
    """A loaded style model with its chain: embeddings and per-effect values for whole files.

    Two interchangeable backends: the torch model (``model``), or its NumPy forward pass
    (``numpy_model``, :class:`afxcli.nn.numpy_infer.NumpyStyleModel`, equal to the torch model up
    to float32 round-off) which :meth:`load` uses when a matching ``.npz`` lies next to the ``.pt``:
    then inference imports no torch (``model`` still loads the torch model on first access)."""

    def __init__(self, model, chain_spec: dict, config: dict, model_id: str = "",
                 path: Path | None = None, numpy_model=None) -> None:
        if chain_spec is None:
            raise AfxError("style model checkpoint has no chain spec")
        if model is None and numpy_model is None:
            raise AfxError("internal: a style predictor needs a torch or a numpy model")
        self._model = model.eval() if model is not None else None
        self.numpy_model = numpy_model
        self.chain_spec = chain_spec
        self.config = config or {}
        self.model_id = model_id
        self.path = path
        self._model_chain = None
        clip = (self.config.get("data") or {}).get("clip_samples")
        # the model was trained on half-crops (input and reference halves, DeepAFx-ST §2.1)
        self.window_samples = int(clip) // 2 if clip else int(DEFAULT_WINDOW_SECONDS * self.sample_rate)
        self._lock = threading.Lock()
        if model is not None:
            self.model_chain  # noqa: B018 - checks the chain against the model now

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto") -> "StylePredictor":
        """Load a style model. ``backend``: ``auto`` (the NumPy forward pass when the ``.npz`` next
        to ``path`` was exported from exactly this file, by SHA-256; else torch), ``numpy`` (that
        npz or a one-line error) or ``torch``."""
        from ..nn.numpy_infer import load_npz, npz_path_for, sha256_of

        if backend not in ("auto", "numpy", "torch"):
            raise AfxError(f"style model backend must be auto, numpy or torch, not {backend!r}")
        p = Path(path)
        if backend != "torch" and p.is_file():
            sha = sha256_of(p)
            nm = load_npz(npz_path_for(p), pt_sha256=sha)
            if nm is not None and str((nm.config or {}).get("task", "style")) == "style":
                return cls(None, nm.chain_spec, nm.config, sha[:16], p, numpy_model=nm)
        if backend == "numpy":
            raise AfxError(f"{npz_path_for(p)}: no numpy export of {p} (or it was exported from another "
                           "file); run scripts/export_style_npz.py")
        model, spec, config = cls._load_torch(p)
        return cls(model, spec, config, sha256_of(p)[:16] if p.is_file() else "", p)

    @staticmethod
    def _load_torch(p: Path):
        from ..train.checkpoint import load_checkpoint, load_for_inference
        from ..train.tasks import TASKS

        data = load_checkpoint(p)
        task = str(data.get("task"))
        if task != "style" or task not in TASKS:
            raise AfxError(f"{p}: a {task!r} checkpoint, not a style model")
        model, spec, config = load_for_inference(p)
        if not hasattr(model, "analyzer") or not hasattr(model, "controller"):
            raise AfxError(f"{p}: not a style model (no analyzer/controller)")
        return model, spec, config

    @property
    def model(self):
        """The torch model (loaded on first access when the NumPy backend serves inference)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_torch(self.path)[0].eval()
        return self._model

    @property
    def level_own_gain_weight(self) -> float:
        """Share of the network's own output gain in the output level (the rest: the reference's
        loudness; :func:`match_output_loudness`), from the model's config
        (``task_options.level_own_gain_weight``; 0 for a model that does not set it)."""
        return float((self.config.get("task_options") or {}).get("level_own_gain_weight", 0.0))

    @property
    def backend(self) -> str:
        return "numpy" if self.numpy_model is not None else "torch"

    @property
    def model_chain(self):
        """The model's chain at the model rate (built on first use; checked against the model)."""
        if self._model_chain is None:
            from ..effects.chain import Chain

            chain = Chain(self.chain_spec, self.sample_rate)
            n_params = self.numpy_model.n_params if self.numpy_model is not None else int(self._model.n_params)
            if chain.n_free != n_params:
                raise AfxError(f"style model predicts {n_params} parameters, its chain has "
                               f"{chain.n_free} free ones")
            self._model_chain = chain
        return self._model_chain

    @property
    def sample_rate(self) -> float:
        if self.numpy_model is not None:
            return float(self.numpy_model.sample_rate)
        return float(self._model.sample_rate)

    @property
    def embed_dim(self) -> int:
        if self.numpy_model is not None:
            return int(self.numpy_model.embed_dim)
        return int(self._model.analyzer.embed_dim)

    def _mono_analysis(self) -> bool:
        return self.numpy_model is not None or \
            getattr(self._model.analyzer.frontend, "channels", "keep") == "mono"

    @property
    def match_eq(self) -> str | None:
        """The matched-EQ first stage of the model (``"third"``/``"octave"`` bands, or None): the
        model was trained on inputs matched to the reference by :mod:`afxcli.tasks.eqmatch`."""
        return (self.config.get("data") or {}).get("match_eq")

    @property
    def match_eq_smoothness(self) -> float | None:
        """The matched-EQ fit's neighbouring-gain penalty the model was trained with (its config's
        ``data.match_eq_smoothness``; None: :data:`afxcli.tasks.eqmatch.SMOOTHNESS`)."""
        v = (self.config.get("data") or {}).get("match_eq_smoothness")
        return None if v is None else float(v)

    @property
    def render_spec(self) -> dict:
        """The chain :meth:`predict`'s values are for, rendered at the file's rate: the matched EQ
        stage (if the model has one) followed by the model's chain."""
        if not self.match_eq:
            return self.chain_spec
        from .eqmatch import match_eq_spec

        return {**self.chain_spec, "effects": [match_eq_spec(self.match_eq)] + list(self.chain_spec["effects"])}

    def analysis_copy(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """What the analyzer sees of a whole recording ``(channels, samples)``: float32
        ``(channels', samples')`` at the model rate (mono when the front end mixes to mono; a long
        file is cut to at most :data:`MAX_WINDOWS` evenly spread windows before resampling)."""
        from ..audio import resample_for_analysis as resample

        a = np.asarray(audio, dtype=np.float32)
        if self._mono_analysis() and a.shape[0] > 1:
            a = a.mean(axis=0, keepdims=True)  # the front end mixes to mono anyway (linear: same result)
        w = self.window_samples
        ratio = self.sample_rate / float(sample_rate)
        n_model = int(math.ceil(a.shape[-1] * ratio))
        if max(1, (n_model + w // 2) // w) > MAX_WINDOWS:
            # evenly spread windows stand for the whole file; cut at the file's rate, resample only them
            w_in = int(math.ceil(w / ratio)) + 1
            starts = np.linspace(0, a.shape[-1] - w_in, MAX_WINDOWS).astype(int)
            a = np.concatenate([a[:, s:s + w_in] for s in starts], axis=-1)
        return resample(a, sample_rate, self.sample_rate)

    def embed_analysis(self, x: np.ndarray) -> np.ndarray:
        """Style embedding ``(embed_dim,)`` of an :meth:`analysis_copy` (windows averaged)."""
        if self.numpy_model is not None:
            return self.numpy_model.embed_windows(x[0], self.window_samples)
        import torch

        with self._lock, torch.no_grad():  # one analysis at a time keeps torch's threads for it
            e = self._model.analyzer.embed_windows(torch.from_numpy(np.ascontiguousarray(x))[None],
                                                   self.window_samples)
        return e[0].numpy().astype(np.float64)

    def embed(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Style embedding ``(embed_dim,)`` of a whole recording ``(channels, samples)``: resampled
        to the model rate, analyzed by windows and averaged (at most :data:`MAX_WINDOWS` windows,
        evenly spread over a long file)."""
        return self.embed_analysis(self.analysis_copy(audio, sample_rate))

    @property
    def frame_hop_samples(self) -> int:
        """Hop of the model's front end (samples at :attr:`sample_rate`)."""
        if self.numpy_model is not None:
            return int(self.numpy_model.hop)
        return int(getattr(self._model.analyzer.frontend, "hop_samples", 1))

    def prediction_hop_samples(self, target_seconds: float) -> int:
        """The hop (samples at the model rate) of frame-wise predictions nearest ``target_seconds``
        that is a whole number of front-end frames (at least one): analysis windows that start on
        the front end's frame grid share every interior frame, which the NumPy backend then
        transforms once (e.g. 1 s at 24 kHz with a 256-sample hop: 94 × 256 = 24064 samples,
        1.00267 s, instead of 1 s = 93.75 hops, whose windows fall on four grid phases)."""
        hop = self.frame_hop_samples
        return max(1, int(round(float(target_seconds) * self.sample_rate / hop))) * hop

    def embed_frames(self, audio: np.ndarray, sample_rate: float, hop_seconds: float,
                     max_batch: int = 32, match_values: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame-wise style embeddings of a recording ``(channels, samples)``: one analysis window
        (the model's ``window_samples`` at its rate) centered every ``hop_seconds``, clipped to the
        file (zero-padded only when the file is shorter than a window). Returns
        ``(embeddings (n_frames, embed_dim), centers_s (n_frames,))`` with ``n_frames =
        ceil(duration / hop_seconds)``, frame ``j`` centered at ``(j + 0.5) · hop_seconds``
        (the :class:`~afxcli.trace.ParameterTrace` convention). The NumPy backend transforms the
        frames that overlapping windows share once (:mod:`afxcli.nn.numpy_infer`). ``match_values``:
        the matched EQ stage's gains at the model rate (:meth:`match_stage`), applied to the
        analysis copy first."""
        from ..audio import resample_for_analysis as resample

        if not hop_seconds > 0:
            raise AfxError(f"frame hop must be > 0 s, got {hop_seconds}")
        a = np.asarray(audio, dtype=np.float32)
        if a.shape[0] > 1:
            a = a.mean(axis=0, keepdims=True)
        x = resample(a, sample_rate, self.sample_rate)
        x = self.matched(x, match_values)
        n, w = x.shape[-1], self.window_samples
        if n < w:
            x = np.pad(x, ((0, 0), (0, w - n)))
        duration = a.shape[-1] / float(sample_rate)
        n_frames = max(1, int(math.ceil(duration / hop_seconds - 1e-9)))
        centers = (np.arange(n_frames) + 0.5) * hop_seconds
        starts = np.clip(np.round(centers * self.sample_rate).astype(np.int64) - w // 2, 0, max(0, x.shape[-1] - w))
        if self.numpy_model is not None:
            return self.numpy_model.window_embeddings(x[0], starts, w), centers
        import torch

        xt = torch.from_numpy(np.ascontiguousarray(x))
        out = []
        with self._lock, torch.no_grad():
            for i in range(0, n_frames, max_batch):
                batch = torch.stack([xt[:, s:s + w] for s in starts[i:i + max_batch]])
                out.append(self._model.analyzer(batch))
        return torch.cat(out).numpy().astype(np.float64), centers

    def predict_normalized(self, e_input: np.ndarray, e_reference: np.ndarray) -> np.ndarray:
        """Controller on two embeddings → normalized free parameters ``(n_free,)`` in (0, 1).
        ``e_input`` may also be frame-wise ``(n_frames, embed_dim)`` (:meth:`embed_frames`): then
        ``(n_frames, n_free)``, every frame against the same reference."""
        frames = np.ndim(e_input) == 2
        e_i = np.asarray(e_input, dtype=np.float64)
        e_i = e_i if frames else e_i[None]
        e_r = np.asarray(e_reference, dtype=np.float64)[None]
        if e_i.shape[1:] != e_r.shape[1:]:
            raise AfxError(f"style embeddings differ in size ({e_i.shape[1]} vs {e_r.shape[1]}); "
                           "was the preset made with another model?")
        if self.numpy_model is not None:
            q = self.numpy_model.controller(e_i, np.repeat(e_r, e_i.shape[0], axis=0))
        else:
            import torch

            with torch.no_grad():
                ti, tr = torch.as_tensor(e_i, dtype=torch.float32), torch.as_tensor(e_r, dtype=torch.float32)
                q = self._model.controller(ti, tr.expand(ti.shape[0], -1)).numpy().astype(np.float64)
        return q if frames else q[0]

    def values_frames(self, q: np.ndarray, chain) -> dict[str, np.ndarray]:
        """Normalized ``q`` ``(n_frames, n_free)`` → ``{"<label>.<param>": (n_frames,)}`` physical
        values for ``chain`` (the model's chain at the file's rate; effects after the model's, as
        ``afx master`` appends, are left out) in chain order: each free
        parameter denormalized with its spec at the model rate (BE-AFX eqs. 7-8), the others at
        their fixed/default values, then clipped into ``chain``'s ranges."""
        mc = self.model_chain
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        if q.shape[1] != mc.n_free:
            raise AfxError(f"expected {mc.n_free} normalized parameters, got {q.shape[1]}")
        phys = [{n: np.full(q.shape[0], float(v[n])) for n in fx.param_names}
                for fx, v in zip(mc.effects, mc.base_values())]
        for j, f in enumerate(mc.free):
            phys[f.effect_index][f.key.split(".", 1)[1]] = np.asarray(f.spec.denormalize(q[:, j]), dtype=np.float64)
        return {f"{lab}.{n}": np.asarray(fx.spec(n).clip(p[n]), dtype=np.float64)
                for lab, fx, p in zip(chain.labels, chain.effects, phys) for n in fx.param_names}

    def values(self, q: np.ndarray, chain) -> list[dict[str, float]]:
        """Normalized ``q`` → per-effect physical values for ``chain`` (the model's chain spec built
        at the file's rate): :meth:`values_frames` for one frame (NumPy, whichever the backend)."""
        flat = self.values_frames(np.asarray(q)[None], chain)
        return [{n: float(flat[f"{lab}.{n}"][0]) for n in fx.param_names}
                for lab, fx, _ in zip(chain.labels, chain.effects, self.model_chain.effects)]

    def reference_spectra(self, ref_audio: np.ndarray, ref_sr: float) -> tuple:
        """What the matched EQ stage needs of a reference recording ``(channels, samples)``: its
        smoothed spectrum (:func:`~afxcli.tasks.rulebased.smoothed_spectrum`) at the model rate, of
        its analysis copy, and at its own rate: ``((spectrum, model rate), (spectrum, ref_sr))``
        (a batch computes it once, :meth:`afxcli.tasks.reference.ReferenceEmbedding.reference_spectra`)."""
        from .rulebased import smoothed_spectrum

        r = self.analysis_copy(ref_audio, ref_sr)
        return ((smoothed_spectrum(r, self.sample_rate), self.sample_rate),
                (smoothed_spectrum(ref_audio, ref_sr), float(ref_sr)))

    def match_stage(self, input_audio: np.ndarray, input_sr: float, ref_spectra: tuple | None,
                    input_analysis: np.ndarray | None = None) -> tuple[dict, dict]:
        """The matched EQ stage's band gains ``(at the model rate for the analysis copy, at the
        file's rate for the render)`` for a model with :attr:`match_eq`, toward ``ref_spectra``
        (:meth:`reference_spectra`, or an adaptive preset's stored spectrum at both places; None,
        a preset that stores none: a one-line error)."""
        from .eqmatch import design_matched_geq

        if ref_spectra is None:
            raise AfxError("this style model matches the reference's spectrum first: it needs a "
                           "reference recording or a preset with a stored spectrum")
        (spec_m, rate_m), (spec_f, rate_f) = ref_spectra
        x = input_analysis if input_analysis is not None else self.analysis_copy(input_audio, input_sr)
        mu = self.match_eq_smoothness
        return (design_matched_geq(x, self.sample_rate, None, rate_m, self.match_eq, ref_spectrum=spec_m, smoothness=mu),
                design_matched_geq(input_audio, input_sr, None, rate_f, self.match_eq, ref_spectrum=spec_f,
                                   smoothness=mu))

    def matched(self, x: np.ndarray, match_values: dict | None) -> np.ndarray:
        """An :meth:`analysis_copy` after the matched EQ stage with ``match_values`` (the gains at
        the model rate from :meth:`match_stage`); ``x`` itself when None."""
        if match_values is None:
            return x
        from .eqmatch import apply_matched_geq

        return apply_matched_geq(x, self.sample_rate, match_values, self.match_eq)

    def predict(self, input_audio: np.ndarray, input_sr: float, ref_audio: np.ndarray | None = None,
                ref_sr: float | None = None, ref_embedding: np.ndarray | Callable[[], np.ndarray] | None = None,
                ref_spectrum: tuple | None = None, ref_spectra: tuple | None = None) -> list[dict[str, float]]:
        """Per-effect physical values of :attr:`render_spec` at ``input_sr`` from the reference audio
        or a stored reference embedding (with ``ref_audio`` too, it saves embedding the reference
        again). ``ref_embedding`` may be a zero-argument callable that returns it: it is called
        once the input is analyzed (a reference analyzed in another thread meanwhile,
        :meth:`afxcli.tasks.reference.ReferenceEmbedding.prefetch_reference`).

        With a matched EQ stage (:attr:`match_eq`): the stage's band gains are designed from the
        input and the reference twice — at the model rate on the analysis copies, which the input's
        embedding is then taken *after* (as in training), and at the file's rate, the values
        rendered (:meth:`match_stage`). The reference side is ``ref_spectra``
        (:meth:`reference_spectra`, computed from ``ref_audio`` when not given) or ``ref_spectrum``
        = ``((freqs_hz, power), rate)``, a stored smoothed spectrum (an adaptive preset's)."""

        if ref_embedding is None:
            if ref_audio is None or ref_sr is None:
                raise AfxError("style prediction needs a reference or a style preset")
            ref_embedding = self.embed(ref_audio, ref_sr)
        x = self.analysis_copy(input_audio, input_sr)
        first: list[dict[str, float]] = []
        if self.match_eq:
            if ref_spectra is None and ref_audio is not None and ref_sr is not None:
                ref_spectra = self.reference_spectra(ref_audio, ref_sr)
            elif ref_spectra is None and ref_spectrum is not None:
                ref_spectra = (ref_spectrum, ref_spectrum)
            g_model, g_file = self.match_stage(input_audio, input_sr, ref_spectra, x)
            first = [g_file]
            x = self.matched(x, g_model)
        e_input = self.embed_analysis(x)
        q = self.predict_normalized(e_input, ref_embedding() if callable(ref_embedding) else ref_embedding)
        from ..effects.chain import Chain   # after the analysis, which may overlap its import

        return first + self.values(q, Chain(self.chain_spec, input_sr))


def match_output_loudness(chain, audio: np.ndarray, values: list[dict[str, float]],
                          target_lufs: float, own_gain_weight: float = 0.0
                          ) -> tuple[list[dict[str, float]], np.ndarray, str | None]:
    """Render ``audio`` ``(channels, samples)`` through ``chain`` (at the file's rate) with the chain's
    **final gain** set from the reference's integrated loudness (BS.1770) ``target_lufs``:
    ``(values used, output, note or None)``. The values returned render to the same output with
    :func:`afxcli.render.render_chain` (the gain is part of the chain).

    ``own_gain_weight`` ``w`` = 0 (default): the gain that makes the output's loudness exactly
    ``target_lufs`` (``g_ref``), as the rule-based baseline (DeepAFx-ST §3.3) does. ``w`` > 0: the
    final gain is ``(1 − w)·g_ref + w·g_net`` (dB), where ``g_net`` is the network's own predicted
    output gain (DeepAFx-ST lets the network set the level). Two estimates of the level the
    reference's *style* would give this input: ``g_ref`` carries the loudness difference between the
    reference's content and the input's (a dense chorus as reference makes a sparse verse too loud),
    ``g_net`` the network's error; where their errors are only partly correlated the blend is closer
    than either (the shipped music model's ``w``, chosen on validation pairs, is in its card). A pure
    gain after the chain does not change any other effect's action (:func:`set_output_level` does
    this part on the chain's output before that gain)."""
    from ..render import render_chain

    last = len(chain.effects) - 1
    if chain.spec["effects"][last]["type"] != "gain":
        return values, render_chain(chain, audio, values), "no final gain in the chain: level not matched"
    v = [dict(e) for e in values]
    v[last]["gain_db"] = 0.0
    return set_output_level(chain, render_chain(chain, audio, v), values, target_lufs, own_gain_weight)


def set_output_level(chain, pre: np.ndarray, values: list[dict[str, float]], target_lufs: float,
                     own_gain_weight: float = 0.0) -> tuple[list[dict[str, float]], np.ndarray, str | None]:
    """:func:`match_output_loudness` from ``pre`` ``(channels, samples)``, the chain's output with
    its final gain at 0 dB (so several levels can be tried on one render)."""
    from ..render import render_effect
    from .loudness import fast_lufs

    last = len(chain.effects) - 1
    w = float(own_gain_weight)
    if not 0.0 <= w <= 1.0:
        raise AfxError(f"own_gain_weight must be in [0, 1], got {own_gain_weight}")
    v = [dict(e) for e in values]
    level = fast_lufs(pre, chain.sample_rate)
    note = None
    if not (math.isfinite(level) and math.isfinite(target_lufs)):
        v[last]["gain_db"] = float(values[last]["gain_db"])
        note = "output or reference silent or under 0.4 s: the model's own output gain is used"
    else:
        want = (1.0 - w) * (float(target_lufs) - level) + w * float(values[last]["gain_db"])
        v[last]["gain_db"] = float(chain.effects[last].spec("gain_db").clip(want))
        if abs(v[last]["gain_db"] - want) > 1e-6:
            note = f"level match needs {want:+.1f} dB, the gain is limited to {v[last]['gain_db']:+.1f} dB"
        elif w > 0.0:
            note = (f"output level {level + v[last]['gain_db']:.1f} LUFS: gain {1.0 - w:g} × the match to "
                    f"{float(target_lufs):.1f} LUFS + {w:g} × the model's own "
                    f"({float(values[last]['gain_db']):+.1f} dB)")
    return v, render_effect(chain.effects[last], pre, v[last]), note


# ------------------------------------------------------------------------------------------------
# adaptive presets
# ------------------------------------------------------------------------------------------------
@dataclass
class StylePreset:
    name: str
    description: str
    embedding: np.ndarray
    model_id: str
    path: Path | None = None
    level_lufs: float | None = None   # the examples' mean loudness: the level a preset matches
    #: the examples' mean smoothed spectrum ``((freqs_hz, power), rate)``, for a model with a matched EQ stage
    spectrum: tuple | None = None


def make_style_preset(name: str, description: str, embeddings: Sequence[np.ndarray], model_id: str,
                      model_sample_rate: float | None = None, extra: Mapping | None = None) -> dict:
    """The JSON object of an adaptive preset: the mean of ``embeddings`` (re-normalized to unit
    length when they all have it, as an L2-normalizing encoder gives)."""
    e = np.stack([np.asarray(v, dtype=np.float64) for v in embeddings])
    mean = e.mean(axis=0)
    norms = np.linalg.norm(e, axis=1)
    if np.allclose(norms, 1.0, atol=1e-3):
        mean = mean / max(np.linalg.norm(mean), 1e-12)
    return {"format": STYLE_PRESET_FORMAT, "version": STYLE_PRESET_VERSION, "name": name,
            "description": description, "model_id": model_id, "model_sample_rate": model_sample_rate,
            "embed_dim": int(mean.size), "n_examples": int(e.shape[0]),
            "embedding": [round(float(v), 7) for v in mean], **dict(extra or {})}


def is_style_preset(data: object) -> bool:
    return isinstance(data, dict) and data.get("format") == STYLE_PRESET_FORMAT


def resolve_preset_path(name_or_path: str | Path, folders: Sequence[str] = ("speech", "music", "")) -> Path:
    """A preset path, or a shipped preset's name (``warm`` → ``presets/speech/warm.json``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if not p.suffix:
        for sub in folders:
            cand = PRESETS_DIR / sub / f"{name_or_path}.json"
            if cand.is_file():
                return cand
    shipped = sorted({q.stem for sub in folders for q in (PRESETS_DIR / sub).glob("*.json")}) if PRESETS_DIR.is_dir() else []
    raise AfxError(f"{name_or_path}: no such preset file or shipped preset"
                   + (f" (shipped: {', '.join(shipped)})" if shipped else ""))


def load_style_preset(path: str | Path) -> StylePreset:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise AfxError(f"{p}: cannot read preset ({type(e).__name__})") from None
    if not is_style_preset(data):
        raise AfxError(f"{p}: not an adaptive style preset (format {STYLE_PRESET_FORMAT!r})")
    try:
        emb = np.asarray(data["embedding"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise AfxError(f"{p}: adaptive preset needs a numeric 'embedding' list") from None
    if emb.ndim != 1 or emb.size == 0 or not np.all(np.isfinite(emb)):
        raise AfxError(f"{p}: adaptive preset embedding must be a non-empty list of finite numbers")
    level = data.get("level_lufs")
    if level is not None and not (isinstance(level, (int, float)) and math.isfinite(level)):
        raise AfxError(f"{p}: level_lufs must be a finite number")
    spectrum = None
    if data.get("spectrum") is not None:
        from .eqmatch import spectrum_from_json

        try:
            spectrum = spectrum_from_json(data["spectrum"])
        except (KeyError, TypeError, ValueError) as e:
            raise AfxError(f"{p}: bad 'spectrum' ({e})") from None
    return StylePreset(str(data.get("name", p.stem)), str(data.get("description", "")), emb,
                       str(data.get("model_id", "")), p, None if level is None else float(level), spectrum)


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
@dataclass
class StyleResult:
    input: Path
    output: Path
    sample_rate: int
    channels: int
    seconds: float
    method: str
    params: dict[str, float]            # "<label>.<param>" → physical value
    units: dict[str, str]
    trace: Path | None = None
    notes: list[str] = field(default_factory=list)
    refine: dict | None = None          # RefineResult.to_dict() when --refine ran


class StyleContext(ReferenceEmbedding):
    """What every file of a batch shares: the model (loaded once), the reference (read and embedded
    once) or the preset. Thread-safe."""

    def __init__(self, ref: Path | None = None, preset: str | Path | None = None,
                 model: str | Path | None = None, method: str = "model", kind: str = "music",
                 refine_steps: int = 0) -> None:
        from ..audio import read_audio

        if method not in ("model", "rule-based"):
            raise AfxError(f"--method must be 'model' or 'rule-based', not {method!r}")
        if (ref is None) == (preset is None):
            raise AfxError("give either --ref REF or --preset NAME_OR_FILE")
        if refine_steps < 0:
            raise AfxError(f"--refine must be ≥ 0 steps, got {refine_steps}")
        if refine_steps and (ref is None or method != "model"):
            raise AfxError("--refine needs --ref REF and the model method (it refines the model's "
                           "prediction against the reference's features)")
        self.refine_steps = int(refine_steps)
        if self.refine_steps:  # torch, in this thread: never first in a batch's worker threads
            import importlib

            importlib.import_module("afxcli.tasks.refine")
        self.method = method
        self.ref_path = Path(ref) if ref is not None else None
        self.ref_audio, self.ref_sr = (read_audio(ref) if ref is not None else (None, None))
        self.preset_kind = None
        self.style_preset: StylePreset | None = None
        self.param_preset: Path | None = None
        if preset is not None:
            p = resolve_preset_path(preset)
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise AfxError(f"{p}: cannot read preset ({type(e).__name__})") from None
            if is_style_preset(data):
                self.style_preset, self.preset_kind = load_style_preset(p), "adaptive"
            else:
                from .export import load_preset

                load_preset(p)  # validate now: one error for the batch
                self.param_preset, self.preset_kind = p, "parameters"
        if self.preset_kind == "parameters":
            self.predictor = None
        elif method == "rule-based":
            if self.style_preset is not None:
                raise AfxError("an adaptive preset needs --method model (it is a model embedding)")
            self.predictor = None
        else:
            self.predictor = StylePredictor.load(resolve_model_for_preset(model, kind, self.style_preset))
            check_preset_model(self.style_preset, self.predictor)
        # the loudness a model's output is matched to: the reference's, else the preset's stored level
        self.ref_level_lufs: float | None = None
        if self.predictor is not None and self.ref_audio is not None:
            from .loudness import fast_lufs

            self.ref_level_lufs = fast_lufs(self.ref_audio, self.ref_sr)
        elif self.predictor is not None and self.style_preset is not None:
            self.ref_level_lufs = self.style_preset.level_lufs
        self._lock = threading.Lock()
        self.reference_thread = self.prefetch_reference()  # overlaps the first input's decoding and analysis


def _write_trace(path: Path, chain, values, sr: int, n_samples: int, description: str) -> None:
    from ..effects.chain import Chain
    from ..trace import ParameterTrace, units_of

    tr = ParameterTrace.static(chain.spec, Chain.flatten(chain.labels, values), sr, units=units_of(chain))
    tr.n_samples = int(n_samples)
    tr.description = description
    tr.save(path)


def style_transfer_file(input_path: Path, output_path: Path, ctx: StyleContext,
                        trace_path: Path | None = None) -> StyleResult:
    """Style-transfer one file (whole length, its own rate) and write ``output_path`` atomically."""
    from ..audio import read_audio, write_audio
    from ..effects.chain import Chain
    from ..render import render_chain
    from ..trace import units_of

    audio, sr = read_audio(input_path)
    notes: list[str] = []
    refine_info = None
    if ctx.preset_kind == "parameters":
        from .export import load_preset
        from .render import fit_trace

        spec, trace = load_preset(ctx.param_preset)
        chain = Chain(spec, sr)
        trace, clipped = fit_trace(trace, chain)
        if clipped:
            notes.append(f"clipped to this rate's ranges: {', '.join(clipped)}")
        y = render_chain(chain, audio, trace)
        flat = trace.frame_values(0) if trace.is_static else trace.reduce("median")
        method, units = f"preset {ctx.param_preset.name}", units_of(chain)
        if trace_path is not None:
            tr = trace.copy()
            tr.n_samples = audio.shape[1]
            tr.save(trace_path)
    elif ctx.method == "rule-based":
        from .rulebased import rule_based

        s = rule_based(audio, sr, ctx.ref_audio, ctx.ref_sr)
        y = s.apply(audio, sr)
        chain = Chain({"effects": [{"type": "compressor"}, {"type": "gain"}]}, sr)
        values = [s.compressor, {"gain_db": float(np.clip(s.gain_db, -24, 24))}]
        flat, units = Chain.flatten(chain.labels, values), units_of(chain)
        method = "rule-based"
        notes.append("FIR EQ band gains (dB): " + ", ".join(f"{k} {v:+.1f}" for k, v in s.eq.band_gains_db().items()))
        if trace_path is not None:
            _write_trace(trace_path, chain, values, sr, audio.shape[1],
                         "rule-based style transfer: compressor + gain after a matched FIR EQ "
                         "(the FIR is not an effect of the chain; its band gains: "
                         + json.dumps(s.eq.band_gains_db()) + ")")
    else:
        pred = ctx.predictor
        chain = Chain(pred.render_spec, sr)
        values = pred.predict(audio, sr, ref_embedding=ctx.reference_embedding,
                              ref_spectra=ctx.reference_spectra() if pred.match_eq else None)
        if ctx.refine_steps:
            from .refine import refine_toward_reference

            res = refine_toward_reference(chain, values, audio, sr, ctx.ref_sr, ctx.reference_features,
                                          ctx.refine_steps)
            values, refine_info = [dict(v) for v in res.values_after], res.to_dict()
            notes.append(f"refined ({refine_info['steps']} steps): feature distance "
                         f"{refine_info['feature_distance_before_db']:.2f} -> "
                         f"{refine_info['feature_distance_after_db']:.2f} dB, "
                         + ("kept" if refine_info["kept"] else "not kept (no better: the prediction stands)"))
        if ctx.ref_level_lufs is not None:  # output loudness = the reference's (or the preset's)
            # a reference's loudness also carries its content's: blend in the network's own level;
            # a preset's stored level is a stated target: matched exactly
            w = pred.level_own_gain_weight if ctx.ref_audio is not None else 0.0
            values, y, level_note = match_output_loudness(chain, audio, values, ctx.ref_level_lufs, w)
            if level_note:
                notes.append(level_note)
        else:
            y = render_chain(chain, audio, values)
            notes.append("the preset stores no level: the model's own output gain is used")
        flat, units = Chain.flatten(chain.labels, values), units_of(chain)
        method = f"model {pred.model_id}" + (f" + preset {ctx.style_preset.name}" if ctx.style_preset else "")
        if trace_path is not None:
            ref_desc = f"preset {ctx.style_preset.name}" if ctx.style_preset else str(ctx.ref_path)
            _write_trace(trace_path, chain, values, sr, audio.shape[1],
                         f"afx style-transfer of {Path(input_path).name} toward {ref_desc} (model {pred.model_id})")
    if not np.all(np.isfinite(y)):
        raise AfxError("render produced non-finite samples")
    write_audio(output_path, y, sr)
    return StyleResult(Path(input_path), Path(output_path), sr, y.shape[0], y.shape[1] / sr, method,
                       {k: float(v) for k, v in flat.items()}, units, trace_path, notes, refine_info)


def params_table(result: StyleResult, title: str | None = None):
    """A rich table of the predicted parameters in physical units. The matched EQ stage's band
    gains (:mod:`afxcli.tasks.eqmatch`, ~30 of them) take one row: their count and range (every
    value is in ``--trace``)."""
    from rich.table import Table

    from .eqmatch import MATCH_EQ_LABEL

    t = Table(title=title or f"{result.input.name}: {result.method}")
    t.add_column("parameter")
    t.add_column("value", justify="right")
    t.add_column("unit")
    bands = [v for k, v in result.params.items() if k.startswith(MATCH_EQ_LABEL + ".")]
    if bands:
        t.add_row(f"{MATCH_EQ_LABEL} (graphic EQ, {len(bands)} bands)", f"{min(bands):+.1f} … {max(bands):+.1f}", "dB")
    for k, v in result.params.items():
        if not k.startswith(MATCH_EQ_LABEL + "."):
            t.add_row(k, f"{v:.4g}" if math.isfinite(v) else str(v), result.units.get(k, ""))
    return t
