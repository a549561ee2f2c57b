"""The loudness stage's gain search: exact loudness at loud targets with the true peak under the
ceiling, few limiter renders, unreachable targets reported; the limiter homogeneity it relies on."""
from __future__ import annotations

import math

import numpy as np
import pytest

from afxcli.metrics import lufs, true_peak_dbtp
from afxcli.tasks.loudness import _limit, match_loudness
from afxcli.tasks.loudness_search import search_gain
from afxcli.train.data import music_like

SR = 44100


def loud_music(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    return music_like(np.random.default_rng(seed), sr, int(seconds * sr), 2)


def test_limiter_is_homogeneous():
    """Rendering δ dB less into a ceiling δ dB lower equals the render times −δ dB (float32
    round-off): the loudness stage's trim after the limiter is exact."""
    x = loud_music(2.0, 1)
    base = _limit(x, SR, 20.0, -1.1, 100.0, 5.0)
    for d in (0.05, 0.4, 3.0):
        moved = _limit(x, SR, 20.0 - d, -1.1 - d, 100.0, 5.0)
        np.testing.assert_allclose(moved, base * np.float32(10 ** (-d / 20)), rtol=0, atol=2e-6)


@pytest.mark.parametrize("target", [-13.0, -14.0, -16.0])
def test_loud_targets_land_within_0p01_lu_under_the_ceiling(target):
    x = 0.5 * loud_music(3.0, 2)
    r = match_loudness(x, SR, target, -1.0)
    assert r.reached, r.notes
    assert abs(lufs(r.audio, SR) - target) <= 0.01          # float64 pyloudnorm measurement
    assert abs(r.output_lufs - target) <= 0.01
    assert true_peak_dbtp(r.audio, SR) <= -1.0               # float64 BS.1770 true peak
    assert r.limiting_db > 0 and r.rounds <= 6


def test_unreachable_target_is_reported_and_the_ceiling_holds():
    x = 0.5 * loud_music(3.0, 3)
    for target in (-2.0, -10.0):        # too much limiting; past the limiter's saturation
        r = match_loudness(x, SR, target, -1.0)
        assert not r.reached and r.notes and "not reached" in r.notes[0]
        assert true_peak_dbtp(r.audio, SR) <= -1.0
        assert r.output_lufs < target - 0.01


def test_long_file_uses_few_whole_file_renders(monkeypatch):
    """Over a minute: the excerpts' search starts the whole-file one; count the renders of the
    whole file (the excerpts' renders are on 32 s of audio)."""
    import afxcli.tasks.loudness as loud

    sr = 8000
    x = 0.5 * loud_music(65.0, 4, sr)
    calls = []
    orig = loud._limit_and_measure

    def counting(a, *args, **kw):
        calls.append(a.shape[1])
        return orig(a, *args, **kw)

    monkeypatch.setattr(loud, "_limit_and_measure", counting)
    r = match_loudness(x, sr, -14.0, -1.0)
    assert r.reached and abs(lufs(r.audio, sr) + 14.0) <= 0.01 and true_peak_dbtp(r.audio, sr) <= -1.0
    whole = [n for n in calls if n == x.shape[1]]
    assert len(whole) == r.rounds and 1 <= r.rounds <= 3
    assert len(calls) > len(whole)                           # the excerpts were searched first


def test_search_gain_on_model_curves():
    # concave, rising, slope < 1: reached in a few evaluations
    f = lambda g: -20.0 + 8.0 * (1 - math.exp(-g / 10.0))      # noqa: E731
    r = search_gain(f, -14.0, 0.01, 0.0)
    assert r.reached and abs(f(r.best[0]) + 14.0) <= 0.01 and len(r.points) <= 6
    # rises to a maximum of -15 at g = 10, then falls: saturated, best near the maximum
    h = lambda g: -15.0 - 0.05 * (g - 10.0) ** 2               # noqa: E731
    r = search_gain(h, -12.0, 0.01, 5.0, max_evals=8)
    assert not r.reached and r.saturated and abs(r.best[0] - 10.0) < 3.0
    # a stop rule ends a search that still has to go up
    r = search_gain(lambda g: -30.0 + 0.1 * g, -10.0, 0.01, 0.0, stop=lambda g, v: g > 5.0)
    assert r.stopped and not r.reached


def test_master_trace_reproduces_a_limited_master(tmp_path):
    """A loud target (limiter + trim): the trace of the master renders back to the same output."""
    import soundfile as sf

    from afxcli.cli import main

    x = 2.0 * loud_music(3.0, 5)            # so the loudness gain stays inside the gain effect's ±24 dB
    sf.write(str(tmp_path / "in.wav"), x.T, SR, subtype="FLOAT")
    out, trace = tmp_path / "out.wav", tmp_path / "t.json"
    assert main(["--quiet", "master", str(tmp_path / "in.wav"), "--lufs", "-14", "-o", str(out),
                 "--trace", str(trace)]) == 0
    again = tmp_path / "again.wav"
    assert main(["--quiet", "render", str(tmp_path / "in.wav"), "--preset", str(trace), "-o", str(again)]) == 0
    a, _ = sf.read(str(out), always_2d=True)
    b, _ = sf.read(str(again), always_2d=True)
    assert np.max(np.abs(a - b)) < 1e-5
    assert abs(lufs(a.T, SR) + 14.0) <= 0.01 and true_peak_dbtp(a.T, SR) <= -1.0


def test_pipelined_limiter_render_and_measurements_equal_the_serial_ones(monkeypatch):
    """The limiter streamed in chunks while its output is measured: the same samples and loudness
    blocks as one render measured afterwards, the true peak to float32 round-off; small chunk and
    segment sizes so that 4 s make many of each (and sizes that do not divide each other)."""
    import afxcli.tasks.loudness as loud
    from afxcli.tasks.loudness import block_energies, fast_true_peak_dbtp

    monkeypatch.setattr(loud, "LIMITER_STREAM_CHUNK", 7000)
    monkeypatch.setattr(loud, "TRUE_PEAK_SEGMENT", 12345)
    monkeypatch.setattr(loud, "K_WEIGHTING_CHUNK", 4096)
    x = loud_music(4.0, 3)
    for gain_db in (6.0, 14.0):
        y, z, tp = loud._limit_and_measure(x, SR, gain_db, -1.1, 80.0, 5.0)
        ref = _limit(x, SR, gain_db, -1.1, 80.0, 5.0)
        assert np.array_equal(y, ref)
        assert np.array_equal(z, block_energies(ref, SR))
        assert tp == pytest.approx(fast_true_peak_dbtp(ref, SR), abs=1e-5)
        assert tp == pytest.approx(true_peak_dbtp(ref, SR), abs=1e-4)


def test_pipelined_limiter_reports_a_render_failure(monkeypatch):
    import afxcli.effects.base as base
    import afxcli.tasks.loudness as loud
    from afxcli.errors import AfxError

    def broken(self, block, reset=False):
        raise AfxError("render broke")

    monkeypatch.setattr(base.PedalboardRenderer, "process", broken)
    with pytest.raises(AfxError, match="render broke"):
        loud._limit_and_measure(loud_music(1.0, 2), SR, 6.0, -1.1, 80.0, 5.0)


def test_segment_true_peak_equals_the_whole_signal_at_those_samples():
    from afxcli.tasks.loudness import fast_true_peak_dbtp, true_peak_context

    x = loud_music(1.0, 5) * np.float32(3.0)
    ctx = true_peak_context(SR)
    whole_per_segment = []
    for s0, s1 in ((0, 9000), (9000, 30001), (30001, x.shape[1])):
        a0, a1 = max(s0 - ctx, 0), min(s1 + ctx, x.shape[1])
        whole_per_segment.append(fast_true_peak_dbtp(x[:, a0:a1], SR, valid=(s0 - a0, s1 - a0)))
    assert max(whole_per_segment) == pytest.approx(true_peak_dbtp(x, SR), abs=1e-4)
    # a segment's own peak: the float64 reference of the signal restricted to it, with context
    seg = fast_true_peak_dbtp(x[:, 9000 - ctx:30001 + ctx], SR, valid=(ctx, ctx + 21001))
    assert seg <= true_peak_dbtp(x, SR) + 1e-4 and seg >= 20 * np.log10(np.abs(x[:, 9000:30001]).max()) - 1e-6


def test_k_weighted_energy_fed_in_parts_equals_block_energies():
    from afxcli.tasks.loudness import KWeightedEnergy, block_energies

    x = loud_music(3.0, 6)
    acc = KWeightedEnergy(SR, 2, x.shape[1])
    for avail in (100, 40000, 40001, 99999, x.shape[1]):
        acc.feed(x, avail)
    assert np.array_equal(acc.blocks(), block_energies(x, SR))


@pytest.mark.parametrize("chunk", [4096, 1 << 15])
def test_k_weighted_block_energies_equal_each_block_summed_directly(monkeypatch, chunk):
    """The accumulator keeps only sums between gating-block bounds (no whole-length energy
    signal); each block's energy must still be the mean of the K-weighted, channel-weighted squares
    over exactly its samples — also when bounds fall inside a filtering chunk or on its edge."""
    from scipy.signal import sosfilt

    import afxcli.tasks.loudness as loud
    from afxcli.filters import k_weighting_sos

    monkeypatch.setattr(loud, "K_WEIGHTING_CHUNK", chunk)
    x = loud_music(2.3, 8)
    z = loud.block_energies(x, SR)
    e = np.square(sosfilt(k_weighting_sos(SR), x.astype(np.float64), axis=-1)).sum(axis=0)
    lo, hi, _ = loud._gating_bounds(SR, x.shape[1])
    want = np.array([e[a:b].sum() for a, b in zip(lo, hi)]) / (0.4 * SR)
    assert z.shape == want.shape and len(z) == round((2.3 - 0.4) / 0.1) + 1
    np.testing.assert_allclose(z, want, rtol=1e-9)
    assert loud.block_energies(x[:, :int(0.4 * SR)], SR) is None   # shorter than one block


def test_search_gain_ends_on_a_flat_stretch_above_the_target():
    """A limiter that is not engaged leaves the reach the same at every gain: above the target a
    lower gain cannot bring it down, so the search ends (``flat``) instead of stepping down for
    ever (it once walked to −48 dB and gave a −48 LUFS master)."""
    flat_then_rising = lambda g: -15.08 + max(0.0, g - 6.0) * 0.3   # noqa: E731
    r = search_gain(flat_then_rising, -15.5, 0.02, 2.86, max_evals=8)
    assert r.flat and not r.reached and len(r.points) == 2 and min(g for g, _ in r.points) > 2.0


def test_excerpts_without_the_files_peak_do_not_steer_the_whole_file(monkeypatch):
    """A long file whose loudest peak lies outside every excerpt: the excerpts reach the target by
    plain gain, so they say nothing about the limiter; the whole file (which needs it) still lands
    on the target under the ceiling, in few renders. (Before, the excerpts' search walked its gain
    down without end on the flat reach and the master came out near -58 LUFS.)"""
    import afxcli.tasks.loudness as loud

    sr = 8000
    monkeypatch.setattr(loud, "PROXY_MIN_SECONDS", 10.0)
    monkeypatch.setattr(loud, "PROXY_CHUNK_SECONDS", 0.5)
    monkeypatch.setattr(loud, "PROXY_CHUNKS", 4)          # excerpts at 0, 6.5, 13, 19.5 s of 20 s
    x = loud_music(20.0, 6, sr)                           # peaks at -12 dBFS
    x[:, 3 * sr:3 * sr + 40] = 0.9 * np.sign(x[:, 3 * sr:3 * sr + 40] + 1e-9)   # a burst at 3 s only
    for gain_db in (8.0, 10.0):   # the music's own peaks stay under the ceiling, the burst's do not
        target = lufs(x, sr) + gain_db
        r = match_loudness(x, sr, target, -1.0)
        assert r.reached, r.notes
        assert abs(lufs(r.audio, sr) - target) <= 0.01 and true_peak_dbtp(r.audio, sr) <= -1.0
        assert r.rounds <= 3
