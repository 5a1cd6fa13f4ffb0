"""``x0tta``: the operator's command. Each subcommand lives in its own module of this package."""

from __future__ import annotations

import argparse
import importlib
import sys

from x0tta import __version__
from x0tta.common.errors import X0ttaError

# Modules with a ``register(subparsers)`` function, in the order of ``x0tta --help``.
COMMANDS = ["status", "config", "mesh", "peers", "incidents", "guard", "threats", "probes", "ca", "identity", "fleet",
            "meshstate", "backup", "rollout", "lab"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x0tta", description="x0tta mesh node tools")
    p.add_argument("--version", action="version", version=f"x0tta {__version__}")
    p.add_argument("--socket", help="admin socket of the agent (default: from --config, else /run/x0tta/admin.sock)")
    p.add_argument("--config", "-c", help="agent config, to find its admin socket and state")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"x0tta.cli.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except X0ttaError as exc:
        print(f"x0tta {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
