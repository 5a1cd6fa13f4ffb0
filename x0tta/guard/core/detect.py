"""Intrusion detectors: what the mesh looks like in, findings with their evidence out.

batman-adv authenticates nobody: any radio in range can send OGMs, claim originators and announce
gateways. The guard's admission (:mod:`.admission`) keeps frames of MACs without a PQ mTLS
handshake out of batman-adv when it enforces; these detectors say when something tries anyway, or
when an admitted MAC behaves like an attacker (a MAC allow-list cannot stop a spoofed admitted
MAC). Pure: every detector takes the recent :class:`Observation` records (oldest first, the last
one is the current view), the thresholds (:class:`~x0tta.config.guard.DetectSettings`) and
``now``, and returns :class:`Finding` records. No clock, no I/O; the caller keeps the window.

Times are seconds on one monotonic clock (the probes' ``CLOCK_MONOTONIC``, ``time.monotonic()``),
given by the caller in ``Observation.at``, ``Heard.first_seen``, ``Flow.first_seen`` and
``Handshake.at``. Counters (frames, packets) are cumulative, as the eBPF maps keep them: a detector
takes the difference between the current observation and the one at the start of its window, and a
counter that went backwards (its map entry was evicted and started again) counts from zero.

Detectors, their input and where it comes from (docs/guard.md has the tuning):

============================  ===========================================================  ========
signature                     observation                                                  source
============================  ===========================================================  ========
``unadmitted_frames``         :class:`Heard` (probes' neighbour map) and ``admitted``      probes, guard
``mac_on_two_links``          :class:`Heard` on two interfaces at once                     probes
``mac_two_identities``        :class:`Handshake` (ok) from one MAC with two SPIFFE IDs     peer
``originator_flood``          :class:`Route` (GET_ORIGINATORS): new originators            mesh
``seqno_takeover``            :class:`Ogm`: two sequence-number streams of one originator  guard [#]_
``inflated_link_metric``      :class:`Route` vs :class:`LinkMeasure` of its next hop       mesh [#]_
``ogm_full_claim``            :class:`Claim`: OGMs at a TQ no forward keeps                guard [#]_
``gateway_bandwidth``         :class:`GatewayAd` (GET_GATEWAYS)                            mesh
``flow_scan``, ``flow_flood`` :class:`Flow` (probes' flow map), ingress                    probes
``handshake_burst``           :class:`Handshake` (failed)                                  peer
============================  ===========================================================  ========

.. [#] batman-adv's netlink tables carry no sequence numbers: the eBPF program reads them from the
   OGMs it receives into the guard's ``ogms`` map, two streams per originator
   (:mod:`x0tta.guard.core.ogm`), which the guard reads at each look.
.. [#] BATMAN_V: batman-adv's own throughput estimate of the link (GET_NEIGHBORS). BATMAN_IV: the
   TQ of the neighbour's own interface entry, against which a forwarded originator must show the
   mesh's hop penalty (``Observation.hop_penalty``); the heal probes' delivery ratio
   (``LinkMeasure.delivery``) is not handed over yet.
.. [#] The same map keeps each originator's last BATMAN_IV OGM at TQ 248 or more: the neighbour
   it came from, its TTL.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from x0tta.config.guard import DetectSettings
from x0tta.guard.core.admission import mac_from_link_local

SEVERITY_HIGH = 1
SEVERITY_MEDIUM = 2
SEVERITY_LOW = 3
SEVERITY_INFO = 4
SEVERITY_NAMES = {SEVERITY_HIGH: "high", SEVERITY_MEDIUM: "medium", SEVERITY_LOW: "low", SEVERITY_INFO: "info"}


@dataclass(frozen=True)
class Signature:
    """What a finding is: its stable id (in Suricata's local-use range 1000000-1999999, as
    ``1430500 + n`` after batman-adv's ethertype 0x4305), name, severity (1 high .. 4 info) and
    category. Ids never change meaning; a retired signature keeps its id unused."""

    sid: int
    name: str
    title: str
    severity: int
    category: str


SIGNATURES: dict[str, Signature] = {
    s.name: s
    for s in (
        Signature(1430501, "unadmitted_frames", "batman-adv frames from a MAC that is not admitted",
                  SEVERITY_MEDIUM, "admission"),
        Signature(1430502, "mac_on_two_links", "one MAC heard on two links at once", SEVERITY_HIGH, "spoofing"),
        Signature(1430503, "mac_two_identities", "one MAC authenticated with two SPIFFE IDs",
                  SEVERITY_HIGH, "spoofing"),
        Signature(1430504, "originator_flood", "too many new originators", SEVERITY_HIGH, "routing-attack"),
        Signature(1430505, "seqno_takeover", "originator sequence numbers from two streams",
                  SEVERITY_HIGH, "routing-attack"),
        Signature(1430506, "inflated_link_metric", "routes better than the link to their next hop",
                  SEVERITY_HIGH, "routing-attack"),
        Signature(1430507, "gateway_bandwidth", "implausible gateway bandwidth", SEVERITY_HIGH, "routing-attack"),
        Signature(1430508, "flow_scan", "one source opening flows to many destinations", SEVERITY_MEDIUM,
                  "network-scan"),
        Signature(1430509, "flow_flood", "packet flood from one source", SEVERITY_MEDIUM, "denial-of-service"),
        Signature(1430510, "handshake_burst", "burst of failed PQ mTLS handshakes", SEVERITY_MEDIUM,
                  "authentication"),
        Signature(1430511, "ogm_full_claim", "a neighbour sending OGMs at a quality only their originator gives",
                  SEVERITY_HIGH, "routing-attack"),
    )
}


# -- observations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heard:
    """A MAC this node receives frames from on an interface (the probes' ``neighbors`` map)."""

    interface: str
    mac: str
    rx_packets: int  # cumulative, every frame
    first_seen: float
    last_rx: float | None = None  # None: never received from
    # cumulative batman-adv frames received while not admitted (the guard program's count: dropped
    # in enforce, would-be in observe); None where no guard counts them: rx_packets is taken then
    denied_packets: int | None = None

    @property
    def unadmitted_frames(self) -> int:
        return self.rx_packets if self.denied_packets is None else self.denied_packets


@dataclass(frozen=True)
class Route:
    """An originator entry (GET_ORIGINATORS): ``orig`` reached through ``neigh`` on ``interface``."""

    orig: str
    neigh: str
    interface: str
    tq: int | None = None  # BATMAN_IV, 0..255
    throughput: int | None = None  # BATMAN_V, kbit/s
    best: bool = False
    last_seen_ms: int | None = None  # since batman-adv last heard an OGM of it through neigh


@dataclass(frozen=True)
class LinkMeasure:
    """What this node measures on the link to a neighbour: the delivery ratio of its liveness
    probes (0..1, heal) and its own throughput estimate (kbit/s: batman-adv's ELP estimate in
    GET_NEIGHBORS, or a throughput-meter run). None: not measured."""

    interface: str
    mac: str
    delivery: float | None = None
    throughput: float | None = None


@dataclass(frozen=True)
class GatewayAd:
    """A gateway announcement (GET_GATEWAYS); bandwidths in kbit/s (batman-adv's 100 kbit/s units
    times 100)."""

    orig: str
    router: str
    bandwidth_down: int | None = None
    bandwidth_up: int | None = None


@dataclass(frozen=True)
class Flow:
    """A flow of the probes' ``flows`` map (cumulative packets since ``first_seen``)."""

    direction: str  # "ingress" or "egress"
    src: str
    dst: str
    proto: int
    dport: int
    packets: int
    first_seen: float
    sport: int = 0
    interface: str = ""


@dataclass(frozen=True)
class Handshake:
    """The outcome of one PQ mTLS handshake (the peer subsystem's ``HandshakeResult``)."""

    at: float
    address: str  # host or [host]:port as the peer subsystem reports it
    ok: bool
    reason: str = "ok"
    role: str = "server"
    spiffe_id: str = ""

    @property
    def refused(self) -> bool:
        """Failed by the other side: ``unreachable`` (this node dialled and found no one) is not an
        attempt on this node."""
        return not self.ok and self.reason != "unreachable"


@dataclass(frozen=True)
class Ogm:
    """One originator message: ``orig``'s sequence number ``seqno`` (u32) received from ``mac``."""

    at: float
    orig: str
    seqno: int
    mac: str = ""
    interface: str = ""


@dataclass(frozen=True)
class Claim:
    """The last BATMAN_IV OGM of ``orig`` that came at a TQ only an originator's own OGMs carry,
    from neighbour ``mac`` on ``interface``, with its TTL (the guard's ``ogms`` map)."""

    at: float
    orig: str
    mac: str
    interface: str
    tq: int
    ttl: int


@dataclass(frozen=True)
class Observation:
    """One look at the mesh at ``at``: tables are the state then; ``handshakes`` and ``ogms`` are
    the events since the previous observation."""

    at: float
    heard: tuple[Heard, ...] = ()
    admitted: frozenset[str] = frozenset()
    routes: tuple[Route, ...] = ()
    links: tuple[LinkMeasure, ...] = ()
    gateways: tuple[GatewayAd, ...] = ()
    flows: tuple[Flow, ...] = ()
    handshakes: tuple[Handshake, ...] = ()
    ogms: tuple[Ogm, ...] = ()
    # the full-quality OGM claims the guard's map holds at ``at`` (a state, like the tables)
    claims: tuple[Claim, ...] = ()
    enforcing: bool = False
    # whether this node can admit a neighbour at all: it has an identity to handshake with, or a
    # configured allow-list. Without either, every neighbour is unadmitted and saying so tells nobody
    # anything (unadmitted frames are then informational)
    admitting: bool = True
    # the TQ penalty per hop the mesh's nodes apply when they forward an OGM (batman-adv's
    # hop_penalty, the same on every node of a fleet; None or 0: not known, or none)
    hop_penalty: int | None = None
    # when the tables in ``routes``/``gateways`` were read (on ``at``'s clock; None: at ``at``): two
    # looks may read one dump
    routes_at: float | None = None
    # originators this node knew before this observation, within originator_memory (kept by the
    # caller, which sees more than the window)
    familiar: frozenset[str] = frozenset()


# -- findings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One detection: the signature, when (``now``), whom it is about, and why (``evidence``:
    JSON-able, the numbers and thresholds the decision was made on)."""

    signature: Signature
    at: float
    subject: str  # what it is about (a MAC, an originator, an address): with the sid, its identity
    macs: tuple[str, ...] = ()
    originator: str | None = None
    spiffe_id: str | None = None
    interface: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: int | None = None  # None: the signature's

    @property
    def key(self) -> tuple[int, str]:
        """Same key, same threat: a caller reports a key once per hold-down, not at every look."""
        return (self.signature.sid, self.subject)

    @property
    def level(self) -> int:
        return self.severity if self.severity is not None else self.signature.severity


def _finding(name: str, now: float, subject: str, **kw: Any) -> Finding:
    return Finding(SIGNATURES[name], now, subject, **kw)


def _norm(mac: str) -> str:
    return mac.lower()


def _group(mac: str) -> bool:
    """A broadcast or multicast MAC (I/G bit set): only ever a destination of this node's frames."""
    try:
        return bool(int(mac[:2], 16) & 1)
    except ValueError:
        return False


def _window(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Observation]:
    """The observations within the window, in time order (ones from the future are ignored)."""
    start = now - s.window
    return sorted((o for o in observations if start <= o.at <= now), key=lambda o: o.at)


def _base(observations: Sequence[Observation], s: DetectSettings, now: float) -> Observation | None:
    """The observation the window's counters start from: the latest at or before its start, else
    the oldest inside it; None when there is none but the current one."""
    start = now - s.window
    past = [o for o in observations if o.at <= now]
    if len(past) < 2:
        return None
    before = [o for o in past if o.at <= start]
    return max(before, key=lambda o: o.at) if before else min(past, key=lambda o: o.at)


def _current(observations: Sequence[Observation], now: float) -> Observation | None:
    past = [o for o in observations if o.at <= now]
    return max(past, key=lambda o: o.at) if past else None


def _grown(now_count: int, then_count: int | None) -> int:
    """Growth of a cumulative counter; one that went backwards was reset and counts from zero."""
    if then_count is None or now_count < then_count:
        return max(now_count, 0)
    return now_count - then_count


# -- the detectors --------------------------------------------------------------------------------


def unadmitted_frames(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """MACs sending frames within the window without being admitted, past their grace: first
    heard more than ``unadmitted_grace`` ago, and not admitted in any observation within it."""
    cur, base = _current(observations, now), _base(observations, s, now)
    if cur is None:
        return []
    # admitted now, or within the grace: a neighbour whose session just ended (its agent restarts)
    # is revoked and sends on until it handshakes again - that is churn, not an intrusion
    admitted = {_norm(m) for o in observations if now - s.unadmitted_grace <= o.at <= now for m in o.admitted}
    admitted |= {_norm(m) for m in cur.admitted}
    before = {(h.interface, _norm(h.mac)): h.unadmitted_frames for h in base.heard} if base else {}
    out = []
    for h in cur.heard:
        mac = _norm(h.mac)
        then = before.get((h.interface, mac))
        if mac in admitted or _group(mac) or (then is None and h.first_seen < now - s.window):
            continue  # admitted, a group address, or a counter that may hold frames from before the window
        frames = _grown(h.unadmitted_frames, then)
        if frames < s.unadmitted_min_frames or now - h.first_seen < s.unadmitted_grace:
            continue
        out.append(_finding(
            "unadmitted_frames", now, mac, macs=(mac,), interface=h.interface,
            severity=SEVERITY_LOW if cur.enforcing else SEVERITY_MEDIUM if cur.admitting else SEVERITY_INFO,
            evidence={"frames": frames, "window": s.window, "first_seen_ago": round(now - h.first_seen, 3),
                      "enforcing": cur.enforcing, "admitting": cur.admitting, "min_frames": s.unadmitted_min_frames,
                      "grace": s.unadmitted_grace},
        ))
    return out


def mac_on_two_links(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """One MAC received on two interfaces of this node within ``mac_conflict_window`` of each
    other: two radios answering to one address, a spoofed MAC."""
    cur = _current(observations, now)
    if cur is None:
        return []
    by_mac: dict[str, dict[str, float]] = defaultdict(dict)
    for h in cur.heard:
        if h.last_rx is not None and now - h.last_rx <= s.mac_conflict_window:
            by_mac[_norm(h.mac)][h.interface] = h.last_rx
    out = []
    for mac, links in sorted(by_mac.items()):
        if len(links) < 2:
            continue
        times = sorted(links.values())
        if times[-1] - times[0] > s.mac_conflict_window:
            continue
        out.append(_finding(
            "mac_on_two_links", now, mac, macs=(mac,),
            evidence={"interfaces": sorted(links),
                      "last_rx_ago": {i: round(now - t, 3) for i, t in sorted(links.items())},
                      "conflict_window": s.mac_conflict_window},
        ))
    return out


def _handshakes(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Handshake]:
    seen: dict[tuple[Any, ...], Handshake] = {}
    for o in observations:
        for h in o.handshakes:
            if now - s.window <= h.at <= now:
                seen[(h.at, h.address, h.ok, h.reason, h.role, h.spiffe_id)] = h
    return sorted(seen.values(), key=lambda h: h.at)


def _host(address: str) -> str:
    """The host of ``host``, ``host:port`` or ``[v6]:port`` (a bare IPv6 address stays whole)."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def mac_two_identities(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """One MAC (the modified EUI-64 in the link-local address a handshake came from) authenticated
    as two SPIFFE IDs within ``mac_conflict_window``: one of them is not that node."""
    ids: dict[str, dict[str, float]] = defaultdict(dict)
    for h in _handshakes(observations, s, now):
        raw = mac_from_link_local(_host(h.address)) if h.ok and h.spiffe_id else None
        if raw is not None:
            ids[raw.hex(":")][h.spiffe_id] = h.at
    out = []
    for mac, by_id in sorted(ids.items()):
        ranked = sorted(by_id.items(), key=lambda kv: kv[1])
        clash = [(a, b) for a, b in itertools.pairwise(ranked) if b[1] - a[1] <= s.mac_conflict_window]
        if not clash:
            continue
        (first, _), (second, _) = clash[-1]
        out.append(_finding(
            "mac_two_identities", now, mac, macs=(mac,), spiffe_id=second,
            evidence={"spiffe_ids": [first, second], "identities_in_window": len(by_id),
                      "conflict_window": s.mac_conflict_window},
        ))
    return out


def originator_flood(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """More new originators within the window than the larger of ``originator_flood_min`` and
    ``originator_flood_ratio`` of those known at its start. Not new: those in any observation of
    the window or its base, and the caller's ``familiar`` ones (known within
    ``originator_memory``: a node that rejoins after a partition re-learns the mesh it knew).
    Needs a view from before the window began that knew some originators: an agent that just
    started, or a node that was alone (it learns the whole mesh at once when it first joins), has
    no baseline and judges nothing."""
    cur, base = _current(observations, now), _base(observations, s, now)
    if cur is None or base is None or base.at > now - s.window or not (base.routes or cur.familiar):
        return []
    known = {_norm(r.orig) for o in _window(observations, s, now) if o is not cur for r in o.routes}
    known |= {_norm(r.orig) for r in base.routes} | {_norm(m) for m in cur.familiar}
    new = {_norm(r.orig): r for r in cur.routes if _norm(r.orig) not in known}
    base_count = len({_norm(r.orig) for r in base.routes} | {_norm(m) for m in cur.familiar})
    limit = max(s.originator_flood_min, math.ceil(s.originator_flood_ratio * base_count))
    if len(new) < limit:
        return []
    via = Counter(_norm(r.neigh) for r in new.values())
    neigh, carried = via.most_common(1)[0]
    return [_finding(
        "originator_flood", now, neigh, macs=(neigh,),
        interface=next(r.interface for r in new.values() if _norm(r.neigh) == neigh),
        evidence={"new_originators": len(new), "known_before": base_count, "limit": limit, "window": s.window,
                  "via": dict(via.most_common(5)), "carried_by_top_neighbour": carried,
                  "sample": sorted(new)[:10]},
    )]


U32 = 1 << 32


def _serial_diff(a: int, b: int) -> int:
    """``a - b`` in u32 serial-number arithmetic (RFC 1982): positive when ``a`` is newer."""
    d = (a - b) % U32
    return d - U32 if d >= U32 // 2 else d


@dataclass
class _Stream:
    first: float
    last: float
    seqno: int
    count: int
    macs: set[str]
    first_seqno: int
    interface: str = ""  # where its last OGM came in


def seqno_takeover(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """An originator whose OGMs form two sequence-number streams that run at the same time: one
    jumped beyond what the originator interval allows (``seqno_rate`` per second plus
    ``seqno_margin``) while the other went on. An originator that restarts jumps too (batman-adv
    starts from a random number) but its old stream stops: not flagged."""
    ogms: dict[str, dict[tuple[float, int, str], Ogm]] = defaultdict(dict)
    for o in observations:
        for m in o.ogms:
            if now - s.window <= m.at <= now:
                ogms[_norm(m.orig)][(m.at, m.seqno, m.mac)] = m
    out = []
    for orig, seen in sorted(ogms.items()):
        streams: list[_Stream] = []
        for m in sorted(seen.values(), key=lambda m: (m.at, m.seqno)):
            seq = m.seqno % U32
            # the stream it fits best: an old stream's window grows with its silence, so after a
            # while an honest originator's OGMs fit it as well as the stream they really continue
            # (the first match would join them and read as two streams running at once)
            fits = [st for st in streams
                    if -s.seqno_margin <= _serial_diff(seq, st.seqno)
                    <= s.seqno_margin + s.seqno_rate * max(m.at - st.last, 0.0)]
            if fits:
                st = min(fits, key=lambda x: abs(_serial_diff(seq, x.seqno)))
                if _serial_diff(seq, st.seqno) > 0:
                    st.seqno = seq
                st.last, st.count, st.interface = m.at, st.count + 1, m.interface or st.interface
                st.macs.add(_norm(m.mac))
            else:
                streams.append(_Stream(m.at, m.at, seq, 1, {_norm(m.mac)}, seq, m.interface))
        live = [st for st in streams if st.count >= 2]
        pairs = [(a, b) for a in live for b in live if a is not b and a.first < b.first < a.last]
        if not pairs:
            continue
        old, new = pairs[0]
        macs = tuple(sorted((new.macs - old.macs) or new.macs))
        out.append(_finding(
            "seqno_takeover", now, orig, originator=orig, macs=macs, interface=new.interface or None,
            evidence={"streams": len(live), "old_seqno": old.seqno, "new_seqno": new.seqno,
                      "jump": _serial_diff(new.first_seqno, old.seqno), "old_from": sorted(old.macs),
                      "new_from": sorted(new.macs), "overlap": round(old.last - new.first, 3),
                      "margin": s.seqno_margin, "rate": s.seqno_rate},
        ))
    return out


def _unforwarded(observations: Sequence[Observation], s: DetectSettings, now: float
                 ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """BATMAN_IV routes through a neighbour that no forward has penalized, in the current table dump
    and the one before it: per (interface, neighbour), the originators other than the neighbour's
    own interface entry whose TQ is above the link's TQ (that entry's highest since the earlier
    dump, or within ``forward_hold`` if that is longer) less three quarters of a hop penalty: what
    one forward carries at most is the link's less a whole one. (In the lab a claim of TQ 255 one
    hop behind a neighbour on a perfect link showed at 240 - the link's less half a penalty, not
    255 - so the threshold keeps a quarter of a penalty on either side.)

    batman-adv computes every route through a neighbour the same way - the TQ in the OGM times
    this node's view of the link - and every node that forwards an OGM first takes its hop
    penalty off that TQ. So a route to an originator the neighbour forwarded for is at most
    ``(255 - hop_penalty) / 255`` of the link's TQ; only the neighbour's own OGMs (its interface
    entry, and its primary interface's originator when that is another MAC) come at the link's
    full TQ. More than one such originator is a claim of a path without a hop: one of them is
    allowed for the neighbour's primary.

    Each entry is a mean of its last OGMs, and the link's entry refreshes at the neighbour's own
    OGM interval while a forwarded one refreshes at its originator's: on a link losing quality
    the link's entry falls first. Hence the link's highest TQ over both dumps (and at least the
    last ``forward_hold``), and the claim in two dumps in a row. On a link whose own entry moved by
    more than half a hop penalty within that time (coming back after a fault: its TQ window fills
    again, while faster OGMs on some nodes refresh some entries twenty times as often as others)
    the bound is a quarter of a penalty off the link's TQ instead of three quarters: the chaos lab
    saw honest routes at about six tenths of a penalty off, above the usual bound, on links seven
    and ten seconds after their restore. The cost: the lab's attack showed at half a penalty off,
    so a neighbour that keeps its own entry swinging hides such claims (a claim at the link's full
    TQ stays above either bound). Only entries an OGM refreshed
    within ``forward_fresh`` count: one that nothing refreshes (an originator gone, or its source
    quarantined upstream) keeps the TQ it had while the link's may have changed."""
    looks = sorted((o for o in observations if o.at <= now), key=lambda o: o.at)
    if not looks:
        return {}
    dumped = [o.routes_at if o.routes_at is not None else o.at for o in looks]
    cur = looks[-1]
    earlier = [o for o, d in zip(looks, dumped, strict=True) if d < dumped[-1]]
    if not earlier:
        return {}
    prev = earlier[-1]
    since = min(prev.at, now - s.forward_hold)
    fresh = s.forward_fresh * 1000

    def live(r: Route) -> bool:  # an entry no OGM refreshes keeps its old TQ until it is purged
        return r.tq is not None and (r.last_seen_ms is None or r.last_seen_ms <= fresh)

    link: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    for o in looks:
        if o.at < since:
            continue
        for r in o.routes:
            if live(r) and _norm(r.orig) == _norm(r.neigh):
                key = (r.interface, _norm(r.neigh))
                link[key] = max(link.get(key, 0), r.tq)
                low[key] = min(low.get(key, 255), r.tq)

    def claims(o: Observation) -> dict[tuple[str, str], list[dict[str, Any]]]:
        p = o.hop_penalty or 0
        found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        if p < s.forward_penalty_min:
            return found  # a penalty too small to tell a forward from an origin by
        for r in o.routes:
            key = (r.interface, _norm(r.neigh))
            tq = link.get(key)
            if not live(r) or tq is None or tq < s.forward_link_tq_min or _norm(r.orig) == key[1]:
                continue
            # above link * (255 - 3p/4) / 255; while the link's quality moves (its entries lag it by
            # different amounts), above link * (255 - p/4) / 255
            off = p if tq - low[key] > p / 2 else 3 * p
            if r.tq is not None and r.tq * 255 * 4 > tq * (4 * 255 - off):
                found[key].append({"orig": _norm(r.orig), "tq": r.tq, "link_tq": tq, "hop_penalty": p})
        return {k: v for k, v in found.items() if len(v) > 1}

    now_claims, before = claims(cur), claims(prev)
    return {k: sorted(v, key=lambda c: (-c["tq"], c["orig"])) for k, v in now_claims.items() if k in before}


def inflated_link_metric(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """Routes through a neighbour that claim more than this node measures on the link to it: a path
    is never better than its first hop. BATMAN_IV: TQ/255 above the measured delivery ratio plus
    ``link_tq_margin``, or more than one originator through it at the link's own TQ, as if no node
    had forwarded their OGMs (:func:`_unforwarded`); BATMAN_V: throughput above
    ``link_throughput_factor`` times this node's estimate. One finding per neighbour, with its
    worst routes."""
    cur = _current(observations, now)
    if cur is None:
        return []
    measured = {(m.interface, _norm(m.mac)): m for m in cur.links}
    bad: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for key, found in _unforwarded(observations, s, now).items():
        bad[key].extend(found)
    for r in cur.routes:
        m = measured.get((r.interface, _norm(r.neigh)))
        if m is None:
            continue
        if any(c["orig"] == _norm(r.orig) for c in bad.get((r.interface, _norm(r.neigh)), ())):
            continue  # already claimed unforwarded
        if r.tq is not None and m.delivery is not None and r.tq / 255 > min(m.delivery, 1.0) + s.link_tq_margin:
            bad[(r.interface, _norm(r.neigh))].append(
                {"orig": _norm(r.orig), "tq": r.tq, "measured_delivery": round(m.delivery, 4)})
        elif r.throughput is not None and m.throughput is not None and m.throughput >= 0 and (
            r.throughput > s.link_throughput_factor * m.throughput
        ):
            bad[(r.interface, _norm(r.neigh))].append(
                {"orig": _norm(r.orig), "throughput": r.throughput, "measured_throughput": m.throughput})
    out = []
    for (iface, neigh), routes in sorted(bad.items()):
        out.append(_finding(
            "inflated_link_metric", now, neigh, macs=(neigh,), interface=iface,
            originator=routes[0]["orig"],
            evidence={"routes": len(routes), "worst": routes[:5], "tq_margin": s.link_tq_margin,
                      "throughput_factor": s.link_throughput_factor},
        ))
    return out


SECONDARY_TTL = 2  # batman-adv's own OGMs of a secondary hard interface: that interface only, TTL 2
# A claim whose last OGM came less than this after another claim of the same neighbour began was
# replaced by it, not joined: an OGM of the old primary still on its way when the new one's began
# (batman-adv holds an OGM at most 100 ms for aggregation). The cost: a claim beside a primary is
# seen at the first look after the primary's next OGM that came this long after the claim began.
REPLACED_WITHIN = 0.25


def _claim_history(observations: Sequence[Observation], now: float) -> tuple[dict[tuple[str, str], float],
                                                                             dict[str, float]]:
    """From the looks up to ``now``: when each (neighbour, originator) claim began (its claim time
    at the first look that held it; -inf for those the earliest look already held, which may be
    old), and since when each neighbour's own OGMs have come with a primary's TTL (the first look
    of the latest run of looks that saw them so; -inf from the earliest)."""
    began: dict[tuple[str, str], float] = {}
    primary: dict[str, float | None] = {}
    for i, o in enumerate(sorted((o for o in observations if o.at <= now), key=lambda o: o.at)):
        for c in o.claims:
            key = (_norm(c.mac), _norm(c.orig))
            start = -math.inf if i == 0 else c.at
            began.setdefault(key, start)
            if key[0] == key[1]:
                was = primary.get(key[0])
                primary[key[0]] = (start if was is None else was) if c.ttl > SECONDARY_TTL else None
    return began, {m: t for m, t in primary.items() if t is not None}


def _replaced(mac: str, orig: str, claims: Mapping[str, Claim], began: Mapping[tuple[str, str], float]) -> bool:
    """Whether neighbour ``mac``'s claim of ``orig`` last came before another of its claims began,
    or within :data:`REPLACED_WITHIN` after."""
    last = claims[orig].at
    return any(began.get((mac, o), c.at) > last - REPLACED_WITHIN for o, c in claims.items() if o != orig)


def ogm_full_claim(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """BATMAN_IV: a neighbour that sent OGMs, within ``forward_fresh``, at a TQ above 255 less the
    hop penalty, for more originators than can be its own. Every node that forwards an OGM takes
    its ``hop_penalty`` off the TQ, so only an originator's own OGMs come at that quality, and a
    node sends its own on each hard interface: its primary's (TTL 50, on every interface) and, from
    a secondary interface, that interface's (TTL 2, its MAC the frame's source). So a neighbour's
    frames may carry, at full quality, the source MAC's own OGMs and, when those have the
    secondary's TTL, one other originator's - its primary. More is a path without a hop: the
    attacker's own frames, first-hop evidence (unlike ``inflated_link_metric``'s tables). Off below
    ``forward_penalty_min``, as that check; this node's penalty is taken as every node's.

    A neighbour whose primary changes (the heal loop detached its primary interface, say) sends
    the new primary's OGMs while the old one's last claim is still fresh: a claim whose last OGM
    came before another claim of that neighbour began (or within ``REPLACED_WITHIN`` after), or
    before its own OGMs took a primary's TTL, was replaced, not joined, and does not count."""
    cur = _current(observations, now)
    hp = cur.hop_penalty if cur is not None else None
    if cur is None or hp is None or hp < s.forward_penalty_min:
        return []
    by_neigh: dict[tuple[str, str], dict[str, Claim]] = defaultdict(dict)
    for c in cur.claims:
        # the map is read after the look's ``now`` was taken: a claim may be a little newer
        if now - s.forward_fresh <= c.at <= now + 1.0 and c.tq > 255 - hp:
            by_neigh[(c.interface, _norm(c.mac))][_norm(c.orig)] = c
    began, primary_since = _claim_history(observations, now)
    out = []
    for (iface, mac), claims in sorted(by_neigh.items()):
        own = claims.get(mac)
        is_primary = own is not None and own.ttl > SECONDARY_TTL
        since = primary_since.get(mac) if is_primary else None
        others = sorted(o for o, c in claims.items()
                        if o != mac and (since is None or c.at >= since) and not _replaced(mac, o, claims, began))
        allowed = 0 if is_primary else 1
        if len(others) <= allowed:
            continue
        out.append(_finding(
            "ogm_full_claim", now, mac, macs=(mac,), interface=iface,
            originator=others[0] if allowed == 0 and len(others) == 1 else None,
            evidence={"claims": [{"orig": o, "tq": claims[o].tq, "ttl": claims[o].ttl,
                                  "ago": round(now - claims[o].at, 3)} for o in others[:8]],
                      "originators": len(others), "allowed": allowed,
                      "own_ttl": own.ttl if own is not None else None, "hop_penalty": hp,
                      "fresh": s.forward_fresh},
        ))
    return out


def gateway_bandwidth(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """Gateways announcing more than ``gateway_max_bandwidth``, or more than ``gateway_ratio``
    times the median of the other gateways (when there are at least two others)."""
    cur = _current(observations, now)
    if cur is None:
        return []
    limit = s.gateway_max_bandwidth * 1000  # Mbit/s -> kbit/s
    best = {_norm(g.orig): max(g.bandwidth_down or 0, g.bandwidth_up or 0) for g in cur.gateways}
    out = []
    for g in cur.gateways:
        orig = _norm(g.orig)
        claim = best[orig]
        others = [v for o, v in best.items() if o != orig and v > 0]
        median = statistics.median(others) if len(others) >= 2 else None
        too_much = claim > limit
        outlier = median is not None and claim > s.gateway_ratio * median
        if not (too_much or outlier):
            continue
        out.append(_finding(
            "gateway_bandwidth", now, orig, originator=orig, macs=(_norm(g.router),),
            evidence={"bandwidth_down_kbit": g.bandwidth_down, "bandwidth_up_kbit": g.bandwidth_up,
                      "max_kbit": limit, "median_of_others_kbit": median, "ratio": s.gateway_ratio},
        ))
    return out


def _flow_growth(
    observations: Sequence[Observation], s: DetectSettings, now: float
) -> tuple[dict[str, dict[tuple[str, int, int], int]], float]:
    """Ingress packets per source and destination (dst, proto, dport) within the window, and the
    seconds it spans."""
    cur, base = _current(observations, now), _base(observations, s, now)
    if cur is None:
        return {}, 0.0

    def ident(f: Flow) -> tuple[Any, ...]:
        return (f.interface, f.src, f.dst, f.proto, f.sport, f.dport)

    before = {ident(f): f for f in base.flows} if base else {}
    start = base.at if base else now - s.window
    grown: dict[str, dict[tuple[str, int, int], int]] = defaultdict(lambda: defaultdict(int))
    for f in cur.flows:
        if f.direction != "ingress":
            continue
        old = before.get(ident(f))
        fresh = old is None and f.first_seen >= start
        if old is None and not fresh:
            continue  # older than the window and not in its base: its count is not the window's
        packets = _grown(f.packets, old.packets if old and old.first_seen == f.first_seen else None)
        if packets > 0:
            grown[f.src][(f.dst, f.proto, f.dport)] += packets
    return grown, max(now - start, 1e-3)


def flow_scan(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """One source reaching ``scan_destinations`` or more distinct (destination, protocol, port)
    within the window."""
    grown, _ = _flow_growth(observations, s, now)
    out = []
    for src, dests in sorted(grown.items()):
        if len(dests) < s.scan_destinations:
            continue
        ports = {d[2] for d in dests}
        hosts = {d[0] for d in dests}
        out.append(_finding(
            "flow_scan", now, src,
            evidence={"src": src, "destinations": len(dests), "hosts": len(hosts), "ports": len(ports),
                      "limit": s.scan_destinations, "window": s.window, "sample": sorted(map(list, dests))[:10]},
        ))
    return out


def flow_flood(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """One source sending this node more than ``flood_pps`` packets per second over the window."""
    grown, span = _flow_growth(observations, s, now)
    out = []
    for src, dests in sorted(grown.items()):
        packets = sum(dests.values())
        pps = packets / span
        if pps <= s.flood_pps:
            continue
        top = max(dests.items(), key=lambda kv: (kv[1], kv[0]))
        out.append(_finding(
            "flow_flood", now, src,
            evidence={"src": src, "packets": packets, "seconds": round(span, 3), "pps": round(pps, 1),
                      "limit_pps": s.flood_pps, "flows": len(dests), "top": [*top[0], top[1]]},
        ))
    return out


def _densest(times: Sequence[float], span: float) -> int:
    """The most of the sorted ``times`` that fall within any ``span`` of each other."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > span:
            first += 1
        best = max(best, last - first + 1)
    return best


def handshake_burst(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """``handshake_failures`` or more failed handshakes from one host within the window, or
    ``handshake_burst_failures`` that it made on this node (this node the TLS server) within
    ``handshake_burst_span``: a pace no honest redial keeps, seen before the window's count fills.
    Only failures the other side caused count (:attr:`Handshake.refused`)."""
    fails: dict[str, list[Handshake]] = defaultdict(list)
    for h in _handshakes(observations, s, now):
        if h.refused:
            fails[_host(h.address)].append(h)
    out = []
    for host, hs in sorted(fails.items()):
        on_me = _densest([h.at for h in hs if h.role == "server"], s.handshake_burst_span)
        fast = 0 < s.handshake_burst_failures <= on_me
        if len(hs) < s.handshake_failures and not fast:
            continue
        raw = mac_from_link_local(host)
        claimed = sorted({h.spiffe_id for h in hs if h.spiffe_id})
        out.append(_finding(
            "handshake_burst", now, host, macs=(raw.hex(":"),) if raw else (),
            spiffe_id=claimed[0] if len(claimed) == 1 else None,
            evidence={"address": host, "failures": len(hs), "limit": s.handshake_failures, "window": s.window,
                      "densest": on_me, "burst_limit": s.handshake_burst_failures, "burst_span": s.handshake_burst_span,
                      "reasons": dict(Counter(h.reason for h in hs).most_common()), "claimed_ids": claimed[:5]},
        ))
    return out


DETECTORS: dict[str, Callable[[Sequence[Observation], DetectSettings, float], list[Finding]]] = {
    "unadmitted_frames": unadmitted_frames,
    "mac_on_two_links": mac_on_two_links,
    "mac_two_identities": mac_two_identities,
    "originator_flood": originator_flood,
    "seqno_takeover": seqno_takeover,
    "inflated_link_metric": inflated_link_metric,
    "ogm_full_claim": ogm_full_claim,
    "gateway_bandwidth": gateway_bandwidth,
    "flow_scan": flow_scan,
    "flow_flood": flow_flood,
    "handshake_burst": handshake_burst,
}


def detect(observations: Sequence[Observation], s: DetectSettings, now: float) -> list[Finding]:
    """Every detector over the same observations; findings in the order of the detectors."""
    return [f for fn in DETECTORS.values() for f in fn(observations, s, now)]


def fresh(
    findings: Sequence[Finding], reported: Mapping[tuple[int, str], float], hold: float, now: float
) -> tuple[list[Finding], dict[tuple[int, str], float]]:
    """The findings to report now - those whose key was not reported within ``hold`` seconds - and
    the new report times (keys older than ``hold`` are forgotten), so a threat that lasts is one
    record per hold-down, not one per look."""
    kept = {k: t for k, t in reported.items() if now - t < hold}
    out = []
    for f in findings:
        if f.key not in kept:
            kept[f.key] = now
            out.append(f)
    return out, kept
