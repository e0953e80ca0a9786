"""The `dfhost` command."""

from dfhost.cli.main import main

__all__ = ["main"]
