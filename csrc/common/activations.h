// The activations of the Boom layer and their derivatives, in fp32, shared by every compiled
// backend (CPU kernels, CUDA kernels, SIMT harness). The enum values are part of the op
// schema (`int activation`): keep them in sync with attnfast/ops/boom.py::ACTIVATIONS.
#pragma once
#include "macros.h"
#include "math.h"

namespace attnfast {

enum class Activation : int {
  gelu_sigmoid = 0,  // x * sigmoid(1.702 x): SHA-RNN's GELU
  gelu = 1,          // x * Phi(x), Phi the normal CDF (erf form)
  gelu_tanh = 2,     // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  relu = 3,
};
constexpr int kNumActivations = 4;

namespace act {

constexpr float kSigmoidGeluSlope = 1.702f;
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kTanhCubic = 0.044715f;

ATTNFAST_HD ATTNFAST_INLINE float gelu_sigmoid(float x) {
  return x * math::sigmoid_f32(kSigmoidGeluSlope * x);
}
// d/dx x s(ax) = s + a x s (1 - s)
ATTNFAST_HD ATTNFAST_INLINE float gelu_sigmoid_grad(float x) {
  const float s = math::sigmoid_f32(kSigmoidGeluSlope * x);
  return s + kSigmoidGeluSlope * x * s * (1.0f - s);
}

ATTNFAST_HD ATTNFAST_INLINE float gelu(float x) {
  return 0.5f * x * (1.0f + math::erf_f32(x * kInvSqrt2));
}
// d/dx x Phi(x) = Phi(x) + x phi(x)
ATTNFAST_HD ATTNFAST_INLINE float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + math::erf_f32(x * kInvSqrt2));
  const float pdf = kInvSqrt2Pi * math::exp_f32(-0.5f * x * x);
  return cdf + x * pdf;
}

ATTNFAST_HD ATTNFAST_INLINE float gelu_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kTanhCubic * x * x * x);
  return 0.5f * x * (1.0f + math::tanh_f32(u));
}
ATTNFAST_HD ATTNFAST_INLINE float gelu_tanh_grad(float x) {
  const float u = kSqrt2OverPi * (x + kTanhCubic * x * x * x);
  const float t = math::tanh_f32(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kTanhCubic * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

ATTNFAST_HD ATTNFAST_INLINE float relu(float x) { return x > 0.f ? x : 0.f; }
ATTNFAST_HD ATTNFAST_INLINE float relu_grad(float x) { return x > 0.f ? 1.f : 0.f; }

// Compile-time dispatch: kernels template their inner loops on the activation so the branch
// is hoisted out of the loop (four instantiations of a small loop, not of a GEMM).
template <Activation A>
ATTNFAST_HD ATTNFAST_INLINE float forward(float x) {
  if constexpr (A == Activation::gelu_sigmoid) return gelu_sigmoid(x);
  else if constexpr (A == Activation::gelu) return gelu(x);
  else if constexpr (A == Activation::gelu_tanh) return gelu_tanh(x);
  else return relu(x);
}

template <Activation A>
ATTNFAST_HD ATTNFAST_INLINE float backward(float x) {
  if constexpr (A == Activation::gelu_sigmoid) return gelu_sigmoid_grad(x);
  else if constexpr (A == Activation::gelu) return gelu_grad(x);
  else if constexpr (A == Activation::gelu_tanh) return gelu_tanh_grad(x);
  else return relu_grad(x);
}

// Run-time dispatch, for code where a switch per element is cheap next to the work around it.
ATTNFAST_HD ATTNFAST_INLINE float forward(Activation a, float x) {
  switch (a) {
    case Activation::gelu_sigmoid: return gelu_sigmoid(x);
    case Activation::gelu: return gelu(x);
    case Activation::gelu_tanh: return gelu_tanh(x);
    default: return relu(x);
  }
}
ATTNFAST_HD ATTNFAST_INLINE float backward(Activation a, float x) {
  switch (a) {
    case Activation::gelu_sigmoid: return gelu_sigmoid_grad(x);
    case Activation::gelu: return gelu_grad(x);
    case Activation::gelu_tanh: return gelu_tanh_grad(x);
    default: return relu_grad(x);
  }
}

}  // namespace act
}  // namespace attnfast
