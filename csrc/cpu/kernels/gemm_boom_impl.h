// The Boom forward as one blocked GEMM (gemm_driver_impl.h) with the Boom epilogue fused per
// output block: bias, saved pre-activation, activation, dropout and the chunk sum, applied to
// each finished Mc x Nc fp32 block of x W^T while it is in L2. Per row block the chunk sum
// accumulates in an Mc x C fp32 buffer and is rounded once into `out`; the d_ff-wide
// activation never exists, and the pre-activation stays fp32 up to the activation (bf16/fp16
// round only the saved preact and the output). AVX-512 TU only; included by kernels/boom_impl.h
// inside namespace attnfast::cpu::<isa>.
// No include guard on purpose: included once per ISA namespace.
#if ATTNFAST_CPU_GEMM_AVX512

namespace boom_gemm {

using gemm::align64;
using gemm::kMc;

template <typename T, Activation A>
struct BoomEpilogue {
  const BoomGemmArgs& a;
  float* acc;  // kMc x C fp32: the chunk sum of the current row block

  void begin(int64_t, int64_t rows) {
    for (int64_t i = 0; i < rows * a.C; ++i) acc[i] = 0.f;
  }

  void end(int64_t r0, int64_t rows) {
    T* out = static_cast<T*>(a.out) + r0 * a.C;
#pragma omp simd
    for (int64_t i = 0; i < rows * a.C; ++i) out[i] = from_f32<T>(acc[i]);
  }

  // Columns [f0, f0 + nf) of d_ff for rows [row0, row0 + rows): split at chunk boundaries,
  // act(z + b) added into acc at column f mod C. Same formulas as boom_epilogue_impl
  // (act::forward, Philox counter row * F + f), taken of the fp32 pre-activation.
  void block(float* Z, int64_t ldz, int64_t row0, int64_t rows, int64_t f0, int64_t nf) {
    const bool dropout = a.dropout_p > 0.0;
    const uint32_t threshold = philox::keep_threshold(a.dropout_p);
    const float scale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
    const int64_t C = a.C, f_used = a.gemm.N;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t grow = row0 + r;
      T* pre = a.preact ? static_cast<T*>(a.preact) + grow * f_used : nullptr;
      for (int64_t f = f0; f < f0 + nf;) {
        const int64_t j = f / C;
        const int64_t end = (j + 1) * C < f0 + nf ? (j + 1) * C : f0 + nf;
        const int64_t len = end - f;
        float* z = Z + r * ldz + (f - f0);
        float* o = acc + r * C + (f - j * C);
        // Bias first, in place in the fp32 block: the loops below then have no branch on it
        // (a conditional load would keep GCC from vectorising the activation).
        if (a.bias) {
          const float* b = a.bias + f;
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) z[i] += b[i];
        }
        if (pre) {
          T* p = pre + f;
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) p[i] = from_f32<T>(z[i]);
        }
        if (!dropout) {
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) o[i] += act::forward<A>(z[i]);
        } else {
          const uint64_t drop = static_cast<uint64_t>(grow) * static_cast<uint64_t>(a.F) +
                                static_cast<uint64_t>(f);
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) {
            const bool keep = philox::keep(a.seed, drop + static_cast<uint64_t>(i), threshold);
            o[i] += keep ? act::forward<A>(z[i]) * scale : 0.f;
          }
        }
        f = end;
      }
    }
  }
};

template <typename T>
GemmPlan plan_typed(const BoomGemmArgs& a) {
  GemmPlan p = gemm::plan_typed<T>(a.gemm);
  p.scratch_bytes += align64(kMc * a.C * 4);  // the chunk-sum accumulator
  return p;
}

template <typename T, Activation A>
void forward_rows_impl(const BoomGemmArgs& a, int64_t row_begin, int64_t row_end,
                       void* scratch) {
  const int64_t gemm_bytes = gemm::Layout<T>(a.gemm).bytes();
  BoomEpilogue<T, A> epi{a, reinterpret_cast<float*>(static_cast<char*>(scratch) + gemm_bytes)};
  gemm::blocked_rows<T>(a.gemm, row_begin, row_end, scratch, epi);
}

template <typename T>
void forward_rows_typed(const BoomGemmArgs& a, int64_t b, int64_t e, void* s) {
  switch (static_cast<Activation>(a.activation)) {
    case Activation::gelu_sigmoid: return forward_rows_impl<T, Activation::gelu_sigmoid>(a, b, e, s);
    case Activation::gelu: return forward_rows_impl<T, Activation::gelu>(a, b, e, s);
    case Activation::gelu_tanh: return forward_rows_impl<T, Activation::gelu_tanh>(a, b, e, s);
    default: return forward_rows_impl<T, Activation::relu>(a, b, e, s);
  }
}

GemmPlan plan(const BoomGemmArgs& a) {
  switch (a.gemm.dtype) {
    case DType::f32: return plan_typed<float>(a);
    case DType::bf16: return plan_typed<bf16_t>(a);
    default: return plan_typed<f16_t>(a);
  }
}

void forward_rows(const BoomGemmArgs& a, int64_t b, int64_t e, void* s) {
  switch (a.gemm.dtype) {
    case DType::f32: return forward_rows_typed<float>(a, b, e, s);
    case DType::bf16: return forward_rows_typed<bf16_t>(a, b, e, s);
    default: return forward_rows_typed<f16_t>(a, b, e, s);
  }
}

extern const BoomGemmKernels kernels;
const BoomGemmKernels kernels{&plan, &forward_rows};

}  // namespace boom_gemm

#define ATTNFAST_BOOM_GEMM_KERNELS (&boom_gemm::kernels)
#define ATTNFAST_GEMM_KERNELS (&gemm::kernels)
#else
#define ATTNFAST_BOOM_GEMM_KERNELS nullptr
#define ATTNFAST_GEMM_KERNELS nullptr
#endif  // ATTNFAST_CPU_GEMM_AVX512
