"""Check functions that ``check`` steps run inside the lab guest (see docs/lab.md, "Checks").

Each gets the running lab (:class:`x0tta.lab.guest.GuestLab`) and, for ``each_node = true``, the
node; what it returns lands in ``timeline.json`` under ``measurements.checks.<label>``; an exception
(an assert) marks the check failed with its message.
"""

from __future__ import annotations

import socket


def sees_every_other_node(lab, node):
    """batctl on ``node`` has a best route to every other node of the lab."""
    routes = lab.routes(node)
    others = {n.name for n in lab.topology.nodes} - {node}
    assert set(routes) == others, f"{node} sees {sorted(routes)}, not {sorted(others)}"
    return routes


def socket_in_namespace(lab, node):
    """Code run inside ``lab.netns(node)`` sees that node's interfaces."""
    with lab.netns(node):
        names = [name for _, name in socket.if_nameindex()]
    assert "bat0" in names and all(f"to-{peer}" in names for peer in lab.topology.neighbours(node)), names
    return sorted(names)
