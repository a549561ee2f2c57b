"""Synthetic full-reference production style transfer (DeepAFx-ST, Steinmetz et al. 2022, §4.1).

For each domain — music at 44.1 kHz (the corpora's real rate; ``music_mastered`` validation split)
and speech at its own rate (16 kHz; ``speech`` validation split) — ``--n`` fixed pairs are made as in
training (§2.1, :class:`afxcli.train.style.StylePairDataset`): one crop of ``--clip-seconds``, two
random production styles (:func:`afxcli.train.style.random_style`) rendered on the whole crop and
peak-normalized to −12 dBFS, halves A/B; the input is the input style of one half, the reference is
the reference style of the *other* half, and the target is the reference style of the input's half
(the reference applied to the input's content). Everything runs at the file's rate: the model
analyses at its own rate (:class:`afxcli.tasks.style.StylePredictor` resamples) but its chain is
rendered at 44.1 kHz (or 16 kHz) with pedalboard, exactly as ``afx style-transfer`` does.

Methods: ``input`` (the unprocessed input), ``rule-based`` (DeepAFx-ST §3.3 baseline,
:func:`afxcli.tasks.rulebased.rule_based`), ``model`` (``--model PATH``, or ``--music-model`` /
``--speech-model`` per domain: the predicted chain with its final gain set to match the reference's
integrated loudness, as ``afx style-transfer`` renders it, :func:`~afxcli.tasks.style.match_output_loudness`)
and ``model_own_gain`` (the same chain with the network's own output gain); the ``model`` row's level
follows the model's ``level_own_gain_weight`` (0: the reference's loudness exactly). Metrics to the target (DeepAFx-ST §4.1, :mod:`afxcli.metrics`):
MR-STFT error, mel spectral distance (MSD, dB), spectral-centroid error (Hz), RMS error (dB), LUFS
error (LU); means over the pairs. Printed as ``style_<domain>_<method>_<metric>: value unit`` plus
``style_<domain>_<method>_mrstft_reduction: X %`` (``1 − method/input``). ``--band-errors`` adds
``style_<domain>_<method>_band_error_<f>hz`` lines: the long-term spectral shape error per octave
band (level removed), which shows in which bands a method's EQ misses the target; its
``reference_spectrum`` rows are the reference's own shape error to the target (same style, the
other half's content): what a method that matched the reference's long-term spectrum exactly would
leave. ``--oracle N`` adds an ``oracle`` row: the model's chain (after the same matched-EQ stage)
with its free parameters fitted *to the target* by N Adam steps on the MR-STFT error, starting from
the model's prediction (:func:`fit_chain_to_target`) — no real system sees the target; the row
bounds what the chain itself can do, so the gap between it and ``model`` is what predicting from
the reference leaves. ``--oracle-only eq.,out.`` fits only the parameters with those key prefixes
(a subset oracle: which part of the chain the prediction misses). ``--split added`` draws the
pairs from the sources added to each corpus after its first build instead (training-only items:
wesnoth music; Italian/Russian G.722 prompts and Dutch game voices) — audio that a model trained on
the first build (``data.added_sources`` false, every shipped model) never saw, a test of how it
does on recordings nobody tuned it on; it refuses a model trained with them. After the means,
``style_<domain>_<method>_mrstft_reduction_ci95_low`` / ``_high`` give a 95 % cluster-bootstrap
interval of each reduction, resampling the pairs' tracks or speakers
(:func:`reduction_interval`; ``style_<domain>_pair_clusters`` says how many there are): how far
another validation set of the same size could move the figure.

    .venv/bin/python benchmarks/style_eval.py --n 50 --seed 0 [--model runs/style_music/best.pt] [--oracle 150]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Domain → (corpus, evaluation rate in Hz, channels).
DOMAINS = {"music": ("music_mastered", 44100, 2), "speech": ("speech", 16000, 1)}
#: Metric → (key in the result, unit).
METRICS = {"mrstft": ("mrstft", ""), "msd": ("msd_db", "dB"), "sce": ("spectral_centroid_error_hz", "Hz"),
           "rms_error": ("rms_error_db", "dB"), "lufs_error": ("lufs_error_lu", "LU")}


def pair_metrics(output: np.ndarray, target: np.ndarray, sample_rate: float,
                 band_errors: bool = False) -> dict[str, float]:
    """Full-reference errors of ``output`` to ``target`` (both ``(channels, samples)``); with
    ``band_errors`` also the per-octave shape errors ``band_error_<center>hz`` (dB)."""
    from afxcli import metrics

    extra = _band_dict(output, target, sample_rate) if band_errors else {}
    return {**extra, "mrstft": metrics.mrstft_error(output, target),
            "msd_db": metrics.mel_spectral_distance_db(output, target, sample_rate),
            "spectral_centroid_error_hz": metrics.spectral_centroid_error_hz(output, target, sample_rate),
            "rms_error_db": abs(metrics.rms_dbfs(output) - metrics.rms_dbfs(target)),
            "lufs_error_lu": abs(metrics.lufs(output, sample_rate) - metrics.lufs(target, sample_rate))}


def _band_dict(output: np.ndarray, target: np.ndarray, sample_rate: float) -> dict[str, float]:
    centers = [c for c in OCTAVE_CENTERS_HZ if c < 0.45 * sample_rate]
    return {f"band_error_{c:.0f}hz": float(e) for c, e in zip(centers, band_shape_errors_db(output, target, sample_rate))}


#: Octave-band centers (Hz) of the optional per-band shape errors (``--band-errors``).
OCTAVE_CENTERS_HZ = tuple(1000.0 * 2.0 ** k for k in range(-5, 5))


def band_shape_errors_db(output: np.ndarray, target: np.ndarray, sample_rate: float) -> np.ndarray:
    """Long-term spectral *shape* error per octave band (:data:`OCTAVE_CENTERS_HZ` below 0.45·rate):
    ``|B_out(k) − B_tgt(k) − mean_k(B_out − B_tgt)|`` in dB, where ``B`` is the mean power
    (Hann STFT, ~93 ms frames, half overlap, mean over frames and channels) in the octave
    ``[c/√2, c·√2)`` — what an EQ gets right or wrong, with the overall level taken out."""
    n_fft = int(2 ** round(np.log2(0.093 * sample_rate)))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    centers = [c for c in OCTAVE_CENTERS_HZ if c < 0.45 * sample_rate]

    def bands(a: np.ndarray) -> np.ndarray:
        rows = np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1])
        if rows.shape[1] < n_fft:
            rows = np.pad(rows, ((0, 0), (0, n_fft - rows.shape[1])))
        hop = n_fft // 2
        starts = np.arange(0, rows.shape[1] - n_fft + 1, hop)
        win = np.hanning(n_fft)
        power = np.mean([np.mean(np.abs(np.fft.rfft(r[starts[:, None] + np.arange(n_fft)] * win, axis=1)) ** 2, axis=0)
                         for r in rows], axis=0)
        return np.array([10.0 * np.log10(power[(freqs >= c / 2 ** 0.5) & (freqs < c * 2 ** 0.5)].mean() + 1e-20)
                         for c in centers])

    d = bands(output) - bands(target)
    return np.abs(d - d.mean())


#: Adam learning rate (on the logits of the normalized parameters) of :func:`fit_chain_to_target`.
ORACLE_LR = 0.05


def fit_chain_to_target(predictor, values: list, x: np.ndarray, target: np.ndarray, sample_rate: float,
                        steps: int, lr: float = ORACLE_LR, only: Sequence[str] = ()) -> np.ndarray:
    """The ``oracle`` row's output: ``predictor``'s chain (:attr:`~afxcli.tasks.style.StylePredictor.chain_spec`,
    at ``sample_rate``) on ``x`` ``(channels, samples)`` after the matched-EQ stage of ``values``
    (``predictor.predict``'s per-effect values; the stage's gains stay as predicted), its free
    parameters fitted to ``target`` — Adam on ``logit(q)`` over the normalized parameters,
    ``steps`` steps from the prediction (with the network's own output gain), minimizing the
    MR-STFT error through the chain's torch twins (AD); the parameters with the lowest error seen
    are kept and rendered with the chain's exact form. ``only``: key prefixes (e.g. ``("eq.",
    "out.")``): fit just those parameters, the others stay as predicted (a subset oracle: which
    part of the chain the prediction misses). Returns ``(channels, samples)`` float32."""
    import torch

    from afxcli.effects.chain import Chain
    from afxcli.losses import MultiResolutionSTFTLoss

    chain = Chain(predictor.chain_spec, sample_rate)
    lead = 1 if predictor.match_eq else 0
    xm = x
    if lead:
        from afxcli.tasks.eqmatch import apply_matched_geq

        xm = apply_matched_geq(x, sample_rate, values[0], predictor.match_eq)
    q0 = chain.normalize_values(values[lead:]).clamp(1e-4, 1.0 - 1e-4)
    mask = torch.tensor([[1.0 if not only or k.startswith(tuple(only)) else 0.0 for k in chain.free_keys]])
    if not bool(mask.any()):
        raise ValueError(f"no free parameter of the chain starts with {', '.join(only)}")
    logit0 = torch.logit(q0)
    delta = torch.zeros_like(logit0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    loss_fn = MultiResolutionSTFTLoss(time_weight=0.0)
    xt = torch.from_numpy(np.ascontiguousarray(xm, dtype=np.float32))[None]
    tt = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
    best, best_q = math.inf, q0
    for _ in range(int(steps)):
        q = torch.sigmoid(logit0 + delta * mask)
        loss = loss_fn(chain(xt, q, mode="train"), tt)
        if float(loss.detach()) < best:
            best, best_q = float(loss.detach()), q.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return chain(xt, best_q, mode="exact")[0].numpy().astype(np.float32)


def evaluate_pairs(files: Sequence[Path] | None, sample_rate: int, channels: int, n: int, seed: int,
                   clip_seconds: float, predictor=None, progress: bool = False,
                   groups: Sequence[str] | None = None, band_errors: bool = False,
                   refine_steps: int = 0, level_weights: Sequence[float] = (),
                   oracle_steps: int = 0, oracle_only: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Mean errors ``{method: {metric key: mean}}`` over ``n`` fixed synthetic pairs: the means of
    :func:`evaluate_pair_rows`, which takes the same arguments."""
    rows, _ = evaluate_pair_rows(files, sample_rate, channels, n, seed, clip_seconds, predictor, progress,
                                 groups, band_errors, refine_steps, level_weights, oracle_steps, oracle_only)
    return mean_rows(rows)


def mean_rows(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """``{method: {metric key: mean over the pairs}}`` of :func:`evaluate_pair_rows`' rows."""
    return {m: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]} for m, rs in rows.items()}


def evaluate_pair_rows(files: Sequence[Path] | None, sample_rate: int, channels: int, n: int, seed: int,
                       clip_seconds: float, predictor=None, progress: bool = False,
                       groups: Sequence[str] | None = None, band_errors: bool = False,
                       refine_steps: int = 0, level_weights: Sequence[float] = (),
                       oracle_steps: int = 0, oracle_only: Sequence[str] = ()
                       ) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    """Per-pair errors ``{method: [one metrics dict per pair]}`` over ``n`` fixed synthetic pairs,
    and each pair's cluster: the group (track, speaker) of its first file, or the pair's own name
    without ``groups`` (pairs of one track are not independent: :func:`reduction_interval` resamples
    whole clusters).

    ``files``: audio files of the split (None: generated music-like clips, for tests). Pair ``k`` is
    item ``k`` of a :class:`~afxcli.train.style.StylePairDataset` seeded with ``seed`` (fixed crops,
    styles and halves). ``predictor``: a loaded :class:`~afxcli.tasks.style.StylePredictor` or None.
    ``groups``: the group (speaker/track) of each file; a file shorter than the crop is continued
    within its group (one speaker per pair, as DeepAFx-ST's one-recording segments).
    ``band_errors``: also ``band_error_<center>hz`` keys (:func:`band_shape_errors_db`).
    ``refine_steps``: also ``model_refine``, the prediction refined toward the reference's features
    for that many steps before the loudness match, as ``afx style-transfer --refine N``.
    ``level_weights``: also ``model_level_w<w>`` for each ``w``: the model's chain with the output level
    blended ``w`` toward the network's own gain (:func:`~afxcli.tasks.style.match_output_loudness`;
    ``model`` uses the model's own ``level_own_gain_weight``), to choose that weight.
    ``oracle_steps``: also ``oracle``, the model's chain fitted to the target (:func:`fit_chain_to_target`;
    ``oracle_only``: just the parameters with these key prefixes).
    """
    from afxcli.effects.chain import Chain
    from afxcli.render import render_chain
    from afxcli.tasks.rulebased import rule_based
    from afxcli.train.style import STYLE_CHAIN, StylePairDataset

    if refine_steps:
        from afxcli.tasks.refine import recording_features, refine_toward_reference
    clip = int(round(clip_seconds * sample_rate)) // 2 * 2
    ds = StylePairDataset(files, STYLE_CHAIN, sample_rate, clip, channels, items_per_epoch=n, seed=seed,
                          groups=groups)
    chain = Chain(predictor.render_spec, sample_rate) if predictor is not None else None
    rows: dict[str, list[dict[str, float]]] = {"input": [], "rule-based": []}
    if predictor is not None:
        rows["model"] = []
        rows["model_own_gain"] = []
        if refine_steps:
            rows["model_refine"] = []
        if oracle_steps:
            rows["oracle"] = []
        for w in level_weights:
            rows[f"model_level_w{w:g}"] = []
    clusters: list[str] = []
    t0 = time.perf_counter()
    for k in range(n):
        item = ds[k]
        clusters.append(str(item["group"]))
        x, ref, target = (item[key].numpy().astype(np.float32) for key in ("input", "reference", "target"))
        rows["input"].append(pair_metrics(x, target, sample_rate, band_errors))
        if band_errors:   # the reference itself: what an exact long-term spectrum match would leave
            rows.setdefault("reference_spectrum", []).append(_band_dict(ref, target, sample_rate))
        rb = rule_based(x, sample_rate, ref, sample_rate).apply(x, sample_rate)
        rows["rule-based"].append(pair_metrics(rb, target, sample_rate, band_errors))
        if predictor is not None:
            from afxcli.tasks.loudness import fast_lufs
            from afxcli.tasks.style import match_output_loudness, set_output_level

            values = predictor.predict(x, sample_rate, ref, sample_rate)
            ref_lufs = fast_lufs(ref, sample_rate)
            w_model = predictor.level_own_gain_weight
            pre = render_chain(chain, x, values[:-1] + [{**values[-1], "gain_db": 0.0}])   # one render, every level
            for row, w in [("model_own_gain", 1.0), ("model", w_model)] + [(f"model_level_w{w:g}", w) for w in level_weights]:
                _, y, _ = set_output_level(chain, pre, values, ref_lufs, w)   # "model": what afx style-transfer does
                rows[row].append(pair_metrics(y, target, sample_rate, band_errors))
            if refine_steps:
                res = refine_toward_reference(chain, values, x, sample_rate, sample_rate,
                                              lambda hz: recording_features(ref, sample_rate, hz), refine_steps)
                _, y, _ = match_output_loudness(chain, x, res.values_after, ref_lufs, w_model)
                rows["model_refine"].append(pair_metrics(y, target, sample_rate, band_errors))
            if oracle_steps:
                y = fit_chain_to_target(predictor, values, x, target, sample_rate, oracle_steps, only=oracle_only)
                rows["oracle"].append(pair_metrics(y, target, sample_rate, band_errors))
        if progress:
            print(f"  pair {k + 1}/{n} ({item['name']}): input mrstft {rows['input'][-1]['mrstft']:.3f}, "
                  f"rule-based {rows['rule-based'][-1]['mrstft']:.3f}"
                  + (f", model {rows['model'][-1]['mrstft']:.3f}" if predictor is not None else "")
                  + f" [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    return rows, clusters


#: Bootstrap resamples of :func:`reduction_interval`.
BOOTSTRAP_REPS = 2000


def reduction_interval(input_errors: Sequence[float], method_errors: Sequence[float], clusters: Sequence[str],
                       reps: int = BOOTSTRAP_REPS, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (``level``) of the MR-STFT reduction ``1 − Σ method / Σ input``
    (%, the figure :func:`figure_lines` prints) over pairs, resampling whole **clusters** with
    replacement (a cluster bootstrap: pairs cut from one track or one speaker are correlated, so
    resampling pairs alone would understate the spread; Efron & Tibshirani 1993, §6; Field & Welsh
    2007 for clustered data). With 7 music tracks the interval is wide: it says how far another
    validation set of the same size could move the figure."""
    inp = np.asarray(input_errors, dtype=np.float64)
    met = np.asarray(method_errors, dtype=np.float64)
    names = sorted(set(clusters))
    index = {c: i for i, c in enumerate(names)}
    cl = np.array([index[c] for c in clusters])
    sum_in = np.bincount(cl, weights=inp, minlength=len(names))
    sum_m = np.bincount(cl, weights=met, minlength=len(names))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(int(reps), len(names)))
    counts = np.stack([np.bincount(d, minlength=len(names)) for d in draws])
    red = 100.0 * (1.0 - (counts @ sum_m) / np.maximum(counts @ sum_in, 1e-300))
    a = (1.0 - level) / 2.0
    return float(np.quantile(red, a)), float(np.quantile(red, 1.0 - a))


def interval_lines(domain: str, rows: dict[str, list[dict[str, float]]], clusters: Sequence[str]) -> list[str]:
    """``style_<domain>_pair_clusters: N groups`` and, per method, the 95 % cluster-bootstrap
    interval of its MR-STFT reduction (:func:`reduction_interval`) as ``..._mrstft_reduction_ci95_low``
    / ``_high`` lines."""
    lines = [f"style_{domain}_pair_clusters: {len(set(clusters))} groups"]
    base = [r["mrstft"] for r in rows["input"]]
    for method, rs in rows.items():
        if method == "input" or not rs or "mrstft" not in rs[0]:
            continue
        lo, hi = reduction_interval(base, [r["mrstft"] for r in rs], clusters)
        m = method.replace("-", "_").replace(".", "p")
        lines += [f"style_{domain}_{m}_mrstft_reduction_ci95_low: {lo:.1f} %",
                  f"style_{domain}_{m}_mrstft_reduction_ci95_high: {hi:.1f} %"]
    return lines


def figure_lines(domain: str, result: dict[str, dict[str, float]]) -> list[str]:
    """``style_<domain>_<method>_<metric>: value unit`` lines and the MR-STFT reductions."""
    lines = []
    def label(method: str) -> str:   # a figure name: model_level_w0.25 -> model_level_w0p25
        return method.replace("-", "_").replace(".", "p")

    for method, vals in result.items():
        m = label(method)
        for name, (key, unit) in ((n, ku) for n, ku in METRICS.items() if ku[0] in vals):
            lines.append(f"style_{domain}_{m}_{name}: {vals[key]:.4f} {unit}".rstrip())
        for key in (k for k in vals if k.startswith("band_error_")):
            lines.append(f"style_{domain}_{m}_{key}: {vals[key]:.3f} dB")
    base = result["input"]["mrstft"]
    for method in result:
        if method != "input" and "mrstft" in result[method]:
            red = 100.0 * (1.0 - result[method]["mrstft"] / base) if base > 0 else math.nan
            lines.append(f"style_{domain}_{label(method)}_mrstft_reduction: {red:.1f} %")
    return lines


def trained_on_added_sources(predictor) -> bool:
    """Whether a model's training config took the sources added after a corpus's first build
    (``data.added_sources``; a config from before that field existed did not)."""
    return bool((predictor.config.get("data") or {}).get("added_sources", False))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50, help="pairs per domain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip-seconds", type=float, default=10.0,
                   help="whole crop (both halves; DeepAFx-ST: ≈10 s)")
    p.add_argument("--domains", default="music,speech")
    p.add_argument("--model", default=None, help="style model for every domain (checkpoint path or music/speech)")
    p.add_argument("--music-model", default=None)
    p.add_argument("--speech-model", default=None)
    p.add_argument("--band-errors", action="store_true",
                   help="also the long-term spectral shape error per octave band (what the EQ gets wrong where)")
    p.add_argument("--refine", type=int, default=0,
                   help="also model_refine: the prediction refined for this many steps (afx style-transfer --refine)")
    p.add_argument("--level-weights", default="",
                   help="comma-separated weights w: also model_level_w<w> rows, the output level blended w toward "
                        "the network's own gain (to choose a model's level_own_gain_weight)")
    p.add_argument("--oracle", type=int, default=0,
                   help="also oracle: the model's chain fitted to the target by this many steps (what the "
                        "chain itself can reach; no real system sees the target)")
    p.add_argument("--oracle-only", default="",
                   help="with --oracle: fit only the parameters whose keys start with these comma-separated "
                        "prefixes (e.g. 'eq.,out.'; the chain's keys: eq.*, comp.*, out.gain_db), the others as "
                        "predicted: which part of the chain the prediction misses")
    p.add_argument("--split", default="val", choices=("val", "added"),
                   help="val: the validation split; added: the sources added to the corpus after its first "
                        "build (training-only items), audio a model trained on the first build never saw")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from afxcli import datasets
    from afxcli.tasks.style import StylePredictor, resolve_model_path

    import torch
    torch.set_num_threads(1)
    out: list[str] = []
    for domain in [d.strip() for d in args.domains.split(",") if d.strip()]:
        if domain not in DOMAINS:
            raise SystemExit(f"unknown domain {domain!r} (known: {', '.join(DOMAINS)})")
        corpus, sr, channels = DOMAINS[domain]
        split, added = ("val", True) if args.split == "val" else ("train", "only")
        files = datasets.files(corpus, split, added=added)
        if not files:
            raise SystemExit(f"{domain}: no {args.split} files in {corpus}")
        model = getattr(args, f"{domain}_model") or args.model
        predictor = StylePredictor.load(resolve_model_path(model, domain)) if model else None
        if args.split == "added" and predictor is not None and trained_on_added_sources(predictor):
            raise SystemExit(f"{domain}: {predictor.path} was trained on the added sources (data.added_sources): "
                             "they are not held out for it")
        print(f"{domain}: {len(files)} {args.split} files of {corpus}, {sr} Hz, {channels} ch, "
              f"{args.n} pairs of {args.clip_seconds:g} s, seed {args.seed}, model "
              f"{predictor.path if predictor else '(none)'}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows, clusters = evaluate_pair_rows(
            files, sr, channels, args.n, args.seed, args.clip_seconds, predictor,
            progress=not args.quiet, groups=datasets.groups(corpus, split, added=added),
            band_errors=args.band_errors, refine_steps=args.refine, oracle_steps=args.oracle,
            oracle_only=[k.strip() for k in args.oracle_only.split(",") if k.strip()],
            level_weights=[float(w) for w in args.level_weights.split(",") if w.strip()])
        print(f"{domain}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        out += figure_lines(domain, mean_rows(rows)) + interval_lines(domain, rows, clusters)
    print("\n".join(out))


if __name__ == "__main__":
    main()
