// Memory write (erase / add) and read ops on the CPU, and the DNC read (read-mode mix, then the
// read): the glue (memory_glue.h) around the per-ISA loops of kernels/memory_read_write_impl.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "checks/memory.h"
#include "cpu/memory_glue.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

using namespace memory_glue;

template <typename T>
WriteArgs<T> write_args(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                        const at::Tensor& add) {
  WriteArgs<T> a{};
  a.memory = memory.data_ptr<T>();
  a.ww = ww.data_ptr<T>();
  a.erase = erase.data_ptr<T>();
  a.add = add.data_ptr<T>();
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.W = memory.size(2);
  a.Hw = ww.size(1);
  return a;
}

at::Tensor memory_write_forward(const at::Tensor& memory, const at::Tensor& ww,
                                const at::Tensor& erase, const at::Tensor& add) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  at::Tensor out = at::empty_like(memory);
  at::Tensor s = scratch(memory, B, 3 * W);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_write_forward", [&] {
    auto a = write_args<scalar_t>(memory, ww, erase, add);
    a.out = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 3 * W;
    run(B, 2 * Hw * N * W, a, table<scalar_t>().write_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add) {
  checks::memory_write_backward(grad, memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);

  at::Tensor gm = at::empty_like(memory), gw = at::empty_like(ww), ge = at::empty_like(erase),
             ga = at::empty_like(add);
  at::Tensor s = scratch(memory, B, 3 * W);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_write_backward", [&] {
    auto a = write_args<scalar_t>(memory, ww, erase, add);
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_memory = gm.data_ptr<scalar_t>();
    a.grad_ww = gw.data_ptr<scalar_t>();
    a.grad_erase = ge.data_ptr<scalar_t>();
    a.grad_add = ga.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 3 * W;
    run(B, (Hw + 2) * Hw * N * W, a, table<scalar_t>().write_backward);
  });
  return {gm, gw, ge, ga};
}

template <typename T>
ReadArgs<T> read_args(const at::Tensor& memory, const at::Tensor& rw) {
  ReadArgs<T> a{};
  a.memory = memory.data_ptr<T>();
  a.rw = rw.data_ptr<T>();
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.W = memory.size(2);
  a.R = rw.size(1);
  return a;
}

at::Tensor memory_read_forward(const at::Tensor& memory, const at::Tensor& rw) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor out = at::empty({B, R, W}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_read_forward", [&] {
    auto a = read_args<scalar_t>(memory, rw);
    a.words = out.data_ptr<scalar_t>();
    run(B, R * N * W, a, table<scalar_t>().read_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> memory_read_backward(const at::Tensor& grad,
                                                        const at::Tensor& memory,
                                                        const at::Tensor& rw) {
  checks::memory_read_backward(grad, memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor dm = at::empty_like(memory), dr = at::empty_like(rw);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_read_backward", [&] {
    auto a = read_args<scalar_t>(memory, rw);
    a.grad = grad.data_ptr<scalar_t>();
    a.d_memory = dm.data_ptr<scalar_t>();
    a.d_rw = dr.data_ptr<scalar_t>();
    run(B, 2 * R * N * W, a, table<scalar_t>().read_backward);
  });
  return {dm, dr};
}

template <typename T>
ReadMixArgs<T> read_mix_args(const at::Tensor& memory, const at::Tensor& rw,
                             const at::Tensor& content, const at::Tensor& fwd,
                             const at::Tensor& bwd, const at::Tensor& mode) {
  ReadMixArgs<T> a{};
  a.read = read_args<T>(memory, rw);
  a.rw = rw.data_ptr<T>();
  a.content = content.data_ptr<T>();
  a.fwd = fwd.data_ptr<T>();
  a.bwd = bwd.data_ptr<T>();
  a.mode = mode.data_ptr<T>();
  a.Hw = fwd.size(2);
  return a;
}

std::tuple<at::Tensor, at::Tensor> dnc_read_mix_forward(const at::Tensor& memory,
                                                        const at::Tensor& content,
                                                        const at::Tensor& fwd,
                                                        const at::Tensor& bwd,
                                                        const at::Tensor& mode) {
  checks::dnc_read_mix(memory, content, fwd, bwd, mode);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2),
                R = content.size(1), Hw = fwd.size(2);
  at::Tensor rw = at::empty_like(content);
  at::Tensor words = at::empty({B, R, W}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "dnc_read_mix_forward", [&] {
    auto a = read_mix_args<scalar_t>(memory, rw, content, fwd, bwd, mode);
    a.read.words = words.data_ptr<scalar_t>();
    run(B, R * N * (W + 2 * Hw + 1), a, table<scalar_t>().read_mix_forward);
  });
  return {rw, words};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_read_mix_backward(
    const at::Tensor& grad_rw, const at::Tensor& grad_words, const at::Tensor& memory,
    const at::Tensor& content, const at::Tensor& fwd, const at::Tensor& bwd,
    const at::Tensor& mode) {
  checks::dnc_read_mix_backward(grad_rw, grad_words, memory, content, fwd, bwd, mode);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2),
                R = content.size(1), Hw = fwd.size(2);
  at::Tensor dm = at::empty_like(memory), dc = at::empty_like(content),
             df = at::empty_like(fwd), db = at::empty_like(bwd), dmode = at::empty_like(mode);
  at::Tensor rw = at::empty_like(content), drw = at::empty_like(content);  // buffers
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "dnc_read_mix_backward", [&] {
    auto a = read_mix_args<scalar_t>(memory, rw, content, fwd, bwd, mode);
    a.read.grad = grad_words.data_ptr<scalar_t>();
    a.read.d_memory = dm.data_ptr<scalar_t>();
    a.read.d_rw = drw.data_ptr<scalar_t>();
    a.grad_rw = grad_rw.data_ptr<scalar_t>();
    a.d_content = dc.data_ptr<scalar_t>();
    a.d_fwd = df.data_ptr<scalar_t>();
    a.d_bwd = db.data_ptr<scalar_t>();
    a.d_mode = dmode.data_ptr<scalar_t>();
    run(B, R * N * (2 * W + 4 * Hw + 2), a, table<scalar_t>().read_mix_backward);
  });
  return {dm, dc, df, db, dmode};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_MEMORY_READ_WRITE_OPS(ATTNFAST_IMPL_CPU) }
