// The dropout seed of the ops with dropout (boom_*, attention_*), shared by every entry point
// (CPU, CUDA, SIMT harness). The schemas take it as a tensor -- a one-element int64 CPU tensor
// holding the 64-bit Philox key's bit pattern (keys in [2^63, 2^64) wrapped to negative int64;
// attnfast/ops/seed.py) -- so that torch.compile neither breaks the graph on a seed nor
// recompiles for each new one. It is read here, once, on the host; the kernels still take the
// key as a uint64_t (csrc/common/philox.h), so the masks are the same as with an int seed.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace attnfast {
namespace checks {

// Checks `seed` (op names the op in the error) and returns the Philox key.
inline uint64_t dropout_seed(const at::Tensor& seed, const char* op) {
  TORCH_CHECK(seed.defined(), op,
              ": seed must be a one-element int64 CPU tensor, got an undefined tensor");
  TORCH_CHECK(seed.scalar_type() == at::kLong, op,
              ": seed must be an int64 tensor (the 64-bit Philox key), got ", seed.scalar_type());
  TORCH_CHECK(seed.numel() == 1, op, ": seed must have one element (a 0-dim tensor), got shape ",
              seed.sizes());
  TORCH_CHECK(seed.device().is_cpu(), op,
              ": seed must be a CPU tensor (it is read on the host), got device ", seed.device());
  return static_cast<uint64_t>(seed.item<int64_t>());
}

}  // namespace checks
}  // namespace attnfast
