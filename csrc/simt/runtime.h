// SIMT host harness, part 2: the fiber runtime (declarations; runtime.cpp has the code).
//
// A launch runs its blocks one after another on the calling OS thread. A block's CUDA threads
// are fibers (own stack, cooperative switching) scheduled round-robin; a fiber runs until it
// reaches a synchronisation point (__syncthreads, a warp collective: shuffles, votes, ldmatrix,
// mma, __syncwarp) or returns. Because a fiber only yields there, execution is deterministic and
// a deadlock is detected exactly: when no fiber can run, the runtime reports which threads wait
// where. The rules a GPU leaves undefined are errors here: a thread returning while others wait
// at __syncthreads, a warp collective whose mask names an exited lane, lanes of one warp meeting
// at different collectives, a shuffle reading a lane outside the mask. Errors surface as a
// std::runtime_error thrown from the launch (a RuntimeError in Python), never as a hang; a
// kernel that spins without ever synchronising is stopped by a watchdog after the time limit
// (ATTNFAST_SIMT_TIMEOUT_S, default 120 s), which aborts the process with a message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include <vector_types.h>

// CUDA built-in variables: per OS thread (__thread: plain TLS,
// no C++ TLS wrappers), set by the scheduler before it resumes a fiber.
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;

namespace attnfast {
namespace simt {

// Stops the calling CUDA thread and makes the launch fail with `msg` (plus the kernel, block
// and thread). Outside a launch it throws std::runtime_error.
[[noreturn]] void fail(const std::string& msg);

// __syncthreads with an optional predicate count (for __syncthreads_count/and/or).
void syncthreads(int pred, int* count_out);

unsigned lane_id();       // lane of the current CUDA thread in its warp
unsigned warp_id();       // warp of the current CUDA thread in its block
int block_threads();      // threads in the current block
unsigned active_mask();   // lanes of the current warp that exist and have not returned
long long clock_ticks();  // a monotonic counter for clock()/clock64()

enum class WarpOp : int { shfl, vote, reduce, syncwarp, ldmatrix, mma, user };
const char* warp_op_name(WarpOp op);

// A warp collective: the lanes of `mask` (that exist in the block) meet; when the last one
// arrives, it calls resolve(slots, participants) once, with slots[l] the `slot` pointer lane l
// passed (a struct on lane l's stack: inputs and outputs), then every participant continues.
using ResolveFn = void (*)(void* ctx, void* const* slots, unsigned participants);
void warp_collective_impl(unsigned mask, WarpOp op, void* slot, ResolveFn fn, void* ctx);
template <typename F>
inline void warp_collective(unsigned mask, WarpOp op, void* slot, F&& resolve) {
  using Fn = std::remove_reference_t<F>;
  warp_collective_impl(
      mask, op, slot,
      [](void* ctx, void* const* slots, unsigned participants) {
        (*static_cast<Fn*>(ctx))(slots, participants);
      },
      const_cast<void*>(static_cast<const void*>(&resolve)));
}

// ---- shared memory ------------------------------------------------------------------------------
// The dynamic shared memory of the running block (nullptr outside a launch) and its size.
unsigned char* dynamic_smem();
size_t dynamic_smem_bytes();
// Fails unless [p, p + bytes) is inside the block's dynamic shared memory, or entirely outside
// the dynamic shared memory allocation (then it is static __shared__ storage or not shared at all:
// not checked). `what` names the access in the message.
void check_smem_access(const void* p, size_t bytes, const char* what);
// An offset-like 32-bit value for hw::smem_u32 (offset into dynamic shared memory when inside it).
uint32_t smem_address(const void* p);

// cp.async: a copy of `bytes` (<= 16) read now from src (nullptr: zeros) and written to dst when
// a wait covers its group; commit closes the current group; wait leaves at most n groups pending.
void cp_async_issue(void* dst, const void* src, size_t bytes);
void cp_async_commit_group();
void cp_async_wait_groups(int n);

// Capacity of each `extern __shared__` array: the largest opt-in of any current GPU (sm_90).
constexpr size_t kMaxDynamicSmem = 227 * 1024;
// Bytes checked after each block, past the launch's dynamic shared memory size.
constexpr size_t kSmemGuard = 256;
struct ExternSmemRegistrar {
  explicit ExternSmemRegistrar(unsigned char* (*get)());
};
void register_extern_smem(unsigned char* (*get)());
unsigned char dynamic_tls_init_byte();

// ---- launches -----------------------------------------------------------------------------------
struct LaunchConfig {
  dim3 grid, block;
  size_t smem = 0;
  const void* fn = nullptr;     // the kernel's address (name lookup, dynamic smem opt-in)
  const char* text = "";        // the kernel expression as written at the launch
  const char* signature = "";   // __PRETTY_FUNCTION__ of the typed launcher (parameter types)
};
// Runs body() as every thread of every block of the grid. Throws std::runtime_error on a
// kernel error (deadlock, barrier misuse, bounds check, time limit) or an invalid configuration.
void run_grid(const LaunchConfig& cfg, const std::function<void()>& body);

// Records a dynamic shared memory opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize).
void set_max_dynamic_smem(const void* fn, int bytes);

// The launch log: one line per distinct (kernel, grid, block, smem), tab-separated:
//   kernel \t signature \t grid \t block \t smem_bytes \t launches \t status
// (status "ok" or "error"). The log is process-wide.
std::string launch_log();
void clear_launch_log();

// Scheduling order of runnable fibers: 0 forward (default), 1 reverse, 2 pseudo-random (seeded),
// to expose missing __syncthreads whose effect depends on the order threads run in.
void set_schedule(int policy, uint64_t seed);

}  // namespace simt
}  // namespace attnfast

// Defines the storage of `extern __shared__ T NAME[]` as declared inside namespace NS by kernel
// code (a block-scope extern declaration names a variable of the enclosing namespace), e.g.
//     ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::boom_detail, boom_smem_raw)
// Put it in exactly one harness .cpp (after including the kernel header). A missing definition
// shows as "undefined symbol: ...NAME..." when the extension is loaded.
// (The initializer is dynamic on purpose: kernel code reaches an `extern thread_local` through
// GCC's TLS wrapper, which calls the variable's TLS init function; a dynamic initializer makes
// this translation unit define that function.)
#define ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(NS, NAME)                                         \
  namespace NS {                                                                             \
  alignas(1024) thread_local unsigned char NAME[::attnfast::simt::kMaxDynamicSmem +         \
                                                ::attnfast::simt::kSmemGuard] = {           \
      ::attnfast::simt::dynamic_tls_init_byte()};                                            \
  }                                                                                          \
  static ::attnfast::simt::ExternSmemRegistrar attnfast_simt_extern_smem_##NAME(             \
      []() -> unsigned char* { return &::NS::NAME[0]; });
