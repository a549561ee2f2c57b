"""Training tasks: what a batch is, which model predicts what, and the loss.

A task is a class registered under a name (:data:`TASKS`, :func:`register_task`). The loop
(:func:`afxcli.train.loop.train`) only needs, from an instance built with the validated config:

- ``model`` (the ``torch.nn.Module`` it optimizes and checkpoints), ``chain_spec``;
- ``train_dataset()`` (a :class:`~afxcli.train.data.ClipDataset`, addressed by global item number),
  ``val_batches()`` (fixed batches), ``loss(batch, step)`` (scalar with grad) and
  ``val_loss(batch)`` (float, called under ``no_grad``);
- ``on_step_end(step)``, ``state_dict()``/``load_state_dict()`` for state outside the model
  (e.g. an SPSA ε schedule or its random stream), saved in checkpoints.

Class attributes declare the config sections the task accepts (``data_fields``,
``option_fields``) and ``build_model(config, chain_spec)`` rebuilds the model for
:func:`~afxcli.train.checkpoint.load_for_inference`. A task that brings its own loop (``proxy``)
overrides ``run``.

Tasks here:

- ``toy``: learn one static setting (a free parameter vector, or a tiny network with a constant
  input) of an EQ → compressor chain from input/target pairs made with a hidden random setting;
  the convergence check for every gradient strategy (``scripts/toy_task.py``).
- ``paired``: input → target folders; encoder (``afxcli.nn``) + plain controller → normalized chain
  parameters → chain via the chosen gradient strategy → audio loss against the target.
- ``proxy``: trains a neural proxy of the chain (delegates to :func:`afxcli.grad.proxy.train_proxy`).

Flow (DESIGN.md §1): audio → model → normalized parameters ``q`` → chain (gradient strategy) → loss.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..errors import AfxError
from .config import DICT, FLOAT, INT, OPT_INT, OPT_STR, STR, Field, fraction, non_negative, one_of, optional, positive

TASKS: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: add a task under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type["Task"]:
    """The task class registered as ``name`` (one-line AfxError listing the known ones)."""
    if name not in TASKS:
        raise AfxError(f"unknown training task {name!r} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


class Task:
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    data_fields: ClassVar[dict[str, Field]] = {}
    option_fields: ClassVar[dict[str, Field]] = {}
    needs_chain: ClassVar[bool] = True
    default_chain: ClassVar[dict | None] = None

    def __init__(self, config: dict) -> None:
        self.config = config
        self.chain_spec = config.get("chain")
        self.model = self.build_model(config, self.chain_spec)

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Cross-key checks after validation (raise a one-line AfxError)."""

    @classmethod
    def build_model(cls, config: dict, chain_spec: dict | None) -> torch.nn.Module:
        raise TypeError(f"task {cls.name} must define build_model")  # pragma: no cover

    def train_dataset(self):
        raise TypeError(f"task {self.name} must define train_dataset")  # pragma: no cover

    def val_batches(self) -> list[dict]:
        return []

    def loss(self, batch: dict, step: int) -> torch.Tensor:
        raise TypeError(f"task {self.name} must define loss")  # pragma: no cover

    def val_loss(self, batch: dict) -> float:
        return float(self.loss(batch, -1))

    def on_step_end(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    #: A task with its own loop sets this to a function ``(config, out_dir, resume, quiet) -> result``.
    run: ClassVar[Callable[..., Any] | None] = None


# =============================================================================================
# Shared pieces
# =============================================================================================
def _audio_data_fields(sample_rate: int, clip_samples: int) -> dict[str, Field]:
    return {
        "sample_rate": Field(sample_rate, INT, positive, "model rate in Hz"),
        "clip_samples": Field(clip_samples, INT, lambda v: None if v >= 256 else "must be >= 256"),
        "channels": Field(1, INT, one_of(1, 2)),
        "items_per_epoch": Field(None, OPT_INT, optional(positive), "default: one per file"),
        "val_fraction": Field(0.1, FLOAT, fraction, "share of files (by path hash) for validation"),
        "min_energy": Field(1e-4, FLOAT, non_negative, "redraw crops with mean x² at or below this"),
        "cache_mb": Field(512.0, FLOAT, positive, "decoded audio kept in memory per process"),
    }


def _strategy_fields() -> dict[str, Field]:
    from ..grad.strategy import STRATEGIES

    return {
        "strategy": Field("ad", STR, one_of(*STRATEGIES), "how gradients cross the chain"),
        "strategy_options": Field({}, DICT, doc="e.g. {\"epsilon\": 0.01, \"draws\": 1} for spsa"),
        "proxy_path": Field(None, OPT_STR, doc="trained proxy checkpoint (proxy strategies)"),
        "loss": Field("mrstft", STR, doc="an afxcli.losses name: mrstft, delay_invariant, log_mel, logcosh"),
        "loss_options": Field({}, DICT),
    }


def make_audio_loss(name: str, options: dict, sample_rate: float) -> torch.nn.Module:
    """An audio loss from :func:`afxcli.losses.make_loss` (one-line AfxError for a bad name/option)."""
    from ..losses import make_loss

    try:
        return make_loss(name, sample_rate, **options)
    except (ValueError, TypeError) as e:
        raise AfxError(f"loss {name!r}: {' '.join(str(e).split())}") from None



def analyzer_from_config(config: dict, chain_spec: dict | None):
    """The analyzer (front end + encoder) a task config asks for, and the chain's number of free
    parameters: ``(analyzer, n_free)``. One-line :class:`AfxError` for bad frontend/encoder options."""
    from ..effects.chain import Chain
    from ..nn import make_analyzer

    d, o = config["data"], config["task_options"]
    n = Chain(chain_spec, d["sample_rate"]).n_free
    try:
        analyzer = make_analyzer(o["frontend"], o["encoder"], d["sample_rate"], o["frontend_options"],
                                 **o["encoder_options"])
    except (KeyError, ValueError, TypeError) as e:
        raise AfxError(f"config task_options (frontend/encoder): {' '.join(str(e).split())}") from None
    return analyzer, n

class StrategyRender:
    """The chain behind a gradient strategy: ``render(x, q)`` for training (gradients to ``q``)
    and ``inference(x, q)`` (the real chain, no grad: torch twins in exact mode, or pedalboard for
    chains with black boxes). Keeps the strategy's random stream and ε schedule as state."""

    def __init__(self, chain, strategy: str, options: dict, proxy_path: str | None, seed: int) -> None:
        from ..grad.strategy import PROXY_STRATEGIES, make_chain_fn

        self.chain, self.strategy = chain, strategy
        opts = dict(options)
        self.rng = np.random.default_rng([int(seed), 0xA5])
        if strategy in PROXY_STRATEGIES:
            from ..grad.proxy import load_proxy, make_proxy_layer

            if not proxy_path:
                raise AfxError(f"strategy {strategy!r} needs task_options.proxy_path (train one with `afx train proxy`)")
            model, proxy_chain = load_proxy(proxy_path)
            if proxy_chain.spec != chain.spec or proxy_chain.sample_rate != chain.sample_rate:
                raise AfxError(f"{proxy_path}: proxy was trained for another chain or sample rate")
            self.fn = make_proxy_layer(strategy, model, chain, **opts)
        else:
            if strategy in ("spsa", "fd"):
                opts.setdefault("stateful", False)  # clips are independent
                opts["rng"] = self.rng
            try:
                self.fn = make_chain_fn(chain, strategy, **opts)
            except TypeError as e:
                raise AfxError(f"strategy {strategy!r}: {' '.join(str(e).split())}") from None

    def render(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.fn(x, q)

    def inference(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.chain.differentiable:
                return self.chain(x, q, mode="exact")
            from ..grad.proxy import render_real

            return render_real(self.chain, x, q)

    def step(self) -> None:
        step = getattr(self.fn, "step", None)
        if step is not None:
            step()

    def state_dict(self) -> dict:
        st: dict[str, Any] = {"rng": copy.deepcopy(self.rng.bit_generator.state)}
        eps = getattr(self.fn, "epsilon", None)
        if eps is not None and hasattr(eps, "state_dict"):
            st["epsilon"] = eps.state_dict()
        return _jsonable(st)

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:
            self.rng.bit_generator.state = _from_jsonable(state["rng"])
        eps = getattr(self.fn, "epsilon", None)
        if "epsilon" in state and eps is not None and hasattr(eps, "load_state_dict"):
            eps.load_state_dict(state["epsilon"])


def _jsonable(x: Any) -> Any:
    """Big ints (PCG64 state) as strings, so the checkpoint stays weights_only-loadable."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 2 ** 63:
        return {"__bigint__": str(x)}
    return x


def _from_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__bigint__"}:
            return int(x["__bigint__"])
        return {k: _from_jsonable(v) for k, v in x.items()}
    return x


class ChainTask(Task):
    """A task that drives a chain through a gradient strategy: builds ``self.chain`` (at the data
    rate), ``self.render`` (:class:`StrategyRender`) and ``self.loss_fn`` from the config, and
    carries the strategy's state (SPSA random stream, ε schedule) through checkpoints."""

    def _setup_chain(self, config: dict, what: str) -> None:
        from ..effects.chain import Chain

        d, o = config["data"], config["task_options"]
        self.chain = Chain(self.chain_spec, d["sample_rate"])
        if self.chain.n_free == 0:
            raise AfxError(f"{what} task: the chain has no free parameters")
        self.render = StrategyRender(self.chain, o["strategy"], o["strategy_options"], o["proxy_path"], config["seed"])
        self.loss_fn = make_audio_loss(o["loss"], o["loss_options"], d["sample_rate"])

    def on_step_end(self, step: int) -> None:
        self.render.step()

    def state_dict(self) -> dict:
        return {"render": self.render.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "render" in state:
            self.render.load_state_dict(state["render"])


# =============================================================================================
# toy
# =============================================================================================
class StaticSetting(torch.nn.Module):
    """One chain setting for every input: ``forward(x (batch, C, T)) -> q (batch, P)`` in (0, 1).

    ``kind="vector"``: a free logit vector, ``q = sigmoid(θ)``; ``kind="net"``: a tiny MLP on a
    constant input, ``q = sigmoid(W₂ tanh(W₁·1 + b₁) + b₂)``. Both start at ``q = 0.5`` (mid-range:
    no prior about the hidden setting)."""

    def __init__(self, n_params: int, kind: str = "vector", hidden: int = 16) -> None:
        super().__init__()
        self.kind = kind
        if kind == "vector":
            self.logits = torch.nn.Parameter(torch.zeros(n_params))
        elif kind == "net":
            self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_params))
            with torch.no_grad():
                self.net[2].weight.mul_(0.1)
                self.net[2].bias.zero_()
        else:
            raise AfxError(f"toy model must be 'vector' or 'net', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vector":
            z = self.logits
        else:
            z = self.net(torch.ones(1, 1, dtype=self.net[0].weight.dtype))[0]
        return torch.sigmoid(z).unsqueeze(0).expand(x.shape[0], -1)


#: The toy chain: a 1-peak parametric EQ with shelves → a compressor; 6 free parameters.
TOY_CHAIN = {"effects": [
    {"type": "peq", "label": "eq", "options": {"n_peaks": 1},
     "free": {"low_shelf_gain_db": {"min": -12, "max": 12}, "peak1_freq_hz": {"min": 200, "max": 4000},
              "peak1_gain_db": {"min": -12, "max": 12}, "high_shelf_gain_db": {"min": -12, "max": 12}}},
    {"type": "compressor", "label": "comp", "fixed": {"attack_ms": 5.0, "release_ms": 100.0},
     "free": {"threshold_db": {"min": -36, "max": -6}, "ratio": {"min": 1.5, "max": 8}}},
]}


def hidden_setting(n_params: int, seed: int, low: float = 0.15, high: float = 0.85) -> torch.Tensor:
    """The toy task's hidden normalized setting ``(1, P)`` (uniform in ``[low, high]`` by seed)."""
    return torch.from_numpy(np.random.default_rng([int(seed), 0x70F]).uniform(low, high, (1, n_params))).float()


@register_task
class ToyTask(ChainTask):
    """Learn a static chain setting from pairs made with a hidden random setting (generated music)."""

    name = "toy"
    default_chain = TOY_CHAIN
    data_fields = {
        "sample_rate": Field(22050, INT, positive),
        "clip_samples": Field(8192, INT, lambda v: None if v >= 256 else "must be >= 256"),
        "channels": Field(1, INT, one_of(1, 2)),
        "items_per_epoch": Field(256, INT, positive),
        "val_items": Field(8, INT, positive),
        "kind": Field("music", STR, one_of("music", "noise", "sine")),
    }
    option_fields = {**_strategy_fields(),
                     "model": Field("vector", STR, one_of("vector", "net")),
                     "hidden_seed": Field(1234, INT, non_negative, "seed of the hidden setting")}

    @classmethod
    def build_model(cls, config: dict, chain_spec: dict | None) -> torch.nn.Module:
        from ..effects.chain import Chain

        n = Chain(chain_spec, config["data"]["sample_rate"]).n_free
        return StaticSetting(n, config["task_options"]["model"])

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self._setup_chain(config, "toy")
        self.q_hidden = hidden_setting(self.chain.n_free, config["task_options"]["hidden_seed"])

    def _dataset(self, seed_offset: int, items: int):
        from .data import GeneratedDataset

        d = self.config["data"]
        return GeneratedDataset(d["sample_rate"], d["clip_samples"], d["channels"], items,
                                seed=int(self.config["seed"]) * 7919 + seed_offset, kind=d["kind"])

    def train_dataset(self):
        return self._dataset(0, self.config["data"]["items_per_epoch"])

    def val_batches(self) -> list[dict]:
        from .data import fixed_batches

        d = self.config["data"]
        return fixed_batches(self._dataset(1, d["val_items"]), self.config["batch_size"], d["val_items"])

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden setting rendered by the real chain (no grad)."""
        return self.render.inference(x, self.q_hidden.expand(x.shape[0], -1))

    def loss(self, batch: dict, step: int) -> torch.Tensor:
        x = batch["input"]
        q = self.model(x)
        return self.loss_fn(self.render.render(x, q), self.target(x))

    def val_loss(self, batch: dict) -> float:
        x = batch["input"]
        return float(self.loss_fn(self.render.inference(x, self.model(x)), self.target(x)))

    def parameter_error(self) -> float:
        """Mean |q − q_hidden| of the learned setting (normalized units)."""
        with torch.no_grad():
            return float((self.model(torch.zeros(1, 1, 1)) - self.q_hidden).abs().mean())



# =============================================================================================
# paired
# =============================================================================================
@register_task
class PairedTask(ChainTask):
    """Learn to drive a chain so that input → target, from paired folders (files matched by name).

    Model: an analyzer from :mod:`afxcli.nn` (front end + encoder) and a plain controller
    (:class:`afxcli.nn.BlindModel`) predicting one normalized setting per clip; the chain renders
    the input with it through the chosen gradient strategy; the audio loss compares with the
    target (both at the model rate ``data.sample_rate``). Validation renders the real chain on
    fixed crops of the validation files (split by path hash)."""

    name = "paired"
    data_fields = {
        **_audio_data_fields(24000, 65536),
        "input_dir": Field(None, OPT_STR, doc="folder of unprocessed audio"),
        "target_dir": Field(None, OPT_STR, doc="folder of processed audio, same relative names"),
        "val_items": Field(16, INT, positive, "validation crops (fixed)"),
    }
    option_fields = {
        **_strategy_fields(),
        "frontend": Field("logmel", STR, doc="afxcli.nn front end: logmel, stft, cqt"),
        "encoder": Field("mobilenet", STR, doc="afxcli.nn encoder: mobilenet, tf"),
        "frontend_options": Field({}, DICT),
        "encoder_options": Field({}, DICT),
        "hidden": Field([256, 256], (list,), lambda v: None if all(isinstance(h, int) and h > 0 for h in v)
                        else "must be a list of positive integers", "controller MLP widths"),
    }

    @classmethod
    def check_config(cls, config: dict) -> None:
        for k in ("input_dir", "target_dir"):
            if not config["data"][k]:
                raise AfxError(f"config data.{k}: required for the paired task")

    @classmethod
    def build_model(cls, config: dict, chain_spec: dict | None) -> torch.nn.Module:
        from ..nn import BlindModel

        analyzer, n = analyzer_from_config(config, chain_spec)
        return BlindModel(analyzer, n, tuple(config["task_options"]["hidden"]))

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self._setup_chain(config, "paired")

    def _dataset(self, split: str, items: int | None):
        from .data import PairedFolderDataset

        d = self.config["data"]
        return PairedFolderDataset(d["input_dir"], d["target_dir"], d["sample_rate"], d["clip_samples"],
                                   d["channels"], split=split, val_fraction=d["val_fraction"],
                                   seed=self.config["seed"], items_per_epoch=items, min_energy=d["min_energy"],
                                   cache_mb=d["cache_mb"])

    def train_dataset(self):
        return self._dataset("train", self.config["data"]["items_per_epoch"])

    def val_batches(self) -> list[dict]:
        from .data import fixed_batches

        d = self.config["data"]
        if d["val_fraction"] == 0:
            return []
        return fixed_batches(self._dataset("val", d["val_items"]), self.config["batch_size"], d["val_items"])

    def loss(self, batch: dict, step: int) -> torch.Tensor:
        x, y = batch["input"], batch["target"]
        return self.loss_fn(self.render.render(x, self.model(x)), y)

    def val_loss(self, batch: dict) -> float:
        x, y = batch["input"], batch["target"]
        return float(self.loss_fn(self.render.inference(x, self.model(x)), y))



# =============================================================================================
# proxy (own loop: afxcli.grad.proxy.train_proxy)
# =============================================================================================
def _run_proxy(config: dict, out_dir: str | Path, resume: bool = True, quiet: bool = False, **_: Any):
    from ..grad.proxy import train_proxy

    d, o = config["data"], config["task_options"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "proxy.pt"
    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True, file=__import__("sys").stderr))
    model, history = train_proxy(
        config["chain"], d["sample_rate"], audio_source=d["audio_dir"], steps=config["steps"],
        batch=config["batch_size"], clip_samples=d["clip_samples"], lr=config["lr"], seed=config["seed"],
        checkpoint_path=path, resume=resume, model_config=o["model"] or None,
        checkpoint_every=config["checkpoint_every_steps"] or config["steps"],
        val_every=config["val_every_steps"] or config["steps"], val_items=o["val_items"],
        time_weight=o["time_weight"], workers=max(1, config["workers"]), log=say)
    vals = [h for h in history if "val_loss" in h]
    from .loop import TrainResult

    return TrainResult(out, path, path, int(history[-1]["step"]) if history else 0, config["steps"], "finished",
                       min((h["val_loss"] for h in vals), default=None), None,
                       [{"step": h["step"], "val_loss": h["val_loss"]} for h in vals])


@register_task
class ProxyTask(Task):
    """Train a neural proxy of the chain (DeepAFx-ST §3.5) with :func:`afxcli.grad.proxy.train_proxy`;
    ``afx train proxy`` writes ``OUT/proxy.pt`` (a proxy checkpoint, usable as ``proxy_path``)."""

    name = "proxy"
    data_fields = {
        "sample_rate": Field(24000, INT, positive),
        "clip_samples": Field(16384, INT, lambda v: None if v >= 16 else "must be >= 16"),
        "audio_dir": Field(None, OPT_STR, doc="audio folder; default generated signals"),
    }
    option_fields = {
        "model": Field({}, DICT, doc="ProxyConfig fields: width, kernel_size, dilations, causal, gain_output…"),
        "val_items": Field(16, INT, positive),
        "time_weight": Field(100.0, FLOAT, non_negative, "α of DeepAFx-ST §3.4"),
    }
    run = staticmethod(_run_proxy)

    @classmethod
    def build_model(cls, config: dict, chain_spec: dict | None) -> torch.nn.Module:
        from ..effects.chain import Chain
        from ..grad.proxy import ProxyConfig, ProxyTCN

        n = Chain(chain_spec, config["data"]["sample_rate"]).n_free
        return ProxyTCN(ProxyConfig(**{"n_params": n, **config["task_options"]["model"]}))


# style (DeepAFx-ST self-supervised style transfer) registers itself on import
from . import style as _style  # noqa: E402,F401
