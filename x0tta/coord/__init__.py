"""Coordinated rollouts on etcd: a change applied node by node, each under a fenced turn (docs/coordination.md)."""
