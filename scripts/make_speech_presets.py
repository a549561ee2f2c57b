#!/usr/bin/env python3
"""Build the adaptive speech style presets ``presets/speech/{telephone,warm,bright,neutral,broadcast}.json``.

Each preset is a style embedding (DeepAFx-ST: the reference embedding the controller reads) made
by rendering the speech validation clips through a hand-designed chain for that style, embedding
every render with the speech style model and averaging (``afxcli.tasks.style.make_style_preset``).
For a model with a matched EQ stage (``afxcli.tasks.eqmatch``) the preset also stores the renders'
mean smoothed spectrum (each normalized to unit mean power) at the model rate, which the stage
matches in place of a reference recording.
``afx style-transfer IN --preset warm`` then uses it in place of a reference recording.

Styles (physical values, clipped into each clip's rate's ranges):

- telephone: 4th-order Butterworth band-pass 300–3400 Hz, then compression (−30 dB, 4:1);
- warm: low shelf +4 dB at 200 Hz, +2 dB at 400 Hz, high shelf −4 dB at 6 kHz, light 2:1 compression;
- bright: low shelf −2 dB at 150 Hz, +4 dB presence at 3.5 kHz, high shelf +5 dB "air" at 8 kHz;
- neutral: light 1.5:1 compression only;
- broadcast: low shelf −3 dB at 100 Hz, +3 dB presence at 3 kHz, strong 6:1 compression at −30 dB,
  then loudness to −16 LUFS with a −1 dBTP true-peak limit (the ``podcast`` target).

Usage::

    python scripts/make_speech_presets.py                    # shipped speech model, speech val split
    python scripts/make_speech_presets.py --model runs/style_speech/best.pt --clips some/folder --max-clips 20

The clips default to the validation split of the ``speech`` corpus (``scripts/data/build_speech.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afxcli.audio import read_audio  # noqa: E402
from afxcli.effects.chain import Chain  # noqa: E402
from afxcli.tasks.loudness import fast_lufs  # noqa: E402
from afxcli.render import render_chain  # noqa: E402
from afxcli.audio import resample  # noqa: E402
from afxcli.tasks.eqmatch import spectrum_to_json  # noqa: E402
from afxcli.tasks.rulebased import smoothed_spectrum  # noqa: E402
from afxcli.tasks.style import StylePredictor, make_style_preset, resolve_model_path  # noqa: E402

EQ_COMP = [{"type": "peq"}, {"type": "compressor"}]
COMP_OFF = {"compressor.threshold_db": 0.0, "compressor.ratio": 1.0}

#: name -> (description, chain values {"peq.*"/"compressor.*": value}, band-pass Hz or None, LUFS target or None)
STYLES: dict[str, tuple[str, dict, tuple[float, float] | None, float | None]] = {
    "telephone": ("Telephone: band-limited 300-3400 Hz, compressed",
                  {"compressor.threshold_db": -30.0, "compressor.ratio": 4.0, "compressor.attack_ms": 5.0,
                   "compressor.release_ms": 80.0, "compressor.makeup_db": 8.0}, (300.0, 3400.0), None),
    "warm": ("Warm: low-mid lift, soft highs, light compression",
             {"peq.low_shelf_freq_hz": 200.0, "peq.low_shelf_gain_db": 4.0, "peq.peak1_freq_hz": 400.0,
              "peq.peak1_gain_db": 2.0, "peq.peak1_q": 0.8, "peq.high_shelf_freq_hz": 6000.0,
              "peq.high_shelf_gain_db": -4.0, "compressor.threshold_db": -24.0, "compressor.ratio": 2.0,
              "compressor.makeup_db": 2.0}, None, None),
    "bright": ("Bright: presence and air lift, slightly thinner lows",
               {"peq.low_shelf_freq_hz": 150.0, "peq.low_shelf_gain_db": -2.0, "peq.peak3_freq_hz": 3500.0,
                "peq.peak3_gain_db": 4.0, "peq.peak3_q": 0.9, "peq.high_shelf_freq_hz": 8000.0,
                "peq.high_shelf_gain_db": 5.0, **COMP_OFF}, None, None),
    "neutral": ("Neutral: light compression, no tonal change",
                {"compressor.threshold_db": -20.0, "compressor.ratio": 1.5, "compressor.attack_ms": 10.0,
                 "compressor.release_ms": 150.0, "compressor.makeup_db": 1.0}, None, None),
    "broadcast": ("Broadcast: strong compression, presence lift, loud (-16 LUFS, -1 dBTP)",
                  {"peq.low_shelf_freq_hz": 100.0, "peq.low_shelf_gain_db": -3.0, "peq.peak3_freq_hz": 3000.0,
                   "peq.peak3_gain_db": 3.0, "peq.peak3_q": 1.0, "compressor.threshold_db": -30.0,
                   "compressor.ratio": 6.0, "compressor.attack_ms": 3.0, "compressor.release_ms": 120.0,
                   "compressor.makeup_db": 10.0}, None, -16.0),
}


def render_style(audio: np.ndarray, sr: int, name: str) -> np.ndarray:
    """``audio`` ``(channels, samples)`` through the hand-designed chain of style ``name``."""
    from scipy.signal import butter, sosfilt

    _desc, values, band, target = STYLES[name]
    x = np.asarray(audio, dtype=np.float32)
    if band is not None:
        hi = min(band[1], 0.45 * sr)
        sos = butter(4, [band[0], hi], btype="bandpass", fs=sr, output="sos")
        x = sosfilt(sos, x, axis=-1).astype(np.float32)
    chain = Chain({"effects": EQ_COMP}, sr)
    flat = Chain.flatten(chain.labels, chain.base_values())
    specs = {f"{lab}.{n}": fx.spec(n) for lab, fx in zip(chain.labels, chain.effects) for n in fx.param_names}
    flat.update({k: float(specs[k].clip(v)) for k, v in values.items()})
    y = render_chain(chain, x, chain.values_from_flat(flat))
    if target is not None:
        from afxcli.tasks.loudness import match_loudness

        y = match_loudness(y, sr, target, -1.0).audio
    return y


def clip_paths(clips: str | None, max_clips: int) -> list[Path]:
    if clips:
        from afxcli.cli import expand_inputs

        paths = expand_inputs([clips])
    else:
        from afxcli.datasets import files

        paths = files("speech", "val")
    return paths[:max_clips] if max_clips else paths


def build(model: str | None, clips: str | None, out_dir: Path, max_clips: int, max_seconds: float,
          styles: list[str]) -> list[Path]:
    pred = StylePredictor.load(resolve_model_path(model, "speech"))
    paths = clip_paths(clips, max_clips)
    if not paths:
        raise SystemExit("no speech clips found")
    embeddings: dict[str, list[np.ndarray]] = {s: [] for s in styles}
    levels: dict[str, list[float]] = {s: [] for s in styles}
    spectra: dict[str, list[np.ndarray]] = {s: [] for s in styles}   # smoothed, at the model rate
    model_sr = int(pred.sample_rate)
    used = 0
    for p in paths:
        audio, sr = read_audio(p)
        audio = audio[:, : int(max_seconds * sr)]
        if audio.shape[1] < int(0.5 * sr):
            continue
        used += 1
        for s in styles:
            styled = render_style(audio, sr, s)
            embeddings[s].append(pred.embed(styled, sr))
            levels[s].append(fast_lufs(styled, sr))
            if pred.match_eq:   # the model matches the reference's spectrum first: store the examples'
                f, p_sm = smoothed_spectrum(resample(styled, sr, model_sr), model_sr)
                spectra[s].append(p_sm / max(float(np.mean(p_sm)), 1e-20))   # level-free shape
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for s in styles:
        desc, values, band, target = STYLES[s]
        recipe = {"chain_values": values, "band_pass_hz": band, "loudness_target_lufs": target,
                  "clips": used, "clip_source": clips or "speech corpus, validation split",
                  "built_by": "python scripts/make_speech_presets.py"}
        data = make_style_preset(s, desc, embeddings[s], pred.model_id, pred.sample_rate,
                                 extra={"model": str(pred.path.name if pred.path else ""), "recipe": recipe,
                                        # the loudness the preset matches (energy mean of the examples')
                                        "level_lufs": round(10 * math.log10(np.mean(
                                            [10 ** (v / 10) for v in levels[s] if math.isfinite(v)])), 3),
                                        **({"spectrum": spectrum_to_json(f, np.mean(spectra[s], axis=0), model_sr)}
                                           if spectra[s] else {})})
        path = out_dir / f"{s}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        written.append(path)
        print(f"{path}: {desc} ({used} clips, model {pred.model_id})")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="style model checkpoint (default: models/style_speech.pt)")
    ap.add_argument("--clips", default=None, help="folder of speech clips (default: speech corpus val split)")
    ap.add_argument("--out", default=str(ROOT / "presets" / "speech"), help="output folder")
    ap.add_argument("--max-clips", type=int, default=60, help="at most this many clips (0 = all)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="seconds used from each clip")
    ap.add_argument("--styles", default=",".join(STYLES), help="comma-separated subset of the styles")
    a = ap.parse_args(argv)
    styles = [s for s in a.styles.split(",") if s]
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        ap.error(f"unknown style(s) {unknown}; known: {', '.join(STYLES)}")
    build(a.model, a.clips, Path(a.out), a.max_clips, a.max_seconds, styles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
