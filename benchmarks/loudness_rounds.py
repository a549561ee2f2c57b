"""How many whole-file limiter renders the loudness stage of ``afx master`` needs, and what it leaves.

Each whole-file render of the true-peak limiter is the single most expensive step of a master
(about 1 s on 180 s of stereo). :func:`afxcli.tasks.loudness.match_loudness` first searches on
excerpts (files longer than ``PROXY_MIN_SECONDS``), then renders the whole file at the predicted
gain and keeps it when its reach lands in the acceptance window
(``SEARCH_AIM_LU ± SEARCH_ACCEPT_LU``). This masters ``--n`` validation pairs (unmastered mix,
mastered reference; the same pairs as ``master_eval.py``) with the model method and reports, over
the files that reach the limiter:

- ``loudness_whole_file_renders_mean``: whole-file limiter renders per file (1 is the least);
- ``loudness_headroom_max_db``: the largest gap between the ceiling and the output's true peak
  (the extra limiting the window allows);
- ``loudness_error_max_lu``: the largest distance of the output's loudness to its target.

    .venv/bin/python benchmarks/loudness_rounds.py --n 10
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--model", default=None, help="afx master --model")
    args = p.parse_args(argv)

    from afxcli.memory import tune_for_batch_rendering
    from afxcli.tasks.master import MasterContext, master_file
    from master_eval import validation_pairs

    tune_for_batch_rendering()
    rows = []
    with tempfile.TemporaryDirectory(prefix="afx-loudness-rounds-") as tmp:
        for k, (mix, ref) in enumerate(validation_pairs(args.n)):
            ctx = MasterContext(ref=ref, method="model", model=args.model)
            res = master_file(mix, Path(tmp) / f"{k}.wav", ctx)
            loud = res.report["loudness"]
            limited = loud["limiter_ceiling_db"] is not None and loud["limiting_db"] > 0.0
            print(f"  {mix.parent.name[:28]:28s} {res.seconds:6.1f} s  renders {loud['rounds']}  "
                  f"limiting {loud['limiting_db']:.2f} dB  true peak {loud['true_peak_dbtp']:.3f} dBTP  "
                  f"{loud['output_lufs']:.3f} / {loud['target_lufs']:.3f} LUFS", file=sys.stderr, flush=True)
            if limited:
                rows.append(loud)
    if not rows:
        raise SystemExit("no file reached the limiter")
    mean = sum(r["rounds"] for r in rows) / len(rows)
    print(f"loudness_files_limited: {len(rows)} files")
    print(f"loudness_whole_file_renders_mean: {mean:.2f} renders")
    print(f"loudness_whole_file_renders_max: {max(r['rounds'] for r in rows)} renders")
    print(f"loudness_headroom_max_db: {max(r['ceiling_dbtp'] - r['true_peak_dbtp'] for r in rows):.3f} dB")
    print(f"loudness_error_max_lu: {max(abs(r['output_lufs'] - r['target_lufs']) for r in rows):.4f} LU")


if __name__ == "__main__":
    main()
