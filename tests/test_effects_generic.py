"""Properties every registered differentiable effect must have, checked through a one-effect chain."""
import numpy as np
import pytest
import torch

from afxcli.effects import REGISTRY
from afxcli.effects.chain import Chain

SR = 44100
KINDS = sorted(k for k, cls in REGISTRY.items() if cls.differentiable)


def _audio(channels, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / SR
    x = 0.4 * torch.sin(2 * torch.pi * 330 * t) * torch.exp(-((t * 20) % 1.0) * 3)
    x = x + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([x * (1 - 0.3 * c) for c in range(channels)]).unsqueeze(0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_gradients_finite_at_normalized_range_edges(kind, edge):
    chain = Chain({"effects": [{"type": kind}]}, SR)
    x = _audio(2)
    for mode in ("train", "exact"):
        q = torch.full((1, chain.n_free), edge, dtype=torch.float64, requires_grad=True)
        y = chain(x, q, mode=mode)
        assert y.shape == x.shape and torch.all(torch.isfinite(y))
        y.square().mean().backward()
        assert torch.all(torch.isfinite(q.grad)), (kind, mode, edge, q.grad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 2])
def test_constant_blocks_equal_static_parameters(kind, channels):
    chain = Chain({"effects": [{"type": kind}]}, SR)
    rng = np.random.default_rng(3)
    q = torch.tensor(rng.uniform(0.1, 0.9, (1, chain.n_free)), dtype=torch.float64)
    x = _audio(channels)
    with torch.no_grad():
        y_static = chain(x, q, mode="exact")
        y_blocks = chain(x, q.unsqueeze(-1).repeat(1, 1, 8), block_size=512, mode="exact")
    assert y_static.shape == x.shape
    assert torch.max(torch.abs(y_static - y_blocks)) <= 1e-9


def test_param_validate_array_matches_validate():
    """The vectorized check accepts, clips and refuses exactly what ``validate`` does."""
    from afxcli.errors import AfxError
    from afxcli.params import ParamSpec

    spec = ParamSpec("gain_db", "dB", -24.0, 24.0, 0.0, "lin")
    ok = np.array([-24.0, -24.0 - 1e-12, 3.5, 24.0 + 1e-12])
    np.testing.assert_array_equal(spec.validate_array(ok), [spec.validate(v) for v in ok])
    for bad in (np.array([0.0, 25.0, 30.0]), np.array([1.0, np.nan])):
        with pytest.raises(AfxError) as vec:
            spec.validate_array(bad, where="gain")
        first = bad[np.flatnonzero(~np.isfinite(bad) | (np.abs(bad) > 24.0))[0]]
        with pytest.raises(AfxError) as one:
            spec.validate(first, where="gain")
        assert str(vec.value) == str(one.value)
