"""`python -m bench [--quick] [...]`: every benchmark table, one after the other.

Each entry of MODULES is a module with ``main(argv) -> int``; the arguments are passed on to
each.
"""
import importlib
import sys

MODULES = ["bench.boom", "bench.attention", "bench.memory", "bench.sharnn"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = 0
    for name in MODULES:
        status |= importlib.import_module(name).main(argv) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
