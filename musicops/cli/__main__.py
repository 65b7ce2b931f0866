"""`python -m musicops.cli` is the same as the `musicops` command."""

from musicops.cli import main

main()
