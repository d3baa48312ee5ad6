// A small cache of large CPU blocks for the tensors a training loop allocates and frees every
// step: the N x N tensors of the memory ops (the DNC link and its gradient), and the attention
// kernels' outputs, gradients and scratch (packed K/V operands, dQ buffers).
//
// Why: a 16 MB block that glibc gets from (and returns to) the kernel costs a page fault per 4 KiB
// on first touch and an munmap on free; on the 2-core machine this project is measured on that is
// ~3 ms + ~1 ms per block, more than the link kernels themselves (bench/memory.py --breakdown).
// Blocks freed by attnfast's tensors go back to this cache and are handed out again to the next
// request of the same size, still mapped. Like PyTorch's CUDA caching allocator, the cache keeps
// what it holds until `block_cache_clear()`; unlike it, it is bounded: at most
// ATTNFAST_CPU_CACHE_MB megabytes (default 512; 0 turns the cache off): a freed block that does
// not fit pushes out the least recently freed ones, and one larger than the bound goes straight
// back to the system. Only requests of at least 1 MiB use it. The cache is a c10::Allocator held
// by the tensors' storages, so they are ordinary resizable CPU tensors. The blocks come from
// aligned_alloc, not c10's CPU allocator, so torch.profiler's memory view does not see them
// (bench/harness.py turns the cache off while it measures memory).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace attnfast {
namespace cpu {

// at::empty(sizes, options) for a CPU tensor, served from the cache when large enough.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

struct BlockCacheStats {
  int64_t cached_bytes;    // held by the cache now (free blocks)
  int64_t limit_bytes;     // ATTNFAST_CPU_CACHE_MB, or set_block_cache_limit
  int64_t hits;            // requests served from the cache
  int64_t misses;          // requests that allocated
};

BlockCacheStats block_cache_stats();
void block_cache_clear();                  // frees every cached block
void set_block_cache_limit(int64_t bytes);  // also trims the cache to the new limit

}  // namespace cpu
}  // namespace attnfast
