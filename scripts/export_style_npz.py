#!/usr/bin/env python3
"""Export the NumPy weights of style models (``models/style_<domain>.npz`` next to each ``.pt``) so
that inference (``afx master``, ``afx style-transfer``) runs without torch
(:mod:`afxcli.nn.numpy_infer`). The npz records the SHA-256 of the ``.pt`` it came from; afx uses
torch instead when they do not match (a retrained ``.pt`` without a new export).

    .venv/bin/python scripts/export_style_npz.py models/style_music.pt models/style_speech.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afxcli.nn.numpy_infer import export_npz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="style model checkpoints (.pt)")
    args = ap.parse_args(argv)
    for m in args.models:
        out = export_npz(m)
        print(f"{out} ({out.stat().st_size / 1e6:.2f} MB) from {m}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
