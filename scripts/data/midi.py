"""Minimal Standard MIDI File (SMF) reading/writing, per-channel extraction, time capping and a
Doom MUS -> MIDI converter, for the multitrack corpus builder (no third-party MIDI library).

Formats implemented from their public descriptions:
- SMF: MIDI Manufacturers Association, "Standard MIDI Files 1.0" (chunks ``MThd``/``MTrk``,
  variable-length quantities, running status, meta ``FF`` and sysex ``F0``/``F7`` events).
- MUS: the Doom music lump as documented on the Doom wiki ("MUS" article): header
  ``"MUS\\x1a"``, score length/offset (uint16 LE), channel counts, instrument list; events are one
  byte ``[last:1][type:3][channel:4]`` with type 0 release note, 1 play note (volume byte follows
  when bit 7 of the note byte is set), 2 pitch bend (0..255, 128 = centre), 3 system event
  (10..14 = MIDI CC 120, 123, 126, 127, 121), 4 controller (0 = program change, 1..9 = MIDI CC
  0, 1, 7, 10, 11, 91, 93, 64, 67), 5 end of measure, 6 score end; when ``last`` is set a delay
  follows as a big-endian base-128 number (bit 7 = more bytes) in ticks of 1/140 s. MUS channel
  15 is percussion (MIDI channel 9); MUS channels 9..14 map to MIDI channels 10..15.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- SMF


@dataclass
class Event:
    """One event at an absolute tick: ``data`` is the complete message (status byte first; for
    meta events ``FF type len data``; for sysex ``F0/F7 len data``)."""
    tick: int
    data: bytes

    @property
    def status(self) -> int:
        return self.data[0]

    @property
    def channel(self) -> int | None:
        return self.data[0] & 0x0F if 0x80 <= self.data[0] < 0xF0 else None

    @property
    def kind(self) -> int:
        return self.data[0] & 0xF0 if self.data[0] < 0xF0 else self.data[0]


@dataclass
class MidiFile:
    format: int
    division: int                       # ticks per quarter note (> 0) or raw SMPTE word
    tracks: list[list[Event]] = field(default_factory=list)


_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}


def read_vlq(buf: bytes, pos: int) -> tuple[int, int]:
    """Variable-length quantity at ``pos`` -> (value, next position)."""
    value = 0
    for _ in range(4):
        b = buf[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos
    raise ValueError("variable-length quantity longer than 4 bytes")


def write_vlq(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative delta time")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def parse_smf(buf: bytes) -> MidiFile:
    """Parse a Standard MIDI File (formats 0, 1, 2)."""
    if buf[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File (no MThd)")
    hlen = struct.unpack_from(">I", buf, 4)[0]
    fmt, ntrk, division = struct.unpack_from(">HHH", buf, 8)
    pos = 8 + hlen
    mf = MidiFile(fmt, division)
    while pos + 8 <= len(buf) and len(mf.tracks) < ntrk:
        cid, clen = buf[pos:pos + 4], struct.unpack_from(">I", buf, pos + 4)[0]
        body = buf[pos + 8: pos + 8 + clen]
        pos += 8 + clen
        if cid != b"MTrk":
            continue                                  # unknown chunks are skipped (SMF spec)
        mf.tracks.append(_parse_track(body))
    return mf


def _parse_track(body: bytes) -> list[Event]:
    events: list[Event] = []
    pos, tick, running = 0, 0, None
    while pos < len(body):
        delta, pos = read_vlq(body, pos)
        tick += delta
        b = body[pos]
        if b == 0xFF:
            typ = body[pos + 1]
            n, p2 = read_vlq(body, pos + 2)
            events.append(Event(tick, bytes([0xFF, typ]) + write_vlq(n) + body[p2:p2 + n]))
            pos = p2 + n
            if typ == 0x2F:
                break
        elif b in (0xF0, 0xF7):
            n, p2 = read_vlq(body, pos + 1)
            events.append(Event(tick, bytes([b]) + write_vlq(n) + body[p2:p2 + n]))
            pos = p2 + n
            running = None
        else:
            if b & 0x80:
                running = b
                pos += 1
            elif running is None:
                raise ValueError("running status without a previous status byte")
            n = _DATA_LEN[running & 0xF0]
            events.append(Event(tick, bytes([running]) + body[pos:pos + n]))
            pos += n
    return events


def write_smf(mf: MidiFile) -> bytes:
    """Serialize (no running status; each track ends with exactly one End of Track)."""
    out = bytearray(b"MThd" + struct.pack(">IHHH", 6, mf.format, len(mf.tracks), mf.division))
    for track in mf.tracks:
        body = bytearray()
        last = 0
        events = [e for e in track if e.data[:2] != b"\xff\x2f"]
        end = max([e.tick for e in track], default=0)
        for e in sorted(events, key=lambda e: e.tick):    # stable: keeps same-tick order
            body += write_vlq(e.tick - last) + e.data
            last = e.tick
        body += write_vlq(end - last) + b"\xff\x2f\x00"
        out += b"MTrk" + struct.pack(">I", len(body)) + body
    return bytes(out)


def note_channels(mf: MidiFile) -> list[int]:
    """Channels that play at least one note (note-on with velocity > 0)."""
    chans = {e.channel for t in mf.tracks for e in t
             if e.kind == 0x90 and len(e.data) > 2 and e.data[2] > 0}
    return sorted(c for c in chans if c is not None)


def only_channel(mf: MidiFile, channel: int) -> MidiFile:
    """Copy that keeps every event except the notes (note on/off, key pressure) of other
    channels: programs, controllers, pitch bends and tempo stay, so the kept channel sounds
    exactly as in the full file."""
    def keep(e: Event) -> bool:
        return not (e.kind in (0x80, 0x90, 0xA0) and e.channel != channel)
    return MidiFile(mf.format, mf.division, [[e for e in t if keep(e)] for t in mf.tracks])


def separate_tracks(mf: MidiFile) -> MidiFile:
    """Copy in which tracks that play notes on one shared channel get channels of their own.

    Exporters such as music21 put every part with the same instrument on one channel (a string
    quartet on channel 0), which would make one stem of the whole piece. Each later track whose
    only note channel is already taken by an earlier track moves, with all its channel events, to
    the lowest free channel (never 9, the GM drum channel); the channel's events in note-less
    tracks (a conductor track's program or volume) are copied to the new channel too. Tracks
    playing on several channels, drums, and tracks beyond the 15 melodic channels are left as is.
    """
    note_chans = [{e.channel for e in t if e.kind == 0x90} for t in mf.tracks]
    used = set().union(*note_chans) if note_chans else set()
    taken: set[int] = set()
    tracks = [list(t) for t in mf.tracks]
    for i, chans in enumerate(note_chans):
        if len(chans) != 1:
            taken |= chans
            continue
        c = next(iter(chans))
        if c not in taken or c == 9:
            taken.add(c)
            continue
        free = [n for n in range(16) if n != 9 and n not in used and n not in taken]
        if not free:
            continue
        new = free[0]
        taken.add(new)

        def move(e: Event) -> Event:
            if e.channel == c:
                return Event(e.tick, bytes([(e.data[0] & 0xF0) | new]) + e.data[1:])
            return e
        tracks[i] = [move(e) for e in tracks[i]]
        for j, other in enumerate(note_chans):
            if not other:
                tracks[j] = tracks[j] + [move(e) for e in mf.tracks[j] if e.channel == c]
    return MidiFile(mf.format, mf.division, tracks)


def tick_to_seconds(mf: MidiFile):
    """Function tick -> seconds from the file's tempo map (meta FF 51; 120 bpm default;
    SMPTE divisions use frames/s x ticks/frame)."""
    if mf.division & 0x8000:
        fps = 256 - (mf.division >> 8)
        tps = fps * (mf.division & 0xFF)
        return lambda t: t / tps
    tempos = sorted((e.tick, int.from_bytes(e.data[3:6], "big")) for t in mf.tracks for e in t
                    if e.data[:2] == b"\xff\x51" and len(e.data) >= 6)
    # breakpoints: (tick, seconds at that tick, microseconds per quarter from there)
    points = [(0, 0.0, 500000)]
    for tick, us in tempos:
        t0, s0, us0 = points[-1]
        points.append((tick, s0 + (tick - t0) * us0 / 1e6 / mf.division, us))

    def conv(t: int) -> float:
        for tick, s, us in reversed(points):
            if t >= tick:
                return s + (t - tick) * us / 1e6 / mf.division
        return 0.0
    return conv


def duration_s(mf: MidiFile) -> float:
    conv = tick_to_seconds(mf)
    return conv(max((e.tick for t in mf.tracks for e in t), default=0))


def cap_seconds(mf: MidiFile, max_s: float) -> MidiFile:
    """Copy without the events after ``max_s`` seconds; at the cut every channel gets
    "all notes off" (CC 123) so held notes release instead of sounding on."""
    conv = tick_to_seconds(mf)
    ticks = sorted({e.tick for t in mf.tracks for e in t})
    over = [t for t in ticks if conv(t) > max_s]
    if not over:
        return mf
    cut = over[0]
    chans = sorted({e.channel for t in mf.tracks for e in t if e.channel is not None})
    tracks = [[e for e in t if e.tick < cut] for t in mf.tracks]
    if tracks:
        tracks[0] = tracks[0] + [Event(cut, bytes([0xB0 | c, 123, 0])) for c in chans]
    return MidiFile(mf.format, mf.division, tracks)


# ----------------------------------------------------------------------------- MUS

MUS_TICKS_PER_S = 140
#: MUS controller number -> MIDI CC (0 is program change, handled separately)
MUS_CONTROLLERS = {1: 0, 2: 1, 3: 7, 4: 10, 5: 11, 6: 91, 7: 93, 8: 64, 9: 67}
#: MUS system event -> MIDI CC (value 0)
MUS_SYSTEM = {10: 120, 11: 123, 12: 126, 13: 127, 14: 121}
#: Quarter-note division and tempo giving 140 ticks per second: 70 ticks per 500000 µs.
MUS_DIVISION = 70
MUS_TEMPO_US = 500000


def mus_channel(ch: int) -> int:
    """MUS channel -> MIDI channel (15 is percussion = MIDI 9; 9..14 shift up by one)."""
    if ch == 15:
        return 9
    return ch + 1 if ch >= 9 else ch


def is_mus(buf: bytes) -> bool:
    return buf[:4] == b"MUS\x1a"


def mus_to_midi(buf: bytes) -> bytes:
    """Convert a Doom MUS lump to a format-0 Standard MIDI File (bytes); see module docstring."""
    if not is_mus(buf):
        raise ValueError("not a MUS lump (no 'MUS\\x1a')")
    score_len, score_start = struct.unpack_from("<HH", buf, 4)
    pos, end = score_start, min(len(buf), score_start + score_len)
    events = [Event(0, b"\xff\x51\x03" + MUS_TEMPO_US.to_bytes(3, "big"))]
    velocity = [127] * 16        # last volume per MUS channel (a note without volume reuses it)
    tick = 0
    while pos < end:
        desc = buf[pos]
        pos += 1
        last, typ, mch = desc >> 7, (desc >> 4) & 7, desc & 15
        ch = mus_channel(mch)
        if typ == 0:                                            # release note
            events.append(Event(tick, bytes([0x80 | ch, buf[pos] & 0x7F, 64])))
            pos += 1
        elif typ == 1:                                          # play note
            note = buf[pos]
            pos += 1
            if note & 0x80:
                velocity[mch] = buf[pos] & 0x7F
                pos += 1
            events.append(Event(tick, bytes([0x90 | ch, note & 0x7F, velocity[mch]])))
        elif typ == 2:                                          # pitch bend, 0..255 -> 14 bit
            bend = buf[pos] * 64
            pos += 1
            events.append(Event(tick, bytes([0xE0 | ch, bend & 0x7F, (bend >> 7) & 0x7F])))
        elif typ == 3:                                          # system event
            cc = MUS_SYSTEM.get(buf[pos])
            pos += 1
            if cc is not None:
                events.append(Event(tick, bytes([0xB0 | ch, cc, 0])))
        elif typ == 4:                                          # controller
            num, val = buf[pos], min(buf[pos + 1], 127)
            pos += 2
            if num == 0:
                events.append(Event(tick, bytes([0xC0 | ch, val])))
            elif num in MUS_CONTROLLERS:
                events.append(Event(tick, bytes([0xB0 | ch, MUS_CONTROLLERS[num], val])))
        elif typ == 5:                                          # end of measure
            pass
        elif typ == 6:                                          # score end
            break
        else:
            raise ValueError(f"unknown MUS event type {typ} at byte {pos - 1}")
        if last:
            delay = 0
            while True:
                b = buf[pos]
                pos += 1
                delay = (delay << 7) | (b & 0x7F)
                if not b & 0x80:
                    break
            tick += delay
    events.append(Event(tick, b"\xff\x2f\x00"))    # End of Track after the last delay
    return write_smf(MidiFile(0, MUS_DIVISION, [events]))


# ----------------------------------------------------------------------------- WAD


def wad_lumps(buf: bytes) -> list[tuple[str, bytes]]:
    """(name, data) of every lump in a Doom IWAD/PWAD (header: magic, count, directory offset;
    directory entries: offset int32, size int32, 8-byte NUL-padded name)."""
    magic, count, offset = struct.unpack_from("<4sii", buf, 0)
    if magic not in (b"IWAD", b"PWAD"):
        raise ValueError("not a WAD file")
    out = []
    for i in range(count):
        pos, size, name = struct.unpack_from("<ii8s", buf, offset + 16 * i)
        out.append((name.rstrip(b"\0").decode("latin-1"), buf[pos:pos + size]))
    return out


def music_lumps(buf: bytes) -> list[tuple[str, bytes]]:
    """(name, Standard MIDI bytes) of the music lumps (``D_*``) of a WAD; MUS lumps converted."""
    out = []
    for name, data in wad_lumps(buf):
        if not name.startswith("D_"):
            continue
        if is_mus(data):
            out.append((name, mus_to_midi(data)))
        elif data[:4] == b"MThd":
            out.append((name, data))
    return out
