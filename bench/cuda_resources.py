"""Per-kernel CUDA resource report: registers, spills, static shared memory, stack frame.

    python bench/cuda_resources.py [--allow-spills] [--via cmake|nvcc] [--arch 80 --arch 90a]
                                   [--files a.cu ...] [--log ptxas.log] [--json out.json]

Compiles every csrc/cuda/*.cu once for each arch (sm_80 and sm_90a by default; both archs of a
file in one nvcc call with --threads 2) with ``-Xptxas -v`` and parses ptxas's report:

    ptxas info    : Compiling entry function '_Z...' for 'sm_80'
    ptxas info    : Function properties for _Z...
        0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 38 registers, used 1 barriers, 1024 bytes smem, 448 bytes cmem[0]

``--via cmake`` (the default when cmake is installed) configures the repository's
CMakeLists.txt in build/cuda-resources with ATTNFAST_PTXAS_VERBOSE=ON and rebuilds the object
target attnfast_cuda_kernels (same flags as the real build, nothing linked); ``--via nvcc``
runs nvcc directly with setup.py's flags (used for ``--files`` outside csrc/cuda too).
``--log FILE`` parses a saved ptxas/nvcc log instead of compiling.

Kernel names are demangled with c++filt. Exit status: 0 when no kernel spills; 1 when some
kernel (or a function it calls) spills registers to local memory, unless --allow-spills;
2 when the compile fails. With no nvcc on the machine it prints why and exits 0 (a CPU-only
machine has nothing to report) unless --require-nvcc.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARCHS = ("80", "90a")
CUDA_HOME = os.environ.get("CUDA_HOME", "/usr/local/cuda")


@dataclasses.dataclass
class Kernel:
    file: str
    arch: str
    mangled: str
    name: str = ""
    registers: int | None = None
    barriers: int | None = None
    smem_static: int = 0
    stack_frame: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    callees_spilling: list = dataclasses.field(default_factory=list)  # (name, stores, loads)

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0 or bool(self.callees_spilling)


# ---- parsing -------------------------------------------------------------------------------

RE_OBJECT = re.compile(r"Building CUDA object .*?((?:csrc/cuda/)?[\w.+-]+\.cu)\.o")
RE_FILE_MARK = re.compile(r"^=== (\S+\.cu) ===$")  # written by the nvcc driver below
RE_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
RE_PROPS = re.compile(r"Function properties for (\S+)")
RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
RE_USED = re.compile(r"ptxas info\s*: Used (\d+) registers")
RE_BARRIERS = re.compile(r"used (\d+) barriers")
RE_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text: str, default_file: str = "?") -> list[Kernel]:
    """Kernels (one per entry function and arch) from ptxas -v output, in order of appearance."""
    kernels: list[Kernel] = []
    current: Kernel | None = None
    props_for: str | None = None
    file = default_file
    for line in text.splitlines():
        if m := (RE_OBJECT.search(line) or RE_FILE_MARK.match(line)):
            file, current = m.group(1), None
        elif m := RE_ENTRY.search(line):
            current = Kernel(file=file, arch=m.group(2), mangled=m.group(1))
            kernels.append(current)
            props_for = None
        elif m := RE_PROPS.search(line):
            props_for = m.group(1)
        elif (m := RE_FRAME.search(line)) and current is not None:
            frame, stores, loads = (int(g) for g in m.groups())
            if props_for in (None, current.mangled):
                current.stack_frame, current.spill_stores, current.spill_loads = frame, stores, loads
            elif stores or loads:  # a non-inlined function called by the kernel
                current.callees_spilling.append((props_for, stores, loads))
        elif (m := RE_USED.search(line)) and current is not None:
            current.registers = int(m.group(1))
            if b := RE_BARRIERS.search(line):
                current.barriers = int(b.group(1))
            if s := RE_SMEM.search(line):
                current.smem_static = int(s.group(1))
    return kernels


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not names or cxxfilt is None:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, out.splitlines())) if out else {n: n for n in names}


def short_name(demangled: str) -> str:
    """``void ns::kernel<T>(args...)`` -> ``ns::kernel<T>`` (the table; the JSON keeps all)."""
    depth = 0
    for i, ch in enumerate(demangled):
        if ch in "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            demangled = demangled[:i]
            break
    return demangled.removeprefix("void ").replace("attnfast::cuda::", "")


# ---- compiling -----------------------------------------------------------------------------

def nvcc_path() -> str | None:
    for cand in (os.path.join(CUDA_HOME, "bin", "nvcc"), shutil.which("nvcc")):
        if cand and os.path.exists(cand):
            return cand
    return None


def gencode(archs) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def torch_flags() -> tuple[list[str], list[str], str]:
    """torch's include folders, nvcc flags and version (what setup.py compiles with)."""
    os.environ.setdefault("CUDA_HOME", CUDA_HOME)
    import torch
    import torch.utils.cpp_extension as ext

    site = Path(torch.__file__).resolve().parent.parent
    incs = list(ext.include_paths()) + [os.path.join(CUDA_HOME, "include")]
    incs += sorted(glob.glob(str(site / "nvidia" / "cu1*" / "include")))
    return incs, list(ext.COMMON_NVCC_FLAGS), torch.__version__


def compile_with_nvcc(files: list[Path], archs, threads: int) -> tuple[int, str]:
    nvcc = nvcc_path()
    incs, flags, torch_version = torch_flags()
    log = []
    for f in files:
        cmd = [nvcc, "-std=c++20", "-O3", "-c", str(f), "-o", os.devnull, f"--threads={threads}",
               "-Xptxas=-v", "-DATTNFAST_WITH_CUDA=1", f'-DATTNFAST_TORCH_VERSION="{torch_version}"',
               "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
               "-D_GLIBCXX_USE_CXX11_ABI=1", f"-I{REPO / 'csrc'}", *[f"-I{d}" for d in incs],
               *flags, *gencode(archs)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        log.append(f"=== {rel(f)} ===\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            return r.returncode, "\n".join(log)
    return 0, "\n".join(log)


def compile_with_cmake(archs, build_dir: Path, jobs: int) -> tuple[int, str]:
    cmake = shutil.which("cmake")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [cmake, "-S", str(REPO), "-B", str(build_dir), *gen,
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DATTNFAST_CUDA=ON",
                 "-DATTNFAST_PTXAS_VERBOSE=ON", f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}",
                 f"-DCMAKE_CUDA_COMPILER={nvcc_path()}"]
    r = subprocess.run(configure, capture_output=True, text=True)
    if r.returncode != 0:
        return r.returncode, r.stdout + r.stderr
    build = [cmake, "--build", str(build_dir), "--target", "attnfast_cuda_kernels",
             "--clean-first", "-j", str(jobs)]
    r = subprocess.run(build, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---- report --------------------------------------------------------------------------------

COLUMNS = ["file", "kernel", "arch", "regs", "spill st B", "spill ld B", "smem B", "stack B", "bar"]


def table(kernels: list[Kernel]) -> str:
    from tabulate import tabulate

    rows = [[Path(k.file).name, short_name(k.name), k.arch, k.registers, k.spill_stores,
             k.spill_loads, k.smem_static, k.stack_frame, k.barriers]
            for k in sorted(kernels, key=lambda k: (k.file, short_name(k.name), k.arch))]
    return tabulate(rows, headers=COLUMNS, tablefmt="github")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allow-spills", action="store_true", help="report spills, exit 0")
    p.add_argument("--via", choices=("cmake", "nvcc"), default=None,
                   help="drive the compile through CMake (default when installed) or nvcc")
    p.add_argument("--arch", action="append", help="CUDA archs (repeatable; default 80 and 90a)")
    p.add_argument("--files", nargs="+", type=Path, help=".cu files (default csrc/cuda/*.cu)")
    p.add_argument("--log", type=Path, help="parse this saved ptxas -v log instead of compiling")
    p.add_argument("--build-dir", type=Path, default=REPO / "build" / "cuda-resources")
    p.add_argument("--threads", type=int, default=2, help="nvcc --threads (archs in parallel)")
    p.add_argument("--jobs", type=int, default=1, help="files compiled at once (CMake)")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.add_argument("--require-nvcc", action="store_true", help="fail (exit 2) when nvcc is missing")
    args = p.parse_args(argv)
    archs = args.arch or list(DEFAULT_ARCHS)
    t0 = time.perf_counter()

    if args.log:
        rc, log = 0, args.log.read_text()
    else:
        files = args.files or sorted((REPO / "csrc" / "cuda").glob("*.cu"))
        if not files:
            print("cuda_resources: no .cu files to report on")
            return 0
        if nvcc_path() is None:
            print(f"cuda_resources: SKIPPED: nvcc not found (CUDA_HOME={CUDA_HOME})")
            return 2 if args.require_nvcc else 0
        in_tree = all(Path(f).resolve().parent == REPO / "csrc" / "cuda" for f in files)
        via = args.via or ("cmake" if shutil.which("cmake") and in_tree and not args.files else "nvcc")
        if via == "cmake":
            rc, log = compile_with_cmake(archs, args.build_dir, args.jobs)
        else:
            rc, log = compile_with_nvcc([Path(f) for f in files], archs, args.threads)
        if rc != 0:
            print(log[-8000:], file=sys.stderr)
            print(f"cuda_resources: the compile failed (exit {rc})", file=sys.stderr)
            return 2

    kernels = parse_ptxas(log)
    names = demangle(sorted({k.mangled for k in kernels}))
    for k in kernels:
        k.name = names.get(k.mangled, k.mangled)
    if not kernels:
        print(log[-4000:], file=sys.stderr)
        print("cuda_resources: no 'ptxas info' lines found (was -Xptxas -v passed?)", file=sys.stderr)
        return 2
    print(table(kernels))
    spilling = [k for k in kernels if k.spills]
    print(f"{len(kernels)} kernels x archs, {len(spilling)} spilling; "
          f"{time.perf_counter() - t0:.0f} s")
    for k in spilling:
        extra = "".join(f"; calls {c} ({s} B stored, {l} B loaded)" for c, s, l in k.callees_spilling)
        print(f"SPILL {k.arch} {short_name(k.name)}: {k.spill_stores} B stored, "
              f"{k.spill_loads} B loaded{extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([dict(dataclasses.asdict(k), spills=k.spills)
                                         for k in kernels], indent=1))
    if spilling and not args.allow_spills:
        print("cuda_resources: kernels spill registers (use --allow-spills to only report)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
