// attnfast._C: a pybind11 module whose only Python-visible job is to report how it was built.
// The ops themselves are registered with the dispatcher (csrc/schemas.cpp and the
// TORCH_LIBRARY_IMPL blocks next to each kernel) and called through torch.ops.attnfast.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "cpu/isa.h"

#ifndef ATTNFAST_TORCH_VERSION
#define ATTNFAST_TORCH_VERSION "unknown"
#endif
#ifndef ATTNFAST_CUDA_ARCHS
#define ATTNFAST_CUDA_ARCHS ""
#endif
#ifndef ATTNFAST_NO_CUDA_REASON
#define ATTNFAST_NO_CUDA_REASON ""
#endif

namespace py = pybind11;

namespace {

std::string compiler_version() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

py::dict build_info() {
  using attnfast::cpu::Isa;
  py::dict info;
  std::vector<std::string> backends{"cpu"};
#ifdef ATTNFAST_WITH_CUDA
  backends.push_back("cuda");
  info["cuda_archs"] = std::string(ATTNFAST_CUDA_ARCHS);
  info["cuda_missing_reason"] = py::none();
#else
  info["cuda_archs"] = std::string();
  info["cuda_missing_reason"] = std::string(ATTNFAST_NO_CUDA_REASON);
#endif
  info["backends"] = backends;
  info["compiler"] = compiler_version();
  info["torch_version"] = std::string(ATTNFAST_TORCH_VERSION);
#ifdef _OPENMP
  info["openmp"] = static_cast<int>(_OPENMP);
#else
  info["openmp"] = py::none();
#endif
  std::vector<std::string> compiled;
  for (Isa isa : attnfast::cpu::compiled_isas()) compiled.emplace_back(attnfast::cpu::isa_name(isa));
  info["cpu_isas_compiled"] = compiled;
  info["cpu_isa_supported"] = std::string(attnfast::cpu::isa_name(attnfast::cpu::best_supported_isa()));
  info["cpu_isa"] = std::string(attnfast::cpu::isa_name(attnfast::cpu::active_isa()));
#ifdef ATTNFAST_DEBUG
  info["debug"] = true;
#else
  info["debug"] = false;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "attnfast compiled kernels (ops are in torch.ops.attnfast)";
  m.def("build_info", &build_info, "How this extension was built and which CPU ISA it runs");
  m.def("set_cpu_isa", [](const std::string& name) { attnfast::cpu::set_active_isa(name); },
        "Cap the CPU instruction set used by the kernels (base, avx2, avx512); for tests");
}
