"""`python -m bench [--quick] [...]`: every benchmark table, one after the other.

Each entry of MODULES is a module with ``main(argv) -> int``; the arguments are passed on to
each. The tables compare attnfast with its peers (eager, torch.compile, SDPA, the GEMM roof) in
one run, as ratios.

The kernels on their own, in pytest-benchmark's form (one benchmark per op, shape, dtype, pass
and backend; groups "<op> <shape> <dtype> <pass>" put the backends side by side), are a pytest
suite instead (bench/kernels; pass the path: `pytest tests` never runs it):

    python -m pytest bench/kernels --benchmark-only                  # the quick selection
    python -m pytest bench/kernels --benchmark-only --big-shapes     # + SHA-RNN-sized cases
    python -m pytest bench/kernels --benchmark-only -k boom --kernel-dtype fp32 --kernel-dtype bf16
    python -m pytest bench/kernels --benchmark-only --benchmark-json=out.json
    python -m pytest bench/kernels --benchmark-only --benchmark-autosave    # saves a run
    python -m pytest bench/kernels --benchmark-only --benchmark-compare     # vs the last one
    python -m pytest bench/kernels --benchmark-only --torch-threads 1       # a shared machine

Saved runs go to bench/results/pytest-benchmark/ (git-ignored); bench/README.md has the rest.
"""
import importlib
import sys

MODULES = ["bench.boom", "bench.attention", "bench.memory", "bench.lstm", "bench.sharnn"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = 0
    for name in MODULES:
        status |= importlib.import_module(name).main(argv) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
