"""``x0tta threats``: the threat records of the running agent's detectors (admin ``guard.threats``).

The records are EVE-style JSON (docs/guard.md, "Threat records"); the table shows one a line:
time, severity, signature, subject, interface, action. Filters, applied by the agent:
``--since 2026-12-06T03:40`` (at or after that UTC time, any prefix of the records' timestamps),
``--severity high|medium|low|info`` (that severity or more urgent), ``--limit N`` (the newest N).
``--json`` prints the records themselves, one JSON array, for jq or a SIEM. The same as ``x0tta
guard threats``.
"""

from __future__ import annotations

import argparse

from x0tta.cli.guard import add_threats_parser


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_threats_parser(sub, "threats")
