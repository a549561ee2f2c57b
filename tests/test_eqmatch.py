"""The matched graphic EQ stage (afxcli.tasks.eqmatch) and the style models that start from it."""
import numpy as np
import pytest
import torch

from afxcli.effects.chain import Chain
from afxcli.effects.eq import GraphicEQ
from afxcli.errors import AfxError
from afxcli.filters import rbj_high_shelf, rbj_low_shelf, rbj_peak, sos_response_db
from afxcli.tasks.eqmatch import (apply_matched_geq, design_matched_geq, fit_graphic_eq, match_eq_spec)
from afxcli.tasks.rulebased import average_spectrum, smooth_fractional_octave


def test_numpy_rbj_sections_equal_the_torch_twin_formulas():
    from afxcli.dsp import biquad

    for make_np, make_t, args in ((rbj_peak, biquad.make_peak_filter, (44100, 1000.0, 6.0, 2.0)),
                                  (rbj_low_shelf, biquad.make_low_shelf, (48000, 120.0, -9.0, 0.7071)),
                                  (rbj_high_shelf, biquad.make_high_shelf, (16000, 3000.0, 4.5, 0.7071))):
        sr, f, g, q = args
        a = make_np(sr, f, g, q)
        t = make_t(sr, torch.tensor(f, dtype=torch.float64), torch.tensor(q, dtype=torch.float64),
                   torch.tensor(10 ** (g / 20), dtype=torch.float64)).numpy()
        np.testing.assert_allclose(np.delete(a, 3), t, atol=1e-12)


def test_shelved_graphic_eq_ends_are_shelves_and_match_pedalboard():
    geq = GraphicEQ(44100, bands="third", shelves=True)
    kinds = [s[0] for s in geq.sections]
    assert kinds[0] == "low_shelf" and kinds[-1] == "high_shelf" and set(kinds[1:-1]) == {"peak"}
    rng = np.random.default_rng(1)
    values = {k: float(rng.uniform(-9, 9)) for k in geq.param_names}
    x = (rng.standard_normal((2, 44100)) * 0.1).astype(np.float32)
    chain = Chain({"effects": [{"type": "geq", "options": {"bands": "third", "shelves": True}}]}, 44100)
    from afxcli.render import render_chain

    y_pb = render_chain(chain, x, [values])
    q = torch.tensor([[values[k] for k in geq.param_names]], dtype=torch.float32)
    y_t = geq(torch.from_numpy(x)[None], q, None, "exact")[0].numpy()
    assert np.max(np.abs(y_pb - y_t)) < 1e-4


@pytest.mark.parametrize("sr", [16000, 44100])
def test_fit_recovers_a_graphic_eq_response(sr):
    """Without the smoothness penalty the fit recovers any graphic-EQ response, even independent
    random band gains."""
    geq = GraphicEQ(sr, **match_eq_spec()["options"])
    rng = np.random.default_rng(sr)
    gains = rng.uniform(-8, 8, len(geq.param_names))
    design = {"peak": rbj_peak, "low_shelf": rbj_low_shelf, "high_shelf": rbj_high_shelf}
    sos = np.stack([design[k](sr, f, g, q) for (k, f, _, q), g in zip(geq.sections, gains)])
    freqs = np.geomspace(20, 0.49 * sr, 2000)
    target = sos_response_db(sos, sr, freqs)
    fit = fit_graphic_eq(freqs, target, sr, 30.0, 0.47 * sr, smoothness=0.0)
    got = np.stack([design[k](sr, f, fit[key], q) for (k, f, key, q) in geq.sections])
    grid = np.geomspace(40, 0.45 * sr, 300)
    err = np.abs(sos_response_db(got, sr, grid) - sos_response_db(sos, sr, grid))
    assert err.max() < 0.5, err.max()


def test_smoothness_penalty_keeps_neighbouring_gains_together_and_the_response_close():
    """A broad target response with a rough, content-like ripple on top (±3 dB, random from grid
    point to grid point, as the ratio of two songs' spectra has): the default penalty fits the broad
    shape better than the plain least squares does (which chases the ripple), with far less
    band-to-band alternation."""
    sr = 44100
    geq = GraphicEQ(sr, **match_eq_spec()["options"])
    design = {"peak": rbj_peak, "low_shelf": rbj_low_shelf, "high_shelf": rbj_high_shelf}
    freqs = np.geomspace(20, 0.49 * sr, 400)
    broad = sos_response_db(np.stack([rbj_low_shelf(sr, 120.0, 6.0, 0.7), rbj_peak(sr, 2000.0, -4.0, 0.7),
                                      rbj_high_shelf(sr, 8000.0, 3.0, 0.7)]), sr, freqs)
    target = broad + np.random.default_rng(5).uniform(-3.0, 3.0, freqs.size)
    grid = np.geomspace(40, 0.45 * sr, 300)
    want = np.interp(np.log(grid), np.log(freqs), broad)

    def fitted(mu):
        g = fit_graphic_eq(freqs, target, sr, 30.0, 0.47 * sr, smoothness=mu)
        resp = sos_response_db(np.stack([design[k](sr, f, g[key], q) for (k, f, key, q) in geq.sections]), sr, grid)
        gains = np.array([g[key] for (_, _, key, _) in geq.sections])
        return np.sqrt(np.mean((resp - want) ** 2)), np.mean(np.abs(np.diff(gains)))

    (rms0, jag0), (rms, jag) = fitted(0.0), fitted(None)
    assert rms < rms0, (rms, rms0)
    assert jag < 0.5 * jag0, (jag, jag0)


def test_matched_input_takes_the_reference_spectrum_shape():
    sr = 44100
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 6 * sr)) * 0.05).astype(np.float32)
    ref_src = (rng.standard_normal((2, 6 * sr)) * 0.05).astype(np.float32)
    # reference: other noise through a bass cut and a presence boost (pedalboard's own filters)
    chain = Chain({"effects": [{"type": "peq", "options": {"n_peaks": 1}}]}, sr)
    from afxcli.render import render_chain

    vals = dict(chain.base_values()[0])
    vals.update({"low_shelf_freq_hz": 150.0, "low_shelf_gain_db": -8.0, "peak1_freq_hz": 3000.0,
                 "peak1_gain_db": 6.0, "peak1_q": 1.0, "high_shelf_gain_db": 0.0})
    ref = render_chain(chain, ref_src, [vals])
    gains = design_matched_geq(x, sr, ref, sr)
    assert gains["band_3150hz_gain_db"] > 3.0
    y = apply_matched_geq(x, sr, gains)
    assert y.shape == x.shape and y.dtype == np.float32

    def shape_db(a):
        f, p = average_spectrum(a, sr)
        s = 10 * np.log10(smooth_fractional_octave(f, p, 3.0))
        band = (f > 40) & (f < 16000)
        return s[band] - s[band].mean()

    before = np.abs(shape_db(x) - shape_db(ref)).mean()
    after = np.abs(shape_db(y) - shape_db(ref)).mean()
    assert after < 0.6 and after < before / 4, (before, after)


def test_style_pairs_with_match_eq_change_only_the_input():
    from afxcli.train.style import STYLE_CHAIN, StylePairDataset

    kw = dict(files=None, chain_spec=STYLE_CHAIN, sample_rate=16000, clip_samples=32000, items_per_epoch=2, seed=3)
    plain, matched = StylePairDataset(**kw)[0], StylePairDataset(match_eq="third", **kw)[0]
    for key in ("reference", "target"):
        assert torch.equal(plain[key], matched[key])
    assert plain["input"].shape == matched["input"].shape
    assert not torch.allclose(plain["input"], matched["input"])
    assert torch.equal(matched["unmatched_input"], plain["input"])


def test_style_pairs_match_with_the_configured_smoothness():
    """``match_eq_smoothness`` reaches the stage's fit: 0 gives the plain least-squares stage (what
    the models before 2026-12-03's sixth session were trained on), None the module default."""
    from afxcli.tasks.eqmatch import SMOOTHNESS
    from afxcli.train.style import STYLE_CHAIN, StylePairDataset

    kw = dict(files=None, chain_spec=STYLE_CHAIN, sample_rate=16000, clip_samples=32000, items_per_epoch=2, seed=3,
              match_eq="third")
    items = {mu: StylePairDataset(match_eq_smoothness=mu, **kw)[0]["input"] for mu in (None, SMOOTHNESS, 0.0)}
    assert torch.equal(items[None], items[SMOOTHNESS])
    assert not torch.allclose(items[None], items[0.0])


@pytest.fixture(scope="module")
def match_model(tiny_conv_style_model, tmp_path_factory):
    """The tiny conv style model, saved as a matched-EQ model (config data.match_eq = third)."""
    from afxcli.tasks.style import StylePredictor, save_style_checkpoint

    p = StylePredictor.load(tiny_conv_style_model, backend="torch")
    cfg = {**p.config, "data": {**p.config["data"], "match_eq": "third"}}
    path = tmp_path_factory.mktemp("match_model") / "match.pt"
    save_style_checkpoint(path, p.model, p.chain_spec, cfg)
    return path


def test_predictor_with_match_eq_predicts_the_stage_then_the_chain(match_model):
    from afxcli.render import render_chain
    from afxcli.tasks.style import StylePredictor

    pred = StylePredictor.load(match_model)
    assert pred.match_eq == "third" and pred.match_eq_smoothness is None
    spec = pred.render_spec
    assert spec["effects"][0]["type"] == "geq" and spec["effects"][1:] == pred.chain_spec["effects"]
    rng = np.random.default_rng(0)
    sr = 44100
    x = (rng.standard_normal((2, 3 * sr)) * 0.05).astype(np.float32)
    ref = (rng.standard_normal((1, 2 * 22050)) * 0.1).astype(np.float32)
    values = pred.predict(x, sr, ref, 22050)
    chain = Chain(spec, sr)
    assert len(values) == len(chain.effects)
    assert set(values[0]) == set(chain.effects[0].param_names)
    y = render_chain(chain, x, values)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    with pytest.raises(AfxError, match="needs a reference recording"):
        pred.predict(x, sr, ref_embedding=pred.embed(ref, 22050))


def _noise_file(path, seconds, sr, seed, channels, tilt):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal((channels, int(seconds * sr))), axis=1)
    f = np.fft.rfftfreq(int(seconds * sr), 1 / sr)
    spec *= (np.maximum(f, 20) / 1000.0) ** (tilt / 2)
    x = np.fft.irfft(spec, n=int(seconds * sr), axis=1)
    x *= np.sin(np.pi * np.arange(x.shape[1]) / sr * 2) ** 2 + 0.2      # some level movement
    sf.write(str(path), (0.3 * x / np.abs(x).max()).T.astype(np.float32), sr, subtype="FLOAT")
    return path


def test_master_with_a_match_eq_model_renders_back_from_its_trace(match_model, tmp_path, capsys):
    import json

    import soundfile as sf

    from afxcli.cli import main

    sr = 22050
    inp = _noise_file(tmp_path / "in.wav", 4.0, sr, 1, 2, -1.0)
    ref = _noise_file(tmp_path / "ref.wav", 3.0, 44100, 2, 2, 0.5)
    for extra in ([], ["--static"]):
        out, rep, trc = (tmp_path / f"{n}{len(extra)}.{e}" for n, e in (("out", "wav"), ("rep", "json"), ("trace", "json")))
        rc = main(["master", str(inp), "--ref", str(ref), "--model", str(match_model), "-o", str(out),
                   "--report", str(rep), "--trace", str(trc), *extra])
        assert rc == 0, capsys.readouterr().err
        r = json.loads(rep.read_text())
        assert "match.band_1000hz_gain_db" in r["chain"]["values"]
        # the stage lifts the highs toward the brighter reference
        assert r["chain"]["values"]["match.band_8000hz_gain_db"] > r["chain"]["values"]["match.band_125hz_gain_db"]
        again = tmp_path / f"again{len(extra)}.wav"
        assert main(["render", str(inp), "--preset", str(trc), "-o", str(again), "--block-size", "2048"]) == 0
        a, _ = sf.read(str(out), always_2d=True)
        b, _ = sf.read(str(again), always_2d=True)
        assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-5


def test_speech_presets_of_a_match_eq_model_store_a_spectrum(match_model, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from afxcli.cli import main
    from afxcli.tasks.style import load_style_preset

    spec = importlib.util.spec_from_file_location(
        "make_speech_presets", Path(__file__).parents[1] / "scripts" / "make_speech_presets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        _noise_file(clips / f"c{i}.wav", 1.5, 16000, 40 + i, 1, -0.5)
    written = mod.build(str(match_model), str(clips), tmp_path / "speech", 0, 5.0, ["telephone", "bright"])
    tel, bright = (load_style_preset(p) for p in written)
    (f, p_tel), rate = tel.spectrum
    (_, p_bright), _ = bright.spectrum
    assert rate == 16000 and f[0] == pytest.approx(20.0)
    # the telephone band-pass shows in the stored spectrum: little below 200 Hz compared with 1 kHz
    lo, mid = np.interp(100.0, f, p_tel), np.interp(1000.0, f, p_tel)
    assert 10 * np.log10(mid / lo) > 15 and not np.allclose(p_tel, p_bright)
    out = tmp_path / "t.wav"
    capsys.readouterr()
    rc = main(["style-transfer", str(clips / "c0.wav"), "--preset", str(written[0]), "--model",
               str(match_model), "-o", str(out), "--trace", str(tmp_path / "t.json")])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out   # the stage's bands take one row of the table (all in the trace)
    assert "match (graphic EQ" in printed and "band_1000hz" not in printed
    import json

    assert "match.band_1000hz_gain_db" in json.loads((tmp_path / "t.json").read_text())["params"]


def test_a_batch_computes_the_reference_spectra_once(match_model, tmp_path, capsys, monkeypatch):
    from afxcli.cli import main
    from afxcli.tasks.style import StylePredictor

    calls = []
    orig = StylePredictor.reference_spectra

    def counted(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(StylePredictor, "reference_spectra", counted)
    ins = [_noise_file(tmp_path / f"in{i}.wav", 2.0, 22050, 50 + i, 1, -0.5) for i in range(3)]
    ref = _noise_file(tmp_path / "ref.wav", 2.0, 22050, 60, 1, 0.5)
    (tmp_path / "out").mkdir()
    rc = main(["style-transfer", *map(str, ins), "--ref", str(ref), "--model", str(match_model),
               "--out-dir", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    assert len(calls) == 1 and len(list((tmp_path / "out").iterdir())) == 3


def test_a_preset_without_a_spectrum_is_a_one_line_error_for_a_match_eq_model(match_model, tmp_path, capsys):
    import json

    from afxcli.cli import main
    from afxcli.tasks.style import StylePredictor, make_style_preset

    pred = StylePredictor.load(match_model)
    preset = tmp_path / "old.json"   # as a model without the stage made it: an embedding, no spectrum
    preset.write_text(json.dumps(make_style_preset("old", "no spectrum", [np.zeros(pred.embed_dim)],
                                                   pred.model_id, pred.sample_rate)))
    inp = _noise_file(tmp_path / "in.wav", 2.0, 22050, 70, 1, 0.0)
    for cmd in (["style-transfer"], ["master"]):
        out = tmp_path / f"{cmd[0]}.wav"
        rc = main([*cmd, str(inp), "--preset", str(preset), "--model", str(match_model), "-o", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "stored spectrum" in err and err.count("afx: error:") == 1, err
        assert not out.exists()


def test_predictor_designs_its_stage_with_the_smoothness_it_was_trained_with(match_model, tmp_path):
    """A model whose config pins ``data.match_eq_smoothness`` gets its stage fitted with that
    penalty (here 0: the plain fit), the same gains as :func:`design_matched_geq` gives with it."""
    from afxcli.tasks.style import StylePredictor, save_style_checkpoint
    from afxcli.train.data import music_like

    p = StylePredictor.load(match_model, backend="torch")
    path = tmp_path / "plain.pt"
    save_style_checkpoint(path, p.model, p.chain_spec, {**p.config, "data": {**p.config["data"], "match_eq_smoothness": 0}})
    plain = StylePredictor.load(path)
    assert plain.match_eq_smoothness == 0.0
    rng = np.random.default_rng(4)
    sr = 44100
    x = (rng.standard_normal((1, 2 * sr)) * 0.05).astype(np.float32)
    ref = music_like(np.random.default_rng(9), sr, 2 * sr)
    spectra = plain.reference_spectra(ref, sr)
    got = plain.match_stage(x, sr, spectra)[1]
    want = design_matched_geq(x, sr, None, sr, "third", ref_spectrum=spectra[1][0], smoothness=0.0)
    assert got == want
    assert p.match_stage(x, sr, spectra)[1] != want
