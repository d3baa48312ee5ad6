// Hardware and kernel caps of the CUDA kernels that decide whether an input can run on them, in
// one place. Plain constants (no CUDA or torch headers): the kernels, the glue and the Python
// module's build_info()["limits"] (csrc/module.cpp) all read them here; the Python copy is
// attnfast/ops/limits.py.
#pragma once
#include <cstdint>

namespace attnfast {
namespace cuda {

// CUDA caps gridDim.y and gridDim.z at 65535 blocks. Kernels that put a batch-like count there
// slice it (the attention batch, the Boom epilogue's row blocks) or refuse past it with a clear
// error (glue::check_grid_yz: B * write heads of the memory kernels).
inline constexpr int64_t kMaxGridYZ = 65535;

// The DNC allocation kernels sort all N usages of a batch element (keys and slot indices) in one
// block's shared memory: N is capped here.
inline constexpr int64_t kMaxAllocSlots = 8192;

}  // namespace cuda
}  // namespace attnfast
