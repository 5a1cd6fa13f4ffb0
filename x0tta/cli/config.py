"""``x0tta config check FILE`` and ``x0tta config show [FILE]``."""

from __future__ import annotations

import argparse
import sys

from x0tta.config.fields import ConfigError, to_data
from x0tta.config.loader import MovedKey, load_settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="check or show a configuration")
    cs = p.add_subparsers(dest="config_cmd", required=True)
    c = cs.add_parser("check", help="validate a config file (and X0TTA_* overrides); exit 1 if invalid")
    c.add_argument("file")
    c.set_defaults(func=check)
    s = cs.add_parser("show", help="print the effective settings, defaults included, as JSON")
    s.add_argument("file", nargs="?", help="config file (default: x0tta --config, else /etc/x0tta/agent.toml)")
    s.set_defaults(func=show)
    r = cs.add_parser("reference", help="print the commented reference config (or Markdown)")
    r.add_argument("--markdown", action="store_true")
    r.set_defaults(func=reference)


def check(args: argparse.Namespace) -> int:
    moved: list[MovedKey] = []
    try:
        load_settings(args.file, moved=moved)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    for m in moved:
        print(f"  warning: {m}", file=sys.stderr)
    print(f"{args.file}: ok" + (f" ({len(moved)} deprecated key(s))" if moved else ""))
    return 0


def show(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(to_data(load_settings(args.file or args.config)), indent=2))
    return 0


def reference(args: argparse.Namespace) -> int:
    from x0tta.config.reference import markdown_reference, toml_reference

    sys.stdout.write(markdown_reference() if args.markdown else toml_reference())
    return 0
