#!/usr/bin/env bash
# Rebuild examples/*.flac from their sources (Debian packages and the music21 corpus).
# What each step does, and the licences, are in examples/README.md.
#
#   scripts/make_examples.sh     # writes examples/{music_mastered,mix_unmastered,speech}.flac
#
# Needs: apt-get (Debian 12 "bookworm"; package versions pinned below), ffmpeg, fluidsynth
# (installed with apt-get when missing and run as root), python3 with venv, and the project's
# .venv (numpy, soundfile). Downloads and intermediate files go to $AFX_EXAMPLES_WORK (default
# /tmp/afx-make-examples); nothing is installed into the project. With the same package versions
# the audio comes out bit-identical: examples/checksums.txt (SHA-256 of the decoded samples) is checked at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${AFX_EXAMPLES_WORK:-${TMPDIR:-/tmp}/afx-make-examples}
PY=${PYTHON:-$ROOT/.venv/bin/python}
OUT=$ROOT/examples
MUSIC21_VERSION=10.5.1
PACKAGES=(warzone2100-music=4.3.3-3 asterisk-core-sounds-en-g722=1.6.1-1 fluid-soundfont-gm=3.1-5.3)

say() { echo "make_examples: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ -x "$PY" ] || die "$PY not found; run 'make test' once to create .venv (or set PYTHON=...)"
command -v ffmpeg >/dev/null || die "ffmpeg is missing (apt-get install ffmpeg)"
if ! command -v fluidsynth >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fluidsynth >&2
    else
        die "fluidsynth is missing (apt-get install fluidsynth)"
    fi
fi

mkdir -p "$WORK/debs" "$WORK/x" "$WORK/stems" "$WORK/speech" "$OUT"

# 1. Source packages, unpacked without installing.
for spec in "${PACKAGES[@]}"; do
    pkg=${spec%%=*}
    if [ ! -d "$WORK/x/$pkg" ]; then
        say "downloading $spec"
        (cd "$WORK/debs" && apt-get download "$spec" >&2) || die "cannot download $spec (apt-get update first?)"
        mkdir -p "$WORK/x/$pkg"
        dpkg-deb -x "$WORK/debs/${pkg}_"*.deb "$WORK/x/$pkg"
    fi
done
WZ=$WORK/x/warzone2100-music/usr/share/games/warzone2100/music/albums/aftermath_soundtrack
AST=$WORK/x/asterisk-core-sounds-en-g722/usr/share/asterisk/sounds/en_US_f_Allison
SF2=$WORK/x/fluid-soundfont-gm/usr/share/sounds/sf2/FluidR3_GM.sf2

# 2. music21, only for its corpus, in a throw-away venv (not a project dependency).
if [ ! -x "$WORK/m21/bin/python" ]; then
    say "installing music21==$MUSIC21_VERSION into $WORK/m21"
    python3 -m venv "$WORK/m21"
    "$WORK/m21/bin/pip" install -q "music21==$MUSIC21_VERSION" >&2
fi

# 3. One MIDI file per voice of J. S. Bach's chorale BWV 66.6 (music21 corpus "bach/bwv66.6"):
#    its first four phrases (quarter-note offsets 0-20), 100 quarter notes per minute, each voice
#    on its own General MIDI instrument.
say "writing MIDI stems"
"$WORK/m21/bin/python" - "$WORK/stems" <<'EOF'
import sys
from music21 import corpus, instrument, stream, tempo

out = sys.argv[1]
score = corpus.parse("bach/bwv66.6")
voices = {"Soprano": instrument.Oboe, "Alto": instrument.Clarinet,
          "Tenor": instrument.Piano, "Bass": instrument.AcousticBass}
for part in score.parts:
    voice = stream.Part()
    voice.insert(0, tempo.MetronomeMark(number=100))
    voice.insert(0, voices[part.partName]())
    for n in part.flatten().notesAndRests:
        if n.offset < 20:
            voice.insert(n.offset, n)
    voice.write("midi", fp=f"{out}/{part.partName.lower()}.mid")
EOF

# 4. Dry stems: fluidsynth with reverb and chorus off, 44.1 kHz, 32-bit float.
for v in soprano alto tenor bass; do
    fluidsynth -n -i -q -R 0 -C 0 -g 0.5 -r 44100 -O float -T wav -F "$WORK/stems/$v.wav" "$SF2" "$WORK/stems/$v.mid" >&2
done

# 5. Speech prompts (G.722, 16 kHz) decoded to 16-bit PCM.
SPEECH_PROMPTS=(hello-world vm-login tt-weasels vm-goodbye)
for p in "${SPEECH_PROMPTS[@]}"; do
    ffmpeg -v error -y -f g722 -i "$AST/$p.g722" -c:a pcm_s16le "$WORK/speech/$p.wav"
done

# 6. Cut, mix, level and write the FLAC files.
say "writing examples"
"$PY" - "$WZ/track17.opus" "$WORK/stems" "$WORK/speech" "$OUT" "${SPEECH_PROMPTS[@]}" <<'EOF'
import sys

import numpy as np
import soundfile as sf

track, stems, speech, out, *prompts = sys.argv[1:]


def fades(x, sr, fade_in_s, fade_out_s):
    """Raised-cosine fade in/out on (samples, channels)."""
    x = x.copy()
    for n, sl in ((int(fade_in_s * sr), slice(None)), (int(fade_out_s * sr), slice(None, None, -1))):
        if n:
            ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
            x[sl][:n] *= ramp[:, None]
    return x


def write(name, x, sr):
    assert np.abs(x).max() <= 1.0
    sf.write(f"{out}/{name}", x, sr, format="FLAC", subtype="PCM_16")
    print(f"{name}: {sr} Hz, {x.shape[1]} ch, {x.shape[0] / sr:.2f} s, "
          f"peak {20 * np.log10(np.abs(x).max()):.2f} dBFS", file=sys.stderr)


# (a) Mastered music: 12 s from 3:24 of "Nuclear Heartbeat" (48 kHz Opus), attenuated so the
#     decoded sample peak is -1 dBFS (the Opus decode overshoots 0 dBFS), 20 ms fades.
x, sr = sf.read(track, dtype="float64", always_2d=True)
x = x[204 * sr:216 * sr]
x *= 10 ** (-1.0 / 20) / np.abs(x).max()
write("music_mastered.flac", fades(x, sr, 0.02, 0.02), sr)

# (b) Unmastered mix: sum of the four dry stems with fader gains and balance, 12.8 s, 0.3 s fade
#     out, scaled to a -6 dBFS sample peak.
faders_db = {"soprano": 0.0, "alto": -2.0, "tenor": -1.0, "bass": 1.0}
balance = {"soprano": -0.3, "alto": 0.3, "tenor": 0.5, "bass": 0.0}  # -1 left .. +1 right
mix, sr = None, None
for v, g_db in faders_db.items():
    s, sr = sf.read(f"{stems}/{v}.wav", dtype="float64", always_2d=True)
    theta = (balance[v] + 1) * np.pi / 4  # constant-power balance, unity at centre
    s = s * 10 ** (g_db / 20) * np.sqrt(2) * np.array([np.cos(theta), np.sin(theta)])
    mix = s if mix is None else mix[: len(s)] + s[: len(mix)]
mix = fades(mix[: int(12.8 * sr)], sr, 0.0, 0.3)
mix *= 10 ** (-6.0 / 20) / np.abs(mix).max()
write("mix_unmastered.flac", mix, sr)

# (c) Speech: the prompts in order with 300 ms of silence between them, 16 kHz mono, level as
#     recorded.
parts = []
for p in prompts:
    s, sr = sf.read(f"{speech}/{p}.wav", dtype="float64", always_2d=True)
    parts += [s, np.zeros((int(0.3 * sr), 1))]
write("speech.flac", np.concatenate(parts[:-1]), sr)
EOF

if [ -f "$OUT/checksums.txt" ]; then
    # FLAC stores the encoder's version string, so compare the decoded samples' digests.
    (cd "$OUT" && "$PY" - <<'EOF'
import hashlib, sys
import soundfile as sf
bad = 0
for line in open("checksums.txt"):
    digest, name = line.split()
    x, sr = sf.read(name, dtype="int16")
    got = hashlib.sha256(x.tobytes() + str(sr).encode()).hexdigest()
    ok = got == digest
    bad += not ok
    print(f"make_examples: {name}: {'identical' if ok else 'DIFFERS from'} checksums.txt", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
    ) || say "warning: output differs from examples/checksums.txt (other package or library versions?)"
fi
say "done"
