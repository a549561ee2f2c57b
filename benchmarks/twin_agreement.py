"""How closely each effect's torch form matches its pedalboard twin, on real music.

For every kind in ``afxcli.effects.REGISTRY`` whose class has ``has_twin`` (whatever is registered
when this runs; effects added later are picked up automatically), at 44.1 and 48 kHz, mono and
stereo, and ``--draws`` random parameter draws (uniform in normalized space, fixed seed), the script
renders ``--seconds`` of ``--audio`` through

- the torch effect, ``mode="exact"``, in **float32** (the audio's own precision), and
- its twin ``pedalboard.Pedalboard(effect.to_pedalboard(values))`` (float32, one call, ``reset=True``,
  which compensates a latent plugin's delay),

both fed the same float32-quantized input, and prints::

    twin_maxdiff_<kind>_<sr>_<mono|stereo>: <max over draws of max |torch - pedalboard|> abs
    twin_maxdiff_worst_<kind>: <max over all of the above for that kind> abs

Why float32 for torch: pedalboard computes in float32, and afx's exact EQ path reproduces its
float32 coefficient and filter arithmetic step by step (bit-identical); a float64 render is the ideal
filter, which differs from pedalboard by its own float32 rounding of the filter state (up to ~8e-3
for low, high-Q sections on music). The dynamics kernels compute in float64 internally either way.

Kinds in ``APPROXIMATIONS`` (``limiter``: the torch form only approximates pedalboard's limiter)
are measured the same way but reported separately as ``approx_maxdiff_<kind>_…`` lines and never
enter the twin figures.

When ``peq`` is registered, it also prints the agreement of its training approximation (frequency
sampling, ``mode="train"``) with the exact filter at the training length of 131072 samples::

    eq_freqsampling_snr_db_<sr>: <min over draws and mono/stereo of 10 log10(Σ exact² / Σ (train - exact)²)> dB

Usage: ``python benchmarks/twin_agreement.py [--audio PATH] [--draws 5] [--seconds 10] [--seed 0]``.
An effect that fails to build or render prints an ``error`` line instead of a figure and the
script goes on.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pedalboard  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

from afxcli.effects import REGISTRY  # noqa: E402

SAMPLE_RATES_HZ = (44100, 48000)
#: Kinds whose torch form only approximates pedalboard: reported apart, labelled as such.
APPROXIMATIONS = frozenset({"limiter"})
#: Training length of the EQ's frequency-sampling approximation (samples).
EQ_TRAIN_SAMPLES = 131072


def load_excerpt(path: Path, seconds: float, start_s: float) -> tuple[np.ndarray, int]:
    """``(channels, samples)`` float64 excerpt of ``path`` at the file's own rate."""
    info = sf.info(str(path))
    start = int(round(start_s * info.samplerate))
    frames = int(round(seconds * info.samplerate))
    x, sr = sf.read(str(path), start=start, frames=frames, dtype="float64", always_2d=True)
    if x.shape[0] == 0:
        raise SystemExit(f"{path}: no audio at {start_s} s")
    if x.shape[0] < frames:
        print(f"# note: {path} has only {x.shape[0] / sr:.2f} s from {start_s} s", file=sys.stderr)
    return x.T.copy(), int(sr)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly``)."""
    if sr_from == sr_to:
        return x
    r = Fraction(sr_to, sr_from)
    return resample_poly(x, r.numerator, r.denominator, axis=-1)


def as_layout(x: np.ndarray, channels: int) -> np.ndarray:
    """Mono = mean of the file's channels; stereo = its two channels (a mono file duplicated)."""
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    return x[:2] if x.shape[0] >= 2 else np.repeat(x, 2, axis=0)


def render_pair(effect, x32: np.ndarray, values: dict) -> tuple[np.ndarray, np.ndarray]:
    """(torch float32 exact render, pedalboard twin render) of ``x32`` ``(channels, samples)``."""
    p = effect.values_to_tensor(values, dtype=torch.float32)
    with torch.no_grad():
        y = effect(torch.from_numpy(np.ascontiguousarray(x32, dtype=np.float32))[None], p, mode="exact")[0].numpy()
    y_pb = pedalboard.Pedalboard(effect.to_pedalboard(values))(x32, effect.sample_rate)
    if y_pb.shape != y.shape:
        raise RuntimeError(f"pedalboard returned {y_pb.shape}, torch {y.shape}")
    return y, y_pb


def rng_for(seed: int, *key) -> np.random.Generator:
    """A generator fixed by ``seed`` and a key (kind, rate, channels), independent of run order."""
    return np.random.default_rng([seed] + [zlib.crc32(str(k).encode()) for k in key])


def fmt(v: float) -> str:
    return f"{v:.3e}" if math.isfinite(v) else str(v)


def twin_figures(signals: dict, draws: int, seed: int) -> None:
    kinds = sorted(k for k, cls in REGISTRY.items() if getattr(cls, "has_twin", False))
    twins = [k for k in kinds if k not in APPROXIMATIONS]
    approx = [k for k in kinds if k in APPROXIMATIONS]
    for group, prefix in ((twins, "twin_maxdiff"), (approx, "approx_maxdiff")):
        if group is approx and approx:
            print("# approximations, not twins (excluded from the twin figures above):")
        for kind in group:
            worst = 0.0
            failed = False
            ok = 0
            for (sr, layout), x32 in signals.items():
                try:
                    effect = REGISTRY[kind](sr)
                    rng = rng_for(seed, kind, sr, layout)
                    figure = 0.0
                    for _ in range(draws):
                        values = effect.random_values(rng)
                        y, y_pb = render_pair(effect, x32, values)
                        figure = max(figure, float(np.max(np.abs(y - y_pb))))
                except Exception as exc:  # a half-written effect must not stop the others
                    print(f"{prefix}_{kind}_{sr}_{layout}: error {type(exc).__name__}: {exc}".splitlines()[0])
                    failed = True
                    continue
                worst = max(worst, figure)
                ok += 1
                print(f"{prefix}_{kind}_{sr}_{layout}: {fmt(figure)} abs")
            if ok == 0:
                print(f"{prefix}_worst_{kind}: error (no render succeeded)")
            else:
                print(f"{prefix}_worst_{kind}: {fmt(worst)} abs" + (" (some renders failed)" if failed else ""))


def eq_figures(signals: dict, draws: int, seed: int) -> None:
    if "peq" not in REGISTRY:
        print("# peq not registered: no eq_freqsampling_snr_db figures")
        return
    for sr in SAMPLE_RATES_HZ:
        try:
            effect = REGISTRY["peq"](sr, train_filter="fs")
            worst_db = math.inf
            for layout in ("mono", "stereo"):
                x = torch.from_numpy(signals[(sr, layout)][:, :EQ_TRAIN_SAMPLES].astype(np.float64))[None]
                if x.shape[-1] < EQ_TRAIN_SAMPLES:
                    raise RuntimeError(f"audio shorter than {EQ_TRAIN_SAMPLES} samples")
                rng = rng_for(seed, "peq-train", sr, layout)
                for _ in range(draws):
                    p = effect.values_to_tensor(effect.random_values(rng), dtype=torch.float64)
                    with torch.no_grad():
                        exact = effect(x, p, mode="exact")
                        train = effect(x, p, mode="train")
                    err = float(torch.sum((train - exact) ** 2))
                    snr_db = math.inf if err == 0 else 10 * math.log10(float(torch.sum(exact ** 2)) / err)
                    worst_db = min(worst_db, snr_db)
            print(f"eq_freqsampling_snr_db_{sr}: {worst_db:.2f} dB")
        except Exception as exc:
            print(f"eq_freqsampling_snr_db_{sr}: error {type(exc).__name__}: {exc}".splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, default=Path("examples/music_mastered.flac"))
    ap.add_argument("--draws", type=int, default=5, help="random parameter draws per kind, rate and layout")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--start", type=float, default=0.0, help="excerpt start in the file (s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.audio.is_file():
        print(f"error: {args.audio} not found (pass --audio PATH)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    x, sr_file = load_excerpt(args.audio, args.seconds, args.start)
    signals = {}
    for sr in SAMPLE_RATES_HZ:
        xs = resample(x, sr_file, sr)
        for layout, ch in (("mono", 1), ("stereo", 2)):
            signals[(sr, layout)] = np.ascontiguousarray(as_layout(xs, ch), dtype=np.float32)
    print(f"# {args.audio} ({sr_file} Hz, {x.shape[0]} ch), {x.shape[1] / sr_file:.2f} s from {args.start} s; "
          f"{args.draws} draws, seed {args.seed}; torch float32 exact vs pedalboard {pedalboard.__version__}")
    twin_figures(signals, args.draws, args.seed)
    eq_figures(signals, args.draws, args.seed)
    print(f"# total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
