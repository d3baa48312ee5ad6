"""The ``python -m attnfast`` command line: ``train``, ``eval``, ``sample`` (and ``inspect``).

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; ``__main__``
wires them into subcommands. User errors are raised as :class:`CLIError` and printed as one
line (no traceback) with a non-zero exit status.
"""
from __future__ import annotations


class CLIError(ValueError):
    """A problem with the user's input (arguments, files); printed as one line."""
