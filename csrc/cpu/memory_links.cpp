// The DNC temporal link op on the CPU (the link update fused with the directional reads): the glue
// (memory_glue.h) around the per-ISA loops of kernels/memory_links_impl.h. Its N x N outputs come
// from the block cache (block_cache.h).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "checks/memory.h"
#include "cpu/block_cache.h"
#include "cpu/memory_glue.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

using namespace memory_glue;

template <typename T>
LinkArgs<T> link_args(const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
                      const at::Tensor& rw) {
  LinkArgs<T> a{};
  a.link = link.data_ptr<T>();
  a.prec = prec.data_ptr<T>();
  a.ww = ww.data_ptr<T>();
  a.rw = rw.data_ptr<T>();
  a.B = link.size(0);
  a.Hw = link.size(1);
  a.N = link.size(2);
  a.R = rw.size(1);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_link_read_forward(
    const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  at::Tensor nl = cached_empty(link.sizes(), link.options()), np = at::empty_like(prec);
  at::Tensor f = at::empty({B, R, Hw, N}, link.options()),
             bk = at::empty({B, R, Hw, N}, link.options());
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "dnc_link_read_forward", [&] {
    auto a = link_args<scalar_t>(link, prec, ww, rw);
    a.new_link = nl.data_ptr<scalar_t>();
    a.new_prec = np.data_ptr<scalar_t>();
    a.fwd = f.data_ptr<scalar_t>();
    a.bwd = bk.data_ptr<scalar_t>();
    run_with_task_scratch<scalar_t>(B, Hw * N * N * (1 + R), link_forward_scratch(R, N), link, a,
                                    table<scalar_t>().link_forward);
  });
  return {nl, np, f, bk};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_link_read_backward(
    const at::Tensor& g_link, const at::Tensor& g_prec, const at::Tensor& g_fwd,
    const at::Tensor& g_bwd, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw) {
  checks::dnc_link_read_backward(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  at::Tensor dl = cached_empty(link.sizes(), link.options()), dp = at::empty_like(prec),
             dw = at::empty_like(ww), dr = at::empty_like(rw);
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "dnc_link_read_backward", [&] {
    auto a = link_args<scalar_t>(link, prec, ww, rw);
    a.g_link = g_link.data_ptr<scalar_t>();
    a.g_prec = g_prec.data_ptr<scalar_t>();
    a.g_fwd = g_fwd.data_ptr<scalar_t>();
    a.g_bwd = g_bwd.data_ptr<scalar_t>();
    a.d_link = dl.data_ptr<scalar_t>();
    a.d_prec = dp.data_ptr<scalar_t>();
    a.d_ww = dw.data_ptr<scalar_t>();
    a.d_rw = dr.data_ptr<scalar_t>();
    run_with_task_scratch<scalar_t>(B, Hw * N * N * (2 + 2 * R), link_backward_scratch(R, N), link,
                                    a, table<scalar_t>().link_backward);
  });
  return {dl, dp, dw, dr};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_MEMORY_LINKS_OPS(ATTNFAST_IMPL_CPU) }
