"""``python -m attnfast {train,eval,sample,inspect,check} ...``: the SHA-RNN language model's command
line, and ``check``, the kernels' parity suite on the user's own machine.

A user error (bad argument, missing or corrupt file) prints one line, ``attnfast <command>:
error: ...``, and exits with status 2; ``--help`` on each command lists its options.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from attnfast.cli import CLIError

# name -> (module, one-line help). Modules are imported only when their command runs (or asks
# for --help), so ``python -m attnfast`` stays quick and ``inspect`` may be absent.
COMMANDS = {
    "train": ("attnfast.cli.train", "train the SHA-RNN byte-level language model (DDP/FSDP2 under torchrun)"),
    "eval": ("attnfast.cli.evaluate", "bits per character of a checkpoint on the valid or test split"),
    "sample": ("attnfast.cli.sample", "generate text from a checkpoint"),
    "inspect": ("attnfast.cli.inspect", "attention maps and the sequential Jacobian of a passage, as pictures"),
    "check": ("attnfast.check", "every op on every available backend against the reference (parity table)"),
}
USAGE_ERROR = 2
DESCRIPTION = """SHA-RNN byte-level language model: train, evaluate, sample, inspect; and check the kernels.

examples:
  python -m attnfast train --preset tiny --steps 2000 --out runs/tiny
  torchrun --nproc_per_node=2 -m attnfast train --preset tiny --steps 2000 --out runs/ddp
  python -m attnfast eval --checkpoint runs/tiny --split test
  python -m attnfast sample --checkpoint runs/tiny --prompt "def " --length 200
  python -m attnfast inspect --checkpoint runs/tiny --out runs/tiny/inspect
  python -m attnfast check --quick"""


def _command_module(name: str):
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise CLIError(f"the '{name}' command is not available in this install ({module_name} is missing)") from None


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module is imported
            _command_module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in COMMANDS else None
    try:
        args = _parser(command).parse_args(argv)
        return int(_command_module(args.command).run(args) or 0)
    except CLIError as e:
        print(f"attnfast{' ' + command if command else ''}: error: {e}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
