"""Chains, traces and streaming renders (issue 2: streaming, automation, latency)."""
import json

import numpy as np
import pedalboard
import pytest
import torch

from afxcli.effects.chain import Chain, load_chain_spec, normalize_spec
from afxcli.errors import AfxError
from afxcli.render import render_chain
from afxcli.trace import ParameterTrace, trace_specs

SR = 44100


def music(seconds=1.0, channels=2, sr=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t + 1.0)
    env = np.exp(-((t * 4) % 1.0) * 6.0)
    x = x * (0.3 + env) + 0.1 * env * rng.standard_normal(t.size)
    out = np.stack([x * (1 - 0.2 * c) for c in range(channels)])
    return out.astype(np.float32)


def test_spec_free_fixed_and_ranges():
    spec = {"effects": [
        {"type": "gain", "fixed": {"gain_db": -3.0}},
        {"type": "compressor", "free": {"threshold_db": {"min": -30, "max": -10}, "ratio": {}}},
        {"type": "gain", "label": "trim"},
    ]}
    ch = Chain(spec, SR)
    assert ch.labels == ["gain", "compressor", "trim"]
    assert ch.free_keys == ["compressor.threshold_db", "compressor.ratio", "trim.gain_db"]
    assert ch.free[0].spec.min == -30 and ch.free[0].spec.max == -10
    q = torch.tensor([[0.0, 1.0, 0.5]])
    per = ch.denormalize(q)
    names = ch.effects[1].param_names
    assert per[0][0, 0].item() == -3.0
    assert per[1][0, names.index("threshold_db")].item() == pytest.approx(-30.0)
    assert per[1][0, names.index("ratio")].item() == pytest.approx(ch.effects[1].spec("ratio").max)


@pytest.mark.parametrize("bad", [
    {"effects": []},
    {"effects": [{"type": "nope"}]},
    {"effects": [{"type": "gain", "free": ["nope_db"]}]},
    {"effects": [{"type": "gain", "fixed": {"gain_db": 1e9}}]},
    {"effects": [{"type": "gain", "colour": "red"}]},
])
def test_bad_specs_are_one_line_errors(bad):
    with pytest.raises(AfxError) as e:
        Chain(bad, SR)
    assert "\n" not in str(e.value)


def test_load_chain_spec_errors(tmp_path):
    with pytest.raises(AfxError, match="no such file"):
        load_chain_spec(tmp_path / "missing.json")
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(AfxError, match="x.json"):
        load_chain_spec(p)


def _constant_trace(chain, values, n_frames, hop):
    flat = Chain.flatten(chain.labels, values)
    return ParameterTrace(chain.spec, SR, hop, {k: np.full(n_frames, v) for k, v in flat.items()}, n_samples=n_frames * hop)


def test_constant_trace_streams_identically_to_one_shot():
    x = music(1.0)
    spec = {"effects": [{"type": "gain"}, {"type": "compressor"}]}
    ch = Chain(spec, SR)
    vals = [{"gain_db": 4.0}, {"threshold_db": -24.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 80.0, "makeup_db": 0.0}]
    vals = [fx.check_values(v) for fx, v in zip(ch.effects, vals)]
    one_shot = pedalboard.Pedalboard([pedalboard.Gain(gain_db=4.0),
                                      pedalboard.Compressor(threshold_db=-24.0, ratio=4.0, attack_ms=5.0, release_ms=80.0)])(x, SR)
    tr = _constant_trace(ch, vals, n_frames=x.shape[1] // 256 + 1, hop=256)
    # force the streaming path: perturb nothing but mark the trace non-static by a no-op change
    tr.params["gain.gain_db"][-1] = 4.0
    y_static = render_chain(ch, x, vals)
    from afxcli.render import render_effect
    y_stream = x
    for fx, v in zip(ch.effects, vals):
        y_stream = render_effect(fx, y_stream, blocks=[v] * (x.shape[1] // 256 + 1), block_size=256)
    assert y_static.shape == x.shape == y_stream.shape
    assert np.max(np.abs(y_static - one_shot)) <= 1e-6
    assert np.max(np.abs(y_stream - one_shot)) <= 1e-6


def test_automated_gain_step_lands_on_block_boundary():
    x = np.full((1, 4096), 0.25, np.float32)
    ch = Chain({"effects": [{"type": "gain"}]}, SR)
    hop = 512
    g = np.zeros(8)
    g[3:] = 6.0  # step at frame 3 -> sample 1536
    tr = ParameterTrace(ch.spec, SR, hop, {"gain.gain_db": g}, n_samples=4096)
    y = render_chain(ch, x, tr, block_size=hop)
    ratio = y[0] / x[0]
    assert np.allclose(ratio[:1536], 1.0, atol=1e-6)
    assert np.allclose(ratio[1536:], 10 ** (6 / 20), atol=1e-5)
    # torch twin with the same per-block parameters agrees
    p = torch.tensor(g, dtype=torch.float64).view(1, 1, -1)
    yt = ch.effects[0](torch.from_numpy(x).double().unsqueeze(0), p, block_size=hop)[0].numpy()
    assert np.max(np.abs(yt - y)) < 1e-6


def test_latent_limiter_output_is_aligned_and_full_length():
    x = music(0.7, channels=2) * 3.0
    ch = Chain({"effects": [{"type": "limiter", "options": {"true_peak": True}}]}, SR)
    vals = [ch.effects[0].check_values({"ceiling_db": -1.0})]
    y = render_chain(ch, x, vals)
    assert y.shape == x.shape
    ref = pedalboard.BrickwallLimiter(ceiling_db=-1.0, true_peak=True)(x, SR)
    assert np.max(np.abs(y - ref)) <= 1e-6
    # automation path (streams with flush) also stays aligned
    n = x.shape[1] // 256 + 1
    c = np.full(n, -1.0)
    c[n // 2:] = -2.0
    tr = ParameterTrace(ch.spec, SR, 256, {"limiter.ceiling_db": c}, n_samples=x.shape[1])
    ya = render_chain(ch, x, tr, block_size=256)
    assert ya.shape == x.shape
    half = (n // 2) * 256
    assert np.max(np.abs(ya[:, :half - 512] - ref[:, :half - 512])) <= 1e-6


def test_trace_json_round_trip_and_smoothing(tmp_path):
    ch = Chain({"effects": [{"type": "gain"}, {"type": "compressor"}]}, SR)
    rng = np.random.default_rng(1)
    n = 64
    params = {k: np.full(n, s.default) for k, s in trace_specs(ch).items()}
    params["gain.gain_db"] = rng.uniform(-6, 6, n)
    params["compressor.attack_ms"] = np.exp(rng.uniform(np.log(1), np.log(50), n))
    tr = ParameterTrace(ch.spec, SR, 1024, params, n_samples=n * 1024)
    p = tmp_path / "t.json"
    tr.save(p)
    back = ParameterTrace.load(p)
    assert back.hop == 1024 and back.n_frames == n
    for k in params:
        assert np.array_equal(back.params[k], tr.params[k])
    data = json.loads(p.read_text())
    assert data["format"] == "afx-trace" and data["version"] == 1
    assert isinstance(data["params"]["compressor.ratio"], float)  # constants stored as numbers
    sm = tr.smoothed(trace_specs(ch), cutoff_hz=2.0)
    # smoothing reduces frame-to-frame jumps, keeps ranges, no delay (zero phase: same mean)
    assert np.abs(np.diff(sm.params["gain.gain_db"])).mean() < 0.3 * np.abs(np.diff(params["gain.gain_db"])).mean()
    assert abs(sm.params["gain.gain_db"].mean() - params["gain.gain_db"].mean()) < 0.5
    assert sm.params["compressor.attack_ms"].min() >= 1.0 - 1e-9
    blk = sm.to_blocks(256, specs=trace_specs(ch))
    assert blk.hop == 256 and blk.n_frames == n * 4
    with pytest.raises(AfxError):
        ParameterTrace.from_json({"format": "something-else"})


ZAMAXIM = "/usr/lib/vst3/ZaMaximX2.vst3"


@pytest.mark.skipif(not __import__("os").path.exists(ZAMAXIM),
                    reason="Debian package zam-plugins not installed (apt-get install zam-plugins)")
def test_latent_chain_with_vst3_keeps_length_and_alignment():
    """BrickwallLimiter (true peak) then ZaMaximX2: both latent; a click stays on its sample,
    static and automated renders have the input's exact length."""
    n = 20000
    x = np.zeros((2, n), np.float32)
    x[:, 5000] = 0.25  # below every threshold: both limiters pass it unchanged
    ch = Chain({"effects": [{"type": "limiter", "options": {"true_peak": True}},
                            {"type": "vst3", "options": {"path": ZAMAXIM}}]}, SR)
    maxim = ch.effects[1]
    vals = [ch.effects[0].check_values({"ceiling_db": -0.1}), maxim.check_values({})]
    y = render_chain(ch, x, vals)
    assert y.shape == x.shape
    assert int(np.argmax(np.abs(y[0]))) == 5000
    keys = ch.keys()
    flat = Chain.flatten(ch.labels, vals)
    nb = n // 512 + 1
    params = {k: np.full(nb, v) for k, v in flat.items()}
    params["limiter.ceiling_db"] = np.linspace(-0.1, -0.5, nb)
    tr = ParameterTrace(ch.spec, SR, 512, params, n_samples=n)
    ya = render_chain(ch, x, tr, block_size=512)
    assert ya.shape == x.shape and set(keys) == set(params)
    assert int(np.argmax(np.abs(ya[0]))) == 5000


def test_frequency_overrides_above_the_rate_limit_are_lowered_not_refused():
    """One chain file works at every rate: at 8 kHz (limit 3.6 kHz) the style chain's high bands
    (peak4 4–7 kHz, high shelf 2–7 kHz) shrink to what the rate allows; other bad overrides still fail."""
    from afxcli.errors import AfxError
    from afxcli.train.style import STYLE_CHAIN

    chain = Chain(STYLE_CHAIN, 8000)
    spec = {f.key: f.spec for f in chain.free}
    assert spec["eq.peak4_freq_hz"].min == spec["eq.peak4_freq_hz"].max == 3600.0
    assert (spec["eq.high_shelf_freq_hz"].min, spec["eq.high_shelf_freq_hz"].max) == (2000.0, 3600.0)
    assert spec["eq.peak3_freq_hz"].max == 3600.0 and spec["eq.peak1_freq_hz"].max == 250.0
    assert Chain(STYLE_CHAIN, 44100).free[chain.free_keys.index("eq.peak4_freq_hz")].spec.max == 7000.0
    q = chain.normalize_values(chain.base_values())
    assert bool(torch.isfinite(q).all())
    y = render_chain(chain, (0.1 * np.random.default_rng(0).standard_normal((1, 8000))).astype(np.float32),
                     chain.base_values())
    assert y.shape == (1, 8000) and np.isfinite(y).all()
    with pytest.raises(AfxError, match="ratio"):
        Chain({"effects": [{"type": "compressor", "free": {"ratio": {"max": 500}}}]}, 8000)
    with pytest.raises(AfxError, match="freq"):
        Chain({"effects": [{"type": "peq", "free": {"peak1_freq_hz": {"min": 1.0}}}]}, 8000)
