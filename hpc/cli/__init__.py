"""The ``hpc-tf`` command. Thin: each command is one library call; only here do errors become exit codes."""

from __future__ import annotations

from hpc.cli.app import app, main

__all__ = ["app", "main"]
