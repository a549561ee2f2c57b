"""Suite-wide fixtures."""
import gc

import pytest

#: A tiny style model with a convolutional encoder (MobileNet-style), at 16 kHz: what the
#: style-transfer tests run, and an architecture the NumPy export refuses.
TINY_CONV_STYLE_CONFIG = {
    "data": {"sample_rate": 16000, "clip_samples": 16000},
    "task_options": {"frontend": "logmel", "encoder": "mobilenet",
                     "frontend_options": {"n_fft": 256, "hop_samples": 64, "n_mels": 32},
                     "encoder_options": {"embed_dim": 16, "head_channels": 32,
                                         "widths": [[1, 8, 1, 1], [2, 16, 1, 2]]},
                     "hidden": [32]}}


@pytest.fixture(scope="session")
def tiny_conv_style_model(tmp_path_factory):
    """Path of a randomly initialized (seed 0) :data:`TINY_CONV_STYLE_CONFIG` style checkpoint
    with the shipped models' chain."""
    import torch

    from afxcli.effects.chain import Chain
    from afxcli.nn import StyleModel, make_analyzer
    from afxcli.tasks.style import save_style_checkpoint
    from afxcli.train.style import STYLE_CHAIN

    torch.manual_seed(0)
    cfg = TINY_CONV_STYLE_CONFIG
    sr, o = cfg["data"]["sample_rate"], cfg["task_options"]
    analyzer = make_analyzer(o["frontend"], o["encoder"], sr, o["frontend_options"], **o["encoder_options"])
    chain = Chain(STYLE_CHAIN, sr)
    path = tmp_path_factory.mktemp("tiny_conv_style") / "tiny_style.pt"
    save_style_checkpoint(path, StyleModel(analyzer, chain.n_free, tuple(o["hidden"])), chain.spec, cfg)
    return path


@pytest.fixture(autouse=True, scope="module")
def _collect_plugins_per_module():
    """Destroy a module's VST3 plugin instances before the next module starts: the DPF plugins
    print "DPF warning: ..." on stderr from their destructors, which would otherwise land in
    whichever later test happens to trigger garbage collection (and trip its stderr checks)."""
    yield
    gc.collect()
