"""The lab's attack suite, pure: raw batman-adv frames an attacker on a mesh link sends, and the
scoring of what the agents detected. Bytes and a seeded ``random.Random`` in, frames out; records
in, figures out. No socket, clock or global randomness: the injector (:mod:`x0tta.lab.attacks`)
sends the frames, the bench (``tests/bench/bench_attacks.py``) runs the suite in the UML lab.

The wire format is batman-adv's (``include/uapi/linux/batadv_packet.h``, compat version 15; every
multi-byte field big-endian, the structs packed to 2): an Ethernet header with ethertype 0x4305
(``ETH_P_BATMAN``), then the packet. The ones built here::

    struct batadv_ogm_packet  { u8 packet_type (BATADV_IV_OGM 0x00), version, ttl, flags;
                                be32 seqno; u8 orig[6], prev_sender[6]; u8 reserved, tq;
                                be16 tvlv_len; }                                        24 bytes
    struct batadv_ogm2_packet { u8 packet_type (BATADV_OGM2 0x04), version, ttl, flags;
                                be32 seqno; u8 orig[6]; be16 tvlv_len; be32 throughput; }  20
    struct batadv_tvlv_hdr    { u8 type, version; be16 len; }                            4
    struct batadv_tvlv_gateway_data { be32 bandwidth_down, bandwidth_up; }  (BATADV_TVLV_GW 0x01,
                                version 1; units of 100 kbit/s)                            8

Each OGM is followed by ``tvlv_len`` bytes of TVLVs, and batman-adv aggregates several OGMs in one
frame. The eBPF program (``ebpf/x0tta_probes.bpf.c``) reads the same headers into the guard's
``ogms`` map.

What each attack is and what should see it (docs/guard.md has the detectors, docs/benchmarks.md
the suite):

================  ================================================================  =====================
kind              frames                                                            detector
================  ================================================================  =====================
rogue_node        a MAC no handshake admitted sends its own OGMs                    ``unadmitted_frames``
originator_flood  OGMs of many made-up originators through one neighbour             ``originator_flood``
seqno_takeover    OGMs of an honest originator with its seqno jumped far ahead       ``seqno_takeover``
inflated_tq       OGMs of a far originator carrying the best TQ (255)                ``ogm_full_claim`` [#]_
gateway_hijack    OGMs of an originator with a gateway TVLV of implausible bandwidth ``gateway_bandwidth``
handshake_burst   failed PQ mTLS handshakes (``x0tta.peer.attack``, not frames)      ``handshake_burst``
================  ================================================================  =====================

.. [#] or ``inflated_link_metric``, the same claim seen later in batman-adv's tables.

A BATMAN_IV node takes an OGM of another originator only through a neighbour it holds a
bidirectional link with (it must have heard its own OGMs echoed back by that neighbour): the lab's
attacker therefore sends from the end of a link whose node already runs batman-adv (a compromised
node), or echoes the victim's OGMs with :func:`echo`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from x0tta.common.errors import DecodeError
from x0tta.guard.core.admission import BadMac, format_mac, parse_mac

if TYPE_CHECKING:  # the caller's seeded generator; the core draws from nothing else
    import random

ETH_P_BATMAN = 0x4305
BATADV_IV_OGM = 0x00
BATADV_OGM2 = 0x04
BATADV_COMPAT_VERSION = 15
BATADV_DIRECTLINK = 1 << 2  # enum batadv_iv_flags
BATADV_TVLV_GW = 0x01
GW_TVLV_VERSION = 1
TQ_MAX = 255
BROADCAST = "ff:ff:ff:ff:ff:ff"
ETH_HLEN = 14
ETH_ZLEN = 60  # frames shorter than this are padded on the wire

ETH_HDR = struct.Struct("!6s6sH")
OGM_IV = struct.Struct("!BBBBI6s6sBBH")
OGM2 = struct.Struct("!BBBBI6sHI")
TVLV_HDR = struct.Struct("!BBH")
GW_DATA = struct.Struct("!II")
U32 = 1 << 32

KINDS = ("rogue_node", "inflated_tq", "originator_flood", "seqno_takeover", "gateway_hijack", "handshake_burst")
"""The attack kinds of the suite, in the order it runs them (the inflated TQ before the takeover:
both aim at one originator, and the takeover leaves its jumped stream behind; and before the
flood: the flood's made-up originators come at TQ 255 too, and the ``inflated_link_metric``
record they bring about the attacker holds the next one with the same subject back for the
guard's ``report_hold``)."""

DETECTORS: dict[str, tuple[str, ...]] = {
    "rogue_node": ("unadmitted_frames",),
    "originator_flood": ("originator_flood",),
    "seqno_takeover": ("seqno_takeover",),
    "inflated_tq": ("ogm_full_claim", "inflated_link_metric"),
    "gateway_hijack": ("gateway_bandwidth",),
    "handshake_burst": ("handshake_burst",),
}
"""Attack kind -> the detectors whose record counts as detecting it."""


class AttackDecodeError(DecodeError):
    """Bytes that are not batman-adv OGMs of the layout above."""


def mac(text: str | bytes) -> bytes:
    """A MAC as 6 bytes; :class:`AttackDecodeError` (a ``DecodeError``) when it is not one."""
    try:
        return parse_mac(text)
    except BadMac as exc:
        raise AttackDecodeError(str(exc)) from exc


def random_mac(rng: random.Random) -> str:
    """A locally administered unicast MAC (the second bit of the first byte set, the first clear),
    so that a made-up address never is a vendor's or a multicast group."""
    first = (rng.randrange(256) & 0xFC) | 0x02
    return format_mac(bytes([first]) + rng.randbytes(5))


def ethernet(src: str, payload: bytes, dst: str = BROADCAST) -> bytes:
    """An Ethernet frame of ethertype 0x4305 from ``src``, padded to the 60 bytes of the wire."""
    return (ETH_HDR.pack(mac(dst), mac(src), ETH_P_BATMAN) + payload).ljust(ETH_ZLEN, b"\0")


def tvlv(kind: int, version: int, value: bytes) -> bytes:
    """One TVLV: its header and value."""
    if not 0 <= kind < 256 or not 0 <= version < 256 or len(value) >= 1 << 16:
        raise ValueError(f"tvlv type {kind}, version {version}, {len(value)} bytes: out of range")
    return TVLV_HDR.pack(kind, version, len(value)) + value


def gateway_tvlv(down_kbit: int, up_kbit: int) -> bytes:
    """The gateway TVLV announcing ``down_kbit``/``up_kbit`` (rounded down to batman-adv's units of
    100 kbit/s; the netlink GET_GATEWAYS gives them in those units, the guard in kbit/s)."""
    down, up = down_kbit // 100, up_kbit // 100
    if not (0 <= down < U32 and 0 <= up < U32):
        raise ValueError(f"gateway bandwidth {down_kbit}/{up_kbit} kbit/s does not fit in u32 units")
    return tvlv(BATADV_TVLV_GW, GW_TVLV_VERSION, GW_DATA.pack(down, up))


def ogm_iv(orig: str, seqno: int, *, tq: int = TQ_MAX, ttl: int = 50, flags: int = 0,
           prev_sender: str | None = None, tvlvs: bytes = b"") -> bytes:
    """A BATMAN_IV OGM of ``orig`` (as its originator sends it: ``prev_sender`` is itself) and its
    TVLVs."""
    return OGM_IV.pack(BATADV_IV_OGM, BATADV_COMPAT_VERSION, ttl, flags, seqno % U32, mac(orig),
                       mac(prev_sender or orig), 0, tq, len(tvlvs)) + tvlvs


def ogm2(orig: str, seqno: int, *, throughput: int, ttl: int = 50, flags: int = 0, tvlvs: bytes = b"") -> bytes:
    """A BATMAN_V OGM2 of ``orig`` claiming ``throughput`` (batman-adv's unit: 100 kbit/s)."""
    return OGM2.pack(BATADV_OGM2, BATADV_COMPAT_VERSION, ttl, flags, seqno % U32, mac(orig), len(tvlvs),
                     throughput % U32) + tvlvs


# -- decoding (the attacker reads the honest OGMs it hears; tests read what was built) -----------


@dataclass(frozen=True)
class OgmHeader:
    """One OGM of a frame: its header fields and TVLV bytes. ``tq`` and ``prev_sender`` are
    BATMAN_IV's, ``throughput`` BATMAN_V's (None in the other)."""

    packet_type: int
    version: int
    ttl: int
    flags: int
    seqno: int
    orig: str
    tvlvs: bytes
    tq: int | None = None
    prev_sender: str | None = None
    throughput: int | None = None


def decode_ogms(payload: bytes, limit: int = 64) -> list[OgmHeader]:
    """The OGMs of a batman-adv packet (after the Ethernet header, padding allowed at its end):
    one or an aggregate of up to ``limit``, every one of protocol version 15 and one packet type.
    Anything else raises :class:`AttackDecodeError` (a frame that is not an OGM, a version this
    project does not speak, a TVLV length beyond the frame)."""
    out: list[OgmHeader] = []
    off = 0
    while off < len(payload) and len(out) < limit:
        if out and not any(payload[off:]):
            break  # the zero padding of a short frame
        ptype = payload[off]
        if ptype not in (BATADV_IV_OGM, BATADV_OGM2):
            raise AttackDecodeError(f"packet type {ptype:#04x} at byte {off} is not an OGM (0x00) or OGM2 (0x04)")
        if out and ptype != out[0].packet_type:
            raise AttackDecodeError(f"an aggregate mixes packet types {out[0].packet_type:#04x} and {ptype:#04x}")
        fmt = OGM_IV if ptype == BATADV_IV_OGM else OGM2
        if len(payload) - off < fmt.size:
            raise AttackDecodeError(f"OGM at byte {off}: {len(payload) - off} bytes, its header needs {fmt.size}")
        if ptype == BATADV_IV_OGM:
            _, version, ttl, flags, seqno, orig, prev, _, tq, tlen = OGM_IV.unpack_from(payload, off)
            extra: dict[str, Any] = {"tq": tq, "prev_sender": format_mac(prev)}
        else:
            _, version, ttl, flags, seqno, orig, tlen, throughput = OGM2.unpack_from(payload, off)
            extra = {"throughput": throughput}
        if version != BATADV_COMPAT_VERSION:
            raise AttackDecodeError(f"OGM at byte {off}: version {version}, not {BATADV_COMPAT_VERSION}")
        start = off + fmt.size
        if start + tlen > len(payload):
            raise AttackDecodeError(f"OGM at byte {off}: {tlen} bytes of TVLV, {len(payload) - start} left")
        out.append(OgmHeader(ptype, version, ttl, flags, seqno, format_mac(orig), payload[start:start + tlen],
                             **extra))
        off = start + tlen
    if not out:
        raise AttackDecodeError("no OGM: the packet is empty")
    return out


def decode_frame(frame: bytes) -> tuple[str, str, list[OgmHeader]]:
    """(destination, source, OGMs) of an Ethernet frame of ethertype 0x4305."""
    if len(frame) < ETH_HLEN:
        raise AttackDecodeError(f"{len(frame)} bytes: shorter than an Ethernet header")
    dst, src, proto = ETH_HDR.unpack_from(frame)
    if proto != ETH_P_BATMAN:
        raise AttackDecodeError(f"ethertype {proto:#06x} is not batman-adv's 0x4305")
    return format_mac(dst), format_mac(src), decode_ogms(frame[ETH_HLEN:])


def decode_tvlvs(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, version, value) of each TVLV in ``data``."""
    out, off = [], 0
    while off < len(data):
        if len(data) - off < TVLV_HDR.size:
            raise AttackDecodeError(f"TVLV at byte {off}: {len(data) - off} bytes, its header needs 4")
        kind, version, length = TVLV_HDR.unpack_from(data, off)
        off += TVLV_HDR.size
        if off + length > len(data):
            raise AttackDecodeError(f"TVLV of type {kind}: {length} bytes, {len(data) - off} left")
        out.append((kind, version, data[off:off + length]))
        off += length
    return out


def gateway_of(ogm: OgmHeader) -> tuple[int, int] | None:
    """The (down, up) kbit/s an OGM's gateway TVLV announces, or None without one."""
    for kind, version, value in decode_tvlvs(ogm.tvlvs):
        if kind == BATADV_TVLV_GW and version == GW_TVLV_VERSION:
            if len(value) != GW_DATA.size:
                raise AttackDecodeError(f"gateway TVLV of {len(value)} bytes, expected {GW_DATA.size}")
            down, up = GW_DATA.unpack(value)
            return down * 100, up * 100
    return None


def echo(ogm: OgmHeader, ttl: int | None = None) -> bytes:
    """A BATMAN_IV OGM rebroadcast as a direct neighbour does (``BATADV_DIRECTLINK`` set, the same
    originator, seqno and TVLVs): sent back to its originator it counts as its own OGM heard back,
    which is how batman-adv decides a link is bidirectional."""
    if ogm.packet_type != BATADV_IV_OGM:
        raise ValueError("only BATMAN_IV OGMs are echoed (BATMAN_V learns links from ELP)")
    return ogm_iv(ogm.orig, ogm.seqno, tq=ogm.tq or 0, ttl=max((ttl or ogm.ttl) - 1, 1),
                  flags=ogm.flags | BATADV_DIRECTLINK, prev_sender=ogm.orig, tvlvs=ogm.tvlvs)


# -- the attacks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One attack: its kind, the Ethernet frames to send in order, how many a second, and what it
    is about (the MACs and originators a detection must name to count)."""

    kind: str
    frames: tuple[bytes, ...]
    rate: float
    sender: str  # the source MAC of its frames
    about: tuple[str, ...] = ()  # MACs or originators a matching threat record names
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.rate if self.rate > 0 else 0.0


def rogue_node(rng: random.Random, *, seconds: float = 45.0, interval: float = 1.0) -> Attack:
    """A node no handshake admitted (a made-up MAC) announcing itself with its own OGMs every
    ``interval``, as batman-adv would; seqnos start at a random number as batman-adv's do."""
    me = random_mac(rng)
    seq = rng.randrange(U32)
    count = max(1, round(seconds / interval))
    frames = tuple(ethernet(me, ogm_iv(me, seq + i)) for i in range(count))
    return Attack("rogue_node", frames, 1.0 / interval, me, (me,), {"first_seqno": seq})


def originator_flood(rng: random.Random, sender: str, *, originators: int = 200, rounds: int = 2,
                     rate: float = 200.0) -> Attack:
    """OGMs of ``originators`` made-up originators, each announced ``rounds`` times (seqno one
    further each round), all sent by ``sender`` as their first hop."""
    origs = sorted({random_mac(rng) for _ in range(originators)})
    seqs = {o: rng.randrange(U32) for o in origs}
    frames = tuple(ethernet(sender, ogm_iv(o, seqs[o] + r, tq=TQ_MAX)) for r in range(rounds) for o in origs)
    return Attack("originator_flood", frames, rate, sender, (sender,), {"originators": len(origs)})


def seqno_takeover(rng: random.Random, sender: str, orig: str, honest_seqno: int, *, count: int = 10,
                   interval: float = 0.5, jump_min: int = 1000, jump_max: int = 60_000) -> Attack:
    """OGMs claiming the honest originator ``orig`` with its sequence number jumped ``jump_min`` to
    ``jump_max`` ahead of ``honest_seqno``, going on one a ``interval``; sent by ``sender``, carrying
    the best TQ so they win the route. The jump stays below batman-adv's
    ``BATADV_EXPECTED_SEQNO_RANGE`` (65536), so batman-adv takes the OGMs as newer at once rather
    than as a restarted originator's, and the honest ones as old; it is far beyond the guard's
    window (``seqno_margin`` + ``seqno_rate`` per second)."""
    if not 0 < jump_min < jump_max <= 1 << 31:
        raise ValueError(f"jump {jump_min}..{jump_max}: not ahead in u32 serial arithmetic")
    start = honest_seqno + rng.randrange(jump_min, jump_max)
    frames = tuple(ethernet(sender, ogm_iv(orig, start + i, tq=TQ_MAX, prev_sender=orig)) for i in range(count))
    return Attack("seqno_takeover", frames, 1.0 / interval, sender, (orig, sender),
                  {"honest_seqno": honest_seqno % U32, "first_seqno": start % U32})


def inflated_tq(rng: random.Random, sender: str, orig: str, honest_seqno: int, *, count: int = 20,
                interval: float = 0.5) -> Attack:
    """``sender`` forwarding the far originator ``orig``'s OGMs with TQ 255, the quality of a
    perfect path, as if it were one hop from it: the seqnos go on from ``honest_seqno`` (one or two
    ahead, as a fresh copy would be), so batman-adv takes them as the newest."""
    start = honest_seqno + rng.randrange(1, 3)
    frames = tuple(ethernet(sender, ogm_iv(orig, start + i, tq=TQ_MAX, ttl=50, prev_sender=sender))
                   for i in range(count))
    return Attack("inflated_tq", frames, 1.0 / interval, sender, (sender, orig), {"first_seqno": start % U32})


def gateway_hijack(rng: random.Random, sender: str, *, down_kbit: int = 40_000_000, up_kbit: int = 40_000_000,
                   count: int = 20, interval: float = 0.5) -> Attack:
    """A made-up originator one hop behind ``sender`` announcing a gateway of ``down_kbit`` /
    ``up_kbit`` (default 40 Gbit/s, far above any mesh uplink), so that gateway clients pick it."""
    orig = random_mac(rng)
    seq = rng.randrange(U32)
    gw = gateway_tvlv(down_kbit, up_kbit)
    frames = tuple(ethernet(sender, ogm_iv(orig, seq + i, tq=TQ_MAX, tvlvs=gw)) for i in range(count))
    return Attack("gateway_hijack", frames, 1.0 / interval, sender, (orig, sender),
                  {"gateway": orig, "down_kbit": down_kbit - down_kbit % 100, "up_kbit": up_kbit - up_kbit % 100})


# -- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One run of one attack kind: detected or not, seconds from the attack's first frame to the
    first matching threat record, and that record's severity."""

    kind: str
    seed: int
    detected: bool
    seconds: float | None = None
    severity: int | None = None
    node: str | None = None
    quarantine_s: float | None = None  # from the first frame to the first quarantine of what it is about
    error: str | None = None  # the attack could not be run (then it is not counted)


def matches(record: Mapping[str, Any], kind: str, about: Iterable[str]) -> bool:
    """Whether a threat record (EVE shape, docs/guard.md) detects an attack of ``kind`` about
    ``about``: its detector is one of the kind's, and it names one of ``about`` (subject, MACs,
    originator, or the evidence's address: a handshake burst is about a link-local address). An
    empty ``about`` matches any record of the detector."""
    b = record.get("batman") if isinstance(record, Mapping) else None
    if not isinstance(b, Mapping) or b.get("detector") not in DETECTORS.get(kind, ()):
        return False
    wanted = {str(a).lower() for a in about}
    if not wanted:
        return True
    macs = b.get("macs") if isinstance(b.get("macs"), list) else []
    evidence = b.get("evidence") if isinstance(b.get("evidence"), Mapping) else {}
    named = {str(x).lower() for x in (b.get("subject"), b.get("originator"), evidence.get("address"), *macs) if x}
    return bool(named & wanted)


def score(kind: str, seed: int, start: float, records: Sequence[tuple[str, float, Mapping[str, Any]]],
          about: Iterable[str] = (), horizon: float | None = None) -> Outcome:
    """The outcome of one attack started at ``start`` (seconds on the run's timeline), from the
    threat records the agents logged: ``(node, t, record)`` with ``t`` on the same timeline. The
    first matching record at or after ``start`` (and within ``horizon`` seconds of it) detects it;
    a record before ``start`` is an earlier run's or an honest false alarm, never this attack's."""
    about = tuple(about)
    hits = sorted((t, node, r) for node, t, r in records
                  if t >= start and (horizon is None or t - start <= horizon) and matches(r, kind, about))
    if not hits:
        return Outcome(kind, seed, False)
    t, node, r = hits[0]
    sev = r.get("alert", {}).get("severity") if isinstance(r.get("alert"), Mapping) else None
    return Outcome(kind, seed, True, round(t - start, 3), sev if isinstance(sev, int) else None, node)


def quarantined_after(start: float, end: float | None, quarantines: Iterable[tuple[str, float, str]],
                      about: Iterable[str]) -> float | None:
    """Seconds from ``start`` to the first quarantine (``(node, t, MAC)``, from the agents'
    ``guard_quarantined`` events) of a MAC in ``about`` before ``end``; None when there was none."""
    wanted = {str(a).lower() for a in about}
    ts = [t for _, t, m in quarantines if start <= t and (end is None or t < end) and str(m).lower() in wanted]
    return round(min(ts) - start, 3) if ts else None


def run_outcomes(seed: int, attacks: Sequence[Mapping[str, Any]], t0_wall: float,
                 records: Sequence[tuple[str, float, Mapping[str, Any]]],
                 quarantines: Sequence[tuple[str, float, str]] = (), horizon: float = 90.0) -> list[Outcome]:
    """The outcomes of one lab run: ``attacks`` are the attack checks' results in the order they ran
    (``kind``, ``first_wall``, ``about``, or ``error``), ``t0_wall`` the run's timeline origin,
    ``records``/``quarantines`` on that timeline. An attack's detection counts until the next
    attack started, and at most ``horizon`` seconds."""
    starts = [a["first_wall"] - t0_wall if isinstance(a.get("first_wall"), (int, float)) else None for a in attacks]
    out = []
    for i, a in enumerate(attacks):
        kind, start = str(a.get("kind")), starts[i]
        if a.get("error") or start is None:
            out.append(Outcome(kind, seed, False, error=str(a.get("error") or "no frame went out")))
            continue
        later = [t for t in starts if t is not None and t > start]  # by when they ran, not the list's order
        end = min([start + horizon, *later])
        o = score(kind, seed, start, records, a.get("about") or (), horizon=end - start)
        q = quarantined_after(start, end, quarantines, a.get("about") or ())
        out.append(Outcome(o.kind, seed, o.detected, o.seconds, o.severity, o.node, q))
    return out


def collateral(records: Sequence[tuple[str, float, Mapping[str, Any]]], attacks: Sequence[Mapping[str, Any]],
               t0_wall: float, severity: int = 2) -> list[dict[str, Any]]:
    """Threat records of ``severity`` or more urgent (medium and high by default) from the first
    attack on that match no attack kind about any of the attacks' subjects: what the suite made
    the detectors say about honest nodes (``node``, ``t``, ``detector``, ``subject``)."""
    started = [a["first_wall"] - t0_wall for a in attacks if isinstance(a.get("first_wall"), (int, float))]
    if not started:
        return []
    about = {str(x).lower() for a in attacks for x in a.get("about") or ()}
    out = []
    for node, t, r in records:
        alert = r.get("alert") if isinstance(r.get("alert"), Mapping) else {}
        level = alert.get("severity")
        if t < min(started) or not isinstance(level, int) or level > severity:
            continue
        if not any(matches(r, kind, about) for kind in KINDS):
            b = r.get("batman") if isinstance(r.get("batman"), Mapping) else {}
            out.append({"node": node, "t": t, "detector": b.get("detector"), "subject": b.get("subject")})
    return out


@dataclass(frozen=True)
class KindSummary:
    kind: str
    runs: int  # the runs whose attack went out
    detected: int
    within: int  # detected within the goal's seconds
    median_s: float | None
    max_s: float | None
    quarantined: int = 0
    errors: int = 0  # runs whose attack could not be run

    @property
    def rate(self) -> float:
        return self.detected / self.runs if self.runs else 0.0


def summarize(outcomes: Iterable[Outcome], goal_s: float = 5.0) -> list[KindSummary]:
    """Per kind (in :data:`KINDS` order, then any other): runs, detected, detected within
    ``goal_s``, the median and the longest time to detection."""
    by: dict[str, list[Outcome]] = {}
    failed: dict[str, int] = {}
    for o in outcomes:
        by.setdefault(o.kind, [])
        if o.error:
            failed[o.kind] = failed.get(o.kind, 0) + 1
        else:
            by[o.kind].append(o)
    order = [k for k in KINDS if k in by] + sorted(k for k in by if k not in KINDS)
    out = []
    for kind in order:
        runs = by[kind]
        times = sorted(o.seconds for o in runs if o.detected and o.seconds is not None)
        median = None
        if times:
            mid = len(times) // 2
            median = times[mid] if len(times) % 2 else round((times[mid - 1] + times[mid]) / 2, 3)
        out.append(KindSummary(kind, len(runs), sum(o.detected for o in runs),
                               sum(1 for s in times if s <= goal_s), median, times[-1] if times else None,
                               sum(1 for o in runs if o.quarantine_s is not None), failed.get(kind, 0)))
    return out


def table(summaries: Sequence[KindSummary], goal_s: float = 5.0) -> str:
    """The summaries as a Markdown table (the form docs/benchmarks.md takes)."""
    lines = [f"| attack | runs | detected | within {goal_s:g} s | median s | max s | quarantined | not run |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        med = "-" if s.median_s is None else f"{s.median_s:.1f}"
        mx = "-" if s.max_s is None else f"{s.max_s:.1f}"
        lines.append(f"| {s.kind} | {s.runs} | {s.detected} ({s.rate:.0%}) | {s.within} | {med} | {mx} | "
                     f"{s.quarantined} | {s.errors} |")
    return "\n".join(lines)
