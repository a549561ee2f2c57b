#!/usr/bin/env python3
"""Build the ``speech`` corpus: real recorded speech (~5.2 h, mono), split by speaker.

Sources (DESIGN.md §5), unpacked with ``apt-get download`` + ``dpkg-deb -x`` (nothing installed):
- ``asterisk-core-sounds-{en,es,fr}-g722``: telephony prompts read by professional voices
  (``en_US_f_Allison``, ``es_MX_f_Allison``, ``fr_CA_f_June``), raw G.722 at 16 kHz, decoded with
  ``ffmpeg -f g722`` to 16 kHz mono FLAC (``ffmpeg`` is ``apt-get install``-ed when missing). The ``silence/`` prompts are skipped.
- ``fillets-ng-data-cs``: acted Czech dialogue of the game Fish Fillets NG, Ogg Vorbis 22.05 kHz,
  copied as is (no re-encoding). Lines longer than ``MAX_FILLETS_S`` (10 s: the sung lines) are
  dropped.

Added training sources (second build, 2026-12-04), marked ``"train_only"`` so that the validation
set stays exactly that of the first build (:func:`afxcli.datasets.assign_splits`): four more voices
— ``asterisk-core-sounds-{it,ru}-g722`` (``it_IT_m_Carlo``, a male voice; ``ru_RU_f_IvrvoiceRU``)
and ``fillets-ng-data-nl``, the Dutch dub of the same game (other actors; groups
``fillets-nl/...`` so they never merge with the Czech ones).

Speaker identity (``group``, the split unit): asterisk — the voice's name from its folder
(``Allison`` reads both English and Spanish, so both are one speaker); fillets — file names are
``[<level prefix>-]<speaker>-<line>.ogg``; ``m`` and ``v`` (the small and the big fish) are the two
leads heard in every level, any other code is a character of that level (``fillets/<level>/<code>``).

Usage: python scripts/data/build_speech.py [--limit N]
Idempotent and resumable: decoded files that exist are kept; the manifest is rewritten at the end.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from common import (audio_info, datasets, ensure_apt, load_items, log, mark_added, package_license, parser, run,
                    temp_dir, unpack_deb)

NAME = "speech"
MAX_FILLETS_S = 10.0
MIN_DURATION_S = 0.3
#: Asterisk voice packages -> whether they are an added (training-only) source.
ASTERISK = {"asterisk-core-sounds-en-g722": False, "asterisk-core-sounds-es-g722": False,
            "asterisk-core-sounds-fr-g722": False,
            "asterisk-core-sounds-it-g722": True, "asterisk-core-sounds-ru-g722": True}
#: Fish Fillets dialogue packages -> (language folder, group prefix, training-only).
FILLETS = {"fillets-ng-data-cs": ("cs", "fillets", False), "fillets-ng-data-nl": ("nl", "fillets-nl", True)}
FILLETS_LEADS = {"m": "small_fish", "v": "big_fish"}


def fillets_speaker(level: str, stem: str, prefix: str = "fillets") -> str:
    """Speaker group of a Fish Fillets line from its level folder and file stem (``prefix``: one
    per dub, since each language has its own actors)."""
    parts = stem.split("-")
    code = parts[1] if len(parts) >= 3 else parts[0]
    if code in FILLETS_LEADS:
        return f"{prefix}/{FILLETS_LEADS[code]}"
    return f"{prefix}/{level}/{code}"


def decode_g722(src: Path, dst: Path) -> None:
    """Raw G.722 (16 kHz) -> 16 kHz mono FLAC via ffmpeg (atomic)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".part.flac")
    run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", str(src),
         "-ac", "1", "-ar", "16000", "-c:a", "flac", str(tmp)])
    tmp.replace(dst)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    out = datasets.corpus_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    items = load_items(out)
    if shutil.which("ffmpeg") is None:   # the G.722 decoder (a fresh machine has none)
        ensure_apt(["ffmpeg"])
    with temp_dir("speech_") as tmp:
        tmp = Path(tmp)
        for package, train_only in ASTERISK.items():
            root, version = unpack_deb(package, tmp)
            lic = package_license(root, package, out)
            base = root / "usr/share/asterisk/sounds"
            srcs = sorted(p for p in base.glob("*/**/*.g722")   # (ru ships an empty is.g722)
                          if "silence" not in p.relative_to(base).parts and p.stat().st_size > 0)[: args.limit]
            log(f"{package} {version}: {len(srcs)} prompts ({lic})")
            for src in srcs:
                rel_src = src.relative_to(base)
                voice = rel_src.parts[0]                        # e.g. en_US_f_Allison
                rel = f"asterisk/{rel_src.with_suffix('.flac').as_posix()}"
                if not (out / rel).is_file():
                    decode_g722(src, out / rel)
                dur, sr, ch = audio_info(out / rel)
                if dur < MIN_DURATION_S:
                    (out / rel).unlink()
                    continue
                items[rel] = mark_added({"file": rel, "duration_s": round(dur, 3), "sample_rate": sr,
                              "channels": ch, "group": f"asterisk/{voice.split('_')[-1]}",
                              "voice": voice, "language": voice.split("_")[0],
                              "source": {"package": package, "version": version,
                                         "path": f"/usr/share/asterisk/sounds/{rel_src.as_posix()}"},
                              "license": lic}, train_only)
            shutil.rmtree(root)
        for package, (lang, prefix, train_only) in FILLETS.items():
            root, version = unpack_deb(package, tmp)
            lic = package_license(root, package, out)
            base = root / "usr/share/games/fillets-ng/sound"
            srcs = sorted(base.glob(f"*/{lang}/*.ogg"))[: args.limit]
            log(f"{package} {version}: {len(srcs)} lines ({lic})")
            dropped = 0
            for src in srcs:
                level = src.parent.parent.name
                rel = f"{prefix}/{level}/{src.name}"
                dur, sr, ch = audio_info(src)
                if dur > MAX_FILLETS_S or dur < MIN_DURATION_S:
                    dropped += 1
                    items.pop(rel, None)
                    continue
                if not ((out / rel).is_file() and (out / rel).stat().st_size == src.stat().st_size):
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, out / rel)
                items[rel] = mark_added({"file": rel, "duration_s": round(dur, 3), "sample_rate": sr,
                              "channels": ch, "group": fillets_speaker(level, src.stem, prefix),
                              "language": lang,
                              "source": {"package": package, "version": version,
                                         "path": f"/usr/share/games/fillets-ng/sound/{level}/{lang}/{src.name}"},
                              "license": lic}, train_only)
            log(f"  dropped {dropped} lines longer than {MAX_FILLETS_S} s or shorter than {MIN_DURATION_S} s")
            shutil.rmtree(root)
    items = {k: v for k, v in items.items() if (out / k).is_file()}
    path = datasets.write_manifest(out, NAME, list(items.values()), args.val_fraction)
    for split, s in sorted(datasets.summary(NAME).items()):
        log(f"{NAME} {split}: {s['items']} files, {s['hours']:.2f} h, {s['groups']} speakers")
    log(f"manifest: {path}")


if __name__ == "__main__":
    main()
