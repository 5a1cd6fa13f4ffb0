"""Helpers shared by the test tiers, each written once (namespaces, scripts run inside them)."""
