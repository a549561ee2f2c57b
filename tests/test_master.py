"""afx master: loudness stage, rule-based baseline, refinement, CLI end to end (generated audio)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from afxcli.cli import main
from afxcli.effects.chain import Chain
from afxcli.metrics import lufs, true_peak_dbtp
from afxcli.tasks.loudness import (fast_lufs, fast_true_peak_dbtp, list_loudness_presets, load_loudness_preset,
                                   match_loudness)
from afxcli.tasks.master import master_chain_spec
from afxcli.tasks.refine import distance, recording_features, refine
from afxcli.tasks.rulebased import average_spectrum, design_matched_eq, rule_based, smooth_fractional_octave

SR = 22050


def music(seconds: float, tilt: float, seed: int, sr: int = SR, channels: int = 2, level: float = 0.5) -> np.ndarray:
    """Tones with a spectral tilt (dB/octave-ish via (f/200)^tilt) + amplitude-modulated noise."""
    r = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f * t + r.uniform(0, 6)) * (f / 200.0) ** tilt
            for f in (55, 110, 220, 440, 880, 1760, 3520, 7040))
    env = 1.0 + 0.8 * np.sin(2 * np.pi * 1.5 * t)
    x = x + 0.4 * r.standard_normal(n) * env
    x = np.stack([x, np.roll(x, 5)][:channels]).astype(np.float32)
    return x / np.abs(x).max() * level


def shape_distance(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Mean |difference| of the level-normalized 1/3-octave-smoothed spectra (dB), 50 Hz–8 kHz."""
    fa, pa = average_spectrum(a, sr)
    _, pb = average_spectrum(b, sr)
    da = 10 * np.log10(smooth_fractional_octave(fa, pa) + 1e-20)
    db = 10 * np.log10(smooth_fractional_octave(fa, pb) + 1e-20)
    band = (fa > 50) & (fa < 8000)
    d = (da - db)[band]
    return float(np.mean(np.abs(d - d.mean())))


@pytest.mark.parametrize("level,target", [(0.9, -9.0), (0.02, -14.0), (0.5, -23.0)])
def test_loudness_lands_on_target_and_never_over_ceiling(level, target):
    x = music(3.0, -0.3, 1, level=level)
    r = match_loudness(x, SR, target, ceiling_dbtp=-1.0)
    assert r.reached, r.notes
    assert abs(lufs(r.audio, SR) - target) <= 0.1
    assert true_peak_dbtp(r.audio, SR) <= -1.0 + 1e-9
    assert r.audio.shape == x.shape


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 1), (16000, 2), (96000, 1)])
def test_fast_measures_equal_the_metrics(sr, channels):
    x = music(1.3, 0.0, 20, sr=sr, channels=channels, level=0.9)
    x[:, sr // 2: sr // 2 + 3] = [0.95, -0.95, 0.95]           # an inter-sample over
    assert fast_lufs(x, sr) == pytest.approx(lufs(x, sr), abs=1e-6)
    assert fast_true_peak_dbtp(x, sr) == pytest.approx(true_peak_dbtp(x, sr), abs=1e-4)
    quiet = np.zeros((channels, sr), np.float32)
    assert fast_lufs(quiet, sr) == float("-inf") and np.isnan(fast_lufs(quiet[:, :100], sr))


def test_loudness_reports_unreachable_target():
    # a crest-heavy signal (clicks on silence) cannot reach -3 LUFS under -1 dBTP without excessive limiting
    x = np.zeros((1, SR * 2), np.float32)
    x[0, ::2205] = 0.9
    x += 0.001 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    r = match_loudness(x, SR, -3.0, ceiling_dbtp=-1.0, max_rounds=4)
    assert true_peak_dbtp(r.audio, SR) <= -1.0 + 1e-9
    assert not r.reached and r.notes


def test_loudness_presets_shipped():
    names = list_loudness_presets()
    for name, lu in (("streaming", -14.0), ("podcast", -16.0), ("club", -9.0), ("broadcast", -23.0)):
        assert name in names
        assert load_loudness_preset(name).target_lufs == lu


def test_rule_based_eq_moves_spectrum_toward_reference():
    x = music(4.0, -0.3, 2)      # tilts within the EQ's ±12 dB clamp over 7 octaves
    ref = music(4.0, 0.2, 3, level=0.3)
    before = shape_distance(x, ref, SR)
    eq = design_matched_eq(x, SR, ref, SR)
    after = shape_distance(eq.apply(x), ref, SR)
    assert after < 0.5 * before, (before, after)
    assert eq.apply(x).shape == x.shape


def test_rule_based_compressor_matches_loudness_mono_other_rate():
    sr = 16000
    x = music(3.0, 0.0, 4, sr=sr, channels=1, level=0.3)
    ref = music(3.0, 0.0, 5, sr=SR, channels=2, level=0.9)
    s = rule_based(x, sr, ref, SR)
    y = s.apply(x, sr)
    assert y.shape == x.shape
    assert abs(lufs(y, sr) - lufs(ref, SR)) < 1.0
    assert s.compressor["threshold_db"] < 0  # the input was quieter: it had to compress


def test_refine_reduces_feature_distance():
    x = music(2.0, -0.6, 6, channels=1)
    ref = music(3.0, 0.5, 7, channels=1, level=0.8)
    chain = Chain(master_chain_spec([{"type": "peq"}, {"type": "compressor"}], -1.0), SR)
    ref_f = recording_features(ref, SR)
    res = refine(chain, chain.base_values(), x, SR, ref_f, steps=5, lr=0.08, count=1)
    assert res.kept
    assert res.distance_after < res.distance_before


def test_refine_estimates_the_whole_output_from_the_chains_change_on_excerpts():
    """The output's features as refinement sees them: the whole recording's input features plus the
    chain's change on a few excerpts. On a file whose first half is dark and second half bright,
    one excerpt of the output alone misjudges the whole output's spectrum; the transferred
    estimate does not (for a static EQ the change is exactly its band gains)."""
    import torch

    from afxcli.render import render_chain
    from afxcli.tasks.refine import band_loudness_weights, features, segments, transferred

    x = np.concatenate([music(3.0, -0.8, 21, channels=1), music(3.0, 0.8, 22, channels=1)], axis=1)
    chain = Chain({"effects": [{"type": "peq"}]}, SR)
    vals = chain.base_values()
    vals[0].update(low_shelf_gain_db=6.0, high_shelf_gain_db=-8.0, peak2_gain_db=5.0)
    y = render_chain(chain, x, vals)
    whole_out = recording_features(y, SR)
    ex_in = segments(x, SR, 1)
    ex_out = np.stack([render_chain(chain, e, vals) for e in ex_in])
    with torch.no_grad():
        own = features(torch.from_numpy(ex_out), SR)
        est = transferred(own, features(torch.from_numpy(ex_in), SR), recording_features(x, SR),
                          band_loudness_weights(SR, 0.95 * SR / 2))

    def shape_error(a):
        d = a.bands_db - whole_out.bands_db
        return float((d - d.mean()).abs().mean())

    assert shape_error(est) < 0.3 and shape_error(est) < 0.1 * shape_error(own)     # 0.08 vs 4.7 dB
    assert abs(float(est.loudness_db - whole_out.loudness_db)) < 1.0                 # 0.33 dB
    assert float(distance(est, whole_out)) < 0.5 * float(distance(own, whole_out))


def test_refine_leaves_frozen_effects_where_they_were():
    """afx master freezes its matched-EQ stage (a fit on the whole file's spectrum): Adam never moves
    a frozen effect's parameters, while the others still change."""
    x = music(2.0, -0.6, 6, channels=1)
    ref = music(3.0, 0.5, 7, channels=1, level=0.8)
    chain = Chain(master_chain_spec([{"type": "geq", "label": "match"}, {"type": "peq"}, {"type": "compressor"}], -1.0), SR)
    start = chain.base_values()
    start[0] = {k: 3.0 * (-1) ** i for i, k in enumerate(start[0])}
    res = refine(chain, start, x, SR, recording_features(ref, SR), steps=4, lr=0.08, count=1, frozen=["match"])
    after = res.values_after if res.kept else None
    assert res.kept, "the free effects should have lowered the distance"
    assert after[0] == pytest.approx(chain.effects[0].check_values(start[0]), abs=1e-4)
    assert any(abs(after[1][k] - start[1][k]) > 1e-3 for k in start[1])


def test_refine_skips_non_finite_gradients(monkeypatch):
    """A step whose gradient is NaN (here: forced on every other step) is skipped, never applied:
    the refined values stay finite and in range (a NaN gain once reached the EQ kernel)."""
    import math

    import torch

    from afxcli.tasks import refine as refine_mod

    real = refine_mod.distance
    calls = {"n": 0}

    def nan_grad_every_other(a, b):
        d = real(a, b)
        calls["n"] += 1
        if calls["n"] % 2 == 0:  # same value, NaN gradient: 0 · d/du sqrt(u) at u = 0
            return d + 0.0 * torch.sqrt(torch.clamp(d - d.detach(), max=0.0))
        return d

    monkeypatch.setattr(refine_mod, "distance", nan_grad_every_other)
    x = music(2.0, -0.6, 6, channels=1)
    ref = music(3.0, 0.5, 7, channels=1, level=0.8)
    chain = Chain(master_chain_spec([{"type": "peq"}, {"type": "compressor"}], -1.0), SR)
    res = refine(chain, chain.base_values(), x, SR, recording_features(ref, SR), steps=6, lr=0.08, count=1)
    assert res.skipped_steps >= 2 and res.to_dict()["skipped_steps"] == res.skipped_steps
    for fx, vals in zip(chain.effects, res.values_after):
        for name, v in vals.items():
            assert math.isfinite(v) and fx.spec(name).min - 1e-9 <= v <= fx.spec(name).max + 1e-9


def _write(path, audio, sr=SR):
    sf.write(str(path), audio.T, sr, subtype="FLOAT")
    return path


def test_master_cli_rule_based_end_to_end(tmp_path, capsys):
    inp = _write(tmp_path / "song.wav", music(3.0, -0.5, 8, level=0.2))
    ref = _write(tmp_path / "ref.wav", music(3.0, 0.3, 9, level=0.5))
    out, rep, png, trc = tmp_path / "out.wav", tmp_path / "r.json", tmp_path / "p.png", tmp_path / "t.json"
    rc = main(["master", str(inp), "--ref", str(ref), "--method", "rule-based", "-o", str(out),
               "--report", str(rep), "--plot", str(png), "--trace", str(trc), "--ceiling", "-1.5"])
    assert rc == 0, capsys.readouterr().err
    y, sr = sf.read(str(out), always_2d=True)
    x, _ = sf.read(str(inp), always_2d=True)
    assert sr == SR and y.shape == x.shape
    r = json.loads(rep.read_text())
    for side in ("input", "output", "reference"):
        for k in ("lufs", "true_peak_dbtp", "crest_db"):
            assert r[side][k] is not None
    assert r["chain"]["values"]["compressor.threshold_db"] <= 0
    assert abs(r["output"]["lufs"] - r["reference"]["lufs"]) <= 0.1
    assert true_peak_dbtp(y.T, sr) <= -1.5 + 1e-6
    assert r["feature_distance_db"]["output"] < r["feature_distance_db"]["input"]
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(trc.read_text())["format"] == "afx-trace"


def test_master_cli_preset_target_and_refine(tmp_path, capsys):
    inp = _write(tmp_path / "a.wav", music(2.0, -0.5, 10, channels=1, level=0.1))
    ref = _write(tmp_path / "ref.wav", music(2.0, 0.4, 11, level=0.7))
    out, rep = tmp_path / "a_out.wav", tmp_path / "a.json"
    rc = main(["master", str(inp), "--ref", str(ref), "--method", "rule-based", "--preset", "podcast",
               "--refine", "3", "-o", str(out), "--report", str(rep)])
    assert rc == 0, capsys.readouterr().err
    assert "refine" in capsys.readouterr().err   # the table's refine gain column
    r = json.loads(rep.read_text())
    assert r["target_lufs"] == -16.0 and abs(r["output"]["lufs"] + 16.0) <= 0.1
    assert r["refine"]["steps"] == 3 and r["refine"]["feature_distance_before_db"] > 0


def test_master_cli_batch_with_a_bad_file(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    _write(d / "one.wav", music(1.5, 0.0, 12, level=0.3))
    _write(d / "two.wav", music(1.5, 0.2, 13, level=0.6))
    (d / "bad.wav").write_bytes(b"not audio at all")
    outd = tmp_path / "out"
    outd.mkdir()
    rc = main(["master", str(d), "--lufs", "-12", "--out-dir", str(outd), "--jobs", "2"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "bad.wav" in err and "Traceback" not in err
    assert sorted(p.name for p in outd.iterdir()) == ["one_master.wav", "two_master.wav"]
    # the summary table: long paths wrapped, never cut short; no refine column without --refine
    assert "…" not in err and "refine gain" not in err and err.count("failed") >= 1
    for p in outd.iterdir():
        y, sr = sf.read(str(p), always_2d=True)
        assert abs(lufs(y.T, sr) + 12.0) <= 0.1


def test_master_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    inp = _write(tmp_path / "x.wav", music(1.0, 0.0, 14))
    out = tmp_path / "o.wav"
    for args in (["--lufs", "5"], ["--preset", "no-such-preset"], ["--ref", str(tmp_path / "missing.wav")],
                 ["--method", "rule-based"], ["--method", "model", "--model", str(tmp_path / "nope.pt"),
                                             "--ref", str(inp)]):
        rc = main(["master", str(inp), "-o", str(out), *args])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("afx: error:"), err
        assert not out.exists()
    silent = _write(tmp_path / "silent.wav", np.zeros((1, SR), np.float32))
    rc = main(["master", str(silent), "-o", str(out)])
    assert rc == 2 and "silent" in capsys.readouterr().err and not out.exists()


# --- speed paths (issue 4): each fast measure equals its reference implementation -------------

@pytest.mark.parametrize("sr,channels,seconds", [(44100, 2, 3.3), (96000, 1, 1.6), (22050, 2, 0.01)])
def test_fast_true_peak_many_frames_and_pruning_equal_the_metric(sr, channels, seconds):
    from afxcli.tasks.loudness import fast_true_peak_dbtp

    x = music(seconds, 0.0, 31, sr=sr, channels=channels, level=0.3)
    n = x.shape[1]
    # one inter-sample over late in the file (the loudest frame is not the first one) and a quiet
    # stretch that the ℓ1 bound lets the measurement skip
    x[:, int(0.8 * n): int(0.8 * n) + 3] = [0.9, -0.9, 0.9]
    x[:, : n // 4] *= 0.01
    assert fast_true_peak_dbtp(x, sr) == pytest.approx(true_peak_dbtp(x, sr), abs=1e-4)
    assert fast_true_peak_dbtp(x[0], sr) == pytest.approx(true_peak_dbtp(x[:1], sr), abs=1e-4)
    assert fast_true_peak_dbtp(x, sr) > 20 * np.log10(np.abs(x).max())  # the over is found


def test_fast_lufs_chunked_filter_equals_pyloudnorm_across_chunks():
    x = music(7.0, -0.2, 32, sr=SR, channels=2, level=0.4)          # > two 65536-sample chunks
    assert fast_lufs(x, SR) == pytest.approx(lufs(x, SR), abs=1e-6)
    assert fast_lufs(x.astype(np.float64), SR) == pytest.approx(lufs(x, SR), abs=1e-6)
    assert fast_lufs(x[0], SR) == pytest.approx(lufs(x[:1], SR), abs=1e-6)


def test_crest_db_equals_the_metric():
    from afxcli.metrics import crest_factor_db
    from afxcli.tasks.report import crest_db

    x = music(2.0, 0.1, 33, level=0.7)
    assert crest_db(x) == pytest.approx(crest_factor_db(x), abs=1e-6)
    assert np.isnan(crest_db(np.zeros((2, 100), np.float32)))


def test_average_spectrum_equals_welch_and_its_frame_subset_stays_close():
    from scipy.signal import welch

    from afxcli.tasks.rulebased import mono

    x = music(6.0, -0.3, 34, sr=SR, channels=2)
    f, p = average_spectrum(x, SR, max_frames=None)
    n = 4096                                                          # 0.186 s at 22.05 kHz
    f2, p2 = welch(mono(x), fs=SR, window="hann", nperseg=n, noverlap=n // 2, detrend=False)
    assert np.array_equal(f, f2) and np.allclose(p, p2, rtol=1e-9, atol=1e-12 * p2.max())
    _, p_sub = average_spectrum(x, SR, max_frames=20)                 # 63 frames → 20 evenly spread
    band = (f > 50) & (f < 8000)
    db = 10 * np.log10(smooth_fractional_octave(f, p_sub)[band] / smooth_fractional_octave(f, p)[band])
    assert np.max(np.abs(db)) < 1.0


def test_prefetch_imports_loads_modules_and_survives_a_missing_one():
    import sys

    from afxcli.tasks.master import prefetch_imports

    t = prefetch_imports(("afxcli.trace", "afxcli_no_such_module_xyz"))
    t.join(30)
    assert not t.is_alive() and "afxcli.trace" in sys.modules


def test_fir_filter_centered_equals_direct_convolution():
    from afxcli.tasks.rulebased import fir_filter_centered

    r = np.random.default_rng(35)
    for n, m, c in ((50, 7, 1), (3000, 2029, 2), (70000, 511, 2)):
        x = r.standard_normal((c, n)).astype(np.float32)
        h = r.standard_normal(m) * 0.05
        d = (m - 1) // 2
        ref = np.stack([np.convolve(x[k].astype(np.float64), h)[d:d + n] for k in range(c)])
        y = fir_filter_centered(x, h)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.max(np.abs(y - ref)) < 1e-5 * np.max(np.abs(ref))


def test_search_excerpts_cover_long_files_only():
    from afxcli.tasks.rulebased import SEARCH_EXCERPT_SECONDS, SEARCH_EXCERPTS, search_excerpts

    sr = 1000
    short = np.arange(60 * sr, dtype=np.float32)[None]
    assert search_excerpts(short, sr) is short
    long = np.arange(200 * sr, dtype=np.float32)[None]
    ex = search_excerpts(long, sr)
    w = int(SEARCH_EXCERPT_SECONDS * sr)
    assert ex.shape == (1, SEARCH_EXCERPTS * w)
    assert ex[0, 0] == 0 and ex[0, -1] == long[0, -1]                   # first and last excerpt included


def test_master_with_the_shipped_model_at_8khz_mono(tmp_path, capsys):
    """Telephone-rate audio: the music model's chain is built at 8 kHz (its high bands lowered to
    the rate's 3.6 kHz limit) and the whole file comes back at 8 kHz, mono, full length."""
    inp = _write(tmp_path / "phone.wav", music(3.0, -0.5, 21, sr=8000, channels=1, level=0.2), 8000)
    ref = _write(tmp_path / "ref.wav", music(3.0, 0.3, 22, level=0.5))
    out = tmp_path / "out.wav"
    rc = main(["--quiet", "master", str(inp), "--ref", str(ref), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    y, sr = sf.read(str(out), always_2d=True)
    assert sr == 8000 and y.shape == (3 * 8000, 1) and np.isfinite(y).all()
    assert true_peak_dbtp(y.T, sr) <= -1.0 + 1e-6


@pytest.mark.parametrize("frames", [1, 10, 300])
def test_tiny_inputs_get_a_one_line_error_or_an_output_never_an_internal_error(tmp_path, capsys, frames):
    """Files of a few samples through every method of ``master`` and ``style-transfer``: master
    refuses them before any analysis (no loudness below one 0.4 s block); style-transfer either
    renders them whole or says in one line why not."""
    x = (0.3 * np.sin(0.05 * np.arange(frames))).astype(np.float32)[None]
    inp = _write(tmp_path / "tiny.wav", x, 44100)
    ref = _write(tmp_path / "ref.wav", music(2.0, 0.2, 5, sr=44100), 44100)
    for k, args in enumerate([["master", "--ref", str(ref)], ["master", "--method", "rule-based", "--ref", str(ref)],
                              ["style-transfer", "--ref", str(ref)], ["style-transfer", "--preset", "warm"],
                              ["style-transfer", "--method", "rule-based", "--ref", str(ref)]]):
        out = tmp_path / f"o{k}.wav"
        rc = main(["--quiet", args[0], str(inp), *args[1:], "-o", str(out)])
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        if args[0] == "master":
            assert rc == 2 and "too short to master (needs at least 0.4 s)" in err and not out.exists(), (args, err)
        elif rc == 0:
            y, sr = sf.read(str(out), always_2d=True)
            assert sr == 44100 and y.shape == (frames, 1) and np.isfinite(y).all()
        else:
            assert rc == 2 and err.startswith("afx: error:") and err.count("\n") == 1 and not out.exists(), (args, err)
