"""The ``afx`` command line: one thin function per subcommand, no DSP here.

``main()`` is the console-script entry point. It runs the Typer app and turns failures into one
line on stderr, never a traceback:

- :class:`~afxcli.errors.AfxError` (bad input, bad value) -> ``afx: error: <message>``, exit 2;
- a command-line usage error -> click's usage message, exit 2;
- anything unexpected -> ``afx: internal error: <Type>: <message>``, exit 1
  (set ``AFX_DEBUG=1`` to get the traceback instead).

Batch commands take many inputs (files or folders of audio files), write outputs with
:func:`output_paths` (``-o OUT`` for one input, ``--out-dir DIR`` for many, otherwise next to
the input with a suffix), never overwrite an input, and exit 0 only when every file succeeded:
a failing file prints its own ``afx: error:`` line and the others still run (:func:`run_each`).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, TypeVar

import typer

from . import __version__
from .errors import AfxError


def _click_exception_class() -> type:
    """click's ClickException, whether typer vendors click (typer >= 0.20) or depends on it."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    raise ImportError("typer.BadParameter does not derive from ClickException")  # pragma: no cover


_ClickException = _click_exception_class()
_ClickExit = typer.Exit
_ClickAbort = typer.Abort

#: Exit status for user errors (AfxError, usage errors) and for batches with a failed file.
EXIT_USER_ERROR = 2
#: Exit status for unexpected internal errors.
EXIT_INTERNAL_ERROR = 1

app = typer.Typer(
    name="afx",
    help="Audio production with interpretable effect chains driven by small neural networks.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    quiet: bool = False


STATE = _State()

T = TypeVar("T")
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def error_line(message: object) -> None:
    """Print ``afx: error: <message>`` (one line) on stderr."""
    print(f"afx: error: {_one_line(message)}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Print a progress/status note on stderr unless ``--quiet``."""
    if not STATE.quiet:
        print(_one_line(message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Batch helpers
# ---------------------------------------------------------------------------------------------
def expand_inputs(paths: Sequence[Path | str], recursive: bool = False) -> list[Path]:
    """Files as given, folders replaced by the audio files inside them (by extension, sorted;
    subfolders too when ``recursive``). Duplicates (same resolved path) are dropped.

    Raises AfxError for a path that does not exist or a folder without audio files; a file is
    kept whatever its extension (reading it reports whether it is audio).
    """
    from .audio import AUDIO_EXTENSIONS

    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    if not paths:
        raise AfxError("no input files given")
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(
                (f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS),
                key=lambda f: str(f),
            )
            if not found:
                raise AfxError(f"{p}: folder contains no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            for f in found:
                add(f)
        elif p.exists() or p.is_symlink():
            add(p)
        else:
            raise AfxError(f"{p}: no such file or folder")
    return out


def _output_ext(inp: Path, ext: str | None) -> str:
    from .audio import WRITE_FORMATS

    if ext:
        return ext if ext.startswith(".") else "." + ext
    return inp.suffix if inp.suffix.lower() in WRITE_FORMATS else ".wav"


def output_paths(
    inputs: Sequence[Path],
    output: Path | None = None,
    out_dir: Path | None = None,
    suffix: str = "_afx",
    ext: str | None = None,
) -> list[Path]:
    """One output path per input, checked never to overwrite any input.

    - ``output`` (``-o``): only with a single input; used as given.
    - ``out_dir`` (``--out-dir``): ``out_dir/<stem><suffix><ext>`` per input; the folder (and its
      parents) is created once every path has passed the checks below.
    - neither: next to each input, ``<stem><suffix><ext>``.

    ``ext`` defaults to the input's own extension when afx can write it (.wav/.flac), else .wav.
    Raises AfxError for ``-o`` with several inputs, both options at once, two inputs mapping to
    the same output, or an output that is an input.
    """
    from .audio import check_output_path

    inputs = [Path(i) for i in inputs]
    if output is not None and out_dir is not None:
        raise AfxError("give either -o/--output or --out-dir, not both")
    if output is not None:
        if len(inputs) != 1:
            raise AfxError(f"-o/--output takes a single input ({len(inputs)} given); use --out-dir DIR")
        outs = [Path(output)]
    else:
        outs = []
        for inp in inputs:
            name = f"{inp.stem}{suffix}{_output_ext(inp, ext)}"
            outs.append((Path(out_dir) if out_dir is not None else inp.parent) / name)
    claimed: dict[Path, Path] = {}
    for inp, out in zip(inputs, outs):
        check_output_path(out, inputs)
        key = out.resolve()
        if key in claimed:
            raise AfxError(f"{out}: both {claimed[key]} and {inp} would be written here; use --out-dir or rename")
        claimed[key] = inp
    if out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AfxError(f"{out_dir}: cannot create the output folder ({e.strerror or e})") from None
    return outs


def _default_label(item: object) -> str:
    if isinstance(item, (tuple, list)) and item:
        return str(item[0])
    return str(item)


def run_each(
    items: Sequence[T],
    fn: Callable[[T], R],
    jobs: int = 1,
    label: Callable[[T], str] = _default_label,
    description: str | None = None,
) -> tuple[list[R | None], int]:
    """Apply ``fn`` to every item, ``jobs`` at a time (threads; pedalboard releases the GIL).

    An AfxError from one item prints its ``afx: error:`` line, prefixed with ``label(item)``
    (default: the item, or its first element for ``(input, output)`` pairs) when the message
    does not already contain it, and the rest go on. Returns the results in input order
    (``None`` for failed items) and the number of failures. Other exceptions propagate.
    With a ``description``, a rich progress bar runs on stderr (not with ``--quiet``, nor when
    stderr is not a terminal).
    """
    if jobs < 1:
        raise AfxError(f"--jobs must be at least 1, got {jobs}")
    with _progress(description, len(items)) as advance:
        return _run_each(items, fn, jobs, label, advance)


class _NoProgress:
    def __enter__(self) -> Callable[[], None]:
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichProgress:
    def __init__(self, description: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> Callable[[], None]:
        self._progress.start()
        return lambda: self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _progress(description: str | None, total: int):
    if description is None or STATE.quiet or total < 2 or not sys.stderr.isatty():
        return _NoProgress()
    return _RichProgress(description, total)


def _run_each(
    items: Sequence[T],
    fn: Callable[[T], R],
    jobs: int,
    label: Callable[[T], str],
    advance: Callable[[], None],
) -> tuple[list[R | None], int]:

    def guarded(item: T) -> tuple[bool, R | None, str]:
        try:
            return True, fn(item), ""
        except AfxError as e:
            msg, name = _one_line(e), label(item)
            return False, None, msg if name in msg else f"{name}: {msg}"
        finally:
            advance()

    if jobs == 1 or len(items) <= 1:
        outcomes = []
        for it in items:
            ok, res, msg = guarded(it)
            if not ok:
                error_line(msg)
            outcomes.append((ok, res))
    else:
        outcomes = []
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for ok, res, msg in pool.map(guarded, items):  # in input order
                if not ok:
                    error_line(msg)
                outcomes.append((ok, res))
    failures = sum(1 for ok, _ in outcomes if not ok)
    return [res for _, res in outcomes], failures


def finish_batch(failures: int, total: int) -> None:
    """Exit non-zero when any item failed (after every item was tried)."""
    if failures:
        if total > 1:
            note(f"afx: {failures} of {total} files failed")
        raise typer.Exit(EXIT_USER_ERROR)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        print(f"afx {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """afx: interpretable audio effect chains whose parameters neural networks predict."""
    STATE.quiet = quiet


@app.command()
def info(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Audio files or folders of audio files."),
) -> None:
    """Print sample rate, channels, duration and sample peak (dBFS) of audio files."""
    from .audio import audio_info, peak_dbfs, read_audio

    files = expand_inputs(inputs)

    def describe(path: Path) -> str:
        hdr = audio_info(path)
        audio, sr = read_audio(path)
        peak = peak_dbfs(audio)
        peak_txt = f"{peak:6.2f}" if peak > float("-inf") else "  -inf"
        return (
            f"{path}: {sr} Hz, {audio.shape[0]} ch, {audio.shape[1] / sr:.3f} s, "
            f"peak {peak_txt} dBFS, {hdr.format} {hdr.subtype}"
        )

    results, failures = run_each(files, describe)
    for line in results:
        if line is not None:
            print(line, flush=True)
    finish_batch(failures, len(files))


@app.command()
def render(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Audio files or folders of audio files."),
    preset: Path = typer.Option(..., "--preset", "-p", help="afx preset, parameter trace or chain spec (JSON)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (single input)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder for the outputs (many inputs)."),
    block_size: int = typer.Option(256, "--block-size", help="Control block for automation, in samples."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Files rendered in parallel."),
) -> None:
    """Render an effect chain preset or parameter trace onto audio files (full length, own rate)."""
    from .tasks.render import render_file

    if block_size < 1:
        raise AfxError(f"--block-size must be at least 1 sample, got {block_size}")
    files = expand_inputs(inputs)
    outs = output_paths(files, output, out_dir, suffix="_afx")

    def one(pair: tuple[Path, Path]) -> str:
        res = render_file(pair[0], preset, pair[1], block_size=block_size)
        clipped = f" (clipped to this rate's ranges: {', '.join(res.clipped_params)})" if res.clipped_params else ""
        return (f"{res.input} -> {res.output}: {res.sample_rate} Hz, {res.channels} ch, "
                f"{res.seconds:.2f} s, peak {res.peak_dbfs:.2f} dBFS{clipped}")

    results, failures = run_each(list(zip(files, outs)), one, jobs=jobs, description="rendering")
    for line in results:
        if line is not None:
            note(line)
    finish_batch(failures, len(files))


@app.command("export-preset")
def export_preset_cmd(
    source: Path = typer.Argument(..., metavar="TRACE_OR_PRESET", help="afx trace, preset or chain spec (JSON)."),
    fmt: str = typer.Option("json", "--format", "-f", help="json | ffmpeg | easyeffects | pedalboard"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here (atomically) instead of stdout."),
    at: Optional[float] = typer.Option(None, "--at", help="Take the values in force at this time (seconds)."),
    reduce: Optional[str] = typer.Option(None, "--reduce", help="median | mean over the whole trace."),
    sample_rate: Optional[float] = typer.Option(None, "--sample-rate", help="Rate for rate-specific output (ffmpeg biquads)."),
) -> None:
    """Export a trace or preset as afx JSON, an ffmpeg -af string, an EasyEffects preset or a pedalboard script."""
    from .tasks.export import export_preset

    text = export_preset(source, fmt, out_path=output, at=at, reduce=reduce, sample_rate=sample_rate)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        note(f"{source} -> {output} ({fmt})")


@app.command()
def train(
    task: str = typer.Argument(..., metavar="TASK", help="Training task: toy, paired, proxy, ..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Training config (JSON or TOML)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/last.pt if it exists."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder: checkpoints and log.jsonl."),
) -> None:
    """Train a model (interruptible: run the same command again to resume)."""
    from .train import run_training

    res = run_training(task, config, out, resume=resume, quiet=STATE.quiet)
    best = f", best val_loss {res.best_val_loss:.6g}" if res.best_val_loss is not None else ""
    print(f"{res.checkpoint} (step {res.step}/{res.steps}, {res.stop_reason}{best})", flush=True)


def _side_paths(option: Optional[Path], outs: Sequence[Path], what: str, ext: str) -> list[Optional[Path]]:
    """Per-output paths for ``--report``/``--plot``/``--trace``: the file itself for one input; for
    many, ``option`` is a folder receiving ``<output stem><ext>``."""
    if option is None:
        return [None] * len(outs)
    if len(outs) == 1 and not option.is_dir():
        return [option]
    if not option.is_dir():
        raise AfxError(f"{option}: with several inputs, {what} must be an existing folder")
    return [option / f"{o.stem}{ext}" for o in outs]


@app.command("style-transfer")
def style_transfer_cmd(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Audio files or folders of audio files."),
    ref: Optional[Path] = typer.Option(None, "--ref", "-r", help="Style reference audio."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="Adaptive style preset (name or file) or a parameter preset/trace."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Style model: music | speech | checkpoint path."),
    method: str = typer.Option("model", "--method", help="model | rule-based (DeepAFx-ST §3.3 baseline)."),
    refine_steps: int = typer.Option(0, "--refine",
                                     help="Gradient steps refining the model's chain against the reference."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write the parameter trace (a folder for many inputs)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (single input)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder for the outputs (many inputs)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Files processed in parallel (threads; model loaded once)."),
) -> None:
    """Give audio files the production style of a reference (or a preset): predicted chain, full length."""
    from rich.console import Console

    from .tasks.style import StyleContext, params_table, style_transfer_file

    files = expand_inputs(inputs)
    outs = output_paths(files, output, out_dir, suffix="_style")
    traces = _side_paths(trace, outs, "--trace", ".trace.json")
    ctx = StyleContext(ref=ref, preset=preset, model=model, method=method, refine_steps=refine_steps)
    console = Console()

    def one(item: tuple[Path, Path, Optional[Path]]):
        return style_transfer_file(item[0], item[1], ctx, trace_path=item[2])

    try:
        results, failures = run_each(list(zip(files, outs, traces)), one, jobs=jobs, description="style transfer")
    finally:
        ctx.finish_reference()
    for res in results:
        if res is None:
            continue
        console.print(params_table(res))
        for n in res.notes:
            note(f"{res.input}: {n}")
        note(f"{res.input} -> {res.output}: {res.sample_rate} Hz, {res.channels} ch, {res.seconds:.2f} s"
             + (f", trace {res.trace}" if res.trace else ""))
    finish_batch(failures, len(files))


@app.command()
def master(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Audio files or folders of audio files."),
    ref: Optional[Path] = typer.Option(None, "--ref", "-r", help="Reference master to match."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="Loudness target (streaming, podcast, club, broadcast, apple, ...), "
                                              "adaptive style preset or parameter preset."),
    lufs: Optional[float] = typer.Option(None, "--lufs", help="Integrated loudness target (overrides ref/preset)."),
    ceiling: Optional[float] = typer.Option(None, "--ceiling", help="True-peak ceiling in dBTP (default -1.0)."),
    method: str = typer.Option("auto", "--method", help="auto | model | rule-based."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Style model checkpoint (default: shipped music model)."),
    refine_steps: int = typer.Option(0, "--refine", help="Gradient steps refining the chain against the reference."),
    time_varying: Optional[bool] = typer.Option(
        None, "--time-varying/--static",
        help="Model method: frame-wise predictions smoothed into automation (DeepAFx), the default "
             "unless --refine is given; --static: one setting for the whole file."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the spectra (a folder for many inputs)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report (a folder for many inputs)."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write the parameter trace (a folder for many inputs)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (single input)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder for the outputs (many inputs)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Files processed in parallel (threads; model loaded once)."),
) -> None:
    """Master audio files: EQ -> compressor -> loudness -> true-peak limiter, matched to a reference or a target."""
    from rich.console import Console
    from rich.table import Table

    from .blas import one_blas_thread
    from .tasks.master import MasterContext, master_file, prefetch_imports

    files = expand_inputs(inputs)
    outs = output_paths(files, output, out_dir, suffix="_master")
    reports = _side_paths(report, outs, "--report", ".report.json")
    plots = _side_paths(plot, outs, "--plot", ".png")
    traces = _side_paths(trace, outs, "--trace", ".trace.json")
    prefetch_imports()  # scipy and the effects load while the reference and the first input are read
    with one_blas_thread():  # for the whole batch: the reference's analysis thread too (afxcli.blas)
        ctx = MasterContext(ref=ref, preset=preset, lufs=lufs, ceiling=ceiling, method=method, model=model,
                            refine_steps=refine_steps, time_varying=time_varying,
                            read_ahead=files[0] if files else None)

        def one(item):
            inp, out, rep, plt, trc = item
            return master_file(inp, out, ctx, report_path=rep, plot_path=plt, trace_path=trc)

        try:
            results, failures = run_each(list(zip(files, outs, reports, plots, traces)), one, jobs=jobs,
                                         description="mastering")
        finally:
            ctx.finish_reference()
    table = Table(title=f"afx master ({ctx.method}; target {ctx.target_lufs:.1f} LUFS from {ctx.target_source}, "
                        f"ceiling {ctx.ceiling:.1f} dBTP)")
    cols = ["output", "in LUFS", "out LUFS", "out dBTP", "in crest", "out crest"]
    cols += ["refine gain"] if ctx.refine_steps else []
    for col in cols + ["status"]:
        if col == "output":   # the whole path, wrapped when long, never cut
            table.add_column(col, justify="left", overflow="fold", min_width=12)
        else:
            table.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)
    for inp, res in zip(files, results):
        if res is None:
            table.add_row(str(inp), *[""] * (len(cols) - 1), "failed")
            continue
        r = res.report
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        status = "ok" if r["loudness"]["reached"] else "target missed"
        cells = [str(res.output), fmt(r["input"]["lufs"]), fmt(r["output"]["lufs"]),
                 fmt(r["output"]["true_peak_dbtp"]), fmt(r["input"]["crest_db"]), fmt(r["output"]["crest_db"])]
        if ctx.refine_steps:
            cells.append(fmt(r["refine"]["gain_db"] if r.get("refine") else None))
        table.add_row(*cells, status)
        for n in res.notes:
            note(f"{res.input}: {n}")
    if not STATE.quiet:
        Console(stderr=True).print(table)
    finish_batch(failures, len(files))


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``)."""
    debug = os.environ.get("AFX_DEBUG", "") not in ("", "0")
    STATE.quiet = False
    from .memory import tune_for_batch_rendering

    tune_for_batch_rendering()  # before the first large array: see afxcli/memory.py
    try:
        rv = app(args=list(argv) if argv is not None else None, prog_name="afx", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except AfxError as e:
        error_line(e)
        return EXIT_USER_ERROR
    except _ClickExit as e:
        return int(e.exit_code)
    except _ClickException as e:
        e.show()
        return int(e.exit_code)
    except (_ClickAbort, KeyboardInterrupt):
        print("afx: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # Output closed early (e.g. piped into `head`): stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_INTERNAL_ERROR
    except Exception as e:  # noqa: BLE001 - the one place that turns crashes into one line
        if debug:
            raise
        print(f"afx: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
