#!/usr/bin/env python3
"""Build the ``music_mastered`` corpus: real mastered game soundtracks (~9 h, stereo).

Sources (DESIGN.md §5), unpacked with ``apt-get download`` + ``dpkg-deb -x`` (nothing installed):
- ``warzone2100-music``: Opus, 48 kHz (``usr/share/games/warzone2100/music``);
- ``hedgewars-data``: Ogg Vorbis, 44.1 kHz (``usr/share/games/hedgewars/Data/Music``);
- ``nexuiz-music``: Ogg Vorbis inside the zip ``usr/share/games/nexuiz/data/music.pk3``.

Added training source (second build, 2026-12-04), marked ``"train_only"`` so the validation set
stays that of the first build (:func:`afxcli.datasets.assign_splits`): ``wesnoth-1.16-music``,
orchestral Ogg Vorbis (``usr/share/games/wesnoth/1.16/data/core/music``).

Files are copied byte for byte (no re-encoding: original codec, sample rate and channels; soundfile
reads Opus and Vorbis). Files shorter than ``MIN_DURATION_S`` (20 s) or sampled below
``MIN_SAMPLE_RATE`` (32 kHz: nexuiz's 11 kHz ``thunder.ogg`` effect) are skipped. The split
unit (``group``) is the track: versions of one piece (warzone's ``track3``/``track3_enhanced``,
nexuiz's ``sixtyfour_``/``sixtyfour_revisited``, hedgewars' ``Olympics``/``olympics_sd``) share
a group so they never straddle train and validation.

Usage: python scripts/data/build_music_mastered.py [--limit N]
Idempotent and resumable: existing files of the same size are kept; the manifest is rewritten at
the end from every file present.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from common import (audio_info, datasets, load_items, log, mark_added, package_license, parser, temp_dir,
                    unpack_deb)

NAME = "music_mastered"
MIN_DURATION_S = 20.0
MIN_SAMPLE_RATE = 32000     # nexuiz's thunder.ogg (an 11 kHz sound effect) is not music


def _group(source: str, stem: str) -> str:
    s = stem.lower()
    s = re.sub(r"_enhanced$", "", s)           # warzone2100 remasters of the same track
    s = re.sub(r"_(sd|revisited)$|_$", "", s)  # hedgewars sudden-death / nexuiz revisited
    return f"{source}/{s}"


def _copy(src_bytes_or_path, dst: Path, size: int) -> None:
    if dst.is_file() and dst.stat().st_size == size:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    if isinstance(src_bytes_or_path, Path):
        shutil.copyfile(src_bytes_or_path, tmp)
    else:
        tmp.write_bytes(src_bytes_or_path)
    tmp.replace(dst)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    out = datasets.corpus_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    items = load_items(out)
    with temp_dir("music_mastered_") as tmp:
        tmp = Path(tmp)
        # --- warzone2100-music, hedgewars-data and wesnoth-1.16-music: plain files in the package
        for package, sub, pattern, source, train_only in [
                ("warzone2100-music", "usr/share/games/warzone2100/music", "**/*.opus", "warzone2100", False),
                ("hedgewars-data", "usr/share/games/hedgewars/Data/Music", "*.ogg", "hedgewars", False),
                ("wesnoth-1.16-music", "usr/share/games/wesnoth/1.16/data/core/music", "*.ogg", "wesnoth", True)]:
            root, version = unpack_deb(package, tmp)
            lic = package_license(root, package, out)
            srcs = sorted((root / sub).glob(pattern))[: args.limit]
            log(f"{package} {version}: {len(srcs)} files ({lic})")
            for src in srcs:
                rel = f"{source}/{src.relative_to(root / sub).as_posix()}"
                _copy(src, out / rel, src.stat().st_size)
                dur, sr, ch = audio_info(out / rel)
                if dur < MIN_DURATION_S or sr < MIN_SAMPLE_RATE:
                    (out / rel).unlink()
                    continue
                items[rel] = mark_added({"file": rel, "duration_s": round(dur, 3), "sample_rate": sr,
                              "channels": ch, "group": _group(source, src.stem),
                              "source": {"package": package, "version": version,
                                         "path": f"/{sub}/{src.relative_to(root / sub).as_posix()}"},
                              "license": lic}, train_only)
            shutil.rmtree(root)
        # --- nexuiz-music: ogg files inside a zip (.pk3)
        package = "nexuiz-music"
        root, version = unpack_deb(package, tmp)
        lic = package_license(root, package, out)
        pk3 = root / "usr/share/games/nexuiz/data/music.pk3"
        with zipfile.ZipFile(pk3) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith(".ogg"))[: args.limit]
            log(f"{package} {version}: {len(members)} files ({lic})")
            for m in members:
                rel = f"nexuiz/{Path(m).name}"
                size = z.getinfo(m).file_size
                if not ((out / rel).is_file() and (out / rel).stat().st_size == size):
                    _copy(z.read(m), out / rel, size)
                dur, sr, ch = audio_info(out / rel)
                if dur < MIN_DURATION_S or sr < MIN_SAMPLE_RATE:
                    (out / rel).unlink()
                    continue
                items[rel] = {"file": rel, "duration_s": round(dur, 3), "sample_rate": sr,
                              "channels": ch, "group": _group("nexuiz", Path(m).stem),
                              "source": {"package": package, "version": version,
                                         "path": f"/usr/share/games/nexuiz/data/music.pk3:{m}"},
                              "license": lic}
    items = {k: v for k, v in items.items() if (out / k).is_file()}
    path = datasets.write_manifest(out, NAME, list(items.values()), args.val_fraction)
    for split, s in sorted(datasets.summary(NAME).items()):
        log(f"{NAME} {split}: {s['items']} files, {s['hours']:.2f} h, {s['groups']} tracks")
    log(f"manifest: {path}")


if __name__ == "__main__":
    main()
