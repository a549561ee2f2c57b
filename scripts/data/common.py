"""Helpers shared by the corpus builders in scripts/data (not part of the afx package).

- :func:`fetch_debs` downloads Debian packages with ``apt-get download`` into
  ``<cache>/corpora/_debs`` (kept, so a resumed build does not download again) and
  :func:`unpack_deb` unpacks one with ``dpkg-deb -x`` into a temporary folder — nothing is installed.
- :func:`package_license` reads a package's licence from its ``copyright`` file: the
  ``License:`` of the ``Files: *`` stanza for machine-readable (DEP-5) files, else the licence the
  prose names (GPL-2+, MIT, …); the full copyright file is copied next to the corpus in
  ``licenses/<package>.copyright``.
- :func:`audio_info` gives (duration_s, sample_rate, channels) of a file soundfile can read.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from afxcli import datasets  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--limit", type=int, default=None,
                   help="build at most N audio items per source (quick partial build)")
    p.add_argument("--val-fraction", type=float, default=datasets.DEFAULT_VAL_FRACTION,
                   help="share of the duration kept for validation (by group)")
    return p


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command, raising with its stderr tail on failure."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): {res.stderr[-800:]}")
    return res


def debs_dir() -> Path:
    d = datasets.corpora_dir() / "_debs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def package_version(package: str) -> str:
    """Candidate version apt would download (``apt-cache policy``)."""
    out = run(["apt-cache", "policy", package]).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        raise RuntimeError(f"Debian package {package} not found; run 'apt-get update' first")
    return m.group(1)


def fetch_deb(package: str) -> Path:
    """The .deb of ``package`` in the cache, downloaded with ``apt-get download`` if absent."""
    version = package_version(package)
    d = debs_dir()
    # apt escapes ':' in epochs as %3a in file names
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = sorted(d.glob(pattern))
    if found:
        return found[0]
    log(f"  apt-get download {package}={version}")
    os.chmod(d, 0o777)  # lets apt's sandbox user write there (no 'unsandboxed' warning)
    run(["apt-get", "download", f"{package}={version}"], cwd=d)
    found = sorted(d.glob(pattern))
    if not found:
        raise RuntimeError(f"apt-get download {package} left no {pattern} in {d}")
    return found[0]


def unpack_deb(package: str, dest: Path) -> tuple[Path, str]:
    """Unpack ``package``'s .deb under ``dest/package`` (dpkg-deb -x); returns (root, version)."""
    deb = fetch_deb(package)
    root = dest / package
    if not root.is_dir():
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(root)])
    return root, package_version(package)


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder under the cache (same disk as the corpora; removed at exit)."""
    base = datasets.corpora_dir() / "_tmp"
    base.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)


def ensure_apt(packages: list[str]) -> None:
    """``apt-get install -y`` the packages whose status is not 'installed' (tools: fluidsynth…)."""
    missing = []
    for p in packages:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in res.stdout:
            missing.append(p)
    if missing:
        log(f"  apt-get install {' '.join(missing)}")
        run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


_PROSE_LICENSES = [
    (r"GNU General Public License.{0,200}?version 2.{0,80}?any later version", "GPL-2+"),
    (r"GNU General Public License.{0,200}?version 3.{0,80}?any later version", "GPL-3+"),
    (r"GNU General Public License.{0,200}?version 2", "GPL-2"),
    (r"MIT license", "MIT"),
    (r"Creative Commons Attribution[- ]Share ?Alike", "CC-BY-SA"),
    (r"public domain", "public-domain"),
]


def license_from_copyright(text: str) -> str:
    """Licence of a package from its copyright file's text (see module docstring)."""
    if text.startswith("Format:"):
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
                m = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
                if m:
                    return m.group(1).strip()
    flat = re.sub(r"\s+", " ", text)
    for pattern, name in _PROSE_LICENSES:
        if re.search(pattern, flat, re.I):
            return name
    return "see licenses/<package>.copyright"


def package_license(root: Path, package: str, corpus: Path) -> str:
    """Licence of an unpacked package; copies its copyright file to ``corpus/licenses``."""
    src = root / "usr/share/doc" / package / "copyright"
    if not src.is_file():
        return "unknown (no copyright file)"
    dst = corpus / "licenses" / f"{package}.copyright"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return license_from_copyright(src.read_text(encoding="utf-8", errors="replace"))


def audio_info(path: Path) -> tuple[float, int, int]:
    """(duration_s, sample_rate, channels) from the file header (soundfile)."""
    import soundfile as sf
    info = sf.info(str(path))
    return info.frames / info.samplerate, int(info.samplerate), int(info.channels)


def mark_added(item: dict, added: bool) -> dict:
    """``item``, marked ``"train_only"`` when ``added`` (a source added after the corpus's first
    build: :func:`afxcli.datasets.assign_splits` keeps it out of validation, and training uses it
    only with ``data.added_sources``)."""
    if added:
        item["train_only"] = True
    return item


def load_items(corpus: Path) -> dict[str, dict]:
    """Items of an existing (possibly partial) manifest by file, so a resumed build keeps them."""
    import json
    path = corpus / datasets.MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return {it["file"]: it for it in json.loads(path.read_text())["items"]}
    except (ValueError, KeyError, TypeError):
        return {}
