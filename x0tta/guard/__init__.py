"""Admission guard: which neighbours' batman-adv frames a node accepts.

``core`` is pure (the admission state and how to sync it); ``enforce`` writes it into the eBPF
maps that the probes load (handed over by the composition root) and is the API other subsystems
call (admit, revoke); ``service`` is the ``guard`` subsystem: settings ``[guard]``, health, metrics
and the ``guard.*`` admin commands.
"""
