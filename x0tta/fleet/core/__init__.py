"""The pure half of the fleet plane: outbox policy, reconnection schedule, topics and payloads.

An import-linter contract keeps sockets, clocks, threads, files and randomness out of this package:
callers pass ``now`` and the random draw in.
"""
