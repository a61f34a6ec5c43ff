"""The `astra` command line (typer + rich)."""
