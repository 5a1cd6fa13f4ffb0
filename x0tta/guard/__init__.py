"""Admission guard: which neighbours' batman-adv frames a node accepts.

``core`` is pure (the admission state and how to sync it); ``enforce`` writes it into the eBPF
maps loaded by :mod:`x0tta.probes` and is the API other subsystems call (admit, revoke).
"""
