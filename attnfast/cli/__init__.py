"""The ``python -m attnfast`` command line: ``train``, ``eval``, ``sample`` (and ``inspect``).

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; ``__main__``
wires them into subcommands. User errors are raised as :class:`CLIError` and printed as one
line (no traceback) with a non-zero exit status.
"""
from __future__ import annotations


class CLIError(ValueError):
    """A problem with the user's input (arguments, files); printed as one line."""


BACKEND_HELP = ("attnfast backend of the attention and Boom layers: auto (the default: chosen per op), "
                "reference, cpu, cuda, triton")


def check_backend(name: str | None) -> str | None:
    """``--backend``: None / "auto" (attnfast chooses per op), or a backend usable here."""
    if name is None or name == "auto":
        return None
    from attnfast import dispatch
    status = dispatch.backend_status()
    if name not in status:
        raise CLIError(f"--backend must be auto or one of {', '.join(status)}, got {name!r}")
    if status[name] is not None:
        raise CLIError(f"--backend {name} is unavailable here: {status[name]}")
    return name
