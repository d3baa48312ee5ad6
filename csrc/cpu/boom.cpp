// Boom on the CPU: ATen's GEMM (MKL / oneDNN) on tiles of rows, with the bias, activation,
// dropout and chunk-sum applied to each tile while it is still in cache (kernels/boom_impl.h,
// compiled per ISA). In inference only one tile of the d_ff-wide activation exists at a time.
// Backward: the fused dz pass (grad broadcast over chunks, dropout mask regenerated from the
// seed, act'(preact)) then two ATen GEMMs; the pre-activation is saved by the forward rather
// than recomputed, because recomputing it would cost a fourth GEMM (~33% more FLOPs) to save a
// tensor that eager PyTorch keeps as well.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "checks/boom.h"
#include "cpu/isa.h"
#include "cpu/kernels/boom.h"

namespace attnfast {
namespace cpu {
namespace {

const BoomKernels& kernels() {
  return select_isa(base::boom_kernels, avx2::boom_kernels, avx512::boom_kernels);
}

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kBFloat16: return DType::bf16;
    default: return DType::f16;
  }
}

// Rows per GEMM tile: big enough that the GEMM runs near its full-size speed, small enough
// that the (rows x d_ff) tile stays in the last-level cache for the epilogue.
int64_t tile_rows(int64_t f_used, int64_t elem_size) {
  const int64_t target_bytes = int64_t(4) << 20;  // 4 MiB
  int64_t rows = target_bytes / std::max<int64_t>(1, f_used * elem_size);
  rows = std::max<int64_t>(64, std::min<int64_t>(rows, 1024));
  return (rows + 15) / 16 * 16;
}

std::tuple<at::Tensor, at::Tensor> boom_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias,
                                                int64_t activation, int64_t chunk_width,
                                                double dropout_p, int64_t seed,
                                                bool save_preact) {
  checks::boom_forward(x, weight, bias, activation, chunk_width, dropout_p);
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t nchunks = F / C, f_used = nchunks * C;
  at::Tensor out = at::empty({N, C}, x.options());
  at::Tensor preact = save_preact ? at::empty({N, f_used}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {out, preact};
  const at::Tensor w_used = f_used == F ? weight : weight.narrow(0, 0, f_used);
  const at::Tensor w_t = w_used.t();
  at::Tensor bias_f32;
  if (bias.has_value()) bias_f32 = bias->narrow(0, 0, f_used).to(at::kFloat).contiguous();

  const int64_t rows_per_tile = tile_rows(f_used, x.element_size());
  at::Tensor scratch_tile;
  if (!save_preact) scratch_tile = at::empty({std::min(rows_per_tile, N), f_used}, x.options());
  const BoomKernels& k = kernels();

  BoomEpilogueArgs args{};
  args.dtype = dtype_of(x);
  args.activation = static_cast<int>(activation);
  args.bias = bias.has_value() ? bias_f32.data_ptr<float>() : nullptr;
  args.ldo = C;
  args.F = F;
  args.nchunks = nchunks;
  args.C = C;
  args.write_preact = save_preact;
  args.dropout_p = dropout_p;
  args.seed = static_cast<uint64_t>(seed);

  for (int64_t r0 = 0; r0 < N; r0 += rows_per_tile) {
    const int64_t rows = std::min(rows_per_tile, N - r0);
    at::Tensor z = save_preact ? preact.narrow(0, r0, rows) : scratch_tile.narrow(0, 0, rows);
    at::mm_out(z, x.narrow(0, r0, rows), w_t);
    args.z = z.data_ptr();
    args.ldz = f_used;
    args.out = static_cast<char*>(out.data_ptr()) + r0 * C * out.element_size();
    args.row0 = r0;
    // Grain of 1 row: rows are d_ff wide, far above the parallel-overhead threshold.
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(static_cast<size_t>(C));
      k.epilogue(args, begin, end, acc.data());
    });
  }
  return {out, preact};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& preact, bool has_bias, int64_t activation, int64_t chunk_width,
    double dropout_p, int64_t seed) {
  const at::Tensor grad_out = grad_out_in.contiguous();
  checks::boom_backward(grad_out, x, weight, preact, activation, chunk_width, dropout_p);
  TORCH_CHECK(preact.is_contiguous(), "boom_backward: preact must be contiguous");
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t nchunks = F / C, f_used = nchunks * C;
  at::Tensor grad_weight = at::zeros_like(weight);
  at::Tensor grad_bias = has_bias ? at::zeros({F}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {at::zeros_like(x), grad_weight, grad_bias};

  at::Tensor dz = at::empty({N, f_used}, x.options());
  BoomDzArgs args{};
  args.dtype = dtype_of(x);
  args.activation = static_cast<int>(activation);
  args.grad_out = grad_out.data_ptr();
  args.ldg = C;
  args.preact = preact.data_ptr();
  args.ldz = f_used;
  args.dz = dz.data_ptr();
  args.F = F;
  args.nchunks = nchunks;
  args.C = C;
  args.row0 = 0;
  args.dropout_p = dropout_p;
  args.seed = static_cast<uint64_t>(seed);
  const BoomKernels& k = kernels();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) { k.dz(args, begin, end); });

  const at::Tensor w_used = f_used == F ? weight : weight.narrow(0, 0, f_used);
  at::Tensor grad_x = at::mm(dz, w_used);
  at::Tensor grad_w_used = grad_weight.narrow(0, 0, f_used);
  at::mm_out(grad_w_used, dz.t(), x);
  if (has_bias) grad_bias.narrow(0, 0, f_used).copy_(at::sum(dz, {0}, false, at::kFloat));
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) {
  m.impl("boom_forward", &attnfast::cpu::boom_forward);
  m.impl("boom_backward", &attnfast::cpu::boom_backward);
}
