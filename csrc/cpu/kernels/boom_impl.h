// Boom CPU loops, included once per ISA inside namespace attnfast::cpu::<isa> (isa_*.cpp).
// Plain loops over contiguous rows with `#pragma omp simd`: the activation math comes from
// csrc/common/activations.h (the same formulas the CUDA kernels use) and is written without
// libm calls, so GCC vectorises the whole loop body at the ISA's width.
// No include guard on purpose: each isa_*.cpp includes it once, in its own namespace.

template <typename T, Activation A>
void boom_epilogue_impl(const BoomEpilogueArgs& a, int64_t row_begin, int64_t row_end,
                        float* acc) {
  const bool dropout = a.dropout_p > 0.0;
  const uint32_t threshold = philox::keep_threshold(a.dropout_p);
  const float scale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
  const int64_t C = a.C;
  for (int64_t r = row_begin; r < row_end; ++r) {
    T* z = static_cast<T*>(a.z) + r * a.ldz;
    T* out = static_cast<T*>(a.out) + r * a.ldo;
    const uint64_t drop_base = static_cast<uint64_t>(a.row0 + r) * static_cast<uint64_t>(a.F);
    for (int64_t c = 0; c < C; ++c) acc[c] = 0.f;
    for (int64_t j = 0; j < a.nchunks; ++j) {
      T* zj = z + j * C;
      const float* bj = a.bias ? a.bias + j * C : nullptr;
      const uint64_t drop_j = drop_base + static_cast<uint64_t>(j * C);
      if (a.write_preact) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float v = to_f32(zj[c]) + (bj ? bj[c] : 0.f);
          zj[c] = from_f32<T>(v);
        }
      }
      if (!dropout) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float v = a.write_preact ? to_f32(zj[c]) : to_f32(zj[c]) + (bj ? bj[c] : 0.f);
          acc[c] += act::forward<A>(v);
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float v = a.write_preact ? to_f32(zj[c]) : to_f32(zj[c]) + (bj ? bj[c] : 0.f);
          const bool keep = philox::keep(a.seed, drop_j + static_cast<uint64_t>(c), threshold);
          acc[c] += keep ? act::forward<A>(v) * scale : 0.f;
        }
      }
    }
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = from_f32<T>(acc[c]);
  }
}

template <typename T, Activation A>
void boom_dz_impl(const BoomDzArgs& a, int64_t row_begin, int64_t row_end) {
  const bool dropout = a.dropout_p > 0.0;
  const uint32_t threshold = philox::keep_threshold(a.dropout_p);
  const float scale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
  const int64_t C = a.C;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const T* g = static_cast<const T*>(a.grad_out) + r * a.ldg;
    const T* z = static_cast<const T*>(a.preact) + r * a.ldz;
    T* dz = static_cast<T*>(a.dz) + r * a.ldz;
    const uint64_t drop_base = static_cast<uint64_t>(a.row0 + r) * static_cast<uint64_t>(a.F);
    for (int64_t j = 0; j < a.nchunks; ++j) {
      const T* zj = z + j * C;
      T* dzj = dz + j * C;
      const uint64_t drop_j = drop_base + static_cast<uint64_t>(j * C);
      if (!dropout) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          dzj[c] = from_f32<T>(to_f32(g[c]) * act::backward<A>(to_f32(zj[c])));
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const bool keep = philox::keep(a.seed, drop_j + static_cast<uint64_t>(c), threshold);
          const float gd = keep ? to_f32(g[c]) * scale : 0.f;
          dzj[c] = from_f32<T>(gd * act::backward<A>(to_f32(zj[c])));
        }
      }
      if (a.bias_grad) {  // grad_bias: the column sums of dz as stored (what the GEMMs see)
        float* bg = a.bias_grad + j * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) bg[c] += to_f32(dzj[c]);
      }
    }
  }
}

template <typename T>
void boom_epilogue_typed(const BoomEpilogueArgs& a, int64_t b, int64_t e, float* acc) {
  switch (static_cast<Activation>(a.activation)) {
    case Activation::gelu_sigmoid: return boom_epilogue_impl<T, Activation::gelu_sigmoid>(a, b, e, acc);
    case Activation::gelu: return boom_epilogue_impl<T, Activation::gelu>(a, b, e, acc);
    case Activation::gelu_tanh: return boom_epilogue_impl<T, Activation::gelu_tanh>(a, b, e, acc);
    default: return boom_epilogue_impl<T, Activation::relu>(a, b, e, acc);
  }
}

template <typename T>
void boom_dz_typed(const BoomDzArgs& a, int64_t b, int64_t e) {
  switch (static_cast<Activation>(a.activation)) {
    case Activation::gelu_sigmoid: return boom_dz_impl<T, Activation::gelu_sigmoid>(a, b, e);
    case Activation::gelu: return boom_dz_impl<T, Activation::gelu>(a, b, e);
    case Activation::gelu_tanh: return boom_dz_impl<T, Activation::gelu_tanh>(a, b, e);
    default: return boom_dz_impl<T, Activation::relu>(a, b, e);
  }
}

void boom_epilogue(const BoomEpilogueArgs& a, int64_t b, int64_t e, float* acc) {
  switch (a.dtype) {
    case DType::f32: return boom_epilogue_typed<float>(a, b, e, acc);
    case DType::bf16: return boom_epilogue_typed<bf16_t>(a, b, e, acc);
    default: return boom_epilogue_typed<f16_t>(a, b, e, acc);
  }
}

void boom_dz(const BoomDzArgs& a, int64_t b, int64_t e) {
  switch (a.dtype) {
    case DType::f32: return boom_dz_typed<float>(a, b, e);
    case DType::bf16: return boom_dz_typed<bf16_t>(a, b, e);
    default: return boom_dz_typed<f16_t>(a, b, e);
  }
}

// The fused-GEMM forward and the plain GEMM: AVX-512 TU only (ATTNFAST_BOOM_GEMM_KERNELS,
// ATTNFAST_GEMM_KERNELS; nullptr elsewhere).
#include "cpu/kernels/gemm_boom_impl.h"

const BoomKernels boom_kernels{&boom_epilogue, &boom_dz, ATTNFAST_BOOM_GEMM_KERNELS,
                               ATTNFAST_GEMM_KERNELS};
