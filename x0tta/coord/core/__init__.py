"""The pure rollout core: documents, state machine, criteria (no I/O)."""
