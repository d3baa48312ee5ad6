// The test-only extension attnfast._simt: the SIMT host harness (runtime.cpp) and, in the other
// csrc/simt/*.cpp files, CPU implementations of ops that run the CUDA kernels under it. This file
// defines the op library `attnfast_simt` -- every schema of torch.ops.attnfast (csrc/schemas.h),
// implemented by the *_ops.cpp files, and the harness controls -- and the Python module (so the
// extension can be imported; importing it registers the ops).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "schemas.h"
#include "simt/runtime.h"

TORCH_LIBRARY(attnfast_simt, m) {
  attnfast::schemas::define_all(m);
  // One line per distinct (kernel, grid, block, smem) launched so far in this process:
  //   kernel \t template/parameter types \t grid \t block \t smem_bytes \t launches \t ok|error
  m.def("launch_log() -> str", []() -> std::string { return attnfast::simt::launch_log(); });
  m.def("clear_launch_log() -> ()", []() { attnfast::simt::clear_launch_log(); });
  // policy: 0 forward (default), 1 reverse, 2 pseudo-random with `seed`.
  m.def("set_schedule(int policy, int seed=0) -> ()", [](int64_t policy, int64_t seed) {
    TORCH_CHECK(policy >= 0 && policy <= 2, "set_schedule: policy must be 0, 1 or 2, got ", policy);
    attnfast::simt::set_schedule(static_cast<int>(policy), static_cast<uint64_t>(seed));
  });
}

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _simt
#endif
#define ATTNFAST_SIMT_STR2(x) #x
#define ATTNFAST_SIMT_STR(x) ATTNFAST_SIMT_STR2(x)
#define ATTNFAST_SIMT_CAT2(a, b) a##b
#define ATTNFAST_SIMT_CAT(a, b) ATTNFAST_SIMT_CAT2(a, b)

PyMODINIT_FUNC ATTNFAST_SIMT_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT,
                            ATTNFAST_SIMT_STR(TORCH_EXTENSION_NAME),
                            "attnfast's CUDA kernels run on the CPU by the SIMT host harness "
                            "(tests only): ops in torch.ops.attnfast_simt",
                            -1,
                            nullptr};
  return PyModule_Create(&def);
}
