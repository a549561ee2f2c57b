"""Gradient strategies through a chain: finite differences and SPSA (black-box renders through
pedalboard, float32) against autodiff through the torch twins (exact path, float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.grad import EpsilonSchedule, StatelessRenderer, make_chain_fn, spsa_estimates
from afxcli.grad.blackbox import BlackBoxLayer
from afxcli.grad.fd import fd_gradient

SR = 44100
T = int(0.2 * SR)
SPEC = {"effects": [{"type": "peq", "options": {"n_peaks": 1}}, {"type": "compressor"}]}


def make_clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T) / SR
    a = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    b = 0.3 * np.sin(2 * np.pi * 3300 * t)
    return (np.stack([a, b]) + 0.05 * rng.standard_normal((2, T))).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    """Chain (P = 14), batch of 2 clips, parameters, an MSE target and the AD gradient."""
    chain = Chain(SPEC, SR)
    rng = np.random.default_rng(0)
    x = np.stack([make_clip(1), make_clip(2)])
    q = rng.uniform(0.2, 0.8, (2, chain.n_free))
    q_target = rng.uniform(0.2, 0.8, (2, chain.n_free))
    xt = torch.from_numpy(x).double()
    with torch.no_grad():
        target = chain(xt, torch.from_numpy(q_target), mode="exact")
    qa = torch.from_numpy(q).requires_grad_()
    y = chain(xt, qa, mode="exact")
    ((y - target) ** 2).sum().backward()
    g = (2 * (y - target)).detach().numpy()  # dL/dy
    return chain, x, q, target, qa.grad.numpy(), g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_fd_matches_autodiff(setup):
    chain, x, q, target, g_ad, _ = setup
    fn = make_chain_fn(chain, "fd", epsilon=1e-3, workers=2)
    assert isinstance(fn.renderer, type(None))
    qt = torch.from_numpy(q).requires_grad_()
    xt = torch.from_numpy(x).double().requires_grad_()
    y = fn(xt, qt)
    assert isinstance(fn.renderer, StatelessRenderer)
    ((y - target) ** 2).sum().backward()
    err = rel_err(qt.grad.numpy(), g_ad)
    print(f"fd vs ad relative error: {err:.2e}")
    assert err <= 1e-2
    assert xt.grad is None  # black box: no gradient to the input audio


def test_fd_through_stateful_layer_equals_stateless_on_a_first_frame(setup):
    """FD through a stateful layer (2P + 1 instances per slot) from a fresh state equals the
    stateless FD (no latency in this chain)."""
    chain, x, q, _, _, g = setup
    stateless = fd_gradient(StatelessRenderer(chain, SR), x, q, g, 1e-3)
    layer = BlackBoxLayer(chain, SR, 2, pairs=chain.n_free)
    assert layer.n_instances == (2 * chain.n_free + 1) * 2
    layer.render(x, q)
    stateful = fd_gradient(layer, x, q, g, 1e-3)
    np.testing.assert_allclose(stateful, stateless, rtol=1e-12, atol=1e-9)


def test_spsa_averaged_and_unbiased(setup):
    """One batch of N single-draw SPSA estimates: the mean of 256 points along AD (cosine >= 0.9);
    over all N, every component's mean lies within 4 standard errors of AD, while a deliberately
    biased estimator (dividing by ε instead of 2ε) fails that same test."""
    chain, x, q, _, g_ad, g = setup
    n = 400
    est = spsa_estimates(StatelessRenderer(chain, SR, workers=2), x[:1], q[:1], g[:1], 1e-3, n,
                         np.random.default_rng(7))[:, 0]  # (n, P)
    ad = g_ad[0]

    mean256 = est[:256].mean(axis=0)
    cos = float(mean256 @ ad / (np.linalg.norm(mean256) * np.linalg.norm(ad)))
    print(f"spsa (256 draws) cosine with ad: {cos:.4f}")
    assert cos >= 0.9

    def unbiased(samples: np.ndarray) -> bool:
        se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
        z = (samples.mean(axis=0) - ad) / se
        print("z:", np.round(z, 2))
        return bool(np.all(np.abs(z) <= 4.0))

    assert unbiased(est)
    assert not unbiased(2.0 * est)  # (y+ − y−) / (ε Δ): twice the gradient


def test_spsa_function_and_strategy(setup):
    """make_chain_fn('spsa') through the stateful layer: forward equals the black-box render, the
    backward equals one draw of spsa_estimates with the same random stream, x gets no gradient."""
    chain, x, q, _, _, g = setup
    fn = make_chain_fn(chain, "spsa", epsilon=1e-3, seed=3)
    qt = torch.from_numpy(q).requires_grad_()
    y = fn(torch.from_numpy(x), qt)
    assert isinstance(fn.renderer, BlackBoxLayer) and fn.renderer.n_instances == 6
    ref = StatelessRenderer(chain, SR).render(x, q)
    assert np.array_equal(y.detach().numpy(), ref)
    y.backward(torch.from_numpy(g).float())
    expect = spsa_estimates(StatelessRenderer(chain, SR), x, q, g, 1e-3, 1, np.random.default_rng(3))[0]
    np.testing.assert_allclose(qt.grad.numpy(), expect, rtol=1e-6, atol=1e-6)  # g went in as float32
    assert np.all(np.isfinite(expect)) and np.abs(expect).max() > 0

    # K draws: (2K + 1)M instances, the mean of K estimates
    fn4 = make_chain_fn(chain, "spsa", epsilon=1e-3, draws=4, seed=5)
    qt4 = torch.from_numpy(q).requires_grad_()
    fn4(torch.from_numpy(x), qt4).backward(torch.from_numpy(g).float())
    assert fn4.renderer.n_instances == 18
    expect4 = spsa_estimates(StatelessRenderer(chain, SR), x, q, g, 1e-3, 4, np.random.default_rng(5)).mean(0)
    np.testing.assert_allclose(qt4.grad.numpy(), expect4, rtol=1e-6, atol=1e-6)


def test_spsa_at_the_bounds_uses_the_clipped_spacing(setup):
    """A parameter at 0 is perturbed one-sidedly (q⁺ − q⁻ = ±ε, not ±2ε). With one free parameter
    every draw is that one-sided difference; dividing by the actual spacing keeps it on the AD
    gradient (dividing by 2εΔ, as eq. 2 reads away from the bounds, would halve it)."""
    _, x, _, _, _, _ = setup
    chain = Chain({"effects": [{"type": "peq", "options": {"n_peaks": 1}, "free": ["peak1_gain_db"],
                                "fixed": {"peak1_freq_hz": 1000.0, "peak1_q": 1.0}}]}, SR)
    q0 = np.zeros((1, 1))
    xt = torch.from_numpy(x[:1]).double()
    qa = torch.from_numpy(q0).requires_grad_()
    y = chain(xt, qa, mode="exact")
    (y ** 2).sum().backward()
    ad = float(qa.grad[0, 0])
    g = (2 * y).detach().numpy()
    est = spsa_estimates(StatelessRenderer(chain, SR), x[:1], q0, g, 1e-3, 8, np.random.default_rng(0))[:, 0, 0]
    assert abs(ad) > 1.0
    np.testing.assert_allclose(est, ad, rtol=2e-2)


def test_ad_strategy(setup):
    chain, x, q, _, _, _ = setup
    fn = make_chain_fn(chain, "ad", mode="exact")
    xt = torch.from_numpy(x).double().requires_grad_()
    qt = torch.from_numpy(q).requires_grad_()
    y = fn(xt, qt)
    y.sum().backward()
    assert qt.grad is not None and xt.grad is not None  # AD reaches the input too
    vst = Chain({"effects": [{"type": "vst3", "options": {"path": "/usr/lib/vst3/ZamCompX2.vst3"}}]}, SR) \
        if __import__("os").path.exists("/usr/lib/vst3/ZamCompX2.vst3") else None
    if vst is not None:
        with pytest.raises(AfxError, match="black box"):
            make_chain_fn(vst, "ad")


def test_strategy_errors_and_proxy_hook(setup):
    chain = setup[0]
    with pytest.raises(AfxError, match="unknown gradient strategy"):
        make_chain_fn(chain, "reinforce")
    with pytest.raises(AfxError, match="unknown option"):
        make_chain_fn(chain, "spsa", epsilon=1e-3, colour="red")
    with pytest.raises(AfxError, match="epsilon"):
        make_chain_fn(chain, "spsa", epsilon=0.0)
    fn = make_chain_fn(chain, "spsa")
    with pytest.raises(AfxError, match="q must be"):
        fn(torch.zeros(2, 2, 100), torch.zeros(2, 3))
    try:
        import afxcli.grad.proxy  # noqa: F401
    except ImportError:
        with pytest.raises(AfxError, match="afxcli.grad.proxy"):
            make_chain_fn(chain, "half_hybrid")


def test_epsilon_schedule():
    s = EpsilonSchedule(1e-3, gamma=0.101)
    assert s.value == pytest.approx(1e-3)
    for _ in range(9):
        s.step()
    assert s.value == pytest.approx(1e-3 / 10 ** 0.101)
    const = EpsilonSchedule(5e-4, gamma=0.0)
    const.step()
    assert const.value == 5e-4
    fn = make_chain_fn(Chain(SPEC, SR), "spsa", epsilon=EpsilonSchedule(2e-3))
    fn.step()
    assert fn.epsilon.value == pytest.approx(2e-3 / 2 ** 0.101)
    with pytest.raises(AfxError):
        EpsilonSchedule(0.0)
