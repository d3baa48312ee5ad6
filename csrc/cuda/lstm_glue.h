// ATen side of the CUDA LSTM recurrence kernels (csrc/cuda/lstm_kernels.cuh), shared by the CUDA
// ops (csrc/cuda/lstm.cu) and the SIMT harness ops (csrc/simt/lstm_ops.cpp): argument checks,
// outputs, and the launch sequence, glue::<op>(stream, <the schema's arguments>) (adaptor:
// csrc/device_op.h). The sequence is one step kernel per time step on `stream` (the launch
// boundary orders the steps; see the kernel header for the persistent-kernel next step).
//
// Empty shapes: T = 0, B = 0 or H = 0 launch nothing. With T = 0 the backward returns zero
// grad_h0 and grad_c0 (no step ran).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda/glue_common.h"
#include "cuda/lstm_kernels.cuh"

namespace attnfast {
namespace glue {
namespace lstm_detail {

// The checks of both ops name the argument and the expected shape / dtype. (The CPU kernel has
// its own; they belong together in csrc/checks/lstm.h once both branches are merged.)
inline void check_float_dtype(const at::Tensor& t, const char* op, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op, ": ", name,
              " must be float32, bfloat16 or float16, got ", dt);
}

inline void check_like(const at::Tensor& t, const at::Tensor& ref, at::ScalarType dt,
                       at::IntArrayRef shape, const char* op, const char* name,
                       const char* shape_text) {
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape_text, " = ", shape,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dt, op, ": ", name, " must be ", dt, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but the ",
              "other arguments are on ", ref.device());
}

// w_hh (4H, H) gives H; returns H.
inline int64_t check_w_hh(const at::Tensor& w_hh, const char* op) {
  check_float_dtype(w_hh, op, "w_hh");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * w_hh.size(1), op,
              ": w_hh must have shape (4H, H), got ", w_hh.sizes());
  return w_hh.size(1);
}

template <typename Fn>
void dispatch(const at::Tensor& t, Fn&& f) {
  dispatch_dtype(t.scalar_type(), "lstm: w_hh", std::forward<Fn>(f));
}

}  // namespace lstm_detail

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    cudaStream_t stream, const at::Tensor& gates_x_in, const at::Tensor& h0_in,
    const at::Tensor& c0_in, const at::Tensor& w_hh_in, bool save_gates) {
  using namespace lstm_detail;
  constexpr const char* op = "lstm_forward";
  const int64_t H = check_w_hh(w_hh_in, op);
  TORCH_CHECK(gates_x_in.dim() == 3 && gates_x_in.size(2) == 4 * H, op,
              ": gates_x must have shape (T, B, 4H) with 4H = ", 4 * H, " (from w_hh), got ",
              gates_x_in.sizes());
  const int64_t T = gates_x_in.size(0), B = gates_x_in.size(1);
  const auto dt = w_hh_in.scalar_type();
  check_like(gates_x_in, w_hh_in, dt, {T, B, 4 * H}, op, "gates_x", "(T, B, 4H)");
  check_like(h0_in, w_hh_in, dt, {B, H}, op, "h0", "(B, H)");
  check_like(c0_in, w_hh_in, dt, {B, H}, op, "c0", "(B, H)");
  const at::Tensor gates_x = gates_x_in.contiguous(), h0 = h0_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();

  at::Tensor h = at::empty({T, B, H}, gates_x.options());
  at::Tensor c = at::empty({T, B, H}, gates_x.options().dtype(at::kFloat));
  at::Tensor gates = save_gates ? at::empty({T, B, 4 * H}, gates_x.options())
                                : at::empty({0}, gates_x.options());
  if (T == 0 || B == 0 || H == 0) return {h, c, gates};
  // The cell state is carried in fp32 from the start.
  const at::Tensor c0 = c0_in.to(at::kFloat).contiguous();

  const int64_t BH = B * H, BR = B * 4 * H;
  dispatch(w_hh, [&](auto* tag) {
    using T_ = std::remove_pointer_t<decltype(tag)>;
    const T_* gx = ptr<T_>(gates_x);
    T_* hp = ptr<T_>(h);
    float* cp = ptr<float>(c);
    T_* gp = save_gates ? ptr<T_>(gates) : nullptr;
    for (int64_t t = 0; t < T; ++t) {  // one launch per step (sequential recurrence)
      const T_* h_prev = t == 0 ? ptr<T_>(h0) : hp + (t - 1) * BH;
      const float* c_prev = t == 0 ? ptr<float>(c0) : cp + (t - 1) * BH;
      cuda::lstm_forward_step<T_>(gx + t * BR, h_prev, c_prev, ptr<T_>(w_hh), hp + t * BH,
                                  cp + t * BH, gp == nullptr ? nullptr : gp + t * BR, B, H,
                                  stream);
    }
  });
  return {h, c, gates};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_backward(
    cudaStream_t stream, const at::Tensor& grad_h_in, const std::optional<at::Tensor>& grad_c_in,
    const at::Tensor& c0_in, const at::Tensor& w_hh_in, const at::Tensor& c_in,
    const at::Tensor& gates_in) {
  using namespace lstm_detail;
  constexpr const char* op = "lstm_backward";
  const int64_t H = check_w_hh(w_hh_in, op);
  TORCH_CHECK(grad_h_in.dim() == 3 && grad_h_in.size(2) == H, op,
              ": grad_h must have shape (T, B, H) with H = ", H, " (from w_hh), got ",
              grad_h_in.sizes());
  const int64_t T = grad_h_in.size(0), B = grad_h_in.size(1);
  const auto dt = w_hh_in.scalar_type();
  check_like(grad_h_in, w_hh_in, dt, {T, B, H}, op, "grad_h", "(T, B, H)");
  if (grad_c_in.has_value())
    check_like(*grad_c_in, w_hh_in, at::kFloat, {T, B, H}, op, "grad_c", "(T, B, H)");
  check_like(c0_in, w_hh_in, dt, {B, H}, op, "c0", "(B, H)");
  check_like(c_in, w_hh_in, at::kFloat, {T, B, H}, op, "c", "(T, B, H)");
  const bool no_steps = T == 0 || B == 0 || H == 0;
  if (!(no_steps && gates_in.numel() == 0)) {
    TORCH_CHECK(gates_in.sizes() == at::IntArrayRef({T, B, 4 * H}), op,
                ": gates must have shape (T, B, 4H) = ", at::IntArrayRef({T, B, 4 * H}),
                ", got ", gates_in.sizes(), " (was lstm_forward called with save_gates=True?)");
    check_like(gates_in, w_hh_in, dt, {T, B, 4 * H}, op, "gates", "(T, B, 4H)");
  }
  // Autograd may hand over non-contiguous (e.g. expanded zero) gradients: make them dense.
  const at::Tensor grad_h = grad_h_in.contiguous(), w_hh = w_hh_in.contiguous();
  const at::Tensor c = c_in.contiguous(), gates = gates_in.contiguous();

  at::Tensor grad_gates_x = at::empty({T, B, 4 * H}, grad_h.options());
  if (no_steps) {
    return {grad_gates_x, at::zeros({B, H}, c0_in.options()), at::zeros({B, H}, c0_in.options())};
  }
  at::Tensor grad_h0 = at::empty({B, H}, c0_in.options());
  at::Tensor grad_c0 = at::empty({B, H}, c0_in.options());
  const at::Tensor c0 = c0_in.to(at::kFloat).contiguous();
  // dc carried in fp32 (the kernel updates it in place); each step adds grad_c[t] to it.
  at::Tensor dc = at::zeros({B, H}, grad_h.options().dtype(at::kFloat));
  at::Tensor grad_c;
  if (grad_c_in.has_value()) grad_c = grad_c_in->contiguous();
  // dA of steps t and t+1 in fp32, ping-pong: step t reads slot (t+1)&1 and writes slot t&1.
  at::Tensor dA = at::empty({2, B, 4 * H}, grad_h.options().dtype(at::kFloat));

  const int64_t BH = B * H, BR = B * 4 * H;
  dispatch(w_hh, [&](auto* tag) {
    using T_ = std::remove_pointer_t<decltype(tag)>;
    const T_* w = ptr<T_>(w_hh);
    const T_* gh = ptr<T_>(grad_h);
    const T_* gp = ptr<T_>(gates);
    const float* cp = ptr<float>(c);
    const float* gcp = grad_c.defined() ? ptr<float>(grad_c) : nullptr;
    float* dAp = ptr<float>(dA);
    T_* ggx = ptr<T_>(grad_gates_x);
    for (int64_t t = T - 1; t >= 0; --t) {  // one launch per step, reverse time
      const float* dA_next = t == T - 1 ? nullptr : dAp + ((t + 1) & 1) * BR;
      const float* c_prev = t == 0 ? ptr<float>(c0) : cp + (t - 1) * BH;
      cuda::lstm_backward_step<T_>(gh + t * BH, w, dA_next, gp + t * BR, cp + t * BH, c_prev,
                                   gcp == nullptr ? nullptr : gcp + t * BH, ptr<float>(dc),
                                   dAp + (t & 1) * BR, ggx + t * BR, nullptr, nullptr, B, H,
                                   stream);
    }
    // grad_h0 = dA_0 w_hh, grad_c0 = the dc that reached c0 (step 0 wrote slot 0).
    cuda::lstm_backward_step<T_>(nullptr, w, dAp, nullptr, nullptr, nullptr, nullptr,
                                 ptr<float>(dc), nullptr, nullptr, ptr<T_>(grad_h0), ptr<T_>(grad_c0), B, H,
                                 stream);
  });
  return {grad_gates_x, grad_h0, grad_c0};
}

}  // namespace glue
}  // namespace attnfast
