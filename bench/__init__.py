"""attnfast benchmarks: a shared harness (harness.py), one script per op family, the CUDA
resource report (cuda_resources.py). `python -m bench [--quick]` runs every table."""
import os as _os

# torch.utils.cpp_extension (imported by torch.compile) guesses CUDA_HOME from the nvcc on PATH,
# which can be a wrapper; point it at the toolkit when there is one.
if "CUDA_HOME" not in _os.environ and _os.path.exists("/usr/local/cuda/bin/nvcc"):
    _os.environ["CUDA_HOME"] = "/usr/local/cuda"
