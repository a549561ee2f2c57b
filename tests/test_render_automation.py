"""Automation renders validate a trace once (afxcli/render.py: check_block_values) and stay
bit-identical to streaming block by block through the effects' validating API."""
from __future__ import annotations

import numpy as np
import pytest

from afxcli.effects.base import PedalboardRenderer
from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.render import check_block_values, render_chain
from afxcli.trace import ParameterTrace, trace_specs

SR = 44100
SPEC = {"effects": [{"type": "peq", "label": "eq"}, {"type": "compressor", "label": "comp"},
                    {"type": "gain", "label": "out"}, {"type": "hard_clip", "label": "clip"},
                    {"type": "limiter", "label": "lim"}]}


def music(seconds: float, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(4)
    t = np.arange(int(seconds * SR)) / SR
    x = np.sin(2 * np.pi * 110 * t) + 0.5 * np.sin(2 * np.pi * 2400 * t) + 0.3 * rng.standard_normal(t.size)
    x = x * (0.2 + np.abs(np.sin(2 * np.pi * 1.5 * t)))
    return (0.5 * np.stack([x, np.roll(x, 7)][:channels]) / np.abs(x).max()).astype(np.float32)


def moving_trace(chain: Chain, n_samples: int, hop: int) -> ParameterTrace:
    """Every parameter sweeps across (most of) its range, frame by frame."""
    n = n_samples // hop + 1
    u = 0.1 + 0.8 * (0.5 + 0.5 * np.sin(np.linspace(0, 5, n)))
    params = {k: s.denormalize(np.roll(u, i)) for i, (k, s) in enumerate(trace_specs(chain).items())}
    return ParameterTrace(chain.spec, SR, hop, params, n_samples=n_samples)


def reference_render(chain: Chain, x: np.ndarray, tr: ParameterTrace, block_size: int) -> np.ndarray:
    """The plain path: per block, ``set_values`` (which validates) on a fresh pedalboard twin."""
    blk = tr.to_blocks(block_size, SR, trace_specs(chain), n_samples=x.shape[1])
    y = x
    for lab, fx in zip(chain.labels, chain.effects):
        blocks = [{n: float(blk.params[f"{lab}.{n}"][b]) for n in fx.param_names} for b in range(blk.n_frames)]
        r = PedalboardRenderer(fx, blocks[0])
        outs = []
        for k, v in enumerate(blocks):
            r.set_values(v)
            outs.append(r.process(y[:, k * block_size:(k + 1) * block_size]))
        lat = r.latency_samples
        while sum(o.shape[1] for o in outs) < x.shape[1]:
            outs.append(r.process(np.zeros((x.shape[0], min(block_size, max(lat, 1))), np.float32)))
        y = np.concatenate(outs, axis=1)[:, :x.shape[1]]
    return y


SPEC_2 = {"effects": [{"type": "geq", "label": "geq"}, {"type": "distortion", "label": "drive"},
                      {"type": "gain", "label": "out"}, {"type": "limiter", "label": "lim"}]}


@pytest.mark.parametrize("threads,pipeline", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("spec,channels,block", [(SPEC, 2, 2048), (SPEC, 1, 512), (SPEC_2, 2, 1024)])
def test_automation_render_is_bit_identical_to_validating_every_block(spec, channels, block, threads, pipeline,
                                                                      monkeypatch):
    """Also with per-channel threads, and with the two-thread pipeline of effects streamed together
    (``_stream_together``): the reference renders the channels together, one effect at a time."""
    import afxcli.render

    monkeypatch.setattr(afxcli.render, "free_cores", lambda: threads)
    monkeypatch.setattr(afxcli.render, "PIPELINE_MIN_SAMPLES", 0 if pipeline else 1 << 40)
    chain = Chain(spec, SR)
    x = music(1.3, channels)
    tr = moving_trace(chain, x.shape[1], 1024)
    got = render_chain(chain, x, tr, block_size=block)
    want = reference_render(chain, x, tr, block)
    assert got.shape == x.shape and np.array_equal(got, want)


def test_check_block_values_equals_check_values_block_by_block():
    fx = Chain(SPEC, SR).effects[1]
    with pytest.raises(AfxError) as want:
        fx.check_values({"threshold_db": -70.0, "ratio": 3.0})
    with pytest.raises(AfxError) as got:
        check_block_values(fx, {"threshold_db": np.array([-20.0, -70.0]), "ratio": 3.0}, 2)
    assert str(got.value) == str(want.value)
    ok = {"threshold_db": np.array([-60.0 - 1e-12, -20.0, 1e-10]), "ratio": 3.0}
    checked = check_block_values(fx, ok, 3)
    for b in range(3):
        one = fx.check_values({"threshold_db": float(ok["threshold_db"][b]), "ratio": 3.0})
        assert {n: float(a[b]) for n, a in checked.items()} == one
    for bad in (np.nan, np.inf):
        with pytest.raises(AfxError, match="threshold_db"):
            check_block_values(fx, {"threshold_db": np.array([-20.0, bad])}, 2)
    with pytest.raises(AfxError, match="unknown parameter"):
        check_block_values(fx, {"thresh": np.zeros(2)}, 2)


def test_static_series_per_channel_threads_equal_one_joint_render(monkeypatch):
    import afxcli.render
    from afxcli.render import render_effect, render_series

    monkeypatch.setattr(afxcli.render, "free_cores", lambda: 2)
    chain = Chain(SPEC, SR)
    x = music(0.8, 2)
    values = [fx.random_values(np.random.default_rng(i)) for i, fx in enumerate(chain.effects)]
    joint = x
    for fx, v in zip(chain.effects, values):
        joint = render_effect(fx, joint, v)
    assert np.array_equal(render_series(chain.effects, values, x), joint)
    assert [fx.channels_independent for fx in chain.effects] == [True, True, True, True, False]
