#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace attnfast {
namespace cpu {
namespace {

// -1: no cap set from Python; otherwise the Isa value set by set_active_isa.
std::atomic<int> g_cap{-1};

Isa parse_isa(const std::string& name) {
  if (name == "base") return Isa::base;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("attnfast: unknown CPU ISA '" + name +
                              "' (expected one of: base, avx2, avx512)");
}

Isa env_cap() {
  const char* env = std::getenv("ATTNFAST_CPU_ISA");
  if (env == nullptr || *env == '\0') return Isa::avx512;
  return parse_isa(env);
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "base";
  }
}

std::vector<Isa> compiled_isas() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return {Isa::base, Isa::avx2, Isa::avx512};
#else
  return {Isa::base};
#endif
}

Isa best_supported_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const Isa best = [] {
    __builtin_cpu_init();
    // The AVX-512 build uses F, BW, VL, DQ and BF16 (vdpbf16ps / vcvtneps2bf16).
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bf16"))
      return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::base;
  }();
  return best;
#else
  return Isa::base;
#endif
}

Isa active_isa() {
  const int cap = g_cap.load(std::memory_order_relaxed);
  const Isa limit = cap >= 0 ? static_cast<Isa>(cap) : env_cap();
  const Isa best = best_supported_isa();
  return static_cast<int>(limit) < static_cast<int>(best) ? limit : best;
}

void set_active_isa(const std::string& name) {
  if (name.empty()) {
    g_cap.store(-1);
    return;
  }
  const Isa isa = parse_isa(name);
  if (static_cast<int>(isa) > static_cast<int>(best_supported_isa()))
    throw std::invalid_argument(std::string("attnfast: this CPU/build supports at most '") +
                                isa_name(best_supported_isa()) + "', not '" + name + "'");
  g_cap.store(static_cast<int>(isa));
}

const KernelTable& isa_kernels() {
  switch (active_isa()) {
    case Isa::avx512: return avx512::kernel_table;
    case Isa::avx2: return avx2::kernel_table;
    default: return base::kernel_table;
  }
}

}  // namespace cpu
}  // namespace attnfast
