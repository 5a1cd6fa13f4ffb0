"""Run every benchmark script in this folder (``bench_*.py``), one after the other.

    make bench                 # all of them
    make bench ONLY=agent      # those whose name contains "agent"

Each script prints its own Markdown table with its baseline and ratio; copy the figures into
docs/benchmarks.md together with the command. Benchmarks report, they never fail on time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    only = os.environ.get("ONLY", "")
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        if only and only not in script.stem:
            continue
        print(f"\n## {script.stem} ({script.relative_to(here.parent.parent)})", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=here.parent.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
