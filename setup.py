"""Build attnfast's compiled extension, attnfast._C (C++ CPU kernels, plus CUDA kernels when
nvcc and a CUDA build of torch are present), and the test-only SIMT harness attnfast._simt.

Build against the torch already installed: ``pip install --no-build-isolation -e .``

Environment switches:
  ATTNFAST_NO_CUDA=1      CPU kernels only
  ATTNFAST_NO_SIMT=1      skip the SIMT harness extension (tests that need it then skip)
  TORCH_CUDA_ARCH_LIST    CUDA archs (default "8.0+PTX;9.0a": sm_80, sm_90a, PTX for newer GPUs)
  MAX_JOBS                parallel compile jobs (ninja)
  DEBUG=1                 -O0 -g
"""
import glob
import os
import shutil
import sys

# torch.utils.cpp_extension reads CUDA_HOME when it is imported: /usr/local/bin/nvcc is often a
# wrapper that makes torch guess /usr/local, so prefer the real toolkit folder when it exists.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
# With no GPU to detect, torch's arch-list code fails: always name the archs.
DEFAULT_ARCHS = "8.0+PTX;9.0a"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
DEBUG = os.environ.get("DEBUG", "0") == "1"


def _flag(name):
    return os.environ.get(name, "0") == "1"


def cuda_build_reason():
    """None if the CUDA kernels can be built, else why not."""
    if _flag("ATTNFAST_NO_CUDA"):
        return "ATTNFAST_NO_CUDA=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None or shutil.which(os.path.join(CUDA_HOME, "bin", "nvcc")) is None:
        return "nvcc not found (set CUDA_HOME)"
    return None


def cuda_include_dirs():
    """CUDA headers for host-only code (SIMT harness) and ATen/cuda headers (cuBLAS/cuSPARSE
    headers that pip's CUDA toolkit carries but /usr/local/cuda may lack)."""
    dirs = []
    if CUDA_HOME:
        dirs += [os.path.join(CUDA_HOME, "include"), os.path.join(CUDA_HOME, "include", "cccl")]
    for site in sys.path:
        for sub in ("cu13", "cu12"):
            d = os.path.join(site, "nvidia", sub, "include")
            if os.path.isdir(d):
                dirs.append(d)
    return [d for d in dirs if os.path.isdir(d)]


def opt_flags():
    return ["-O0", "-g"] if DEBUG else ["-O3"]


def main_extension():
    cuda_reason = cuda_build_reason()
    with_cuda = cuda_reason is None
    archs = os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else ""
    sources = [os.path.join("csrc", "module.cpp"), os.path.join("csrc", "schemas.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    defines = [
        ("ATTNFAST_TORCH_VERSION", f'"{torch.__version__}"'),
        ("ATTNFAST_CUDA_ARCHS", f'"{archs}"'),
        ("ATTNFAST_NO_CUDA_REASON", f'"{cuda_reason or ""}"'),
    ]
    if DEBUG:
        defines.append(("ATTNFAST_DEBUG", "1"))
    cxx = opt_flags() + ["-std=c++20", "-fopenmp"]
    args = dict(
        include_dirs=[CSRC],
        define_macros=defines,
        extra_link_args=["-fopenmp"],
    )
    if not with_cuda:
        print(f"attnfast: building CPU kernels only ({cuda_reason})")
        return CppExtension("attnfast._C", sources, extra_compile_args={"cxx": cxx}, **args)
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    defines.append(("ATTNFAST_WITH_CUDA", "1"))
    args["include_dirs"] = [CSRC] + cuda_include_dirs()
    nvcc = opt_flags() + [
        "-std=c++20",
        "--threads=2",  # the two arch passes of one file in parallel
        "-Xptxas=-warn-spills",
        "--expt-relaxed-constexpr",
    ]
    if DEBUG:
        nvcc += ["-lineinfo"]
    print(f"attnfast: building CPU + CUDA kernels for TORCH_CUDA_ARCH_LIST={archs}")
    return CUDAExtension(
        "attnfast._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **args
    )


def simt_extension():
    """The SIMT host harness (tests only): the CUDA kernel headers compiled as host C++."""
    sources = sorted(glob.glob(os.path.join("csrc", "simt", "*.cpp")))
    if not sources or _flag("ATTNFAST_NO_SIMT"):
        return None
    inc = cuda_include_dirs()
    if not any(os.path.exists(os.path.join(d, "cuda_bf16.h")) for d in inc):
        print("attnfast: no CUDA headers found, skipping the SIMT harness extension")
        return None
    return CppExtension(
        "attnfast._simt",
        sources,
        include_dirs=[CSRC] + inc,
        define_macros=[("ATTNFAST_SIMT_HARNESS", "1")],
        extra_compile_args={"cxx": (["-O0", "-g"] if DEBUG else ["-O2"]) + ["-std=c++20", "-pthread"]},
        extra_link_args=["-pthread"],
    )


class Build(BuildExtension):
    """torch's BuildExtension, minus the -g that Python's own compile flags carry (it makes the
    shipped library 30x larger) unless DEBUG=1, with its objects kept in build/temp.<platform>
    of the source tree: pip builds in a fresh temporary folder each time, so without this every
    `pip install` recompiled everything; with it ninja recompiles only what changed."""

    def finalize_options(self):
        super().finalize_options()
        # ninja also rebuilds an object whose compile command changed (DEBUG, another torch).
        self.build_temp = os.path.join(ROOT, "build", f"temp.{sys.platform}-{sys.implementation.cache_tag}")

    def build_extensions(self):
        if not DEBUG:
            for attr in ("compiler_so", "compiler_cxx", "linker_so", "compiler"):
                cmd = getattr(self.compiler, attr, None)
                if isinstance(cmd, list):
                    setattr(self.compiler, attr, [a for a in cmd if a != "-g"])
        super().build_extensions()


extensions = [main_extension()]
simt = simt_extension()
if simt is not None:
    extensions.append(simt)

# Metadata lives in pyproject.toml. The repository's triton_kernels/ folder ships as
# attnfast.triton_kernels (attnfast/triton_kernels is a link to it): a top-level
# ``triton_kernels`` package would collide with other projects of that name.
setup(
    packages=find_packages(include=["attnfast", "attnfast.*"]),
    ext_modules=extensions,
    cmdclass={"build_ext": Build.with_options(use_ninja=True)},
    zip_safe=False,
)
