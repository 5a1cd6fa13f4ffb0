"""``x0tta-agent``: parse arguments, load the config, run the agent on uvloop (or asyncio).

Exit codes: 0 after a clean stop; 78 (EX_CONFIG, sysexits.h) for a configuration that cannot be
used, which the unit file lists in ``RestartPreventExitStatus=`` so systemd does not restart a
daemon into the same error; 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from x0tta import __version__

EX_CONFIG = 78


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="x0tta-agent", description="x0tta mesh node daemon")
    p.add_argument("--config", "-c", default=None, help="TOML config (default /etc/x0tta/agent.toml)")
    p.add_argument("--version", action="version", version=f"x0tta-agent {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from x0tta.config.fields import ConfigError
    from x0tta.config.loader import load_settings

    moved: list = []  # deprecated keys taken: logged by the agent once logging is configured
    try:
        settings = load_settings(args.config, moved=moved)
    except ConfigError as exc:
        print(f"x0tta-agent: {exc}", file=sys.stderr)
        return EX_CONFIG

    from x0tta.telemetry import logging as tlog
    from x0tta.telemetry import tracing

    node_id = settings.node.resolved_id(socket.gethostname())
    tlog.configure(
        node_id=node_id, level=settings.logging.level, levels=settings.logging.levels, fmt=settings.logging.format
    )
    tracing.configure(
        node_id=node_id, otlp_endpoint=settings.tracing.otlp_endpoint, sample_ratio=settings.tracing.sample_ratio
    )
    log = tlog.get_logger("agent")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        log.warning("uvloop_missing", fallback="asyncio", hint="pip install 'x0tta[fast]' for a faster loop")
        runner = asyncio.run

    from x0tta.agent.app import Agent

    agent = Agent(settings, config_path=args.config, moved=moved)
    try:
        code = runner(agent.run())
    except Exception as exc:  # a bug or an unusable environment at start: say it, exit non-zero
        log.critical("agent_crashed", reason=f"{type(exc).__name__}: {exc}", exc_info=True)
        code = 1
    finally:
        tracing.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
