"""The map layouts decode to what the eBPF programs wrote, and the export choices are bounded."""

from __future__ import annotations

import struct

import pytest

from x0tta.probes import core

V4 = core.FlowKey(7, "egress", 4, 1, "10.0.0.1", "10.0.0.2", 0, 0)
V6 = core.FlowKey(3, "ingress", 6, 6, "fe80::1", "fe80::2", 40000, 5201)


@pytest.mark.parametrize("key", [V4, V6])
def test_flow_key_round_trip(key):
    raw = core.encode_flow_key(key)
    assert len(raw) == core.FLOW_KEY.size == 44
    assert core.decode_flow_key(raw) == key


def test_ports_are_network_order_as_in_the_packet():
    raw = core.encode_flow_key(V6)
    assert raw[8:12] == struct.pack(">HH", 40000, 5201)


def test_flow_value_and_neighbor_entries():
    assert core.decode_flow_value(struct.pack("<5Q", 5, 490, 280, 1, 2)) == core.FlowStats(5, 490, 280, 1, 2)
    # one value per CPU: counters summed, the earliest first-seen of a CPU that saw it, the latest last-seen
    three = struct.pack("<15Q", 5, 490, 280, 10, 20, 0, 0, 0, 0, 0, 2, 100, 60, 7, 30)
    assert core.decode_flow_value(three, 3) == core.FlowStats(7, 590, 340, 7, 30)
    with pytest.raises(core.ProbeDecodeError):
        core.decode_flow_value(struct.pack("<5Q", 1, 2, 3, 4, 5), 2)
    key = core.NeighborKey(4, "02:00:00:00:00:0a")
    assert core.decode_neighbor_key(core.encode_neighbor_key(key)) == key
    value = core.decode_neighbor_value(struct.pack("<8Q", *range(8)))
    assert value.denied_packets == 4 and value.last_rx_ns == 6


@pytest.mark.parametrize(
    ("decoder", "data"),
    [
        (core.decode_flow_key, b"\0" * 43),
        (core.decode_flow_key, core.encode_flow_key(V4)[:5] + b"\x05" + core.encode_flow_key(V4)[6:]),
        (core.decode_flow_key, b"\0\0\0\0\x02\x04" + b"\0" * 38),
        (core.decode_flow_value, b"\0" * 41),
        (core.decode_neighbor_key, b""),
        (core.decode_neighbor_value, b"\0" * 63),
    ],
)
def test_bad_entries_raise_decode_error(decoder, data):
    with pytest.raises(core.ProbeDecodeError):
        decoder(data)


def test_percpu_sum_and_admitted():
    assert core.decode_percpu_u64(struct.pack("<3Q", 1, 2, 3), 3) == 6
    with pytest.raises(core.ProbeDecodeError):
        core.decode_percpu_u64(b"\0" * 8, 2)
    assert core.decode_admitted(b"\x02" * 6, struct.pack("<I", 2)) == (b"\x02" * 6, 2)


def test_decode_entries_counts_bad_ones():
    good = (core.encode_flow_key(V4), struct.pack("<5Q", 1, 2, 3, 4, 5))
    flows, bad = core.decode_entries([good, (b"x", b"y")], core.decode_flow_key, core.decode_flow_value)
    assert list(flows) == [V4] and bad == 1


def _stats(b, last=0):
    return core.FlowStats(1, b, b, 0, last)


def test_top_flows_by_bytes_with_overflow_count():
    flows = {core.FlowKey(1, "egress", 4, 6, f"10.0.0.{i}", "10.0.0.99", i, 80): _stats(i * 10) for i in range(1, 8)}
    top, left = core.top_flows(flows, 3)
    assert [v.bytes for _, v in top] == [70, 60, 50] and left == 4
    assert core.top_flows(flows, 0) == ([], 7)


def test_bounded_neighbors_prefers_recent_and_neighbors_seen_skips_broadcast():
    def n(last):
        return core.NeighborStats(1, 100, 0, 0, 0, 1, last, 0)

    neigh = {
        core.NeighborKey(2, "02:00:00:00:00:01"): n(5_000_000_000),
        core.NeighborKey(2, "02:00:00:00:00:02"): n(9_000_000_000),
        core.NeighborKey(2, "ff:ff:ff:ff:ff:ff"): core.NeighborStats(0, 0, 3, 300, 0, 1, 0, 8_000_000_000),
    }
    kept, left = core.bounded_neighbors(neigh, 2)
    assert [k.mac for k, _ in kept] == ["02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"] and left == 1
    snap = core.Snapshot(10_000_000_000, {}, neigh, {})
    seen = core.neighbors_seen(snap)
    assert [(s.mac, s.age) for s in seen] == [("02:00:00:00:00:01", 5.0), ("02:00:00:00:00:02", 1.0)]
    assert seen[0].last_rx == 5.0


MOUNTS = """sysfs /sys sysfs rw 0 0
bpf /sys/fs/bpf bpf rw,mode=700 0 0
/dev/root / ext4 rw 0 0
tmpfs /tmp/a\\040b tmpfs rw 0 0
"""


def test_mount_fstype_picks_the_deepest_mount():
    assert core.mount_fstype(MOUNTS, "/sys/fs/bpf/x0tta") == "bpf"
    assert core.mount_fstype(MOUNTS, "/sys/fs") == "sysfs"
    assert core.mount_fstype(MOUNTS, "/sys/fs/bpfx") == "sysfs"
    assert core.mount_fstype(MOUNTS, "/tmp/a b/c") == "tmpfs"  # noqa: S108 - a path looked up, no file
    assert core.mount_fstype(MOUNTS, "/var") == "ext4"


def test_probe_targets():
    present = {"bat0", "eth1", "eth0", "lo"}
    assert core.probe_targets((), "bat0", ["eth1", "eth0"], present) == ["bat0", "eth0", "eth1"]
    assert core.probe_targets((), "bat1", [], present) == []
    assert core.probe_targets(("eth0", "wlan0", "eth0"), "bat0", [], present) == ["eth0"]
