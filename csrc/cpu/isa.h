// Which instruction set the CPU kernels run with. Every kernel family under csrc/cpu/kernels/
// (attention, Boom, the memory ops) is compiled once per ISA level (isa_base.cpp, isa_avx2.cpp,
// isa_avx512.cpp, each with its own `#pragma GCC target`; isa_kernels.h), into namespaces
// attnfast::cpu::{base,avx2,avx512}, each of which defines one KernelTable; the level is chosen at
// run time from CPUID, so a CPU without AVX-512 never meets an AVX-512 instruction.
// ATTNFAST_CPU_ISA=base|avx2|avx512 caps the level (e.g. to test the AVX2 build on an
// AVX-512 machine); asking for more than the CPU supports is an error.
#pragma once
#include <string>
#include <vector>

#include "cpu/kernel_table.h"  // KernelTable, isa_kernels()

namespace attnfast {
namespace cpu {

enum class Isa : int { base = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
std::vector<Isa> compiled_isas();
Isa best_supported_isa();  // what this CPU and this build can run
Isa active_isa();          // best_supported_isa(), capped by ATTNFAST_CPU_ISA / set_active_isa
void set_active_isa(const std::string& name);  // "" restores the default

}  // namespace cpu
}  // namespace attnfast
