"""The NumPy forward pass of the style models (afxcli/nn/numpy_infer.py) equals the torch model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.nn import StyleModel, make_analyzer
from afxcli.nn.numpy_infer import (controller_layers, export_npz, load_npz, mlp_forward, npz_path_for,
                                   sha256_of)
from afxcli.tasks.style import StylePredictor, save_style_checkpoint
from afxcli.train.style import STYLE_CHAIN

ROOT = Path(__file__).resolve().parents[1]
MUSIC = ROOT / "models" / "style_music.pt"
TINY_SR = 16000


def music(seconds: float, sr: int, seed: int, channels: int) -> np.ndarray:
    """Tones + noise with a level that changes over time (so frames and windows differ)."""
    r = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f * t + r.uniform(0, 6)) for f in (80, 220, 1000, 3000, 7000) if f < sr / 2)
    x = x + r.standard_normal(n) * (0.2 + 0.8 * (t / t[-1]) ** 2)
    x = x * (0.1 + np.abs(np.sin(2 * np.pi * 0.3 * t)))
    x = np.stack([x, 0.7 * np.roll(x, 5)][:channels]).astype(np.float32)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


TINY_CONFIG = {"data": {"sample_rate": TINY_SR, "clip_samples": 32000},
               "task_options": {"frontend": "logmel", "encoder": "stats",
                                "frontend_options": {"n_fft": 256, "hop_samples": 64, "n_mels": 24,
                                                     "batch_norm": False},
                                "encoder_options": {"embed_dim": 12, "n_groups": 5, "l2_normalize": True},
                                "hidden": [16, 8]}}


#: A second front end: a window of 8 hops (8 edge frames per analysis window), a mel floor.
WIDE_FRONTEND = {"n_fft": 512, "hop_samples": 64, "n_mels": 40, "f_min_hz": 20.0, "batch_norm": False}


@pytest.fixture(scope="module", params=["narrow", "wide"])
def tiny_stats_model(tmp_path_factory, request):
    """A random tiny model of the shipped architecture (log-mel → stats → MLP), L2-normalized."""
    from afxcli.train.style import StyleTask

    torch.manual_seed(1)
    config = json.loads(json.dumps(TINY_CONFIG))
    if request.param == "wide":
        config["task_options"]["frontend_options"] = dict(WIDE_FRONTEND)
    chain = Chain(STYLE_CHAIN, TINY_SR)
    model = StyleTask.build_model(config, chain.spec)
    path = tmp_path_factory.mktemp("tiny") / f"tiny_stats_{request.param}.pt"
    save_style_checkpoint(path, model, chain.spec, config)
    export_npz(path)
    return path


def test_controller_layers_with_batch_norm_equal_torch():
    from afxcli.nn import StyleController

    torch.manual_seed(2)
    ctrl = StyleController(6, 5, (16, 8), batch_norm=True, dropout=0.1).eval()
    with torch.no_grad():  # non-trivial running statistics
        for m in ctrl.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    e_i, e_r = torch.randn(4, 6), torch.randn(4, 6)
    with torch.no_grad():
        want = ctrl(e_i, e_r).numpy()
    h = np.concatenate([e_i.numpy(), e_r.numpy()], axis=1).astype(np.float64)
    got = 1.0 / (1.0 + np.exp(-mlp_forward(controller_layers(ctrl), h)))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def _both(path: Path) -> tuple[StylePredictor, StylePredictor]:
    np_pred, t_pred = StylePredictor.load(path), StylePredictor.load(path, backend="torch")
    assert np_pred.backend == "numpy" and t_pred.backend == "torch"
    assert np_pred.model_id == t_pred.model_id and np_pred.window_samples == t_pred.window_samples
    return np_pred, t_pred


@pytest.mark.parametrize("channels,sr", [(1, 44100), (2, 44100), (2, 22050), (1, 16000)])
def test_tiny_numpy_forward_equals_torch(tiny_stats_model, channels, sr):
    np_pred, t_pred = _both(tiny_stats_model)
    x = music(5.3, sr, 3 + channels, channels)      # two full windows + a ragged last one
    ref = music(2.5, sr, 9, channels)
    e_n, e_t = np_pred.embed(x, sr), t_pred.embed(x, sr)
    np.testing.assert_allclose(e_n, e_t, atol=1e-5, rtol=0)
    r_n, r_t = np_pred.embed(ref, sr), t_pred.embed(ref, sr)
    np.testing.assert_allclose(r_n, r_t, atol=1e-5, rtol=0)
    f_n, c_n = np_pred.embed_frames(x, sr, 0.5)
    f_t, c_t = t_pred.embed_frames(x, sr, 0.5)
    assert f_n.shape == f_t.shape == (11, np_pred.embed_dim) and np.array_equal(c_n, c_t)
    np.testing.assert_allclose(f_n, f_t, atol=1e-5, rtol=0)
    q_n, q_t = np_pred.predict_normalized(f_n, r_n), t_pred.predict_normalized(f_t, r_t)
    np.testing.assert_allclose(q_n, q_t, atol=1e-5, rtol=0)
    chain = Chain(np_pred.chain_spec, sr)
    for a, b in zip(np_pred.values(q_t[3], chain), t_pred.values(q_t[3], chain)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("channels,sr", [(1, 24000), (2, 44100), (2, 48000)])
def test_shipped_music_model_numpy_equals_torch(channels, sr):
    if not npz_path_for(MUSIC).is_file():
        pytest.skip("models/style_music.npz not exported")
    np_pred, t_pred = _both(MUSIC)
    x = music(12.0, sr, 20 + channels, channels)
    ref = music(7.0, sr, 30, channels)
    e_n, e_t = np_pred.embed(ref, sr), t_pred.embed(ref, sr)
    np.testing.assert_allclose(e_n, e_t, atol=1e-5, rtol=0)
    f_n, _ = np_pred.embed_frames(x, sr, 1.0)     # overlapping 5.5 s windows every 1 s, clipped at the ends
    f_t, _ = t_pred.embed_frames(x, sr, 1.0)
    np.testing.assert_allclose(f_n, f_t, atol=1e-5, rtol=0)
    q_n, q_t = np_pred.predict_normalized(f_n, e_n), t_pred.predict_normalized(f_t, e_t)
    np.testing.assert_allclose(q_n, q_t, atol=1e-5, rtol=0)
    from afxcli.tasks.master import master_chain_spec

    longer = Chain(master_chain_spec(Chain(np_pred.chain_spec, sr).spec["effects"], -1.0), sr)  # + gain, limiter
    got, want = np_pred.values(q_n[2], longer), t_pred.values(q_n[2], longer)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12) for k in a)
    chain = Chain(np_pred.chain_spec, sr)
    frames = np_pred.values_frames(q_n, chain)
    for j in (0, 5, 11):
        ref_vals = Chain.flatten(chain.labels, t_pred.values(q_n[j], chain))
        assert list(frames) == list(ref_vals)
        for k, v in ref_vals.items():
            assert frames[k][j] == pytest.approx(v, rel=1e-12, abs=1e-12)


def test_npz_of_another_model_is_not_used(tiny_stats_model, tmp_path):
    pt = tmp_path / "m.pt"
    shutil.copy(tiny_stats_model, pt)
    assert StylePredictor.load(pt).backend == "torch"            # no npz: torch
    shutil.copy(npz_path_for(tiny_stats_model), npz_path_for(pt))
    assert StylePredictor.load(pt).backend == "numpy"            # the same bytes: numpy
    with open(pt, "ab") as f:                                    # the .pt changed after the export
        f.write(b"\0")
    assert load_npz(npz_path_for(pt), pt) is None
    with pytest.raises(AfxError, match="export_style_npz"):
        StylePredictor.load(pt, backend="numpy")
    assert load_npz(npz_path_for(tiny_stats_model), pt_sha256=sha256_of(tiny_stats_model)) is not None


def test_unsupported_architecture_is_refused(tiny_conv_style_model):
    path = tiny_conv_style_model  # a MobileNet-style conv encoder (tests/conftest.py)
    with pytest.raises(AfxError, match="numpy export needs"):
        export_npz(path)
    assert not npz_path_for(path).exists()


@pytest.mark.parametrize("domain", ["music", "speech"])
def test_shipped_models_have_a_matching_numpy_export(domain):
    """scripts/ship_style_model.py writes the npz with the .pt; a .pt shipped without it falls back
    to torch (slower), which this catches."""
    pt = ROOT / "models" / f"style_{domain}.pt"
    nm = load_npz(npz_path_for(pt), pt)
    assert nm is not None, f"run scripts/export_style_npz.py {pt.relative_to(ROOT)}"
    assert nm.n_params == Chain(nm.chain_spec, nm.sample_rate).n_free


@pytest.mark.parametrize("extra", [[], ["--static"]])
def test_master_imports_no_torch(tmp_path, extra):
    """With the shipped model's npz, ``afx master IN --ref REF -o OUT`` (time-varying default, or
    ``--static``) runs without importing torch or scipy.signal (fresh interpreter); the output
    holds the ceiling."""
    import subprocess
    import sys

    import soundfile as sf

    from afxcli.metrics import true_peak_dbtp

    if not npz_path_for(MUSIC).is_file():
        pytest.skip("models/style_music.npz not exported")
    sf.write(str(tmp_path / "ref.wav"), music(3.0, 44100, 5, 2).T, 44100)
    sf.write(str(tmp_path / "in.wav"), (0.3 * music(7.0, 44100, 6, 2)).T, 44100)
    code = ("import sys\n"
            "from afxcli.cli import main\n"
            f"rc = main(['--quiet', 'master', {str(tmp_path / 'in.wav')!r}, '--ref', {str(tmp_path / 'ref.wav')!r}, "
            f"'-o', {str(tmp_path / 'out.wav')!r}, *{extra!r}])\n"
            "print(rc, 'torch' in sys.modules, 'scipy.signal' in sys.modules, 'pyloudnorm' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-4:] == ["0", "False", "False", "False"]
    y, sr = sf.read(str(tmp_path / "out.wav"), always_2d=True)
    assert y.shape == (7 * 44100, 2) and true_peak_dbtp(y.T, sr) <= -1.0


def test_prediction_hop_is_whole_frames_and_windows_share_the_grid(tiny_stats_model, monkeypatch):
    """The frame-wise prediction hop is the whole number of front-end frames nearest the target;
    every analysis window then starts on one phase of the frame grid (the last ones, clipped to the
    file's end, share one other start), and the NumPy frame embeddings at that hop still equal the
    torch analyzer window by window."""
    from afxcli.tasks.master import prediction_hop

    np_pred, t_pred = _both(tiny_stats_model)
    fh = np_pred.frame_hop_samples
    assert fh == t_pred.frame_hop_samples == 64
    hop = np_pred.prediction_hop_samples(0.713)          # 0.713 s = 178.25 frames of 64 at 16 kHz
    assert hop == t_pred.prediction_hop_samples(0.713) == 178 * 64
    assert np_pred.prediction_hop_samples(1e-6) == fh     # at least one frame
    assert prediction_hop(np_pred) == (np_pred.prediction_hop_samples(1.0), float(TINY_SR))
    seen = []
    orig = np_pred.numpy_model.window_embeddings

    def spy(x, starts, window):
        seen.append(np.asarray(starts))
        return orig(x, starts, window)

    monkeypatch.setattr(np_pred.numpy_model, "window_embeddings", spy)
    x = music(9.1, 44100, 4, 2)
    f_n, _ = np_pred.embed_frames(x, 44100, hop / TINY_SR)
    f_t, _ = t_pred.embed_frames(x, 44100, hop / TINY_SR)
    np.testing.assert_allclose(f_n, f_t, atol=1e-5, rtol=0)
    starts = seen[0]
    inner = starts[starts < starts.max()]
    assert inner.size >= 5 and len(set((inner % fh).tolist())) == 1
