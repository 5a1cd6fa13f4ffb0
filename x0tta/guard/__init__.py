"""Admission guard: which neighbours' batman-adv frames a node accepts, and who attacks the mesh.

``core`` is pure (the admission state and how to sync it; the intrusion detectors; the threat
records); ``enforce`` writes the admissions into the eBPF maps that the probes load (handed over
by the composition root) and is the API other subsystems call (admit, revoke); ``service`` is the
``guard`` subsystem: settings ``[guard]``, health, metrics, detection and the ``guard.*`` admin
commands.
"""
