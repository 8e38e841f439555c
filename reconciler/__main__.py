"""`python -m reconciler` is the `circle` command."""

from reconciler.cli.main import main

main()
