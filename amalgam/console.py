"""The ``amalgam`` console script: imports the command line inside a guard, so a Ctrl-C while torch
loads ends as the one line a Ctrl-C during a command gives, not a traceback through the import."""

from __future__ import annotations

import sys

INTERRUPTED = 130


def main() -> int:
    """Entry point of the ``amalgam`` script (``amalgam.cli.main`` once imported)."""
    try:
        from amalgam.cli import main as cli_main
    except KeyboardInterrupt:
        print("amalgam: interrupted", file=sys.stderr)
        return INTERRUPTED
    return cli_main()
