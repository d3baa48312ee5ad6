// Memory addressing CPU loops for the base instruction set (see csrc/cpu/isa.h for the scheme;
// kept out of isa_kernels.h so that editing the memory loops rebuilds only these files).
// x86-64 baseline (SSE2) and non-x86 targets: no target pragma.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/memory_math.h"
#include "cpu/kernels/memory.h"

namespace attnfast {
namespace cpu {
namespace base {

#include "cpu/kernels/memory_impl.h"

}  // namespace base
}  // namespace cpu
}  // namespace attnfast
