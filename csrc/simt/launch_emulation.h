// SIMT host harness: ATTNFAST_LAUNCH and the launch-related calls of csrc/cuda/launch.cuh,
// included by launch.cuh instead of its CUDA code when ATTNFAST_SIMT_HARNESS is defined.
//     ATTNFAST_LAUNCH(kernel, grid, block, smem_bytes, stream)(args...)
// runs `kernel` over the grid on the CPU (blocks one after another, each block's threads as
// fibers; see runtime.h) and throws std::runtime_error if the kernel misbehaves. The stream is
// ignored (the launch is synchronous). Arguments are converted to the kernel's parameter types
// as a CUDA launch does, and every CUDA thread receives its own copy.
#pragma once
#include <tuple>
#include <type_traits>
#include <utility>

#include "simt/prelude.h"

namespace attnfast {
namespace simt {

template <typename... P>
struct Launch {
  void (*fn)(P...);
  LaunchConfig cfg;

  template <typename... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "ATTNFAST_LAUNCH: wrong number of kernel arguments");
    const std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
    void (*f)(P...) = fn;
    run_grid(cfg, [&args, f] { std::apply(f, args); });
  }
};

template <typename... P>
inline Launch<P...> make_launch(void (*fn)(P...), dim3 grid, dim3 block, size_t smem_bytes,
                                cudaStream_t /*stream*/, const char* text) {
  Launch<P...> l{fn, {}};
  l.cfg.grid = grid;
  l.cfg.block = block;
  l.cfg.smem = smem_bytes;
  l.cfg.fn = reinterpret_cast<const void*>(fn);
  l.cfg.text = text;
  l.cfg.signature = __PRETTY_FUNCTION__;
  return l;
}

}  // namespace simt
}  // namespace attnfast

#define ATTNFAST_LAUNCH(kernel, grid, block, smem, stream) \
  ::attnfast::simt::make_launch(kernel, grid, block, smem, stream, #kernel)

namespace attnfast {
namespace cuda {

// The opt-in is recorded: a launch with more than 48 KiB of dynamic shared memory fails in the
// harness, as on a GPU, unless the kernel was opted in for at least that much.
template <typename Kernel>
inline cudaError_t allow_dynamic_smem(Kernel kernel, int bytes) {
  ::attnfast::simt::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace attnfast
