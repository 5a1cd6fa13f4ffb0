"""The probes' metrics stay within the label budget however many flows and neighbours the maps hold."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from x0tta.config.probes import ProbeSettings
from x0tta.config.schema import AgentSettings, MetricsSettings
from x0tta.probes import core
from x0tta.probes.service import PollResult, ProbesService, _Collector


def snapshot(n_flows: int, n_neigh: int) -> core.Snapshot:
    flows = {
        core.FlowKey(2, "egress", 4, 17, f"10.0.{i // 256}.{i % 256}", "10.9.9.9", 1000 + i, 53): core.FlowStats(
            1, 100 + i, 50, 1, 2
        )
        for i in range(n_flows)
    }
    neigh = {
        core.NeighborKey(2, f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"): core.NeighborStats(
            5, 500, 0, 0, 1, 1, 1_000_000_000 + i, 0
        )
        for i in range(n_neigh)
    }
    return core.Snapshot(2_000_000_000, flows, neigh, {core.Stat.GUARD_DROPPED: 3}, 0, 8192)


def test_cardinality_is_capped_and_overflow_counted():
    svc = ProbesService(settings=ProbeSettings(top_flows=20))
    svc._apply(AgentSettings(metrics=MetricsSettings(max_label_values=8), probes=ProbeSettings(top_flows=20)))
    svc.last = PollResult(snapshot(1000, 50), {2: "eth0"}, ["eth0"], [])
    reg = CollectorRegistry()
    reg.register(_Collector(svc))
    text = generate_latest(reg).decode()
    assert text.count("x0tta_probes_flow_bytes_total{") == 8  # min(top_flows, max_label_values)
    assert text.count("x0tta_probes_neighbor_rx_packets_total{") == 8
    assert reg.get_sample_value("x0tta_probes_label_overflow", {"map": "flows"}) == 992
    assert reg.get_sample_value("x0tta_probes_label_overflow", {"map": "neighbors"}) == 42
    assert reg.get_sample_value("x0tta_probes_guard_dropped_total") == 3
    # the flows kept are the largest
    assert 'src="10.0.3.231"' in text  # flow 999, the most bytes
    seen = svc.neighbors_seen()
    assert len(seen) == 50 and seen[0].interface == "eth0"
    assert svc.last_heard("02:00:00:00:00:31") == 1.000000049
