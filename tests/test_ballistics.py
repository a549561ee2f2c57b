"""Ballistics kernels: forward against a plain reference recursion, exact backward (gradcheck)."""
import math

import numpy as np
import pytest
import torch

from afxcli.dsp.ballistics import (
    ballistics,
    hold_release_gain,
    juce_coefficient,
    rms_ballistics,
    time_constant_coefficient,
)

torch.manual_seed(0)


def _ref_ballistics(x, ca, cr):
    y = np.zeros_like(x)
    prev = 0.0
    for i in range(len(x)):
        c = ca[i] if x[i] > prev else cr[i]
        prev = x[i] + c * (prev - x[i])
        y[i] = prev
    return y


def _ref_hold_release(t, r, L):
    g = np.zeros_like(t)
    cur, hold = 1.0, 0
    for i in range(len(t)):
        if t[i] < cur:
            cur, hold = t[i], L
        elif t[i] < 1.0:
            hold = L
        elif hold > 0:
            hold -= 1
        else:
            cur += (1 - r[i]) * (1 - cur)
        g[i] = cur
    return g


def test_ballistics_forward_matches_reference_time_varying():
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal((2, 3, 500))) * np.linspace(0, 1, 500)
    ca = rng.uniform(0.1, 0.9, (2, 1, 500))
    cr = rng.uniform(0.9, 0.999, (2, 1, 500))
    y = ballistics(torch.from_numpy(x), torch.from_numpy(ca), torch.from_numpy(cr)).numpy()
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(y[b, c], _ref_ballistics(x[b, c], ca[b, 0], cr[b, 0]), rtol=0, atol=1e-12)
    # attack branch rises faster than release branch falls
    assert y.shape == x.shape and np.all(y >= 0)


def test_hold_release_forward_matches_reference():
    rng = np.random.default_rng(2)
    t = np.where(rng.uniform(size=(3, 400)) < 0.05, rng.uniform(0.2, 0.9, (3, 400)), 1.0)
    r = rng.uniform(0.5, 0.99, (3, 400))
    g = hold_release_gain(torch.from_numpy(t), torch.from_numpy(r), 7).numpy()
    for b in range(3):
        np.testing.assert_allclose(g[b], _ref_hold_release(t[b], r[b], 7), rtol=0, atol=1e-12)
    assert np.all(g <= t + 1e-15)  # instant attack: never above the target


@pytest.mark.parametrize("time_varying", [False, True])
def test_ballistics_gradcheck(time_varying):
    x = (torch.rand(1, 2, 64, dtype=torch.float64) * torch.linspace(0.1, 1, 64, dtype=torch.float64)).requires_grad_()
    shape = (1, 1, 64) if time_varying else (1, 1, 1)
    ca = (0.2 + 0.5 * torch.rand(shape, dtype=torch.float64)).requires_grad_()
    cr = (0.8 + 0.15 * torch.rand(shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(ballistics, (x, ca, cr), eps=1e-7, atol=1e-6)


def test_rms_ballistics_gradcheck():
    x = (torch.randn(1, 1, 64, dtype=torch.float64) * 0.5).requires_grad_()
    ca = torch.tensor([[[0.3]]], dtype=torch.float64, requires_grad=True)
    cr = torch.tensor([[[0.95]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rms_ballistics, (x, ca, cr), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("time_varying", [False, True])
def test_hold_release_gradcheck(time_varying):
    g0 = torch.Generator().manual_seed(3)
    mask = torch.rand(1, 64, generator=g0) < 0.15
    mask[0, 3] = True
    t_in = (0.3 + 0.6 * torch.rand(1, 64, generator=g0, dtype=torch.float64)).requires_grad_()
    rel = (0.6 + 0.3 * torch.rand((1, 64) if time_varying else (1, 1), generator=g0,
                                 dtype=torch.float64)).requires_grad_()

    def f(t_in, rel):
        target = torch.where(mask, t_in, torch.ones_like(t_in))
        return hold_release_gain(target, rel, 4)

    assert torch.autograd.gradcheck(f, (t_in, rel), eps=1e-7, atol=1e-6)
    # the release coefficient really receives gradient (releases happen in this sequence)
    f(t_in, rel).sum().backward()
    assert rel.grad.abs().sum() > 0 and t_in.grad.abs().sum() > 0


def test_coefficients_juce_limit_and_finite_gradients():
    sr = 44100.0
    t = torch.tensor([0.0, 5e-4, 1e-3, 0.1, 5.0, 1000.0], dtype=torch.float64, requires_grad=True)
    c = juce_coefficient(t, sr)
    assert c[0] == 0 and c[1] == 0  # JUCE calculateLimitedCte: t < 1e-3 ms -> 0
    assert math.isclose(c[4].item(), math.exp(-2 * math.pi * 1000 / (sr * 5.0)), rel_tol=1e-14)
    c.sum().backward()
    assert torch.all(torch.isfinite(t.grad))
    t2 = torch.tensor([0.1, 1000.0], dtype=torch.float64, requires_grad=True)
    c2 = time_constant_coefficient(t2, sr)
    assert math.isclose(c2[1].item(), math.exp(-1000 / (sr * 1000.0)), rel_tol=1e-14)
    c2.sum().backward()
    assert torch.all(torch.isfinite(t2.grad))


def test_float32_path_runs_and_is_fast_enough():
    x = torch.rand(4, 2, 48000)
    c = torch.full((4, 1, 1), 0.9)
    y = ballistics(x, c * 0.5, c)
    assert y.dtype == torch.float32 and torch.all(torch.isfinite(y))
