"""attnfast's kernels under pytest-benchmark: one benchmark per op, shape, dtype, pass and backend.

    python -m pytest bench/kernels --benchmark-only                 # the quick selection
    python -m pytest bench/kernels --benchmark-only --big-shapes    # + SHA-RNN-sized cases

Groups are "<op> <shape> <dtype> <pass>", so that each group's table puts the backends of one
case side by side; see bench/README.md ("Kernel microbenchmarks") for saving, comparing and the
JSON output. ``common.py`` holds the backend rows and the timing; ``conftest.py`` the options,
the summary table and the JSON additions; ``test_bench_<family>.py`` the cases.
"""
