"""afx command line: one-line errors, exit codes, batch helpers, `afx info`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import typer

from afxcli import cli
from afxcli.audio import read_audio, write_audio
from afxcli.errors import AfxError

from test_audio import BAD_KINDS, make_bad_inputs, music_like

REPO = Path(__file__).resolve().parents[1]


def run_main(capfd, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def good_files(tmp_path):
    d = tmp_path / "good"
    d.mkdir()
    write_audio(d / "stereo48.flac", music_like(2, 48000, 0.5), 48000)
    write_audio(d / "mono44.wav", 0.5 * music_like(1, 44100, 0.25) / 0.9, 44100, subtype="PCM_16")
    return d


@pytest.fixture
def copy_app(monkeypatch):
    """A stand-in app with a file-writing batch command built from the cli helpers, so that the
    error paths of a command that writes outputs are tested end-to-end through main()."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def root(quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
        cli.STATE.quiet = quiet

    @app.command()
    def copy(
        inputs: List[Path] = typer.Argument(...),
        output: Optional[Path] = typer.Option(None, "-o", "--output"),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir"),
        jobs: int = typer.Option(1, "--jobs"),
    ) -> None:
        files = cli.expand_inputs(inputs)
        outs = cli.output_paths(files, output, out_dir, suffix="_copy")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)

        def one(pair):
            src, dst = pair
            x, sr = read_audio(src)
            write_audio(dst, x, sr)
            return dst

        _, failures = cli.run_each(list(zip(files, outs)), lambda p: one(p), jobs=jobs)
        cli.finish_batch(failures, len(files))

    @app.command()
    def crash() -> None:
        raise ZeroDivisionError("division by zero in a test")

    monkeypatch.setattr(cli, "app", app)
    return app


# --------------------------------------------------------------------------------------------
# afx info
# --------------------------------------------------------------------------------------------
def test_info_reports_rate_channels_duration_peak(capfd, good_files):
    code, out, err = run_main(capfd, "info", str(good_files / "stereo48.flac"), str(good_files / "mono44.wav"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert "stereo48.flac: 48000 Hz, 2 ch, 0.500 s, peak  -0.92 dBFS, FLAC PCM_24" in lines[0]
    assert "mono44.wav: 44100 Hz, 1 ch, 0.250 s, peak  -6.02 dBFS, WAV PCM_16" in lines[1]
    # nothing from afx on stderr (VST3 plugin destructors of earlier tests may print DPF warnings)
    assert [ln for ln in err.splitlines() if not ln.startswith("DPF warning")] == []


def test_info_expands_folders(capfd, good_files):
    (good_files / "readme.txt").write_text("not audio, skipped by extension")
    code, out, err = run_main(capfd, "info", str(good_files))
    assert code == 0, err
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [
        str(good_files / "mono44.wav"),
        str(good_files / "stereo48.flac"),
    ]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_info_bad_input_one_line_error(capfd, tmp_path, kind):
    path = make_bad_inputs(tmp_path)[kind]
    before = snapshot(tmp_path)
    code, out, err = run_main(capfd, "info", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("afx: error: ") and str(path) in lines[0]
    assert "Traceback" not in err + out
    assert out == ""
    assert snapshot(tmp_path) == before


def test_info_continues_after_a_bad_file_and_fails_overall(capfd, tmp_path, good_files):
    bad = make_bad_inputs(tmp_path)["not_audio"]
    good = good_files / "stereo48.flac"
    code, out, err = run_main(capfd, "info", str(bad), str(good))
    assert code == 2
    assert str(good) in out and str(bad) not in out
    assert f"afx: error: {bad}" in err
    assert "1 of 2 files failed" in err
    code, out, err = run_main(capfd, "--quiet", "info", str(bad), str(good))
    assert code == 2 and err.strip().splitlines() == [err.strip()]  # --quiet: only the error line


def test_empty_folder_is_an_error(capfd, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(capfd, "info", str(tmp_path / "empty"))
    assert code == 2 and "contains no audio files" in err and str(tmp_path / "empty") in err


# --------------------------------------------------------------------------------------------
# Error handling in main()
# --------------------------------------------------------------------------------------------
def test_usage_errors_exit_2_without_traceback(capfd):
    for argv in (["bogus-command"], ["info"], ["info", "--no-such-option", "x.wav"]):
        code, out, err = run_main(capfd, *argv)
        assert code == 2, argv
        assert "Traceback" not in out + err


def test_help_and_version(capfd):
    code, out, _ = run_main(capfd, "--help")
    assert code == 0 and "info" in out
    code, out, _ = run_main(capfd, "--version")
    assert code == 0 and out.strip().startswith("afx ")


def test_internal_error_is_one_line_exit_1(capfd, copy_app, monkeypatch):
    monkeypatch.delenv("AFX_DEBUG", raising=False)
    code, out, err = run_main(capfd, "crash")
    assert code == 1
    assert err.strip() == "afx: internal error: ZeroDivisionError: division by zero in a test"
    monkeypatch.setenv("AFX_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["crash"])


# --------------------------------------------------------------------------------------------
# A writing batch command built from the helpers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_writing_command_bad_input_creates_no_output(capfd, tmp_path, copy_app, kind):
    path = make_bad_inputs(tmp_path)[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = snapshot(tmp_path)
    code, out, err = run_main(capfd, "copy", str(path), "-o", str(out_dir / "result.wav"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afx: error: ") and str(path) in lines[0], err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_writing_command_refuses_to_overwrite_input(capfd, good_files, copy_app):
    src = good_files / "mono44.wav"
    data = src.read_bytes()
    code, _, err = run_main(capfd, "copy", str(src), "-o", str(src))
    assert code == 2 and "would overwrite the input" in err and len(err.strip().splitlines()) == 1
    assert src.read_bytes() == data


def test_writing_command_missing_output_folder(capfd, good_files, copy_app, tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "x.wav"
    code, _, err = run_main(capfd, "copy", str(good_files / "mono44.wav"), "-o", str(target))
    assert code == 2 and "does not exist" in err and str(target) in err
    assert not (tmp_path / "no").exists()


def test_writing_command_out_dir_batch(capfd, good_files, copy_app, tmp_path):
    out_dir = tmp_path / "rendered"
    code, out, err = run_main(capfd, "copy", str(good_files), "--out-dir", str(out_dir), "--jobs", "2")
    assert code == 0, err
    assert snapshot(out_dir) == {"mono44_copy.wav", "stereo48_copy.flac"}
    a, sr = read_audio(out_dir / "stereo48_copy.flac")
    b, _ = read_audio(good_files / "stereo48.flac")
    assert sr == 48000 and np.array_equal(a, b)
    # -o with several inputs is refused before anything runs
    code, _, err = run_main(capfd, "copy", str(good_files), "-o", str(tmp_path / "x.wav"))
    assert code == 2 and "--out-dir" in err and not (tmp_path / "x.wav").exists()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def test_output_paths_naming_and_conflicts(tmp_path):
    a = tmp_path / "a" / "song.wav"
    b = tmp_path / "b" / "song.mp3"
    c = tmp_path / "take.flac"
    assert cli.output_paths([a]) == [tmp_path / "a" / "song_afx.wav"]
    assert cli.output_paths([b], suffix="_m") == [tmp_path / "b" / "song_m.wav"]  # mp3 -> wav
    assert cli.output_paths([c], ext="wav") == [tmp_path / "take_afx.wav"]
    assert cli.output_paths([a, c], out_dir=tmp_path / "o") == [tmp_path / "o" / "song_afx.wav", tmp_path / "o" / "take_afx.flac"]
    assert cli.output_paths([a], output=tmp_path / "x.flac") == [tmp_path / "x.flac"]
    with pytest.raises(AfxError, match="single input"):
        cli.output_paths([a, c], output=tmp_path / "x.wav")
    with pytest.raises(AfxError, match="not both"):
        cli.output_paths([a], output=tmp_path / "x.wav", out_dir=tmp_path)
    with pytest.raises(AfxError, match="both"):  # two inputs, one output name
        cli.output_paths([a, tmp_path / "b" / "song.wav"], out_dir=tmp_path / "o")
    with pytest.raises(AfxError, match="overwrite the input"):  # empty suffix next to the input
        cli.output_paths([a], suffix="")


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.wav", "d/a.FLAC", "d/notes.txt", "d/sub/c.ogg"]:
        (tmp_path / name).write_bytes(b"x")
    f = tmp_path / "d" / "a.FLAC"
    got = cli.expand_inputs([tmp_path / "d", f])
    assert got == [tmp_path / "d" / "a.FLAC", tmp_path / "d" / "b.wav"]  # sorted, deduplicated
    assert tmp_path / "d" / "sub" / "c.ogg" in cli.expand_inputs([tmp_path / "d"], recursive=True)
    with pytest.raises(AfxError, match="no such file"):
        cli.expand_inputs([tmp_path / "gone.wav"])
    with pytest.raises(AfxError):
        cli.expand_inputs([])


def test_run_each_keeps_order_and_counts_failures(capfd):
    def fn(i: int) -> int:
        if i % 3 == 0:
            raise AfxError(f"item {i} is bad")
        return i * 10

    results, failures = cli.run_each(list(range(1, 10)), fn, jobs=3)
    assert results == [10, 20, None, 40, 50, None, 70, 80, None]
    assert failures == 3
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["afx: error: item 3 is bad", "afx: error: item 6 is bad", "afx: error: item 9 is bad"]

    def fails(pair):
        raise AfxError("render failed")

    _, failures = cli.run_each([(Path("in.wav"), Path("out.wav"))], fails)
    assert failures == 1
    assert capfd.readouterr().err == "afx: error: in.wav: render failed\n"


# --------------------------------------------------------------------------------------------
# Real process: the console entry point
# --------------------------------------------------------------------------------------------
def test_subprocess_entry_point(tmp_path, good_files):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AFX_DEBUG", None)
    missing = tmp_path / "missing.flac"
    p = subprocess.run(
        [sys.executable, "-m", "afxcli.cli", "info", str(missing)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr == f"afx: error: {missing}: no such file or folder\n"
    assert p.stdout == ""
    p = subprocess.run(
        [sys.executable, "-m", "afxcli.cli", "info", str(good_files / "mono44.wav")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert p.returncode == 0 and "44100 Hz, 1 ch" in p.stdout and p.stderr == ""


def test_run_each_with_progress_bar_on_a_terminal(capfd, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    def fn(i: int) -> int:
        if i == 2:
            raise AfxError("item 2 is bad")
        return i

    results, failures = cli.run_each([1, 2, 3], fn, jobs=2, description="testing")
    assert results == [1, None, 3] and failures == 1
    assert "afx: error: item 2 is bad" in capfd.readouterr().err


def test_out_dir_is_created_and_a_file_in_its_place_is_an_error(tmp_path):
    inp = tmp_path / "a.wav"
    out_dir = tmp_path / "new" / "folder"
    outs = cli.output_paths([inp], out_dir=out_dir, suffix="_x")
    assert outs == [out_dir / "a_x.wav"] and out_dir.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AfxError, match="cannot create the output folder"):
        cli.output_paths([inp], out_dir=blocker / "sub", suffix="_x")
