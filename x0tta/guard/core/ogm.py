"""The guard's OGM map: originators' sequence-number streams as the eBPF program keeps them, decoded
into the :class:`~x0tta.guard.core.detect.Ogm` records ``seqno_takeover`` judges. Pure: bytes and
``now`` in, records out.

batman-adv's netlink tables carry no sequence number, so the program the probes load
(``ebpf/x0tta_probes.bpf.c``) reads them from the OGMs (BATMAN_IV, packet type 0x00) and OGM2s
(BATMAN_V, 0x04) it receives on the hard interfaces and lets pass. Per originator it keeps two
streams: an OGM that fits neither (more than ``seqno_margin`` behind its newest seqno, or more
than ``seqno_margin`` + ``seqno_rate`` per second since its last OGM ahead: the guard writes both
into the program's ``config`` map, :func:`x0tta.guard.enforce.config_value`) starts a new stream in
place of the staler one and counts a jump. Layouts (little-endian, mirrored from the C source;
change both together)::

    struct ogm_key    { u8 orig[6]; u8 pad[2]; }                                           8 bytes
    struct ogm_stream { u64 first_ns, last_ns, frames; u32 first_seqno, seqno, ifindex;
                        u8 neigh[6]; u8 pad[6]; }                                          48
    struct ogm_value  { struct ogm_stream stream[2]; u64 jumps; u8 packet_type; u8 pad[7];
                        u64 claim_ns; u32 claim_ifindex; u8 claim_neigh[6]; u8 claim_tq,
                        claim_ttl; u8 pad2[4]; }                                           136

A stream whose ``last_ns`` is 0 is an empty slot. The ``claim_*`` fields are the last BATMAN_IV OGM
of the originator that came at a TQ of 248 or more (a quality only the originator's own OGMs
carry: each forwarding node takes its hop penalty off), from which neighbour, with which TTL;
``claim_ns`` 0: none (:func:`ogm_claims`, ``ogm_full_claim`` judges them). Times are CLOCK_MONOTONIC nanoseconds, the
clock of ``time.monotonic()``. Each decoder returns a record or raises :class:`OgmDecodeError`,
whatever the bytes (tests/fuzz/test_guard_ogm_fuzz.py holds it to that).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from x0tta.common.errors import DecodeError
from x0tta.guard.core.detect import Claim, Ogm

OGM_KEY = struct.Struct("<6s2s")
OGM_STREAM = struct.Struct("<QQQIII6s6x")
OGM_VALUE_TAIL = struct.Struct("<QB7xQI6sBB4x")
CLAIM_TQ_MIN = 248  # OGM_CLAIM_TQ in the C source
OGM_VALUE_SIZE = 2 * OGM_STREAM.size + OGM_VALUE_TAIL.size
PACKET_TYPES = {0x00: "BATMAN_IV", 0x04: "BATMAN_V"}  # BATADV_IV_OGM, BATADV_OGM2


class OgmDecodeError(DecodeError):
    """An ``ogms`` map entry that does not have the layout of the program's structs."""


@dataclass(frozen=True)
class OgmStream:
    """One stream of an originator's sequence numbers: its first and newest seqno, when, how many
    OGMs, and where its last OGM came from."""

    first_ns: int
    last_ns: int
    frames: int
    first_seqno: int
    seqno: int
    ifindex: int
    neigh: str


@dataclass(frozen=True)
class OgmEntry:
    """An originator's entry: its streams (one or two), the OGMs that jumped out of them."""

    orig: str
    streams: tuple[OgmStream, ...]
    jumps: int
    protocol: str  # of its last OGM: BATMAN_IV or BATMAN_V
    claim: OgmClaim | None = None


@dataclass(frozen=True)
class OgmClaim:
    """The originator's last BATMAN_IV OGM at a TQ of :data:`CLAIM_TQ_MIN` or more."""

    at_ns: int
    ifindex: int
    neigh: str
    tq: int
    ttl: int


def decode_ogm_key(data: bytes) -> str:
    """The originator (aa:bb:cc:dd:ee:ff) of an ``ogms`` key."""
    if len(data) != OGM_KEY.size:
        raise OgmDecodeError(f"ogm key: {len(data)} bytes, expected {OGM_KEY.size}")
    orig, pad = OGM_KEY.unpack(data)
    if pad != b"\0\0":
        raise OgmDecodeError(f"ogm key: padding {pad.hex()} is not zero")
    return orig.hex(":")


def decode_ogm_value(orig: str, data: bytes) -> OgmEntry:
    """The streams of ``orig`` from an ``ogms`` value; empty slots are left out."""
    if len(data) != OGM_VALUE_SIZE:
        raise OgmDecodeError(f"ogm value: {len(data)} bytes, expected {OGM_VALUE_SIZE}")
    jumps, ptype, claim_ns, claim_if, claim_neigh, claim_tq, claim_ttl = OGM_VALUE_TAIL.unpack_from(
        data, 2 * OGM_STREAM.size)
    if ptype not in PACKET_TYPES:
        raise OgmDecodeError(f"ogm value: packet type {ptype:#04x} is neither an OGM (0x00) nor an OGM2 (0x04)")
    if claim_ns and claim_tq < CLAIM_TQ_MIN:
        raise OgmDecodeError(f"ogm value of {orig}: a claim at TQ {claim_tq}, below {CLAIM_TQ_MIN}")
    claim = OgmClaim(claim_ns, claim_if, claim_neigh.hex(":"), claim_tq, claim_ttl) if claim_ns else None
    streams = []
    for first_ns, last_ns, frames, first_seqno, seqno, ifindex, neigh in OGM_STREAM.iter_unpack(
        data[: 2 * OGM_STREAM.size]
    ):
        if last_ns:
            streams.append(OgmStream(first_ns, last_ns, frames, first_seqno, seqno, ifindex, neigh.hex(":")))
    if not streams:
        raise OgmDecodeError(f"ogm value of {orig}: no stream (an entry is made with its first OGM)")
    return OgmEntry(orig, tuple(streams), jumps, PACKET_TYPES[ptype], claim)


def encode_ogm_entry(entry: OgmEntry) -> tuple[bytes, bytes]:
    """The inverse of the decoders, (key, value): for tests, and a stand-in map."""
    ptype = {name: code for code, name in PACKET_TYPES.items()}[entry.protocol]
    slots = [OGM_STREAM.pack(st.first_ns, st.last_ns, st.frames, st.first_seqno, st.seqno, st.ifindex,
                             bytes.fromhex(st.neigh.replace(":", ""))) for st in entry.streams[:2]]
    slots += [bytes(OGM_STREAM.size)] * (2 - len(slots))
    key = OGM_KEY.pack(bytes.fromhex(entry.orig.replace(":", "")), b"\0\0")
    c = entry.claim
    claim = (c.at_ns, c.ifindex, bytes.fromhex(c.neigh.replace(":", "")), c.tq, c.ttl) if c else (0, 0, bytes(6), 0, 0)
    return key, b"".join(slots) + OGM_VALUE_TAIL.pack(entry.jumps, ptype, *claim)


def decode_ogm_entries(entries: Iterable[tuple[bytes, bytes]]) -> tuple[list[OgmEntry], int]:
    """A dump of the ``ogms`` map, decoded; entries that do not decode are counted, not fatal."""
    out, bad = [], 0
    for key, value in entries:
        try:
            out.append(decode_ogm_value(decode_ogm_key(key), value))
        except OgmDecodeError:
            bad += 1
    return out, bad


def ogm_records(entries: Iterable[OgmEntry], names: Mapping[int, str], since: float) -> list[Ogm]:
    """The OGM events the entries show, at or after ``since`` (monotonic seconds): per stream its
    newest OGM and, once it has two or more, its first (both with the neighbour its last OGM came
    from). One read shows a stream that jumped and went on, so ``seqno_takeover`` needs no second
    look to see it; reading an unchanged entry again gives the same records, which the detector
    counts once."""
    out = []
    for e in entries:
        for st in e.streams:
            iface = names.get(st.ifindex, str(st.ifindex))
            if st.last_ns / 1e9 >= since:
                out.append(Ogm(st.last_ns / 1e9, e.orig, st.seqno, st.neigh, iface))
            if st.frames >= 2 and since <= st.first_ns / 1e9 < st.last_ns / 1e9:
                out.append(Ogm(st.first_ns / 1e9, e.orig, st.first_seqno, st.neigh, iface))
    return sorted(out, key=lambda o: (o.at, o.orig, o.seqno))


def ogm_claims(entries: Iterable[OgmEntry], names: Mapping[int, str]) -> list[Claim]:
    """The entries' last full-quality claims, as the detectors' :class:`Claim` (monotonic seconds,
    the interface by name)."""
    out = [Claim(e.claim.at_ns / 1e9, e.orig, e.claim.neigh, names.get(e.claim.ifindex, str(e.claim.ifindex)),
                 e.claim.tq, e.claim.ttl) for e in entries if e.claim is not None]
    return sorted(out, key=lambda c: (c.at, c.orig))
