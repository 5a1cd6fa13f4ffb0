"""Peer sessions between mesh nodes: the protocol core (pure, :mod:`x0tta.peer.core`), the PQC TLS
transport (I/O, :mod:`x0tta.peer.tls`), the session adapter (:mod:`x0tta.peer.session`) and the
subsystem that keeps sessions up to the neighbours (:mod:`x0tta.peer.service`).
"""
