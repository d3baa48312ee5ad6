// Included by each isa_*.cpp after its `#pragma GCC target`: instantiates every CPU kernel
// family for that instruction set inside namespace attnfast::cpu::ATTNFAST_CPU_ISA.
// Only std-free, torch-free headers here: an inline function emitted from an AVX-512 TU and
// merged by the linker into code that runs on an older CPU would be an illegal instruction.
#include "common/activations.h"
#include "common/philox.h"
#include "cpu/kernels/attention.h"
#include "cpu/kernels/boom.h"
#include "cpu/kernels/gemm_isa.h"  // <immintrin.h> + ATTNFAST_CPU_GEMM_AVX512 (avx512 TU only)

namespace attnfast {
namespace cpu {
namespace ATTNFAST_CPU_ISA {

#include "cpu/kernels/gemm_impl.h"  // AVX-512 GEMM packing + micro-kernel (empty elsewhere)
#include "cpu/kernels/gemm_driver_impl.h"  // its blocked driver + plain GEMM (empty elsewhere)
#include "cpu/kernels/attention_impl.h"
#include "cpu/kernels/boom_impl.h"

}  // namespace ATTNFAST_CPU_ISA
}  // namespace cpu
}  // namespace attnfast
