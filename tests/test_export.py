"""export-preset: afx JSON round trip, ffmpeg -af agreement with afx's render, pedalboard snippet,
EasyEffects JSON, and one-line errors for bad inputs."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from afxcli.effects import REGISTRY
from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.render import render_chain
from afxcli.tasks.export import FORMATS, export_preset, load_preset
from afxcli.trace import ParameterTrace

ROOT = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")


def needs_kind(*kinds):
    missing = [k for k in kinds if k not in REGISTRY]
    return pytest.mark.skipif(bool(missing), reason=f"effect kind(s) {missing} not registered in this checkout")


def music(sr: int, channels: int = 2, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Sines plus decaying noise bursts (transients every 125 ms), peak about 0.9, (channels, samples)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        x = 0.25 * np.sin(2 * np.pi * (110 + 3 * c) * t) + 0.15 * np.sin(2 * np.pi * 1830 * t + c)
        x += 0.08 * np.sin(2 * np.pi * 7400 * t)
        burst = rng.standard_normal(n) * np.exp(-(t % 0.125) * 40.0)
        x += 0.35 * burst * (0.3 + 0.7 * (np.floor(t / 0.125) % 2))
        out.append(x)
    y = np.stack(out)
    return (0.9 * y / np.abs(y).max()).astype(np.float32)


def write_chain(path: Path, effects: list) -> Path:
    path.write_text(json.dumps({"format": "afx-chain", "version": 1, "effects": effects}))
    return path


def random_trace(path: Path, effects: list, sr: float, n_frames: int = 12, seed: int = 1,
                 skip: tuple = ()) -> ParameterTrace:
    """A time-varying trace over every parameter of the chain (uniform in normalized space)."""
    chain = Chain({"effects": effects}, sr)
    rng = np.random.default_rng(seed)
    params = {}
    for lab, fx in zip(chain.labels, chain.effects):
        for s in fx.specs:
            key = f"{lab}.{s.name}"
            if s.name in skip:
                params[key] = float(fx.default_values()[s.name])
            else:
                params[key] = [float(s.denormalize(rng.uniform())) for _ in range(n_frames)]
    tr = ParameterTrace(chain=chain.describe(), sample_rate=sr, hop=512, params=params,
                        n_samples=n_frames * 512)
    tr.save(path)
    return tr


def run_ffmpeg(af: str, audio: np.ndarray, sr: int, tmp: Path) -> np.ndarray:
    src, dst = tmp / "ff_in.wav", tmp / "ff_out.wav"
    sf.write(src, audio.T, sr, subtype="FLOAT")
    p = subprocess.run([FFMPEG, "-nostdin", "-y", "-v", "error", "-i", str(src), "-af", af,
                        "-c:a", "pcm_f32le", str(dst)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    y, sr_out = sf.read(dst, dtype="float32", always_2d=True)
    assert sr_out == sr
    return y.T


def dbfs(x: float) -> float:
    return 20.0 * math.log10(max(float(x), 1e-30))


def afx_render(preset: Path, audio: np.ndarray) -> np.ndarray:
    spec, tr = load_preset(preset)
    return render_chain(Chain(spec, tr.sample_rate), audio, tr)


# ------------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------------
EFFECTS_BASIC = [{"type": "gain"}, {"type": "compressor", "label": "comp"},
                 {"type": "clipper", "label": "sat"}, {"type": "limiter", "options": {"true_peak": False}}]


def test_json_preset_round_trips_exactly(tmp_path):
    tr = random_trace(tmp_path / "trace.json", EFFECTS_BASIC, 44100.0)
    text1 = export_preset(tmp_path / "trace.json", "json", tmp_path / "p1.json")
    assert (tmp_path / "p1.json").read_text() == text1
    data = json.loads(text1)
    assert data["format"] == "afx-trace" and data["n_frames"] == 1
    # default selection of a time-varying trace is the median, carried bit-exactly
    median = tr.reduce("median")
    assert all(data["params"][k] == median[k] for k in median)
    # export -> load -> export: identical text, identical floats
    text2 = export_preset(tmp_path / "p1.json", "json", tmp_path / "p2.json")
    assert text2 == text1
    spec, tr2 = load_preset(tmp_path / "p2.json")
    assert tr2.is_static and tr2.frame_values(0) == {k: float(v) for k, v in data["params"].items()}
    # --at picks the frame in force at that time, exactly
    at = export_preset(tmp_path / "trace.json", "json", at=5 * 512 / 44100.0 + 1e-6)
    assert json.loads(at)["params"] == tr.frame_values(5)
    mean = json.loads(export_preset(tmp_path / "trace.json", "json", reduce="mean"))["params"]
    assert mean == tr.reduce("mean") and mean != data["params"]


def test_json_preset_keeps_description_and_clips_to_another_rate(tmp_path):
    src = ROOT / "presets" / "master_gentle.json"
    if not src.exists():
        pytest.skip("presets/master_gentle.json not in this checkout")
    data = json.loads(export_preset(src, "json"))
    assert data["description"] == json.loads(src.read_text())["description"]
    assert export_preset(src, "json") == export_preset(src, "json", reduce="mean")  # static: any reduction
    # at 16 kHz no frequency may exceed 0.45 * 16000 = 7200 Hz: values are clipped like `afx render` does
    from afxcli.tasks.export import resolve_setting

    setting = resolve_setting(src, sample_rate=16000)
    assert setting.clipped and all(k.endswith("_freq_hz") for k in setting.clipped)
    low = json.loads(export_preset(src, "json", sample_rate=16000))
    assert low["sample_rate"] == 16000.0
    assert max(v for k, v in low["params"].items() if k.endswith("_freq_hz")) <= 7200.0


def test_json_preset_renders_like_the_selected_trace_frame(tmp_path):
    random_trace(tmp_path / "trace.json", EFFECTS_BASIC, 44100.0)
    export_preset(tmp_path / "trace.json", "json", tmp_path / "p.json", at=0.0)
    audio = music(44100, 2, 0.5)
    spec, tr = load_preset(tmp_path / "trace.json")
    chain = Chain(spec, 44100.0)
    ref = render_chain(chain, audio, chain.values_from_flat(tr.frame_values(0)))
    assert np.array_equal(afx_render(tmp_path / "p.json", audio), ref)


def test_chain_spec_exports_fixed_and_default_values(tmp_path):
    src = write_chain(tmp_path / "chain.json", [{"type": "gain", "fixed": {"gain_db": -4.5}},
                                               {"type": "compressor", "fixed": {"ratio": 3.0}}])
    params = json.loads(export_preset(src, "json", sample_rate=44100))["params"]
    assert params["gain.gain_db"] == -4.5 and params["compressor.ratio"] == 3.0
    assert params["compressor.threshold_db"] == REGISTRY["compressor"](44100).default_values()["threshold_db"]


# ------------------------------------------------------------------------------------------------
# ffmpeg
# ------------------------------------------------------------------------------------------------
def peq_trace(path: Path, sr: int, seed: int, min_freq_hz: float | None = None) -> None:
    """A static random peq setting (gains, frequencies, Qs uniform over their normalized ranges);
    frequencies optionally floored at ``min_freq_hz``."""
    random_trace(path, [{"type": "peq", "label": "eq", "options": {"n_peaks": 4}}], float(sr), n_frames=1, seed=seed)
    if min_freq_hz is not None:
        data = json.loads(path.read_text())
        data["params"] = {k: (max(v, min_freq_hz) if k.endswith("_freq_hz") else v) for k, v in data["params"].items()}
        path.write_text(json.dumps(data))


@needs_ffmpeg
@needs_kind("peq")
@pytest.mark.parametrize("sr", [44100, 48000])
def test_ffmpeg_eq_matches_afx_render(tmp_path, sr):
    """Random peq settings (frequencies >= 50 Hz, gains and Qs over their full ranges) rendered by
    ffmpeg from the exported string match afx's render to <= -60 dBFS max abs error."""
    worst = -math.inf
    for seed in range(4):
        peq_trace(tmp_path / "trace.json", sr, seed, min_freq_hz=50.0)
        af = export_preset(tmp_path / "trace.json", "ffmpeg")
        assert af.startswith(f"aresample={sr},") and "biquad=" in af and "\n" not in af
        audio = music(sr, 2, 1.0, seed)
        err = dbfs(np.abs(run_ffmpeg(af, audio, sr, tmp_path) - afx_render(tmp_path / "trace.json", audio)).max())
        worst = max(worst, err)
    print(f"ffmpeg_eq_max_abs_error_dbfs_{sr}: {worst:.1f} dBFS")
    assert worst <= -60.0


@needs_ffmpeg
@needs_kind("peq")
def test_ffmpeg_eq_adds_nothing_to_pedalboards_float32_round_off(tmp_path):
    """Over the full ranges (20 Hz sections with Q up to 10 included) ffmpeg applies exactly the
    filter afx renders: it equals a float64 recursion with afx's render coefficients, and its
    distance to afx's render (pedalboard, float32 recursion) is pedalboard's own round-off."""
    import scipy.signal

    from afxcli.tasks.export import eq_render_coefficients, resolve_setting

    sr = 44100
    worst_render, worst_exact = -math.inf, -math.inf
    for seed in (1, 7, 9):
        peq_trace(tmp_path / "trace.json", sr, seed)
        audio = music(sr, 2, 1.0, seed)
        y = run_ffmpeg(export_preset(tmp_path / "trace.json", "ffmpeg"), audio, sr, tmp_path)
        setting = resolve_setting(tmp_path / "trace.json")
        exact = audio.astype(np.float64)
        for b, a in eq_render_coefficients(setting.chain.effects[0], setting.values[0]):
            exact = scipy.signal.lfilter(b, a, exact, axis=-1)
        render = afx_render(tmp_path / "trace.json", audio)
        err_exact = dbfs(np.abs(y - exact).max())
        err_render = dbfs(np.abs(y - render).max())
        pedalboard_round_off = dbfs(np.abs(exact - render).max())
        assert err_exact <= -100.0
        assert abs(err_render - pedalboard_round_off) <= 0.5
        worst_render, worst_exact = max(worst_render, err_render), max(worst_exact, err_exact)
    print(f"ffmpeg_eq_full_range: vs exact float64 {worst_exact:.1f} dBFS, vs afx render {worst_render:.1f} dBFS")


@needs_ffmpeg
@pytest.mark.parametrize("channels", [1, 2])
def test_ffmpeg_gain_compressor_clip_distortion_match(tmp_path, channels):
    sr = 44100
    effects = [{"type": "gain"}, {"type": "compressor", "label": "comp"}, {"type": "hard_clip"},
               {"type": "distortion"}]
    random_trace(tmp_path / "trace.json", effects, float(sr), n_frames=1, seed=3 + channels)
    af = export_preset(tmp_path / "trace.json", "ffmpeg", channels=channels)
    assert "acompressor=" in af and "asoftclip=type=hard" in af and "asoftclip=type=tanh" in af
    audio = music(sr, channels, 1.0)
    err = np.abs(run_ffmpeg(af, audio, sr, tmp_path) - afx_render(tmp_path / "trace.json", audio)).max()
    print(f"ffmpeg_dynamics_max_abs_error_dbfs_{channels}ch: {dbfs(err):.1f} dBFS")
    assert dbfs(err) <= -90.0


@needs_ffmpeg
def test_ffmpeg_compressor_channel_handling(tmp_path):
    """Default: JUCE's per-channel compressor runs per channel (exact for stereo; mono input comes
    out as two identical, exact channels). channels=1: one linked compressor, exact for mono only."""
    sr = 44100
    src = write_chain(tmp_path / "c.json", [{"type": "compressor", "fixed": {"threshold_db": -30.0, "ratio": 8.0}}])
    stereo = music(sr, 2, 0.5) * np.float32(1.6)  # peaks above full scale must survive (float WAV)
    stereo[1] *= 0.1
    mono = stereo[:1].copy()
    default = export_preset(src, "ffmpeg", sample_rate=sr)
    assert "channelsplit" in default and export_preset(src, "ffmpeg", sample_rate=sr, channels=2) == default
    err = np.abs(run_ffmpeg(default, stereo, sr, tmp_path) - afx_render_spec(src, sr, stereo)).max()
    assert dbfs(err) <= -90.0
    y = run_ffmpeg(default, mono, sr, tmp_path)
    assert y.shape == (2, mono.shape[1])
    assert dbfs(np.abs(y - afx_render_spec(src, sr, mono)).max()) <= -90.0  # both channels
    linked = export_preset(src, "ffmpeg", sample_rate=sr, channels=1)
    assert "channelsplit" not in linked and "link=maximum" in linked
    y = run_ffmpeg(linked, mono, sr, tmp_path)
    assert y.shape == mono.shape and dbfs(np.abs(y - afx_render_spec(src, sr, mono)).max()) <= -90.0
    err = np.abs(run_ffmpeg(linked, stereo, sr, tmp_path) - afx_render_spec(src, sr, stereo)).max()
    print(f"ffmpeg_compressor_linked_on_stereo_max_abs_error_dbfs (approximation): {dbfs(err):.1f} dBFS")
    assert dbfs(err) > -60.0


def afx_render_spec(src: Path, sr: int, audio: np.ndarray) -> np.ndarray:
    spec, _ = load_preset(src)
    chain = Chain(spec, sr)
    return render_chain(chain, audio)


@needs_ffmpeg
@needs_kind("geq")
def test_ffmpeg_graphic_eq_matches_afx_render(tmp_path):
    sr = 48000
    random_trace(tmp_path / "trace.json", [{"type": "geq", "options": {"bands": "octave"}}], float(sr),
                 n_frames=1, seed=11)
    af = export_preset(tmp_path / "trace.json", "ffmpeg")
    audio = music(sr, 2, 1.0)
    err = dbfs(np.abs(run_ffmpeg(af, audio, sr, tmp_path) - afx_render(tmp_path / "trace.json", audio)).max())
    print(f"ffmpeg_geq_max_abs_error_dbfs: {err:.1f} dBFS")
    assert err <= -60.0


@needs_ffmpeg
def test_ffmpeg_soft_knee_compressor_is_an_approximation_that_runs(tmp_path):
    sr = 44100
    src = write_chain(tmp_path / "c.json", [{"type": "compressor_soft", "fixed": {
        "threshold_db": -24.0, "ratio": 4.0, "knee_db": 6.0, "attack_ms": 5.0, "release_ms": 80.0, "makeup_db": 3.0}}])
    af = export_preset(src, "ffmpeg", sample_rate=sr)
    assert f"knee={10 ** (6.0 / 20.0)!r}:" in af and "link=maximum" in af and "volume=3dB" in af
    audio = music(sr, 2, 1.0)
    y = run_ffmpeg(af, audio, sr, tmp_path)
    ref = afx_render_spec(src, sr, audio)
    err = np.abs(y - ref).max()
    print(f"ffmpeg_compressor_soft_max_abs_error_dbfs (approximation): {dbfs(err):.1f} dBFS")
    assert np.all(np.isfinite(y)) and err < 0.5 * np.abs(ref).max()


@needs_ffmpeg
def test_ffmpeg_gate_and_limiter_approximations_run(tmp_path):
    sr = 48000
    src = write_chain(tmp_path / "c.json", [
        {"type": "gate", "fixed": {"threshold_db": -30.0, "ratio": 4.0}},
        {"type": "limiter", "fixed": {"ceiling_db": -3.0}, "options": {"true_peak": False}}])
    af = export_preset(src, "ffmpeg", sample_rate=sr)
    assert "agate=" in af and "alimiter=" in af and "level=disabled" in af
    audio = music(sr, 2, 1.0) * np.float32(1.5)
    y = run_ffmpeg(af, audio, sr, tmp_path)
    ref = afx_render_spec(src, sr, audio)
    assert y.shape == audio.shape and np.all(np.isfinite(y))
    assert np.abs(y).max() <= 10 ** (-3 / 20) + 1e-3  # alimiter holds the ceiling too
    print(f"ffmpeg_gate_limiter_max_abs_error_dbfs (approximation): {dbfs(np.abs(y - ref).max()):.1f} dBFS")


def test_ffmpeg_refuses_effects_without_equivalent(tmp_path):
    src = write_chain(tmp_path / "c.json", [{"type": "gain"}, {"type": "clipper", "label": "warm"}])
    with pytest.raises(AfxError, match="'warm' \\(clipper\\) has no ffmpeg equivalent") as e:
        export_preset(src, "ffmpeg")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------
# pedalboard snippet
# ------------------------------------------------------------------------------------------------
def _snippet_effects() -> list:
    effects = [{"type": "gain"}]
    if "peq" in REGISTRY:
        effects.append({"type": "peq", "label": "eq", "options": {"n_peaks": 2}})
    effects += [{"type": "compressor", "label": "comp"}, {"type": "gate"}, {"type": "clipper", "label": "sat"},
                {"type": "distortion"}, {"type": "hard_clip"}, {"type": "limiter"}]
    return effects


def test_pedalboard_snippet_runs_and_reproduces_render(tmp_path):
    sr = 44100
    random_trace(tmp_path / "trace.json", _snippet_effects(), float(sr), n_frames=5, seed=7)
    script = tmp_path / "preset.py"
    text = export_preset(tmp_path / "trace.json", "pedalboard", script)
    assert script.read_text() == text
    assert "pedalboard.Compressor(" in text and "pedalboard.BrickwallLimiter(" in text
    assert "create('clipper'" in text  # no built-in: afx renders it in the script
    gain_db = json.loads(export_preset(tmp_path / "trace.json", "json"))["params"]["gain.gain_db"]
    assert f"pedalboard.Gain(gain_db={gain_db!r})" in text  # afx's values verbatim, not read back
    audio = music(sr, 2, 1.0)
    sf.write(tmp_path / "in.wav", audio.T, sr, subtype="FLOAT")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "in.wav"), str(tmp_path / "out.wav")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    y, sr_out = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    # afx's render of the same static setting (the median of the trace), via its JSON preset
    export_preset(tmp_path / "trace.json", "json", tmp_path / "median.json")
    ref = afx_render(tmp_path / "median.json", audio)
    err = np.abs(y.T - ref).max()
    print(f"pedalboard_snippet_max_abs_diff: {err:.3g}")
    assert sr_out == sr and y.T.shape == ref.shape and err <= 1e-6


# ------------------------------------------------------------------------------------------------
# EasyEffects
# ------------------------------------------------------------------------------------------------
@needs_kind("peq")
def test_easyeffects_preset(tmp_path):
    effects = [{"type": "gain", "fixed": {"gain_db": -2.0}},
               {"type": "peq", "label": "eq", "options": {"n_peaks": 3}},
               {"type": "compressor", "fixed": {"threshold_db": -18.0, "ratio": 3.0, "attack_ms": 10.0,
                                                "release_ms": 120.0, "makeup_db": 2.0}},
               {"type": "gate", "fixed": {"threshold_db": -55.0, "ratio": 6.0}},
               {"type": "limiter", "fixed": {"ceiling_db": -1.5, "release_ms": 60.0}},
               {"type": "gain", "label": "trim", "fixed": {"gain_db": 1.0}}]
    src = write_chain(tmp_path / "c.json", effects)
    out = tmp_path / "ee.json"
    text = export_preset(src, "easyeffects", out, sample_rate=48000)
    data = json.loads(out.read_text())
    assert json.loads(text) == data
    o = data["output"]
    assert o["blocklist"] == []
    assert o["plugins_order"] == ["equalizer#0", "compressor#0", "expander#0", "limiter#0"]
    eq = o["equalizer#0"]
    chain = Chain({"effects": effects}, 48000)
    sections = chain.effects[1].biquad_sections(chain.base_values()[1])
    assert eq["num-bands"] == len(sections) == 5 and eq["input-gain"] == -2.0
    assert [eq["left"][f"band{i}"]["type"] for i in range(5)] == ["Lo-shelf", "Bell", "Bell", "Bell", "Hi-shelf"]
    for i, s in enumerate(sections):
        band = eq["left"][f"band{i}"]
        assert band == eq["right"][f"band{i}"]
        assert (band["frequency"], band["gain"], band["q"]) == (s["freq_hz"], s["gain_db"], s["q"])
    comp = o["compressor#0"]
    assert (comp["threshold"], comp["ratio"], comp["attack"], comp["release"], comp["makeup"], comp["knee"]) == \
        (-18.0, 3.0, 10.0, 120.0, 2.0, 0.0)
    assert comp["mode"] == "Downward" and comp["stereo-split"] is True
    assert (o["expander#0"]["threshold"], o["expander#0"]["ratio"]) == (-55.0, 6.0)
    lim = o["limiter#0"]
    assert (lim["threshold"], lim["release"], lim["output-gain"]) == (-1.5, 60.0, 1.0)


@needs_kind("geq")
def test_easyeffects_graphic_eq_third_octave(tmp_path):
    src = write_chain(tmp_path / "g.json", [{"type": "geq", "options": {"bands": "third"},
                                             "fixed": {"band_1000hz_gain_db": 4.5}}])
    eq = json.loads(export_preset(src, "easyeffects", sample_rate=48000))["output"]["equalizer#0"]
    fx = REGISTRY["geq"](48000.0, bands="third")
    assert eq["num-bands"] == len(fx.param_names) <= 32
    bands = [eq["left"][f"band{i}"] for i in range(eq["num-bands"])]
    assert all(b["type"] == "Bell" for b in bands)
    assert [b["gain"] for b in bands if b["frequency"] == 1000.0] == [4.5]
    assert sum(b["gain"] != 0.0 for b in bands) == 1


def test_easyeffects_gain_only_and_refusals(tmp_path):
    src = write_chain(tmp_path / "g.json", [{"type": "gain", "fixed": {"gain_db": 3.0}}])
    o = json.loads(export_preset(src, "easyeffects"))["output"]
    assert o["plugins_order"] == ["equalizer#0"] and o["equalizer#0"]["output-gain"] == 3.0
    assert o["equalizer#0"]["left"]["band0"]["type"] == "Off"
    src = write_chain(tmp_path / "d.json", [{"type": "distortion", "label": "fuzz"}])
    with pytest.raises(AfxError, match="'fuzz' \\(distortion\\) has no EasyEffects equivalent"):
        export_preset(src, "easyeffects")


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
def _one_line_naming(err: AfxError, name: str) -> None:
    msg = str(err)
    assert "\n" not in msg and name in msg, msg


def test_bad_inputs_raise_one_line_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(AfxError) as e:
        export_preset(missing, "json")
    _one_line_naming(e.value, "nope.json")

    notjson = tmp_path / "notjson.json"
    notjson.write_text("{ this is not json")
    with pytest.raises(AfxError) as e:
        export_preset(notjson, "ffmpeg")
    _one_line_naming(e.value, "notjson.json")

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "x": 1}))
    with pytest.raises(AfxError) as e:
        load_preset(other)
    _one_line_naming(e.value, "other.json")

    src = write_chain(tmp_path / "c.json", [{"type": "gain"}])
    with pytest.raises(AfxError) as e:
        export_preset(src, "wav")
    _one_line_naming(e.value, "wav")
    assert all(f in str(e.value) for f in FORMATS)

    random_trace(tmp_path / "t.json", [{"type": "gain"}], 44100.0)
    with pytest.raises(AfxError, match="either --at or --reduce") as e:
        export_preset(tmp_path / "t.json", "json", at=0.5, reduce="median")
    assert "\n" not in str(e.value)
    with pytest.raises(AfxError, match="median") as e:
        export_preset(tmp_path / "t.json", "json", reduce="max")
    with pytest.raises(AfxError, match="--at") as e:
        export_preset(tmp_path / "t.json", "json", at=-1.0)

    # never overwrite the source
    before = (tmp_path / "t.json").read_text()
    with pytest.raises(AfxError, match="overwrite"):
        export_preset(tmp_path / "t.json", "json", tmp_path / "t.json")
    assert (tmp_path / "t.json").read_text() == before

    # a value outside its range, and a parameter the chain does not have
    data = json.loads(before)
    data["params"]["gain.gain_db"] = 99.0
    bad = tmp_path / "bad_range.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(AfxError) as e:
        export_preset(bad, "json")
    _one_line_naming(e.value, "bad_range.json")
    assert "gain_db" in str(e.value)
    data["params"] = {"gain.gain_db": 0.0, "gain.bogus_db": 1.0}
    bad.write_text(json.dumps(data))
    with pytest.raises(AfxError, match="bogus_db") as e:
        export_preset(bad, "json")
    _one_line_naming(e.value, "bad_range.json")

    # output folder missing, or the output is a folder: nothing written, one line
    with pytest.raises(AfxError) as e:
        export_preset(src, "json", tmp_path / "no_dir" / "p.json")
    assert "\n" not in str(e.value)
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(AfxError, match="directory") as e:
        export_preset(src, "json", tmp_path / "a_dir")
    assert "\n" not in str(e.value) and not any((tmp_path / "a_dir").iterdir())


# ------------------------------------------------------------------------------------------------
# VST3 (Debian zam-plugins)
# ------------------------------------------------------------------------------------------------
ZAM = Path("/usr/lib/vst3")


@needs_kind("vst3")
@pytest.mark.skipif(not all((ZAM / f"{n}.vst3").exists() for n in ("ZamCompX2", "ZamComp", "ZaMaximX2")),
                    reason="Debian package zam-plugins not installed (apt-get install zam-plugins)")
def test_pedalboard_snippet_with_vst3_plugins(tmp_path):
    """Stereo (ZamCompX2), mono-only (ZamComp, one instance per channel) and latent (ZaMaximX2)
    plugins: the script
    restores afx's values from the embedded state and reproduces afx's render; .vstpreset files
    are written next to it and restore the same values in a fresh instance."""
    import pedalboard

    effects = [{"type": "gain", "fixed": {"gain_db": 6.0}},
               {"type": "vst3", "label": "zc", "options": {"path": str(ZAM / "ZamCompX2.vst3")},
                "fixed": {"threshold_db": -23.456789, "ratio": 4.321, "attack_ms": 3.21}},
               {"type": "vst3", "label": "zm", "options": {"path": str(ZAM / "ZamComp.vst3")},
                "fixed": {"threshold_db": -18.0, "ratio": 3.0, "makeup_db": 2.0}},
               {"type": "vst3", "label": "max", "options": {"path": str(ZAM / "ZaMaximX2.vst3")},
                "fixed": {"threshold_db": -6.0}}]  # 480 samples of latency
    src = write_chain(tmp_path / "c.json", effects)
    probe = REGISTRY["vst3"](44100.0, path=str(ZAM / "ZamCompX2.vst3"))
    if probe.vstpreset_bytes({"threshold_db": -30.0}) == probe.vstpreset_bytes({"threshold_db": -10.0}):
        pytest.xfail("VST3Effect.vstpreset_bytes ignores the values (DPF plugins update their saved "
                     "state only after processing a block): fix belongs in afxcli/effects/plugin.py")
    script = tmp_path / "preset.py"
    text = export_preset(src, "pedalboard", script, sample_rate=44100)
    assert "pedalboard.load_plugin" in text and "render_effect" not in text
    bundles = {"zc": "ZamCompX2.vst3", "zm": "ZamComp.vst3", "max": "ZaMaximX2.vst3"}
    for label, threshold in (("zc", -23.456789), ("zm", -18.0), ("max", -6.0)):
        fresh = pedalboard.load_plugin(str(ZAM / bundles[label]))
        # (pedalboard's load_preset(file) does not restore ZaMaximX2; assigning preset_data does)
        fresh.preset_data = (tmp_path / f"preset.{label}.vstpreset").read_bytes()
        assert abs(fresh.threshold_db - threshold) < 1e-3
    export_preset(src, "json", tmp_path / "p.json", sample_rate=44100)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for channels in (1, 2):
        audio = music(44100, channels, 0.5)
        sf.write(tmp_path / "in.wav", audio.T, 44100, subtype="FLOAT")
        p = subprocess.run([sys.executable, str(script), str(tmp_path / "in.wav"), str(tmp_path / "out.wav")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
        ref = afx_render(tmp_path / "p.json", audio)
        assert np.abs(ref - 2 * audio).max() > 0.1  # the plugins really compress
        err = np.abs(y.T - ref).max()
        print(f"pedalboard_snippet_vst3_max_abs_diff_{channels}ch: {err:.3g}")
        assert err <= 1e-6
