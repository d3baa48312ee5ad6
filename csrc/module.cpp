// attnfast._C: a pybind11 module whose only Python-visible job is to report how it was built.
// The ops themselves are registered with the dispatcher (csrc/schemas.cpp, and the
// TORCH_LIBRARY_IMPL blocks that csrc/op_lists.h generates next to each family's kernels) and
// called through torch.ops.attnfast.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "cpu/block_cache.h"
#include "cpu/isa.h"
#include "cuda/attention_strategy.h"
#include "cuda/limits.h"  // plain constants, no CUDA headers

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
  // The GPU kernels' caps (csrc/cuda/limits.h), whether or not this build has them; the Python
  // copy (attnfast/ops/limits.py) is checked against these.
  py::dict limits;
  limits["cuda_max_grid_yz"] = attnfast::cuda::kMaxGridYZ;
  limits["cuda_max_alloc_slots"] = attnfast::cuda::kMaxAllocSlots;
  info["limits"] = limits;
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
  m.def("cpu_cache_info", [] {
        const auto s = attnfast::cpu::block_cache_stats();
        py::dict d;
        d["cached_bytes"] = s.cached_bytes;
        d["limit_bytes"] = s.limit_bytes;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        return d;
      }, "The CPU block cache of the memory ops' N x N tensors (csrc/cpu/block_cache.h)");
  m.def("cpu_cache_clear", &attnfast::cpu::block_cache_clear, "Free every cached CPU block");
  m.def("set_cpu_cache_limit", &attnfast::cpu::set_block_cache_limit,
        "Bound the CPU block cache (bytes; 0 turns it off) and trim it to the bound");
  // The GPU attention's strategy rule as the CUDA and SIMT ops apply it (csrc/cuda/
  // attention_strategy.h), so tests can hold it against its authority,
  // triton_kernels/attention_strategy.py: same answers, same ValueError for a bad value.
  m.def("attention_use_gemm", [](int64_t D, int64_t Dv) {
        try {
          return attnfast::attention_gemm::use_gemm_strategy(D, Dv);
        } catch (const c10::ValueError& e) {
          throw py::value_error(e.what_without_backtrace());
        }
      }, "Whether the GPU attention takes the GEMM strategy (ATTNFAST_ATTN_STRATEGY)");
  m.def("attention_chunk_rows", [](int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Dv,
                                   bool causal) {
        try {
          return attnfast::attention_gemm::chunk_rows(B, Lq, Lk, D, Dv, causal);
        } catch (const c10::ValueError& e) {
          throw py::value_error(e.what_without_backtrace());
        }
      }, "Query rows per chunk of the GPU attention's GEMM strategy (ATTNFAST_ATTN_GEMM_ROWS)");
}
