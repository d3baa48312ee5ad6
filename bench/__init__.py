"""attnfast benchmarks: a shared harness (harness.py), one script per op family, the CUDA
resource report (cuda_resources.py), the pytest-benchmark suite (kernels/).
`python -m bench [--quick]` runs every table."""
import logging as _logging
import os as _os
import re as _re
import warnings as _warnings

# torch.utils.cpp_extension (imported by torch.compile) guesses CUDA_HOME from the nvcc on PATH,
# which can be a wrapper; point it at the toolkit when there is one.
if "CUDA_HOME" not in _os.environ and _os.path.exists("/usr/local/cuda/bin/nvcc"):
    _os.environ["CUDA_HOME"] = "/usr/local/cuda"

# A CPU machine with a CUDA toolkit (or a CUDA build of torch without a driver) is a setup the
# benchmarks support: silence torch's notices about it, and only those. torch.utils.cpp_extension
# logs "No CUDA runtime is found, using CUDA_HOME=..." when torch.compile imports it; a CUDA build
# of torch without a driver warns "CUDA initialization: Found no NVIDIA driver ...".
_NO_CUDA_LOG = _re.compile(r"No CUDA runtime is found, using CUDA_HOME=")
_logging.getLogger("torch.utils.cpp_extension").addFilter(
    lambda record: not _NO_CUDA_LOG.match(record.getMessage()))
_warnings.filterwarnings("ignore", message=r"CUDA initialization: Found no NVIDIA driver",
                         category=UserWarning)
