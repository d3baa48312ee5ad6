// Ops running the harness self-test kernels (selftest_kernels.cuh), for tests/test_simt_harness.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "simt/prelude.h"  // before any kernel header
#include "simt/selftest_kernels.cuh"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::simt_selftest, selftest_smem)

namespace attnfast {
namespace simt_selftest {
namespace {

at::Tensor f32(std::initializer_list<int64_t> shape) {
  return at::zeros(shape, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor reduce_op(const at::Tensor& x_in, int64_t blocks, int64_t threads) {
  const at::Tensor x = x_in.contiguous();
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "x: CPU float32 expected");
  TORCH_CHECK(threads >= 32 && threads <= 1024 && (threads & (threads - 1)) == 0,
              "threads: a power of two in [32, 1024] expected");
  at::Tensor out = f32({blocks, 2});
  reduce(x.data_ptr<float>(), out.data_ptr<float>(), x.numel(), static_cast<int>(blocks),
         static_cast<int>(threads), nullptr);
  return out;
}

at::Tensor vote_op(const at::Tensor& x_in) {
  const at::Tensor x = x_in.contiguous();
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.numel() % 32 == 0 && x.numel() <= 1024,
              "x: float32 with a multiple of 32 elements expected");
  at::Tensor out = at::zeros({x.numel() / 32, 8}, at::TensorOptions().dtype(at::kInt));
  vote(x.data_ptr<float>(), out.data_ptr<int32_t>(), static_cast<int>(x.numel()), nullptr);
  return out;
}

at::Tensor misuse_op(int64_t mode, int64_t threads) {
  at::Tensor out = f32({threads});
  misuse(out.data_ptr<float>(), static_cast<int>(threads), static_cast<int>(mode), nullptr);
  return out;
}

at::Tensor bounds_op(int64_t smem_bytes, int64_t mode) {
  at::Tensor src = f32({64});
  at::Tensor out = f32({32});
  bounds(src.data_ptr<float>(), out.data_ptr<float>(), static_cast<int>(smem_bytes),
         static_cast<int>(mode), nullptr);
  return out;
}

at::Tensor race_op(int64_t threads, bool with_barrier) {
  at::Tensor out = f32({threads});
  race(out.data_ptr<float>(), static_cast<int>(threads), with_barrier ? 1 : 0, nullptr);
  return out;
}

at::Tensor ldmatrix_op(const at::Tensor& m_in, int64_t x, bool trans) {
  const at::Tensor m = m_in.contiguous();
  TORCH_CHECK(m.scalar_type() == at::kShort && m.numel() == x * 64,
              "m: int16 with 64 * x elements expected");
  at::Tensor out = at::zeros({32, x}, at::TensorOptions().dtype(at::kInt));
  const auto* mp = reinterpret_cast<const uint16_t*>(m.data_ptr());
  auto* op = reinterpret_cast<uint32_t*>(out.data_ptr());
  if (x == 1 && !trans) ldmatrix<1, false>(mp, op, nullptr);
  else if (x == 2 && !trans) ldmatrix<2, false>(mp, op, nullptr);
  else if (x == 4 && !trans) ldmatrix<4, false>(mp, op, nullptr);
  else if (x == 2 && trans) ldmatrix<2, true>(mp, op, nullptr);
  else if (x == 4 && trans) ldmatrix<4, true>(mp, op, nullptr);
  else TORCH_CHECK(false, "ldmatrix variant x", x, trans ? ".trans" : "", " is not in hw.cuh");
  return out;
}

at::Tensor mma_op(const at::Tensor& a_in, const at::Tensor& b_in, bool b_kmajor) {
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf),
              "a, b: both bfloat16 or both float16 expected");
  const int64_t M = a.size(0), K = a.size(1);
  const int64_t N = b_kmajor ? b.size(1) : b.size(0);
  TORCH_CHECK((b_kmajor ? b.size(0) : b.size(1)) == K, "b: shape does not match a");
  TORCH_CHECK(M % 16 == 0 && N % 8 == 0 && K % 16 == 0, "M % 16, N % 8, K % 16 must be 0");
  at::Tensor d = f32({M, N});
  if (a.scalar_type() == at::kBFloat16)
    mma<__nv_bfloat16>(reinterpret_cast<const __nv_bfloat16*>(a.data_ptr()),
                       reinterpret_cast<const __nv_bfloat16*>(b.data_ptr()), d.data_ptr<float>(),
                       static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), b_kmajor,
                       nullptr);
  else
    mma<__half>(reinterpret_cast<const __half*>(a.data_ptr()),
                reinterpret_cast<const __half*>(b.data_ptr()), d.data_ptr<float>(),
                static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), b_kmajor, nullptr);
  return d;
}

}  // namespace
}  // namespace simt_selftest
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  using namespace attnfast::simt_selftest;
  m.def("selftest_reduce(Tensor x, int blocks, int threads) -> Tensor", &reduce_op);
  m.def("selftest_vote(Tensor x) -> Tensor", &vote_op);
  m.def("selftest_misuse(int mode, int threads) -> Tensor", &misuse_op);
  m.def("selftest_bounds(int smem_bytes, int mode) -> Tensor", &bounds_op);
  m.def("selftest_race(int threads, bool with_barrier) -> Tensor", &race_op);
  m.def("selftest_ldmatrix(Tensor m, int x, bool trans) -> Tensor", &ldmatrix_op);
  m.def("selftest_mma(Tensor a, Tensor b, bool b_kmajor) -> Tensor", &mma_op);
}
