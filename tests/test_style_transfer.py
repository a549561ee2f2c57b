"""afx style-transfer with a tiny random style model; adaptive presets; master --method model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from afxcli.cli import main
from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.tasks.style import StylePredictor, load_style_preset, make_style_preset

MODEL_SR = 16000  # conftest.TINY_CONV_STYLE_CONFIG's rate
from afxcli.train.style import STYLE_CHAIN as CHAIN  # noqa: E402  (the shipped models' chain)


@pytest.fixture(scope="module")
def model_path(tiny_conv_style_model):
    return tiny_conv_style_model


def audio(seconds: float, sr: int, seed: int, channels: int = 2, tilt: float = 0.0) -> np.ndarray:
    r = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f * t + r.uniform(0, 6)) * (f / 300.0) ** tilt for f in (110, 300, 900, 2500, 6000)
            if f < sr / 2)
    x = x + 0.3 * r.standard_normal(n) * (1 + np.sin(2 * np.pi * 3 * t))
    x = np.stack([x, np.roll(x, 3)][:channels]).astype(np.float32)
    return 0.4 * x / np.abs(x).max()


def _write(path, a, sr):
    sf.write(str(path), a.T, sr, subtype="FLOAT")
    return path


def test_predictor_embeds_long_files_and_predicts_in_range(model_path):
    pred = StylePredictor.load(model_path)
    assert pred.sample_rate == MODEL_SR and pred.embed_dim == 16
    x = audio(3.5, 44100, 1)                     # several analysis windows at the model rate
    e = pred.embed(x, 44100)
    assert e.shape == (16,) and np.all(np.isfinite(e))
    vals = pred.predict(x, 44100, audio(1.0, 16000, 2, channels=1), 16000)
    chain = Chain(CHAIN, 44100)
    assert [set(v) for v in vals] == [set(fx.param_names) for fx in chain.effects]
    for fx, v in zip(chain.effects, vals):
        for n, val in v.items():
            s = fx.spec(n)
            assert s.min <= val <= s.max
    # a different reference gives a different setting (the controller reads the reference)
    other = pred.predict(x, 44100, audio(1.0, 16000, 3, channels=1, tilt=1.0) * 0.05, 16000)
    assert Chain.flatten(chain.labels, vals) != Chain.flatten(chain.labels, other)


def test_style_transfer_cli_model_end_to_end(model_path, tmp_path, capsys):
    sr = 44100
    inp = _write(tmp_path / "in.wav", audio(2.3, sr, 4), sr)
    ref = _write(tmp_path / "ref.wav", audio(1.5, 22050, 5, channels=1, tilt=0.8), 22050)
    out, trc = tmp_path / "out.wav", tmp_path / "trace.json"
    rc = main(["style-transfer", str(inp), "--ref", str(ref), "--model", str(model_path), "-o", str(out),
               "--trace", str(trc)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    y, ysr = sf.read(str(out), always_2d=True)
    assert ysr == sr and y.shape == (int(2.3 * sr), 2)
    assert np.all(np.isfinite(y))
    tr = json.loads(trc.read_text())
    assert tr["format"] == "afx-trace" and tr["sample_rate"] == sr and tr["n_samples"] == int(2.3 * sr)
    assert "comp.threshold_db" in tr["params"]
    assert "comp.threshold_db" in cap.out and "dB" in cap.out  # the rich table of physical values
    # the trace renders back to the same audio with `afx render`
    again = tmp_path / "again.wav"
    assert main(["render", str(inp), "--preset", str(trc), "-o", str(again)]) == 0
    z, _ = sf.read(str(again), always_2d=True)
    assert np.max(np.abs(z - y)) < 1e-4
    # the output's loudness is the reference's (the chain's final gain is set by measurement)
    from afxcli.metrics import lufs
    r, rsr = sf.read(str(ref), always_2d=True)
    assert lufs(y.T, sr) == pytest.approx(lufs(r.T, rsr), abs=0.05)


def test_style_transfer_refine_reports_and_renders_its_setting(model_path, tmp_path, capsys):
    """--refine N: N steps on the prediction toward the reference's features; the note reports the
    feature distances, the trace holds the setting that was rendered, the output keeps the
    reference's loudness."""
    from afxcli.metrics import lufs
    from afxcli.tasks.style import StyleContext, style_transfer_file

    sr = 22050
    inp = _write(tmp_path / "in.wav", audio(3.0, sr, 31, tilt=-0.7), sr)
    ref = _write(tmp_path / "ref.wav", audio(3.0, sr, 32, tilt=0.8), sr)
    ctx = StyleContext(ref=ref, model=model_path, refine_steps=4)
    res = style_transfer_file(inp, tmp_path / "out.wav", ctx, trace_path=tmp_path / "t.json")
    info = res.refine
    assert info["steps"] == 4 and len(info["torch_loss_history_db"]) == 5
    assert info["kept"] == (info["feature_distance_after_db"] < info["feature_distance_before_db"])
    assert any(n.startswith("refined (4 steps)") for n in res.notes)
    y, _ = sf.read(str(tmp_path / "out.wav"), always_2d=True)
    r, _ = sf.read(str(ref), always_2d=True)
    assert lufs(y.T, sr) == pytest.approx(lufs(r.T, sr), abs=0.05)
    again = tmp_path / "again.wav"
    assert main(["render", str(inp), "--preset", str(tmp_path / "t.json"), "-o", str(again)]) == 0
    z, _ = sf.read(str(again), always_2d=True)
    assert np.max(np.abs(z - y)) < 1e-4
    plain = style_transfer_file(inp, tmp_path / "plain.wav", StyleContext(ref=ref, model=model_path))
    if info["kept"]:
        assert any(abs(res.params[k] - plain.params[k]) > 1e-6 for k in plain.params if not k.startswith("out."))


def test_style_transfer_rule_based_and_parameter_preset(tmp_path, capsys):
    sr = 16000
    inp = _write(tmp_path / "v.wav", audio(2.0, sr, 6, channels=1), sr)
    ref = _write(tmp_path / "r.wav", audio(2.0, sr, 7, channels=1, tilt=1.0), sr)
    out = tmp_path / "v_rb.wav"
    assert main(["style-transfer", str(inp), "--ref", str(ref), "--method", "rule-based", "-o", str(out)]) == 0
    y, ysr = sf.read(str(out), always_2d=True)
    assert y.shape == (2 * sr, 1) and ysr == sr
    from afxcli.metrics import lufs

    r, _ = sf.read(str(ref), always_2d=True)
    assert abs(lufs(y.T, sr) - lufs(r.T, sr)) < 0.6
    # a parameter preset (afx trace) is just rendered
    preset = tmp_path / "p.json"
    from afxcli.trace import ParameterTrace

    ch = Chain({"effects": [{"type": "gain"}]}, sr)
    ParameterTrace.static(ch.spec, {"gain.gain_db": -6.0}, sr).save(preset)
    out2 = tmp_path / "v_p.wav"
    assert main(["style-transfer", str(inp), "--preset", str(preset), "-o", str(out2)]) == 0
    z, _ = sf.read(str(out2), always_2d=True)
    x, _ = sf.read(str(inp), always_2d=True)
    assert np.allclose(z, x * 10 ** (-6 / 20), atol=1e-5)
    capsys.readouterr()


def test_adaptive_preset_round_trip(model_path, tmp_path, capsys):
    pred = StylePredictor.load(model_path)
    sr = 16000
    renders = [audio(1.2, sr, s, channels=1, tilt=0.7) for s in (8, 9, 10)]
    data = make_style_preset("bright", "presence lift", [pred.embed(a, sr) for a in renders], pred.model_id, MODEL_SR)
    p = tmp_path / "bright.json"
    p.write_text(json.dumps(data))
    sp = load_style_preset(p)
    assert sp.name == "bright" and sp.model_id == pred.model_id
    assert np.allclose(sp.embedding, np.mean([pred.embed(a, sr) for a in renders], axis=0), atol=1e-6)
    # the preset's embedding stands in for a reference: same setting as predicting with that embedding
    inp_audio = audio(1.5, sr, 11, channels=1)
    inp = _write(tmp_path / "x.wav", inp_audio, sr)
    out, trc = tmp_path / "x_out.wav", tmp_path / "x.trace.json"
    rc = main(["style-transfer", str(inp), "--preset", str(p), "--model", str(model_path), "-o", str(out),
               "--trace", str(trc)])
    assert rc == 0, capsys.readouterr().err
    chain = Chain(CHAIN, sr)
    expected = Chain.flatten(chain.labels, pred.values(pred.predict_normalized(pred.embed(inp_audio, sr),
                                                                                sp.embedding), chain))
    got = json.loads(trc.read_text())["params"]
    for k, v in expected.items():   # a preset without a stored level keeps the model's own gain
        g = got[k][0] if isinstance(got[k], list) else got[k]
        assert g == pytest.approx(v, rel=1e-6, abs=1e-6)
    # with a stored level the output is brought to that loudness
    from afxcli.metrics import lufs
    p.write_text(json.dumps({**data, "level_lufs": -30.0}))
    assert main(["style-transfer", str(inp), "--preset", str(p), "--model", str(model_path), "-o",
                 str(tmp_path / "x_lvl.wav")]) == 0
    y, _ = sf.read(str(tmp_path / "x_lvl.wav"), always_2d=True)
    assert lufs(y.T, sr) == pytest.approx(-30.0, abs=0.05)


def test_level_weight_blends_for_a_reference_not_for_a_preset(model_path, tmp_path, capsys, monkeypatch):
    """A model with ``level_own_gain_weight`` w blends its own gain into the level toward a
    reference's loudness (and says so); a preset's stored level is matched exactly all the same."""
    from afxcli.metrics import lufs
    from afxcli.tasks.loudness import fast_lufs

    monkeypatch.setattr(StylePredictor, "level_own_gain_weight", property(lambda self: 0.5))
    pred = StylePredictor.load(model_path)
    sr = 16000
    inp_audio = audio(1.5, sr, 11, channels=1)
    inp = _write(tmp_path / "x.wav", inp_audio, sr)
    ref_audio = 0.3 * audio(1.5, sr, 12, channels=1, tilt=0.5)
    ref = _write(tmp_path / "ref.wav", ref_audio, sr)
    out = tmp_path / "x_ref.wav"
    assert main(["style-transfer", str(inp), "--ref", str(ref), "--model", str(model_path), "-o", str(out)]) == 0
    cap = capsys.readouterr()
    assert "model's own" in cap.out + cap.err
    chain = Chain(pred.render_spec, sr)
    values = pred.predict(inp_audio, sr, ref_audio, sr)
    pre_values = [dict(v) for v in values]
    pre_values[-1]["gain_db"] = 0.0
    from afxcli.render import render_chain
    level = fast_lufs(render_chain(chain, inp_audio, pre_values), sr)
    want = level + 0.5 * (fast_lufs(ref_audio, sr) - level) + 0.5 * values[-1]["gain_db"]
    y, _ = sf.read(str(out), always_2d=True)
    assert lufs(y.T, sr) == pytest.approx(want, abs=0.05)
    data = make_style_preset("p", "d", [pred.embed(ref_audio, sr)], pred.model_id, MODEL_SR)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({**data, "level_lufs": -30.0}))
    assert main(["style-transfer", str(inp), "--preset", str(p), "--model", str(model_path), "-o",
                 str(tmp_path / "x_p.wav")]) == 0
    y, _ = sf.read(str(tmp_path / "x_p.wav"), always_2d=True)
    assert lufs(y.T, sr) == pytest.approx(-30.0, abs=0.05)


def test_master_with_model_and_refine(model_path, tmp_path, capsys):
    sr = 22050
    inp = _write(tmp_path / "m.wav", audio(1.0, sr, 12, channels=1, tilt=-0.5) * 0.3, sr)
    ref = _write(tmp_path / "mr.wav", audio(1.0, sr, 13, channels=1, tilt=0.5), sr)
    out, rep = tmp_path / "m_out.wav", tmp_path / "m.json"
    rc = main(["master", str(inp), "--ref", str(ref), "--model", str(model_path), "--method", "model",
               "--refine", "1", "-o", str(out), "--report", str(rep), "--trace", str(tmp_path / "m.trace.json")])
    assert rc == 0, capsys.readouterr().err
    # the trace (chain + loudness gain + limiter actually used) renders back to the same master
    again = tmp_path / "m_again.wav"
    assert main(["render", str(inp), "--preset", str(tmp_path / "m.trace.json"), "-o", str(again)]) == 0
    a, _ = sf.read(str(out), always_2d=True)
    b, _ = sf.read(str(again), always_2d=True)
    assert np.max(np.abs(a - b)) < 1e-5
    r = json.loads(rep.read_text())
    assert r["method"] == "model" and r["chain"]["model_id"]
    assert r["output"]["true_peak_dbtp"] <= -1.0
    assert "eq.peak1_gain_db" in r["chain"]["values"] and r["refine"]["steps"] == 1


def test_predictor_frame_embeddings_follow_the_music(model_path):
    pred = StylePredictor.load(model_path)
    sr = 22050
    x = audio(3.0, sr, 21, channels=2)
    x[:, : int(1.5 * sr)] *= 0.05                       # a quiet first half, a loud second half
    e, centers = pred.embed_frames(x, sr, 0.5)
    assert e.shape == (6, pred.embed_dim) and np.allclose(centers, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    assert np.all(np.isfinite(e))
    assert np.linalg.norm(e[0] - e[-1]) > np.linalg.norm(e[-1] - e[-2]) > 0  # halves differ more than neighbours
    # frame j is the analyzer on the model-rate window centred at (j + 0.5)·hop, clipped to the file
    from afxcli.audio import resample_for_analysis
    xm = torch.from_numpy(resample_for_analysis(x.mean(axis=0, keepdims=True), sr, MODEL_SR))
    w = pred.window_samples
    with torch.no_grad():
        first = pred.model.analyzer(xm[None, :, :w])[0].numpy()
        last = pred.model.analyzer(xm[None, :, xm.shape[-1] - w:])[0].numpy()
    np.testing.assert_allclose(e[0], first, atol=1e-5)
    np.testing.assert_allclose(e[-1], last, atol=1e-5)
    q = pred.predict_normalized(e, pred.embed(x, sr))
    assert q.shape == (6, pred.model_chain.n_free) and np.all((q > 0) & (q < 1))
    short, c1 = pred.embed_frames(x[:, :2000], sr, 0.5)   # shorter than one window: one frame
    assert short.shape == (1, pred.embed_dim) and np.allclose(c1, [0.25])


def test_master_time_varying_writes_automation_that_renders_back(model_path, tmp_path, capsys):
    sr = 22050
    x = audio(4.0, sr, 22, channels=2, tilt=-0.5)
    x[:, : 2 * sr] *= 0.1
    inp = _write(tmp_path / "tv.wav", x, sr)
    ref = _write(tmp_path / "tvr.wav", audio(2.0, sr, 23, channels=2, tilt=0.5), sr)
    out, rep, trc, png = (tmp_path / n for n in ("tv_out.wav", "tv.json", "tv.trace.json", "tv.png"))
    rc = main(["master", str(inp), "--ref", str(ref), "--model", str(model_path), "--time-varying",
               "-o", str(out), "--report", str(rep), "--trace", str(trc), "--plot", str(png)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(rep.read_text())
    assert r["chain"]["time_varying"] and r["chain"]["automation"]["ranges"]   # some parameter moves
    assert r["output"]["true_peak_dbtp"] <= -1.0 and png.stat().st_size > 10000
    tr = json.loads(trc.read_text())
    moving = [k for k, v in tr["params"].items() if isinstance(v, list) and len(set(v)) > 1]
    assert moving and all(not k.startswith(("loudness.", "ceiling.")) for k in moving)
    # the model's plain output gain is held (master.STATIC_EFFECT_TYPES): no level riding
    assert "out.gain_db" in tr["params"] and "out.gain_db" not in moving
    # the automation trace renders back to the same master (per-block updates through pedalboard)
    again = tmp_path / "tv_again.wav"
    assert tr["hop"] == 2048 and "--block-size 2048" in tr["description"]
    assert main(["render", str(inp), "--preset", str(trc), "-o", str(again), "--block-size", "2048"]) == 0
    a, _ = sf.read(str(out), always_2d=True)
    b, _ = sf.read(str(again), always_2d=True)
    assert a.shape == b.shape == (4 * sr, 2) and np.max(np.abs(a - b)) < 1e-5
    # time-varying is the model's default (unless --refine); --static gives one setting
    for extra, want in (([], True), (["--static"], False), (["--refine", "1"], False)):
        rep2 = tmp_path / f"d{len(extra)}.json"
        assert main(["master", str(inp), "--ref", str(ref), "--model", str(model_path), "-o",
                     str(tmp_path / f"d{len(extra)}{want}.wav"), "--report", str(rep2), *extra]) == 0
        assert json.loads(rep2.read_text())["chain"]["time_varying"] is want
    # only with the model, and not together with --refine
    for extra in (["--method", "rule-based"], ["--refine", "2"]):
        capsys.readouterr()
        rc = main(["master", str(inp), "--ref", str(ref), "--model", str(model_path), "--time-varying",
                   "-o", str(tmp_path / "x.wav"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and "time-varying" in err and not (tmp_path / "x.wav").exists()


def test_master_batch_embeds_the_reference_once_and_a_failed_embedding_is_one_line(
        model_path, tmp_path, capsys, monkeypatch):
    """A time-varying batch (``--jobs 2``, worker threads) embeds the reference exactly once; when
    that embedding fails the error is one line, with no traceback from any thread."""
    import threading

    from afxcli.errors import AfxError
    from afxcli.tasks.style import StylePredictor

    sr = 22050
    d = tmp_path / "in"
    d.mkdir()
    for k in range(3):
        _write(d / f"s{k}.wav", audio(2.0, sr, 40 + k, channels=2), sr)
    ref = _write(tmp_path / "r.wav", audio(2.0, sr, 50, channels=2, tilt=0.5), sr)
    (tmp_path / "o").mkdir()
    calls = []
    real_embed = StylePredictor.embed
    monkeypatch.setattr(StylePredictor, "embed", lambda self, a, r: calls.append(a.shape) or real_embed(self, a, r))
    rc = main(["--quiet", "master", str(d), "--ref", str(ref), "--model", str(model_path), "--time-varying",
               "--out-dir", str(tmp_path / "o"), "--jobs", "2"])
    assert rc == 0, capsys.readouterr().err
    assert len(calls) == 1 and len(list((tmp_path / "o").iterdir())) == 3

    def broken(self, a, r):
        raise AfxError("reference analysis failed (simulated)")

    monkeypatch.setattr(StylePredictor, "embed", broken)
    uncaught = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)   # where a thread's traceback goes
    capsys.readouterr()
    rc = main(["--quiet", "master", str(d / "s0.wav"), "--ref", str(ref), "--model", str(model_path),
               "--time-varying", "-o", str(tmp_path / "x.wav")])
    assert not uncaught
    err = capsys.readouterr().err
    assert rc != 0 and "reference analysis failed (simulated)" in err and "Traceback" not in err, err
    assert err.count("\n") == 1 and not (tmp_path / "x.wav").exists()


def test_style_errors_one_line_no_output(model_path, tmp_path, capsys):
    sr = 16000
    inp = _write(tmp_path / "e.wav", audio(1.0, sr, 14, channels=1), sr)
    out = tmp_path / "e_out.wav"
    bad_preset = tmp_path / "bad.json"
    bad_preset.write_text(json.dumps({"format": "afx-style-preset", "embedding": [0.1, 0.2]}))
    not_model = tmp_path / "not.pt"
    not_model.write_bytes(b"garbage")
    for args in ([], ["--ref", str(inp), "--preset", "warm"], ["--preset", str(bad_preset), "--model", str(model_path)],
                 ["--ref", str(inp), "--model", str(not_model)], ["--ref", str(inp), "--method", "magic"],
                 ["--ref", str(tmp_path / "missing.wav"), "--model", str(model_path)],
                 ["--preset", "warm", "--refine", "3"], ["--ref", str(inp), "--method", "rule-based", "--refine", "2"],
                 ["--ref", str(inp), "--model", str(model_path), "--refine", "-1"]):
        rc = main(["style-transfer", str(inp), "-o", str(out), *args])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert err.startswith("afx: error:") and err.count("\n") == 1, err
        assert not out.exists()
    with pytest.raises(AfxError):
        StylePredictor.load(not_model)


def test_make_speech_presets_script_with_tiny_model(model_path, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_speech_presets",
                                                  Path(__file__).parents[1]
                                                  / "scripts" / "make_speech_presets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        _write(clips / f"c{i}.wav", audio(1.0, 16000, 20 + i, channels=1), 16000)
    out = tmp_path / "speech"
    written = mod.build(str(model_path), str(clips), out, 0, 5.0, list(mod.STYLES))
    assert sorted(p.stem for p in written) == ["bright", "broadcast", "neutral", "telephone", "warm"]
    embs = {p.stem: load_style_preset(p).embedding for p in written}
    assert not np.allclose(embs["telephone"], embs["bright"])  # different styles, different embeddings
    # telephone render really is band-limited
    x = audio(1.0, 16000, 30, channels=1)
    y = mod.render_style(x, 16000, "telephone")
    spec_y = np.abs(np.fft.rfft(y[0])) ** 2
    f = np.fft.rfftfreq(y.shape[1], 1 / 16000)
    assert spec_y[f > 5000].sum() < 1e-3 * spec_y[(f > 400) & (f < 3000)].sum()
    rc = main(["style-transfer", str(clips / "c0.wav"), "--preset", str(out / "warm.json"), "--model",
               str(model_path), "-o", str(tmp_path / "w.wav")])
    assert rc == 0, capsys.readouterr().err


def test_output_level_blends_reference_loudness_and_own_gain():
    """``match_output_loudness``: w = 0 lands on the reference's loudness exactly, w = 1 keeps the
    network's own output gain, w = 0.5 lies halfway (in dB) between the two; the values returned
    render to the same output."""
    from afxcli.render import render_chain
    from afxcli.tasks.loudness import fast_lufs
    from afxcli.tasks.style import match_output_loudness

    sr = 16000
    chain = Chain(CHAIN, sr)
    x = audio(3.0, sr, 3, channels=1)
    values = chain.base_values()
    values[-1]["gain_db"] = -4.0                       # the network's own gain
    target = fast_lufs(x, sr) + 6.0                    # a reference 6 LU louder than the input
    v0, y0, note0 = match_output_loudness(chain, x, values, target)
    assert abs(fast_lufs(y0, sr) - target) < 0.01 and note0 is None
    g_ref = v0[-1]["gain_db"]
    v1, y1, _ = match_output_loudness(chain, x, values, target, 1.0)
    assert v1[-1]["gain_db"] == pytest.approx(-4.0)
    vh, yh, note = match_output_loudness(chain, x, values, target, 0.5)
    assert vh[-1]["gain_db"] == pytest.approx(0.5 * g_ref + 0.5 * -4.0, abs=1e-6)
    assert abs(fast_lufs(yh, sr) - (target - 0.5 * (g_ref + 4.0))) < 0.01
    assert "model's own" in note
    np.testing.assert_allclose(render_chain(chain, x, vh), yh, atol=1e-6)
    with pytest.raises(AfxError):
        match_output_loudness(chain, x, values, target, 1.5)


def test_reference_items_are_computed_once_each_under_their_own_lock():
    """``ReferenceEmbedding._once``: concurrent callers of one item get one computation; a slow
    item does not hold up another; a failure is not cached."""
    import threading
    import time

    from afxcli.tasks.reference import ReferenceEmbedding

    class Ctx(ReferenceEmbedding):
        def __init__(self):
            self._lock = threading.Lock()

    ctx, calls, release = Ctx(), [], threading.Event()

    def slow():
        calls.append("slow")
        release.wait(5.0)
        return 1

    threads = [threading.Thread(target=ctx._once, args=("slow", slow)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    assert ctx._once("fast", lambda: 2) == 2 and time.perf_counter() - t0 < 1.0  # not behind "slow"
    release.set()
    for t in threads:
        t.join()
    assert calls == ["slow"] and ctx._once("slow", slow) == 1

    def fail():
        calls.append("fail")
        raise RuntimeError("simulated")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            ctx._once("fail", fail)
    assert calls.count("fail") == 2


def test_master_context_analyzes_the_reference_in_a_side_thread(model_path, tmp_path, monkeypatch):
    """The reference's embedding is computed once, by the context's prefetch thread, and equals the
    predictor's own; the time-varying master then uses it (no second embedding)."""
    from afxcli.tasks.master import MasterContext, master_file
    from afxcli.tasks.style import StylePredictor

    sr = 22050
    ref = _write(tmp_path / "r.wav", audio(2.0, sr, 61, tilt=0.5), sr)
    inp = _write(tmp_path / "i.wav", audio(2.0, sr, 62), sr)
    calls = []
    real_embed = StylePredictor.embed
    monkeypatch.setattr(StylePredictor, "embed", lambda self, a, r: calls.append(1) or real_embed(self, a, r))
    ctx = MasterContext(ref=ref, model=model_path, time_varying=True)
    assert ctx.reference_thread is not None
    ctx.reference_thread.join(30.0)
    assert calls == [1]
    expected = real_embed(ctx.predictor, ctx.ref_audio, ctx.ref_sr)
    np.testing.assert_array_equal(ctx.reference_embedding(), expected)
    master_file(inp, tmp_path / "o.wav", ctx)
    assert calls == [1] and (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("command", ["master", "style-transfer"])
def test_cli_waits_for_the_reference_thread_when_every_input_fails(model_path, tmp_path, monkeypatch, command):
    """An unreadable input fails before the reference's analysis ends; the command still waits for
    that thread before returning its error status (a daemon thread inside native code at
    interpreter exit aborts the process with status 134)."""
    import time

    from afxcli import cli
    from afxcli.tasks.reference import ReferenceEmbedding
    from afxcli.tasks.style import StylePredictor

    sr = 22050
    ref = _write(tmp_path / "r.wav", audio(2.0, sr, 63), sr)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 50)
    real_embed = StylePredictor.embed
    monkeypatch.setattr(StylePredictor, "embed", lambda self, a, r: time.sleep(0.5) or real_embed(self, a, r))
    threads = []
    real_prefetch = ReferenceEmbedding.prefetch_reference
    monkeypatch.setattr(ReferenceEmbedding, "prefetch_reference",
                        lambda self: threads.append(real_prefetch(self)) or threads[-1])
    rc = cli.main([command, str(bad), "--ref", str(ref), "--model", model_path, "-o", str(tmp_path / "o.wav")])
    assert rc == cli.EXIT_USER_ERROR
    assert len(threads) == 1 and threads[0] is not None and not threads[0].is_alive()
    assert not (tmp_path / "o.wav").exists()
