// Included by each isa_*.cpp after its `#pragma GCC target`: instantiates every CPU kernel
// family for that instruction set inside namespace attnfast::cpu::ATTNFAST_CPU_ISA, and that
// level's KernelTable (isa.h), the one entry point of the glue (csrc/cpu/<family>.cpp).
// Only torch-free headers here, and the std headers come first in isa_*.cpp, before the pragma:
// an inline function emitted from an AVX-512 TU and merged by the linker into code that runs on
// an older CPU would be an illegal instruction.
#include "common/activations.h"
#include "common/memory_math.h"
#include "common/philox.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/attention.h"
#include "cpu/kernels/boom.h"
#include "cpu/kernels/lstm.h"
#include "cpu/kernels/gemm_isa.h"  // <immintrin.h> + ATTNFAST_CPU_GEMM_AVX512 (avx512 TU only)
#include "cpu/kernels/memory.h"

namespace attnfast {
namespace cpu {
namespace ATTNFAST_CPU_ISA {

#include "cpu/kernels/gemm_impl.h"  // AVX-512 GEMM packing + micro-kernel (empty elsewhere)
#include "cpu/kernels/gemm_driver_impl.h"  // its blocked driver + plain GEMM (empty elsewhere)
#include "cpu/kernels/attention_impl.h"
#include "cpu/kernels/boom_impl.h"
#include "cpu/kernels/memory_impl.h"
#include "cpu/kernels/lstm_impl.h"  // after memory_impl.h, which brings in lanes.h

extern const KernelTable kernel_table;
const KernelTable kernel_table{&attention_kernels, &boom_kernels, &memory_kernels,
                               &lstm_kernels};

}  // namespace ATTNFAST_CPU_ISA
}  // namespace cpu
}  // namespace attnfast
