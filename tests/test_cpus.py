"""afxcli.cpus.free_cores: the present runnable count, not the lagging load average."""
from __future__ import annotations

import afxcli.cpus as cpus


def _loadavg(tmp_path, running: int, avg: float = 3.0):
    p = tmp_path / "loadavg"
    p.write_text(f"{avg:.2f} {avg:.2f} {avg:.2f} {running}/300 12345\n")
    return str(p)


def test_free_cores_counts_what_runs_now(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 4)
    # a 1-minute average of 3 from runs that have ended: only the caller runs now -> all 4 cores
    monkeypatch.setattr(cpus, "LOADAVG_PATH", _loadavg(tmp_path, 1))
    assert cpus.free_cores() == 4
    monkeypatch.setattr(cpus, "LOADAVG_PATH", _loadavg(tmp_path, 3))       # two other jobs running
    assert cpus.free_cores() == 2
    monkeypatch.setattr(cpus, "LOADAVG_PATH", _loadavg(tmp_path, 9))       # oversubscribed
    assert cpus.free_cores() == 1


def test_free_cores_falls_back_to_the_load_average(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cpus, "_runnable_others", lambda: None)            # no /proc/loadavg
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert cpus.free_cores() == 2
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (1.4, 1.4, 1.4))
    assert cpus.free_cores() == 1


def test_runnable_others_reads_the_file(tmp_path):
    assert cpus._runnable_others(_loadavg(tmp_path, 5), reads=2) == 4
    assert cpus._runnable_others(str(tmp_path / "missing")) is None
    (tmp_path / "bad").write_text("garbage\n")
    assert cpus._runnable_others(str(tmp_path / "bad")) is None
