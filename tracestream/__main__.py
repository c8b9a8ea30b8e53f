"""`python -m tracestream`: the `tracestream` command, where the venv's bin is not on PATH."""

from tracestream.cli import main

raise SystemExit(main())
