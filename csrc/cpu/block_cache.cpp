// See block_cache.h. Blocks carry their size in a 64-byte header in front of the data, so the
// deleter a tensor calls needs nothing but the data pointer.
#include "cpu/block_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <new>

namespace attnfast {
namespace cpu {
namespace {

constexpr size_t kHeader = 64;               // keeps the data 64-byte aligned
constexpr int64_t kMinBytes = int64_t(1) << 20;

int64_t limit_from_env() {
  const char* env = std::getenv("ATTNFAST_CPU_CACHE_MB");
  if (env == nullptr || *env == '\0') return int64_t(512) << 20;
  char* end = nullptr;
  errno = 0;
  const long long mb = std::strtoll(env, &end, 10);
  constexpr long long kMaxMb = std::numeric_limits<int64_t>::max() >> 20;  // bytes fit int64
  TORCH_CHECK(end != env && *end == '\0' && errno == 0 && mb >= 0 && mb <= kMaxMb,
              "ATTNFAST_CPU_CACHE_MB must be an integer in [0, ", kMaxMb, "] (megabytes), got '",
              env, "'");
  return static_cast<int64_t>(mb) << 20;
}

// Free blocks in least-recently-freed order (front = newest), indexed by size for lookup. When
// a freed block does not fit under the limit, the oldest blocks are dropped to make room: the
// newest one is the likeliest to be asked for next (a loop's next step), and stale blocks of
// another size (an earlier N) must not pin the budget.
struct Cache {
  struct Block {
    size_t bytes;
    void* ptr;  // the header address
  };
  std::mutex mu;
  std::list<Block> lru;
  std::multimap<size_t, std::list<Block>::iterator> by_size;
  int64_t cached = 0;
  std::atomic<int64_t> limit{limit_from_env()};
  int64_t hits = 0, misses = 0;

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_size.find(bytes);
    if (it == by_size.end()) {
      ++misses;
      return nullptr;
    }
    void* block = it->second->ptr;
    lru.erase(it->second);
    by_size.erase(it);
    cached -= static_cast<int64_t>(bytes);
    ++hits;
    return block;
  }

  // Keeps the block (dropping the oldest ones if needed); false if it is over the limit itself.
  bool give(void* block, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    const int64_t size = static_cast<int64_t>(bytes);
    if (size > limit.load()) return false;
    evict_locked(limit.load() - size);
    lru.push_front({bytes, block});
    by_size.emplace(bytes, lru.begin());
    cached += size;
    return true;
  }

  // Frees the oldest blocks until at most `keep` bytes remain.
  void trim(int64_t keep) {
    std::lock_guard<std::mutex> lock(mu);
    evict_locked(keep);
  }

 private:
  void evict_locked(int64_t keep) {
    while (cached > keep && !lru.empty()) {
      const Block old = lru.back();
      auto range = by_size.equal_range(old.bytes);
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second->ptr == old.ptr) {
          by_size.erase(it);
          break;
        }
      }
      lru.pop_back();
      cached -= static_cast<int64_t>(old.bytes);
      std::free(old.ptr);
    }
  }
};

// Never destroyed: tensors that outlive static destruction still return their blocks here.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

void release(void* data) {
  void* block = static_cast<char*>(data) - kHeader;
  const size_t bytes = *static_cast<size_t*>(block);
  if (!cache().give(block, bytes)) std::free(block);
}

// The cache as a c10::Allocator: a tensor's storage holds this allocator, so the tensor is a
// plain resizable CPU tensor (a resize allocates through it again) whose block comes back to
// the cache when the storage dies. Requests under kMinBytes, or with the cache off, go to c10's
// CPU allocator.
struct BlockCacheAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    if (n < static_cast<size_t>(kMinBytes) || cache().limit.load() == 0)
      return c10::GetDefaultCPUAllocator()->allocate(n);
    const size_t bytes = n + kHeader;
    void* block = cache().take(bytes);
    if (block == nullptr) {
      block = std::aligned_alloc(kHeader, (bytes + kHeader - 1) / kHeader * kHeader);
      if (block == nullptr) throw std::bad_alloc();
      *static_cast<size_t*>(block) = bytes;
    }
    void* data = static_cast<char*>(block) + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

c10::Allocator* block_cache_allocator() {
  static BlockCacheAllocator allocator;
  return &allocator;
}

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu(), "cached_empty makes CPU tensors");
  return at::detail::empty_generic(sizes, block_cache_allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

BlockCacheStats block_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.cached, c.limit.load(), c.hits, c.misses};
}

void block_cache_clear() { cache().trim(0); }

void set_block_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "the block cache limit must be >= 0 bytes, got ", bytes);
  cache().limit.store(bytes);
  cache().trim(bytes);
}

}  // namespace cpu
}  // namespace attnfast
