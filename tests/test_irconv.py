"""Static EQs on long audio render by FFT convolution with their twin's impulse response
(afxcli.dsp.irconv, afxcli.render.render_by_impulse_response)."""
import numpy as np
import pedalboard
import pytest
import torch

from afxcli.dsp.biquad import SECTION_KINDS, juce_coefficients_f32
from afxcli.dsp.irconv import fft_convolve, sections_impulse_response
from afxcli.effects import create
from afxcli.effects.chain import Chain
from afxcli.filters import BlockIIR, juce_sections_f32, sos_response_db
from afxcli.render import IR_RENDER_MIN_SAMPLES, render_chain, render_effect
from afxcli.trace import ParameterTrace


def _recursion_f64(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample-by-sample float64 recursion of the cascade (the reference the convolution must equal)."""
    y = x.astype(np.float64)
    for s in sos:
        f = BlockIIR(s[:3], s[3:], 32)
        pad = -y.shape[1] % 32
        out, _ = f.process(np.pad(y, ((0, 0), (0, pad))), f.zero_state(y.shape[0]))
        y = out[:, :y.shape[1]]
    return y


def _music(n: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100.0
    x = 0.3 * np.sin(2 * np.pi * 55.0 * t) + 0.2 * np.sin(2 * np.pi * 440.0 * t * (1 + 0.01 * np.sin(t)))
    x = x[None] + 0.05 * rng.standard_normal((channels, n))
    return (x * (0.5 + 0.5 * (np.sin(2 * np.pi * 2.0 * t) > 0))).astype(np.float32)


def test_numpy_twin_coefficients_give_the_numba_replicas_response():
    rng = np.random.default_rng(3)
    for sr in (16000, 44100, 96000):
        kinds = rng.choice(["peak", "low_shelf", "high_shelf"], 300)
        freq = np.exp(rng.uniform(np.log(20.0), np.log(0.45 * sr), 300))
        gain, q = rng.uniform(-24, 24, 300), np.exp(rng.uniform(np.log(0.3), np.log(10.0), 300))
        mine = juce_sections_f32(list(zip(kinds, freq, gain, q)), sr)
        ref = juce_coefficients_f32([SECTION_KINDS[k] for k in kinds], sr, freq, q, gain).astype(np.float64)
        assert np.max(np.abs(mine[:, [0, 1, 2, 4, 5]] - ref)) < 1e-5
        grid = np.geomspace(10.0, 0.49 * sr, 400)
        for a, b in zip(mine, ref):
            rb = np.array([b[0], b[1], b[2], 1.0, b[3], b[4]])
            assert np.max(np.abs(sos_response_db(a[None], sr, grid) - sos_response_db(rb[None], sr, grid))) < 1e-3


def test_impulse_response_decays_and_convolution_equals_the_float64_recursion():
    geq = create("geq", 44100, bands="third", shelves=True)
    rng = np.random.default_rng(0)
    values = {k: float(rng.uniform(-12, 12)) for k in geq.param_names}
    sos = geq.twin_sections(values)
    h = sections_impulse_response(sos)
    assert h is not None and 1000 < h.size < (1 << 17)
    x = _music(1 << 16)
    y = fft_convolve(x, h)
    ref = _recursion_f64(sos, x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y - ref)) < 2e-6 * max(1.0, float(np.max(np.abs(ref))))
    # a pole on the unit circle never decays: no response (the caller runs the twin)
    assert sections_impulse_response(np.array([[1.0, 0.0, 0.0, 1.0, -2.0, 1.0]]), max_samples=1 << 15) is None


@pytest.mark.parametrize("kind,options,sr", [("geq", {"bands": "third", "shelves": True}, 44100),
                                             ("peq", {}, 48000), ("geq", {"bands": "octave"}, 16000)])
def test_long_static_eq_render_is_the_twin_filter_without_its_float32_recursion_noise(kind, options, sr):
    fx = create(kind, sr, **options)
    rng = np.random.default_rng(7)
    values = {s.name: float(rng.uniform(s.min, s.max)) if s.name.endswith("gain_db") else float(s.default)
              for s in fx.specs}
    n = IR_RENDER_MIN_SAMPLES + 1234
    x = _music(n, seed=2)
    y = render_effect(fx, x, values)
    ref = _recursion_f64(fx.twin_sections(values), x)
    pb = pedalboard.Pedalboard(fx.to_pedalboard(fx.check_values(values)))(x, sr)
    peak = float(np.max(np.abs(ref)))
    assert y.shape == x.shape
    assert np.max(np.abs(y - ref)) < 2e-6 * max(peak, 1.0)          # the exact filter
    assert np.max(np.abs(y - pb)) < 2e-3 * max(peak, 1.0)           # pedalboard: its own float32 rounding
    # a short render still runs the twin itself
    short = x[:, :IR_RENDER_MIN_SAMPLES // 2]
    np.testing.assert_array_equal(render_effect(fx, short, values),
                                  pedalboard.Pedalboard(fx.to_pedalboard(fx.check_values(values)))(short, sr))


def test_automated_chain_with_a_static_eq_renders_as_the_effects_in_series():
    """A constant stage (the matched EQ of afx master) convolves on its own; the automated effects
    after it still stream block by block: the same samples as rendering the effects one by one."""
    sr = 44100
    spec = {"effects": [{"type": "geq", "options": {"bands": "third", "shelves": True}},
                        {"type": "peq"}, {"type": "compressor"}]}
    chain = Chain(spec, sr)
    x = _music(IR_RENDER_MIN_SAMPLES + 5000, seed=4)
    rng = np.random.default_rng(5)
    geq_vals = {k: float(rng.uniform(-6, 6)) for k in chain.effects[0].param_names}
    hop = 1024
    frames = -(-x.shape[1] // hop)
    base = Chain.flatten(chain.labels, chain.base_values())
    params = {k: np.full(frames, v) for k, v in base.items()}
    for k, v in geq_vals.items():
        params[f"{chain.labels[0]}.{k}"] = np.full(frames, v)
    lab_eq, lab_comp = chain.labels[1], chain.labels[2]
    params[f"{lab_eq}.peak1_gain_db"] = np.linspace(-6, 6, frames)
    params[f"{lab_comp}.threshold_db"] = np.linspace(-30, -10, frames)
    tr = ParameterTrace(chain.spec, sr, hop, params)
    y = render_chain(chain, x, tr, block_size=hop)
    # the same by parts: the static stage alone (its own static render), then the automated two
    first = render_effect(chain.effects[0], x, geq_vals)
    rest = Chain({"effects": spec["effects"][1:]}, sr)
    tr_rest = ParameterTrace(rest.spec, sr, hop, {k.replace(lab_eq, rest.labels[0]).replace(lab_comp, rest.labels[1]): v
                                                   for k, v in params.items() if not k.startswith(chain.labels[0] + ".")})
    y2 = render_chain(rest, first, tr_rest, block_size=hop)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("batch", [1 << 14, 1 << 20])
def test_convolution_in_batches_equals_direct_convolution_at_every_edge(monkeypatch, batch):
    """Batches of frames cut from the input with their own zero padding (one frame per batch, or
    all in one) give the causal convolution, cut to the input's length, at the start, at every
    batch edge and at the end."""
    import afxcli.dsp.irconv as irconv

    monkeypatch.setattr(irconv, "CONVOLVE_BATCH_SAMPLES", batch)
    rng = np.random.default_rng(3)
    h = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 400.0)
    x = rng.standard_normal((2, 200_003)).astype(np.float32)
    y = irconv.fft_convolve(x, h)
    ref = np.stack([np.convolve(ch.astype(np.float64), h)[:x.shape[1]] for ch in x])
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y - ref)) < 1e-5 * float(np.max(np.abs(ref)))
