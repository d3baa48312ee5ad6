// Kernel launch and device-attribute calls, in one place so the SIMT host harness can take
// them over. Use:
//     ATTNFAST_LAUNCH(my_kernel<T>, grid, block, smem_bytes, stream)(arg0, arg1, ...);
// With nvcc this is a plain <<<grid, block, smem, stream>>> launch; in the harness it runs
// the kernel thread by thread on the CPU.
#pragma once

#if defined(ATTNFAST_SIMT_HARNESS)
#include "simt/launch_emulation.h"
#else
#include <cuda_runtime.h>

#define ATTNFAST_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>

namespace attnfast {
namespace cuda {

// A block may use more than 48 KiB of dynamic shared memory only after opting in.
template <typename Kernel>
inline cudaError_t allow_dynamic_smem(Kernel kernel, int bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

}  // namespace cuda
}  // namespace attnfast
#endif
