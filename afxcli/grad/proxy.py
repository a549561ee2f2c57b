"""Neural proxies of effect chains and the three ways to train through them.

A *neural proxy* (NP) is a small network trained to imitate a signal processor, including how its
control parameters change it, from renders of the real device with random parameters
(DeepAFx-ST, Steinmetz et al., JAES 2022, §2.3 and §3.5). Once trained it is differentiable, so an
encoder can be trained through it to predict the real device's parameters. DeepAFx-ST §2.3 names
three ways to use it, all exposed here as torch callables ``(x, q) -> y`` with ``x``
``(batch, channels, samples)`` and ``q`` normalized parameters ``(batch, P)`` (or per block
``(batch, P, blocks)``):

- :func:`proxy` (NP): the proxy in the forward and the backward pass;
- :func:`half_hybrid` (NP-HH): the proxy during training; the real chain at inference
  (:meth:`HalfHybrid.inference`);
- :func:`full_hybrid` (NP-FH): the real chain in the forward pass, the proxy's vector-Jacobian
  product at the same ``(x, q)`` in the backward pass (a :class:`torch.autograd.Function`).

The model (:class:`ProxyTCN`) is the FiLM-conditioned TCN of DeepAFx-ST §3.5 (a feed-forward
WaveNet whose blocks are modulated by the parameters; FiLM: Perez et al., AAAI 2018), made small
enough to train on a CPU, with BE-AFX's option (Peladeau & Peeters, ICASSP 2024, §2.1.2) to output
a gain through a sigmoid, ``ŷ[n] = g[n]·x[n]``, which suits dynamics processors. Two optional
structural priors (off by default) suit an EQ → dynamics chain: a parameter-conditioned
minimum-phase EQ branch in front of the TCN (``eq_bands``; the proxy then starts as a bypass) and a
short-term level-in-dB input channel (``level_window``); see :class:`ProxyConfig`.

:func:`train_proxy` profiles a chain in the sense of SignalTrain (Hawley et al., AES 2019): targets
are rendered by the **real** effect (:func:`afxcli.render.render_chain`, so pedalboard twins and
VST3 black boxes alike), with uniformly random normalized parameters per item; the loss is
DeepAFx-ST §3.4's ``L = L_freq + α·L_time`` (MR-STFT + α·MAE, α = 100); checkpoints hold the model,
the optimizer, the step, the configuration, the chain spec and the sample rate, and training
resumes from them bit for bit (each step's data depends only on ``(seed, step)``).

Channels: the proxy processes every channel as its own batch item (a mono model, shared weights,
same parameters for each channel). That matches per-channel (unlinked) processors such as
pedalboard's Compressor/NoiseGate and the mono zam plugins; for stereo-linked processors it is an
approximation.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..effects.base import expand_blocks
from ..effects.chain import Chain
from ..atomic import torch_save_atomic
from ..errors import AfxError
from ..losses import MultiResolutionSTFTLoss
from ..render import render_chain, render_effect

PROXY_FORMAT = "afx-proxy"
PROXY_VERSION = 1

__all__ = [
    "ProxyConfig", "ProxyTCN", "TrainConfig", "train_proxy", "render_real",
    "proxy_loss", "NeuralProxy", "HalfHybrid", "FullHybrid", "FullHybridFunction", "proxy",
    "half_hybrid", "full_hybrid", "make_proxy_layer", "make_proxy_chain_fn", "save_proxy", "load_proxy",
    "read_proxy_checkpoint", "generated_signals", "AudioClips", "evaluate_proxy", "gradient_agreement",
]


# =============================================================================================
# Model
# =============================================================================================
@dataclass
class ProxyConfig:
    """Architecture of a :class:`ProxyTCN`.

    Attributes:
        n_params: number of normalized control parameters ``P`` (the chain's free parameters).
        width: channels of every TCN block (DeepAFx-ST uses 64; BE-AFX shows 8 suffices with a
            gain output).
        kernel_size: convolution kernel (DeepAFx-ST: 13).
        dilations: dilation per block (DeepAFx-ST: powers of 8, ``(1, 8, 64, 512)``).
        causal: left padding only (output ``n`` sees inputs ``<= n``) vs centred padding.
        gain_output: BE-AFX §2.1.2: ``y = g·x`` with ``g = 10^(max_gain_db/20)·sigmoid(z)``;
            otherwise the last layer outputs ``y`` directly (DeepAFx-ST).
        max_gain_db: largest gain the gain output can apply (0 dB: attenuation only, as a
            compressor without makeup; raise it for chains that can boost).
        film_hidden: hidden units of the MLP mapping ``q`` to the FiLM scales and shifts.
        eq_bands: ``> 0`` adds a linear **minimum-phase EQ branch** in front of the TCN: an MLP maps
            ``q`` to a log-magnitude response at ``eq_bands`` log-spaced frequencies (linearly
            interpolated to the FFT bins), turned into a causal minimum-phase impulse response of
            ``eq_fft`` samples by cepstral folding, which filters the input: ``u = h_q * x``. The
            TCN then sees ``u`` and the output is ``g·u`` (gain output) or ``u + TCN`` (direct
            output). The branch and the output layer start as the identity (0 dB, ``g = 1``), so
            the proxy starts as a bypass. Suited to chains that start with an EQ (linear) followed
            by dynamics (a gain); 0 (default) is the plain DeepAFx-ST TCN.
        eq_fft: impulse-response length (FFT size, a power of two) of the EQ branch.
        level_window: ``> 0`` gives the TCN a second input channel, the short-term level
            ``10·log10(mean of u² over the last level_window samples + 1e-10) / 50`` of its input
            ``u``: a compressor's or gate's gain is a function of the level in dB relative to a
            threshold in dB, which a FiLM shift of this channel expresses directly. 0: audio only.
    """

    n_params: int
    width: int = 16
    kernel_size: int = 13
    dilations: tuple[int, ...] = (1, 8, 64, 512)
    causal: bool = True
    gain_output: bool = False
    max_gain_db: float = 0.0
    film_hidden: int = 32
    eq_bands: int = 0
    eq_fft: int = 4096
    level_window: int = 0

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.n_params < 0 or self.width < 1 or self.kernel_size < 1 or self.film_hidden < 1:
            raise AfxError(f"proxy config: invalid sizes {self}")
        if self.level_window < 0:
            raise AfxError(f"proxy config: level_window must be >= 0, got {self.level_window}")
        if self.eq_bands < 0 or self.eq_bands == 1:
            raise AfxError(f"proxy config: eq_bands must be 0 (off) or >= 2, got {self.eq_bands}")
        if self.eq_bands and (self.eq_fft < 16 or self.eq_fft & (self.eq_fft - 1)):
            raise AfxError(f"proxy config: eq_fft must be a power of two >= 16, got {self.eq_fft}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise AfxError(f"proxy config: dilations must be positive integers, got {self.dilations}")
        if not self.causal and self.kernel_size % 2 == 0:
            raise AfxError("proxy config: a non-causal TCN needs an odd kernel_size (centred padding)")
        if not math.isfinite(self.max_gain_db):
            raise AfxError("proxy config: max_gain_db must be finite")

    @property
    def receptive_field_samples(self) -> int:
        """Input samples one output sample depends on: ``1 + Σ_b (kernel_size − 1)·d_b``
        (plus ``eq_fft − 1`` with the EQ branch)."""
        rf = 1 + sum((self.kernel_size - 1) * d for d in self.dilations)
        return rf + (self.eq_fft - 1 if self.eq_bands else 0) + max(self.level_window - 1, 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProxyConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class _FiLMBlock(torch.nn.Module):
    """Dilated conv → FiLM (``γ·h + β``) → PReLU, plus a residual connection (1×1 conv when the
    channel count changes)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, causal: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation)
        self.act = torch.nn.PReLU(out_ch)
        self.res = torch.nn.Conv1d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else None
        span = (kernel_size - 1) * dilation
        self.pad = (span, 0) if causal else (span // 2, span - span // 2)

    def forward(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        # h (N, in_ch, T); gamma, beta (N, out_ch, 1 or T)
        z = self.conv(F.pad(h, self.pad))
        z = self.act(gamma * z + beta)
        return z + (h if self.res is None else self.res(h))


class ProxyTCN(torch.nn.Module):
    """FiLM-conditioned dilated TCN proxy (DeepAFx-ST §3.5; BE-AFX §2.1.2 gain output).

    ``forward(x, q, block_size=None)``:

    - ``x``: audio ``(batch, channels, samples)``; each channel is processed as a separate item
      with the same parameters (see the module docstring);
    - ``q``: normalized parameters ``(batch, P)`` or per block ``(batch, P, blocks)`` (held over
      ``block_size`` samples per block, as :func:`afxcli.effects.base.expand_blocks`);
    - returns ``(batch, channels, samples)``, same length and alignment as ``x`` (zero padding:
      the network starts from silence like a freshly reset effect).

    FiLM (Perez et al., AAAI 2018): an MLP maps ``q`` to a scale ``γ_b = 1 + Δγ_b`` and shift
    ``β_b`` for each block's ``width`` channels (initialized at ``γ = 1, β = 0``).
    """

    def __init__(self, config: ProxyConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.blocks = torch.nn.ModuleList(
            [_FiLMBlock((2 if c.level_window else 1) if i == 0 else c.width, c.width, c.kernel_size, d, c.causal)
             for i, d in enumerate(c.dilations)])
        n_film = 2 * c.width * len(c.dilations)
        self.film = torch.nn.Sequential(
            torch.nn.Linear(max(c.n_params, 1), c.film_hidden), torch.nn.PReLU(),
            torch.nn.Linear(c.film_hidden, c.film_hidden), torch.nn.PReLU(),
            torch.nn.Linear(c.film_hidden, n_film))
        torch.nn.init.zeros_(self.film[-1].weight)
        torch.nn.init.zeros_(self.film[-1].bias)
        self.out = torch.nn.Conv1d(c.width, 1, 1)
        if c.eq_bands:
            self.eq_mlp = torch.nn.Sequential(
                torch.nn.Linear(max(c.n_params, 1), c.film_hidden), torch.nn.PReLU(),
                torch.nn.Linear(c.film_hidden, c.film_hidden), torch.nn.PReLU(),
                torch.nn.Linear(c.film_hidden, c.eq_bands))
            torch.nn.init.zeros_(self.eq_mlp[-1].weight)  # 0 dB everywhere: h = δ
            torch.nn.init.zeros_(self.eq_mlp[-1].bias)
            self.register_buffer("eq_interp", _log_interp_matrix(c.eq_bands, c.eq_fft), persistent=False)
            # start as a bypass: zero output weights, g = 1 (gain output) or TCN = 0 (direct)
            torch.nn.init.zeros_(self.out.weight)
            if c.gain_output:
                g0 = min(10.0 ** (-c.max_gain_db / 20.0), 0.99)
                torch.nn.init.constant_(self.out.bias, math.log(g0 / (1.0 - g0)))
            else:
                torch.nn.init.zeros_(self.out.bias)

    @property
    def receptive_field_samples(self) -> int:
        return self.config.receptive_field_samples

    @property
    def n_weights(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _film(self, q: torch.Tensor, n_items: int, n_samples: int,
              block_size: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        if q.dim() not in (2, 3) or q.shape[0] != n_items or q.shape[1] != c.n_params:
            raise ValueError(f"proxy: q must be (batch={n_items}, P={c.n_params}[, blocks]), got {tuple(q.shape)}")
        if c.n_params == 0:  # nothing to condition on: a constant input to the MLP
            q = q.new_zeros((q.shape[0], 1, *q.shape[2:]))
        if q.dim() == 2:
            ab = self.film(q).unsqueeze(-1)  # (B, 2·W·nb, 1)
        else:
            ab = self.film(q.transpose(1, 2)).transpose(1, 2)  # (B, 2·W·nb, blocks)
            ab = expand_blocks(ab, n_samples, block_size)  # (B, 2·W·nb, T)
        ab = ab.reshape(ab.shape[0], len(c.dilations), 2, c.width, ab.shape[-1])
        return [(1.0 + ab[:, b, 0], ab[:, b, 1]) for b in range(len(c.dilations))]

    def eq_impulse_responses(self, q: torch.Tensor) -> torch.Tensor:
        """The EQ branch's minimum-phase impulse responses: ``q`` ``(..., P)`` -> ``(..., eq_fft)``.

        Log-magnitude ``L(ω)`` (natural log, from the MLP at ``eq_bands`` log-spaced frequencies,
        interpolated to the ``eq_fft/2 + 1`` bins) -> real cepstrum ``c = IDFT(L)`` -> folded
        ``ĉ[0] = c[0], ĉ[n] = 2c[n] (0 < n < N/2), ĉ[N/2] = c[N/2], 0 above`` -> ``H = exp(DFT(ĉ))``,
        the minimum-phase response with magnitude ``e^L`` (homomorphic filtering: Oppenheim &
        Schafer, *Discrete-Time Signal Processing*, 3rd ed., §13.8 eqs. 13.76–13.77; biquad shelves
        and peaks with their zeros inside the unit circle are minimum phase) -> ``h = IDFT(H)``."""
        c = self.config
        n = c.eq_fft
        if c.n_params == 0:
            q = q.new_zeros((*q.shape[:-1], 1))
        log_mag = self.eq_mlp(q) @ self.eq_interp.T.to(q.dtype)  # (..., n/2 + 1)
        ceps = torch.fft.irfft(log_mag, n=n)  # real, even
        fold = torch.zeros(n, dtype=ceps.dtype, device=ceps.device)
        fold[0] = 1.0
        fold[1:n // 2] = 2.0
        fold[n // 2] = 1.0
        spec = torch.exp(torch.fft.rfft(ceps * fold, n=n))
        return torch.fft.irfft(spec, n=n)

    def _eq(self, x: torch.Tensor, q: torch.Tensor, block_size: int | None) -> torch.Tensor:
        """EQ branch: ``x`` ``(B, C, T)``, ``q`` ``(B, P[, blocks])`` -> ``(B, C, T)``; FFT
        convolution, truncated causally to ``T`` samples. Per-block ``q``: every block's filter runs
        over the whole signal and each sample takes the output of its block's filter (a switched
        filter bank, state carried across switches)."""
        B, C, T = x.shape
        n = self.config.eq_fft
        m = 1 << (T + n - 2).bit_length()  # >= T + n - 1: no circular wrap
        xf = torch.fft.rfft(x, n=m)  # (B, C, F)
        if q.dim() == 2:
            hf = torch.fft.rfft(self.eq_impulse_responses(q), n=m)  # (B, F)
            return torch.fft.irfft(xf * hf.unsqueeze(1), n=m)[..., :T]
        hf = torch.fft.rfft(self.eq_impulse_responses(q.transpose(1, 2)), n=m)  # (B, blocks, F)
        u = torch.fft.irfft(xf.unsqueeze(2) * hf.unsqueeze(1), n=m)[..., :T]  # (B, C, blocks, T)
        nb = q.shape[-1]
        onehot = expand_blocks(torch.eye(nb, dtype=x.dtype, device=x.device).unsqueeze(0), T, block_size)
        return (u * onehot.unsqueeze(0)).sum(dim=2)

    def forward(self, x: torch.Tensor, q: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"proxy: audio must be (batch, channels, samples), got {tuple(x.shape)}")
        B, C, T = x.shape
        q = q.to(x.dtype)
        film = self._film(q, B, T, block_size)
        if self.config.eq_bands:
            x = self._eq(x, q, block_size)
        h = x.reshape(B * C, 1, T)
        if self.config.level_window:
            w = self.config.level_window
            power = F.avg_pool1d(F.pad(h * h, (w - 1, 0)), w, stride=1)  # causal moving mean
            h = torch.cat([h, 10.0 * torch.log10(power + 1e-10) / 50.0], dim=1)
        for blk, (g, b) in zip(self.blocks, film):
            if C > 1:  # one parameter set per item, repeated over its channels
                g, b = g.repeat_interleave(C, 0), b.repeat_interleave(C, 0)
            h = blk(h, g, b)
        z = self.out(h)
        if self.config.gain_output:
            y = (10.0 ** (self.config.max_gain_db / 20.0)) * torch.sigmoid(z) * x.reshape(B * C, 1, T)
        elif self.config.eq_bands:
            y = x.reshape(B * C, 1, T) + z
        else:
            y = z
        return y.reshape(B, C, T)


def _log_interp_matrix(n_bands: int, n_fft: int) -> torch.Tensor:
    """``(n_fft/2 + 1, n_bands)`` linear interpolation in log frequency from ``n_bands`` points
    log-spaced between the first bin (``1/n_fft`` of the sample rate) and Nyquist (``1/2``) to every
    rfft bin (DC takes the lowest point)."""
    bins = np.arange(n_fft // 2 + 1, dtype=np.float64)
    pos = np.log(np.maximum(bins, 1.0)) / np.log(n_fft / 2.0) * (n_bands - 1)  # 0 .. n_bands-1
    lo = np.clip(np.floor(pos).astype(int), 0, n_bands - 2)
    frac = pos - lo
    w = np.zeros((bins.size, n_bands))
    w[np.arange(bins.size), lo] = 1.0 - frac
    w[np.arange(bins.size), lo + 1] = frac
    return torch.from_numpy(w).float()


# =============================================================================================
# Real rendering (batch of items through the real chain, no gradient)
# =============================================================================================
def _per_effect_values(chain: Chain, q_item: torch.Tensor) -> list[Any]:
    """Normalized ``(P,)`` or ``(P, blocks)`` -> per effect: a value dict (static) or a list of
    value dicts (one per block)."""
    params = chain.denormalize(q_item.detach().to("cpu", torch.float64).unsqueeze(0))
    out = []
    for fx, p in zip(chain.effects, params):
        p = p[0].numpy()
        if p.ndim == 1:
            out.append({n: float(v) for n, v in zip(fx.param_names, p)})
        else:
            out.append([{n: float(p[i, k]) for i, n in enumerate(fx.param_names)} for k in range(p.shape[1])])
    return out


def _render_item(chain: Chain, audio: np.ndarray, q_item: torch.Tensor, block_size: int | None) -> np.ndarray:
    vals = _per_effect_values(chain, q_item)
    if q_item.dim() == 1:
        return render_chain(chain, audio, vals)
    n_blocks = q_item.shape[-1]
    bs = block_size if block_size is not None else max(1, math.ceil(audio.shape[-1] / n_blocks))
    y = np.ascontiguousarray(audio, dtype=np.float32)
    for fx, blocks in zip(chain.effects, vals):
        # the last block's values extend to the end (as expand_blocks in the torch forward)
        need = max(1, math.ceil(y.shape[-1] / bs))
        blocks = (blocks + [blocks[-1]] * need)[:need]
        if all(b == blocks[0] for b in blocks):
            y = render_effect(fx, y, blocks[0])
        else:
            y = render_effect(fx, y, blocks=blocks, block_size=bs)
    return y


def render_real(chain: Chain, x: torch.Tensor, q: torch.Tensor, block_size: int | None = None,
                workers: int = 1) -> torch.Tensor:
    """Render a batch through the **real** chain (pedalboard twins, VST3 plugins, exact torch forms
    where an effect has no renderer) with :func:`afxcli.render.render_chain`; no gradient.

    ``x`` ``(batch, channels, samples)``, ``q`` normalized ``(batch, P)`` or ``(batch, P, blocks)``
    (per-block values change at block boundaries, ``block_size`` samples per block, default
    ``ceil(samples / blocks)``). Returns ``(batch, channels, samples)`` in ``x``'s dtype and
    device. Items are independent renders (fresh effect state each); ``workers > 1`` renders them
    in threads (pedalboard releases the GIL; every item gets its own plugin instances).
    """
    if x.dim() != 3:
        raise ValueError(f"audio must be (batch, channels, samples), got {tuple(x.shape)}")
    if q.dim() not in (2, 3) or q.shape[0] != x.shape[0] or q.shape[1] != chain.n_free:
        raise ValueError(f"q must be (batch={x.shape[0]}, {chain.n_free}[, blocks]), got {tuple(q.shape)}")
    audio = x.detach().to("cpu", torch.float32).numpy()
    qc = q.detach().to("cpu")
    jobs = [(audio[i], qc[i]) for i in range(x.shape[0])]
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ys = list(pool.map(lambda j: _render_item(chain, j[0], j[1], block_size), jobs))
    else:
        ys = [_render_item(chain, a, qi, block_size) for a, qi in jobs]
    return torch.from_numpy(np.stack(ys)).to(device=x.device, dtype=x.dtype)


# =============================================================================================
# The three ways to use a proxy
# =============================================================================================
def _freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


class NeuralProxy(torch.nn.Module):
    """NP (DeepAFx-ST §2.3): ``y = proxy(x, q)`` in the forward and the backward pass.

    ``forward(x (batch, C, T), q (batch, P[, blocks])) -> (batch, C, T)``. With ``freeze=True``
    (default) the proxy's weights are fixed: gradients reach only ``x`` and ``q``."""

    mode = "proxy"

    def __init__(self, model: ProxyTCN, chain: Chain | None = None, freeze: bool = True,
                 block_size: int | None = None, workers: int = 1) -> None:
        super().__init__()
        self.model = model
        self.chain = chain
        self.block_size = block_size
        self.workers = int(workers)  # threads for real renders (hybrids; same options for all modes)
        if chain is not None and chain.n_free != model.config.n_params:
            raise AfxError(f"proxy expects {model.config.n_params} parameters, the chain has {chain.n_free}")
        if freeze:
            _freeze(model)
            model.eval()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.model(x, q, block_size=self.block_size)


class HalfHybrid(NeuralProxy):
    """NP-HH (DeepAFx-ST §2.3): the proxy in the forward and backward pass during training; the
    real chain at inference through :meth:`inference` (no gradient)."""

    mode = "half_hybrid"

    def __init__(self, model: ProxyTCN, chain: Chain, freeze: bool = True,
                 block_size: int | None = None, workers: int = 1) -> None:
        super().__init__(model, chain, freeze, block_size, workers)

    @torch.no_grad()
    def inference(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The real chain: ``(batch, C, T)``, ``(batch, P[, blocks])`` -> ``(batch, C, T)``."""
        return render_real(self.chain, x, q, self.block_size, self.workers)


class FullHybridFunction(torch.autograd.Function):
    """NP-FH (DeepAFx-ST §2.3): forward = real render (no grad); backward = the proxy's
    vector-Jacobian product at the same ``(x, q)``: the proxy is re-run with grad and ``g`` is
    backpropagated through it. Only ``x`` and ``q`` receive gradients (never the proxy's weights).

    ``apply(x, q, model, chain, block_size, workers)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor, model: ProxyTCN, chain: Chain,
                block_size: int | None, workers: int) -> torch.Tensor:
        ctx.save_for_backward(x, q)
        ctx.model = model
        ctx.block_size = block_size
        return render_real(chain, x, q, block_size, workers)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, q = ctx.saved_tensors
        need_x, need_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gq = None
        if need_x or need_q:
            with torch.enable_grad():
                xd = x.detach().requires_grad_(need_x)
                qd = q.detach().requires_grad_(need_q)
                y = ctx.model(xd, qd, block_size=ctx.block_size)
                wrt = [t for t, n in ((xd, need_x), (qd, need_q)) if n]
                grads = torch.autograd.grad(y, wrt, grad_outputs=g.to(y.dtype), allow_unused=True)
            it = iter(grads)
            if need_x:
                gx = next(it)
                gx = torch.zeros_like(x) if gx is None else gx.to(x.dtype)
            if need_q:
                gq = next(it)
                gq = torch.zeros_like(q) if gq is None else gq.to(q.dtype)
        return gx, gq, None, None, None, None


class FullHybrid(NeuralProxy):
    """NP-FH as a module: ``forward(x, q)`` renders the real chain and carries the proxy's
    gradient (:class:`FullHybridFunction`). :meth:`inference` is the same real render."""

    mode = "full_hybrid"

    def __init__(self, model: ProxyTCN, chain: Chain, freeze: bool = True,
                 block_size: int | None = None, workers: int = 1) -> None:
        super().__init__(model, chain, freeze, block_size, workers)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return FullHybridFunction.apply(x, q, self.model, self.chain, self.block_size, self.workers)

    @torch.no_grad()
    def inference(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return render_real(self.chain, x, q, self.block_size, self.workers)


def proxy(model: ProxyTCN, chain: Chain | None = None, **kw) -> NeuralProxy:
    """NP layer ``(x, q) -> y`` (see :class:`NeuralProxy`)."""
    return NeuralProxy(model, chain, **kw)


def half_hybrid(model: ProxyTCN, chain: Chain, **kw) -> HalfHybrid:
    """NP-HH layer ``(x, q) -> y`` with ``.inference(x, q)`` (see :class:`HalfHybrid`)."""
    return HalfHybrid(model, chain, **kw)


def full_hybrid(model: ProxyTCN, chain: Chain, **kw) -> FullHybrid:
    """NP-FH layer ``(x, q) -> y`` (see :class:`FullHybrid`)."""
    return FullHybrid(model, chain, **kw)


_MODES = {"proxy": proxy, "np": proxy, "half_hybrid": half_hybrid, "np-hh": half_hybrid,
          "full_hybrid": full_hybrid, "np-fh": full_hybrid}


def make_proxy_layer(mode: str, model: ProxyTCN, chain: Chain, **kw) -> NeuralProxy:
    """``mode``: ``proxy`` | ``half_hybrid`` | ``full_hybrid`` (or ``np``/``np-hh``/``np-fh``)."""
    try:
        return _MODES[mode.lower()](model, chain, **kw)
    except KeyError:
        raise AfxError(f"unknown proxy mode {mode!r} (use proxy, half_hybrid or full_hybrid)") from None


def make_proxy_chain_fn(chain: Chain, strategy: str, model: ProxyTCN | None = None,
                        path: str | Path | None = None, **options: Any):
    """The proxy strategies for :func:`afxcli.grad.strategy.make_chain_fn`: a
    :class:`~afxcli.grad.strategy.ChainFn` ``fn(x (batch, C, T), q (batch, P)) -> (batch, C, T)``
    wrapping :func:`make_proxy_layer`. The proxy is ``model`` or the checkpoint at ``path`` (whose
    stored chain spec and sample rate must equal ``chain``'s: a proxy is tied to its chain and
    rate, DeepAFx-ST §4). Other options (``block_size``, ``workers``, ``freeze``) go to the layer;
    the layer is ``fn.layer`` and, for the hybrids, ``fn.inference(x, q)`` renders the real chain."""
    from .strategy import ChainFn

    if (model is None) == (path is None):
        raise AfxError(f"strategy {strategy!r}: give exactly one of model= or path= (a proxy checkpoint)")
    if path is not None:
        model, pchain = load_proxy(path)
        if pchain.spec != chain.spec or pchain.sample_rate != chain.sample_rate:
            raise AfxError(f"{path}: the proxy was trained for another chain or sample rate "
                           f"({pchain.sample_rate:g} Hz, {', '.join(pchain.free_keys)})")
    unknown = set(options) - {"block_size", "workers", "freeze"}
    if unknown:
        raise AfxError(f"strategy {strategy!r}: unknown option(s) {', '.join(sorted(unknown))}")
    layer = make_proxy_layer(strategy, model, chain, **options)
    fn = ChainFn(chain, strategy, layer)
    fn.layer = layer
    if hasattr(layer, "inference"):
        fn.inference = layer.inference
    return fn


# =============================================================================================
# Loss (DeepAFx-ST §3.4)
# =============================================================================================
def proxy_loss(y_hat: torch.Tensor, y: torch.Tensor, time_weight: float = 100.0,
               windows: Sequence[int] = (64, 256, 1024)) -> torch.Tensor:
    """``L = L_freq + α·L_time`` (DeepAFx-ST §3.4, α = ``time_weight`` = 100): MR-STFT (L1 of the
    STFT magnitudes in the linear and log domains, Hann windows ``windows``, hop ``W/2``) plus
    α·MAE, via :class:`afxcli.losses.MultiResolutionSTFTLoss`. The paper's windows reach 32768;
    the default here suits short CPU training clips. ``(batch, C, T)`` pairs -> scalar."""
    key = (tuple(int(w) for w in windows), float(time_weight))
    loss = _LOSSES.get(key)
    if loss is None:
        loss = _LOSSES[key] = MultiResolutionSTFTLoss(fft_sizes=key[0], time_weight=key[1])
    return loss.to(y_hat.device)(y_hat, y)


_LOSSES: dict[tuple, torch.nn.Module] = {}


# =============================================================================================
# Training data
# =============================================================================================
def generated_signals(rng: np.random.Generator, n_items: int, n_samples: int, sample_rate: float) -> np.ndarray:
    """Generated training signals ``(n_items, n_samples)`` float32: per item a mix of a harmonic
    tone (log-uniform f0 50–2000 Hz, 1–6 harmonics), a noise component (white → one-pole lowpassed
    by a random amount) and a chirp, each with its own weight, under a piecewise-constant level
    envelope (2–8 segments, −40…0 dB steps, 1 ms ramps: the level changes a dynamics processor
    reacts to), finally peak-scaled to a random −30…0 dBFS. Vectorized over items."""
    t = np.arange(n_samples) / sample_rate
    N = n_items
    f0 = np.exp(rng.uniform(np.log(50), np.log(2000), (N, 1)))
    n_harm = rng.integers(1, 7, (N, 1))
    tone = np.zeros((N, n_samples))
    for h in range(1, 7):
        on = (h <= n_harm) & (h * f0 < 0.45 * sample_rate)
        tone += on * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi, (N, 1))) / h
    noise = rng.standard_normal((N, n_samples))
    # cheap random-colour noise: a mix of white and its cumulative (Brownian) part, high-passed
    brown = np.cumsum(noise, axis=1)
    brown -= np.linspace(0, 1, n_samples)[None] * brown[:, -1:]
    brown /= np.abs(brown).max(axis=1, keepdims=True) + 1e-9
    mixc = rng.uniform(0, 1, (N, 1))
    noise = mixc * noise / 3.0 + (1 - mixc) * brown
    f_lo = np.exp(rng.uniform(np.log(50), np.log(500), (N, 1)))
    f_hi = np.exp(rng.uniform(np.log(1000), np.log(0.4 * sample_rate), (N, 1)))
    dur = n_samples / sample_rate
    k = (f_hi - f_lo) / dur
    chirp = np.sin(2 * np.pi * (f_lo * t + 0.5 * k * t ** 2))
    w = rng.dirichlet(np.ones(3), N)  # (N, 3)
    x = w[:, :1] * tone + w[:, 1:2] * noise + w[:, 2:3] * chirp
    # piecewise-constant level envelope with short ramps
    n_seg = rng.integers(2, 9, N)
    env_db = np.zeros((N, n_samples))
    for i in range(N):
        cuts = np.sort(rng.integers(0, n_samples, n_seg[i] - 1))
        seg = np.searchsorted(cuts, np.arange(n_samples), side="right")
        env_db[i] = rng.uniform(-40, 0, n_seg[i])[seg]
    ramp = max(1, int(0.001 * sample_rate))
    kern = np.ones(ramp) / ramp
    env = 10 ** (env_db / 20)
    env = np.stack([np.convolve(e, kern, mode="same") for e in env])
    x = x * env
    peak = np.abs(x).max(axis=1, keepdims=True) + 1e-9
    x = x / peak * 10 ** (rng.uniform(-30, 0, (N, 1)) / 20)
    return x.astype(np.float32)


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")


class AudioClips:
    """Mono clips from audio files (every channel is a mono source), resampled to the proxy's
    rate, split by file into training and held-out files (every 10th file, at least one, is held
    out when there are ≥ 2 files; with one file, or when ``max_seconds`` of audio is reached
    before a held-out file, the last 10 % of each source is held out). Silent excerpts (mean energy ≤ 1e-3
    after peak normalization, DeepAFx-ST §3.2's criterion) are redrawn; clips are peak-scaled to a
    random −30…0 dBFS."""

    def __init__(self, paths: Sequence[Path], sample_rate: float, max_seconds: float = 600.0) -> None:
        from ..audio import read_audio, resample

        train: list[np.ndarray] = []
        held: list[np.ndarray] = []
        total = 0.0
        paths = sorted(Path(p) for p in paths)
        if not paths:
            raise AfxError("proxy training: no audio files found")
        for i, p in enumerate(paths):
            audio, sr = read_audio(p)
            if sr != sample_rate:
                audio = resample(audio, sr, sample_rate)
            chans = [np.ascontiguousarray(c, dtype=np.float32) for c in audio]
            if len(paths) >= 2:
                (held if i % 10 == 9 or (i == len(paths) - 1 and not held) else train).extend(chans)
            else:
                cut = int(0.9 * audio.shape[-1])
                train.extend(c[:cut] for c in chans)
                held.extend(c[cut:] for c in chans)
            total += audio.shape[-1] / sample_rate
            if total >= max_seconds:
                break
        if not held:  # stopped at max_seconds before a held-out file: hold out the last 10 % of each
            cuts = [int(0.9 * c.shape[-1]) for c in train]
            held = [c[k:] for c, k in zip(train, cuts)]
            train = [c[:k] for c, k in zip(train, cuts)]
        self.sources = {"train": train, "val": held}

    @classmethod
    def from_folder(cls, folder: str | Path, sample_rate: float, max_seconds: float = 600.0) -> "AudioClips":
        folder = Path(folder)
        if folder.is_file():
            return cls([folder], sample_rate, max_seconds)
        if not folder.is_dir():
            raise AfxError(f"{folder}: no such file or folder")
        paths = [p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()]
        if not paths:
            raise AfxError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        return cls(paths, sample_rate, max_seconds)

    def __call__(self, rng: np.random.Generator, n_items: int, n_samples: int, split: str = "train") -> np.ndarray:
        srcs = [s for s in self.sources[split] if s.shape[-1] >= n_samples] or self.sources[split]
        if not srcs:
            raise AfxError(f"proxy training: no {split} audio")
        lengths = np.array([s.shape[-1] for s in srcs], dtype=float)
        out = np.zeros((n_items, n_samples), np.float32)
        for i in range(n_items):
            for _attempt in range(50):
                s = srcs[rng.choice(len(srcs), p=lengths / lengths.sum())]
                start = int(rng.integers(0, max(1, s.shape[-1] - n_samples + 1)))
                seg = s[start:start + n_samples]
                peak = float(np.abs(seg).max())
                if peak > 0 and np.mean((seg / peak) ** 2) > 1e-3:
                    break
            out[i, :seg.shape[-1]] = seg / max(peak, 1e-9)
        out *= (10 ** (rng.uniform(-30, 0, (n_items, 1)) / 20)).astype(np.float32)
        return out


AudioSource = Union[None, str, Path, AudioClips, Callable[..., np.ndarray]]


def _as_source(source: AudioSource, sample_rate: float) -> Callable[[np.random.Generator, int, int, str], np.ndarray]:
    if source is None:
        return lambda rng, n, t, split="train": generated_signals(rng, n, t, sample_rate)
    if isinstance(source, (str, Path)):
        return AudioClips.from_folder(source, sample_rate)
    if callable(source):
        return source
    raise AfxError(f"proxy training: unsupported audio source {type(source).__name__}")


# =============================================================================================
# Checkpoints
# =============================================================================================
def save_proxy(path: str | Path, model: ProxyTCN, chain: Chain, **extra: Any) -> Path:
    """Write a proxy checkpoint (atomically): format/version, model config, weights, the chain
    spec and sample rate, plus ``extra`` entries (optimizer state, step, history, train config)."""
    path = Path(path)
    ckpt = {"format": PROXY_FORMAT, "version": PROXY_VERSION, "config": model.config.to_dict(),
            "chain_spec": chain.spec, "sample_rate": chain.sample_rate,
            "receptive_field_samples": model.receptive_field_samples,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, **extra}
    torch_save_atomic(ckpt, path)
    return path


def read_proxy_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (one-line :class:`AfxError` when it is not an afx proxy)."""
    p = Path(path)
    if not p.is_file():
        raise AfxError(f"{p}: no such proxy checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is "not a checkpoint"
        raise AfxError(f"{p}: not a readable proxy checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != PROXY_FORMAT:
        raise AfxError(f"{p}: not an afx proxy checkpoint")
    if int(ckpt.get("version", 0)) > PROXY_VERSION:
        raise AfxError(f"{p}: proxy checkpoint version {ckpt.get('version')} is newer than this afx understands")
    return ckpt


def load_proxy(path: str | Path, which: str = "best") -> tuple[ProxyTCN, Chain]:
    """Load ``(model, chain)`` from a checkpoint: the chain is rebuilt from the stored spec at the
    stored sample rate. ``which="best"`` takes the weights with the lowest validation loss when the
    checkpoint has them (as DeepAFx-ST §3.5), else the latest; ``"last"`` the latest. The model is
    returned in eval mode."""
    if which not in ("best", "last"):
        raise AfxError(f"load_proxy: which must be 'best' or 'last', not {which!r}")
    ckpt = read_proxy_checkpoint(path)
    model = ProxyTCN(ProxyConfig.from_dict(ckpt["config"]))
    state = ckpt.get("best_model") if which == "best" and ckpt.get("best_model") else ckpt["model"]
    model.load_state_dict(state)
    model.eval()
    chain = Chain(ckpt["chain_spec"], ckpt["sample_rate"])
    if chain.n_free != model.config.n_params:
        raise AfxError(f"{path}: proxy has {model.config.n_params} parameters but its chain {chain.n_free}")
    return model, chain


# =============================================================================================
# Training
# =============================================================================================
@dataclass
class TrainConfig:
    """Training settings stored in the checkpoint (resuming checks they match where it matters)."""

    steps: int = 2000
    batch: int = 8
    clip_samples: int = 16384
    lr: float = 3e-4  # DeepAFx-ST §3.5
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int = 100
    val_items: int = 16
    time_weight: float = 100.0  # α of DeepAFx-ST §3.4
    stft_windows: tuple[int, ...] = (64, 256, 1024)
    final_lr_fraction: float = 0.1  # cosine decay from lr to lr·fraction over `steps`
    workers: int = 1
    grad_clip: float = 1.0
    eq_lr_scale: float = 1.0  # the EQ branch's MLP learns at lr·eq_lr_scale


    def to_dict(self) -> dict:
        d = asdict(self)
        d["stft_windows"] = list(self.stft_windows)
        return d


def _lr_at(tc: TrainConfig, step: int) -> float:
    frac = min(1.0, step / max(1, tc.steps))
    return tc.lr * (tc.final_lr_fraction + (1 - tc.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))


def _batch(chain: Chain, source, rng: np.random.Generator, n: int, clip: int, workers: int,
           split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` mono clips, uniform random normalized parameters, real renders:
    ``x (n, 1, clip)``, ``q (n, P)``, ``y (n, 1, clip)``."""
    x = np.asarray(source(rng, n, clip, split), dtype=np.float32)
    if x.shape != (n, clip):
        raise AfxError(f"proxy training: audio source returned {x.shape}, expected {(n, clip)}")
    q = torch.from_numpy(rng.uniform(0.0, 1.0, (n, chain.n_free)))
    xt = torch.from_numpy(x).unsqueeze(1)
    y = render_real(chain, xt, q, workers=workers)
    return xt, q.to(torch.float32), y


def evaluate_proxy(model: ProxyTCN, val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   tc: TrainConfig) -> dict[str, float]:
    """Held-out errors: ``val_loss`` (training loss), ``val_mae`` (mean |proxy − real|),
    ``val_rel_mae`` (``val_mae`` / mean |real|) and ``identity_mae`` (mean |input − real|, what
    passing audio through unchanged would score)."""
    x, q, y = val
    was = model.training
    model.eval()
    with torch.no_grad():
        y_hat = torch.cat([model(x[i:i + 8], q[i:i + 8]) for i in range(0, x.shape[0], 8)])
        loss = proxy_loss(y_hat, y, tc.time_weight, tc.stft_windows)
        mae = (y_hat - y).abs().mean()
    model.train(was)
    return {"val_loss": float(loss), "val_mae": float(mae),
            "val_rel_mae": float(mae / y.abs().mean().clamp_min(1e-12)),
            "identity_mae": float((x - y).abs().mean())}


def gradient_agreement(model: ProxyTCN, chain: Chain, n_items: int = 8, clip_samples: int = 8192,
                       seed: int = 0, epsilon: float = 0.02, source: AudioSource = None) -> dict[str, float]:
    """How well the NP-FH gradient points where the real chain's gradient points.

    Per item: a clip ``x``, a target ``y = real(x, q*)`` with random ``q*``, and a random estimate
    ``q``; loss ``L(q) = mean|real(x, q) − y|``. Compares ``∂L/∂q`` from :class:`FullHybrid` (the
    proxy's VJP at the real output's loss gradient) with central finite differences of the real
    chain (step ``epsilon`` in normalized units, clipped to [0, 1]). Returns the mean cosine
    similarity over items (``grad_cosine``) and the fraction of parameter components whose signs
    agree, counting only those where the finite difference is clearly non-zero (``grad_sign_agreement``).
    """
    src = _as_source(source, chain.sample_rate)
    rng = np.random.default_rng([seed, 7])
    x = torch.from_numpy(np.asarray(src(rng, n_items, clip_samples, "val"), np.float32)).unsqueeze(1)
    q_true = torch.from_numpy(rng.uniform(0, 1, (n_items, chain.n_free)))
    q = torch.from_numpy(rng.uniform(0, 1, (n_items, chain.n_free)))
    dev = next(model.parameters()).device
    y = render_real(chain, x, q_true)

    def loss_real(qq: torch.Tensor) -> torch.Tensor:  # (n_items,)
        return (render_real(chain, x, qq) - y).abs().mean(dim=(1, 2))

    fd = torch.zeros(n_items, chain.n_free, dtype=torch.float64)
    for j in range(chain.n_free):
        hi, lo = q.clone(), q.clone()
        hi[:, j] = (q[:, j] + epsilon).clamp(max=1.0)
        lo[:, j] = (q[:, j] - epsilon).clamp(min=0.0)
        fd[:, j] = (loss_real(hi) - loss_real(lo)) / (hi[:, j] - lo[:, j])
    layer = FullHybrid(model, chain, freeze=False)
    qv = q.to(dev, torch.float32).requires_grad_()
    out = layer(x.to(dev), qv)
    (out - y.to(dev)).abs().mean(dim=(1, 2)).sum().backward()
    g = qv.grad.detach().cpu().to(torch.float64)
    cos = torch.nn.functional.cosine_similarity(g, fd, dim=1, eps=1e-12)
    clear = fd.abs() > 1e-3 * fd.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    sign = ((torch.sign(g) == torch.sign(fd)) & clear).sum() / clear.sum().clamp_min(1)
    return {"grad_cosine": float(cos.mean()), "grad_sign_agreement": float(sign)}


def train_proxy(chain: Chain | Mapping[str, Any] | list, sample_rate: float | None = None,
                audio_source: AudioSource = None, steps: int = 2000, batch: int = 8,
                clip_samples: int = 16384, lr: float = 3e-4, seed: int = 0,
                checkpoint_path: str | Path | None = None, resume: bool = True,
                model_config: ProxyConfig | Mapping[str, Any] | None = None,
                checkpoint_every: int = 100, val_every: int = 100, val_items: int = 16,
                time_weight: float = 100.0, stft_windows: Sequence[int] = (64, 256, 1024),
                workers: int = 1, log: Callable[[str], None] | None = None,
                device: str | torch.device = "cpu", eq_lr_scale: float = 1.0) -> tuple[ProxyTCN, list[dict]]:
    """Train a :class:`ProxyTCN` to imitate ``chain`` (a :class:`Chain` or a chain spec; then
    ``sample_rate`` is required). Returns ``(model, history)``.

    Each step draws ``batch`` mono clips of ``clip_samples`` from ``audio_source`` (``None``:
    :func:`generated_signals`; a file or folder path: :class:`AudioClips`; or a callable
    ``(rng, n_items, n_samples, split) -> (n_items, n_samples)``), uniformly random normalized
    parameters per item, and renders the targets with the real chain (:func:`render_real`). Loss:
    ``MR-STFT + time_weight·MAE`` (DeepAFx-ST §3.4); Adam with a cosine decay of ``lr`` to
    ``0.1·lr``; gradient-norm clipping at 1.

    Every ``val_every`` steps (and at the end) the proxy is scored on ``val_items`` held-out
    items (held-out audio, parameters from a separate random stream; see :func:`evaluate_proxy`);
    ``history`` gets ``{"step", "loss", "lr", "seconds"}`` per step plus the validation figures
    where measured. Every ``checkpoint_every`` steps (and at the end) a checkpoint is written to
    ``checkpoint_path`` (model, best-validation model, optimizer, step, history, configs, chain spec,
    sample rate). With ``resume=True`` an existing checkpoint is continued from its step (its model
    configuration, chain and seed must match); the data of step ``s`` is a function of
    ``(seed, s)`` only, so an interrupted and resumed run reproduces an uninterrupted one.
    ``device``: where the proxy trains (targets are always rendered on the CPU); the returned
    model is on that device.
    """
    if not isinstance(chain, Chain):
        if sample_rate is None:
            raise AfxError("train_proxy: a chain spec needs a sample_rate")
        chain = Chain(chain, sample_rate)
    elif sample_rate is not None and float(sample_rate) != chain.sample_rate:
        raise AfxError(f"train_proxy: sample_rate {sample_rate} differs from the chain's {chain.sample_rate}")
    if chain.n_free == 0:
        raise AfxError("train_proxy: the chain has no free parameters to condition the proxy on")
    if steps < 0 or batch < 1 or clip_samples < 16:
        raise AfxError("train_proxy: need steps >= 0, batch >= 1 and clip_samples >= 16")
    tc = TrainConfig(steps=int(steps), batch=int(batch), clip_samples=int(clip_samples), lr=float(lr),
                     seed=int(seed), checkpoint_every=max(1, int(checkpoint_every)),
                     val_every=max(1, int(val_every)), val_items=max(1, int(val_items)),
                     time_weight=float(time_weight), stft_windows=tuple(int(w) for w in stft_windows),
                     workers=int(workers), eq_lr_scale=float(eq_lr_scale))
    if not (tc.eq_lr_scale > 0 and math.isfinite(tc.eq_lr_scale)):
        raise AfxError(f"train_proxy: eq_lr_scale must be positive, got {eq_lr_scale}")
    if model_config is None:
        cfg = ProxyConfig(n_params=chain.n_free)
    elif isinstance(model_config, ProxyConfig):
        cfg = model_config
    else:
        cfg = ProxyConfig(**{"n_params": chain.n_free, **dict(model_config)})
    if cfg.n_params != chain.n_free:
        raise AfxError(f"train_proxy: model config has n_params={cfg.n_params}, the chain {chain.n_free}")
    say = log or (lambda s: None)
    source = _as_source(audio_source, chain.sample_rate)

    torch.manual_seed(tc.seed)
    dev = torch.device(device)
    model = ProxyTCN(cfg).to(dev)
    eq_weights = list(model.eq_mlp.parameters()) if cfg.eq_bands else []
    eq_ids = {id(p) for p in eq_weights}
    groups = [{"params": [p for p in model.parameters() if id(p) not in eq_ids], "lr_scale": 1.0}]
    if eq_weights:
        groups.append({"params": eq_weights, "lr_scale": tc.eq_lr_scale})
    opt = torch.optim.Adam(groups, lr=tc.lr)
    step = 0
    history: list[dict] = []
    best_val = math.inf
    best_state: dict | None = None
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ck = read_proxy_checkpoint(ckpt_path)
        if ProxyConfig.from_dict(ck["config"]) != cfg:
            raise AfxError(f"{ckpt_path}: checkpoint model config {ck['config']} differs from {cfg.to_dict()}")
        if ck["chain_spec"] != chain.spec or float(ck["sample_rate"]) != chain.sample_rate:
            raise AfxError(f"{ckpt_path}: checkpoint was trained for another chain or sample rate")
        if int(ck.get("train_config", {}).get("seed", tc.seed)) != tc.seed:
            raise AfxError(f"{ckpt_path}: checkpoint seed {ck['train_config']['seed']} differs from {tc.seed}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])  # follows the parameters' device
        step = int(ck["step"])
        history = list(ck.get("history", []))
        best_val = float(ck.get("best_val", math.inf))
        best_state = ck.get("best_model")
        say(f"resumed from {ckpt_path} at step {step}")

    # held-out set: its own random streams (and held-out audio when the source has a split)
    vrng = np.random.default_rng([tc.seed, 2**31 - 1])
    val = tuple(t.to(dev) for t in _batch(chain, source, vrng, tc.val_items, tc.clip_samples, tc.workers, "val"))

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        save_proxy(ckpt_path, model, chain, optimizer=opt.state_dict(), step=step, history=history,
                   train_config=tc.to_dict(), best_val=best_val, best_model=best_state)

    def validate() -> dict[str, float]:
        nonlocal best_val, best_state
        v = evaluate_proxy(model, val, tc)
        if v["val_loss"] < best_val:
            best_val = v["val_loss"]
            best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        say(f"step {step}: val_mae {v['val_mae']:.3g} (identity {v['identity_mae']:.3g}), "
            f"val_rel_mae {v['val_rel_mae']:.3g}, val_loss {v['val_loss']:.4g}")
        return v

    if step == 0 and not history:
        history.append({"step": 0, **validate()})
    model.train()
    while step < tc.steps:
        t0 = time.perf_counter()
        rng = np.random.default_rng([tc.seed, step])
        x, q, y = (t.to(dev) for t in _batch(chain, source, rng, tc.batch, tc.clip_samples, tc.workers, "train"))
        for g in opt.param_groups:
            g["lr"] = _lr_at(tc, step) * g.get("lr_scale", 1.0)
        y_hat = model(x, q)
        loss = proxy_loss(y_hat, y, tc.time_weight, tc.stft_windows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        rec: dict[str, float] = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                                 "seconds": time.perf_counter() - t0}
        if step % tc.val_every == 0 or step == tc.steps:
            rec.update(validate())
        history.append(rec)
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            checkpoint()
    if ckpt_path is not None and (not ckpt_path.exists() or step == 0):
        checkpoint()
    model.eval()
    return model, history
