"""The stateful black-box layer (DeepAFx §2.3): frames equal one long render, perturbation renders
never disturb the main instances, parallel workers change nothing, slots swap to fresh state."""
from __future__ import annotations

import os

import numpy as np
import pytest

from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.grad.blackbox import BlackBoxLayer, StatelessRenderer, chain_values
from afxcli.render import render_chain, render_effect

SR = 44100
FRAME = 2205  # 50 ms
N_FRAMES = 4
ZAMCOMP = "/usr/lib/vst3/ZamCompX2.vst3"
ZAMAXIM = "/usr/lib/vst3/ZaMaximX2.vst3"

PB_CHAIN = {"effects": [{"type": "peq", "options": {"n_peaks": 1}},
                        {"type": "compressor"},
                        {"type": "limiter", "free": ["ceiling_db"]}]}


def clips(batch: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(batch, channels, N_FRAMES * FRAME)`` float32: tone bursts in noise, loud enough to compress."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_FRAMES * FRAME) / SR
    out = np.empty((batch, channels, t.size), np.float32)
    for b in range(batch):
        for c in range(channels):
            f = rng.uniform(100, 2000)
            env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 8) * t)
            out[b, c] = 0.8 * env * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)
    return out


def frames_through(layer: BlackBoxLayer, x: np.ndarray, qs: list[np.ndarray], perturb_rng=None) -> np.ndarray:
    """Feed ``x`` frame by frame (values ``qs[k]`` for frame ``k``); optionally a ± render per frame."""
    ys = []
    for k in range(N_FRAMES):
        xf = np.ascontiguousarray(x[..., k * FRAME:(k + 1) * FRAME])
        ys.append(layer.render(xf, qs[k]))
        if perturb_rng is not None:
            d = perturb_rng.uniform(-0.2, 0.2, qs[k].shape)
            layer.render_perturbed(xf, np.clip(qs[k] + d, 0, 1), np.clip(qs[k] - d, 0, 1))
    return np.concatenate(ys, axis=-1)


def delayed(y: np.ndarray, lat: int) -> np.ndarray:
    """An aligned render as the stream comes out of a renderer with latency ``lat``."""
    return np.concatenate([np.zeros((*y.shape[:-1], lat), np.float32), y[..., :y.shape[-1] - lat]], axis=-1)


def test_frames_equal_long_render_with_latency():
    """Static values, latent chain (pedalboard Limiter, 280 samples at 44.1 kHz): the frames are the
    long render delayed by the latency, to float32 precision."""
    chain = Chain(PB_CHAIN, SR)
    x = clips(2)
    rng = np.random.default_rng(1)
    q = rng.uniform(0.2, 0.8, (2, chain.n_free))
    layer = BlackBoxLayer(chain, SR, batch_size=2)
    y = frames_through(layer, x, [q] * N_FRAMES)
    lat = layer.main[0].stages[-1].renderer.latency_samples
    assert lat > 0
    vals = chain_values(chain, q)
    for m in range(2):
        ref = delayed(render_chain(chain, x[m], vals[m]), lat)
        assert np.abs(y[m] - ref).max() <= 1e-6
    assert np.abs(y[0] - x[0]).max() > 1e-2  # the chain did something
    assert np.all(y[:, :, :lat] == 0)


def test_frames_equal_long_render_time_varying():
    """New values every frame (peq -> compressor): equals one long render automated per block."""
    chain = Chain({"effects": PB_CHAIN["effects"][:2]}, SR)
    x = clips(2, seed=3)
    rng = np.random.default_rng(2)
    qs = [rng.uniform(0.1, 0.9, (2, chain.n_free)) for _ in range(N_FRAMES)]
    layer = BlackBoxLayer(chain, SR, batch_size=2)
    y = frames_through(layer, x, qs)
    per_frame = [chain_values(chain, qk) for qk in qs]  # [frame][item][effect]
    for m in range(2):
        ref = x[m]
        for e, fx in enumerate(chain.effects):
            ref = render_effect(fx, ref, blocks=[per_frame[k][m][e] for k in range(N_FRAMES)], block_size=FRAME)
        assert np.abs(y[m] - ref).max() <= 1e-6
    # a stateless render per frame is different (the compressor state matters): the test has teeth
    fresh = np.concatenate([StatelessRenderer(chain, SR).render(x[..., k * FRAME:(k + 1) * FRAME], qs[k])
                            for k in range(N_FRAMES)], axis=-1)
    assert np.abs(fresh - y).max() > 1e-4


def test_perturbed_renders_leave_main_unchanged_and_workers_agree():
    chain = Chain(PB_CHAIN, SR)
    x = clips(3, seed=5)
    rng = np.random.default_rng(4)
    qs = [rng.uniform(0.1, 0.9, (3, chain.n_free)) for _ in range(N_FRAMES)]
    plain = frames_through(BlackBoxLayer(chain, SR, 3), x, qs)
    with BlackBoxLayer(chain, SR, 3) as layer:
        perturbed = frames_through(layer, x, qs, perturb_rng=np.random.default_rng(0))
        assert layer.n_instances == 9  # 3M (DeepAFx §2.3)
    assert np.array_equal(plain, perturbed)
    with BlackBoxLayer(chain, SR, 3, workers=2) as layer2:
        par = frames_through(layer2, x, qs, perturb_rng=np.random.default_rng(0))
    assert np.array_equal(par, plain)


def test_plus_minus_instances_follow_their_own_trajectory():
    """With the same values as main, the ± instances reproduce main exactly (same frames, same
    state); a perturbation changes their output, and a stateless render of the same frame differs
    from the stateful ± render (their state carried over)."""
    chain = Chain({"effects": PB_CHAIN["effects"][:2]}, SR)
    x = clips(1, seed=7)
    q = np.full((1, chain.n_free), 0.5)
    layer = BlackBoxLayer(chain, SR, 1, pairs=2)
    for k in range(N_FRAMES):
        xf = np.ascontiguousarray(x[..., k * FRAME:(k + 1) * FRAME])
        y = layer.render(xf, q)
        if k == 1:
            continue  # no backward on this frame: the ± instances catch up at the main values
        yp, ym = layer.render_perturbed(xf, np.stack([q, np.clip(q + 0.1, 0, 1)]), np.stack([q, q * 0.9]))
        assert yp.shape == (2, 1, 2, FRAME)
        assert np.array_equal(yp[0], y) and np.array_equal(ym[0], y)
        assert np.abs(yp[1] - y).max() > 1e-4
    fresh = StatelessRenderer(chain, SR).render(xf, q)
    assert np.abs(fresh - y).max() > 1e-4


def test_swap_resets_one_slot_only():
    chain = Chain(PB_CHAIN, SR)
    x = clips(2, seed=9)
    q = np.random.default_rng(3).uniform(0.2, 0.8, (2, chain.n_free))
    layer = BlackBoxLayer(chain, SR, 2)
    first = layer.render(np.ascontiguousarray(x[..., :FRAME]), q)
    layer.render(np.ascontiguousarray(x[..., FRAME:2 * FRAME]), q)
    layer.swap(0)
    again = layer.render(np.ascontiguousarray(x[..., :FRAME]), q)
    assert np.array_equal(again[0], first[0])  # slot 0 restarted from a cleared state
    assert not np.array_equal(again[1], first[1])  # slot 1 kept its stream (its third frame now)
    assert list(layer.frames_rendered) == [1, 3]


def test_layer_errors():
    chain = Chain(PB_CHAIN, SR)
    layer = BlackBoxLayer(chain, SR, 2)
    x = clips(2)[..., :FRAME].copy()
    q = np.full((2, chain.n_free), 0.5)
    with pytest.raises(AfxError, match="must follow render"):
        layer.render_perturbed(x, q, q)
    with pytest.raises(AfxError, match="slots"):
        layer.render(x[:1], q[:1])
    layer.render(x, q)
    with pytest.raises(AfxError, match="instance pairs"):
        layer.render_perturbed(x, np.stack([q, q]), np.stack([q, q]))
    with pytest.raises(AfxError, match="must follow render"):
        layer.render_perturbed(x * 0.5, q, q)
    fwd = BlackBoxLayer(chain, SR, 2, pairs=0)  # forward-only: M instances
    assert fwd.n_instances == 2
    assert np.array_equal(fwd.render(x, q), BlackBoxLayer(chain, SR, 2).render(x, q))
    with pytest.raises(AfxError, match="forward-only"):
        fwd.render_perturbed(x, q, q)


def test_stateless_layer_option_and_no_renderer_fallback():
    """``stateful=False`` renders each call fresh (latency compensated); an effect with no renderer
    (taylor_clipper, memoryless) goes through its exact torch form per frame."""
    chain = Chain({"effects": [{"type": "peq", "options": {"n_peaks": 1}}, {"type": "taylor_clipper", "free": []},
                               {"type": "limiter", "free": []}]}, SR)
    x = clips(2, seed=11)
    q = np.random.default_rng(5).uniform(0.2, 0.8, (2, chain.n_free))
    vals = chain_values(chain, q)
    ref = np.stack([render_chain(chain, x[m], vals[m]) for m in range(2)])
    y = BlackBoxLayer(chain, SR, 2, stateful=False).render(x, q)
    assert np.abs(y - ref).max() <= 1e-6
    lat = 280
    stream = frames_through(BlackBoxLayer(chain, SR, 2), x, [q] * N_FRAMES)
    assert np.abs(stream - delayed(ref, lat)).max() <= 1e-6


@pytest.mark.skipif(not os.path.exists(ZAMCOMP), reason=f"{ZAMCOMP} not installed (Debian zam-plugins)")
def test_zamcompx2_layer():
    """A VST3 black box (ZamCompX2): frames equal one long render, ± renders leave main unchanged,
    two workers give the same result as one."""
    chain = Chain({"effects": [{"type": "vst3", "options": {"path": ZAMCOMP},
                                "free": ["threshold_db", "ratio", "attack_ms", "release_ms"]}]}, SR)
    x = clips(2, seed=13)
    q = np.random.default_rng(6).uniform(0.2, 0.8, (2, chain.n_free))
    layer = BlackBoxLayer(chain, SR, 2)
    y = frames_through(layer, x, [q] * N_FRAMES)
    vals = chain_values(chain, q)
    for m in range(2):
        ref = render_chain(chain, x[m], vals[m])
        assert np.abs(y[m] - ref).max() <= 1e-6
    assert np.abs(y - x).max() > 1e-2
    with BlackBoxLayer(chain, SR, 2, workers=2) as layer2:
        y2 = frames_through(layer2, x, [q] * N_FRAMES, perturb_rng=np.random.default_rng(1))
    assert np.array_equal(y2, y)
    layer.close()


@pytest.mark.skipif(not os.path.exists(ZAMAXIM), reason=f"{ZAMAXIM} not installed (Debian zam-plugins)")
def test_latent_vst3_layer():
    """ZaMaximX2 (480 samples of latency at 44.1 kHz): the frames are the long render delayed."""
    chain = Chain({"effects": [{"type": "vst3", "options": {"path": ZAMAXIM}, "free": ["threshold_db"]}]}, SR)
    x = clips(1, seed=17)
    q = np.array([[0.3]])
    layer = BlackBoxLayer(chain, SR, 1)
    y = frames_through(layer, x, [q] * N_FRAMES)
    lat = chain.effects[0].latency_samples
    assert lat > 0
    ref = delayed(render_chain(chain, x[0], chain_values(chain, q)[0]), lat)
    assert np.abs(y[0] - ref).max() <= 1e-6
    assert np.abs(y[0] - delayed(x[0], lat)).max() > 1e-2
    layer.close()
