"""Self-supervised style training (afxcli.train.style): generator, pair data, task, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from afxcli.effects.chain import Chain
from afxcli.errors import AfxError
from afxcli.train import load_for_inference, run_training, train, validate_config
from afxcli.train.style import (BYPASS_DISTRIBUTIONS, PEAK_BANDS_HZ, STYLE_CHAIN, STYLE_DISTRIBUTIONS, StylePairDataset,
                                StyleTask, evaluate, make_pair, neutral_q, random_style, style_to_q,
                                style_val_batches)

SR = 24000


@pytest.fixture(scope="module")
def chain():
    return Chain(STYLE_CHAIN, SR)


def test_generator_values_inside_ranges_and_varied(chain):
    rng = np.random.default_rng(0)
    style = random_style(rng, chain.free_keys, n=400, bypass_probability=0.0)
    assert set(style) == set(chain.free_keys) == set(STYLE_DISTRIBUTIONS)
    for f in chain.free:
        v = style[f.key]
        law, lo, hi = STYLE_DISTRIBUTIONS[f.key]
        assert v.shape == (400,)
        assert np.all(v >= lo - 1e-9) and np.all(v <= hi + 1e-9), f.key
        assert np.all(v >= f.spec.min) and np.all(v <= f.spec.max), f.key  # the chain can render it
        # varied: covers most of the range, spread in its own law's domain
        span = (np.log(v.max()) - np.log(v.min())) / math.log(hi / lo) if law == "log" else (v.max() - v.min()) / (hi - lo)
        assert span > 0.9, f.key
    # peaks stay in disjoint bands: never reordered
    for i, (lo, hi) in enumerate(PEAK_BANDS_HZ, start=1):
        assert np.all((style[f"eq.peak{i}_freq_hz"] >= lo) & (style[f"eq.peak{i}_freq_hz"] <= hi))
    assert np.all(np.diff(np.stack([style[f"eq.peak{i}_freq_hz"] for i in range(1, 5)]), axis=0) >= 0)
    q = style_to_q(chain, style)
    assert q.shape == (400, chain.n_free) and float(q.min()) >= 0 and float(q.max()) <= 1
    # normalized values round-trip to the physical ones
    per_effect = chain.denormalize(q)  # (400, all params of the effect) each
    for f in chain.free:
        name = f.key.split(".", 1)[1]
        got = per_effect[f.effect_index][:, chain.effects[f.effect_index].param_names.index(name)].numpy()
        np.testing.assert_allclose(got, style[f.key], rtol=1e-4, atol=1e-4, err_msg=f.key)


def test_generator_bypass_share():
    keys = list(STYLE_DISTRIBUTIONS)
    style = random_style(np.random.default_rng(1), keys, n=2000, bypass_probability=0.3)
    mild_ratio = style["comp.ratio"] <= BYPASS_DISTRIBUTIONS["comp.ratio"][2]
    # mild draws (30 %) plus the normal law's own share below 1.5 (log-uniform 1..10: 17.6 %)
    expected = 0.3 + 0.7 * math.log(1.5) / math.log(10.0)
    assert abs(mild_ratio.mean() - expected) < 0.04
    mild_eq = np.abs(style["eq.low_shelf_gain_db"]) <= 1.0
    assert abs(mild_eq.mean() - (0.3 + 0.7 / 12)) < 0.04
    # within one style, all EQ gains are mild together (per-effect decision)
    all_mild = np.all([np.abs(style[k]) <= 1.0 for k in keys if k.startswith("eq.") and k.endswith("gain_db")], axis=0)
    assert all_mild.mean() > 0.27


def _dominant_hz(x: torch.Tensor) -> float:
    spec = np.abs(np.fft.rfft(x.numpy().mean(axis=0) * np.hanning(x.shape[-1])))
    return float(np.argmax(spec) * SR / x.shape[-1])


def test_pair_halves_never_share_content(tmp_path):
    """Half a is a 300 Hz tone, half b a 3 kHz tone: the input and target always carry the same
    half's tone and the reference the other's (DeepAFx-ST §2.1)."""
    n = 8192
    t = np.arange(n // 2) / SR
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)])
    sf.write(tmp_path / "tones.wav", audio.astype(np.float32), SR)
    ds = StylePairDataset([tmp_path / "tones.wav"], STYLE_CHAIN, SR, n, items_per_epoch=12, seed=3,
                          bypass_probability=0.0)
    halves = set()
    for k in range(12):
        item = ds[k]
        tone = (300.0, 3000.0)[item["input_half"]]
        other = (300.0, 3000.0)[1 - item["input_half"]]
        for key, want in (("input", tone), ("target", tone), ("reference", other)):
            assert abs(_dominant_hz(item[key]) - want) < 0.1 * want, (k, key)
        assert item["input"].shape == item["reference"].shape == item["target"].shape == (1, n // 2)
        assert not torch.equal(item["q_input"], item["q_reference"])  # two different styles
        for key in ("input", "reference", "target"):  # peak-normalized styles (-12 dBFS)
            assert float(item[key].abs().max()) <= 10 ** (-12 / 20) + 1e-5
        halves.add(item["input_half"])
    assert halves == {0, 1}  # both sections serve as input
    # deterministic addressing: the same item again is bit-identical
    assert torch.equal(ds[5]["target"], ds[5]["target"])


def test_items_carry_the_group_of_their_first_file(tmp_path):
    """``group`` is the group of the clip's first file (what style_eval's intervals resample), also
    with two files of one name in different folders; without groups it is the clip's name."""
    n = 8192
    t = np.arange(2 * n) / SR
    files = []
    for folder, hz in (("a", 300), ("b", 900)):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "same.wav")
        sf.write(files[-1], (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    ds = StylePairDataset(files, STYLE_CHAIN, SR, n, items_per_epoch=8, seed=1, groups=["ga", "gb"])
    seen = set()
    for k in range(8):
        item = ds[k]
        low = _dominant_hz(item["input"]) < 600   # the 300 Hz file is group ga (under any style)
        assert item["group"] == ("ga" if low else "gb")
        seen.add(item["group"])
    assert seen == {"ga", "gb"}
    plain = StylePairDataset(files, STYLE_CHAIN, SR, n, items_per_epoch=2, seed=1)
    assert plain[0]["group"] == plain[0]["name"]


def test_change_speed_moves_pitch_and_keeps_length():
    """A tape-speed change by f moves a tone from F to f·F and returns exactly ``samples``."""
    from afxcli.train.style import change_speed

    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t))[None].astype(np.float32)
    for f in (0.8, 1.25):
        y = change_speed(x, f, 8192)
        assert y.shape == (1, 8192) and y.dtype == np.float32
        assert abs(_dominant_hz(torch.from_numpy(y)) - 1000.0 * f) < 10.0
    assert change_speed(x[:, :1000], 1.25, 2000)[:, 800:].max() == 0.0   # padded, not wrapped


def test_speed_augmentation_changes_the_crop_only_when_asked(tmp_path):
    """``speed_range`` plays each crop faster or slower (its tone moves, the halves keep their
    length); without it the items are those of a dataset that never had the option."""
    n = 8192
    t = np.arange(4 * n) / SR
    sf.write(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), SR)
    kw = dict(items_per_epoch=6, seed=2, bypass_probability=1.0)   # mild styles: the tone stays dominant
    plain = StylePairDataset([tmp_path / "tone.wav"], STYLE_CHAIN, SR, n, **kw)
    again = StylePairDataset([tmp_path / "tone.wav"], STYLE_CHAIN, SR, n, speed_range=None, **kw)
    fast = StylePairDataset([tmp_path / "tone.wav"], STYLE_CHAIN, SR, n, speed_range=(1.3, 1.4), **kw)
    for k in range(6):
        assert torch.equal(plain[k]["target"], again[k]["target"])
        item = fast[k]
        assert item["input"].shape == (1, n // 2) and "@x1.3" in item["name"]
        assert 1.25 * 500 < _dominant_hz(item["target"]) < 1.45 * 500
    with pytest.raises(AfxError):
        StylePairDataset([tmp_path / "tone.wav"], STYLE_CHAIN, SR, n, speed_range=(1.5, 1.2))


def test_make_pair_slices():
    x_i = torch.arange(8.0)[None].numpy()
    x_r = (100 + torch.arange(8.0))[None].numpy()
    p = make_pair(x_i, x_r, 1)
    assert p["input"].tolist() == [[4, 5, 6, 7]] and p["target"].tolist() == [[104, 105, 106, 107]]
    assert p["reference"].tolist() == [[100, 101, 102, 103]]


def _tiny_config(**top) -> dict:
    raw = {"task": "style", "seed": 0, "steps": 4, "batch_size": 2, "lr": 1e-3, "val_every_steps": 0,
           "checkpoint_every_steps": 2, "threads": 2,
           "data": {"sample_rate": SR, "clip_samples": 8192, "items_per_epoch": 8, "val_items": 2},
           "task_options": {"loss_options": {"fft_sizes": [64, 256, 1024], "time_weight": 100.0},
                            "encoder": "mobilenet",
                            "encoder_options": {"embed_dim": 32, "head_channels": 32,
                                                "widths": [[1, 8, 1, 1], [2, 16, 2, 2], [2, 16, 2, 2]]},
                            "frontend_options": {"n_fft": 512, "hop_samples": 256, "n_mels": 32},
                            "hidden": [32]}}
    raw.update(top)
    return validate_config(raw)


def test_style_task_steps_reduce_loss():
    torch.manual_seed(0)
    config = _tiny_config()
    task = StyleTask(config)
    # neutral start: the untrained model predicts a nearly transparent compressor
    batch = torch.utils.data.default_collate([task.train_dataset()[k] for k in range(4)])
    q0 = task.predict(batch).detach()
    assert torch.allclose(q0.mean(0), neutral_q(task.chain), atol=0.05)
    opt = torch.optim.Adam(task.model.parameters(), lr=3e-3)
    losses = []
    for step in range(10):
        opt.zero_grad()
        loss = task.loss(batch, step)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.85 * losses[0], losses


def test_afx_train_style_resumes_and_loads_for_inference(tmp_path):
    config = _tiny_config()
    out = tmp_path / "run"
    r1 = train(config, out, quiet=True, stop_at_step=2)
    assert r1.step == 2 and r1.stop_reason == "interrupted"
    r2 = run_training("style", None, out, quiet=True, overrides={k: config[k] for k in ("seed", "steps", "batch_size", "lr", "val_every_steps", "checkpoint_every_steps", "threads", "data", "task_options")})
    assert r2.step == 4 and r2.finished
    model, chain_spec, ck_config = load_for_inference(out)
    assert ck_config["task"] == "style" and Chain(chain_spec, SR).free_keys == Chain(STYLE_CHAIN, SR).free_keys
    x = torch.randn(1, 1, 4096) * 0.1
    ref = torch.randn(1, 1, 6000) * 0.1  # the reference may differ in length
    with torch.no_grad():
        q = model(x, ref)
    assert q.shape == (1, 22) and float(q.min()) > 0 and float(q.max()) < 1
    figures = evaluate(model, Chain(chain_spec, SR), style_val_batches(ck_config, chain_spec))
    assert figures["mrstft_input"] > 0 and math.isfinite(figures["mrstft_model"])


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_style_chain_renders_at_file_rates(rate):
    """The chain renders at the file's own rate at inference: its ranges must be valid there and a
    normalized setting must mean the same physical values at every rate."""
    c = Chain(STYLE_CHAIN, rate)
    q = torch.full((1, c.n_free), 0.3)
    ref = Chain(STYLE_CHAIN, SR).denormalize(q)
    for a, b in zip(c.denormalize(q), ref):
        torch.testing.assert_close(a, b)
    y = c(torch.randn(1, 1, 2048) * 0.1, q, mode="exact")
    assert y.shape == (1, 1, 2048) and bool(torch.isfinite(y).all())


def test_style_task_loudness_weight_adds_the_level_term_to_training_only():
    """``loudness_weight``: the training loss is the audio loss plus w·|ΔLUFS| of the same render;
    the validation loss stays the audio loss (comparable across runs)."""
    from afxcli.losses import LoudnessL1Loss

    base = _tiny_config()
    torch.manual_seed(0)
    plain = StyleTask(base)
    torch.manual_seed(0)
    weighted = StyleTask(validate_config({**{k: base[k] for k in ("seed", "steps", "batch_size", "lr", "data")},
                                          "task": "style",
                                          "task_options": {**base["task_options"], "loudness_weight": 0.5}}))
    batch = torch.utils.data.default_collate([plain.train_dataset()[k] for k in range(2)])
    with torch.no_grad():
        y = plain.render.render(batch["input"], plain.predict(batch))
        want = plain.loss_fn(y, batch["target"]) + 0.5 * LoudnessL1Loss(SR)(y, batch["target"])
        assert float(weighted.loss(batch, 0)) == pytest.approx(float(want), rel=1e-5)
        assert float(weighted.loss(batch, 0)) > float(plain.loss(batch, 0))
    assert weighted.val_loss(batch) == pytest.approx(plain.val_loss(batch), rel=1e-6)
    with pytest.raises(AfxError, match="loudness_weight"):
        validate_config({**{k: base[k] for k in ("seed", "steps", "batch_size", "lr", "data")}, "task": "style",
                         "task_options": {**base["task_options"], "loudness_weight": -1.0}})


def test_style_task_train_only_moves_the_chosen_outputs_alone():
    """``train_only: ["out.gain_db"]``: after optimizer steps every other predicted parameter is
    exactly as before (a linear probe for the output gain on the frozen network)."""
    base = _tiny_config()
    opts = {**base["task_options"], "train_only": ["out.gain_db"], "loudness_weight": 1.0}
    cfg = validate_config({**{k: base[k] for k in ("seed", "steps", "batch_size", "lr", "data")}, "task": "style",
                           "task_options": opts})
    torch.manual_seed(0)
    task = StyleTask(cfg)
    params = [p for p in task.model.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(task.model.controller.out.weight), id(task.model.controller.out.bias)}
    batch = torch.utils.data.default_collate([task.train_dataset()[k] for k in range(2)])
    with torch.no_grad():
        q0 = task.predict(batch)
    opt = torch.optim.Adam(params, lr=0.05)
    for step in range(3):
        opt.zero_grad()
        task.loss(batch, step).backward()
        opt.step()
    with torch.no_grad():
        q1 = task.predict(batch)
    g = task.chain.free_keys.index("out.gain_db")
    others = [j for j in range(q0.shape[1]) if j != g]
    assert torch.equal(q1[:, others], q0[:, others])
    assert float((q1[:, g] - q0[:, g]).abs().max()) > 1e-4
    for bad, match in ((["eq.nope_db"], "train_only"), ([], "train_only")):
        with pytest.raises(AfxError, match=match):
            StyleTask(validate_config({**cfg, "task_options": {**opts, "train_only": bad}}))
    with pytest.raises(AfxError, match="weight_decay"):
        StyleTask(validate_config({**cfg, "weight_decay": 0.01}))


def test_style_task_spsa_option_gives_gradients():
    """SPSA (DeepAFx-ST §2.3) as the alternative to AD: the controller still receives a gradient."""
    base = _tiny_config()
    opts = {**base["task_options"], "strategy": "spsa", "strategy_options": {"epsilon": 0.01}}
    task = StyleTask(validate_config({**{k: base[k] for k in ("seed", "steps", "batch_size", "lr", "data")},
                                      "task": "style", "task_options": opts}))
    batch = torch.utils.data.default_collate([task.train_dataset()[k] for k in range(2)])
    task.loss(batch, 0).backward()
    g = task.model.controller.out.weight.grad
    assert g is not None and float(g.abs().sum()) > 0


def test_train_style_script_prints_figures(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "train_style", Path(__file__).resolve().parents[1] / "scripts" / "train_style.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = _tiny_config(steps=2)
    cfg.pop("chain")
    path = tmp_path / "style.json"
    path.write_text(json.dumps(cfg))
    assert mod.main(["--config", str(path), "--out", str(tmp_path / "run"), "--max-minutes", "5"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    for key in ("style_val_mrstft_input", "style_val_mrstft_model", "style_val_mrstft_reduction",
                "style_seconds_per_step"):
        assert math.isfinite(float(lines[key].split()[0])), key
    assert lines["style_step"] == "2 steps"


def test_style_config_match_eq_smoothness_is_checked_and_reaches_the_data():
    base = _tiny_config()
    keep = {k: base[k] for k in ("seed", "steps", "batch_size", "lr", "task_options")}
    cfg = validate_config({**keep, "task": "style", "data": {**base["data"], "match_eq": "third",
                                                             "match_eq_smoothness": 0.0}})
    assert cfg["data"]["match_eq_smoothness"] == 0.0
    assert StyleTask(cfg).dataset("val").match_eq_smoothness == 0.0
    assert validate_config({**keep, "task": "style", "data": base["data"]})["data"]["match_eq_smoothness"] is None
    with pytest.raises(AfxError, match="match_eq_smoothness"):
        validate_config({**keep, "task": "style", "data": {**base["data"], "match_eq_smoothness": -1.0}})
