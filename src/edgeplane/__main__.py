"""`python -m edgeplane` runs the CLI."""

from edgeplane.cli import main

main()
