"""Corpus cache, manifests, group split, and the MIDI/MUS tools of scripts/data (no downloads)."""
from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from afxcli import datasets
from afxcli.errors import AfxError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "data"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"afx_scripts_data_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


midi = _load("midi")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AFX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _items(groups_durations: dict[str, list[float]]) -> list[dict]:
    items = []
    for g, durs in groups_durations.items():
        for i, d in enumerate(durs):
            items.append({"file": f"{g}/{i}.flac", "duration_s": d, "group": g})
    return items


def _fake_corpus(cache: Path, name: str = "speech", n_groups: int = 40) -> list[dict]:
    root = cache / "corpora" / name
    items = _items({f"spk{g:02d}": [1.0 + (g % 3), 2.0] for g in range(n_groups)})
    for it in items:
        (root / it["file"]).parent.mkdir(parents=True, exist_ok=True)
        (root / it["file"]).write_bytes(b"x")
    datasets.write_manifest(root, name, items)
    return items


def test_cache_dir_env_and_platformdirs(cache, monkeypatch):
    assert datasets.cache_dir() == cache
    assert datasets.corpus_dir("speech") == cache / "corpora" / "speech"
    monkeypatch.delenv("AFX_CACHE_DIR")
    import platformdirs
    assert datasets.cache_dir() == Path(platformdirs.user_cache_dir("afx"))
    with pytest.raises(AfxError):
        datasets.corpus_dir("../etc")


def test_split_is_by_group_within_budget_and_near_fraction():
    items = _items({f"track{g:03d}": [30.0 + g % 7] for g in range(200)})
    datasets.assign_splits(items, 0.1)
    total = sum(it["duration_s"] for it in items)
    val = sum(it["duration_s"] for it in items if it["split"] == "val")
    assert 0.09 * total <= val <= 0.1 * total + 1e-9
    # groups never straddle
    multi = _items({f"spk{g}": [1.0, 2.0, 3.0] for g in range(50)})
    datasets.assign_splits(multi, 0.1)
    by_group: dict[str, set] = {}
    for it in multi:
        by_group.setdefault(it["group"], set()).add(it["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert any(s == {"val"} for s in by_group.values())


def test_split_is_deterministic_and_order_independent():
    a = _items({f"g{g}": [float(g % 5 + 1)] * 2 for g in range(60)})
    b = list(reversed([dict(it) for it in a]))
    datasets.assign_splits(a, 0.1)
    datasets.assign_splits(b, 0.1)
    assert {it["file"]: it["split"] for it in a} == {it["file"]: it["split"] for it in b}
    # which groups: the lowest-hash ones that fit the budget
    ranked = sorted({it["group"] for it in a}, key=datasets.group_fraction)
    assert next(it for it in a if it["group"] == ranked[0])["split"] == "val"


def test_split_keeps_big_speaker_in_training():
    # one voice with 80 % of the audio can never be the validation set
    items = _items({"big": [80.0], **{f"s{i}": [1.0] for i in range(20)}})
    datasets.assign_splits(items, 0.1)
    assert next(it for it in items if it["group"] == "big")["split"] == "train"
    val = sum(it["duration_s"] for it in items if it["split"] == "val")
    assert 0 < val <= 10.0
    with pytest.raises(AfxError):
        datasets.assign_splits(items, 1.0)
    with pytest.raises(AfxError):
        datasets.assign_splits([{"file": "a"}], 0.1)


def test_train_only_sources_leave_the_validation_set_unchanged():
    items = _items({f"g{g}": [float(g % 5 + 1)] * 2 for g in range(60)})
    datasets.assign_splits(items, 0.1)
    before = {it["file"]: it["split"] for it in items}
    # a large added source with many small groups: all training, nothing else moves
    extra = _items({f"added{g}": [1.0] for g in range(100)})
    for it in extra:
        it["train_only"] = True
    both = [dict(it) for it in items] + extra
    datasets.assign_splits(both, 0.1)
    assert {it["file"]: it["split"] for it in both if it["file"] in before} == before
    assert all(it["split"] == "train" for it in both if it.get("train_only"))
    # unmarked, the same added groups would take part of the validation set
    plain = [dict(it) for it in items] + [{k: v for k, v in it.items() if k != "train_only"} for it in extra]
    datasets.assign_splits(plain, 0.1)
    assert any(it["split"] == "val" for it in plain if it["group"].startswith("added"))


def test_hash_split_of_a_partial_build_agrees_with_the_full_build():
    full = _items({f"work{g:03d}": [float(g % 9 + 1)] * (g % 3 + 1) for g in range(300)})
    datasets.assign_splits(full, 0.1, rule="hash")
    by_file = {it["file"]: it["split"] for it in full}
    val_groups = {it["group"] for it in full if it["split"] == "val"}
    assert 15 <= len(val_groups) <= 45            # about 10 % of 300 groups
    assert all(datasets.group_fraction(g) < 0.1 for g in val_groups)
    # a partial build (every third item missing, other durations): the same split for what it has
    part = [dict(it, duration_s=it["duration_s"] * 3) for i, it in enumerate(full) if i % 3]
    datasets.assign_splits(part, 0.1, rule="hash")
    assert {it["file"]: it["split"] for it in part} == {f: by_file[f] for f in (it["file"] for it in part)}
    # under the budget rule the same partial build moves groups
    budget_full, budget_part = [dict(it) for it in full], [dict(it) for it in part]
    datasets.assign_splits(budget_full, 0.1)
    datasets.assign_splits(budget_part, 0.1)
    full_splits = {it["file"]: it["split"] for it in budget_full}
    assert any(full_splits[it["file"]] != it["split"] for it in budget_part)
    # train-only groups stay in training; unknown rules are refused
    marked = [dict(it, train_only=True) for it in full if it["group"] in val_groups][:3]
    datasets.assign_splits(marked, 0.1, rule="hash")
    assert all(it["split"] == "train" for it in marked)
    with pytest.raises(AfxError):
        datasets.assign_splits(full, 0.1, rule="random")


def test_manifest_roundtrip_and_files(cache):
    _fake_corpus(cache)
    items = datasets.load_manifest("speech")
    assert len(items) == 80 and {it["split"] for it in items} == {"train", "val"}
    train, val = datasets.files("speech", "train"), datasets.files("speech", "val")
    assert len(train) + len(val) == 80 and not set(train) & set(val)
    assert all(p.is_absolute() and p.is_file() for p in train + val)
    assert sorted(datasets.files("speech")) == sorted(train + val)
    s = datasets.summary("speech")
    assert s["train"]["groups"] + s["val"]["groups"] == 40
    assert datasets.available() == ["speech"]
    doc = json.loads((cache / "corpora/speech/manifest.json").read_text())
    assert doc["format"] == 1 and doc["val_fraction"] == 0.1


def test_added_sources_can_be_left_out(cache):
    root = cache / "corpora" / "speech"
    items = _items({f"spk{g:02d}": [1.0 + (g % 3), 2.0] for g in range(20)})
    added = _items({f"new{g}": [1.0, 1.0] for g in range(5)})
    for it in added:
        it["train_only"] = True
    for it in items + added:
        (root / it["file"]).parent.mkdir(parents=True, exist_ok=True)
        (root / it["file"]).write_bytes(b"x")
    datasets.write_manifest(root, "speech", items + added)
    first = {str(root / it["file"]) for it in items}
    train_all, train_first = datasets.files("speech", "train"), datasets.files("speech", "train", added=False)
    assert len(train_all) == len(train_first) + 10 and {str(p) for p in train_first} <= first
    assert datasets.files("speech", "val", added=False) == datasets.files("speech", "val")
    g = datasets.groups("speech", "train", added=False)   # aligned with files(..., added=False)
    assert len(g) == len(train_first) and not any(x.startswith("new") for x in g)
    assert sum(x.startswith("new") for x in datasets.groups("speech", "train")) == 10
    only = datasets.files("speech", "train", added="only")        # what a first-build model never saw
    assert len(only) == 10 and not ({str(p) for p in only} & first)
    assert all(x.startswith("new") for x in datasets.groups("speech", "train", added="only"))
    assert datasets.files("speech", "val", added="only") == []
    with pytest.raises(AfxError, match="added must be"):
        datasets.files("speech", "train", added="yes")


def test_errors_are_one_line_with_build_command(cache):
    with pytest.raises(AfxError) as e:
        datasets.load_manifest("speech")
    assert "scripts/data/build_speech.py" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AfxError, match="known corpora"):
        datasets.files("nope")
    _fake_corpus(cache)
    with pytest.raises(AfxError, match="split must be"):
        datasets.files("speech", "test")
    victim = datasets.files("speech", "train")[0]
    victim.unlink()
    with pytest.raises(AfxError, match="missing"):
        datasets.files("speech", "train")
    assert len(datasets.files("speech", "train", check=False)) > 0
    (cache / "corpora/speech/manifest.json").write_text("{not json")
    with pytest.raises(AfxError, match="unreadable"):
        datasets.load_manifest("speech")
    (cache / "corpora/speech/manifest.json").write_text(json.dumps({"items": [{"file": "a"}]}))
    with pytest.raises(AfxError, match="malformed"):
        datasets.load_manifest("speech")


# ------------------------------------------------------------------ MIDI / MUS (scripts/data)


def _mus(score: bytes, instruments=(0,)) -> bytes:
    header_len = 16 + 2 * len(instruments)
    return (b"MUS\x1a" + struct.pack("<HHHHHH", len(score), header_len, 1, 0, len(instruments), 0)
            + b"".join(struct.pack("<H", i) for i in instruments) + score)


def test_mus_to_midi_hand_made():
    score = bytes([
        0x40, 0x00, 30,           # controller, MUS ch 0: number 0 = program change -> 30
        0x9F, 0xA4, 100, 0x46,    # last|play note, ch 15 (drums): note 36 + volume 100; delay 70
        0x0F, 36,                 # release note, ch 15
        0x11, 60,                 # play note, ch 1: note 60 without volume -> last (127)
        0x20, 0xFF,               # pitch bend, ch 0: 255
        0x43, 3, 90,              # controller, ch 3: number 3 (volume) = 90 -> CC 7
        0xCA, 4, 64, 0x81, 0x00,  # last|controller, ch 10: number 4 (pan) = 64; delay 128
        0x60,                     # score end
    ])
    mf = midi.parse_smf(midi.mus_to_midi(_mus(score)))
    assert mf.format == 0 and mf.division == 70
    ev = [(e.tick, e.data) for e in mf.tracks[0]]
    assert ev[0] == (0, b"\xff\x51\x03" + (500000).to_bytes(3, "big"))   # 140 ticks per second
    assert (0, bytes([0xC0, 30])) in ev
    assert (0, bytes([0x99, 36, 100])) in ev                    # MUS 15 -> MIDI 9 (drums)
    assert (70, bytes([0x89, 36, 64])) in ev
    assert (70, bytes([0x91, 60, 127])) in ev
    assert (70, bytes([0xE0, (255 * 64) & 0x7F, (255 * 64) >> 7])) in ev
    assert (70, bytes([0xB3, 7, 90])) in ev
    assert (70, bytes([0xBB, 10, 64])) in ev                    # MUS 10 -> MIDI 11, pan
    assert ev[-1] == (198, b"\xff\x2f\x00")                     # 70 + 128 ticks
    assert abs(midi.duration_s(mf) - 198 / 140) < 1e-9
    with pytest.raises(ValueError):
        midi.mus_to_midi(b"MThd....")


def _smf_two_channels() -> bytes:
    """Format 1: tempo track (120 -> 60 bpm at beat 4) + a track with channels 0 and 2."""
    t0 = (b"\x00\xff\x51\x03" + (500000).to_bytes(3, "big")
          + b"\x83\x60\xff\x51\x03" + (1000000).to_bytes(3, "big") + b"\x00\xff\x2f\x00")
    # running status on the second note-on of channel 0
    t1 = (b"\x00\xc0\x05" b"\x00\xc2\x28" b"\x00\x90\x3c\x64" b"\x00\x92\x40\x50"
          b"\x60\x3e\x64"            # delta 96, running status 0x92: note 62 on ch 2
          b"\x87\x40\x80\x3c\x00"    # delta 960: note off ch 0
          b"\x00\x82\x40\x00\x00\x82\x3e\x00\x00\xff\x2f\x00")
    chunks = b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in (t0, t1))
    return b"MThd" + struct.pack(">IHHH", 6, 1, 2, 480) + chunks


def test_smf_roundtrip_channels_tempo_and_cap():
    buf = _smf_two_channels()
    mf = midi.parse_smf(buf)
    assert len(mf.tracks) == 2 and midi.note_channels(mf) == [0, 2]
    again = midi.parse_smf(midi.write_smf(mf))
    assert [[(e.tick, e.data) for e in t] for t in again.tracks] == \
           [[(e.tick, e.data) for e in t] for t in mf.tracks]
    # tempo map: 480 ticks/quarter, 0.5 s per quarter up to tick 480, then 1 s per quarter
    conv = midi.tick_to_seconds(mf)
    assert conv(480) == pytest.approx(0.5) and conv(960) == pytest.approx(1.5)
    assert midi.duration_s(mf) == pytest.approx(0.5 + (1056 - 480) / 480 * 1.0)
    only = midi.only_channel(mf, 2)
    assert midi.note_channels(only) == [2]
    kept = [e.data for t in only.tracks for e in t]
    assert bytes([0xC0, 5]) in kept and bytes([0x80, 0x3C, 0]) not in kept  # ch-0 program kept
    capped = midi.cap_seconds(mf, 0.3)
    # first event after 0.3 s is the tempo change at tick 480 (0.5 s): everything from there is cut
    assert max(e.tick for t in capped.tracks for e in t) == 480
    assert midi.note_channels(capped) == [0, 2]
    assert all(conv(e.tick) <= 0.3 or e.data[1] == 123 for t in capped.tracks for e in t
               if e.channel is not None)
    assert {e.data for e in capped.tracks[0] if e.data[0] & 0xF0 == 0xB0} == \
           {bytes([0xB0, 123, 0]), bytes([0xB2, 123, 0])}
    assert midi.cap_seconds(mf, 100.0) is mf
    with pytest.raises(ValueError):
        midi.parse_smf(b"RIFF0000")


def test_separate_tracks_gives_shared_channel_parts_their_own():
    def track(*events):
        return [midi.Event(t, bytes(d)) for t, d in events]
    conductor = track((0, [0xB0, 7, 100]))                     # volume for channel 0, no notes
    parts = [track((0, [0xC0, 48]), (0, [0x90, 60 + k, 80]), (480, [0x80, 60 + k, 0]))
             for k in range(3)]                                  # three parts, all on channel 0
    drums = track((0, [0x99, 36, 90]), (10, [0x89, 36, 0]))
    mf = midi.MidiFile(1, 480, [conductor, *parts, drums])
    sep = midi.separate_tracks(mf)
    assert midi.note_channels(mf) == [0, 9]
    assert midi.note_channels(sep) == [0, 1, 2, 9]               # drums keep channel 9
    for k, ch in enumerate([0, 1, 2]):
        data = [e.data for e in sep.tracks[1 + k]]
        assert bytes([0xC0 | ch, 48]) in data and bytes([0x90 | ch, 60 + k, 80]) in data
    # the conductor's channel-0 volume now reaches the moved parts too
    assert {e.data for e in sep.tracks[0]} == {bytes([0xB0 | c, 7, 100]) for c in (0, 1, 2)}
    assert [e.data for e in mf.tracks[2]][0] == bytes([0xC0, 48])    # input untouched


def test_wad_music_lumps_converts_mus():
    mus = _mus(bytes([0x10, 60, 0x60]))
    smf = _smf_two_channels()
    lumps = [(b"D_E1M1", mus), (b"MAP01", b"\x00" * 10), (b"D_RUNNIN", smf)]
    data = b"".join(d for _, d in lumps)
    offset = 12 + len(data)
    directory, pos = b"", 12
    for name, d in lumps:
        directory += struct.pack("<ii8s", pos, len(d), name)
        pos += len(d)
    wad = b"IWAD" + struct.pack("<ii", len(lumps), offset) + data + directory
    out = dict(midi.music_lumps(wad))
    assert set(out) == {"D_E1M1", "D_RUNNIN"}
    assert out["D_RUNNIN"] == smf and out["D_E1M1"][:4] == b"MThd"
    assert midi.note_channels(midi.parse_smf(out["D_E1M1"])) == [0]
    with pytest.raises(ValueError):
        midi.wad_lumps(b"XWAD" + b"\x00" * 8)


def test_license_and_speaker_parsing(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))      # the builders import their sibling common.py
    monkeypatch.delitem(sys.modules, "common", raising=False)
    common = _load("common")
    dep5 = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: someone\nLicense: CC-BY-SA-3.0\n\n"
            "Files: debian/*\nLicense: GPL-2+\n")
    assert common.license_from_copyright(dep5) == "CC-BY-SA-3.0"
    prose = ("This program is free software; you can redistribute it under the terms of the GNU "
             "General Public License as published by the Free Software Foundation; either\n"
             "version 2 of the License, or (at your option) any later version.")
    assert common.license_from_copyright(prose) == "GPL-2+"
    speech = _load("build_speech")
    assert speech.fillets_speaker("city", "vit-m-hlava") == "fillets/small_fish"
    assert speech.fillets_speaker("rush", "v-chytra") == "fillets/big_fish"
    assert speech.fillets_speaker("viking2", "dr-4-erik") == "fillets/viking2/4"
    assert speech.fillets_speaker("hole", "l-halo0") == "fillets/hole/l"
    assert speech.fillets_speaker("city", "vit-m-hlava", "fillets-nl") == "fillets-nl/small_fish"   # the Dutch dub: other actors
