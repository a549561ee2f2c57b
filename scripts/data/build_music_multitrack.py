#!/usr/bin/env python3
"""Build the ``music_multitrack`` corpus: unmastered MIDI renders as dry per-channel stems + mix.

Sources (DESIGN.md §5):
- Debian ``freedoom``: the music lumps (``D_*``) inside ``freedoom1.wad``/``freedoom2.wad``
  (Standard MIDI in 0.12; MUS lumps, if any, are converted by ``midi.mus_to_midi``); lumps with
  identical bytes in both WADs are rendered once;
- Debian ``openttd-openmsx``: its MIDI files;
- PyPI ``music21`` corpus, composers Bach, Beethoven, Haydn and Mozart only, exported to MIDI by
  ``music21_export.py`` in a throwaway venv under the cache (``corpora/_tools/music21-venv``;
  the project venv is untouched). Pieces music21 cannot export (badly formed repeats) are skipped.

Rendering: ``fluidsynth`` with the General MIDI soundfont of ``fluid-soundfont-gm``
(``FluidR3_GM.sf2``), both ``apt-get install``-ed if missing; reverb and chorus off (``-R 0 -C 0``)
so stems are dry; 44.1 kHz stereo float. Each piece is **capped at ``MAX_PIECE_S`` = 90 s** (events
after 90 s dropped, "all notes off" at the cut, release tails kept). Every MIDI channel that plays
notes is rendered alone (all other channels' notes removed, every controller/program/tempo
kept; parts that an exporter put on one shared channel first get channels of their own,
``midi.separate_tracks``); stems quieter than −80 dBFS peak are skipped. One gain for the
whole piece puts the mix peak at −1 dBFS; stems are quantized to 16 bit (``--bits 24`` for
24) and ``mix.flac`` is their exact sum. Trailing silence (every stem below −80 dBFS) is trimmed.

Split: by work name alone (``afxcli.datasets.assign_splits`` ``rule="hash"``), so a partial build
splits each piece it has as the full build does.

Layout: ``<source>/<piece>/{ch00.flac, ch01.flac, ..., mix.flac, piece.mid, piece.json}``.
Usage: python scripts/data/build_music_multitrack.py [--limit N] [--max-piece-s 90]
Idempotent and resumable: a piece with a ``piece.json`` is done and skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from common import (datasets, ensure_apt, license_from_copyright, load_items, log, package_license,
                    parser, run, temp_dir, unpack_deb)
import midi

NAME = "music_multitrack"
SAMPLE_RATE = 44100
MAX_PIECE_S = 90.0
SILENT_PEAK = 1e-4                 # -80 dBFS
MIX_PEAK = 10 ** (-1 / 20)         # -1 dBFS
FLUID_GAIN = 0.2                   # fluidsynth's default synth.gain
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
COMPOSERS = ["bach", "beethoven", "haydn", "mozart"]
HERE = Path(__file__).resolve().parent


def render_channel(mid: bytes, work: Path) -> np.ndarray:
    """Render a MIDI file with fluidsynth (dry, 44.1 kHz) -> float32 (samples, 2)."""
    src, wav = work / "stem.mid", work / "stem.wav"
    src.write_bytes(mid)
    run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(FLUID_GAIN),
         "-r", str(SAMPLE_RATE), "-T", "wav", "-O", "float", "-F", str(wav),
         str(SOUNDFONT), str(src)])
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    assert sr == SAMPLE_RATE, sr
    return audio


def first_programs(mf: midi.MidiFile) -> dict[int, int]:
    """GM program (0-based) of each channel's first program change (0 when none)."""
    out: dict[int, int] = {}
    for e in sorted((e for t in mf.tracks for e in t), key=lambda e: e.tick):
        if e.kind == 0xC0 and e.channel not in out:
            out[e.channel] = e.data[1]
    return out


def render_piece(mid_bytes: bytes, piece_dir: Path, work: Path, max_s: float,
                 bits: int = 16) -> dict | None:
    """Render one piece's stems and mix into ``piece_dir``; returns its piece.json dict."""
    mf = midi.cap_seconds(midi.separate_tracks(midi.parse_smf(mid_bytes)), max_s)
    chans = midi.note_channels(mf)
    if not chans:
        return None
    stems: dict[int, np.ndarray] = {}
    for ch in chans:
        audio = render_channel(midi.write_smf(midi.only_channel(mf, ch)), work)
        if audio.size and np.max(np.abs(audio)) >= SILENT_PEAK:
            stems[ch] = audio
    if not stems:
        return None
    n = max(a.shape[0] for a in stems.values())
    stack = np.zeros((len(stems), n, 2), np.float64)
    for i, a in enumerate(stems.values()):
        stack[i, : a.shape[0]] = a
    # fluidsynth keeps rendering silence after the releases: cut where every stem is below -80 dBFS
    loud = np.flatnonzero(np.max(np.abs(stack), axis=(0, 2)) >= SILENT_PEAK)
    n = min(n, int(loud[-1]) + 1 + SAMPLE_RATE // 10)
    stack = stack[:, :n]
    peak = float(np.max(np.abs(stack.sum(0))))
    gain = min(MIX_PEAK / peak, 0.999 / float(np.max(np.abs(stack))))
    scale = 2.0 ** (bits - 1)
    q = np.round(stack * gain * scale) / scale            # on the file's integer grid: sums exact
    mix = q.sum(0)
    piece_dir.mkdir(parents=True, exist_ok=True)
    programs = first_programs(mf)
    names = []
    for i, ch in enumerate(stems):
        name = f"ch{ch:02d}.flac"
        _write(piece_dir / name, q[i], bits)
        names.append({"file": name, "channel": ch, "program": programs.get(ch, 0),
                      "drums": ch == 9})
    _write(piece_dir / "mix.flac", mix, bits)
    (piece_dir / "piece.mid").write_bytes(midi.write_smf(mf))
    return {"stems": names, "bits": bits, "duration_s": round(n / SAMPLE_RATE, 3), "gain_db":
            round(float(20 * np.log10(gain)), 3), "midi_duration_s": round(midi.duration_s(mf), 3)}


def _write(path: Path, audio: np.ndarray, bits: int) -> None:
    tmp = path.with_name(path.stem + ".part.flac")
    sf.write(str(tmp), audio, SAMPLE_RATE, subtype=f"PCM_{bits}", format="FLAC")
    os.replace(tmp, path)


def render_pieces(pieces: list, out: Path, items: dict, work_dir: Path, args, manifest) -> None:
    """Render every piece not done yet (a ``piece.json`` marks it done); add it to ``items``."""
    work_dir.mkdir(exist_ok=True)
    for i, (source, name, group, data, src_info, lic) in enumerate(pieces):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        piece_dir = out / source / safe
        meta_path = piece_dir / "piece.json"
        if meta_path.is_file():
            info = json.loads(meta_path.read_text())
        else:
            try:
                info = render_piece(data, piece_dir, work_dir, args.max_piece_s, args.bits)
            except (ValueError, IndexError, RuntimeError) as e:
                log(f"  [{i + 1}/{len(pieces)}] {source}/{name}: skipped ({e})")
                continue
            if info is None:
                log(f"  [{i + 1}/{len(pieces)}] {source}/{name}: no audible channel")
                continue
            meta_path.write_text(json.dumps(info, indent=1))
            log(f"  [{i + 1}/{len(pieces)}] {source}/{name}: {len(info['stems'])} stems, "
                f"{info['duration_s']:.1f} s")
        rel_dir = f"{source}/{safe}"
        rel = f"{rel_dir}/mix.flac"
        items[rel] = {"file": rel, "duration_s": info["duration_s"],
                      "sample_rate": SAMPLE_RATE, "channels": 2, "group": group,
                      "stems": [f"{rel_dir}/{s['file']}" for s in info["stems"]],
                      "stem_info": info["stems"], "midi": f"{rel_dir}/piece.mid",
                      "bits": info.get("bits", 16),
                      "source": src_info, "license": lic}
        if i % 10 == 9:   # partial manifest so a long build is usable while it runs
            manifest()


def music21_midis(tools: Path, out: Path, limit: int | None) -> tuple[str, str]:
    """Export the composers' pieces to ``out`` with music21 in a throwaway venv; returns
    (music21 version, licence)."""
    venv = tools / "music21-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"  creating throwaway venv {venv} (pip install music21)")
        run([sys.executable, "-m", "venv", "--clear", str(venv)])
    if subprocess.run([str(py), "-c", "import music21"], capture_output=True).returncode != 0:
        run([str(py), "-m", "pip", "install", "-q", "music21"])
    meta = run([str(py), "-c", "import importlib.metadata as m; d=m.metadata('music21');"
                "print(d['Version']); print(d.get('License') or d.get('License-Expression') or '')"]
               ).stdout.splitlines()
    cmd = [str(py), str(HERE / "music21_export.py"), str(out), *COMPOSERS]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    log(f"  music21 {meta[0]}: exporting {', '.join(COMPOSERS)} to MIDI")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("fail")]
    for ln in fails:
        log(f"    {ln}")
    if proc.returncode != 0:
        raise RuntimeError(f"music21 export failed: {proc.stderr[-800:]}")
    lic = meta[1] if len(meta) > 1 and meta[1] else "BSD-3-Clause (music21 package)"
    return meta[0], lic


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--max-piece-s", type=float, default=MAX_PIECE_S,
                    help="render at most this many seconds of each piece")
    ap.add_argument("--bits", type=int, choices=(16, 24), default=16,
                    help="FLAC sample size of stems and mix (24 doubles the ~15 GB)")
    ap.add_argument("--skip-music21", action="store_true", help="only the Debian sources")
    args = ap.parse_args()
    ensure_apt(["fluidsynth", "fluid-soundfont-gm"])
    out = datasets.corpus_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    items = load_items(out)
    sf_version = run(["dpkg-query", "-W", "-f=${Version}", "fluid-soundfont-gm"]).stdout
    sf_license = license_from_copyright(
        Path("/usr/share/doc/fluid-soundfont-gm/copyright").read_text(errors="replace"))

    def manifest() -> None:
        _manifest(out, items, args.val_fraction, sf_version, sf_license, args.max_piece_s)

    # (source, piece name, group, midi bytes, source info, licence)
    pieces: list[tuple[str, str, str, bytes, dict, str]] = []
    with temp_dir("multitrack_") as tmp:
        tmp = Path(tmp)
        root, version = unpack_deb("freedoom", tmp)
        lic = package_license(root, "freedoom", out)
        seen: set[str] = set()
        n = 0
        for wad in sorted((root / "usr/share/games/doom").glob("*.wad")):
            for lump, data in midi.music_lumps(wad.read_bytes()):
                digest = hashlib.sha1(data).hexdigest()
                if digest in seen or (args.limit is not None and n >= args.limit):
                    continue
                seen.add(digest)
                n += 1
                name = f"{wad.stem}_{lump.lower()}"
                pieces.append(("freedoom", name, f"freedoom/{digest[:12]}", data,
                               {"package": "freedoom", "version": version,
                                "path": f"/usr/share/games/doom/{wad.name}:{lump}"}, lic))
        log(f"freedoom {version}: {n} distinct music lumps ({lic})")
        root, version = unpack_deb("openttd-openmsx", tmp)
        lic = package_license(root, "openttd-openmsx", out)
        mids = sorted((root / "usr/share/games/openttd/baseset/openmsx").glob("*.mid"))[: args.limit]
        for m in mids:
            pieces.append(("openttd-openmsx", m.stem, f"openttd-openmsx/{m.stem}", m.read_bytes(),
                           {"package": "openttd-openmsx", "version": version,
                            "path": f"/usr/share/games/openttd/baseset/openmsx/{m.name}"}, lic))
        log(f"openttd-openmsx {version}: {len(mids)} MIDI files ({lic})")
        render_pieces(pieces, out, items, tmp / "render", args, manifest)
        if not args.skip_music21:
            m21_dir = datasets.corpora_dir() / "_tools" / "music21-midi"
            m21_version, m21_lic = music21_midis(datasets.corpora_dir() / "_tools", m21_dir,
                                                 args.limit)
            pieces = []
            count = 0
            for composer in COMPOSERS:
                for m in sorted((m21_dir / composer).glob("*.mid"))[: args.limit]:
                    if m.name.endswith(".part.mid"):
                        continue
                    work = m.stem.split("__")[0]          # movements of one work share a group
                    pieces.append((f"music21/{composer}", m.stem, f"music21/{composer}/{work}",
                                   m.read_bytes(), {"package": "music21 (PyPI)",
                                                    "version": m21_version,
                                                    "path": f"corpus/{composer}/{m.stem}"}, m21_lic))
                    count += 1
            log(f"music21 {m21_version}: {count} pieces")
            render_pieces(pieces, out, items, tmp / "render", args, manifest)
    manifest()
    for split, s in sorted(datasets.summary(NAME).items()):
        log(f"{NAME} {split}: {s['items']} pieces, {s['hours']:.2f} h, {s['groups']} works")
    log(f"manifest: {out / datasets.MANIFEST_NAME}")


def _manifest(out: Path, items: dict, val_fraction: float, sf_version: str, sf_license: str,
              max_s: float) -> None:
    present = [v for k, v in items.items() if (out / k).is_file()]
    datasets.write_manifest(out, NAME, present, val_fraction, rule="hash", extra={
        "renderer": {"synth": "fluidsynth (reverb and chorus off)",
                     "soundfont": f"fluid-soundfont-gm {sf_version} FluidR3_GM.sf2",
                     "soundfont_license": sf_license, "sample_rate": SAMPLE_RATE,
                     "max_piece_s": max_s, "mix_peak_dbfs": -1.0}})


if __name__ == "__main__":
    main()
