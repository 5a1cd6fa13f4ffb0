"""Pure parts of mesh control: netlink framing, the batadv family, the reconcile planner.

No I/O here (no sockets, clocks, threads): data in, data out; the import contract keeps it so.
"""
