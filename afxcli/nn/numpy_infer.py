"""NumPy forward pass of a shipped style model (no torch at inference).

The shipped style models (``models/style_*.pt``) are small: a log-mel front end
(:class:`~afxcli.nn.frontends.LogMel`, ``log=True``, no batch norm) → the production-statistics
encoder (:class:`~afxcli.nn.stats.StatsEncoder`: ``Linear → PReLU`` projection) → the
DeepAFx-ST controller (:class:`~afxcli.nn.controller.StyleController`: ``Linear → [BatchNorm] →
PReLU`` layers, ``Linear``, sigmoid). This module evaluates the same functions in float64 NumPy
from the weights in an ``.npz`` written next to the ``.pt`` (:func:`export_npz`); the npz records
the SHA-256 of the ``.pt`` it came from, so a retrained ``.pt`` with a stale npz is detected
(:func:`load_npz` returns ``None`` and the caller falls back to torch).

Formulas (the torch modules' own, in the power domain where they take log-sum-exps of dB; the
transform and mel product in float32 as in torch, everything after in float64):

- frames (torch.stft ``center=True``, zero padding): frame ``j`` of a clip ``x`` reads
  ``x[j·hop − n_fft/2 : j·hop + n_fft/2]`` (zeros outside the clip), periodic Hann window;
  ``P = M · |rfft|²`` (``M``: the mel basis, ``(n_mels, n_fft/2 + 1)``), ``S = 10·log10(max(P, amin))``;
- statistics of :mod:`afxcli.nn.stats` with ``10·log10(Σ 10^(S/10)) = 10·log10(Σ max(P, amin))``.

Frame-wise analysis (:meth:`NumpyStyleModel.window_embeddings`): overlapping analysis windows share
most frames. A frame that lies wholly inside its window is the same frame of the whole signal at
the same position, so each distinct position is transformed once; only the frames at a window's
two edges (which read the window's zero padding) are computed per window. Equal to analyzing
each window on its own up to float64 round-off (tests compare against the torch model).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AfxError

NPZ_FORMAT = "afx-style-npz"
NPZ_VERSION = 1
#: Windows whose statistics are assembled at once (bounds the gathered-frame memory).
WINDOW_BATCH = 16


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (remembered per resolved path, size and modification time:
    a model file is identified several times while loading, once by an adaptive preset's lookup)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npz_path_for(pt_path: str | Path) -> Path:
    """The npz exported next to a ``.pt``: same name, suffix ``.npz``."""
    return Path(pt_path).with_suffix(".npz")


# ------------------------------------------------------------------------------------------------
# export (needs torch: run where the model is trained or shipped)
# ------------------------------------------------------------------------------------------------
def controller_layers(controller) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The layers of a torch :class:`~afxcli.nn.controller.ParamHead` as ``(kind, arrays)`` for
    :func:`mlp_forward` (dropout, an identity in eval mode, is left out)."""
    from torch import nn

    layers = []
    for m in list(controller.hidden) + [controller.out]:
        if isinstance(m, nn.Linear):
            layers.append(("linear", {"w": m.weight, "b": m.bias}))
        elif isinstance(m, nn.PReLU):
            layers.append(("prelu", {"a": m.weight}))
        elif isinstance(m, nn.BatchNorm1d):
            layers.append(("batchnorm", {"mean": m.running_mean, "var": m.running_var, "w": m.weight,
                                         "b": m.bias, "eps": np.array(m.eps)}))
        else:
            if not isinstance(m, nn.Dropout):
                raise AfxError(f"numpy export: controller layer {type(m).__name__} is not supported")
            continue  # identity in eval mode
        layers[-1] = (layers[-1][0], {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                                      for k, v in layers[-1][1].items()})
    return layers


def export_npz(pt_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the NumPy weights of the style model ``pt_path`` (a ``style``-task checkpoint) to
    ``out_path`` (default: next to it, ``.npz``), atomically. Raises :class:`AfxError` for an
    architecture this module cannot evaluate (only log-mel → stats encoder → MLP controller)."""
    import io

    import torch

    from ..atomic import atomic_open
    from .frontends import LogMel
    from .stats import DB_SCALE, GROUP_QUANTILES, LEVEL_QUANTILES, StatsEncoder
    from ..train.checkpoint import load_for_inference

    pt = Path(pt_path)
    model, spec, config = load_for_inference(pt)
    an = model.analyzer
    fe, enc = an.frontend, an.encoder
    if not isinstance(fe, LogMel) or not fe.log or fe.norm is not None or fe.channels != "mono":
        raise AfxError(f"{pt}: numpy export needs a mono log-mel front end without batch norm")
    if not isinstance(enc, StatsEncoder) or enc.project is None:
        raise AfxError(f"{pt}: numpy export needs the stats encoder with a projection")
    arrays: dict[str, Any] = {}

    def put(name: str, t) -> None:
        arrays[name] = (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))

    put("frontend.window", fe.window)
    put("frontend.mel_basis", fe.mel_basis)
    put("encoder.project.w", enc.project[0].weight)
    put("encoder.project.b", enc.project[0].bias)
    put("encoder.project.prelu", enc.project[1].weight)
    layers = controller_layers(model.controller)
    for i, (_, params) in enumerate(layers):
        for k, v in params.items():
            put(f"controller.{i}.{k}", v)
    meta = {"format": NPZ_FORMAT, "version": NPZ_VERSION, "source_sha256": sha256_of(pt),
            "source_file": pt.name, "sample_rate": float(fe.sample_rate), "n_fft": int(fe.n_fft),
            "hop_samples": int(fe.hop_samples), "amin_power": float(fe.amin_power),
            "n_bins": int(enc.n_bins), "n_groups": int(enc.n_groups), "l2_normalize": bool(enc.l2_normalize),
            "embed_dim": int(enc.embed_dim), "n_params": int(model.n_params),
            "level_quantiles": list(LEVEL_QUANTILES), "group_quantiles": list(GROUP_QUANTILES),
            "db_scale": float(DB_SCALE),
            "controller_layers": [kind for kind, _ in layers], "chain_spec": spec, "config": config}
    arrays["meta"] = np.array(json.dumps(meta))
    out = Path(out_path) if out_path is not None else npz_path_for(pt)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_open(out, "wb") as f:
        f.write(buf.getvalue())
    return out


# ------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------
def _db_levels_from_power(p: np.ndarray, axis: int) -> np.ndarray:
    """``10·log10(Σ p)`` along ``axis`` (``p`` already clamped to ``amin``, so never log of 0)."""
    return 10.0 * np.log10(p.sum(axis=axis))


class NumpyStyleModel:
    """The NumPy forward pass of a shipped style model (see the module docstring).

    ``statistics``/``embed`` take clips at the model rate, mono, ``(clips, samples)``;
    ``controller(e_input (b, D), e_reference (b, D))`` → ``(b, n_params)`` in (0, 1)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.meta = meta
        self.sample_rate = float(meta["sample_rate"])
        self.n_fft = int(meta["n_fft"])
        self.hop = int(meta["hop_samples"])
        self.amin = float(meta["amin_power"])
        self.n_bins = int(meta["n_bins"])
        self.n_groups = int(meta["n_groups"])
        self.l2_normalize = bool(meta["l2_normalize"])
        self.embed_dim = int(meta["embed_dim"])
        self.n_params = int(meta["n_params"])
        self.level_q = np.asarray(meta["level_quantiles"], dtype=np.float64)
        self.group_q = np.asarray(meta["group_quantiles"], dtype=np.float64)
        self.db_scale = float(meta["db_scale"])
        self.chain_spec = meta["chain_spec"]
        self.config = meta["config"]
        f64 = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k != "meta"}
        self.window = f64["frontend.window"]
        self.mel_basis = f64["frontend.mel_basis"]
        self.proj_w, self.proj_b = f64["encoder.project.w"], f64["encoder.project.b"]
        self.proj_a = f64["encoder.project.prelu"]
        self.layers = [(kind, {k.split(".", 2)[2]: v for k, v in f64.items() if k.startswith(f"controller.{i}.")})
                       for i, kind in enumerate(meta["controller_layers"])]
        if self.mel_basis.shape != (self.n_bins, self.n_fft // 2 + 1):
            raise AfxError("numpy style model: mel basis does not fit n_fft / n_bins")
        self.window32 = arrays["frontend.window"].astype(np.float32)
        self.mel_pairs = np.repeat(arrays["frontend.mel_basis"].astype(np.float32), 2, axis=1)
        self.mel_segments = _mel_segments(self.mel_pairs)
        # band groups of torch.tensor_split: the first (bins mod groups) groups are one bin wider
        bounds = np.cumsum([0] + [len(g) for g in np.array_split(np.arange(self.n_bins), self.n_groups)])
        self.group_bounds = bounds

    # ----- front end ------------------------------------------------------------------------------
    def _mel_power(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(..., n_fft)`` → clamped mel power ``(..., n_bins)`` float64. The transform and
        the mel sum run in float32 like the torch front end: ``|X_f|² = Re² + Im²`` is folded into
        the mel product (the spectrum viewed as interleaved ``(Re, Im)`` pairs, squared in place,
        times the mel basis with each column repeated twice). The mel basis is sparse (each
        triangle covers a few bins): the product runs over its nonzero blocks only
        (:func:`_mel_segments`; the same sums as the dense product, in another float32 order)."""
        import os

        from scipy import fft as sfft

        lead = frames.shape[:-1]
        spec = sfft.rfft((frames.reshape(-1, frames.shape[-1]) * self.window32).astype(np.float32, copy=False),
                         axis=-1, workers=os.cpu_count() or 1)
        v = spec.view(np.float32)                                   # (frames, 2 * (n_fft/2 + 1))
        np.square(v, out=v)
        out = np.zeros((v.shape[0], self.n_bins), np.float32)
        for c0, c1, m0, m1, w in self.mel_segments:
            out[:, m0:m1] += v[:, c0:c1] @ w
        return np.maximum(out.astype(np.float64), self.amin).reshape(*lead, self.n_bins)

    def _clip_frames(self, clip: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Frames ``j`` ``(k,)`` of one clip ``(samples,)`` with the clip's own zero padding → ``(k, n_fft)``."""
        half = self.n_fft // 2
        padded = np.pad(clip, (half, half))
        idx = (j * self.hop)[:, None] + np.arange(self.n_fft)[None, :]
        return padded[idx]

    def num_frames(self, n_samples: int) -> int:
        return 1 + int(n_samples) // self.hop

    # ----- encoder ----------------------------------------------------------------------------------
    def _stats_from_frames(self, p_sum: np.ndarray, level: np.ndarray, g_level: np.ndarray,
                           n_frames: int) -> np.ndarray:
        """Statistics (:class:`~afxcli.nn.stats.StatsEncoder`) from per-clip power sums over
        frames ``p_sum (b, bins)``, frame levels ``level (b, frames)`` (dB) and band-group levels
        ``g_level (b, groups, frames)`` (dB) → ``(b, n_stats)``."""
        b = p_sum.shape[0]
        ltas = 10.0 * np.log10(p_sum) - 10.0 * math.log10(n_frames)            # (b, bins)
        total = 10.0 * np.log10((10.0 ** (ltas / 10.0)).sum(axis=1))            # (b,)
        peak = level.max(axis=1)
        q_level = np.quantile(level - peak[:, None], self.level_q, axis=1).T  # (b, n_q)
        if n_frames > 1:
            d = np.diff(level, axis=1)
            flux = np.stack([np.abs(d).mean(axis=1), np.maximum(d, 0.0).mean(axis=1)], axis=1)
        else:
            flux = np.zeros((b, 2))
        q_group = np.quantile(g_level - peak[:, None, None], self.group_q, axis=2)  # (n_q, b, groups)
        q_group = q_group.transpose(1, 2, 0).reshape(b, -1)
        stats = np.concatenate([total[:, None], ltas - total[:, None], q_level, flux, q_group, peak[:, None]], axis=1)
        return stats * self.db_scale

    def _frame_summaries(self, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mel power ``(..., bins)`` → frame level ``(...)`` and group levels ``(..., groups)`` in dB."""
        level = _db_levels_from_power(power, axis=-1)
        groups = np.add.reduceat(power, self.group_bounds[:-1], axis=-1)
        return level, 10.0 * np.log10(groups)

    def project(self, stats: np.ndarray) -> np.ndarray:
        """``Linear → PReLU`` (→ L2 normalization when the encoder has it): ``(b, n_stats)`` → ``(b, D)``."""
        e = stats @ self.proj_w.T + self.proj_b
        e = np.where(e >= 0.0, e, self.proj_a * e)
        if self.l2_normalize:
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return e

    def clip_statistics(self, clip: np.ndarray) -> np.ndarray:
        """Statistics ``(n_stats,)`` of one mono clip ``(samples,)`` at the model rate."""
        clip = np.asarray(clip, dtype=np.float32)
        f = self.num_frames(clip.shape[-1])
        power = self._mel_power(self._clip_frames(clip, np.arange(f)))          # (frames, bins)
        level, g_level = self._frame_summaries(power)
        return self._stats_from_frames(power.sum(axis=0)[None], level[None], g_level.T[None], f)[0]

    def window_statistics(self, x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
        """Statistics ``(len(starts), n_stats)`` of the windows ``x[s:s + window]`` of one mono
        signal ``x`` ``(samples,)`` (every window inside ``x``), each analyzed as its own clip;
        frames shared by overlapping windows are computed once (module docstring)."""
        x = np.asarray(x, dtype=np.float32)
        starts = np.asarray(starts, dtype=np.int64)
        w = int(window)
        if starts.size == 0:
            return np.zeros((0, 1))
        if np.any(starts < 0) or np.any(starts + w > x.shape[-1]):
            raise AfxError("internal: analysis window outside the signal")
        half, hop = self.n_fft // 2, self.hop
        f = self.num_frames(w)
        j = np.arange(f)
        inner = (j * hop - half >= 0) & (j * hop + half <= w)
        j_in, j_edge = j[inner], j[~inner]
        # interior frames: positions in x (frame start sample); each distinct one transformed once,
        # ordered by (position mod hop, position): a window's interior frames are then consecutive
        # rows (in a residue class every position between two of a window's frames is its own)
        pos = starts[:, None] + (j_in * hop - half)[None, :]                       # (win, f_in)
        uniq = np.unique(pos)
        uniq = uniq[np.lexsort((uniq, uniq % hop))]
        first = np.searchsorted(uniq % hop * (x.shape[-1] + 1) + uniq,
                                pos[:, 0] % hop * (x.shape[-1] + 1) + pos[:, 0])    # (win,)
        inv = first[:, None] + np.arange(j_in.size)[None, :]                        # (win, f_in)
        level_u = np.empty(uniq.size)
        glevel_u = np.empty((uniq.size, self.n_groups))
        power_u = np.empty((uniq.size, self.n_bins))
        step = 4096
        for a in range(0, uniq.size, step):
            idx = uniq[a:a + step, None] + np.arange(self.n_fft)[None, :]
            p = self._mel_power(x[idx])
            power_u[a:a + step] = p
            level_u[a:a + step], glevel_u[a:a + step] = self._frame_summaries(p)
        # edge frames read the window's own zero padding: per window, only those samples
        e_idx = starts[:, None, None] + (j_edge * hop - half)[None, :, None] + np.arange(self.n_fft)[None, None, :]
        inside = (e_idx >= starts[:, None, None]) & (e_idx < starts[:, None, None] + w)
        edge_frames = np.where(inside, x[np.clip(e_idx, 0, x.shape[-1] - 1)], np.float32(0.0))
        p_edge = self._mel_power(edge_frames)                                    # (win, f_edge, bins)
        l_edge, g_edge = self._frame_summaries(p_edge)
        out = []
        for b0 in range(0, starts.size, WINDOW_BATCH):
            sl = slice(b0, b0 + WINDOW_BATCH)
            nb = starts[sl].size
            level = np.empty((nb, f))
            g_level = np.empty((nb, f, self.n_groups))
            level[:, inner], level[:, ~inner] = level_u[inv[sl]], l_edge[sl]
            g_level[:, inner], g_level[:, ~inner] = glevel_u[inv[sl]], g_edge[sl]
            # a window's interior frames are consecutive rows: summed as a slice, no gather
            p_sum = np.stack([power_u[i0:i0 + j_in.size].sum(axis=0) for i0 in inv[sl, 0]]) + p_edge[sl].sum(axis=1)
            out.append(self._stats_from_frames(p_sum, level, g_level.transpose(0, 2, 1), f))
        return np.concatenate(out)

    def window_embeddings(self, x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
        """Embeddings ``(len(starts), embed_dim)`` of the windows of :meth:`window_statistics`."""
        return self.project(self.window_statistics(x, starts, window))

    def embed_windows(self, x: np.ndarray, window: int) -> np.ndarray:
        """:meth:`afxcli.nn.encoders.Analyzer.embed_windows` for one mono signal ``(samples,)``:
        the mean embedding of consecutive windows (a last window shorter than half a window is
        dropped unless it is the only one; a shorter last window is analyzed at its own length),
        re-normalized when the encoder L2-normalizes. Returns ``(embed_dim,)``."""
        x = np.asarray(x, dtype=np.float32)
        n, w = x.shape[-1], int(window)
        starts = np.array(list(range(0, max(1, n - w // 2), w)) or [0], dtype=np.int64)
        full = starts[starts + w <= n]
        embs = [self.window_embeddings(x, full, w)] if full.size else []
        for s in starts[starts + w > n]:  # ragged last window (or a clip shorter than a window)
            embs.append(self.project(self.clip_statistics(x[s:s + w])[None]))
        mean = np.concatenate(embs).mean(axis=0)
        if self.l2_normalize:
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return mean

    # ----- controller -------------------------------------------------------------------------------
    def controller(self, e_input: np.ndarray, e_reference: np.ndarray) -> np.ndarray:
        """``σ(MLP(concat(e_i, e_r)))``: ``(b, D)`` × 2 → ``(b, n_params)`` in (0, 1)."""
        h = np.concatenate([np.asarray(e_input, np.float64), np.asarray(e_reference, np.float64)], axis=1)
        return 1.0 / (1.0 + np.exp(-mlp_forward(self.layers, h)))


#: Spectrum bins per block of the block-sparse mel product.
MEL_SEGMENT_BINS = 16


def _mel_segments(mel_pairs: np.ndarray, seg_bins: int = MEL_SEGMENT_BINS) -> list[tuple]:
    """Nonzero blocks of a pair-repeated mel basis ``(n_mels, 2·bins)``: for each run of
    ``seg_bins`` spectrum bins (``2·seg_bins`` columns ``[c0, c1)``) the mel rows ``[m0, m1)``
    spanning its nonzeros and that block transposed, ``(c1 − c0, m1 − m0)`` float32; runs with no
    nonzero are left out. ``Σ_blocks v[:, c0:c1] @ block`` is ``v @ mel_pairs.T``."""
    out = []
    for c0 in range(0, mel_pairs.shape[1], 2 * seg_bins):
        c1 = min(c0 + 2 * seg_bins, mel_pairs.shape[1])
        rows = np.flatnonzero(np.any(mel_pairs[:, c0:c1] != 0.0, axis=1))
        if rows.size:
            m0, m1 = int(rows[0]), int(rows[-1]) + 1
            out.append((c0, c1, m0, m1, np.ascontiguousarray(mel_pairs[m0:m1, c0:c1].T)))
    return out


def mlp_forward(layers: list[tuple[str, dict[str, np.ndarray]]], h: np.ndarray) -> np.ndarray:
    """The controller's layers in eval mode on ``h`` ``(b, in_dim)`` (before the sigmoid):
    ``linear`` ``h·Wᵀ + b``, ``prelu`` ``max(h, 0) + a·min(h, 0)``, ``batchnorm``
    ``(h − μ) / sqrt(σ² + ε) · w + b`` (running statistics)."""
    for kind, p in layers:
        p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
        if kind == "linear":
            h = h @ p["w"].T + p["b"]
        elif kind == "prelu":
            h = np.where(h >= 0.0, h, p["a"] * h)
        elif kind == "batchnorm":
            h = (h - p["mean"]) / np.sqrt(p["var"] + float(p["eps"])) * p["w"] + p["b"]
        else:
            raise AfxError(f"numpy style model: unknown layer {kind!r}")
    return h


def load_npz(npz_path: str | Path, pt_path: str | Path | None = None,
             pt_sha256: str | None = None) -> NumpyStyleModel | None:
    """The NumPy model in ``npz_path``, or ``None`` when there is no such file or it was exported
    from another file than ``pt_path`` (SHA-256 ``pt_sha256``, computed when not given) — then
    the caller uses the torch model. A file that exists but cannot be read raises AfxError."""
    p = Path(npz_path)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise AfxError(f"{p}: not a readable numpy style model ({type(e).__name__})") from None
    if meta.get("format") != NPZ_FORMAT or int(meta.get("version", 0)) != NPZ_VERSION:
        raise AfxError(f"{p}: not an afx numpy style model (format {NPZ_FORMAT!r} v{NPZ_VERSION})")
    if pt_path is not None or pt_sha256 is not None:
        want = pt_sha256 if pt_sha256 is not None else sha256_of(pt_path)
        if meta.get("source_sha256") != want:
            return None
    return NumpyStyleModel(arrays, meta)
