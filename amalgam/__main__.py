"""`python -m amalgam` is the same as the `amalgam` command."""

from amalgam.cli import main

raise SystemExit(main())
