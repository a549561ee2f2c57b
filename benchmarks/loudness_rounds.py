"""How many limiter renders the loudness stage of ``afx master`` needs, and what it leaves.

Each whole-file render of the true-peak limiter is the single most expensive step of a master
(about 1 s on 180 s of stereo). :func:`afxcli.tasks.loudness.match_loudness` first searches on
excerpts (files longer than ``PROXY_MIN_SECONDS``: ``PROXY_CHUNKS`` excerpts of
``PROXY_CHUNK_SECONDS``), then renders the whole file at the predicted gain and keeps it when its
reach lands in the acceptance window (``SEARCH_AIM_LU ± SEARCH_ACCEPT_LU``). This masters ``--n``
pairs with the model method and reports, over the files that reach the limiter:

- ``loudness_whole_file_renders_mean``: whole-file limiter renders per file (1 is the least);
- ``loudness_excerpt_renders_mean``: the excerpts' renders per file that searched on excerpts;
- ``loudness_limiter_audio_s``: seconds of audio the limiter rendered in all (excerpts and whole
  files), and ``loudness_limiter_time_s`` the time those renders and their measurements took;
- ``loudness_headroom_max_db``: the largest gap between the ceiling and the output's true peak
  (the extra limiting the window allows);
- ``loudness_error_max_lu``: the largest distance of the output's loudness to its target.

Pairs: by default the ``master_eval.py`` validation pairs (unmastered mix, mastered reference),
loudness from the reference. ``--split train --min-seconds 65 --n 30 --lufs=-9,-11,-13`` takes mixes
of the training split longer than 65 s instead (shuffled with seed 0; the references of the
validation split in turn) at the given loudness targets in turn — louder targets, more limiting,
where the excerpts' prediction matters most. ``--proxy-chunk-seconds 4,2`` runs the whole set once
per excerpt length, each printed with a ``_<seconds>s`` suffix (how the 2 s default was chosen).

    .venv/bin/python benchmarks/loudness_rounds.py --n 10
    .venv/bin/python benchmarks/loudness_rounds.py --split train --min-seconds 65 --n 30 --lufs=-9,-11,-13 --proxy-chunk-seconds 4,2
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def pairs_and_targets(split: str, n: int, min_seconds: float,
                      lufs: list[float] | None) -> list[tuple[Path, Path, float | None]]:
    """``(mix, reference, loudness target or None)`` for the run (module docstring)."""
    from master_eval import validation_pairs

    if split == "val" and not min_seconds:
        pairs = validation_pairs(n)
    else:
        import soundfile as sf

        from afxcli import datasets

        mixes = [m for m in sorted(datasets.files("music_multitrack", split))
                 if sf.info(str(m)).duration > min_seconds]
        random.Random(0).shuffle(mixes)
        refs = sorted(datasets.files("music_mastered", "val"))
        if not mixes or not refs:
            raise SystemExit("no mixes or references: build the corpora (scripts/data/README.md)")
        pairs = [(m, refs[k % len(refs)]) for k, m in enumerate(mixes[:n])]
    return [(m, r, lufs[k % len(lufs)] if lufs else None) for k, (m, r) in enumerate(pairs)]


def run(items, model: str | None, tmp: Path, label: str) -> None:
    """Master every item, count the limiter renders, print the figures (names end in ``label``)."""
    import soundfile as sf

    import afxcli.tasks.loudness as loudness
    from afxcli.tasks.master import MasterContext, master_file

    real = loudness._limit_and_measure
    frames = [0]
    count = {"excerpt": 0, "whole": 0, "audio_s": 0.0, "time_s": 0.0}

    def counted(x, sr, *a, **k):
        t0 = time.perf_counter()
        out = real(x, sr, *a, **k)
        count["time_s"] += time.perf_counter() - t0
        count["audio_s"] += x.shape[1] / sr
        count["excerpt" if x.shape[1] < frames[0] else "whole"] += 1
        return out

    loudness._limit_and_measure = counted
    rows, excerpt_renders, contexts = [], [], {}
    try:
        for k, (mix, ref, target) in enumerate(items):
            frames[0] = sf.info(str(mix)).frames
            key = (ref, target)
            if key not in contexts:
                contexts[key] = MasterContext(ref=ref, method="model", model=model, lufs=target)
            before = dict(count)
            res = master_file(mix, tmp / f"{k}.wav", contexts[key])
            loud = res.report["loudness"]
            whole, excerpt = count["whole"] - before["whole"], count["excerpt"] - before["excerpt"]
            print(f"  {mix.parent.name[:28]:28s} {res.seconds:6.1f} s  renders {whole} (+{excerpt} excerpts)  "
                  f"limiting {loud['limiting_db']:.2f} dB  true peak {loud['true_peak_dbtp']:.3f} dBTP  "
                  f"{loud['output_lufs']:.3f} / {loud['target_lufs']:.3f} LUFS", file=sys.stderr, flush=True)
            if loud["limiter_ceiling_db"] is not None and loud["limiting_db"] > 0.0:
                rows.append({**loud, "whole": whole})
                if excerpt:
                    excerpt_renders.append(excerpt)
    finally:
        loudness._limit_and_measure = real
    if not rows:
        raise SystemExit("no file reached the limiter")
    print(f"loudness_files_limited{label}: {len(rows)} files")
    print(f"loudness_whole_file_renders_mean{label}: {sum(r['whole'] for r in rows) / len(rows):.2f} renders")
    print(f"loudness_whole_file_renders_max{label}: {max(r['whole'] for r in rows)} renders")
    if excerpt_renders:
        print(f"loudness_excerpt_renders_mean{label}: {sum(excerpt_renders) / len(excerpt_renders):.2f} renders")
    print(f"loudness_limiter_audio_s{label}: {count['audio_s']:.0f} s")
    print(f"loudness_limiter_time_s{label}: {count['time_s']:.1f} s")
    print(f"loudness_headroom_max_db{label}: {max(r['ceiling_dbtp'] - r['true_peak_dbtp'] for r in rows):.3f} dB")
    print(f"loudness_error_max_lu{label}: {max(abs(r['output_lufs'] - r['target_lufs']) for r in rows):.4f} LU")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--model", default=None, help="afx master --model")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split of the mixes")
    p.add_argument("--min-seconds", type=float, default=0.0, help="only mixes longer than this")
    p.add_argument("--lufs", default=None, help="comma-separated loudness targets, in turn (default: the reference's)")
    p.add_argument("--proxy-chunk-seconds", default=None,
                   help="comma-separated excerpt lengths: one run each (default: PROXY_CHUNK_SECONDS)")
    args = p.parse_args(argv)

    import afxcli.tasks.loudness as loudness
    from afxcli.memory import tune_for_batch_rendering

    tune_for_batch_rendering()
    lufs = [float(v) for v in args.lufs.split(",")] if args.lufs else None
    items = pairs_and_targets(args.split, args.n, args.min_seconds, lufs)
    lengths = [float(v) for v in args.proxy_chunk_seconds.split(",")] if args.proxy_chunk_seconds else [None]
    default = loudness.PROXY_CHUNK_SECONDS
    with tempfile.TemporaryDirectory(prefix="afx-loudness-rounds-") as tmp:
        for seconds in lengths:
            loudness.PROXY_CHUNK_SECONDS = default if seconds is None else seconds
            try:
                run(items, args.model, Path(tmp), "" if seconds is None else f"_{seconds:g}s")
            finally:
                loudness.PROXY_CHUNK_SECONDS = default


if __name__ == "__main__":
    main()
