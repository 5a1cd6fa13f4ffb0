"""The fleet plane: this node reports to an MQTT broker that every node of the fleet reports to.

A first step of it (docs/fleet.md): a durable outbox (:mod:`x0tta.fleet.outbox`) through which every
message goes, an MQTT 5 client over TLS with client certificates (:mod:`x0tta.fleet.mqtt`), and the
``fleet`` subsystem (:mod:`x0tta.fleet.service`) that publishes the node's state, its birth and
death, and the events other subsystems hand it. The decisions (eviction order, backoff schedule,
topics and payload schemas) are pure, in :mod:`x0tta.fleet.core`.
"""
