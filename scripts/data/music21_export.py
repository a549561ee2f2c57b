"""Write music21 corpus pieces of some composers as MIDI files (run by build_music_multitrack.py
with the Python of a throwaway venv that has music21; not with the project venv).

Usage: python music21_export.py OUT_DIR COMPOSER [COMPOSER...] [--limit N]
Writes OUT_DIR/<composer>/<corpus path with '/' -> '__'>.mid, skipping files that exist (and
pieces that failed before: a ``.fail`` file records why), and prints one line per piece:
"ok|skip|fail <relative midi path> [reason]". A piece gets at most ``--timeout-s`` seconds.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


class Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise Timeout("took longer than --timeout-s")


def main() -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("composers", nargs="+")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--timeout-s", type=int, default=240)
    args = ap.parse_args()
    from music21 import corpus  # imported here: only this venv has it
    out = Path(args.out_dir)
    for composer in args.composers:
        paths = sorted(str(p) for p in corpus.getComposer(composer))
        (out / composer).mkdir(parents=True, exist_ok=True)
        for p in paths[: args.limit]:
            # name from the path inside music21's corpus folder ("corpus/<composer>/...")
            parts = Path(p).parts
            rel = "__".join(parts[parts.index("corpus") + 2:]) if "corpus" in parts else Path(p).name
            dst = out / composer / (Path(rel).stem + ".mid")
            fail = dst.with_suffix(".fail")
            if dst.exists() or fail.exists():
                print(f"skip {composer}/{dst.name}", flush=True)
                continue
            signal.alarm(args.timeout_s)
            try:
                score = corpus.parse(p)
                tmp = dst.with_suffix(".part.mid")
                score.write("midi", fp=str(tmp))
                os.replace(tmp, dst)
                print(f"ok {composer}/{dst.name}", flush=True)
            except Exception as e:  # noqa: BLE001 - a corpus file music21 cannot export
                reason = f"{type(e).__name__}: {str(e)[:120]}"
                fail.write_text(reason + "\n")
                print(f"fail {composer}/{dst.name} {reason}", flush=True)
            finally:
                signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
