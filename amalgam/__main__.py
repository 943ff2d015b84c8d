"""`python -m amalgam` is the same as the `amalgam` command."""

from amalgam.console import main

raise SystemExit(main())
