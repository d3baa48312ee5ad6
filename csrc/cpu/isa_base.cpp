// CPU kernels for the x86-64 baseline (SSE2) and for non-x86 targets.
#define ATTNFAST_CPU_ISA base
#include "cpu/isa_kernels.h"
