"""batman-adv control: the batadv codec (pure, ``x0tta.mesh.core``), the netlink client (I/O), the
reconcile planner (pure) and the mesh subsystem that applies the desired mesh and reports it."""
