"""Render a preset, parameter trace or chain spec onto audio files (the ``afx render`` command).

audio -> chain (built at the file's own sample rate) -> values from the preset/trace -> pedalboard
render (exact torch form for effects without a twin) -> audio of the same length and alignment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import peak_dbfs, read_audio, write_audio
from ..effects.chain import Chain
from ..render import DEFAULT_BLOCK_SIZE, render_chain
from ..trace import ParameterTrace, trace_specs
from .export import load_preset


@dataclass
class RenderResult:
    input: Path
    output: Path
    sample_rate: int
    channels: int
    seconds: float
    peak_dbfs: float
    clipped_params: list[str]


def fit_trace(trace: ParameterTrace, chain: Chain) -> tuple[ParameterTrace, list[str]]:
    """Clip a trace's values into the ranges of ``chain`` (built at the file's rate, where e.g. a
    high shelf at 16 kHz does not exist for 22.05 kHz audio). Returns the trace and the clipped keys."""
    specs = trace_specs(chain)
    out, clipped = {}, []
    for k, a in trace.params.items():
        if k not in specs:
            continue
        c = np.clip(a, specs[k].min, specs[k].max)
        if not np.array_equal(c, a):
            clipped.append(k)
        out[k] = c
    return ParameterTrace(trace.chain, trace.sample_rate, trace.hop, out, trace.n_samples, dict(trace.units)), clipped


def render_file(input_path: Path, preset_path: Path, output_path: Path,
                block_size: int = DEFAULT_BLOCK_SIZE) -> RenderResult:
    """Render ``preset_path`` (afx preset / trace / chain spec JSON) onto ``input_path`` and write
    ``output_path`` atomically. Any sample rate, mono or stereo, full length."""
    spec, trace = load_preset(preset_path)
    audio, sr = read_audio(input_path)
    chain = Chain(spec, sr)
    trace, clipped = fit_trace(trace, chain)
    y = render_chain(chain, audio, trace, block_size=block_size)
    write_audio(output_path, y, sr)
    return RenderResult(Path(input_path), Path(output_path), sr, y.shape[0], y.shape[1] / sr,
                        peak_dbfs(y), clipped)
