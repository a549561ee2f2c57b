"""Neural proxies and the NP / NP-HH / NP-FH layers (issue 3, part 4; DeepAFx-ST §2.3, §3.5)."""
import numpy as np
import pytest
import torch

from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.grad.proxy import (FullHybrid, HalfHybrid, NeuralProxy, ProxyConfig, ProxyTCN,
                               full_hybrid, generated_signals, gradient_agreement, half_hybrid, load_proxy,
                               make_proxy_chain_fn, make_proxy_layer, proxy, read_proxy_checkpoint,
                               render_real, save_proxy, train_proxy)
from afxcli.render import render_chain, render_effect

SR = 8000
GAIN_SPEC = [{"type": "gain", "free": {"gain_db": {"min": -12, "max": 12}}}]
COMP_SPEC = [{"type": "compressor", "fixed": {"makeup_db": 0.0},
              "free": {"threshold_db": {"min": -40, "max": -5}, "ratio": {}, "attack_ms": {"min": 1, "max": 20},
                       "release_ms": {"min": 10, "max": 100}}},
             {"type": "gain", "label": "trim", "free": {"gain_db": {"min": -6, "max": 6}}}]
TINY = dict(width=8, kernel_size=3, dilations=(1, 2))
# BE-AFX's sigmoid gain output learns a gain chain reliably (seeds 0-5: 13-105x error drop in 200
# steps; the direct output ranged 3-39x)
TINY_GAIN = dict(TINY, gain_output=True, max_gain_db=12.0)


def randomized(model: ProxyTCN, seed: int = 0) -> ProxyTCN:
    """Non-trivial weights everywhere (FiLM's last layer starts at zero: no dependence on q)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def audio(batch=3, channels=2, n=1024, seed=1):
    rng = np.random.default_rng(seed)
    x = generated_signals(rng, batch * channels, n, SR).reshape(batch, channels, n)
    return torch.from_numpy(x)


def values_of(chain, q_row):
    per = chain.denormalize(q_row.to(torch.float64).unsqueeze(0))
    return [{n: float(v) for n, v in zip(fx.param_names, p[0])} for fx, p in zip(chain.effects, per)]


# ----- model ----------------------------------------------------------------------------------
def test_tcn_shapes_receptive_field_and_causality():
    cfg = ProxyConfig(n_params=2, width=4, kernel_size=3, dilations=(1, 2, 4))
    assert cfg.receptive_field_samples == 1 + 2 * (1 + 2 + 4) == 15
    m = randomized(ProxyTCN(cfg)).eval()
    assert 0 < m.n_weights < 50_000
    x = torch.randn(2, 3, 200)
    q = torch.rand(2, 2)
    y = m(x, q)
    assert y.shape == x.shape
    # causal: an impulse change at n=100 moves outputs only in [100, 100 + RF)
    x2 = x.clone()
    x2[:, :, 100] += 1.0
    d = (m(x2, q) - y).abs().amax(dim=(0, 1))
    assert d[:100].max() == 0 and d[100] > 0 and d[115:].max() == 0
    # each channel is an item: changing channel 0 leaves channel 1 alone
    x3 = x.clone()
    x3[:, 0] *= 2
    assert torch.equal(m(x3, q)[:, 1], y[:, 1])
    # non-causal: centred receptive field
    mn = randomized(ProxyTCN(ProxyConfig(n_params=2, width=4, kernel_size=3, dilations=(1, 2, 4), causal=False))).eval()
    d = (mn(x2, q) - mn(x, q)).abs().amax(dim=(0, 1))
    assert d[:93].max() == 0 and d[93:100].max() > 0 and d[108:].max() == 0


def test_gain_output_and_per_block_parameters():
    cfg = ProxyConfig(n_params=1, gain_output=True, max_gain_db=6.0, **TINY)
    m = randomized(ProxyTCN(cfg)).eval()
    x = torch.randn(2, 1, 256)
    x[:, :, 50:80] = 0
    q = torch.rand(2, 1)
    y = m(x, q)
    assert torch.all(y[:, :, 50:80] == 0)  # ŷ = g·x (BE-AFX §2.1.2)
    assert torch.all((y / torch.where(x == 0, 1.0, x)).abs() <= 10 ** (6 / 20) + 1e-6)
    # per-block q equal to the static q gives the same output; differing blocks change only later samples
    qb = q.unsqueeze(-1).repeat(1, 1, 4)
    assert torch.allclose(m(x, qb, block_size=64), y, atol=1e-6)
    qb[:, :, 2:] = 1 - qb[:, :, 2:]
    yb = m(x, qb, block_size=64)
    assert torch.allclose(yb[..., :128], y[..., :128], atol=1e-6) and not torch.allclose(yb[..., 128:], y[..., 128:])


# ----- training --------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread (and the test machine's cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_reduces_error_against_the_real_effect(tmp_path, one_thread):
    ck = tmp_path / "gain.pt"
    model, hist = train_proxy(GAIN_SPEC, SR, None, steps=200, batch=4, clip_samples=2048, lr=1e-2, seed=0,
                              checkpoint_path=ck, model_config=TINY_GAIN, val_every=100, checkpoint_every=100)
    start, end = hist[0], hist[-1]
    assert start["step"] == 0 and end["step"] == 200
    assert start["val_mae"] / end["val_mae"] >= 5.0, (start["val_mae"], end["val_mae"])
    assert end["val_mae"] < 0.2 * end["identity_mae"]  # better than passing audio through
    ckpt = read_proxy_checkpoint(ck)
    assert ckpt["step"] == 200 and ckpt["sample_rate"] == SR and ckpt["train_config"]["lr"] == 1e-2
    # the proxy against a fresh real render (not the validation set)
    chain = Chain(GAIN_SPEC, SR)
    x = audio(batch=4, channels=1, n=2048, seed=7)
    q = torch.tensor([[0.1], [0.4], [0.7], [0.95]])
    y_real = render_real(chain, x, q)
    with torch.no_grad():
        err = (model(x, q) - y_real).abs().mean() / y_real.abs().mean()
    assert err < 0.2, float(err)
    # its NP-FH gradient points where the real effect's finite-difference gradient points
    ga = gradient_agreement(model, chain, n_items=6, clip_samples=1024, seed=1)
    assert ga["grad_sign_agreement"] == 1.0 and ga["grad_cosine"] == 1.0, ga


def _crashing(after_calls):
    calls = {"n": 0}

    def source(rng, n, t, split="train"):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise KeyboardInterrupt("simulated interruption")
        return generated_signals(rng, n, t, SR)
    return source


def test_resume_continues_from_the_saved_step(tmp_path, one_thread):
    kw = dict(steps=6, batch=2, clip_samples=512, lr=3e-3, seed=3, model_config=TINY, val_every=3,
              checkpoint_every=3, val_items=2)
    straight, hist_straight = train_proxy(GAIN_SPEC, SR, None, checkpoint_path=tmp_path / "a.pt", **kw)
    ck = tmp_path / "b.pt"
    # the validation draw and 4 steps run (the checkpoint holds step 3); the 5th step's data draw is interrupted
    with pytest.raises(KeyboardInterrupt):
        train_proxy(GAIN_SPEC, SR, _crashing(1 + 4), checkpoint_path=ck, **kw)
    assert read_proxy_checkpoint(ck)["step"] == 3
    logs = []
    resumed, hist = train_proxy(GAIN_SPEC, SR, None, checkpoint_path=ck, log=logs.append, **kw)
    assert any("resumed" in s and "step 3" in s for s in logs)
    assert [h["step"] for h in hist] == list(range(7))
    assert read_proxy_checkpoint(ck)["step"] == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert hist[-1]["loss"] == pytest.approx(hist_straight[-1]["loss"], rel=1e-5)
    # resume=False starts over; a mismatched config is refused
    _, fresh = train_proxy(GAIN_SPEC, SR, None, checkpoint_path=ck, resume=False, **{**kw, "steps": 1})
    assert [h["step"] for h in fresh] == [0, 1]
    with pytest.raises(AfxError, match="config"):
        train_proxy(GAIN_SPEC, SR, None, checkpoint_path=tmp_path / "a.pt",
                    **{**kw, "model_config": {**TINY, "width": 4}})


def test_training_on_an_audio_folder(tmp_path, one_thread):
    import soundfile as sf

    rng = np.random.default_rng(5)
    for i in range(3):  # stereo and mono files at another rate: resampled, channels as sources
        x = generated_signals(rng, 2 if i else 1, 6000, 16000)
        sf.write(tmp_path / f"f{i}.wav", x.T, 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    from afxcli.grad.proxy import AudioClips
    clips = AudioClips.from_folder(tmp_path, SR)
    assert len(clips.sources["val"]) == 2 and len(clips.sources["train"]) == 3  # f2 (stereo) held out
    assert all(abs(c.shape[-1] - 3000) <= 1 for c in clips.sources["train"])
    batch = clips(np.random.default_rng(0), 4, 1024)
    assert batch.shape == (4, 1024) and np.all(np.abs(batch).max(axis=1) <= 1.0 + 1e-6)
    _, hist = train_proxy(GAIN_SPEC, SR, tmp_path, steps=2, batch=2, clip_samples=1024, model_config=TINY,
                          val_items=2)
    assert hist[-1]["step"] == 2 and np.isfinite(hist[-1]["val_mae"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AfxError, match="no audio files"):
        train_proxy(GAIN_SPEC, SR, tmp_path / "empty", steps=1)
    with pytest.raises(AfxError, match="no such file"):
        train_proxy(GAIN_SPEC, SR, tmp_path / "missing", steps=1)


# ----- the three layers ------------------------------------------------------------------------
def test_full_hybrid_forward_is_the_real_render_and_backward_the_proxy_vjp():
    chain = Chain(COMP_SPEC, SR)
    model = randomized(ProxyTCN(ProxyConfig(n_params=chain.n_free, gain_output=True, max_gain_db=6, **TINY)))
    x = audio()
    q = torch.rand(x.shape[0], chain.n_free, generator=torch.Generator().manual_seed(0))
    layer = full_hybrid(model, chain)
    xa, qa = x.clone().requires_grad_(), q.clone().requires_grad_()
    y = layer(xa, qa)
    for i in range(x.shape[0]):
        ref = render_chain(chain, x[i].numpy(), values_of(chain, q[i]))
        assert np.array_equal(y[i].detach().numpy(), ref)
    g = torch.randn_like(y)
    y.backward(g)
    xb, qb = x.clone().requires_grad_(), q.clone().requires_grad_()
    model(xb, qb).backward(g)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-7) and torch.allclose(qa.grad, qb.grad, atol=1e-7)
    assert qa.grad.abs().sum() > 0 and xa.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # weights are frozen
    # gradient to q only
    qc = q.clone().requires_grad_()
    layer(x, qc).backward(g)
    assert torch.allclose(qc.grad, qb.grad, atol=1e-7)


def test_full_hybrid_per_block_parameters_match_blockwise_renders():
    chain = Chain(GAIN_SPEC, SR)
    model = randomized(ProxyTCN(ProxyConfig(n_params=1, **TINY)))
    x = audio(batch=2, channels=1, n=1000)
    q = torch.tensor([[[0.2, 0.9, 0.5]], [[0.7, 0.7, 0.1]]])
    y = full_hybrid(model, chain, block_size=256)(x, q)
    for i in range(2):
        gains = [float(chain.free_specs[0].denormalize(v)) for v in q[i, 0].tolist()]
        blocks = [{"gain_db": g} for g in gains] + [{"gain_db": gains[-1]}]  # last block holds
        ref = render_effect(chain.effects[0], x[i].numpy(), blocks=blocks, block_size=256)
        assert np.array_equal(y[i].numpy(), ref)
        assert np.allclose(y[i, 0, :256].numpy(), x[i, 0, :256].numpy() * 10 ** (gains[0] / 20), atol=1e-6)


def test_half_hybrid_and_proxy_layers():
    chain = Chain(COMP_SPEC, SR)
    model = randomized(ProxyTCN(ProxyConfig(n_params=chain.n_free, **TINY)))
    x = audio(batch=2)
    q = torch.rand(2, chain.n_free, generator=torch.Generator().manual_seed(1)).requires_grad_()
    hh = half_hybrid(model, chain)
    y = hh(x, q)
    assert torch.equal(y, model(x, q)) and y.requires_grad
    y.pow(2).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    real = hh.inference(x, q)
    for i in range(2):
        assert np.array_equal(real[i].numpy(), render_chain(chain, x[i].numpy(), values_of(chain, q[i].detach())))
    assert not torch.allclose(real, y)  # an untrained proxy is not the real chain
    assert torch.equal(proxy(model, chain)(x, q), model(x, q))
    assert isinstance(make_proxy_layer("np-fh", model, chain), FullHybrid)
    assert isinstance(make_proxy_layer("half_hybrid", model, chain), HalfHybrid)
    assert type(make_proxy_layer("proxy", model, chain, workers=2)) is NeuralProxy
    with pytest.raises(AfxError):
        make_proxy_layer("nope", model, chain)


def test_render_real_threads_equal_sequential():
    chain = Chain(COMP_SPEC, SR)
    x = audio(batch=4)
    q = torch.rand(4, chain.n_free, generator=torch.Generator().manual_seed(2))
    assert torch.equal(render_real(chain, x, q, workers=2), render_real(chain, x, q))


# ----- checkpoints -----------------------------------------------------------------------------
def test_save_load_roundtrip_and_strategy_entry(tmp_path):
    chain = Chain(COMP_SPEC, SR)
    model = randomized(ProxyTCN(ProxyConfig(n_params=chain.n_free, causal=False, gain_output=True, **TINY)))
    path = save_proxy(tmp_path / "p.pt", model, chain)
    loaded, lchain = load_proxy(path)
    assert loaded.config == model.config and lchain.spec == chain.spec and lchain.sample_rate == SR
    x = audio(batch=2)
    q = torch.rand(2, chain.n_free)
    with torch.no_grad():
        assert torch.equal(loaded(x, q), model(x, q))
    fn = make_proxy_chain_fn(chain, "full_hybrid", path=path)
    from afxcli.grad import make_chain_fn
    via_strategy = make_chain_fn(chain, "half_hybrid", model=loaded)
    with torch.no_grad():
        assert torch.equal(via_strategy(x, q), model(x, q))
    assert torch.equal(via_strategy.inference(x, q), render_real(chain, x, q))
    assert torch.equal(fn(x, q), render_real(chain, x, q))
    assert torch.equal(fn.inference(x, q), render_real(chain, x, q))
    with pytest.raises(AfxError, match="another chain"):
        make_proxy_chain_fn(Chain(COMP_SPEC, 16000), "proxy", path=path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AfxError, match="not a readable"):
        load_proxy(tmp_path / "junk.pt")
    with pytest.raises(AfxError, match="no such"):
        load_proxy(tmp_path / "missing.pt")


ZAMCOMP = "/usr/lib/vst3/ZamCompX2.vst3"


@pytest.mark.skipif(not __import__("os").path.exists(ZAMCOMP), reason="zam-plugins VST3 not installed")
def test_full_hybrid_through_a_vst3_black_box():
    """NP-FH's forward is the real third-party plugin; its gradient comes from the proxy."""
    chain = Chain([{"type": "vst3", "options": {"path": ZAMCOMP}, "free": ["threshold_db", "ratio"]}], 44100)
    assert not chain.differentiable
    model = randomized(ProxyTCN(ProxyConfig(n_params=chain.n_free, gain_output=True, **TINY)))
    x = 4 * audio(batch=2, channels=2, n=2048)
    q = torch.tensor([[0.2, 0.9], [0.8, 0.1]], requires_grad=True)
    y = full_hybrid(model, chain)(x, q)
    for i in range(2):
        assert np.array_equal(y[i].detach().numpy(), render_chain(chain, x[i].numpy(), values_of(chain, q[i].detach())))
    assert not torch.allclose(y[0], x[0], atol=1e-3)  # the plugin did compress
    y.sum().backward()
    qp = q.detach().clone().requires_grad_()
    model(x, qp).sum().backward()
    assert torch.allclose(q.grad, qp.grad, atol=1e-7) and q.grad.abs().sum() > 0


# ---- minimum-phase EQ branch (ProxyConfig.eq_bands) ----------------------------------------------
EQ_SPEC = [{"type": "peq", "options": {"n_peaks": 1},
            "free": {"low_shelf_gain_db": {"min": -12, "max": 12}, "peak1_gain_db": {"min": -12, "max": 12}}}]
TINY_EQ = dict(TINY, eq_bands=24, eq_fft=512, gain_output=True, max_gain_db=1.0)


def test_eq_branch_starts_as_bypass_and_is_minimum_phase():
    for gain in (False, True):
        m = ProxyTCN(ProxyConfig(n_params=2, **dict(TINY_EQ, gain_output=gain)))
        x = audio(batch=2, channels=2, n=700)
        assert torch.allclose(m(x, torch.rand(2, 2)), x, atol=1e-5)  # starts as identity
        assert m(x, torch.rand(2, 2, 3)).shape == x.shape
    m = randomized(m)
    assert m.receptive_field_samples == 1 + 2 * 3 + 511
    q = torch.rand(3, 2, dtype=torch.float64)
    h = m.double().eq_impulse_responses(q)  # (3, 512)
    log_mag = m.eq_mlp(q) @ m.eq_interp.T.double()
    # its magnitude is the MLP's log-magnitude response ...
    assert torch.allclose(torch.fft.rfft(h).abs().log(), log_mag, atol=1e-6)
    # ... and among filters with that magnitude it is the minimum-phase one: the most energy up front
    lin = torch.fft.irfft(log_mag.exp(), n=512).roll(256, -1)  # zero-phase (linear-phase) twin
    front = lambda g: (g[:, :32] ** 2).sum(-1) / (g ** 2).sum(-1)
    assert bool((front(h) > front(lin)).all())
    # causal: output n depends on inputs <= n only
    x = audio(batch=1, channels=1, n=600).double()
    x2 = x.clone()
    x2[..., 400:] += 1.0
    qq = torch.rand(1, 2, dtype=torch.float64)
    assert torch.equal(m(x, qq)[..., :400], m(x2, qq)[..., :400]) or \
        torch.allclose(m(x, qq)[..., :400], m(x2, qq)[..., :400], atol=1e-12)


def test_eq_branch_per_block_parameters_switch_filters_at_block_boundaries():
    m = randomized(ProxyTCN(ProxyConfig(n_params=2, **TINY_EQ)), seed=3).double()
    x = audio(batch=2, channels=1, n=900).double()
    q = torch.rand(2, 2, 3, dtype=torch.float64)
    u = m._eq(x, q, 300)
    for k in range(3):  # each block's samples are that block's static filter's output
        uk = m._eq(x, q[:, :, k], None)
        assert torch.allclose(u[..., 300 * k:300 * (k + 1)], uk[..., 300 * k:300 * (k + 1)], atol=1e-12)


def test_eq_branch_learns_an_eq_faster_than_the_plain_tcn(one_thread):
    kw = dict(steps=60, batch=4, clip_samples=2048, lr=3e-3, seed=0, val_every=60, val_items=8)
    _, plain = train_proxy(EQ_SPEC, SR, None, model_config=dict(TINY, gain_output=True, max_gain_db=12.0), **kw)
    _, eq = train_proxy(EQ_SPEC, SR, None, model_config=dict(TINY_EQ, max_gain_db=12.0), eq_lr_scale=10.0, **kw)
    # measured: 0.0158 vs 0.0268 (identity 0.0285)
    assert eq[-1]["val_mae"] < 0.7 * plain[-1]["val_mae"], (eq[-1], plain[-1])
    assert eq[-1]["val_mae"] < 0.65 * eq[-1]["identity_mae"], eq[-1]
    with pytest.raises(AfxError):
        train_proxy(EQ_SPEC, SR, None, steps=1, model_config=TINY_EQ, eq_lr_scale=0.0)
    with pytest.raises(AfxError):
        ProxyConfig(n_params=2, eq_bands=8, eq_fft=500)
    with pytest.raises(AfxError):
        ProxyConfig(n_params=2, level_window=-1)


def test_level_input_channel_is_causal_and_conditioned():
    cfg = ProxyConfig(n_params=2, **dict(TINY_EQ, level_window=16))
    m = ProxyTCN(cfg)
    x = audio(batch=2, channels=1, n=800)
    assert torch.allclose(m(x, torch.rand(2, 2)), x, atol=1e-5)  # still starts as a bypass
    assert m.blocks[0].conv.in_channels == 2 and cfg.receptive_field_samples == 1 + 2 * 3 + 511 + 15
    m = randomized(m, seed=2).double()
    x = x.double()
    x2 = x.clone()
    x2[..., 500:] *= 4.0  # louder from sample 500 on
    q = torch.rand(2, 2, dtype=torch.float64)
    y, y2 = m(x, q), m(x2, q)
    assert torch.allclose(y[..., :500], y2[..., :500], atol=1e-12)  # causal, level included
    # the output depends on the level channel: cutting its weights changes it
    with torch.no_grad():
        m.blocks[0].conv.weight[:, 1] = 0.0
        m.blocks[0].res.weight[:, 1] = 0.0
    assert not torch.allclose(m(x, q), y, atol=1e-6)
