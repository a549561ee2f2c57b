"""Built training corpora: where they live, their manifests and their fixed train/validation split.

The corpora themselves are built by the recipes in ``scripts/data/`` (``build_<name>.py``; see
``scripts/data/README.md``) from Debian and PyPI packages into the user cache,
``platformdirs.user_cache_dir("afx")/corpora/<name>/`` — never into the repository. Set
``AFX_CACHE_DIR`` to use another cache root (the corpora then live in ``$AFX_CACHE_DIR/corpora``).

Each corpus folder holds its audio and a ``manifest.json``::

    {"format": 1, "corpus": "speech", "val_fraction": 0.1, "split_rule": "...",
     "items": [{"file": "asterisk/en/vm-deleted.flac",   # relative to the corpus folder
                "duration_s": 1.42, "sample_rate": 16000, "channels": 1,
                "group": "asterisk/Allison",             # track or speaker: the split unit
                "source": {"package": "asterisk-core-sounds-en-g722", "version": "1.6.1-1"},
                "license": "CC-BY-SA-3.0", "split": "train"}, ...]}

Multitrack items also carry ``"stems"``: relative paths of the per-channel stems whose sum is the
``"file"`` (``mix.flac``).

The split is fixed **by group** (a track for music, a speaker/voice for speech), so no piece or
voice is on both sides (DeepAFx-ST §3.1 splits by recording). :func:`assign_splits` walks the
groups in the order of a SHA-1 hash of their name and moves a group to validation while the
validation audio stays within ``val_fraction`` of the total duration; a group that would overflow
that budget stays in training. Deterministic: the same files give the same split on any machine.
An item marked ``"train_only": true`` (a source added to a corpus after its first build) puts its
group in training and out of the budget, so adding training audio never changes the validation set
— nor any figure measured on it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import platformdirs

from .atomic import write_text_atomic
from .errors import AfxError

#: Corpora the recipes build, with the command that builds each.
CORPORA: dict[str, str] = {
    "music_mastered": "python scripts/data/build_music_mastered.py",
    "music_multitrack": "python scripts/data/build_music_multitrack.py",
    "speech": "python scripts/data/build_speech.py",
}
SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.1
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SPLIT_RULE = ("groups (track or speaker) in ascending SHA-1 order go to validation while the "
              "validation duration stays <= val_fraction of the total; the rest is training")
#: The ``"hash"`` rule of :func:`assign_splits`: each group on its own, whatever else is built.
HASH_SPLIT_RULE = ("a group (track or work) goes to validation when the SHA-1 fraction of its name "
                   "is below val_fraction, independently of every other group; the rest is training")
SPLIT_RULES = {"budget": SPLIT_RULE, "hash": HASH_SPLIT_RULE}


def cache_dir() -> Path:
    """afx's cache root: ``$AFX_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("afx")``."""
    env = os.environ.get("AFX_CACHE_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("afx"))


def corpora_dir() -> Path:
    """Folder holding every built corpus: ``cache_dir()/corpora``."""
    return cache_dir() / "corpora"


def corpus_dir(name: str) -> Path:
    """Folder of corpus ``name`` (it may not be built yet)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise AfxError(f"invalid corpus name {name!r}")
    return corpora_dir() / name


def _build_hint(name: str) -> str:
    cmd = CORPORA.get(name)
    if cmd is None:
        return f"known corpora: {', '.join(sorted(CORPORA))}"
    return f"build it with: {cmd}  (or bash scripts/data/build_all.sh)"


def group_fraction(group: str) -> float:
    """Stable hash of a group name as a fraction in [0, 1) (first 8 bytes of SHA-1 of UTF-8)."""
    return int.from_bytes(hashlib.sha1(group.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def assign_splits(items: list[dict], val_fraction: float = DEFAULT_VAL_FRACTION,
                  rule: str = "budget") -> list[dict]:
    """Set ``item["split"]`` to ``"train"`` or ``"val"`` by group, in place; returns ``items``.

    ``rule="hash"``: a group is validation when its :func:`group_fraction` is below
    ``val_fraction`` (and it has no ``"train_only"`` item). Each group's split depends on its name
    alone, so a partial build (``--limit``, a piece that failed or timed out on a slower machine)
    splits every piece it has exactly as the full build does; the validation share is
    ``val_fraction`` of the groups on average, not of the audio.

    ``rule="budget"`` (default): each item needs ``"group"`` and ``"duration_s"``. Groups are visited in ascending
    :func:`group_fraction` order (ties by name); a group joins validation when the validation
    duration plus the group's duration stays ``<= val_fraction * total``. So every group is
    entirely on one side, the validation share is at most ``val_fraction`` (close to it when
    groups are many and small) and the result depends only on the groups and their durations.
    A group with any item marked ``"train_only": true`` is training and counts neither toward the
    total nor the validation audio: adding such items leaves every other item's split unchanged.
    """
    if not 0 <= val_fraction < 1:
        raise AfxError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if rule not in SPLIT_RULES:
        raise AfxError(f"split rule must be one of {sorted(SPLIT_RULES)}, got {rule!r}")
    train_only = {str(item.get("group")) for item in items if item.get("train_only")}
    if rule == "hash":
        for item in items:
            if "group" not in item:
                raise AfxError(f"manifest item without a group: {item!r}")
            group = str(item["group"])
            item["split"] = ("val" if group not in train_only and group_fraction(group) < val_fraction
                             else "train")
        return items
    durations: dict[str, float] = {}
    for item in items:
        try:
            group, dur = str(item["group"]), float(item["duration_s"])
        except (KeyError, TypeError, ValueError) as e:
            raise AfxError(f"manifest item without a valid group/duration_s: {item!r}") from e
        if group not in train_only:
            durations[group] = durations.get(group, 0.0) + max(dur, 0.0)
    budget_s = val_fraction * sum(durations.values())
    val_groups: set[str] = set()
    val_s = 0.0
    for group in sorted(durations, key=lambda g: (group_fraction(g), g)):
        if val_s + durations[group] <= budget_s:
            val_groups.add(group)
            val_s += durations[group]
    for item in items:
        item["split"] = "val" if str(item["group"]) in val_groups else "train"
    return items


def write_manifest(directory: str | Path, name: str, items: list[dict],
                   val_fraction: float = DEFAULT_VAL_FRACTION, extra: dict | None = None,
                   rule: str = "budget") -> Path:
    """Assign splits (:func:`assign_splits` by ``rule``) and write ``directory/manifest.json``
    atomically (items sorted by file)."""
    directory = Path(directory)
    items = sorted(items, key=lambda it: it["file"])
    assign_splits(items, val_fraction, rule)
    doc = {"format": MANIFEST_FORMAT, "corpus": name, "val_fraction": val_fraction,
           "split_rule": SPLIT_RULES[rule], **(extra or {}), "items": items}
    path = directory / MANIFEST_NAME
    write_text_atomic(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def load_manifest(name: str) -> list[dict]:
    """The items of corpus ``name``'s manifest (dicts as described in the module docstring).

    Raises a one-line :class:`AfxError` naming the build command when the corpus is not built,
    and when the manifest is unreadable or malformed.
    """
    path = corpus_dir(name) / MANIFEST_NAME
    if not path.is_file():
        raise AfxError(f"corpus {name!r} is not built (no {path}); {_build_hint(name)}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AfxError(f"{path}: unreadable manifest ({e}); {_build_hint(name)}") from e
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise AfxError(f"{path}: manifest has no 'items' list; {_build_hint(name)}")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) \
                or item.get("split") not in SPLITS:
            raise AfxError(f"{path}: malformed item {item!r} (needs 'file' and 'split' in {SPLITS})")
    return items


def _selected(name: str, split: str | None, added: bool | str) -> list[dict]:
    if split is not None and split not in SPLITS:
        raise AfxError(f"split must be one of {SPLITS} or None, got {split!r}")
    if added not in (True, False, "only"):
        raise AfxError(f"added must be True, False or 'only', got {added!r}")
    keep = ((lambda it: bool(it.get("train_only"))) if added == "only" else
            (lambda it: True) if added else (lambda it: not it.get("train_only")))
    return [it for it in load_manifest(name) if (split is None or it["split"] == split) and keep(it)]


def files(name: str, split: str | None = None, *, check: bool = True, added: bool | str = True) -> list[Path]:
    """Absolute paths of corpus ``name``'s audio files in ``split`` ("train", "val" or None = all).

    For multitrack corpora these are the mixes (each item's ``"file"``); its stems are in the
    item's ``"stems"`` (see :func:`load_manifest`). With ``check``, a listed file that is missing
    raises :class:`AfxError` (a partly deleted cache). ``added=False`` leaves out the items of
    sources added after the corpus's first build (``"train_only"``), e.g. to retrain a model
    on the data it was trained with; ``added="only"`` keeps only those (audio that a model trained
    on the first build never saw: ``benchmarks/style_eval.py --split added``).
    """
    root = corpus_dir(name)
    out = [root / it["file"] for it in _selected(name, split, added)]
    if check:
        for p in out:
            if not p.is_file():
                raise AfxError(f"{p}: listed in corpus {name!r} but missing; {_build_hint(name)}")
    return out


def groups(name: str, split: str | None = None, *, added: bool | str = True) -> list[str]:
    """The group (track or speaker) of each file :func:`files` returns, in the same order."""
    return [str(it.get("group", it["file"])) for it in _selected(name, split, added)]


def summary(name: str) -> dict[str, dict[str, float]]:
    """Per split: number of items, hours of audio and number of groups, e.g. for a README."""
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, set] = {}
    for it in load_manifest(name):
        s = out.setdefault(it["split"], {"items": 0, "hours": 0.0, "groups": 0})
        s["items"] += 1
        s["hours"] += float(it.get("duration_s", 0.0)) / 3600.0
        groups.setdefault(it["split"], set()).add(it.get("group", it["file"]))
    for split, gs in groups.items():
        out[split]["groups"] = len(gs)
    return out


def available() -> list[str]:
    """Names of the corpora that have a manifest in the cache."""
    root = corpora_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST_NAME}"))

