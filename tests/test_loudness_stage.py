"""The loudness stage's shortcuts (afxcli/tasks/loudness.py): a plain gain's output is not measured
again, its true peak and loudness are derived, and they equal the BS.1770 measurements."""
from __future__ import annotations

import numpy as np
import pytest

from afxcli.metrics import lufs, true_peak_dbtp
from afxcli.tasks.loudness import (TRUE_PEAK_GUARD_DB, block_energies, fast_lufs, fast_true_peak_dbtp,
                                   gated_lufs, match_loudness)


def music(seconds: float, sr: int, seed: int, channels: int = 2) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f * t + r.uniform(0, 6)) for f in (60, 440, 3000, 0.23 * sr))
    x = x + 0.5 * r.standard_normal(t.size) * (1 + np.sin(2 * np.pi * 0.7 * t))
    x = x * np.where((t > 0.8) & (t < 1.2), 1e-4, 1.0)   # a near-silent stretch: gated blocks
    return (0.1 * np.stack([x, np.roll(x, 11)][:channels]) / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("gain_db", [-30.0, -3.0, 0.0, 7.5, 20.0])
def test_gated_lufs_of_scaled_energies_equals_measuring_the_scaled_signal(gain_db):
    x = music(3.0, 44100, 1)
    z = block_energies(x, 44100)
    assert gated_lufs(z) == fast_lufs(x, 44100)
    y = x * np.float32(10 ** (gain_db / 20))
    assert gated_lufs(z, gain_db) == pytest.approx(fast_lufs(y, 44100), abs=1e-5)
    assert block_energies(x[:, :1000], 44100) is None and np.isnan(gated_lufs(None))


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 1)])
def test_plain_gain_path_holds_the_ceiling_when_it_just_fits(sr, channels):
    """Target chosen so the gain puts the true peak a hair under the ceiling: the derived true peak
    and loudness equal the float64 BS.1770 measurements of the output, which never exceeds it."""
    x = music(2.5, sr, 2 + channels, channels)
    ceiling = -1.0
    tp_x, l_x = fast_true_peak_dbtp(x, sr), fast_lufs(x, sr)
    for headroom_db in (2e-4, 1e-3, 0.5):
        target = l_x + (ceiling - headroom_db - tp_x)
        r = match_loudness(x, sr, target, ceiling)
        assert r.limiting_db == 0.0 and r.rounds == 1 and r.reached
        measured_tp = true_peak_dbtp(r.audio, sr)
        assert measured_tp <= ceiling
        assert r.true_peak_dbtp == pytest.approx(measured_tp, abs=TRUE_PEAK_GUARD_DB / 2)
        assert r.output_lufs == pytest.approx(lufs(r.audio, sr), abs=1e-4)
        assert abs(r.output_lufs - target) < 0.01
    # just over the guard: the limiter path takes over and still holds the ceiling
    r = match_loudness(x, sr, l_x + (ceiling - tp_x), ceiling)
    assert true_peak_dbtp(r.audio, sr) <= ceiling and abs(r.output_lufs - r.target_lufs) < 0.1
