"""MAPE-K self-healing: monitor, analyze, plan, execute, with a durable knowledge store.

Pure (no I/O): :mod:`x0tta.heal.core` - observation snapshots, detectors, policies, the loop step,
token buckets, the liveness probe codec and loss accounting. I/O adapters: :mod:`x0tta.heal.store`
(SQLite on a dedicated thread), :mod:`x0tta.heal.executor` (actions through the mesh client and
rtnetlink, behind pybreaker breakers and token buckets), :mod:`x0tta.heal.liveness` (UDP probes on
link-local addresses), :mod:`x0tta.heal.service` (the subsystem that runs the loop).
"""
