"""The evaluation benchmarks' core functions on tiny generated inputs (no corpora, no Matchering)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def style_eval():
    return _load("style_eval")


@pytest.fixture(scope="module")
def master_eval():
    return _load("master_eval")


@pytest.fixture(scope="module")
def master_speed():
    return _load("master_speed")


def test_reduction_interval_resamples_clusters(style_eval):
    """The interval of ``1 − Σ method / Σ input`` over resampled clusters: a point when every cluster
    has the same reduction; around the pooled figure and wider with fewer, more different clusters."""
    inp = [1.0, 2.0, 1.0, 3.0]
    lo, hi = style_eval.reduction_interval(inp, [0.5 * v for v in inp], ["a", "a", "b", "c"], reps=500)
    assert lo == pytest.approx(50.0) and hi == pytest.approx(50.0)
    rng = np.random.default_rng(1)
    inp = rng.uniform(0.8, 1.2, 40)
    ratio = np.repeat(rng.uniform(0.3, 0.7, 8), 5)            # 8 clusters of 5 pairs, each its own ratio
    met = inp * ratio
    point = 100 * (1 - met.sum() / inp.sum())
    few = np.repeat([f"t{k}" for k in range(8)], 5).tolist()
    lo, hi = style_eval.reduction_interval(inp, met, few, reps=1000)
    assert lo < point < hi and hi - lo > 5.0
    lo1, hi1 = style_eval.reduction_interval(inp, met, [f"p{k}" for k in range(40)], reps=1000)
    assert hi1 - lo1 < hi - lo      # pairs treated as independent: narrower (too narrow)


def test_style_pairs_on_generated_audio(style_eval):
    res = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=3, clip_seconds=1.0)
    assert set(res) == {"input", "rule-based"}  # no model given: no model row
    for method in res.values():
        assert set(method) == {"mrstft", "msd_db", "spectral_centroid_error_hz", "rms_error_db", "lufs_error_lu"}
        assert all(math.isfinite(v) and v >= 0 for v in method.values())
    assert res["input"]["mrstft"] > 0.05  # two different random styles: the input is not the target
    lines = style_eval.figure_lines("speech", res)
    assert "style_speech_input_mrstft: " in "\n".join(lines)
    red = [ln for ln in lines if ln.startswith("style_speech_rule_based_mrstft_reduction: ")]
    assert len(red) == 1 and red[0].endswith(" %")
    expected = 100 * (1 - res["rule-based"]["mrstft"] / res["input"]["mrstft"])
    assert float(red[0].split()[1]) == pytest.approx(expected, abs=0.05)
    rows, clusters = style_eval.evaluate_pair_rows(None, 16000, 1, n=2, seed=3, clip_seconds=1.0)
    assert style_eval.mean_rows(rows) == res and len(clusters) == 2
    ci = style_eval.interval_lines("speech", rows, clusters)
    assert ci[0] == "style_speech_pair_clusters: 2 groups"
    lo, hi = (float(ln.split()[1]) for ln in ci if "rule_based_mrstft_reduction_ci95" in ln)
    assert lo <= expected + 0.05 and hi >= expected - 0.05


def test_style_pair_metrics_zero_for_the_target_itself(style_eval):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
    m = style_eval.pair_metrics(x, x, 16000)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in m.values())
    m6 = style_eval.pair_metrics(x * np.float32(2.0), x, 16000)  # +6.02 dB
    assert m6["rms_error_db"] == pytest.approx(6.0206, abs=1e-3)
    assert m6["lufs_error_lu"] == pytest.approx(6.0206, abs=1e-2)


def test_band_shape_errors_see_a_shelf_not_a_gain(style_eval):
    """A pure gain has no shape error; a +6 dB high shelf at 4 kHz shows in the top bands only."""
    import pedalboard

    from afxcli.train.data import music_like

    x = music_like(np.random.default_rng(2), 44100, 44100 * 2, 2)
    assert np.all(style_eval.band_shape_errors_db(x * np.float32(3.0), x, 44100) < 1e-6)
    shelf = pedalboard.HighShelfFilter(cutoff_frequency_hz=4000, gain_db=6.0, q=0.707)(x, 44100)
    e = style_eval.band_shape_errors_db(shelf, x, 44100)
    centers = [c for c in style_eval.OCTAVE_CENTERS_HZ if c < 0.45 * 44100]
    assert len(e) == len(centers)
    low = e[[i for i, c in enumerate(centers) if c <= 500]]
    high = e[[i for i, c in enumerate(centers) if c >= 8000]]
    assert np.all(high > 2.5) and np.all(low < 2.5)  # level removed: the low bands sit ~1.5-2 dB off
    m = style_eval.pair_metrics(shelf, x, 44100, band_errors=True)
    assert {f"band_error_{c:.0f}hz" for c in centers} <= set(m)


def test_master_comparison_to_matchering_is_paired(master_eval):
    """The paired difference and its bootstrap interval: a constant offset gives a point interval;
    a method closer on some pairs and farther on others has an interval around its mean that holds 0."""
    keys = ("lufs_error", "msd", "sce", "crest_error")
    ref = [{k: float(v) for k in keys} for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    rows = {"input": ref, "matchering": ref,
            "afx_a": [{k: r[k] - 0.5 for k in keys} for r in ref],
            "afx_b": [{k: r[k] + s for k in keys} for r, s in zip(ref, (-1, 1, -1, 1, -1, 1))]}
    lines = dict(ln.split(": ") for ln in master_eval.comparison_lines(rows, reps=500))
    val = lambda name: float(lines[name].split()[0])  # noqa: E731
    for suffix in ("", "_ci95_low", "_ci95_high"):
        assert val(f"master_afx_a_minus_matchering_msd{suffix}") == pytest.approx(-0.5)
    assert val("master_afx_b_minus_matchering_crest_error") == pytest.approx(0.0)
    assert val("master_afx_b_minus_matchering_crest_error_ci95_low") < 0 < val("master_afx_b_minus_matchering_crest_error_ci95_high")
    assert lines["master_afx_a_minus_matchering_sce"].endswith(" Hz")
    assert not any("input_minus" in k for k in lines)
    assert master_eval.comparison_lines({"input": ref, "afx_a": ref}) == []
    # against the leveled Matchering row: afx methods only, not Matchering as it ships
    lev = dict(ln.split(": ") for ln in master_eval.comparison_lines(
        {**rows, "matchering_leveled": [{k: r[k] + 1.0 for k in keys} for r in ref]},
        against="matchering_leveled", reps=200))
    assert float(lev["master_afx_a_minus_matchering_leveled_msd"].split()[0]) == pytest.approx(-1.5)
    assert not any(k.startswith("master_matchering") for k in lev)


def test_master_validation_pairs_spread_over_every_source(master_eval, monkeypatch):
    from afxcli import datasets

    mixes = ([f"a/{k:02d}.flac" for k in range(12)] + [f"b/{k:02d}.flac" for k in range(6)]
             + [f"c/{k:02d}.flac" for k in range(2)])
    refs = [f"r{k}.flac" for k in range(7)]
    monkeypatch.setattr(datasets, "files", lambda name, split: mixes if name == "music_multitrack" else refs)
    pairs = master_eval.validation_pairs(10)
    assert len(set(pairs)) == 10 and len({m for m, _ in pairs}) == 10
    assert {m.split("/")[0] for m, _ in pairs} == {"a", "b", "c"}   # not the first 10 of source a
    assert [r for _, r in pairs[:7]] == refs
    many = master_eval.validation_pairs(30)       # more pairs than mixes: every mix, references cycle
    assert len(set(many)) == 30 and {m for m, _ in many} == set(mixes)


def test_master_distances_of_a_gain(master_eval):
    from afxcli.train.data import music_like

    x = music_like(np.random.default_rng(1), 44100, 44100 * 2, 2)
    ref = master_eval.recording_stats(x, 44100)
    out = master_eval.recording_stats(x * np.float32(10 ** (-3 / 20)), 44100)
    d = master_eval.distances(out, ref)
    assert d["lufs_error"] == pytest.approx(3.0, abs=0.01)
    assert d["msd"] == pytest.approx(3.0, abs=1e-3)  # a pure gain moves every mel band by its dB
    assert d["crest_error"] == pytest.approx(0.0, abs=1e-4)
    assert d["sce"] == pytest.approx(0.0, abs=1e-3)
    assert d["true_peak"] == pytest.approx(ref["true_peak_dbtp"] - 3.0, abs=1e-3)


def test_master_figure_lines_flag_items_over_the_ceiling(master_eval):
    row = {"lufs_error": 0.1, "msd": 1.0, "sce": 10.0, "crest_error": 0.5}
    rows = {"input": [dict(row, true_peak=0.0)] * 2,
            "afx_rule_based": [dict(row, true_peak=-1.2), dict(row, true_peak=-1.1)],
            "matchering": [dict(row, true_peak=-1.2), dict(row, true_peak=-0.3)]}
    text = "\n".join(master_eval.figure_lines(rows, -1.0))
    assert "master_afx_rule_based_over_ceiling: 0 of 2 items" in text
    assert "master_matchering_over_ceiling: 1 of 2 items (pairs 1 above -1 dBTP)" in text
    assert "master_matchering_true_peak_max: -0.300 dBTP" in text
    assert "master_input_over_ceiling" not in text


def test_master_pair_crest_lines_are_signed_per_pair(master_eval):
    from afxcli.train.data import music_like

    x = music_like(np.random.default_rng(2), 44100, 44100, 2)
    ref = master_eval.recording_stats(x, 44100)
    dense = np.tanh(4.0 * x) / 4.0   # soft-clipped: a lower crest factor than x
    rows = {"input": [master_eval.distances(master_eval.recording_stats(x, 44100), ref)],
            "afx_model": [master_eval.distances(master_eval.recording_stats(dense, 44100), ref)]}
    lines = dict(line.split(": ") for line in master_eval.pair_crest_lines(rows))
    value = {k: float(v.split()[0]) for k, v in lines.items()}
    assert set(value) == {"master_pair0_reference_crest", "master_pair0_input_crest", "master_pair0_afx_model_crest"}
    assert value["master_pair0_input_crest"] == pytest.approx(value["master_pair0_reference_crest"], abs=0.01)
    assert value["master_pair0_afx_model_crest"] < value["master_pair0_reference_crest"] - 1.0
    assert rows["afx_model"][0]["crest_error"] == pytest.approx(
        value["master_pair0_reference_crest"] - value["master_pair0_afx_model_crest"], abs=0.01)


def test_master_refine_lines_use_the_refined_distance_only_where_kept(master_eval):
    reps = {"afx_model_refine": [
        {"feature_distance_before_db": 4.0, "feature_distance_after_db": 3.0, "gain_db": 1.0, "kept": True},
        {"feature_distance_before_db": 2.0, "feature_distance_after_db": 2.5, "gain_db": -0.5, "kept": False}]}
    text = "\n".join(master_eval.refine_lines(reps))
    assert "master_afx_model_refine_feature_distance_before: 3.0000 dB" in text
    assert "master_afx_model_refine_feature_distance_after: 2.5000 dB" in text  # (3.0 + 2.0) / 2
    assert "master_afx_model_refine_refinement_kept: 1 of 2 items" in text


def test_master_speed_measures_the_child_not_the_parent(master_speed):
    import torch  # noqa: F401  (this process is large; the child must not inherit its peak RSS)

    wall, small_mb = master_speed.measure([sys.executable, "-S", "-c", "pass"])
    assert 0 < wall < 10 and small_mb < 60
    _, big_mb = master_speed.measure([sys.executable, "-S", "-c", "b = bytearray(150_000_000); b[::4096] = b'x' * len(b[::4096])"])
    assert big_mb > small_mb + 140
    with pytest.raises(RuntimeError):
        master_speed.measure([sys.executable, "-S", "-c", "raise SystemExit(3)"])


def test_master_speed_gives_matchering_the_same_memory_policy(master_speed):
    check = ("import os, sys; sys.exit(0 if os.environ.get('NUMPY_MADVISE_HUGEPAGE') == '0' "
             f"and os.environ.get('MALLOC_TOP_PAD_') == '{1 << 30}' else 4)")
    master_speed.measure([sys.executable, "-S", "-c", check], master_speed.SAME_MEMORY_POLICY_ENV)
    with pytest.raises(RuntimeError):
        master_speed.measure([sys.executable, "-S", "-c", check])


def test_style_pairs_with_a_model_and_refinement(style_eval, tiny_conv_style_model):
    from afxcli.tasks.style import StylePredictor

    pred = StylePredictor.load(tiny_conv_style_model)
    res = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=4, clip_seconds=1.0, predictor=pred, refine_steps=2)
    assert set(res) == {"input", "rule-based", "model", "model_own_gain", "model_refine"}
    assert all(math.isfinite(v) for v in res["model_refine"].values())
    assert "style_speech_model_refine_mrstft_reduction" in "\n".join(style_eval.figure_lines("speech", res))


def test_style_pairs_level_weight_rows(style_eval, tiny_conv_style_model):
    """``--level-weights``: one row per weight; w = 1 is the network's own gain, w = 0 the
    reference's loudness exactly (the tiny model's own weight is 0, so its ``model`` row)."""
    from afxcli.tasks.style import StylePredictor

    pred = StylePredictor.load(tiny_conv_style_model)
    res = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=4, clip_seconds=1.0, predictor=pred,
                                    level_weights=[0.0, 0.5, 1.0])
    assert {"model_level_w0", "model_level_w0.5", "model_level_w1"} <= set(res)
    assert res["model_level_w1"] == res["model_own_gain"] and res["model_level_w0"] == res["model"]
    assert "style_speech_model_level_w0p5_mrstft_reduction" in "\n".join(style_eval.figure_lines("speech", res))


def test_style_pairs_band_errors_add_the_reference_spectrum_floor(style_eval):
    """``--band-errors``: every method gets per-octave shape errors, and a ``reference_spectrum`` row
    (the reference's own shape error to the target) has those lines only — no MR-STFT or reduction."""
    res = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=4, clip_seconds=1.0, band_errors=True)
    assert set(res) == {"input", "rule-based", "reference_spectrum"}
    assert set(res["reference_spectrum"]) == {k for k in res["input"] if k.startswith("band_error_")}
    assert all(v >= 0 and math.isfinite(v) for v in res["reference_spectrum"].values())
    text = "\n".join(style_eval.figure_lines("speech", res))
    assert "style_speech_reference_spectrum_band_error_1000hz:" in text
    assert "style_speech_reference_spectrum_mrstft" not in text
    assert "style_speech_rule_based_band_error_1000hz:" in text


def test_style_pairs_oracle_fits_the_chain_to_the_target(style_eval, tiny_conv_style_model):
    """``--oracle N``: the model's chain fitted to the target from the prediction (with its own
    gain) keeps the lowest error it saw, so it is never worse than that starting point (up to the
    twins' float differences) and, with the target in hand, better."""
    from afxcli.tasks.style import StylePredictor

    pred = StylePredictor.load(tiny_conv_style_model)
    res = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=4, clip_seconds=1.0, predictor=pred, oracle_steps=25)
    assert "oracle" in res and all(math.isfinite(v) for v in res["oracle"].values())
    assert res["oracle"]["mrstft"] < res["model_own_gain"]["mrstft"] - 1e-3
    assert "style_speech_oracle_mrstft_reduction" in "\n".join(style_eval.figure_lines("speech", res))
    # a subset oracle: only the output gain fitted, at least as close as the prediction, no closer than all
    gain = style_eval.evaluate_pairs(None, 16000, 1, n=2, seed=4, clip_seconds=1.0, predictor=pred,
                                     oracle_steps=25, oracle_only=["out."])
    assert gain["oracle"]["mrstft"] <= gain["model_own_gain"]["mrstft"] + 1e-4
    assert gain["oracle"]["mrstft"] > res["oracle"]["mrstft"] - 1e-3


def test_style_eval_knows_which_models_saw_the_added_sources(style_eval):
    from types import SimpleNamespace

    seen = lambda data: style_eval.trained_on_added_sources(SimpleNamespace(config={"data": data}))  # noqa: E731
    assert seen({"added_sources": True})
    assert not seen({"added_sources": False}) and not seen({}) and not seen(None)


def test_master_speed_given_files_and_cpu_model(master_speed, tmp_path):
    from afxcli.audio import write_audio
    from afxcli.train.data import music_like

    rng = np.random.default_rng(2)
    write_audio(tmp_path / "in.wav", music_like(rng, 22050, 22050 * 3, 1), 22050)
    write_audio(tmp_path / "ref.wav", music_like(rng, 44100, 44100 * 2, 2), 44100)
    x, ref = master_speed.given_audio(str(tmp_path / "in.wav"), str(tmp_path / "ref.wav"), 2.0)
    assert x.shape == (2, 2 * 44100) and ref.shape == (2, 2 * 44100)   # resampled, 2 ch, cut to 2 s
    assert isinstance(master_speed.cpu_model(), str) and master_speed.cpu_model()
