"""Mastering against a real reference: afx (rule-based and/or model) next to Matchering, one run.

Pairs (``--n``, default 10, all distinct): the ``music_multitrack`` validation split's ``M`` mixes
(sorted by path; the stems summed, as the corpus builds it), thinned to ``n`` evenly spread ones
(mix ``floor(k M / n)``) when ``n < M`` so that every source is in; pair ``k`` is mix ``k mod M``
and the real mastered track ``k mod R`` of the ``music_mastered`` validation split's ``R`` tracks
(7) as the reference (different songs: the reference only gives the production target). The
multitrack split goes by each work's name alone (``scripts/data/README.md``): a partial build has
a subset of the full build's validation mixes, so ``n`` spread over fewer of them gives other
pairs. ``--max-seconds`` crops both to their first seconds (speed); the default uses whole files.

Methods, each writing a mastered file per pair: ``input`` (the mix itself, for scale), ``afx_rule_based``
(``afx master --method rule-based``, DeepAFx-ST §3.3 baseline + afx's loudness stage and true-peak
limiter), ``afx_model`` (``--model PATH --static``), ``afx_model_tv`` (``--model PATH
--time-varying``, the default of ``afx master`` for the model: frame-wise predictions smoothed
into automation), ``afx_model_refine`` (``--static --refine N`` with ``--refine N``: the network's
setting, then N gradient steps against the reference's features; its mean feature-distance gain
as the refinement itself measures it is printed too), ``matchering`` (the ``matchering`` package, run in a
subprocess of a separate venv, ``--matchering-python``, default ``/tmp/bench-venv/bin/python``; set
it up with ``python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install matchering``),
``matchering_leveled`` (Matchering's output through afx's loudness stage: gain and true-peak
limiter onto the reference's loudness under ``--ceiling``, :func:`afxcli.tasks.loudness.match_loudness`;
Matchering lands neither on the reference's loudness nor under the ceiling, and both move the
crest factor: this row compares the processing at equal loudness and ceiling).

Metrics to the reference (means over pairs; output and reference are different songs, so every
distance compares whole-recording statistics, :mod:`afxcli.metrics`):

- ``lufs_error`` |LUFS(out) − LUFS(ref)| (BS.1770-4), LU;
- ``msd`` the mel spectral distance of DeepAFx-ST §4.1 (W = 65536, 128 Slaney mel bands, dB) on the
  **long-term average** mel spectra (mean over frames and channels), ``mean_b |20·log10 M̄_out(b) −
  20·log10 M̄_ref(b)|``, dB — frame-wise MSD needs matching content;
- ``sce`` |centroid(out) − centroid(ref)| (:func:`afxcli.metrics.spectral_centroid_hz`), Hz;
- ``crest_error`` |crest(out) − crest(ref)| (sample peak / RMS), dB (``--per-pair-crest``: each
  pair's crest factors, signed);
- ``<method>_minus_matchering_<metric>`` the mean paired difference of each afx method to
  Matchering (negative: closer to the reference) with a 95 % bootstrap interval over the pairs
  (``_ci95_low`` / ``_ci95_high``, :func:`comparison_lines`), and ``<method>_minus_matchering_leveled_<metric>``
  the same against ``matchering_leveled``;
- ``true_peak_max`` the largest true peak over the pairs (BS.1770-4 Annex 2), dBTP, and
  ``over_ceiling`` how many outputs exceed ``--ceiling`` (afx's ceiling; Matchering has its own
  limiter and no true-peak ceiling, its count is printed for comparison).

    .venv/bin/python benchmarks/master_eval.py --n 10 [--model runs/style_music/best.pt] [--max-seconds 60]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MATCHERING_PYTHON = "/tmp/bench-venv/bin/python"
#: Run in the Matchering venv: master every (target, reference, output) of a JSON list, print times.
MATCHERING_SCRIPT = r"""
import json, sys, time
import matchering as mg
mg.log(lambda *a, **k: None)
for target, reference, output in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    mg.process(target=target, reference=reference, results=[mg.pcm24(output)])
    print(json.dumps({"output": output, "seconds": time.perf_counter() - t0}), flush=True)
"""


def matchering_available(python: str) -> bool:
    """Whether ``python`` exists and can import ``matchering``."""
    if not Path(python).exists():
        return False
    return subprocess.run([python, "-c", "import matchering"], capture_output=True).returncode == 0


def run_matchering(python: str, jobs: Sequence[tuple[Path, Path, Path]]) -> None:
    """Master every ``(target, reference, output)`` with Matchering in one subprocess of ``python``."""
    payload = json.dumps([[str(a), str(b), str(c)] for a, b, c in jobs])
    r = subprocess.run([python, "-c", MATCHERING_SCRIPT, payload], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("matchering failed: " + " ".join(r.stderr.split()[-40:]))


def average_mel_db(audio: np.ndarray, sample_rate: float) -> np.ndarray:
    """Long-term average mel spectrum ``(n_mels,)`` in dB (MSD settings: W = 65536, 128 bands)."""
    from afxcli.metrics import mel_spectrogram

    m = mel_spectrogram(audio, sample_rate).mean(axis=(0, 2))
    return 20.0 * np.log10(np.maximum(m, 1e-10))


def recording_stats(audio: np.ndarray, sample_rate: float) -> dict[str, float]:
    """Whole-recording statistics of ``(channels, samples)`` audio used by :func:`distances`."""
    from afxcli import metrics

    return {"lufs": metrics.lufs(audio, sample_rate), "crest_db": metrics.crest_factor_db(audio),
            "centroid_hz": metrics.spectral_centroid_hz(audio, sample_rate),
            "true_peak_dbtp": metrics.true_peak_dbtp(audio, sample_rate),
            "mel_db": average_mel_db(audio, sample_rate)}


def distances(out: dict, ref: dict) -> dict[str, float]:
    """Errors of one output's :func:`recording_stats` to the reference's (different content)."""
    return {"lufs_error": abs(out["lufs"] - ref["lufs"]),
            "msd": float(np.mean(np.abs(out["mel_db"] - ref["mel_db"]))),
            "sce": abs(out["centroid_hz"] - ref["centroid_hz"]),
            "crest_error": abs(out["crest_db"] - ref["crest_db"]),
            "true_peak": out["true_peak_dbtp"],
            "crest_db": out["crest_db"], "reference_crest_db": ref["crest_db"]}


def excerpt(path: Path, max_seconds: float | None, folder: Path, name: str) -> Path:
    """``path`` itself, or its first ``max_seconds`` written to ``folder/name.wav``."""
    if not max_seconds:
        return Path(path)
    import soundfile as sf

    info = sf.info(str(path))
    data, sr = sf.read(str(path), frames=int(max_seconds * info.samplerate), dtype="float32", always_2d=True)
    out = folder / f"{name}.wav"
    sf.write(str(out), data, sr, subtype="FLOAT")
    return out


def evaluate(pairs: Sequence[tuple[Path, Path]], methods: dict, ceiling: float, workdir: Path,
             matchering_python: str | None = None, progress: bool = False,
             refine_reports: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Per method, per pair distances to the reference.

    ``methods``: name → ``afxcli.tasks.master.MasterContext`` keyword arguments other than ``ref``
    (e.g. ``{"afx_rule_based": {"method": "rule-based"}}``); ``input`` and (when
    ``matchering_python``) ``matchering`` are added. ``refine_reports``: filled with each
    method's per-pair refinement reports (the ``refine`` entry of the JSON report), when it refines.
    """
    from afxcli.audio import read_audio
    from afxcli.tasks.loudness import match_loudness
    from afxcli.tasks.master import MasterContext, master_file

    rows: dict[str, list[dict]] = {"input": [], **{m: [] for m in methods}}
    outputs: dict[str, list[Path]] = {m: [] for m in methods}
    ref_stats = []
    t0 = time.perf_counter()
    for k, (mix, ref) in enumerate(pairs):
        r_audio, r_sr = read_audio(ref)
        ref_stats.append(recording_stats(r_audio, r_sr))
        x, sr = read_audio(mix)
        rows["input"].append(distances(recording_stats(x, sr), ref_stats[-1]))
        for name, kwargs in methods.items():
            ctx = MasterContext(ref=ref, ceiling=ceiling, **kwargs)
            out = workdir / f"{name}_{k}.wav"
            result = master_file(Path(mix), out, ctx)
            if result.report.get("refine") and refine_reports is not None:
                refine_reports.setdefault(name, []).append(result.report["refine"])
            outputs[name].append(out)
            y, y_sr = read_audio(out)
            rows[name].append(distances(recording_stats(y, y_sr), ref_stats[-1]))
        if progress:
            print(f"  pair {k + 1}/{len(pairs)} done "
                  f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    if matchering_python:
        jobs = [(Path(m), Path(r), workdir / f"matchering_{k}.wav") for k, (m, r) in enumerate(pairs)]
        t1 = time.perf_counter()
        run_matchering(matchering_python, jobs)
        if progress:
            print(f"  matchering: {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
        rows["matchering"], rows["matchering_leveled"] = [], []
        for (_, _, out), rs in zip(jobs, ref_stats):
            y, y_sr = read_audio(out)
            rows["matchering"].append(distances(recording_stats(y, y_sr), rs))
            leveled = match_loudness(y, y_sr, rs["lufs"], ceiling).audio
            rows["matchering_leveled"].append(distances(recording_stats(leveled, y_sr), rs))
    return rows


def figure_lines(rows: dict[str, list[dict]], ceiling: float) -> list[str]:
    """``master_<method>_<metric>: value unit`` lines."""
    units = {"lufs_error": "LU", "msd": "dB", "sce": "Hz", "crest_error": "dB"}
    lines = []
    for method, rs in rows.items():
        for metric, unit in units.items():
            lines.append(f"master_{method}_{metric}: {np.mean([r[metric] for r in rs]):.4f} {unit}")
        tp = [r["true_peak"] for r in rs]
        lines.append(f"master_{method}_true_peak_max: {max(tp):.3f} dBTP")
        if method != "input":
            over = [i for i, v in enumerate(tp) if v > ceiling + 1e-6]
            lines.append(f"master_{method}_over_ceiling: {len(over)} of {len(rs)} items"
                         + (f" (pairs {', '.join(map(str, over))} above {ceiling:g} dBTP)" if over else ""))
    return lines


#: Bootstrap resamples of :func:`comparison_lines`.
BOOTSTRAP_REPS = 2000


def comparison_lines(rows: dict[str, list[dict]], against: str = "matchering", reps: int = BOOTSTRAP_REPS,
                     seed: int = 0) -> list[str]:
    """Each afx method's paired difference to ``against`` per metric, ``mean_k (method_k −
    against_k)`` over the pairs (negative: the afx method is closer to the reference), with a 95 %
    percentile bootstrap interval over resampled pairs: ``master_<method>_minus_<against>_<metric>``
    and its ``_ci95_low`` / ``_ci95_high`` lines. With 10 pairs a difference whose interval holds 0
    is not one this benchmark can tell from chance. Nothing when ``against`` did not run."""
    if against not in rows or not rows[against]:
        return []
    units = {"lufs_error": "LU", "msd": "dB", "sce": "Hz", "crest_error": "dB"}
    n = len(rows[against])
    draws = np.random.default_rng(seed).integers(0, n, size=(int(reps), n))
    lines = []
    for method, rs in rows.items():
        if not method.startswith("afx_") or len(rs) != n:
            continue
        for metric, unit in units.items():
            d = np.array([a[metric] - b[metric] for a, b in zip(rs, rows[against])], dtype=np.float64)
            boot = d[draws].mean(axis=1)
            lo, hi = np.quantile(boot, [0.025, 0.975])
            name = f"master_{method}_minus_{against}_{metric}"
            lines += [f"{name}: {d.mean():.4f} {unit}", f"{name}_ci95_low: {lo:.4f} {unit}",
                      f"{name}_ci95_high: {hi:.4f} {unit}"]
    return lines


def pair_crest_lines(rows: dict[str, list[dict]]) -> list[str]:
    """Per pair, the crest factor (sample peak / RMS, dB) of the reference and of each method's
    output (``input``: the mix): ``master_pair<k>_<method>_crest: value dB``. The mean
    ``crest_error`` hides its sign; these show where an output is denser than its reference."""
    lines = []
    n = len(next(iter(rows.values())))
    for k in range(n):
        lines.append(f"master_pair{k}_reference_crest: {rows['input'][k]['reference_crest_db']:.2f} dB")
        lines += [f"master_pair{k}_{method}_crest: {rs[k]['crest_db']:.2f} dB" for method, rs in rows.items()]
    return lines


def refine_lines(reports: dict[str, list[dict]]) -> list[str]:
    """What the refinement gained by its own measure (feature distance of the pedalboard render of
    the input excerpts to the reference's features, :mod:`afxcli.tasks.refine`): mean distance
    before and of the setting used after (the refined one only where it lowered the distance)."""
    lines = []
    for name, reps in reports.items():
        before = [r["feature_distance_before_db"] for r in reps]
        after = [r["feature_distance_after_db"] if r["kept"] else r["feature_distance_before_db"] for r in reps]
        lines += [f"master_{name}_feature_distance_before: {np.mean(before):.4f} dB",
                  f"master_{name}_feature_distance_after: {np.mean(after):.4f} dB",
                  f"master_{name}_refinement_kept: {sum(bool(r['kept']) for r in reps)} of {len(reps)} items"]
    return lines


def validation_pairs(n: int) -> list[tuple[Path, Path]]:
    """``n`` distinct (unmastered mix, mastered reference) pairs of the validation splits."""
    from afxcli import datasets

    mixes = sorted(datasets.files("music_multitrack", "val"))
    refs = sorted(datasets.files("music_mastered", "val"))
    if not mixes or not refs:
        raise SystemExit("empty validation split: build the corpora (scripts/data/README.md)")
    if n > len(mixes) * len(refs):
        raise SystemExit(f"at most {len(mixes) * len(refs)} distinct pairs")
    if n < len(mixes):   # evenly spread over the sorted mixes: every source, not the first one's pieces
        mixes = [mixes[k * len(mixes) // n] for k in range(n)]
    # (k mod M, k mod R) repeats only after lcm(M, R) pairs; fall back to a plain product order then
    pairs = [(mixes[k % len(mixes)], refs[k % len(refs)]) for k in range(n)]
    if len(set(pairs)) < n:
        pairs = [(m, r) for r in refs for m in mixes][:n]
    return pairs


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10, help="validation pairs (>= 10 for the issue's figure)")
    p.add_argument("--model", default=None, help="style model: adds afx_model (checkpoint path or 'music')")
    p.add_argument("--no-rule-based", action="store_true", help="with --model: skip afx_rule_based")
    p.add_argument("--time-varying", action="store_true",
                   help="with --model: also afx_model_tv (frame-wise automation, afx master's default for "
                        "the model); afx_model is then --static")
    p.add_argument("--refine", type=int, default=0,
                   help="with --model: also afx_model_refine (--static --refine N)")
    p.add_argument("--ceiling", type=float, default=-1.0, help="afx's true-peak ceiling, dBTP")
    p.add_argument("--max-seconds", type=float, default=None, help="crop mixes and references to their start")
    p.add_argument("--matchering-python", default=DEFAULT_MATCHERING_PYTHON)
    p.add_argument("--keep", default=None, help="keep the mastered files in this folder")
    p.add_argument("--per-pair-crest", action="store_true",
                   help="also each pair's crest factor of the reference and of every output")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    methods: dict[str, dict] = {}
    if not (args.model and args.no_rule_based):
        methods["afx_rule_based"] = {"method": "rule-based"}
    if args.model:
        methods["afx_model"] = {"method": "model", "model": args.model, "time_varying": False}
        if args.time_varying:
            methods["afx_model_tv"] = {"method": "model", "model": args.model, "time_varying": True}
        if args.refine:
            methods["afx_model_refine"] = {"method": "model", "model": args.model, "time_varying": False,
                                           "refine_steps": args.refine}
    mpy = args.matchering_python if matchering_available(args.matchering_python) else None
    if mpy is None:
        print(f"matchering: not importable with {args.matchering_python} "
              "(python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install matchering); skipped",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="afx-master-eval-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        originals = validation_pairs(args.n)
        for k, (m, r) in enumerate(originals):
            print(f"  pair {k}: {Path(m).parent.name}/{Path(m).name} + {Path(r).name}", file=sys.stderr)
        pairs = [(excerpt(m, args.max_seconds, work, f"mix_{k}"), excerpt(r, args.max_seconds, work, f"ref_{k}"))
                 for k, (m, r) in enumerate(originals)]
        print(f"{len(pairs)} pairs, methods: input, {', '.join(methods)}{', matchering' if mpy else ''}; "
              f"crop: {args.max_seconds or 'none'}", file=sys.stderr, flush=True)
        reports: dict[str, list[dict]] = {}
        rows = evaluate(pairs, methods, args.ceiling, work, mpy, progress=True, refine_reports=reports)
    print("\n".join(figure_lines(rows, args.ceiling) + comparison_lines(rows)
                    + comparison_lines(rows, against="matchering_leveled") + refine_lines(reports)
                    + (pair_crest_lines(rows) if args.per_pair_crest else [])))
    if mpy is None:
        print("master_matchering: not measured (matchering not installed)")


if __name__ == "__main__":
    main()
