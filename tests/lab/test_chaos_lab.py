"""Do no harm, on random faults: a short seeded chaos run in the 5-node ring (x0tta lab chaos).

The same schedule of 30 random faults (link down, silent loss both ways and one way, partial
loss, delay, agent kill, node kill) runs with an agent on every node and with batman-adv alone;
see :mod:`x0tta.lab.core.chaos` for what is compared. Three zeros are the assertions: no outage
that only the agents' run has, no steer-off of a link that had no fault, and no node quarantined
(every node of the run is honest). Every other figure (outages per fault kind with agents and
alone, threat records per detector) is recorded in ``chaos.json`` and printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from x0tta.lab.core.chaos import table
from x0tta.lab.runner import LabUnavailable, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
FAULTS = int(os.environ.get("X0TTA_CHAOS_FAULTS", "30"))
SEED = int(os.environ.get("X0TTA_CHAOS_SEED", "1"))


def test_random_faults_with_agents_cause_no_outage_touch_no_healthy_link_and_quarantine_no_one(tmp_path_factory):
    from x0tta.lab.chaos import run_chaos

    out = tmp_path_factory.mktemp("chaos")
    try:
        doc = run_chaos(load_topology(ROOT / "configs" / "lab" / "ring.toml"), out, faults=FAULTS, seed=SEED)
    except LabUnavailable as exc:
        pytest.skip(f"the lab cannot run here: {exc}")
    s = doc["summary"]
    print(table(s))
    print(json.dumps(s))
    assert not any(doc["errors"].values()), doc["errors"]
    assert s["incomplete"] == 0, s
    harm = [(r["fault"]["kind"], r["fault"]["link"] or r["fault"]["node"], r["agent_only_outages"],
             r["actions_on_healthy_links"]) for r in doc["faults"]
            if r.get("agent_only_outages") or r.get("actions_on_healthy_links")]
    assert s["agent_only_outages"] == 0, harm
    assert s["actions_on_healthy_links"] == 0, harm
    assert s["quarantines"] == 0, doc["quarantines"]
