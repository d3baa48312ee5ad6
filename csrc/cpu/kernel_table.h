// The CPU kernels of one ISA level, by family: each isa_*.cpp defines one KernelTable
// (isa_kernels.h) from the tables of csrc/cpu/kernels/<family>.h, and the glue
// (csrc/cpu/<family>.cpp) reaches every kernel through isa_kernels(), the table of the active
// level (isa.h). No std or torch headers: the per-ISA TUs include it after their target pragma.
#pragma once

namespace attnfast {
namespace cpu {

struct AttentionKernels;
struct BoomKernels;
struct LstmKernels;
struct MemoryKernels;

struct KernelTable {
  const AttentionKernels* attention;
  const BoomKernels* boom;
  const MemoryKernels* memory;
  const LstmKernels* lstm;
};

namespace base { extern const KernelTable kernel_table; }
namespace avx2 { extern const KernelTable kernel_table; }
namespace avx512 { extern const KernelTable kernel_table; }

// The table of the active ISA (isa.h; read per call: set_active_isa may change it between calls).
const KernelTable& isa_kernels();

}  // namespace cpu
}  // namespace attnfast
