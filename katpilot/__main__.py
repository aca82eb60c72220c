"""`python -m katpilot` runs the CLI."""

from katpilot.cli import main

main()
