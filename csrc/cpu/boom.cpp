// Boom on the CPU. Forward, two paths (chosen by use_attnfast_gemm below):
//  - fused GEMM (AVX-512 build): attnfast's own blocked GEMM (kernels/gemm_*impl.h) with the
//    bias, activation, dropout and chunk-sum fused per output block (kernels/gemm_boom_impl.h):
//    the d_ff-wide activation never exists beyond one L2-sized fp32 block per thread.
//  - ATen GEMM (MKL / oneDNN) on tiles of rows, with the epilogue applied to each tile while
//    it is still in cache (kernels/boom_impl.h, compiled per ISA): base and AVX2 builds, and
//    whenever ATTNFAST_CPU_BOOM_GEMM=aten.
// Backward: the fused dz pass (grad broadcast over chunks, dropout mask regenerated from the
// seed, act'(preact)) then two GEMMs (attnfast's with AVX-512, else ATen's); the
// pre-activation is saved by the forward rather than recomputed, because recomputing it would
// cost a fourth GEMM (~33% more FLOPs) to save a tensor that eager PyTorch keeps as well.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/Utils.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "checks/boom.h"
#include "checks/seed.h"
#include "cpu/isa.h"
#include "cpu/kernels/boom.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

const BoomKernels& kernels() { return *isa_kernels().boom; }

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

// Which GEMM the Boom ops use: ATTNFAST_CPU_BOOM_GEMM=auto (default) | fused | aten.
// `fused` = attnfast's AVX-512 GEMM (the forward with its epilogue fused, the backward's plain
// GEMMs); it exists only where the active ISA table has it (AVX-512 with BF16), elsewhere the
// setting falls back to ATen quietly, as the ISA cap does. auto = attnfast's GEMM wherever it
// was measured faster than ATen's (bench/notes/boom_cpu.md): forward and backward, from
// kMinRowsAuto rows (below that the call is a memory-bound GEMV-like product where packing W,
// one extra pass over it per call, is not repaid), except bf16 on a CPU with AMX: there ATen's
// GEMM (oneDNN) runs on the AMX tiles, far past the vdpbf16ps roof of attnfast's.
constexpr int64_t kMinRowsAuto = 16;

bool cpu_has_amx_bf16() {
  static const bool amx = [] {
    const auto caps = at::cpu::get_cpu_capabilities();
    const auto it = caps.find("amx_bf16");
    return it != caps.end() && it->second.isBool() && it->second.toBool();
  }();
  return amx;
}

bool use_attnfast_gemm(const BoomKernels& k, const at::Tensor& x) {
  if (k.gemm == nullptr || k.mm == nullptr || x.size(1) == 0) return false;
  const char* env = std::getenv("ATTNFAST_CPU_BOOM_GEMM");
  if (env != nullptr && std::strcmp(env, "fused") == 0) return true;
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0)
    return x.size(0) >= kMinRowsAuto && !(x.scalar_type() == at::kBFloat16 && cpu_has_amx_bf16());
  TORCH_CHECK(std::strcmp(env, "aten") == 0,
              "ATTNFAST_CPU_BOOM_GEMM must be auto, fused or aten, got '", env, "'");
  return false;
}

GemmArgs gemm_args(const at::Tensor& a, const at::Tensor& b) {
  GemmArgs g{};
  g.dtype = dtype_of(a);
  g.M = a.size(0);
  g.K = a.size(1);
  g.N = b.size(1);
  g.a = a.data_ptr();
  g.a_row = a.stride(0);
  g.a_k = a.stride(1);
  g.b = b.data_ptr();
  g.b_col = b.stride(1);
  g.b_k = b.stride(0);
  return g;
}

// Runs one attnfast GEMM: packs B once (parallel over column panels), then one task per
// thread, each a contiguous range of rows with its own 64-byte aligned scratch slot; the
// buffers come from ATen so that memory is accounted for. rows(g, begin, end, scratch).
template <typename RowsFn>
void run_gemm(const GemmKernels& mm, GemmArgs& g, const GemmPlan& plan, RowsFn rows) {
  const auto bytes = at::TensorOptions().dtype(at::kByte);
  at::Tensor packed = at::empty({plan.packed_b_bytes}, bytes);
  g.packed_b = packed.data_ptr();
  at::parallel_for(0, plan.b_panels, 1, [&](int64_t b, int64_t e) { mm.pack_b(g, b, e); });
  // Fewer tasks than threads when there are too few rows to fill the micro-tiles.
  const int64_t tasks = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), g.M / plan.min_rows_per_task));
  const int64_t slot = (plan.scratch_bytes + 63) / 64 * 64;
  at::Tensor scratch = at::empty({tasks * slot + 64}, bytes);
  char* base = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(scratch.data_ptr()) + 63) / 64 * 64);
  at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) rows(g.M * t / tasks, g.M * (t + 1) / tasks, base + t * slot);
  });
}

// c (M, N) = a (M, K) @ b (K, N), any strides for a and b, c with unit column stride.
void attnfast_mm_out(const GemmKernels& mm, const at::Tensor& a, const at::Tensor& b,
                     at::Tensor& c) {
  GemmArgs g = gemm_args(a, b);
  g.c = c.data_ptr();
  g.ldc = c.stride(0);
  run_gemm(mm, g, mm.plan(g), [&](int64_t m0, int64_t m1, void* s) { mm.rows(g, m0, m1, s); });
}

// The fused forward: x W^T through the Boom epilogue (kernels/gemm_boom_impl.h).
void fused_forward(const BoomKernels& k, const at::Tensor& x, const at::Tensor& w_used,
                   const at::Tensor& bias_f32, int64_t activation, int64_t C, int64_t F,
                   double dropout_p, uint64_t seed, at::Tensor& out, at::Tensor* preact) {
  BoomGemmArgs a{};
  a.gemm = gemm_args(x, w_used.t());
  a.activation = static_cast<int>(activation);
  a.bias = bias_f32.defined() ? bias_f32.data_ptr<float>() : nullptr;
  a.out = out.data_ptr();
  a.C = C;
  a.F = F;
  a.preact = preact ? preact->data_ptr() : nullptr;
  a.dropout_p = dropout_p;
  a.seed = seed;
  run_gemm(*k.mm, a.gemm, k.gemm->plan(a), [&](int64_t r0, int64_t r1, void* s) {
    k.gemm->forward_rows(a, r0, r1, s);
  });
}

std::tuple<at::Tensor, at::Tensor> boom_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias,
                                                int64_t activation, int64_t chunk_width,
                                                double dropout_p, const at::Tensor& seed_t,
                                                bool save_preact) {
  checks::boom_forward(x, weight, bias, activation, chunk_width, dropout_p);
  const uint64_t seed = checks::dropout_seed(seed_t, "boom_forward");
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t nchunks = F / C, f_used = nchunks * C;
  at::Tensor out = at::empty({N, C}, x.options());
  at::Tensor preact = save_preact ? at::empty({N, f_used}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {out, preact};
  const at::Tensor w_used = f_used == F ? weight : weight.narrow(0, 0, f_used);
  const at::Tensor w_t = w_used.t();
  at::Tensor bias_f32;
  if (bias.has_value()) bias_f32 = bias->narrow(0, 0, f_used).to(at::kFloat).contiguous();

  const BoomKernels& k = kernels();
  if (use_attnfast_gemm(k, x)) {
    fused_forward(k, x, w_used, bias_f32, activation, C, F, dropout_p, seed, out,
                  save_preact ? &preact : nullptr);
    return {out, preact};
  }

  const int64_t rows_per_tile = tile_rows(f_used, x.element_size());
  at::Tensor scratch_tile;
  if (!save_preact) scratch_tile = at::empty({std::min(rows_per_tile, N), f_used}, x.options());
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
  args.seed = seed;

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
    double dropout_p, const at::Tensor& seed_t) {
  const at::Tensor grad_out = grad_out_in.contiguous();
  checks::boom_backward(grad_out, x, weight, preact, activation, chunk_width, dropout_p);
  const uint64_t seed = checks::dropout_seed(seed_t, "boom_backward");
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
  args.seed = seed;
  const BoomKernels& k = kernels();
  // One task per thread, each with its own fp32 partial column sums of dz (grad_bias), summed
  // below: the bias gradient costs no extra pass over the N x d_ff dz.
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N / 16));
  at::Tensor partial_bias_grad =
      has_bias ? at::zeros({tasks, f_used}, x.options().dtype(at::kFloat)) : at::Tensor();
  at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      BoomDzArgs task_args = args;
      task_args.bias_grad = has_bias ? partial_bias_grad[t].data_ptr<float>() : nullptr;
      k.dz(task_args, N * t / tasks, N * (t + 1) / tasks);
    }
  });

  const at::Tensor w_used = f_used == F ? weight : weight.narrow(0, 0, f_used);
  at::Tensor grad_w_used = grad_weight.narrow(0, 0, f_used);
  at::Tensor grad_x;
  if (use_attnfast_gemm(k, x)) {
    grad_x = at::empty_like(x);
    attnfast_mm_out(*k.mm, dz, w_used, grad_x);
    attnfast_mm_out(*k.mm, dz.t(), x, grad_w_used);
  } else {
    grad_x = at::mm(dz, w_used);
    at::mm_out(grad_w_used, dz.t(), x);
  }
  if (has_bias) grad_bias.narrow(0, 0, f_used).copy_(partial_bias_grad.sum(0));
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_BOOM_OPS(ATTNFAST_IMPL_CPU) }
