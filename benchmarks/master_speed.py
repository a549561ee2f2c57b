"""Cold-process mastering speed and memory: ``afx master`` vs Matchering, measured in the same run.

Input: a 180 s 44.1 kHz stereo file, the ``music_multitrack`` validation mixes concatenated
(real multi-instrument music; falls back to generated music-like audio,
:func:`afxcli.train.data.music_like`, when the corpus is not built). Reference: the first
``--ref-seconds`` of the first ``music_mastered`` validation track (or generated).

Each run is a fresh process (model/library loading included, like ``/usr/bin/time``):
``afx master IN --ref REF -o OUT`` (``.venv/bin/afx``; ``--method``/``--model``/``--static`` passed through) and
``python -c "import matchering; matchering.process(...)"`` in Matchering's own venv
(``--matchering-python``). Wall time is ``time.perf_counter`` around the subprocess; peak memory is
the child's maximum resident set size from ``os.wait4`` (its ``ru_maxrss``, KiB on Linux, printed in
MB = 10⁶ bytes), taken by a lean launcher process (:data:`LAUNCHER`). The methods alternate run by run (afx, Matchering, afx, …) so a change in the
shared machine's load hits both; the figures are medians over ``--runs`` (≥ 3). The load average
(``os.getloadavg``) is printed before and after.

``afx`` sets its own process memory policy (:mod:`afxcli.memory`: no NumPy huge-page advice, a
glibc top pad), which on a kernel whose transparent-huge-page defrag is ``madvise`` removes
seconds of page-fault stalls. Matchering, a NumPy program too, suffers the same stalls under its
defaults, so it is also measured with the same policy given by environment variables
(:data:`SAME_MEMORY_POLICY_ENV`): ``master_speedup_vs_matchering`` compares the two programs as
each ships, ``master_speedup_vs_matchering_same_memory_policy`` compares their computation.

    .venv/bin/python benchmarks/master_speed.py --runs 3 [--model runs/style_music/best.pt]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 44100
DEFAULT_MATCHERING_PYTHON = "/tmp/bench-venv/bin/python"
MATCHERING_SNIPPET = ("import sys, matchering as mg; mg.log(lambda *a, **k: None); "
                      "mg.process(target=sys.argv[1], reference=sys.argv[2], results=[mg.pcm24(sys.argv[3])])")


#: A lean launcher (``python -S``, ~10 MB): forks, execs the command, reports the child's own
#: ``wait4`` rusage. Measuring straight from this script would be wrong: Linux carries a process's
#: peak RSS across ``fork``/``exec`` (``signal->maxrss``), so a child of a big parent reports at least
#: the parent's RSS.
LAUNCHER = r"""
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]))
"""


#: The environment that gives a NumPy program the memory policy ``afx`` sets for itself
#: (:mod:`afxcli.memory`): no NumPy huge-page advice, glibc's 1 GB top pad.
SAME_MEMORY_POLICY_ENV = {"NUMPY_MADVISE_HUGEPAGE": "0", "MALLOC_TOP_PAD_": str(1 << 30)}


def measure(cmd: Sequence[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd`` as a fresh child process (through :data:`LAUNCHER`; ``env``: variables added to
    this process's environment); ``(wall seconds, peak RSS in MB)`` of that child (``ru_maxrss``
    KiB × 1024 / 10⁶); raises if it fails."""
    import json

    r = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], capture_output=True, text=True,
                       env={**os.environ, **env} if env else None)
    try:
        wall, maxrss_kib, code = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"launcher failed: {' '.join(r.stderr.split()[-40:])}") from None
    if code != 0:
        raise RuntimeError(f"{cmd[0]} failed ({code}): {' '.join(r.stderr.split()[-40:])}")
    return float(wall), maxrss_kib * 1024 / 1e6


def load_audio(path: str | Path, channels: int = 2) -> np.ndarray:
    """A file as float32 ``(channels, samples)`` at 44.1 kHz."""
    from afxcli.audio import read_audio, resample
    from afxcli.train.data import to_channels

    a, sr = read_audio(path)
    return to_channels(resample(a, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else a, channels)


def corpus_audio(seconds: float, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(input, reference)`` float32 ``(channels, samples)`` at 44.1 kHz: concatenated validation
    mixes (``seconds`` long) and a mastered validation excerpt (generated when not built)."""
    from afxcli.errors import AfxError
    from afxcli.train.data import music_like

    n = int(seconds * SAMPLE_RATE)
    try:
        from afxcli import datasets

        mixes = sorted(datasets.files("music_multitrack", "val"))
        refs = sorted(datasets.files("music_mastered", "val"))
    except AfxError:
        mixes, refs = [], []
    if not mixes or not refs:
        rng = np.random.default_rng(0)
        return music_like(rng, SAMPLE_RATE, n, channels), music_like(rng, SAMPLE_RATE, n, channels)

    parts, total = [], 0
    while total < n:
        for m in mixes:
            parts.append(load_audio(m, channels))
            total += parts[-1].shape[1]
            if total >= n:
                break
    return np.concatenate(parts, axis=1)[:, :n], load_audio(refs[0], channels)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--ref-seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--method", default="auto", help="afx master --method")
    p.add_argument("--model", default=None, help="afx master --model")
    p.add_argument("--static", action="store_true", help="afx master --static (one setting, no automation)")
    p.add_argument("--afx", default=str(ROOT / ".venv" / "bin" / "afx"))
    p.add_argument("--matchering-python", default=DEFAULT_MATCHERING_PYTHON)
    p.add_argument("--input", default=None,
                   help="time this file instead of the concatenated validation mixes (its first --seconds)")
    p.add_argument("--reference", default=None,
                   help="with --input (needed there): its reference (the first --ref-seconds)")
    args = p.parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    if bool(args.reference) != bool(args.input):
        raise SystemExit("--input and --reference go together")

    from afxcli.audio import write_audio

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="afx-master-speed-") as tmp:
        d = Path(tmp)
        x, ref = corpus_audio(args.seconds) if not args.input else given_audio(args.input, args.reference, args.seconds)
        ref = ref[:, :int(args.ref_seconds * SAMPLE_RATE)]
        inp, refp = d / "input.wav", d / "reference.wav"
        write_audio(inp, x, SAMPLE_RATE)
        write_audio(refp, ref, SAMPLE_RATE)
        afx_cmd = [args.afx, "master", str(inp), "--ref", str(refp), "-o", str(d / "afx.wav"),
                   "--method", args.method] + (["--model", args.model] if args.model else []) \
            + (["--static"] if args.static else [])
        mg_cmd = [args.matchering_python, "-c", MATCHERING_SNIPPET, str(inp), str(refp), str(d / "mg.wav")]
        have_mg = Path(args.matchering_python).exists()
        print(f"input: {x.shape[1] / SAMPLE_RATE:g} s {x.shape[0]} ch {SAMPLE_RATE} Hz; reference "
              f"{ref.shape[1] / SAMPLE_RATE:g} s; {args.runs} cold runs each", file=sys.stderr, flush=True)
        res: dict[str, list[tuple[float, float]]] = {"afx": [], "matchering": [], "matchering_same_policy": []}
        for r in range(args.runs):
            runs = [("afx", afx_cmd, None)]
            if have_mg:
                runs += [("matchering", mg_cmd, None), ("matchering_same_policy", mg_cmd, SAME_MEMORY_POLICY_ENV)]
            for name, cmd, env in runs:
                res[name].append(measure(cmd, env))
                print(f"  run {r + 1} {name}: {res[name][-1][0]:.2f} s, {res[name][-1][1]:.0f} MB",
                      file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    med = {k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for k, v in res.items() if v}
    print(f"master_wall_s_afx: {med['afx'][0]:.2f} s")
    print(f"master_peak_mb_afx: {med['afx'][1]:.0f} MB")
    if "matchering" in med:
        print(f"master_wall_s_matchering: {med['matchering'][0]:.2f} s")
        print(f"master_peak_mb_matchering: {med['matchering'][1]:.0f} MB")
        print(f"master_speedup_vs_matchering: {med['matchering'][0] / med['afx'][0]:.2f} x")
        print(f"master_memory_ratio_vs_matchering: {med['matchering'][1] / med['afx'][1]:.2f} x")
        same = med["matchering_same_policy"]
        print(f"master_wall_s_matchering_same_memory_policy: {same[0]:.2f} s")
        print(f"master_peak_mb_matchering_same_memory_policy: {same[1]:.0f} MB")
        print(f"master_speedup_vs_matchering_same_memory_policy: {same[0] / med['afx'][0]:.2f} x")
    else:
        print(f"master_matchering: not measured ({args.matchering_python} missing)")
    print(f"load_average_before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"load_average_after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"cpu_count: {os.cpu_count()}")
    print(f"cpu_model: {cpu_model()}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere): the figures
    depend on it — pedalboard's true-peak limiter, most of afx's time, ran 2.2 s per 180 s of
    stereo on one machine of this workplace and about half that on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def given_audio(input_path: str, reference_path: str, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """``(input, reference)`` float32 ``(channels, samples)`` at 44.1 kHz (stereo) from files: the
    input's first ``seconds`` (a shorter file stays as it is) and the reference."""
    return load_audio(input_path)[:, :int(seconds * SAMPLE_RATE)], load_audio(reference_path)


if __name__ == "__main__":
    main()
