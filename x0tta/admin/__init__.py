"""The local admin API's wire format (:mod:`.core`, sans-IO) and its blocking client (:mod:`.client`).

The agent's server (``x0tta.agent.admin``), the CLI and the lab all speak it through this package,
so the format is written once.
"""
