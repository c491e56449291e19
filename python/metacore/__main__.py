"""`python -m metacore` runs the command line."""

from .app.cli import main

raise SystemExit(main())
