"""Networks: front ends against librosa / direct definitions, encoder and head shapes, gradients,
sigmoid ranges, and the frame-wise head's exact context window."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from afxcli.errors import AfxError
from afxcli.nn import (CQT, Analyzer, BlindModel, FrameWiseModel, LogMel, MobileNetEncoder, PowerSTFT,
                       StyleModel, TFEncoder, frames_to_blocks, make_analyzer)
from afxcli.nn.encoders import context_half_width
from afxcli.nn.frontends import constant_q_kernels, mel_filterbank
from afxcli.nn.framewise import dilation_plan

torch.set_num_threads(1)


def noise(n: int, seed: int = 0, channels: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, channels, n, generator=g)


# Small, fast configurations (8 kHz model rate, short hops).
SMALL_FRONTENDS = {
    "logmel": lambda **kw: LogMel(8000, n_fft=256, hop_samples=64, n_mels=32, **kw),
    "stft": lambda **kw: PowerSTFT(8000, n_fft=256, hop_samples=64, **kw),
    "cqt": lambda **kw: CQT(8000, hop_samples=64, f_min_hz=65.0, bins_per_octave=6, **kw),
}
SMALL_ENCODERS = {
    "mobilenet": lambda c: MobileNetEncoder(c, embed_dim=32, time_stride=4, stem_channels=8, head_channels=32,
                                            widths=((1, 8, 1, 1), (2, 12, 1, 2), (2, 16, 1, 2), (2, 16, 1, 2))),
    "tfe": lambda c: TFEncoder(c, embed_dim=32, time_stride=4, channels=8, branch_channels=(12, 16),
                               mix_channels=32),
}


def small_analyzer(fe: str, enc: str, **fe_options) -> Analyzer:
    frontend = SMALL_FRONTENDS[fe](**fe_options)
    return Analyzer(frontend, SMALL_ENCODERS[enc](frontend.out_channels))


def calibrate_batch_norm(model: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """Set running statistics from one training-mode pass (cumulative average), then eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(*inputs)
    model.eval()


# ---------------------------------------------------------------- front ends vs references

def test_logmel_matches_librosa():
    sr = 22050
    x = noise(20000, seed=1)[0, 0].numpy()
    ref = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=1024, hop_length=256, n_mels=128)
    mel = LogMel(sr, log=False, batch_norm=False)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert mel.shape == ref.shape == (128, 1 + 20000 // 256)
    assert np.max(np.abs(mel - ref)) <= 1e-5 * ref.max()
    db = LogMel(sr, batch_norm=False)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    ref_db = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None)
    assert np.max(np.abs(db - ref_db)) < 1e-3


def test_logmel_batch_norm_normalizes_each_band():
    fe = LogMel(8000, n_fft=256, hop_samples=64, n_mels=32)
    fe.train()
    out = fe(noise(4000, seed=2, batch=3) * torch.linspace(0.01, 1, 4000))
    per_band = out.permute(2, 0, 1, 3).reshape(32, -1)
    assert torch.allclose(per_band.mean(dim=1), torch.zeros(32), atol=1e-4)
    assert torch.allclose(per_band.var(dim=1, unbiased=False), torch.ones(32), atol=1e-2)


def test_power_stft_matches_librosa():
    sr = 24000
    x = noise(12000, seed=3)[0, 0].numpy()
    out = PowerSTFT(sr, n_fft=1024, hop_samples=256)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    ref = np.abs(librosa.stft(x, n_fft=1024, hop_length=256)) ** 0.3
    assert out.shape == ref.shape == (513, 1 + 12000 // 256)
    assert np.max(np.abs(out - ref)) < 1e-3 * ref.max()
    # Paper defaults (DeepAFx-ST §3.6): N = 4096, H = 2048.
    assert PowerSTFT().n_fft == 4096 and PowerSTFT().hop_samples == 2048


def test_mel_filterbank_matches_librosa():
    for sr, n_fft, n_mels, f_min, f_max in ((22050, 1024, 128, 0.0, None), (24000, 2048, 64, 30.0, 11000.0)):
        ours = mel_filterbank(sr, n_fft, n_mels, f_min, f_max)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
        assert ours.shape == ref.shape
        assert np.max(np.abs(ours - ref)) < 1e-6 * ref.max()


def test_cqt_matches_direct_correlation():
    sr, hop = 22050, 512
    fe = CQT(sr, hop_samples=hop, log=False, batch_norm=False)
    assert fe.n_bins == 99                      # C1 … 0.45·sr at 12 bins/octave
    freqs = fe.frequencies_hz.numpy().astype(np.float64)
    assert np.allclose(freqs, librosa.cqt_frequencies(99, fmin=32.703), rtol=1e-6)
    x = noise(20000, seed=4)[0, 0].numpy().astype(np.float64)
    out = fe(torch.from_numpy(x).float()[None, None])[0, 0].numpy()
    assert out.shape == (99, 1 + 20000 // hop)
    kernels = constant_q_kernels(sr, freqs)
    q = 1 / (2 ** (1 / 12) - 1)
    assert all(0 <= len(k) - q * sr / f <= 3 for k, f in zip(kernels, freqs))   # Brown 1991 lengths
    for j in (0, 3, 20, out.shape[1] - 1):    # includes both edges (zero padding)
        direct = []
        for k in kernels:                      # C[k, j] = Σ_n x[j·hop + n] conj(a_k[n]), n centered
            h = len(k) // 2
            idx = j * hop + np.arange(-h, h + 1)
            seg = np.where((idx >= 0) & (idx < len(x)), x[np.clip(idx, 0, len(x) - 1)], 0.0)
            direct.append(abs(np.dot(seg, k.conj())))
        direct = np.array(direct)
        assert np.max(np.abs(out[:, j] - direct) / direct) < 2e-3, j


def test_cqt_sine_peaks_at_its_bin():
    sr = 16000
    fe = CQT(sr, hop_samples=256, log=False, batch_norm=False)
    t = torch.arange(sr) / sr
    for k in (5, 40, fe.n_bins - 2):
        f = float(fe.frequencies_hz[k])
        out = fe(torch.sin(2 * np.pi * f * t)[None, None])[0, 0]
        column = out[:, out.shape[1] // 2]
        assert int(column.argmax()) == k
        assert abs(float(column[k]) - 0.5) < 0.01   # L1-normalized kernel: unit sine → 1/2


def test_channel_modes():
    x = noise(3000, seed=5, channels=2, batch=2)
    mono = LogMel(8000, n_fft=256, hop_samples=64, n_mels=32, batch_norm=False)
    assert torch.allclose(mono(x), mono(x.mean(dim=1, keepdim=True)), atol=1e-5)
    keep = LogMel(8000, n_fft=256, hop_samples=64, n_mels=32, batch_norm=False, channels="keep")
    out = keep(x)
    assert out.shape == (2, 2, 32, 1 + 3000 // 64)
    assert torch.allclose(out[:, 1], mono(x[:, 1:2])[:, 0], atol=1e-5)
    dup = keep(x[:, :1])                         # mono into a stereo model: channel repeated
    assert torch.allclose(dup[:, 0], dup[:, 1])
    with pytest.raises(AfxError):
        keep(noise(3000, channels=3))
    with pytest.raises(AfxError):
        LogMel(8000, channels="left")


# ---------------------------------------------------------------- encoders and models

@pytest.mark.parametrize("fe", ["logmel", "stft", "cqt"])
@pytest.mark.parametrize("enc", ["mobilenet", "tfe"])
def test_analyzer_shapes(fe, enc):
    for channels_mode, channels in (("mono", 1), ("mono", 2), ("keep", 2)):
        a = small_analyzer(fe, enc, channels=channels_mode).eval()
        assert a.hop_samples == 256
        for n in (300, 4000, 4097, 6001):
            x = noise(n, channels=channels, batch=2)
            with torch.no_grad():
                e = a(x)
                f = a(x, frames=True)
            assert e.shape == (2, 32)
            assert f.shape == (2, 32, 1 + n // 256) and a.num_frames(n) == 1 + n // 256
            assert torch.allclose(e, f.mean(dim=-1), atol=1e-5)


def test_default_encoder_sizes_are_compact():
    for fe in ("logmel", "cqt"):
        for enc in ("mobilenet", "tfe"):
            a = make_analyzer(fe, enc, 22050)
            n = sum(p.numel() for p in a.parameters())
            assert 50_000 <= n <= 500_000, (fe, enc, n)


def test_l2_normalized_embedding():
    fe = SMALL_FRONTENDS["logmel"]()
    a = Analyzer(fe, MobileNetEncoder(1, embed_dim=16, stem_channels=8, head_channels=16, l2_normalize=True,
                                      widths=((1, 8, 1, 1), (2, 8, 1, 2)))).eval()
    with torch.no_grad():
        e = a(noise(3000, batch=3))
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)


def test_style_model_gradients_and_range():
    torch.manual_seed(0)
    model = StyleModel(small_analyzer("logmel", "mobilenet"), n_params=7, hidden=(32, 32))
    x, r = noise(4000, seed=6, batch=3), noise(4000, seed=7, batch=3) * 3
    q = model(x, r)
    assert q.shape == (3, 7)
    assert bool(((q > 0) & (q < 1)).all())
    (q * torch.linspace(-1, 1, 7)).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for part in ("analyzer.frontend", "analyzer.encoder", "controller"):
        assert sum(float(g.abs().sum()) for n, g in grads.items() if n.startswith(part)) > 0, part
    nonzero = sum(int((g != 0).any()) for g in grads.values())
    assert nonzero >= 0.9 * len(grads)


def test_style_model_shares_weights_and_takes_different_lengths():
    torch.manual_seed(1)
    model = StyleModel(small_analyzer("cqt", "tfe"), n_params=4, hidden=(16,))
    x, r = noise(4000, seed=8, batch=2), noise(4000, seed=9, batch=2) * 0.2
    calibrate_batch_norm(model, x, r)
    with torch.no_grad():
        e_i, e_r = model.embed(x, r)
        assert torch.allclose(e_i, model.analyzer(x), atol=1e-5)    # one batched pass = separate passes
        assert torch.allclose(e_r, model.analyzer(r), atol=1e-5)
        q = model(x, r)
        assert not torch.allclose(q, model(r, x))                    # order matters: concat(e_i, e_r)
        q_long = model(x, noise(6000, seed=10, batch=2))
    assert q_long.shape == (2, 4)
    with pytest.raises(AfxError):
        model(x, noise(4000, batch=3))


@pytest.mark.parametrize("enc", ["mobilenet", "tfe"])
def test_blind_model_range_on_extreme_inputs(enc):
    torch.manual_seed(2)
    model = BlindModel(small_analyzer("logmel", enc), n_params=5, hidden=(32, 32), batch_norm=True)
    x = noise(4000, seed=11, batch=4)
    calibrate_batch_norm(model, x)
    with torch.no_grad():
        for audio in (x, torch.zeros(2, 1, 4000), 10 * x[:2], noise(4000, channels=2, batch=2)):
            q = model(audio)
            assert q.shape == (audio.shape[0], 5)
            assert bool(((q > 0) & (q < 1)).all())
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert float(model.analyzer.encoder.project.weight.grad.abs().sum()) > 0


# ---------------------------------------------------------------- frame-wise head

def test_dilation_plan_and_context_formula():
    for half in range(0, 60):
        plan = dilation_plan(half)
        assert sum(plan) == half
        assert context_half_width([(3, 1, d) for d in plan]) == half
    # stride-2 kernel-3 conv then a kernel-3 conv: 1 + 1·2 input frames each side
    assert context_half_width([(3, 2, 1), (3, 1, 1)]) == 3
    assert context_half_width([(3, 2, 1), (1, 1, 1), (5, 2, 1), (3, 1, 2)]) == 1 + 2 * 2 + 2 * 4


def test_framewise_default_matches_deepafx_geometry():
    model = FrameWiseModel(make_analyzer("logmel", "mobilenet", 22050), n_params=3)
    assert model.hop_samples == 1024                            # DeepAFx §3: 1024-sample frames
    assert abs(model.context_samples - 40960) <= model.hop_samples  # ~40960-sample context


@pytest.mark.parametrize("fe,enc", [("logmel", "mobilenet"), ("cqt", "tfe"), ("stft", "tfe")])
def test_framewise_output_depends_only_on_its_context(fe, enc):
    torch.manual_seed(3)
    model = FrameWiseModel(small_analyzer(fe, enc), n_params=4, context_samples=12000, channels=16)
    n = 24000
    x = noise(n, seed=12, batch=2)
    calibrate_batch_norm(model, noise(n, seed=13, batch=3) * torch.linspace(0.01, 1.0, n))
    assert model.head.half_frames > 0                           # the head widens the analyzer's span
    assert abs(model.context_samples - 12000) <= model.hop_samples
    with torch.no_grad():
        q = model(x)
        assert q.shape == (2, 4, model.num_frames(n)) and model.num_frames(n) == 1 + n // 256
        assert bool(((q > 0) & (q < 1)).all())
        assert torch.equal(model.frame_centers(3), torch.tensor([0, 256, 512]))
        for k in (45, 46):
            start, stop = model.context_window(k, n)
            assert start > 0 and stop < n
            assert stop - start == model.context_samples
            outside = x.clone()
            outside[..., :start] = noise(start, seed=14, batch=2)
            outside[..., stop:] = noise(n - stop, seed=15, batch=2)
            q_out = model(outside)
            assert torch.allclose(q_out[..., k], q[..., k], atol=1e-6)
            assert not torch.allclose(q_out, q, atol=1e-4)   # other frames did see the change
            inside = x.clone()
            inside[..., start + model.context_samples // 4: stop - model.context_samples // 4] *= 4.0
            assert (model(inside)[..., k] - q[..., k]).abs().max() > 1e-4


def test_framewise_gradients_reach_every_part():
    torch.manual_seed(4)
    model = FrameWiseModel(small_analyzer("logmel", "tfe"), n_params=3, context_samples=3000, channels=16)
    q = model(noise(5000, seed=16, batch=2))
    (q[:, 0] - q[:, 2]).pow(2).mean().backward()
    for part in (model.analyzer.frontend, model.analyzer.encoder, model.head):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_frames_to_blocks():
    hop, rate = 256, 8000
    q = torch.arange(10, dtype=torch.float32).repeat(2, 3, 1)          # (2, 3, 10): value k at k·hop
    blocks = frames_to_blocks(q, hop, rate, n_samples=9 * hop, block_size=64)
    assert blocks.shape == (2, 3, 36)
    centers = (torch.arange(36) + 0.5) * 64
    assert torch.allclose(blocks[0, 0], centers / hop, atol=1e-5)     # linear ramp reproduced
    # File at 44.1 kHz: same times, values held past the last frame center.
    blocks_44 = frames_to_blocks(q, hop, rate, n_samples=44100, block_size=441, sample_rate=44100)
    t = (torch.arange(100) + 0.5) * 441 / 44100
    expected = (t * rate / hop).clamp(max=9)
    assert torch.allclose(blocks_44[1, 2], expected, atol=1e-4)
    assert torch.allclose(frames_to_blocks(torch.full((1, 2, 5), 0.3), hop, rate, 3000, 100),
                          torch.full((1, 2, 30), 0.3))


@pytest.mark.parametrize("fe,enc", [("logmel", "mobilenet"), ("cqt", "tfe")])
def test_framewise_chunked_equals_full_pass(fe, enc):
    torch.manual_seed(5)
    model = FrameWiseModel(small_analyzer(fe, enc), n_params=3, context_samples=6000, channels=16)
    n = 30000
    calibrate_batch_norm(model, noise(n, seed=17, batch=2) * torch.linspace(0.01, 1.0, n))
    x = noise(n, seed=18, channels=2) * torch.linspace(1.0, 0.05, n)
    with torch.no_grad():
        full = model(x)
        for chunk in (7, 40):
            assert torch.allclose(model.forward_chunked(x, chunk_frames=chunk), full, atol=1e-5)
    model.train()
    with pytest.raises(AfxError):
        model.forward_chunked(x)


def test_embed_windows_aggregates_window_embeddings():
    torch.manual_seed(6)
    a = small_analyzer("logmel", "mobilenet").eval()
    x = noise(10000, seed=19, batch=2)
    with torch.no_grad():
        e = a.embed_windows(x, window_samples=3000, max_batch=2)
        manual = torch.stack([a(x[..., s:s + 3000]) for s in (0, 3000, 6000, 9000)][:3]).mean(dim=0)
        assert torch.allclose(e, manual, atol=1e-5)     # 1000-sample tail (< half a window) dropped
        assert torch.allclose(a.embed_windows(x[..., :2000], 3000), a(x[..., :2000]), atol=1e-6)


def test_dtypes_follow_the_module():
    a = small_analyzer("cqt", "mobilenet").eval()
    x64 = noise(3000, seed=20).double()
    with torch.no_grad():
        e32 = a(x64)                                  # float64 audio into a float32 model
        assert e32.dtype == torch.float32
        e64 = a.double()(x64)                         # whole model in float64
    assert e64.dtype == torch.float64
    assert torch.allclose(e64.float(), e32, atol=1e-3)
