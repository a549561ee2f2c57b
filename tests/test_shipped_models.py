"""The shipped style models and speech presets: present, small, described by their cards, usable."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from afxcli.effects.chain import Chain
from afxcli.tasks.style import StylePredictor, load_style_preset

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.mark.parametrize("domain,rate", [("music", 44100), ("speech", 16000)])
def test_shipped_model_matches_its_card_and_predicts_in_range(domain, rate):
    weights, card_path = MODELS / f"style_{domain}.pt", MODELS / f"style_{domain}.json"
    assert weights.is_file() and card_path.is_file()
    card = json.loads(card_path.read_text())
    assert weights.stat().st_size < 20e6 and card["bytes"] == weights.stat().st_size
    assert card["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    for key in ("data", "training", "evaluation"):
        assert card[key]
    assert "train_style.py" in card["training"]["command"] and card["evaluation"]["figures"]
    pred = StylePredictor.load(weights)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 3 * rate))).astype(np.float32)
    ref = (0.3 * rng.standard_normal((1, 2 * rate))).astype(np.float32)
    chain = Chain(pred.render_spec, rate)
    values = pred.predict(x, rate, ref, rate)
    assert len(values) == len(chain.effects)
    for fx, v in zip(chain.effects, values):
        for name, val in v.items():
            spec = fx.spec(name)
            assert np.isfinite(val) and spec.min - 1e-9 <= val <= spec.max + 1e-9


@pytest.mark.parametrize("name", ["telephone", "warm", "bright", "neutral", "broadcast"])
def test_shipped_speech_presets_fit_the_speech_model(name):
    preset = load_style_preset(ROOT / "presets" / "speech" / f"{name}.json")
    pred = StylePredictor.load(MODELS / "style_speech.pt")
    assert preset.embedding.size == pred.embed_dim and preset.model_id == pred.model_id
    assert preset.level_lufs is not None and -60 < preset.level_lufs < 0


def _eq_response_db(chain, values, freqs_hz) -> np.ndarray:
    """Magnitude response (dB) of every EQ effect of ``chain`` (its biquads in series) at ``freqs_hz``."""
    from afxcli.filters import sos_response_db

    sos = [sec["b"] + sec["a"] for fx, v in zip(chain.effects, values) if hasattr(fx, "biquad_sections")
           for sec in fx.biquad_sections(v)]
    return sos_response_db(np.array(sos), chain.sample_rate, freqs_hz)


def test_speech_presets_order_as_designed():
    """On a speech-like test signal the presets keep their designed order: telephone cuts the highs
    (EQ response at 5–7 kHz relative to 1 kHz, the matched stage and the model's EQ together)
    most, bright least of telephone/warm/bright; broadcast compresses hardest."""
    from afxcli.train.data import music_like

    pred = StylePredictor.load(MODELS / "style_speech.pt")
    sr = 16000
    rng = np.random.default_rng(3)
    x = music_like(rng, sr, 6 * sr, 1).astype(np.float32)
    x *= (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(x.shape[-1]) / sr)) ** 2  # syllable-rate envelope
    chain = Chain(pred.render_spec, sr)
    highs, thr = {}, {}
    for name in ("telephone", "warm", "bright", "neutral", "broadcast"):
        preset = load_style_preset(ROOT / "presets" / "speech" / f"{name}.json")
        values = pred.predict(x, sr, ref_embedding=preset.embedding, ref_spectrum=preset.spectrum)
        r = _eq_response_db(chain, values, np.array([1000.0, 5000.0, 6000.0, 7000.0]))
        highs[name] = float(r[1:].mean() - r[0])
        thr[name] = Chain.flatten(chain.labels, values)["comp.threshold_db"]
    assert highs["telephone"] < highs["warm"] < highs["bright"], highs
    assert thr["broadcast"] == min(thr.values()), thr


def test_an_adaptive_preset_runs_with_the_model_that_made_it(tmp_path):
    """Both shipped models embed into 256 values, so size alone cannot tell a speech preset from a
    music one: the preset's model id picks the shipped model when none is given (master as well
    as style-transfer), and another model is refused."""
    from afxcli.errors import AfxError
    from afxcli.tasks.master import MasterContext
    from afxcli.tasks.style import DEFAULT_MODELS, StyleContext

    ctx = MasterContext(preset="telephone")
    assert ctx.predictor.path == DEFAULT_MODELS["speech"]
    assert StyleContext(preset="warm").predictor.path == DEFAULT_MODELS["speech"]
    with pytest.raises(AfxError, match="made with model"):
        StyleContext(preset="warm", model="music")
    with pytest.raises(AfxError, match="made with model"):
        MasterContext(preset="telephone", model="music")
    data = json.loads((ROOT / "presets" / "speech" / "warm.json").read_text())
    data["model_id"] = "0123456789abcdef"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(AfxError, match="not a shipped model"):
        StyleContext(preset=str(other))
