// Memory addressing CPU loops for the avx2 instruction set (see csrc/cpu/isa.h for the scheme;
// kept out of isa_kernels.h so that editing the memory loops rebuilds only these files).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/memory_math.h"
#include "cpu/kernels/memory.h"

namespace attnfast {
namespace cpu {
namespace avx2 {

#include "cpu/kernels/memory_impl.h"

}  // namespace avx2
}  // namespace cpu
}  // namespace attnfast
