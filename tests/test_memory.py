"""The CLI's process memory policy (afxcli/memory.py)."""
import os
import platform
import subprocess
import sys

import pytest

SNIPPET = """
import json, sys
from afxcli.memory import tune_for_batch_rendering
applied = tune_for_batch_rendering()
from numpy._core.multiarray import _set_madvise_hugepage
print(json.dumps({"applied": applied, "numpy_hugepage_was": bool(_set_madvise_hugepage(True))}))
"""


def _run(env_extra: dict) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("NUMPY_MADVISE_HUGEPAGE", "MALLOC_TOP_PAD_")}
    env.update(env_extra)
    r = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_policy_turns_numpy_hugepage_advice_off():
    out = _run({})
    assert out["applied"]["numpy_hugepage_off"] is True
    assert out["numpy_hugepage_was"] is False     # NumPy's own flag, read back after the call


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_policy_sets_glibc_top_pad():
    assert _run({})["applied"]["glibc_top_pad"] is True


def test_policy_leaves_a_users_own_settings_alone():
    out = _run({"NUMPY_MADVISE_HUGEPAGE": "1", "MALLOC_TOP_PAD_": "131072"})
    assert out["applied"] == {"numpy_hugepage_off": False, "glibc_top_pad": False}
    assert out["numpy_hugepage_was"] is True      # the user's NUMPY_MADVISE_HUGEPAGE=1 stands
