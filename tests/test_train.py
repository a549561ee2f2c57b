"""Training loop, datasets, checkpoints, configs and `afx train` (tiny, fast configurations)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from afxcli.cli import main
from afxcli.errors import AfxError
from afxcli.train import LRSchedule, load_checkpoint, load_config, load_for_inference, run_training, train
from afxcli.train.data import (AudioFolderDataset, GeneratedDataset, PairedFolderDataset, fixed_batches,
                               make_loader, split_files)

GAIN_CHAIN = {"effects": [{"type": "gain", "free": {"gain_db": {"min": -12, "max": 12}}}]}


def tiny_config(**over) -> dict:
    cfg = {"steps": 12, "lr": 0.1, "batch_size": 2, "val_every_steps": 4, "checkpoint_every_steps": 4, "threads": 1,
           "chain": GAIN_CHAIN,
           "data": {"sample_rate": 8000, "clip_samples": 1024, "items_per_epoch": 8, "val_items": 4},
           "task_options": {"strategy": "ad", "loss": "mrstft",
                            "loss_options": {"fft_sizes": [64, 256], "time_weight": 10.0}}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def write_config(tmp_path, cfg, name="cfg.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


# --------------------------------------------------------------------------------------------
# loop
# --------------------------------------------------------------------------------------------
def test_few_steps_reduce_loss(tmp_path):
    res = run_training("toy", write_config(tmp_path, tiny_config()), tmp_path / "run", quiet=True)
    vals = [h["val_loss"] for h in res.val_history]
    assert res.stop_reason == "finished" and res.step == 12
    assert vals[-1] < 0.3 * vals[0], vals
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == list(range(1, 13))
    assert all({"loss", "lr", "time_s", "grad_norm"} <= set(x) for x in steps)


def test_non_finite_gradient_skips_the_update(tmp_path, monkeypatch):
    """An inf gradient at one step is skipped (logged), not applied: the weights stay finite."""
    from afxcli.train.tasks import TASKS

    cls = TASKS["toy"]
    orig = cls.loss
    handles = []

    def loss(self, batch, step):
        while handles:
            handles.pop().remove()
        value = orig(self, batch, step)
        if step == 5:
            p = next(self.model.parameters())
            handles.append(p.register_hook(lambda g: torch.full_like(g, float("inf"))))
        return value

    monkeypatch.setattr(cls, "loss", loss)
    res = run_training("toy", write_config(tmp_path, tiny_config()), tmp_path / "run", quiet=True)
    assert res.stop_reason == "finished" and res.step == 12
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "skipped_update" in x] == [6]
    model, _, _ = load_for_inference(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", ["ad", "spsa"])
def test_resume_is_bit_identical(tmp_path, strategy):
    opts = {"strategy": strategy}
    if strategy == "spsa":
        opts["strategy_options"] = {"epsilon": 0.05}
    cfg = load_config(write_config(tmp_path, tiny_config(steps=7, task_options=opts, schedule="one_cycle",
                                                         checkpoint_every_steps=2, val_every_steps=3)), "toy")
    full = train(cfg, tmp_path / "full", quiet=True)
    part = train(cfg, tmp_path / "part", quiet=True, stop_at_step=3)  # stops between checkpoints
    assert part.stop_reason == "interrupted" and part.step == 3
    rest = train(cfg, tmp_path / "part", quiet=True)
    assert rest.step == 7 and rest.stop_reason == "finished"
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    for sa, sb in zip(a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["best_val_loss"] == b["best_val_loss"] and a["best_step"] == b["best_step"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # the resumed log reads as one run: same per-step losses as the uninterrupted one
    la = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [(x["step"], x.get("loss"), x.get("val_loss")) for x in la] == \
           [(x["step"], x.get("loss"), x.get("val_loss")) for x in lb]
    # a finished run resumed again does nothing
    again = train(cfg, tmp_path / "part", quiet=True)
    assert again.stop_reason == "already_finished" and again.step == 7


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = load_config(write_config(tmp_path, tiny_config(steps=4)), "toy")
    train(cfg, tmp_path / "r", quiet=True, stop_at_step=2)
    cfg2 = load_config(write_config(tmp_path, tiny_config(steps=4, lr=0.2)), "toy")
    with pytest.raises(AfxError, match="differs from the checkpoint's in lr"):
        train(cfg2, tmp_path / "r", quiet=True)
    res = train(cfg2, tmp_path / "r", quiet=True, resume=False)  # --no-resume starts over
    assert res.step == 4


def test_init_weights_starts_a_fresh_run_from_a_checkpoint(tmp_path):
    """Fine-tuning: a fresh run with ``init_weights`` starts from that checkpoint's model weights
    (its step-0 validation equals the source's final one); a model of another shape is refused."""
    first = train(load_config(write_config(tmp_path, tiny_config(steps=8)), "toy"), tmp_path / "a", quiet=True)
    src = load_checkpoint(tmp_path / "a" / "last.pt")
    cfg = load_config(write_config(tmp_path, tiny_config(steps=2, init_weights=str(tmp_path / "a" / "last.pt")),
                                   "ft.json"), "toy")
    res = train(cfg, tmp_path / "b", quiet=True, stop_at_step=0)
    from afxcli.train.tasks import get_task
    fresh = get_task("toy")(load_config(write_config(tmp_path, tiny_config(steps=2), "plain.json"), "toy")).model
    ft = load_checkpoint(tmp_path / "b" / "best.pt")["model_state"]
    for k, v in src["model_state"].items():
        assert torch.equal(ft[k], v), k
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in src["model_state"].items())
    assert res.val_history[0]["val_loss"] == pytest.approx(first.val_history[-1]["val_loss"], rel=1e-6)
    first_key = next(iter(src["model_state"]))
    bad = {**src["model_state"], first_key: torch.zeros(src["model_state"][first_key].numel() + 1)}
    torch.save({**src, "model_state": bad}, tmp_path / "bad.pt")
    cfg_bad = load_config(write_config(tmp_path, tiny_config(init_weights=str(tmp_path / "bad.pt")), "bad.json"), "toy")
    with pytest.raises(AfxError, match="init_weights does not fit this model"):
        train(cfg_bad, tmp_path / "c", quiet=True)


def test_early_stopping(tmp_path):
    # lr 0 with constant schedule: validation never improves -> stops after `patience` validations
    cfg = load_config(write_config(tmp_path, tiny_config(steps=50, lr=1e-12, val_every_steps=2, patience=2,
                                                         min_delta=1.0)), "toy")
    res = train(cfg, tmp_path / "r", quiet=True)
    assert res.stop_reason == "early_stopped" and res.step == 4
    assert load_checkpoint(tmp_path / "r" / "last.pt")["finished"]


def test_one_cycle_schedule_shape():
    cfg = {"schedule": "one_cycle", "lr": 1e-2, "steps": 1000, "one_cycle_pct_start": 0.3,
           "one_cycle_div_factor": 25.0, "one_cycle_final_div_factor": 1e4}
    s = LRSchedule(cfg)
    lrs = np.array([s(i) for i in range(1000)])
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs[peak] == pytest.approx(1e-2) and 290 <= peak <= 300
    assert np.all(np.diff(lrs[:peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert lrs[-1] == pytest.approx(1e-2 / 25 / 1e4, rel=1e-6)
    cos = LRSchedule({"schedule": "cosine", "lr": 1.0, "steps": 101, "warmup_steps": 0, "min_lr_fraction": 0.1})
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    warm = LRSchedule({"schedule": "constant", "lr": 1.0, "steps": 10, "warmup_steps": 4})
    assert [warm(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg, message", [
    ({"stepz": 3}, "config: unknown key(s) stepz"),
    ({"lr": -1}, "config lr: must be > 0"),
    ({"steps": 2.5}, "config steps: must be an integer"),
    ({"steps": True}, "config steps: must be an integer"),
    ({"schedule": "linear"}, "config schedule: must be one of constant, cosine, one_cycle"),
    ({"data": {"clip_samples": "a"}}, "config data.clip_samples: must be an integer"),
    ({"data": {"sr": 8000}}, "config data: unknown key(s) sr"),
    ({"task_options": {"strategy": "magic"}}, "config task_options.strategy: must be one of"),
    ({"chain": {"effects": []}}, "config chain:"),
    ({"task": "paired_x"}, "unknown training task"),
])
def test_config_errors_are_one_line(tmp_path, cfg, message):
    p = write_config(tmp_path, cfg)
    with pytest.raises(AfxError) as e:
        load_config(p, None if "task" in cfg else "toy")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(AfxError, match="no such config file"):
        load_config(tmp_path / "missing.json", "toy")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"steps\": 3,,}")
    with pytest.raises(AfxError, match="invalid JSON at line 1"):
        load_config(bad, "toy")
    toml = tmp_path / "c.toml"
    toml.write_text("steps = 3\nlr = 0.5\n[data]\nsample_rate = 8000\n")
    cfg = load_config(toml, "toy")
    assert cfg["steps"] == 3 and cfg["lr"] == 0.5 and cfg["data"]["sample_rate"] == 8000
    assert cfg["batch_size"] == 4 and cfg["chain"]["effects"][0]["type"] == "peq"  # defaults


# --------------------------------------------------------------------------------------------
# CLI end to end + inference loading
# --------------------------------------------------------------------------------------------
def test_afx_train_end_to_end(tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_config(steps=3, task_options={"model": "net"}))
    out = tmp_path / "run"
    assert main(["-q", "train", "toy", "--config", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "last.pt") in printed and "step 3/3" in printed
    model, chain_spec, config = load_for_inference(out)
    assert chain_spec == config["chain"] and chain_spec["effects"][0]["type"] == "gain"
    q = model(torch.zeros(2, 1, 100))
    assert q.shape == (2, 1) and torch.all((q > 0) & (q < 1))
    assert not model.training
    # --no-resume on the same folder retrains from scratch; a bad config is a one-line error (exit 2)
    assert main(["-q", "train", "toy", "--config", str(cfg), "--out", str(out), "--no-resume"]) == 0
    capsys.readouterr()
    bad = write_config(tmp_path, {"lr": "fast"}, "bad.json")
    assert main(["train", "toy", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config lr: must be a number" in err


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def test_split_by_file_hash_is_stable():
    files = [f"dir{i % 3}/song{i}.wav" for i in range(40)]
    train_a, val_a = split_files(files, 0.25)
    train_b, val_b = split_files(list(reversed(files)) + ["new/extra.wav"], 0.25)
    assert set(val_a) <= set(val_b) and set(train_a) <= set(train_b)  # adding a file moves no other
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 40
    assert 4 <= len(val_a) <= 18
    tr, va = split_files(["a.wav", "b.wav"], 0.01)  # never an empty side with >= 2 files
    assert len(tr) == 1 and len(va) == 1


def _write(path, audio, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, sr, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")


def test_folder_datasets(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        x = np.clip(0.2 * rng.standard_normal((2, 8000 + 500 * i)), -0.9, 0.9).astype(np.float32)
        _write(tmp_path / "in" / f"s{i}.wav", x, 16000)
        _write(tmp_path / "tgt" / f"s{i}.flac", 0.5 * x[:, :-100], 16000)  # target: half gain, shorter
    _write(tmp_path / "mixed" / "a.wav", np.zeros((1, 44100), np.float32) + 0.1, 44100)
    ds = AudioFolderDataset(tmp_path / "in", 8000, 1000, channels=1, split="train", val_fraction=0.3, seed=3)
    val = AudioFolderDataset(tmp_path / "in", 8000, 1000, channels=1, split="val", val_fraction=0.3, seed=3)
    assert not set(ds.names) & set(val.names) and len(ds.names) + len(val.names) == 6
    a, b = ds[5], ds[5]
    assert a["input"].shape == (1, 1000) and torch.equal(a["input"], b["input"])  # deterministic
    assert not torch.equal(ds[5]["input"], ds[5 + len(ds)]["input"])  # next epoch: new crop
    pair = PairedFolderDataset(tmp_path / "in", tmp_path / "tgt", 8000, 1000, channels=2, split="all", seed=1)
    for k in range(8):
        item = pair[k]
        assert item["input"].shape == item["target"].shape == (2, 1000)
        torch.testing.assert_close(item["target"], 0.5 * item["input"], atol=1e-6, rtol=0)  # same crop
    mixed = AudioFolderDataset(tmp_path / "mixed", 22050, 2000, channels=2, split="all")
    item = mixed[0]["input"]
    assert item.shape == (2, 2000) and abs(float(item[:, 200:-200].mean()) - 0.1) < 1e-3  # resampled 44.1k
    (tmp_path / "tgt" / "s0.flac").unlink()
    with pytest.raises(AfxError, match="without a partner"):
        PairedFolderDataset(tmp_path / "in", tmp_path / "tgt", 8000, 1000)


def test_loader_resumes_mid_stream_and_workers_agree():
    ds = GeneratedDataset(8000, 512, items_per_epoch=5, seed=2)
    whole = [b["input"] for b in make_loader(ds, 2, 0, 6)]
    tail = [b["input"] for b in make_loader(ds, 2, 3, 3, workers=2)]
    for x, y in zip(whole[3:], tail):
        assert torch.equal(x, y)
    v1, v2 = fixed_batches(ds, 2, 2), fixed_batches(ds, 2, 2)
    assert len(v1) == 2 and all(torch.equal(p["input"], q["input"]) for p, q in zip(v1, v2))
    x = whole[0]
    assert x.shape == (2, 1, 512) and math.isclose(float(x[0].abs().max()), 10 ** (-12 / 20), rel_tol=1e-5)


def test_paired_task_trains_and_loads(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(5):
        x = np.clip(0.2 * rng.standard_normal((1, 6000)), -0.9, 0.9).astype(np.float32)
        _write(tmp_path / "raw" / f"t{i}.wav", x, 8000)
        _write(tmp_path / "done" / f"t{i}.wav", x * 10 ** (-6 / 20), 8000)  # target: -6 dB
    cfg = {"steps": 4, "lr": 1e-3, "batch_size": 2, "val_every_steps": 2, "chain": GAIN_CHAIN, "threads": 1,
           "data": {"input_dir": "raw", "target_dir": "done", "sample_rate": 8000, "clip_samples": 2048,
                    "val_fraction": 0.3, "val_items": 2},
           "task_options": {"frontend_options": {"n_fft": 256, "hop_samples": 128, "n_mels": 32},
                            "encoder_options": {"embed_dim": 16}, "hidden": [16],
                            "loss_options": {"fft_sizes": [64, 256]}}}
    p = write_config(tmp_path, cfg)
    res = run_training("paired", p, tmp_path / "run", quiet=True)
    assert res.step == 4 and len(res.val_history) == 3
    assert all(math.isfinite(h["val_loss"]) for h in res.val_history)
    model, spec, config = load_for_inference(tmp_path / "run")
    q = model(torch.zeros(1, 1, 2048))
    assert q.shape == (1, 1) and spec["effects"][0]["type"] == "gain" and spec == config["chain"]
    assert config["data"]["input_dir"] == str((tmp_path / "raw").resolve())
    missing = write_config(tmp_path, {"chain": GAIN_CHAIN}, "m.json")
    with pytest.raises(AfxError, match="data.input_dir: required"):
        load_config(missing, "paired")


def test_afx_train_proxy_task(tmp_path, capsys):
    cfg = write_config(tmp_path, {"steps": 2, "batch_size": 2, "lr": 1e-3, "val_every_steps": 2,
                                  "checkpoint_every_steps": 1, "chain": GAIN_CHAIN,
                                  "data": {"sample_rate": 8000, "clip_samples": 1024},
                                  "task_options": {"val_items": 2,
                                                   "model": {"width": 4, "dilations": [1, 2], "kernel_size": 3}}})
    out = tmp_path / "proxy"
    assert main(["-q", "train", "proxy", "--config", str(cfg), "--out", str(out)]) == 0
    assert str(out / "proxy.pt") in capsys.readouterr().out
    model, spec, config = load_for_inference(out)
    assert spec["effects"][0]["type"] == "gain" and config["task"] == "proxy"
    y = model(torch.zeros(1, 1, 256), torch.full((1, 1), 0.5))
    assert y.shape == (1, 1, 256)


def test_sigterm_stops_checkpointed_and_resumable(tmp_path):
    import os
    import signal

    from afxcli.train.tasks import TASKS, ToyTask, register_task

    @register_task
    class SignalToy(ToyTask):
        name = "signal_toy_test"

        def loss(self, batch, step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().loss(batch, step)

    try:
        cfg = load_config(write_config(tmp_path, tiny_config(steps=6)), "signal_toy_test")
        res = train(cfg, tmp_path / "r", quiet=True)
        assert res.stop_reason == "interrupted" and res.step == 3
        ck = load_checkpoint(tmp_path / "r" / "last.pt")
        assert ck["step"] == 3 and not ck["finished"]
        before = signal.getsignal(signal.SIGTERM)
        res = train(cfg, tmp_path / "r", quiet=True)  # resumes at step 3: no more signals
        assert res.step == 6 and res.stop_reason == "finished"
        assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    finally:
        TASKS.pop("signal_toy_test", None)
