// The LSTM recurrence on the CPU (schemas: csrc/schemas.h, kLstm; kernels: kernels/lstm*.h).
// One OpenMP parallel region for the whole sequence, each thread owning a fixed range of
// hidden-unit groups (its rows of w_hh in the forward, the same columns in the backward), one
// barrier per step; torch's oneDNN path instead opens a parallel region per step and GEMM.
// ATTNFAST_CPU_LSTM_ZIGZAG=1|0 (default 1): walk a thread's weight tiles in descending order on
// odd steps, so a step starts on the tiles the previous one left in L2 (bench/notes/lstm_cpu.md).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "checks/lstm.h"
#include "cpu/isa.h"
#include "cpu/kernels/lstm.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

const LstmKernels& kernels() { return *isa_kernels().lstm; }

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kBFloat16: return DType::bf16;
    default: return DType::f16;
  }
}

bool zigzag() {
  const char* env = std::getenv("ATTNFAST_CPU_LSTM_ZIGZAG");
  if (env == nullptr || *env == '\0') return true;
  TORCH_CHECK(std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0,
              "ATTNFAST_CPU_LSTM_ZIGZAG must be 0 or 1, got '", env, "'");
  return *env == '1';
}

// Threads of the region: at most one per unit group (the kernels read the actual count).
int region_threads(int64_t H) {
  const int64_t groups = lstm_padded_units(H) / kLstmGroup;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), groups)));
}

at::Tensor f32_buffer(int64_t n) { return at::empty({n}, at::TensorOptions().dtype(at::kFloat)); }

// Runs fn(tid, nthreads) on every thread of one parallel region (nested in another region it
// gets one thread: the partition follows the count actually granted).
template <typename Fn>
void run_region(int nt, Fn&& fn) {
#pragma omp parallel num_threads(nt)
  fn(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_forward(const at::Tensor& gates_x,
                                                            const at::Tensor& h0,
                                                            const at::Tensor& c0,
                                                            const at::Tensor& w_hh,
                                                            bool save_gates) {
  checks::lstm_forward(gates_x, h0, c0, w_hh);
  const int64_t T = gates_x.size(0), B = h0.size(0), H = h0.size(1);
  at::Tensor h = at::empty({T, B, H}, gates_x.options());
  at::Tensor c = at::empty({T, B, H}, gates_x.options().dtype(at::kFloat));
  at::Tensor gates = save_gates ? at::empty({T, B, 4 * H}, gates_x.options())
                                : at::empty({0}, gates_x.options());
  if (T == 0 || B == 0 || H == 0) return {h, c, gates};

  const int nt = region_threads(H);
  const int64_t Hp = lstm_padded_units(H);
  at::Tensor packed = f32_buffer(lstm_packed_floats(H));
  at::Tensor hbuf = f32_buffer(2 * B * Hp);
  at::Tensor scratch = f32_buffer(nt * B * kLstmGroup);
  LstmForwardArgs a{};
  a.dtype = dtype_of(gates_x);
  a.T = T;
  a.B = B;
  a.H = H;
  a.gates_x = gates_x.data_ptr();
  a.h0 = h0.data_ptr();
  a.c0 = c0.data_ptr();
  a.w_hh = w_hh.data_ptr();
  a.h = h.data_ptr();
  a.c = c.data_ptr<float>();
  a.gates = save_gates ? gates.data_ptr() : nullptr;
  a.packed = packed.data_ptr<float>();
  a.hbuf = hbuf.data_ptr<float>();
  a.scratch = scratch.data_ptr<float>();
  a.zigzag = zigzag();
  const LstmForwardFn fn = kernels().forward;
  run_region(nt, [&](int tid, int n) { fn(a, tid, n); });
  return {h, c, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_backward(const at::Tensor& grad_h,
                                                             const std::optional<at::Tensor>& grad_c,
                                                             const at::Tensor& c0,
                                                             const at::Tensor& w_hh,
                                                             const at::Tensor& c,
                                                             const at::Tensor& gates) {
  checks::lstm_backward(grad_h, grad_c, c0, w_hh, c, gates);
  const int64_t T = c.size(0), B = c.size(1), H = c.size(2);
  at::Tensor grad_gates_x = at::empty({T, B, 4 * H}, grad_h.options());
  if (T == 0 || B == 0 || H == 0) {
    // No step: neither h0 nor c0 reaches an output.
    return {grad_gates_x, at::zeros({B, H}, grad_h.options()), at::zeros({B, H}, grad_h.options())};
  }
  at::Tensor grad_h0 = at::empty({B, H}, grad_h.options());
  at::Tensor grad_c0 = at::empty({B, H}, grad_h.options());

  const int nt = region_threads(H);
  const int64_t Hp = lstm_padded_units(H);
  at::Tensor packed = f32_buffer(lstm_packed_floats(H));
  at::Tensor dabuf = f32_buffer(2 * B * 4 * H);
  at::Tensor dh = f32_buffer(B * Hp);
  at::Tensor dc = f32_buffer(B * Hp);
  at::Tensor c0f = f32_buffer(B * Hp);
  LstmBackwardArgs a{};
  a.dtype = dtype_of(grad_h);
  a.T = T;
  a.B = B;
  a.H = H;
  a.grad_h = grad_h.data_ptr();
  // grad_c: the gradient of every c_t, or (none) one zero row read at every step.
  const at::Tensor grad_c_rows = grad_c.has_value() ? *grad_c : at::zeros({H}, c.options());
  a.grad_c = grad_c_rows.data_ptr<float>();
  a.grad_c_row = grad_c.has_value() ? H : 0;
  a.c0 = c0.data_ptr();
  a.w_hh = w_hh.data_ptr();
  a.c = c.data_ptr<float>();
  a.gates = gates.data_ptr();
  a.grad_gates_x = grad_gates_x.data_ptr();
  a.grad_h0 = grad_h0.data_ptr();
  a.grad_c0 = grad_c0.data_ptr();
  a.packed = packed.data_ptr<float>();
  a.dabuf = dabuf.data_ptr<float>();
  a.dh = dh.data_ptr<float>();
  a.dc = dc.data_ptr<float>();
  a.c0f = c0f.data_ptr<float>();
  a.zigzag = zigzag();
  const LstmBackwardFn fn = kernels().backward;
  run_region(nt, [&](int tid, int n) { fn(a, tid, n); });
  return {grad_gates_x, grad_h0, grad_c0};
}

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_LSTM_OPS(ATTNFAST_IMPL_CPU) }

}  // namespace cpu
}  // namespace attnfast
