"""afxcli.audio: reading, atomic writing, output-path safety, resampling."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import soundfile as sf

from afxcli import atomic
from afxcli.atomic import _UMASK
from afxcli import audio as A
from afxcli.audio import check_output_path, peak_dbfs, read_audio, resample, write_audio
from afxcli.errors import AfxError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def music_like(channels: int, sr: int, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """Sines + decaying noise bursts (transients), peak 0.9, float64 (channels, samples)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = np.zeros((channels, n))
    for c in range(channels):
        for f, a in ((110.0 * (c + 1), 0.3), (440.0, 0.2), (3150.0, 0.05)):
            x[c] += a * np.sin(2 * np.pi * f * t + c)
        for start in (0.1, 0.42, 0.74):
            i = int(start * n)
            burst = rng.standard_normal(n - i) * np.exp(-np.arange(n - i) / (0.01 * sr))
            x[c, i:] += 0.5 * burst
    return 0.9 * x / np.abs(x).max()


def listing(folder) -> set[str]:
    return set(os.listdir(folder))


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize(
    "ext,subtype,tol",
    [
        (".wav", "FLOAT", 0.0),  # exact for float32 input
        (".wav", None, 2.0**-23),  # PCM_24 default: half an LSB plus rounding of float32
        (".flac", None, 2.0**-23),
        (".flac", "PCM_16", 2.0**-15),
    ],
)
def test_round_trip(tmp_path, channels, sr, ext, subtype, tol):
    x = music_like(channels, sr).astype(np.float32)
    path = tmp_path / f"clip{ext}"
    assert write_audio(path, x, sr, subtype=subtype) == path
    y, sr2 = read_audio(path)
    assert sr2 == sr
    assert y.dtype == np.float32 and y.flags["C_CONTIGUOUS"]
    assert y.shape == x.shape
    err = float(np.abs(y - x).max())
    assert err <= tol, err
    if tol:
        assert err > 0  # really quantized, so the tolerance is meaningful
    info = sf.info(str(path))
    assert info.format == ("WAV" if ext == ".wav" else "FLAC")
    assert info.subtype == (subtype or "PCM_24")
    assert listing(tmp_path) == {path.name}  # no temporary file left


def test_write_accepts_mono_1d_and_float64(tmp_path):
    x = music_like(1, 44100)[0]  # 1-D float64
    write_audio(tmp_path / "m.wav", x, 44100, subtype="DOUBLE")
    y, _ = read_audio(tmp_path / "m.wav")
    assert y.shape == (1, x.size)
    assert np.abs(y[0] - x.astype(np.float32)).max() == 0


def test_pcm_write_clips_beyond_full_scale_float_keeps_it(tmp_path):
    x = np.array([[0.5, 1.5, -2.0, 0.25]], dtype=np.float32)
    write_audio(tmp_path / "c.wav", x, 48000, subtype="PCM_24")
    y, _ = read_audio(tmp_path / "c.wav")
    assert y[0, 1] == pytest.approx(1.0, abs=2**-22) and y[0, 2] == -1.0
    write_audio(tmp_path / "f.wav", x, 48000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("fmt,ext,subtype", [("OGG", ".ogg", "VORBIS"), ("OGG", ".opus", "OPUS"), ("MP3", ".mp3", "MPEG_LAYER_III")])
def test_reads_lossy_formats_at_their_own_rate(tmp_path, fmt, ext, subtype):
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    sr = 48000 if subtype == "OPUS" else 44100
    x = music_like(2, sr, seconds=1.0)
    path = tmp_path / f"lossy{ext}"
    sf.write(str(path), x.T, sr, format=fmt, subtype=subtype)
    y, sr2 = read_audio(path)
    assert sr2 == sr and y.shape[0] == 2 and y.dtype == np.float32
    assert abs(y.shape[1] - x.shape[1]) < 0.05 * sr  # codec padding only
    # Lossy but the same signal: the loudest second of content survives within a few dB.
    assert abs(peak_dbfs(y) - peak_dbfs(x)) < 3.0


# --------------------------------------------------------------------------------------------
# Bad inputs: one-line AfxError naming the file
# --------------------------------------------------------------------------------------------
def make_bad_inputs(tmp_path) -> dict[str, object]:
    """Each bad input kind -> its path (created on disk where it is a file)."""
    bad: dict[str, object] = {}
    bad["missing"] = tmp_path / "missing.wav"
    d = tmp_path / "folder.wav"
    d.mkdir()
    bad["directory"] = d
    t = tmp_path / "notes.wav"
    t.write_text("this is not audio\n" * 20)
    bad["not_audio"] = t
    e = tmp_path / "empty.flac"
    e.write_bytes(b"")
    bad["empty_bytes"] = e
    z = tmp_path / "zero_length.wav"
    sf.write(str(z), np.zeros((0, 2)), 44100, subtype="PCM_16")
    bad["zero_length"] = z
    n = tmp_path / "nan.wav"
    x = music_like(2, 8000, 0.1).T.copy()
    x[100, 1] = np.nan
    sf.write(str(n), x, 8000, subtype="FLOAT")
    bad["nan"] = n
    i = tmp_path / "inf.wav"
    x[100, 1] = np.inf
    sf.write(str(i), x, 8000, subtype="FLOAT")
    bad["inf"] = i
    m = tmp_path / "surround.wav"
    sf.write(str(m), np.zeros((800, 6)), 8000, subtype="PCM_16")
    bad["six_channels"] = m
    trunc = tmp_path / "truncated.flac"
    sf.write(str(trunc), music_like(2, 8000, 0.5).T, 8000, subtype="PCM_16")
    trunc.write_bytes(trunc.read_bytes()[:20])
    bad["truncated"] = trunc
    return bad


BAD_KINDS = ["missing", "directory", "not_audio", "empty_bytes", "zero_length", "nan", "inf", "six_channels", "truncated"]
EXPECTED_WORDS = {
    "missing": "no such file",
    "directory": "folder",
    "not_audio": "not an audio file",
    "empty_bytes": "empty",
    "zero_length": "no audio",
    "nan": "NaN",
    "inf": "infinite",
    "six_channels": "6 channels",
    "truncated": "",
}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_one_line_naming_file(tmp_path, kind):
    path = make_bad_inputs(tmp_path)[kind]
    with pytest.raises(AfxError) as ei:
        read_audio(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert "\n" not in msg
    assert EXPECTED_WORDS[kind] in msg


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.wav"
    write_audio(p, music_like(1, 8000, 0.1), 8000)
    p.chmod(0)
    try:
        with pytest.raises(AfxError, match="permission denied"):
            read_audio(p)
    finally:
        p.chmod(0o644)


# --------------------------------------------------------------------------------------------
# Writing: refusals and atomicity
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.mp3", "out.ogg", "out", "out.txt"])
def test_write_refuses_unsupported_extension(tmp_path, name):
    with pytest.raises(AfxError) as ei:
        write_audio(tmp_path / name, music_like(1, 8000, 0.1), 8000)
    assert str(tmp_path / name) in str(ei.value)
    assert listing(tmp_path) == set()


def test_write_refuses_missing_folder_and_folder_target(tmp_path):
    target = tmp_path / "nope" / "out.wav"
    with pytest.raises(AfxError, match="does not exist") as ei:
        write_audio(target, music_like(1, 8000, 0.1), 8000)
    assert str(target) in str(ei.value)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AfxError, match="is a folder"):
        write_audio(tmp_path / "dir.wav", music_like(1, 8000, 0.1), 8000)
    assert listing(tmp_path) == {"dir.wav"}


def test_write_refuses_nan_and_bad_subtype(tmp_path):
    x = music_like(2, 8000, 0.1)
    x[0, 3] = np.nan
    with pytest.raises(AfxError, match="NaN"):
        write_audio(tmp_path / "o.wav", x, 8000)
    with pytest.raises(AfxError, match="subtype"):
        write_audio(tmp_path / "o.flac", music_like(2, 8000, 0.1), 8000, subtype="FLOAT")
    assert listing(tmp_path) == set()


@pytest.mark.skipif(IS_ROOT, reason="root writes in any folder whatever its mode")
def test_write_refuses_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(AfxError, match="not writable"):
            write_audio(ro / "o.wav", music_like(1, 8000, 0.1), 8000)
        assert listing(ro) == set()
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("exc", [RuntimeError("simulated encoder failure"), OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_leaves_no_partial_or_temp_file(tmp_path, monkeypatch, exc):
    old = music_like(2, 8000, 0.2).astype(np.float32)
    target = tmp_path / "song.wav"
    write_audio(target, old, 8000, subtype="FLOAT")
    before = target.read_bytes()

    real_write = sf.SoundFile.write

    def write_half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])  # some bytes really reach the temporary file
        raise exc

    monkeypatch.setattr(A.sf.SoundFile, "write", write_half_then_fail)
    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else AfxError
    with pytest.raises(expected) as ei:
        write_audio(target, music_like(2, 8000, 0.5), 8000, subtype="FLOAT")
    if expected is AfxError:
        assert str(target) in str(ei.value)
    assert listing(tmp_path) == {"song.wav"}  # temp file removed
    assert target.read_bytes() == before  # old file untouched


def test_failed_write_of_new_file_creates_nothing(tmp_path, monkeypatch):
    def fail(self, data):
        raise RuntimeError("boom")

    monkeypatch.setattr(A.sf.SoundFile, "write", fail)
    with pytest.raises(AfxError, match="write failed"):
        write_audio(tmp_path / "new.flac", music_like(2, 8000, 0.2), 8000)
    assert listing(tmp_path) == set()


def test_replace_keeps_mode_and_new_file_follows_umask(tmp_path):
    target = tmp_path / "a.flac"
    write_audio(target, music_like(1, 8000, 0.1), 8000)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_UMASK
    target.chmod(0o640)
    ino = target.stat().st_ino
    write_audio(target, music_like(2, 8000, 0.3), 8000)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != ino  # replaced by rename, not rewritten in place
    y, _ = read_audio(target)
    assert y.shape == (2, 2400)


# --------------------------------------------------------------------------------------------
# Output path safety
# --------------------------------------------------------------------------------------------
def test_check_output_path_refuses_inputs(tmp_path, monkeypatch):
    inp = tmp_path / "in.wav"
    write_audio(inp, music_like(1, 8000, 0.1), 8000)
    other = tmp_path / "other.wav"
    assert check_output_path(tmp_path / "out.wav", [inp, other]) == tmp_path / "out.wav"
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    link = tmp_path / "link.wav"
    link.symlink_to(inp)
    hard = tmp_path / "hard.wav"
    os.link(inp, hard)
    for out in [inp, "in.wav", sub / ".." / "in.wav", link, hard]:
        with pytest.raises(AfxError, match="overwrite the input") as ei:
            check_output_path(out, [other, inp])
        assert str(out) in str(ei.value)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def test_peak_dbfs():
    assert peak_dbfs(np.array([[0.5, -0.25]])) == pytest.approx(-6.0206, abs=1e-4)
    assert peak_dbfs(np.zeros((2, 10))) == float("-inf")


@pytest.mark.parametrize("sr_from,sr_to", [(44100, 48000), (48000, 16000), (44100, 22050), (16000, 44100)])
def test_resample_length_dtype_and_frequency(sr_from, sr_to):
    n = sr_from // 2
    t = np.arange(n) / sr_from
    x = np.stack([np.sin(2 * np.pi * 1000.0 * t), np.sin(2 * np.pi * 3000.0 * t)]).astype(np.float32)
    y = resample(x, sr_from, sr_to)
    assert y.dtype == np.float32 and y.shape[0] == 2
    assert y.shape[1] == int(np.ceil(n * sr_to / sr_from))
    for ch, f in enumerate((1000.0, 3000.0)):
        spec = np.abs(np.fft.rfft(y[ch] * np.hanning(y.shape[1])))
        f_peak = np.argmax(spec) * sr_to / y.shape[1]
        assert abs(f_peak - f) < 3.0, (f_peak, f)
        # amplitude kept (passband of the polyphase filter)
        mid = y[ch, y.shape[1] // 4 : 3 * y.shape[1] // 4]
        assert np.abs(mid).max() == pytest.approx(1.0, abs=0.02)


def test_resample_same_rate_is_a_copy():
    x = np.ones((1, 10), dtype=np.float32)
    y = resample(x, 48000, 48000)
    assert y is not x and np.array_equal(x, y)
    with pytest.raises(ValueError):
        resample(x, 0, 48000)


def test_permission_checks_without_root_privileges(tmp_path, monkeypatch):
    """Root bypasses file modes, so deny access the way the kernel would answer a normal user."""
    p = tmp_path / "in.wav"
    write_audio(p, music_like(1, 8000, 0.1), 8000)
    real_access = os.access
    monkeypatch.setattr(A.os, "access", lambda path, mode: False if str(path) in (str(p), str(tmp_path)) else real_access(path, mode))
    with pytest.raises(AfxError, match="permission denied") as ei:
        read_audio(p)
    assert str(p) in str(ei.value)
    with pytest.raises(AfxError, match="not writable"):
        write_audio(tmp_path / "out.wav", music_like(1, 8000, 0.1), 8000)
    assert listing(tmp_path) == {"in.wav"}


def test_temp_file_creation_failure_is_clean(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(AfxError, match="cannot write in") as ei:
        write_audio(tmp_path / "out.flac", music_like(1, 8000, 0.1), 8000)
    assert str(tmp_path / "out.flac") in str(ei.value)
    assert listing(tmp_path) == set()


def test_write_in_blocks_is_exact_and_a_late_nan_keeps_the_old_file(tmp_path, monkeypatch):
    """Files longer than one write block: every block lands in order, clipped for PCM; a NaN in a
    later block (after earlier blocks reached the temporary file) still refuses the whole write."""
    monkeypatch.setattr(A, "WRITE_BLOCK_FRAMES", 1000)
    x = music_like(2, 8000, 0.6).astype(np.float32)   # 4800 frames: four full blocks and a partial one
    x[1, 2500] = 1.75
    write_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(y, x)
    write_audio(tmp_path / "p.wav", x, 8000, subtype="PCM_24")
    y, _ = read_audio(tmp_path / "p.wav")
    assert y[1, 2500] == pytest.approx(1.0, abs=2**-22)
    np.testing.assert_allclose(np.delete(y, 2500, axis=1), np.delete(x, 2500, axis=1), atol=2**-23)
    before = (tmp_path / "p.wav").read_bytes()
    bad = x.copy()
    bad[0, 4321] = np.inf
    with pytest.raises(AfxError, match="infinite"):
        write_audio(tmp_path / "p.wav", bad, 8000, subtype="PCM_24")
    assert listing(tmp_path) == {"f.wav", "p.wav"}
    assert (tmp_path / "p.wav").read_bytes() == before
