"""Training configuration: a JSON (or TOML) file merged over defaults and validated.

A config is one object with the loop's settings at the top level and two sections whose keys
belong to the task (``data`` and ``task``)::

    {"seed": 0, "steps": 2000, "batch_size": 4, "lr": 1e-3, "schedule": "one_cycle",
     "val_every_steps": 100, "checkpoint_every_steps": 100,
     "data": {"input_dir": "raw/", "target_dir": "mastered/", "clip_samples": 65536},
     "task": {"strategy": "ad", "loss": "mrstft"},
     "chain": {"effects": [{"type": "peq"}, {"type": "compressor"}]}}

``chain`` is a chain spec (object) or the path of a chain-spec JSON file (relative paths are
resolved against the config file's folder, as are ``*_dir`` data paths).

Every problem (an unknown key, a value of the wrong type or out of range, an unreadable file)
raises :class:`~afxcli.errors.AfxError` with one line naming the key.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import AfxError


@dataclass(frozen=True)
class Field:
    """One config key: its default, accepted type(s) and an optional check ``(value) -> error or None``."""

    default: Any
    types: tuple[type, ...]
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def open_fraction(v: Any) -> str | None:
    return None if 0 < v < 1 else "must be in (0, 1)"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}"
    return check


def optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


INT = (int,)
FLOAT = (int, float)
STR = (str,)
BOOL = (bool,)
DICT = (dict,)
OPT_INT = (int, type(None))
OPT_FLOAT = (int, float, type(None))
OPT_STR = (str, type(None))

#: The loop's own keys (top level of a config).
LOOP_FIELDS: dict[str, Field] = {
    "task": Field(None, OPT_STR, doc="task name (the CLI's TASK argument wins)"),
    "seed": Field(0, INT, non_negative, "seed for parameters, data crops and strategy draws"),
    "steps": Field(1000, INT, positive, "optimizer steps in total"),
    "batch_size": Field(4, INT, positive),
    "optimizer": Field("adam", STR, one_of("adam", "adamw")),
    "lr": Field(1e-3, FLOAT, positive, "peak learning rate"),
    "weight_decay": Field(0.0, FLOAT, non_negative),
    "betas": Field([0.9, 0.999], (list,), lambda v: None if len(v) == 2 and all(
        isinstance(b, (int, float)) and 0 <= b < 1 for b in v) else "must be two numbers in [0, 1)"),
    "schedule": Field("constant", STR, one_of("constant", "cosine", "one_cycle")),
    "warmup_steps": Field(0, INT, non_negative, "linear warm-up (constant, cosine)"),
    "min_lr_fraction": Field(0.0, FLOAT, fraction, "cosine: final lr as a fraction of lr"),
    "one_cycle_pct_start": Field(0.3, FLOAT, open_fraction, "one-cycle: fraction of steps rising"),
    "one_cycle_div_factor": Field(25.0, FLOAT, lambda v: None if v >= 1 else "must be >= 1"),
    "one_cycle_final_div_factor": Field(1e4, FLOAT, lambda v: None if v >= 1 else "must be >= 1"),
    "grad_clip_norm": Field(4.0, OPT_FLOAT, optional(positive), "max global grad norm (DeepAFx-ST: 4.0)"),
    "val_every_steps": Field(100, INT, non_negative, "0 = validate only at the end"),
    "patience": Field(0, INT, non_negative, "validations without improvement before stopping; 0 = off"),
    "min_delta": Field(0.0, FLOAT, non_negative, "improvement smaller than this does not count"),
    "checkpoint_every_steps": Field(100, INT, non_negative, "0 = only at the end"),
    "log_every_steps": Field(1, INT, positive),
    "workers": Field(0, INT, non_negative, "DataLoader worker processes"),
    "threads": Field(None, OPT_INT, optional(positive), "torch intra-op threads"),
    "max_seconds": Field(None, OPT_FLOAT, optional(positive), "stop (checkpointed, resumable) after this wall time"),
    "chain": Field(None, (dict, list, str, type(None)), doc="chain spec or path to one"),
    "init_weights": Field(None, OPT_STR, doc="fine-tune: a checkpoint (a run's best.pt, a shipped model) "
                          "whose model weights a fresh run starts from (same architecture)"),
    "data": Field({}, DICT),
    "task_options": Field({}, DICT),
}

def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "an object", list: "a list", type(None): "null"}
    if types == FLOAT:
        return "a number"
    if types == OPT_FLOAT:
        return "a number or null"
    return " or ".join(names.get(t, t.__name__) for t in types)


def validate_section(given: Mapping[str, Any], fields: Mapping[str, Field], where: str) -> dict:
    """Merge ``given`` over the fields' defaults and check each value (one-line AfxError naming the key)."""
    at = "config" if where == "top level" else f"config {where}"
    if not isinstance(given, Mapping):
        raise AfxError(f"{at}: must be an object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise AfxError(f"{at}: unknown key(s) {', '.join(unknown)} "
                       f"(known: {', '.join(sorted(fields))})")
    out: dict[str, Any] = {}
    for key, f in fields.items():
        v = copy.deepcopy(given[key]) if key in given else copy.deepcopy(f.default)
        name = f"{where}.{key}" if where != "top level" else key
        # bool is an int subclass: never accept it for numbers, nor numbers for bools
        if isinstance(v, bool) and bool not in f.types:
            raise AfxError(f"config {name}: must be {_type_name(f.types)}, got {json.dumps(v)}")
        if not isinstance(v, f.types):
            raise AfxError(f"config {name}: must be {_type_name(f.types)}, got {json.dumps(v, default=str)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise AfxError(f"config {name}: must be finite, got {v}")
        if f.types in (FLOAT, OPT_FLOAT) and isinstance(v, int):
            v = float(v)
        if f.check is not None and v is not None:
            problem = f.check(v)
            if problem:
                raise AfxError(f"config {name}: {problem}, got {json.dumps(v, default=str)}")
        out[key] = v
    return out


def read_config_file(path: str | Path) -> dict:
    """Parse a JSON (``.json``) or TOML (``.toml``) config file into a dict (no validation)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise AfxError(f"{p}: no such config file") from None
    except IsADirectoryError:
        raise AfxError(f"{p}: is a folder, not a config file") from None
    except OSError as e:
        raise AfxError(f"{p}: cannot read config ({e.strerror or e})") from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text.decode("utf-8"))
        else:
            data = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise AfxError(f"{p}: config is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise AfxError(f"{p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except Exception as e:  # tomllib.TOMLDecodeError
        raise AfxError(f"{p}: invalid TOML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise AfxError(f"{p}: a config must be an object at the top level")
    return data


def _resolve_paths(cfg: dict, base: Path) -> None:
    """Make relative data paths (keys ending in ``_dir``/``_dirs``/``_path``) and a chain path absolute."""
    def fix(v: Any) -> Any:
        if isinstance(v, str) and v and not Path(v).is_absolute():
            return str((base / v).resolve())
        return v

    if not isinstance(cfg.get("data", {}), dict) or not isinstance(cfg.get("task_options", {}), dict):
        return  # validation reports it
    for k, v in list(cfg.get("data", {}).items()):
        if k.endswith(("_dir", "_path")):
            cfg["data"][k] = fix(v)
        elif k.endswith("_dirs") and isinstance(v, list):
            cfg["data"][k] = [fix(x) for x in v]
    for k, v in list(cfg.get("task_options", {}).items()):
        if k.endswith(("_dir", "_path")):
            cfg["task_options"][k] = fix(v)
    if isinstance(cfg.get("chain"), str):
        cfg["chain"] = fix(cfg["chain"])


def resolve_chain(chain: Any) -> dict | None:
    """A chain spec given inline or as a path -> the validated spec (or None)."""
    from ..effects.chain import load_chain_spec, normalize_spec

    if chain is None:
        return None
    if isinstance(chain, str):
        return load_chain_spec(chain)
    try:
        return normalize_spec(chain)
    except AfxError as e:
        raise AfxError(f"config chain: {e}") from None


def validate_config(raw: Mapping[str, Any], task: str | None = None) -> dict:
    """Validate a whole config dict: loop keys, then the task's ``data`` and ``task_options`` sections.

    ``task`` (the CLI's TASK) overrides the config's own ``task`` key. Returns the complete config
    with every default filled in and the chain spec inlined.
    """
    from .tasks import get_task

    cfg = validate_section(raw, LOOP_FIELDS, "top level")
    name = task or cfg["task"]
    if not name:
        raise AfxError("config: no task given (pass TASK or set \"task\" in the config)")
    if cfg["task"] and task and cfg["task"] != task:
        raise AfxError(f"config task is {cfg['task']!r} but {task!r} was asked for")
    cls = get_task(name)
    cfg["task"] = name
    cfg["data"] = validate_section(cfg["data"], cls.data_fields, "data")
    cfg["task_options"] = validate_section(cfg["task_options"], cls.option_fields, "task_options")
    cfg["chain"] = resolve_chain(cfg["chain"])
    if cfg["chain"] is None and cls.needs_chain:
        if cls.default_chain is None:
            raise AfxError(f"config: task {name!r} needs a \"chain\" (a chain spec or a path to one)")
        cfg["chain"] = resolve_chain(cls.default_chain)
    cls.check_config(cfg)
    return cfg


def load_config(path: str | Path | None, task: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a config file (or none: defaults only), apply top-level ``overrides`` and validate."""
    raw: dict = {}
    if path is not None:
        raw = read_config_file(path)
        _resolve_paths(raw, Path(path).resolve().parent)
    if overrides:
        raw = {**raw, **overrides}
    return validate_config(raw, task)
