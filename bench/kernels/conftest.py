"""pytest configuration of the kernel microbenchmarks (bench/kernels; never collected by
`pytest tests`).

Options: ``--big-shapes`` (also the cases marked ``big``: SHA-RNN-sized, seconds per call on a
CPU), ``--kernel-dtype`` (dtypes of the attention and Boom cases, repeatable; default fp32),
``--torch-threads``. Parametrized here for every benchmark: ``row`` (backend and device, see
common.py) and ``dtype``. Saved runs go to ``bench/results/pytest-benchmark/`` (git-ignored)
unless ``--benchmark-storage`` says otherwise. After pytest-benchmark's tables, a summary table
gives each row's GFLOP/s and its speed-up against the reference on the same device; the JSON
(``--benchmark-json``, saved runs) gets ``gflop_per_s`` in each benchmark's ``extra_info`` and
the torch / attnfast build in ``machine_info``.
"""
from __future__ import annotations

import platform

import pytest
import torch

from bench import harness
from bench.kernels import common

DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's default --benchmark-storage
STORAGE = harness.RESULTS / "pytest-benchmark"
HERE = harness.REPO / "bench" / "kernels"


def pytest_addoption(parser):
    group = parser.getgroup("attnfast kernels", "attnfast kernel microbenchmarks (bench/kernels)")
    group.addoption("--big-shapes", action="store_true",
                    help="also run the cases marked 'big' (SHA-RNN-sized: slow on a CPU)")
    group.addoption("--kernel-dtype", action="append", choices=sorted(common.DTYPES),
                    help="dtype of the attention and Boom cases (repeatable; default fp32; the "
                         "memory ops run in fp32, what their kernels take)")
    group.addoption("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads for the run (default: torch's)")


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("bench/kernels needs the pytest-benchmark plugin (pinned in "
                                ".ci/requirements.txt): pip install pytest-benchmark")
    config.addinivalue_line("markers", "big: a SHA-RNN-sized case, run only with --big-shapes")
    # Keep saved runs out of the work tree (runs before pytest-benchmark's trylast configure).
    if config.getoption("benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{STORAGE}"
    if config.getoption("torch_threads"):
        torch.set_num_threads(config.getoption("torch_threads"))


def _here(item) -> bool:
    return HERE in item.path.parents


@pytest.hookimpl(trylast=True)  # after the parametrize marks: ids "<case>-<pass>[-<dtype>]-<row>"
def pytest_generate_tests(metafunc):
    if "dtype" in metafunc.fixturenames:
        names = metafunc.config.getoption("kernel_dtype") or ["fp32"]
        metafunc.parametrize("dtype", [common.DTYPES[n] for n in names], ids=names)
    if "row" in metafunc.fixturenames:
        metafunc.parametrize("row", common.row_params())


def pytest_collection_modifyitems(config, items):
    if config.getoption("big_shapes") or "big" in (config.option.markexpr or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if _here(item) and item.get_closest_marker("big") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_benchmark_update_machine_info(config, machine_info):
    """What the numbers depend on besides the CPU (kept stable: --benchmark-compare warns when
    the machine_info of the runs differ)."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # not installed, or no driver
        triton_version = None
    from bench import peak as _peak

    machine_info["attnfast"] = {
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "triton": triton_version,
        "torch_threads": torch.get_num_threads(), "cpu_model": _peak.cpu_model(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "build_info": _build_info(),
    }


def _build_info() -> dict:
    import attnfast

    try:
        return attnfast.build_info()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    for bench in output_json.get("benchmarks", []):
        info, median = bench.get("extra_info", {}), bench.get("stats", {}).get("median")
        if info.get("gflop") and median:
            info["gflop_per_s"] = info["gflop"] / median


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After pytest-benchmark's tables: per group and row the median, GFLOP/s and the speed-up
    against the reference on the same device."""
    if not common.RESULTS:
        return
    from tabulate import tabulate

    ref = {(r["group"], r["device"]): r["median_s"] for r in common.RESULTS
           if r["backend"] == "reference"}
    table = [[r["group"], r["row"], f"{r['median_s'] * 1e3:.3f}",
              harness.fmt(r["gflop"] and r["gflop"] / r["median_s"], ".1f"),
              harness.fmt(harness.ratio(ref.get((r["group"], r["device"])), r["median_s"]))]
             for r in sorted(common.RESULTS, key=lambda r: (r["group"], r["row"]))]
    terminalreporter.write_sep("-", "attnfast kernels: x reference = the reference's median on "
                                    "the same device / this row's (> 1: faster)")
    terminalreporter.write_line(tabulate(
        table, headers=["group", "row", "median ms", "GFLOP/s", "x reference"],
        tablefmt="github", disable_numparse=True))
