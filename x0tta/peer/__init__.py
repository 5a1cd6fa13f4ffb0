"""Peer sessions between mesh nodes: the protocol core (pure, :mod:`x0tta.peer.core`), the PQC TLS
transport (I/O, :mod:`x0tta.peer.tls`; its policy and contexts in :mod:`x0tta.peer.tlspolicy`, its
errors in :mod:`x0tta.peer.tlserrors`, its private OpenSSL calls in :mod:`x0tta.peer.osslshim`),
the session adapter (:mod:`x0tta.peer.session`) and the subsystem that keeps sessions up to the
neighbours (:mod:`x0tta.peer.service`).
"""
