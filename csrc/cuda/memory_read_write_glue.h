// ATen side of the CUDA memory write (erase / add), read and DNC read (read-mode mix + read)
// kernels (memory_read_write_kernels.cuh), shared by the CUDA ops (memory_read_write.cu) and the
// SIMT harness ops (csrc/simt/memory_ops.cpp): the argument checks of the CPU ops
// (csrc/checks/memory.h: same messages), outputs and launcher calls. One function per op,
// glue::<op>(stream, <the schema's arguments>); the device adaptors (csrc/device_op.h) check the
// devices and pass the stream. float32 and float64; deterministic (no atomics).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <tuple>
#include <type_traits>

#include "checks/memory.h"
#include "cuda/glue_common.h"
#include "cuda/memory_read_write_kernels.cuh"

namespace attnfast {
namespace glue {

inline at::Tensor memory_write_forward(cudaStream_t stream, const at::Tensor& memory,
                                       const at::Tensor& ww, const at::Tensor& erase,
                                       const at::Tensor& add) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  at::Tensor out = at::empty_like(memory);
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_write_forward<T>(ptr<T>(memory), ptr<T>(ww), ptr<T>(erase), ptr<T>(add),
                                  ptr<T>(out), B, N, W, Hw, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_write_backward(
    cudaStream_t stream, const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add) {
  checks::memory_write_backward(grad, memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  check_grid_yz(B * Hw, "memory_write_backward", "B x Hw");
  // zeros: a reduction over an empty axis (N = 0 or W = 0) launches nothing.
  at::Tensor gm = at::zeros_like(memory), gw = at::zeros_like(ww), ge = at::zeros_like(erase),
             ga = at::zeros_like(add);
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_write_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(ww), ptr<T>(erase),
                                   ptr<T>(add), ptr<T>(gm), ptr<T>(gw), ptr<T>(ge), ptr<T>(ga),
                                   B, N, W, Hw, stream);
  });
  return {gm, gw, ge, ga};
}

inline at::Tensor memory_read_forward(cudaStream_t stream, const at::Tensor& memory,
                                      const at::Tensor& rw) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor out = at::empty({B, R, W}, memory.options());
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_read_forward<T>(ptr<T>(memory), ptr<T>(rw), ptr<T>(out), B, N, W, R, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> memory_read_backward(cudaStream_t stream,
                                                               const at::Tensor& grad,
                                                               const at::Tensor& memory,
                                                               const at::Tensor& rw) {
  checks::memory_read_backward(grad, memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor dm = at::empty_like(memory), dr = at::empty_like(rw);
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_read_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(rw), ptr<T>(dm), ptr<T>(dr),
                                  B, N, W, R, stream);
  });
  return {dm, dr};
}

inline std::tuple<at::Tensor, at::Tensor> dnc_read_mix_forward(
    cudaStream_t stream, const at::Tensor& memory, const at::Tensor& content, const at::Tensor& fwd,
    const at::Tensor& bwd, const at::Tensor& mode) {
  checks::dnc_read_mix(memory, content, fwd, bwd, mode);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2),
                R = content.size(1), Hw = fwd.size(2);
  at::Tensor rw = at::empty_like(content);
  at::Tensor words = at::empty({B, R, W}, memory.options());
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_read_mix_forward<T>(ptr<T>(memory), ptr<T>(content), ptr<T>(fwd), ptr<T>(bwd),
                                  ptr<T>(mode), ptr<T>(rw), ptr<T>(words), B, N, W, R, Hw,
                                  stream);
  });
  return {rw, words};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
dnc_read_mix_backward(cudaStream_t stream, const at::Tensor& grad_rw, const at::Tensor& grad_words,
                      const at::Tensor& memory, const at::Tensor& content, const at::Tensor& fwd,
                      const at::Tensor& bwd, const at::Tensor& mode) {
  checks::dnc_read_mix_backward(grad_rw, grad_words, memory, content, fwd, bwd, mode);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2),
                R = content.size(1), Hw = fwd.size(2);
  // zeros: with no read head (R = 0) nothing writes the memory's gradient.
  at::Tensor dm = at::zeros_like(memory), dc = at::empty_like(content), df = at::empty_like(fwd),
             db = at::empty_like(bwd), dmode = at::empty_like(mode);
  at::Tensor ws = workspace(memory, cuda::dnc_read_mix_backward_ws(B, R, N), memory.scalar_type());
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_read_mix_backward<T>(ptr<T>(grad_rw), ptr<T>(grad_words), ptr<T>(memory),
                                   ptr<T>(content), ptr<T>(fwd), ptr<T>(bwd), ptr<T>(mode),
                                   ptr<T>(dm), ptr<T>(dc), ptr<T>(df), ptr<T>(db), ptr<T>(dmode),
                                   ptr<T>(ws), B, N, W, R, Hw, stream);
  });
  return {dm, dc, df, db, dmode};
}

}  // namespace glue
}  // namespace attnfast
