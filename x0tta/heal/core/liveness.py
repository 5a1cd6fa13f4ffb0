"""Fast liveness probes between neighbouring agents: wire format and loss accounting (sans-IO).

Why: batman-adv notices a link that stopped carrying traffic only after several originator
messages are lost (5.4 s in a triangle with the default 1 s OGM interval). Agents on both ends of
a link exchange a small UDP datagram every ``probe_interval`` (100 ms) on the hard interface's
IPv6 link-local address (to ``ff02::1``), and each side counts what went missing - in both
directions, because every probe also carries what its sender heard from each peer.

Wire format, version 1 (network byte order)::

    0      4   5     6        8       12             18      20               28  29
    | X0LP | 1 | flg | 0 (16) | seq   | sender MAC   | 0(16) | sent (ns, u64)   | n | n acks ... | tag? |

    ack = peer MAC (6) | last seq heard (u32) | echo: that probe's ``sent`` (u64) |
          held: ns between hearing it and sending this (u32) | loss of that peer's probes, permille (u16)

``sent`` is the sender's own monotonic clock; only the sender reads it back (in an ack echo), so
the two clocks never need to agree: RTT = now - echo - held.

Authentication, two ways:

* **Session keys** (version 2, flag bit 2): once the node has an identity, each PQ mTLS session with
  a neighbour yields a secret both ends hold (:mod:`~x0tta.heal.core.linkkeys`). After the acks
  comes a count (u8) and one entry per session the sender holds on that link: key id (4) | tag
  (12, HMAC-SHA256 over everything before the entries, the count included). The receiver verifies
  the entry whose key id is one of its own sessions' on that interface.
* **A shared key** (version 1, flag bit 0; ``[heal] probe_key_file``): the datagram ends with a
  16-byte HMAC-SHA256 tag over everything before it. For a mesh without node identities.

A receiver that takes its keys from sessions refuses every probe that does not verify under one of
them; one with a shared key refuses untagged or badly tagged probes. Without either, a forged probe
can only fake or hide loss on one link - the loop then steers traffic, never admits anyone. The
tracker also refuses a probe it has already counted, or one older than its window (a replay): a
probe is counted once.

Loss per (hard interface, peer), as :class:`~x0tta.heal.core.model.ProbeStats`:

* ``lost_run`` - probes missed in a row, the larger of: the receive side (time since the last
  probe heard, in intervals) and the send side (my probes the peer has not acknowledged);
* ``loss`` - the larger of: my receive loss over the last ``window`` expected probes, and the
  loss the peer reports for my probes.

Kernel echo: a late agent is not a dead link. A peer whose agent is starved of CPU (or stopped)
sends no probes, yet its kernel still answers an ICMPv6 echo on that link, as BFD's echo function
relies on. When a peer's probe is overdue (:meth:`Tracker.overdue`) the adapter sends it an echo
request and reports it (:meth:`Tracker.echo_sent`); a reply (:meth:`Tracker.echo_reply`) counts as
hearing the peer, so receive-side silence is measured from the later of its last probe and its
last echo reply. An unanswered request holds the verdict for half an interval from when it was
sent (silence is judged as of that moment meanwhile), so a verdict never comes before the
echo had time to return: a dead link is confirmed at most half an interval later. Without echo
(no raw socket), loss is counted from probes alone.

Other traffic: frames other than probes that keep arriving well after a peer was last heard mean
the link carries traffic and only the peer's prober went quiet, so its receive-side silence is not
counted (:meth:`Tracker.stats`, ``link_rx``) - until those frames too have stopped for
:data:`TRAFFIC_HOLD`; from then the silence since the last of them counts. The adapter reports them
per peer where it can (the eBPF counters of batman-adv frames from that neighbour's MAC), else per
interface (its receive counter, where any neighbour's frames count - on a radio with several, one
hides another).

Carrier: probes lost while a hard interface's link is down are not silent loss (link down is its
own symptom). When the carrier comes back up (:meth:`Tracker.link`), the accounting on that
interface starts over: its peers are forgotten and relearned from their next probe, my probes sent
before are no longer awaited, and acknowledgements of those older probes (from a peer that has not
restarted its own accounting yet) are ignored.
"""

from __future__ import annotations

import functools
import struct
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from x0tta.common.errors import DecodeError
from x0tta.heal.core.linkkeys import (
    ENTRY_LEN,
    MAX_PER_LINK,
    SHARED_TAG_LEN,
    LinkKeys,
    LinkTagError,
    authenticate,
    shared_tag,
    tag_entries,
)
from x0tta.heal.core.model import ProbeStats

MAGIC = b"X0LP"
VERSION = 1  # unkeyed, or tagged with a shared key
VERSION_SESSION = 2  # tagged per session
FLAG_AUTH = 0x01
FLAG_BYE = 0x02  # the sender's agent is stopping: forget it, its silence is not loss
FLAG_SESSION = 0x04
TAG_LEN = SHARED_TAG_LEN
MAX_ACKS = 32
_HEAD = struct.Struct("!4sBBHI6sHQB")
_ACK = struct.Struct("!6sIQIH")
# A peer's probe later than this many intervals is overdue: its kernel is asked (an echo).
OVERDUE = 1.1
# s: how long the frames that showed a quiet peer's link alive may pause before its silence counts
# again: two of batman-adv's default 1 s OGM intervals, so one lost OGM is no dead link.
TRAFFIC_HOLD = 2.0
# When frames other than probes last arrived: per (hard interface, peer), or per hard interface.
RxTimes = Mapping[str | tuple[str, str], float]
# Why a probe was refused (``ProbeDecodeError.reason``, the tracker's ``rejects``).
REASONS = ("malformed", "unauthenticated", "not_for_us", "bad_tag", "wrong_sender", "replayed")


class ProbeDecodeError(DecodeError):
    """A datagram that is not a valid liveness probe (or fails its authentication); ``reason`` is
    one of :data:`REASONS`."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@functools.lru_cache(maxsize=1024)  # a link has a handful of MACs; each probe carries them again
def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@functools.lru_cache(maxsize=1024)
def _mac_str(raw: bytes) -> str:
    return raw.hex(":")


@dataclass(frozen=True, slots=True)
class Ack:
    peer: str
    seq: int
    echo: int  # ns, the peer's own clock
    held: int  # ns
    loss_permille: int


@dataclass(frozen=True, slots=True)
class Probe:
    seq: int
    sender: str
    sent: int  # ns, sender's monotonic clock
    acks: tuple[Ack, ...] = ()
    bye: bool = False
    kid: bytes | None = None  # decoded: the key id of the session tag that verified it


def encode(p: Probe, key: bytes | None = None, link_keys: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """``link_keys``: (key id, key) of every session on this link (version 2, a tag for each);
    else ``key``: a shared key (version 1, one tag); else untagged."""
    acks = p.acks[:MAX_ACKS]
    entries = list(link_keys[:MAX_PER_LINK])
    version = VERSION_SESSION if entries else VERSION
    flags = (FLAG_SESSION if entries else FLAG_AUTH if key else 0) | (FLAG_BYE if p.bye else 0)
    out = bytearray(
        _HEAD.pack(MAGIC, version, flags, 0, p.seq & 0xFFFFFFFF, _mac_bytes(p.sender), 0,
                   p.sent & 0xFFFFFFFFFFFFFFFF, len(acks))
    )
    for a in acks:
        out += _ACK.pack(_mac_bytes(a.peer), a.seq & 0xFFFFFFFF, a.echo & 0xFFFFFFFFFFFFFFFF,
                         min(a.held, 0xFFFFFFFF), min(a.loss_permille, 1000))
    if entries:
        out.append(len(entries))
        out += tag_entries(bytes(out), entries)
    elif key:
        out += shared_tag(key, bytes(out))
    return bytes(out)


def decode(data: bytes, key: bytes | None = None, lookup: Callable[[bytes], bytes | None] | None = None) -> Probe:
    """Parse one datagram; raises :class:`ProbeDecodeError` and nothing else on bad input.

    ``lookup`` (key id -> key, None if unknown): this node takes its keys from sessions, and the
    probe must carry an entry that verifies under one of them. Else ``key``: a shared key the
    probe must be tagged with. Else anything well-formed is taken (session tags unchecked)."""
    if len(data) < _HEAD.size:
        raise ProbeDecodeError(f"probe too short ({len(data)} bytes)")
    magic, version, flags, _r, seq, sender, _p, sent, n = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ProbeDecodeError("not a liveness probe")
    if version not in (VERSION, VERSION_SESSION):
        raise ProbeDecodeError(f"probe version {version} not understood")
    end = _HEAD.size + n * _ACK.size
    session = version == VERSION_SESSION
    count = 0
    if session:
        if not flags & FLAG_SESSION or flags & FLAG_AUTH or len(data) <= end:
            raise ProbeDecodeError("version 2 probe without session tags")
        count = data[end]
        if count == 0 or len(data) != end + 1 + count * ENTRY_LEN:
            raise ProbeDecodeError(f"probe length {len(data)} does not match {n} acks and {count} tags")
    elif flags & FLAG_SESSION or len(data) != end + (TAG_LEN if flags & FLAG_AUTH else 0):
        raise ProbeDecodeError(f"probe length {len(data)} does not match {n} acks")
    try:
        kid = authenticate(data, end, session=session, count=count, key=key, lookup=lookup)
    except LinkTagError as exc:
        raise ProbeDecodeError(f"probe {exc}", exc.reason) from None
    acks = []
    for i in range(n):
        peer, aseq, echo, held, loss = _ACK.unpack_from(data, _HEAD.size + i * _ACK.size)
        acks.append(Ack(_mac_str(peer), aseq, echo, held, min(loss, 1000)))
    return Probe(seq=seq, sender=_mac_str(sender), sent=sent, acks=tuple(acks), bye=bool(flags & FLAG_BYE), kid=kid)


@dataclass
class _Peer:
    first_seq: int
    high_seq: int
    high_sent: int  # the peer's clock value in its newest probe (echoed back)
    last_rx: float
    last_rx_ns: int
    got: int = 1  # bit i set: probe high_seq - i was heard (the last ``window`` of them)
    acked: int | None = None  # my newest seq the peer heard
    tx_loss: float = 0.0  # loss of my probes, as the peer reports
    tx_run: int = 0  # my probes in a row the peer has not heard (as of its last probe)
    tx_since: float | None = None  # when the oldest of those was sent
    rtt_ms: float | None = None


class Tracker:
    """Per hard interface: my sequence numbers, and what each peer sent and heard.

    ``now`` is seconds, ``now_ns`` the same clock in ns (the adapter passes its monotonic clock).
    """

    def __init__(self, interval: float, window: int, expiry: float, key: bytes | None = None,
                 link_keys: LinkKeys | None = None) -> None:
        self.interval = interval
        self.window = window
        self.expiry = expiry
        self.key = key
        self.link_keys = link_keys  # keys from sessions; in force once ``link_keys.required``
        self.seq: dict[str, int] = {}  # hardif -> my last seq sent there
        self.sent_at: dict[str, dict[int, float]] = {}  # hardif -> my recent seqs -> when sent
        self.peers: dict[tuple[str, str], _Peer] = {}
        self.rejected = 0
        self.rejects: Counter[str] = Counter()  # reason (REASONS) -> probes refused
        self.last_tick: float | None = None
        self.grace_until = 0.0
        self.stalls = 0
        self.holds = 0  # rounds held because probes were dropped unread (see hold)
        self.carrier: dict[str, bool] = {}  # hardif -> carrier as last told
        self.restart_seq: dict[str, int] = {}  # hardif -> my last seq there before its carrier came back
        self.echo_rx: dict[tuple[str, str], float] = {}  # (hardif, peer) -> last echo reply
        self.echo_req: dict[tuple[str, str], float] = {}  # (hardif, peer) -> first unanswered echo request
        # (hardif, peer) -> when the last answered echo request was sent: the link carried a round
        # trip at that moment, both ways
        self.echo_ok: dict[tuple[str, str], float] = {}
        self.echoes_answered = 0

    def _alive_at(self, key: tuple[str, str], p: _Peer) -> float:
        """When the peer was last heard on that link: a probe, or its kernel's echo reply."""
        return max(p.last_rx, self.echo_rx.get(key, 0.0))

    def _as_of(self, key: tuple[str, str], heard: float, now: float) -> float:
        """The time to judge the peer's silence at: while an echo request sent after the peer was
        last heard is younger than half an interval, the moment the peer became overdue (its
        kernel's reply may be on the way, and a late probe is not a lost one until the kernel
        failed to answer too: no run of loss counts yet); otherwise now."""
        req = self.echo_req.get(key)
        if req is not None and heard < req and now - req < self.interval / 2:
            return min(req, heard + OVERDUE * self.interval)
        return now

    def overdue(self, now: float) -> list[tuple[str, str]]:
        """(hard interface, peer) whose probe is late by more than a tenth of an interval, or that
        has not acknowledged my latest probes: ask the peer's kernel whether the link still carries
        traffic (a starved agent over there neither sends nor reads on time; its kernel does)."""
        late = OVERDUE * self.interval
        return [k for k, p in self.peers.items()
                if now - max(p.last_rx, self.echo_rx.get(k, 0.0)) > late or self._tx_run(k, p)]

    def _tx_run(self, key: tuple[str, str], p: _Peer) -> int:
        """My probes the peer has not acknowledged, unless its kernel answered an echo sent after
        the oldest of them: then the link carried a round trip since, and it is the agent over
        there that has not read them yet (late, not lost)."""
        if p.tx_run and p.tx_since is not None and self.echo_ok.get(key, float("-inf")) >= p.tx_since:
            return 0
        return p.tx_run

    def echo_sent(self, hardif: str, peer: str, now: float) -> None:
        key = (hardif, peer)
        p = self.peers.get(key)
        if p is None:
            return
        heard = max(p.last_rx, self.echo_rx.get(key, 0.0))
        if self.echo_req.get(key, 0.0) <= heard:  # the first request since the peer was last heard
            self.echo_req[key] = now

    def echo_reply(self, hardif: str, peer: str, now: float) -> None:
        key = (hardif, peer)
        if key not in self.peers:
            return
        self.echoes_answered += 1
        self.echo_rx[key] = now
        req = self.echo_req.pop(key, None)
        if req is not None:
            self.echo_ok[key] = req

    def link(self, hardif: str, up: bool) -> bool:
        """The carrier of ``hardif`` as the caller sees it now. On a down -> up transition the loss
        accounting on it restarts (a link that just came up starts with a clean window); returns
        whether it did."""
        was = self.carrier.get(hardif)
        self.carrier[hardif] = up
        if not up or was is not False:
            return False
        self.start_over(hardif)
        return True

    def start_over(self, hardif: str | None = None) -> None:
        """Restart the accounting on ``hardif`` (None: every interface): its peers are forgotten and
        relearned from their next probe, and acknowledgements of my probes sent before are ignored.
        For a carrier that came back, and when probes switch to session keys (what was learnt from
        unauthenticated probes is not evidence about the link)."""
        names = {k[0] for k in self.peers} | set(self.seq) if hardif is None else {hardif}
        for key in [k for k in self.peers if k[0] in names]:
            self._forget(key)
        for name in names:
            self.sent_at.pop(name, None)
            self.restart_seq[name] = self.seq.get(name, 0)

    def tick(self, now: float) -> None:
        """Called once per probe round. A round much later than planned means this process did
        not run (CPU starvation, a paused VM): what looks lost meanwhile is our own silence, so
        loss is not counted until peers have had two intervals to be heard again."""
        if self.link_keys is not None:
            self.link_keys.expire(now)
        if self.last_tick is not None and now - self.last_tick > 2.5 * self.interval:
            self.grace_until = now + 2 * self.interval
            self.stalls += 1
        self.last_tick = now

    def hold(self, now: float) -> None:
        """Probes were dropped before this agent could read them (its socket overran in a flood):
        what looks lost is not the link's doing, so loss is held as after a stall (:meth:`tick`)."""
        self.grace_until = max(self.grace_until, now + 2 * self.interval)
        self.holds += 1

    def next_probe(self, hardif: str, mac: str, now: float, now_ns: int) -> bytes:
        seq = self.seq.get(hardif, 0) + 1
        self.seq[hardif] = seq
        sent = self.sent_at.setdefault(hardif, {})
        sent[seq] = now
        if len(sent) > 4 * self.window:
            for old in [q for q in sent if q <= seq - 2 * self.window]:
                del sent[old]
        acks = []
        mine = sorted(((k, p) for k, p in self.peers.items() if k[0] == hardif), key=lambda kp: -kp[1].last_rx)
        stalled = now < self.grace_until  # we did not run: probes may wait unread, not lost
        for (_h, peer), p in mine[:MAX_ACKS]:
            alive_at = self._alive_at((_h, peer), p)
            # while this agent catches up after a stall, the loss it reports counts the gaps
            # between probes heard, not the silence since: that silence was our own
            acks.append(Ack(peer, p.high_seq, p.high_sent, max(0, now_ns - p.last_rx_ns),
                            round(1000 * self._rx_loss(p, alive_at if stalled else now, alive_at))))
        return encode(Probe(seq=seq, sender=mac, sent=now_ns, acks=tuple(acks)), self.key, self._signing(hardif))

    def _sessions(self) -> LinkKeys | None:
        return self.link_keys if self.link_keys is not None and self.link_keys.required else None

    def _signing(self, hardif: str) -> list[tuple[bytes, bytes]]:
        ring = self._sessions()
        return ring.signing(hardif) if ring is not None else []

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.rejects[reason] += 1

    def receive(self, hardif: str, my_mac: str, data: bytes, now: float, now_ns: int) -> Probe | None:
        ring = self._sessions()

        def lookup(kid: bytes) -> bytes | None:
            assert ring is not None
            k = ring.find(hardif, kid, now)
            return k.key if k is not None else None

        try:
            probe = decode(data, self.key if ring is None else None, lookup if ring is not None else None)
        except ProbeDecodeError as exc:
            self._reject(exc.reason)
            return None
        if probe.sender == my_mac:
            return None  # our own multicast looped back
        if ring is not None and probe.kid is not None:
            k = ring.find(hardif, probe.kid, now)
            assert k is not None
            if k.pinned is None:
                k.pinned = probe.sender
            elif k.pinned != probe.sender:  # a neighbour speaking for another under its own key
                self._reject("wrong_sender")
                return None
        key = (hardif, probe.sender)
        p = self.peers.get(key)
        restarted = p is not None and probe.seq < p.high_seq and probe.sent > p.high_sent
        if p is not None and not restarted and probe.seq <= p.high_seq:
            back = p.high_seq - probe.seq
            # counted already, older than the window, or a goodbye older than a probe heard since
            # (a genuine one is its sender's last): a replay
            if back >= self.window or (p.got >> back) & 1 or probe.bye:
                self._reject("replayed")
                return None
        if probe.bye:
            self._forget(key)
            return probe
        if p is None or restarted:  # new peer, or it restarted
            p = _Peer(first_seq=probe.seq, high_seq=probe.seq, high_sent=probe.sent, last_rx=now, last_rx_ns=now_ns)
            self.peers[key] = p
        if probe.seq >= p.high_seq:
            p.got = ((p.got << (probe.seq - p.high_seq)) | 1) & ((1 << self.window) - 1)
            p.high_seq, p.high_sent, p.last_rx, p.last_rx_ns = probe.seq, probe.sent, now, now_ns
        elif p.high_seq - probe.seq < self.window:  # late, out of order
            p.got |= 1 << (p.high_seq - probe.seq)
        before = self.restart_seq.get(hardif)
        for a in probe.acks:
            if a.peer != my_mac or (before is not None and a.seq <= before):
                continue  # not about me, or about my probes from before the carrier came back: stale
            p.acked = a.seq
            # a peer that has not restarted its own accounting yet counts my probes from before in
            # its loss figure: take it once my probes since the restart fill its window
            fresh = before is None or a.seq > before + self.window
            p.tx_loss = a.loss_permille / 1000.0 if fresh else 0.0
            if a.echo:
                rtt = (now_ns - a.echo - a.held) / 1e6
                if 0 <= rtt < 60_000:
                    p.rtt_ms = rtt
            # my probes after the acked one that the peer should have heard by the time it
            # sent this one (sent more than an RTT and half an interval ago): lost on the way
            slack = (p.rtt_ms or 0.0) / 1000.0 + self.interval / 2
            sent = self.sent_at.get(hardif, {})
            due, mine = now - slack, self.seq.get(hardif, 0)
            unacked = [sent[q] for q in range(max(a.seq + 1, mine - 4 * self.window), mine + 1)
                       if sent.get(q, due + 1) <= due]
            p.tx_run, p.tx_since = len(unacked), min(unacked, default=None)
        return probe

    def bye(self, hardif: str, mac: str, now_ns: int) -> bytes:
        """The last probe of a stopping agent: peers forget it instead of counting loss."""
        seq = self.seq.get(hardif, 0) + 1
        self.seq[hardif] = seq
        return encode(Probe(seq=seq, sender=mac, sent=now_ns, bye=True), self.key, self._signing(hardif))

    def _forget(self, key: tuple[str, str]) -> None:
        self.peers.pop(key, None)
        self.echo_rx.pop(key, None)
        self.echo_req.pop(key, None)
        self.echo_ok.pop(key, None)

    def _rx_run(self, p: _Peer, now: float, alive_at: float | None = None) -> int:
        return max(0, int((now - (p.last_rx if alive_at is None else alive_at)) / self.interval - 0.5))

    def _rx_window(self, p: _Peer, now: float, alive_at: float | None = None) -> tuple[int, int, int]:
        """(probes expected within the window, those of them up to the last one heard, those heard),
        counted only since the peer was learned (a peer learned lately has a short history, not a
        lossy one)."""
        expected_hi = p.high_seq + self._rx_run(p, now, alive_at)
        lo = max(p.first_seq, expected_hi - self.window + 1)
        span = max(0, p.high_seq - lo + 1)
        # every probe heard is <= high_seq <= expected_hi; those >= lo are the low bits of ``got``
        return expected_hi - lo + 1, span, (p.got & ((1 << span) - 1)).bit_count()

    def _rx_loss(self, p: _Peer, now: float, alive_at: float | None = None) -> float:
        expected, _span, got = self._rx_window(p, now, alive_at)
        return max(0.0, 1.0 - got / expected) if expected > 0 else 0.0

    def _rx_holes(self, p: _Peer, now: float, alive_at: float | None = None) -> int:
        """Probes missing within the window before the last one heard: losses scattered before the
        current run of lost ones (which comes after it)."""
        _expected, span, got = self._rx_window(p, now, alive_at)
        return span - got

    def _silent_run(self, key: tuple[str, str], p: _Peer, alive_at: float, now: float,
                    link_rx: RxTimes | None) -> int:
        """Receive-side run of lost probes. Frames other than probes that arrived well after the
        peer was last heard - from that peer (``link_rx[(hardif, peer)]``) when that figure is
        given, else from anyone on its interface (``link_rx[hardif]``) - mean the link carries
        traffic and only the prober over there went quiet: its silence counts again only once
        those frames too have stopped for :data:`TRAFFIC_HOLD`, and from the last of them. Well
        after: frames already on the wire when the link died (a ping reply, an OGM) arrive within
        an interval or so, and must not hide the loss. Another neighbour's frames on the same
        interface say nothing about this one: a peer's own figure is the only one asked."""
        as_of = self._as_of(key, alive_at, now)
        other = link_rx.get(key, link_rx.get(key[0])) if link_rx else None
        if other is not None and other > alive_at + 2.5 * self.interval:
            return self._rx_run(p, as_of - TRAFFIC_HOLD, other)
        return self._rx_run(p, as_of, alive_at)

    def worst_run(self, now: float, link_rx: RxTimes | None = None) -> int:
        """The longest run of lost probes over all peers, as :meth:`stats` reports it: asked after
        every round, so it builds nothing."""
        if now < self.grace_until:
            return 0
        worst = 0
        for key, p in self.peers.items():
            rx_run = self._silent_run(key, p, self._alive_at(key, p), now, link_rx)
            worst = max(worst, rx_run, self._tx_run(key, p))
        return worst

    def stats(
        self, now: float, link_rx: RxTimes | None = None, carrier: Mapping[str, bool] | None = None
    ) -> tuple[ProbeStats, ...]:
        """Loss per peer. ``link_rx`` (when a frame other than a probe last arrived: keyed by
        (hard interface, peer) for frames from that peer - the eBPF per-neighbour counters - or
        by hard interface for frames from anyone on it - the interface counter): frames still
        arriving after the last probe mean the link carries traffic and it is the prober on the
        other side that went quiet (its agent stopped, or stalls), so receive-side silence is not
        counted as loss while they arrive (see :meth:`_silent_run`). A peer's own figure, when
        given, wins over its interface's. ``carrier`` (hard interface -> carrier up), when given,
        goes to :meth:`link` first."""
        for hardif, up in (carrier or {}).items():
            self.link(hardif, up)
        ring = self._sessions()
        keyed = {h: ring.senders(h, now) for h in {k[0] for k in self.peers}} if ring is not None else {}
        out = []
        for key, p in list(self.peers.items()):
            if now - p.last_rx > self.expiry or (ring is not None and not keyed[key[0]] & {key[1], None}):
                # expired; or no session with that peer on that link any more (closed, its grace
                # over): its silence says nothing about the link, and the loop must not act on it
                self._forget(key)
                continue
            alive_at = self._alive_at(key, p)
            rx_run = self._silent_run(key, p, alive_at, now, link_rx)
            tx_run = self._tx_run(key, p)
            if now < self.grace_until:  # we were not running: nothing to conclude yet
                rx_run = tx_run = 0
            rx_loss = self._rx_loss(p, now, alive_at)
            out.append(
                ProbeStats(
                    hardif=key[0],
                    peer=key[1],
                    window=self.window,
                    received=p.got.bit_count(),
                    loss=max(rx_loss, p.tx_loss),
                    lost_run=max(rx_run, tx_run),
                    rtt_ms=p.rtt_ms,
                    last_rx=alive_at,
                    scattered=self._rx_holes(p, now, alive_at),
                )
            )
        return tuple(out)
