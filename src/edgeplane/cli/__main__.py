"""`python -m edgeplane.cli` runs the CLI."""

from edgeplane.cli import main

main()
