"""The `circle` command line: thin commands over the adapters and the pure core."""
