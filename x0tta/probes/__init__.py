"""eBPF flow probes: loading the tc programs (libbpf), reading their maps, exporting metrics.

``core`` is pure (map layouts, decoding, what to export); ``libbpf`` and ``service`` do I/O.
"""
