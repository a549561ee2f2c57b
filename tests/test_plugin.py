"""VST3 plugins as black-box afx effects, tested against the real Debian zam-plugins."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

pedalboard = pytest.importorskip("pedalboard")

from afxcli.effects import create  # noqa: E402
from afxcli.effects.base import make_renderer  # noqa: E402
from afxcli.effects.plugin import PLUGIN_MISSING_REASON, VST3Effect, VST3Renderer  # noqa: E402
from afxcli.errors import AfxError  # noqa: E402

VST3_DIR = "/usr/lib/vst3"
COMP = f"{VST3_DIR}/ZamCompX2.vst3"
GEQ = f"{VST3_DIR}/ZamGEQ31.vst3"
MAXIM = f"{VST3_DIR}/ZaMaximX2.vst3"
SR = 44100

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(p) for p in (COMP, GEQ, MAXIM)), reason=PLUGIN_MISSING_REASON)


def music(seconds: float = 0.5, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Sines + decaying noise bursts with sharp attacks, float32 ``(channels, samples)``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        tone = 0.25 * np.sin(2 * np.pi * (110 * (c + 1)) * t) + 0.1 * np.sin(2 * np.pi * 2750 * t + c)
        env = np.exp(-((t - 0.03) % 0.125) * 40.0) * ((t % 0.125) >= 0.03)
        burst = 0.6 * rng.standard_normal(n) * env
        out.append(tone + burst)
    return np.stack(out).astype(np.float32)


def reference(path: str, values: dict[str, float], x: np.ndarray, sr: int = SR) -> np.ndarray:
    """One-shot pedalboard render with each value set through the plugin's own text parser
    (pedalboard's attribute setter snaps some values to its 1000-step scan grid)."""
    plug = pedalboard.load_plugin(path)
    params = plug.parameters
    for attr, v in values.items():
        par = params[attr]
        par.raw_value = par.get_raw_value_for_text(f"{v:.6f}")
    return plug(x, sr)


def stream(renderer, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``x`` in chunks (sizes cycle), flush the latency and align (renderer contract)."""
    outs, i, k = [], 0, 0
    while i < x.shape[-1]:
        s = sizes[k % len(sizes)]
        outs.append(renderer.process(x[:, i:i + s], reset=False))
        i, k = i + s, k + 1
    lat = renderer.latency_samples
    n = x.shape[-1]
    need = n + (lat if renderer.delays_stream else 0)
    got = sum(o.shape[-1] for o in outs)
    while got < need:
        o = renderer.process(np.zeros((x.shape[0], min(sizes[0], need - got)), np.float32))
        outs.append(o)
        got += o.shape[-1]
    y = np.concatenate(outs, axis=-1)
    return y[:, lat:lat + n] if renderer.delays_stream else y[:, :n]


@pytest.fixture(scope="module")
def comp():
    return create("vst3", SR, path=COMP)


@pytest.fixture(scope="module")
def geq():
    return create("vst3", SR, path=GEQ)


@pytest.fixture(scope="module")
def maxim():
    return create("vst3", SR, path=MAXIM)


def render(fx, x: np.ndarray, values: dict[str, float]) -> np.ndarray:
    with torch.no_grad():
        return fx(torch.from_numpy(x)[None], fx.values_to_tensor(values))[0].numpy()


# ----- specs ------------------------------------------------------------------------------------
def test_compx2_specs_are_the_controls_without_meters(comp):
    assert isinstance(comp, VST3Effect) and comp.differentiable is False
    specs = {s.name: s for s in comp.specs}
    assert set(specs) == {"attack_ms", "release_ms", "knee_db", "ratio", "threshold_db", "makeup_db", "slew"}
    assert (specs["threshold_db"].min, specs["threshold_db"].max, specs["threshold_db"].default) == (-80.0, 0.0, 0.0)
    assert (specs["attack_ms"].min, specs["attack_ms"].max) == (0.1, 100.0)
    assert specs["attack_ms"].default == pytest.approx(10.0, abs=1e-4)
    assert specs["attack_ms"].scale == "log" and specs["release_ms"].scale == "log"
    assert specs["ratio"].scale == "log" and specs["ratio"].unit == ":1" and specs["ratio"].default == pytest.approx(4.0)
    assert specs["threshold_db"].scale == "lin" and specs["threshold_db"].unit == "dB"
    d = comp.describe()
    for meter in ("gain_reduction_db", "output_level_db", "sidechain", "current_program"):
        assert meter in d["excluded"]
    assert d["switches"] == {"stereo_detection": [0.0, 1.0]}
    assert d["plugin_params"]["threshold_db"] == "threshold_db"


def test_geq31_specs_prefix_digit_names_and_mono(geq):
    names = geq.param_names
    # the VST3 build exposes 29 band gains (32 Hz ... 20801 Hz) and the master gain
    assert len(names) == 30 and names[0] == "master_gain_db"
    bands = names[1:]
    assert bands[0] == "p_32hz_db" and bands[-1] == "p_20801hz_db" and "p_999hz_db" in bands and all(b.startswith("p_") for b in bands)
    assert all(s.unit == "dB" and s.scale == "lin" and (s.min, s.max, s.default) == (-12.0, 12.0, 0.0)
               for s in geq.specs[1:])
    d = geq.describe()
    assert d["plugin"]["channels"].startswith("mono")
    assert d["plugin_params"]["p_32hz_db"] == "32hz_db"
    assert not any("gain_reduction" in n or "output_level" in n for n in names)


def test_maximx2_specs_and_latency(maxim):
    assert maxim.param_names == ["release_ms", "output_ceiling_db", "threshold_db"]
    assert maxim.spec("output_ceiling_db").default == 0.0
    d = maxim.describe()
    assert {"gain_reduction_db", "output_level_db", "latency_frames"} <= set(d["excluded"])
    assert d["plugin"]["latency_samples"] == 480 == maxim.latency_samples
    r = maxim.make_renderer({})
    assert r.delays_stream is False  # pedalboard 0.9.26 withholds VST3 latency in streaming


def test_frequency_ranges_follow_the_sample_rate():
    fx = create("vst3", 16000, path=f"{VST3_DIR}/ZamEQ2.vst3")
    assert fx.spec("frequency_h_hz").max == pytest.approx(0.45 * 16000)
    assert fx.spec("frequency_h_hz").scale == "log" and fx.spec("boost_cut_1_db").scale == "lin"
    assert fx.spec("frequency_h_hz").default == pytest.approx(7200.0)  # 8 kHz default clipped


def test_describe_is_json_with_path_and_specs(comp):
    d = json.loads(json.dumps(comp.describe()))
    assert d["type"] == "vst3" and d["options"]["path"] == COMP and d["plugin"]["path"] == COMP
    assert [p["name"] for p in d["params"]] == comp.param_names
    assert d["plugin"]["name"] == "ZamCompX2"


# ----- errors -----------------------------------------------------------------------------------
def test_load_errors_are_one_line_and_name_the_path(tmp_path):
    with pytest.raises(AfxError, match="not found: /nonexistent/X.vst3"):
        create("vst3", SR, path="/nonexistent/X.vst3")
    bogus = tmp_path / "Bogus.vst3"
    bogus.write_text("not a plugin")
    with pytest.raises(AfxError) as e:
        create("vst3", SR, path=str(bogus))
    assert str(bogus) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AfxError, match="path"):
        create("vst3", SR)


def test_values_are_validated_and_fixed_option(comp):
    with pytest.raises(AfxError, match="threshold_db"):
        comp.check_values({"threshold_db": 5.0})
    with pytest.raises(AfxError, match="gain_reduction_db"):
        create("vst3", SR, path=COMP, fixed={"gain_reduction_db": 3.0})
    with pytest.raises(AfxError, match="stereo_detection"):
        create("vst3", SR, path=COMP, fixed={"stereo_detection": 7})
    fx = create("vst3", SR, path=COMP, fixed={"stereo_detection": 1, "slew": 20.0})
    assert "slew" not in fx.param_names and fx.describe()["options"]["fixed"] == {"stereo_detection": 1, "slew": 20.0}
    r = fx.make_renderer({})
    r.process(np.zeros((2, 64), np.float32))
    inst = r.instances[0]
    shown = {cp.name: cp.string_value for cp in inst._parameters}
    assert float(shown["Slew"]) == pytest.approx(20.0, abs=1e-4)
    assert float(shown["Stereo Detection"]) == 1.0


# ----- rendering --------------------------------------------------------------------------------
def test_setting_values_changes_output_and_matches_pedalboard(comp):
    x = music()
    vals = {"threshold_db": -30.0, "ratio": 8.0, "attack_ms": 2.0, "release_ms": 60.0, "makeup_db": 3.0}
    y = render(comp, x, vals)
    y0 = render(comp, x, {})
    assert y.shape == x.shape and y.dtype == np.float32
    # default ZamCompX2 (threshold 0 dB) only touches the bursts' peaks; -30 dB compresses all
    rms = lambda a: 20 * np.log10(np.sqrt(np.mean(a ** 2)))  # noqa: E731
    assert rms(y0) > rms(x) - 0.5 and rms(y) < rms(y0) - 3.0
    assert np.abs(y - reference(COMP, vals, x)).max() <= 1e-6
    # the renderer reads every value back from the plugin
    r = comp.make_renderer(vals)
    r.process(x[:, :64])
    shown = comp.plugin_values(r.instances[0])
    for k, v in vals.items():
        assert shown[k] == pytest.approx(v, abs=1e-4)


def test_mono_geq31_runs_per_channel_on_stereo(geq):
    x = music()
    vals = {"p_126hz_db": 12.0, "p_2514hz_db": -12.0, "master_gain_db": -3.0}
    y = render(geq, x, vals)
    assert y.shape == x.shape
    assert np.abs(y - x).max() > 0.05
    for c in range(2):
        ref = reference(GEQ, {"126hz_db": 12.0, "2514hz_db": -12.0, "master_gain_db": -3.0}, x[c:c + 1])
        assert np.abs(y[c] - ref[0]).max() <= 1e-6
    # channels are independent instances: swapping the input swaps the output
    ys = render(geq, x[::-1].copy(), vals)
    assert np.abs(ys - y[::-1]).max() <= 1e-7


def test_stereo_plugin_on_mono_input(comp):
    x = music(channels=1)
    vals = {"threshold_db": -30.0, "ratio": 6.0}
    y = render(comp, x, vals)
    assert y.shape == x.shape
    ref = reference(COMP, vals, np.concatenate([x, x]))
    assert np.abs(y[0] - ref.mean(0)).max() <= 1e-6


def test_latent_maximx2_streaming_equals_one_shot_with_exact_length(maxim):
    x = music(0.6)
    vals = {"threshold_db": -12.0, "release_ms": 30.0, "output_ceiling_db": -1.0}
    y = render(maxim, x, vals)
    ref = reference(MAXIM, vals, x)  # pedalboard's one-shot call compensates the latency
    assert y.shape == x.shape
    assert np.abs(y - ref).max() <= 1e-6
    assert np.abs(y).max() <= 10 ** (-1.0 / 20) + 1e-4 and np.abs(y - x).max() > 0.05
    for sizes in ([512], [100], [1000, 37, 4096], [x.shape[-1]]):
        r = maxim.make_renderer(vals)
        ys = stream(r, x, sizes)
        assert ys.shape == x.shape
        assert np.abs(ys - y).max() <= 1e-6, sizes
    # alignment: a lone click comes out at its own sample (threshold 0 dB: unity gain)
    click = np.zeros((2, 8000), np.float32)
    click[:, 3000] = 0.5
    yc = stream(maxim.make_renderer({}), click, [256])
    assert int(np.argmax(np.abs(yc[0]))) == 3000 and yc[0, 3000] == pytest.approx(0.5, abs=1e-4)


def test_chain_renderer_integration(maxim):
    from afxcli.render import render_effect

    x = music(0.4)
    vals = {"threshold_db": -9.0, "release_ms": 20.0, "output_ceiling_db": -0.5}
    y = render_effect(maxim, x, vals)
    assert y.shape == x.shape and np.abs(y - render(maxim, x, vals)).max() <= 1e-6
    blocks = [dict(vals, threshold_db=float(t)) for t in np.linspace(-3.0, -15.0, (x.shape[-1] + 255) // 256)]
    yb = render_effect(maxim, x, blocks=blocks, block_size=256)
    p = torch.tensor([[[b[n] for b in blocks] for n in maxim.param_names]], dtype=torch.float64)
    with torch.no_grad():
        yt = maxim(torch.from_numpy(x)[None], p, block_size=256)[0].numpy()
    assert yb.shape == x.shape and np.abs(yb - yt).max() <= 1e-6


def test_time_varying_params_per_block(comp):
    x = music()
    n, bs = x.shape[-1], 2205
    nb = -(-n // bs)
    thr = np.linspace(0.0, -40.0, nb)
    p = comp.values_to_tensor({"ratio": 10.0}, dtype=torch.float64).unsqueeze(-1).repeat(1, 1, nb)
    p[0, comp.param_names.index("threshold_db")] = torch.from_numpy(thr)
    with torch.no_grad():
        y = comp(torch.from_numpy(x)[None], p, block_size=bs)[0].numpy()
    r = comp.make_renderer({"ratio": 10.0})
    outs = []
    for k in range(nb):
        r.set_values({"ratio": 10.0, "threshold_db": float(thr[k])})
        outs.append(r.process(x[:, k * bs:(k + 1) * bs]))
    assert np.abs(y - np.concatenate(outs, -1)).max() <= 1e-7
    # early blocks (threshold near 0 dB) barely touch the audio, late ones (-40 dB) compress it
    assert np.abs(y[:, :bs] - x[:, :bs]).max() < 0.03 and np.abs(y[:, -bs:] - x[:, -bs:]).max() > 0.2


def test_per_item_instances_have_independent_state():
    fx = create("vst3", SR, path=COMP)
    loud, quiet = music(seed=1), 0.05 * music(seed=2)
    vals = {"threshold_db": -40.0, "ratio": 10.0, "release_ms": 500.0, "attack_ms": 1.0}
    p = fx.values_to_tensor(vals, batch=2)
    with torch.no_grad():
        both = fx(torch.from_numpy(np.stack([loud, quiet])), p).numpy()
        alone = fx(torch.from_numpy(quiet)[None], p[:1]).numpy()
        again = fx(torch.from_numpy(np.stack([loud, quiet])), p).numpy()  # pooled instances reused
    assert np.abs(both[1] - alone[0]).max() == 0.0
    assert np.abs(again - both).max() == 0.0
    # a shared instance would carry the loud item's 500 ms release into the quiet one
    r = fx.make_renderer(vals)
    r.process(loud)
    carried = r.process(quiet)
    assert np.abs(carried - alone[0]).max() > 1e-3


def test_no_gradient_and_deepcopy(comp):
    x = torch.from_numpy(music(0.1))[None].requires_grad_(True)
    p = comp.values_to_tensor({"threshold_db": -20.0}).requires_grad_(True)
    y = comp(x, p)
    assert not y.requires_grad and y.dtype == x.dtype
    fx2 = copy.deepcopy(comp)
    assert fx2.param_names == comp.param_names
    assert torch.equal(fx2(x.detach(), p.detach()), y)


def test_vstpreset_restores_values(comp, tmp_path):
    vals = {"threshold_db": -27.5, "ratio": 5.0, "attack_ms": 3.3, "release_ms": 120.0, "makeup_db": 4.0}
    data = comp.vstpreset_bytes(vals)
    assert data[:4] == b"VST3"
    x = music(0.3)
    want = render(comp, x, vals)
    # assigning preset_data
    a = pedalboard.load_plugin(COMP)
    a.preset_data = data
    got = comp.plugin_values(a)
    for k, v in vals.items():
        assert got[k] == pytest.approx(v, abs=1e-4)
    assert np.abs(a(x, SR) - want).max() <= 1e-6
    # a .vstpreset file
    f = tmp_path / "comp.vstpreset"
    f.write_bytes(data)
    b = pedalboard.load_plugin(COMP)
    b.load_preset(str(f))
    assert comp.plugin_values(b) == got
    # defaults differ, so the preset really carried the values
    assert comp.plugin_values(pedalboard.load_plugin(COMP))["threshold_db"] == 0.0


def test_renderer_via_make_renderer(maxim):
    r = make_renderer(maxim, {"threshold_db": -6.0})
    assert isinstance(r, VST3Renderer) and r.latency_samples == 480
    out = r.process(np.zeros((2, 1000), np.float32))
    assert out.shape == (2, 520)  # the latency is withheld at the start of the stream


@pytest.mark.skipif(not os.path.exists(f"{VST3_DIR}/ZamTube.vst3"), reason=PLUGIN_MISSING_REASON)
def test_plugin_reinstantiated_on_reset_keeps_values():
    # pedalboard re-instantiates ZamTube on reset() (its reset keeps audio); pooled instances are
    # reset before reuse, so the renderer must look its parameter objects up again
    fx = create("vst3", SR, path=f"{VST3_DIR}/ZamTube.vst3")
    x = torch.from_numpy(0.3 * music(0.2))[None]
    p = fx.values_to_tensor({"tube_drive": 6.0, "treble": 9.0})
    with torch.no_grad():
        first = fx(x, p)
        second = fx(x, p)  # reuses the pooled (reset, re-instantiated) instances
        default = fx(x, fx.values_to_tensor({}))
    assert torch.equal(first, second)
    assert (first - default).abs().max() > 1e-3


def test_process_in_a_worker_thread_after_preload():
    import threading

    fx = create("vst3", SR, path=COMP)
    x = torch.from_numpy(music(0.2))[None]
    p = fx.values_to_tensor({"threshold_db": -25.0, "ratio": 4.0})
    with torch.no_grad():
        want = fx(x, p)
    fx.preload(2)  # pedalboard loads plugins on the main thread only
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("y", fx(x, p)))
    t.start()
    t.join()
    assert torch.equal(got["y"], want)
