"""Decoded-audio store (afxcli.train.pcm) and the production-statistics encoder (afxcli.nn.stats)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from afxcli.errors import AfxError
from afxcli.nn import make_analyzer
from afxcli.nn.stats import StatsEncoder
from afxcli.train.pcm import PCMStore, store_key
from afxcli.train.style import STYLE_CHAIN, StylePairDataset


def _files(tmp_path):
    rng = np.random.default_rng(0)
    a = (0.3 * rng.standard_normal((44100, 2))).astype(np.float32)          # 1 s stereo, 44.1 kHz
    b = (0.2 * np.sin(2 * np.pi * 440 * np.arange(12000) / 24000)).astype(np.float32)  # 0.5 s mono, 24 kHz
    sf.write(tmp_path / "a.flac", a, 44100)
    sf.write(tmp_path / "b.wav", b, 24000)
    return [tmp_path / "a.flac", tmp_path / "b.wav"], a, b


def test_store_decodes_once_and_slices_match_the_files(tmp_path):
    files, a, b = _files(tmp_path)
    store = PCMStore.open_or_build(files, 24000, 1, tmp_path / "pcm", progress=False)
    assert len(store) == 2 and store.length(0) == 24000 and store.length(1) == 12000
    # file b is already at 24 kHz: the store holds it to float16 precision (relative 2^-11)
    seg = store.segment(1, 1000, 500)
    assert seg.shape == (1, 500) and seg.dtype == np.float32
    decoded, _ = sf.read(tmp_path / "b.wav", dtype="float32")  # the file holds 16-bit PCM
    np.testing.assert_allclose(seg[0], decoded[1000:1500], rtol=2 ** -11, atol=1e-7)
    # a crop running past the end is zero-padded, never wrapped
    tail = store.segment(1, 11900, 300)
    assert np.all(tail[:, 100:] == 0) and np.any(tail[:, :100] != 0)
    # opened again (no rebuild: same files); a changed file gets a new key
    again = PCMStore.open_or_build(files, 24000, 1, tmp_path / "pcm", progress=False)
    np.testing.assert_array_equal(again.segment(0, 0, 1000), store.segment(0, 0, 1000))
    k0 = store_key(files, 24000, 1)
    sf.write(tmp_path / "b.wav", np.zeros(100, np.float32), 24000)
    assert store_key(files, 24000, 1) != k0 and store_key(files, 16000, 1) != k0
    assert not list((tmp_path / "pcm").glob(".*part"))   # no temporaries left behind


def test_style_dataset_reads_crops_from_the_store(tmp_path):
    files, _, _ = _files(tmp_path)
    store = PCMStore.open_or_build(files, 24000, 1, tmp_path / "pcm", progress=False)
    ds = StylePairDataset(files, STYLE_CHAIN, 24000, 8192, items_per_epoch=4, seed=1, store=store)
    item = ds[0]
    assert item["input"].shape == item["target"].shape == item["reference"].shape == (1, 4096)
    assert torch.isfinite(item["input"]).all() and float(item["input"].abs().max()) > 0.1
    with pytest.raises(AfxError, match="store"):
        StylePairDataset(files, STYLE_CHAIN, 16000, 8192, items_per_epoch=4, store=store)
    with pytest.raises(AfxError, match="other files"):
        StylePairDataset(files[:1], STYLE_CHAIN, 24000, 8192, items_per_epoch=4, store=store)


def _analyzer(embed_dim=None):
    return make_analyzer("logmel", "stats", 24000, {"n_fft": 512, "hop_samples": 128, "n_mels": 32,
                                                   "batch_norm": False}, embed_dim=embed_dim)


def test_stats_encoder_statistics_are_what_they_claim():
    torch.manual_seed(0)
    an = _analyzer().eval()
    enc = an.encoder
    x = 0.1 * torch.randn(3, 1, 24000)
    e = an(x)
    assert e.shape == (3, enc.n_stats) == (3, an.embed_dim)
    # a +6 dB gain moves the overall level and the peak frame level by 6 dB (÷ 20) and nothing else
    d = an(2.0 * x) - e
    gain = 20 * np.log10(2.0) / 20
    assert torch.allclose(d[:, 0], torch.full((3,), gain), atol=1e-3)
    assert torch.allclose(d[:, -1], torch.full((3,), gain), atol=1e-3)
    assert float(d[:, 1:-1].abs().max()) < 1e-3
    # spectral shape: a low-passed signal has less energy in the top mel bins than white noise
    low = torch.nn.functional.avg_pool1d(x, 8, 1, 4)[..., :24000]
    shape_low, shape_white = an(low)[:, 1:33], e[:, 1:33]
    assert float((shape_low[:, -8:] - shape_white[:, -8:]).mean()) < -0.5
    # dynamics: a signal with a silent second half has a much lower 5 % level quantile
    gated = x.clone()
    gated[..., 12000:] *= 1e-3
    assert float(an(gated)[0, 33] - e[0, 33]) < -1.0
    with pytest.raises(AfxError, match="per frame"):
        an(x, frames=True)


def test_stats_analyzer_learns_through_projection():
    an = _analyzer(embed_dim=16)
    x = 0.1 * torch.randn(2, 1, 8000, requires_grad=False)
    out = an(x)
    assert out.shape == (2, 16)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in an.encoder.parameters())
    with pytest.raises(AfxError, match="mono"):
        StatsEncoder(in_channels=2)


def test_short_files_continue_within_their_group(tmp_path):
    """Utterances of 0.25 s, clip of 1 s: with groups, every clip holds one speaker only."""
    sr = 16000
    t = np.arange(sr // 4) / sr
    files, groups = [], []
    for g, hz in (("low", 200.0), ("high", 2500.0)):
        for k in range(4):
            f = tmp_path / f"{g}{k}.wav"
            sf.write(f, (0.5 * np.sin(2 * np.pi * hz * t + k)).astype(np.float32), sr)
            files.append(f)
            groups.append(g)
    ds = StylePairDataset(files, STYLE_CHAIN, sr, sr, items_per_epoch=16, seed=2, bypass_probability=1.0,
                          groups=groups)
    for k in range(16):
        name = ds[k]["name"]
        parts = name.split("+")
        assert len(parts) >= 4 and len({p.rstrip("0123456789.wav") for p in parts}) == 1, name
    with pytest.raises(AfxError, match="one group per file"):
        StylePairDataset(files, STYLE_CHAIN, sr, sr, items_per_epoch=4, groups=groups[:3])
