// The CPU attention kernel's tile GEMMs alone, on one thread: attnfast's AVX-512 micro-kernel
// (csrc/cpu/kernels/attention_gemm.h, the code the library runs) on the operand layouts the
// kernel uses, in the kernel's loop order. Built on demand by bench/attention_tiles.py, which
// times ATen's torch.mm on the same shapes next to it. Not part of the library.
//
//   attention_tiles <fp32|bf16> <D> <reps>
// prints one line per GEMM: name M N K GFLOP/s (median over reps of the whole loop).
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#define ATTNFAST_CPU_ISA avx512
#include "cpu/isa_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace attnfast::cpu;
using namespace attnfast::cpu::avx512;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename T>
std::vector<T> random_vector(size_t n) {
  std::vector<T> v(n);
  for (auto& x : v) x = from_f32<T>(static_cast<float>(std::rand() % 2001 - 1000) / 1000.f);
  return v;
}

struct Gemm {
  const char* name;
  int64_t M, N, K;
  std::vector<double> seconds;  // one entry per rep: the loop's total time in this GEMM
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Lq = Lk = 1024, no mask: the forward's blocks are 64 x 64, the backward's 128 x 128 (the
// block sizes the kernel uses at D >= 512, see csrc/cpu/attention.cpp).
template <typename T>
void run(int64_t D, int reps) {
  const DType dt = sizeof(T) == 4 ? DType::f32 : DType::bf16;
  const int64_t L = 1024, fb = 64, bb = 128;
  const int64_t ps_kt = attn_b_pstride(dt, D), ps_n = attn_b_pstride(dt, L);
  auto Q = random_vector<T>(L * D), dO = random_vector<T>(L * D);
  auto Kt = random_vector<T>(attn_b_elems(dt, D, L)), Vt = random_vector<T>(attn_b_elems(dt, D, L));
  auto Vn = random_vector<T>(attn_b_elems(dt, L, D)), Qn = random_vector<T>(attn_b_elems(dt, L, D));
  auto dOn = random_vector<T>(attn_b_elems(dt, L, D)), Kn = random_vector<T>(attn_b_elems(dt, L, D));
  const int64_t ldt = attn_a_ld(bb), ldd = attn_a_ld(D);
  auto Ptile = random_vector<T>(bb * ldt), PT = random_vector<T>(bb * ldt);
  auto dSt = random_vector<T>(bb * ldt), dST = random_vector<T>(bb * ldt);
  std::vector<float> S(bb * ldt), O(fb * ldd), dK(bb * ldd), dV(bb * ldd), dQ(L * D);

  Gemm g[7] = {{"fwd S=QK^T", fb, fb, D, {}},      {"fwd O+=PV", fb, D, fb, {}},
               {"bwd S=QK^T", bb, bb, D, {}},      {"bwd dP=dOV^T", bb, bb, D, {}},
               {"bwd dV+=P^TdO", bb, D, bb, {}},   {"bwd dK+=dS^TQ", bb, D, bb, {}},
               {"bwd dQ+=dSK", bb, D, bb, {}}};
  for (int rep = 0; rep < reps; ++rep) {
    double t[7] = {0};
    for (int64_t i0 = 0; i0 < L; i0 += fb)  // forward: query blocks outer, key blocks inner
      for (int64_t j0 = 0; j0 < L; j0 += fb) {
        const double a = now();
        attn_gemm<T>(fb, fb, D, Q.data() + i0 * D, D, attn_b_at(Kt.data(), ps_kt, 0, j0), ps_kt,
                     S.data(), ldt, false);
        const double b = now();
        attn_gemm<T>(fb, D, fb, Ptile.data(), ldt, attn_b_at(Vn.data(), ps_n, j0, 0), ps_n,
                     O.data(), ldd, true);
        const double c = now();
        t[0] += b - a;
        t[1] += c - b;
      }
    for (int64_t j0 = 0; j0 < L; j0 += bb)  // backward: key blocks outer, query blocks inner
      for (int64_t i0 = 0; i0 < L; i0 += bb) {
        double m[6];
        m[0] = now();
        attn_gemm<T>(bb, bb, D, Q.data() + i0 * D, D, attn_b_at(Kt.data(), ps_kt, 0, j0), ps_kt,
                     S.data(), ldt, false);
        m[1] = now();
        attn_gemm<T>(bb, bb, D, dO.data() + i0 * D, D, attn_b_at(Vt.data(), ps_kt, 0, j0), ps_kt,
                     S.data(), ldt, false);
        m[2] = now();
        attn_gemm<T>(bb, D, bb, PT.data(), ldt, attn_b_at(dOn.data(), ps_n, i0, 0), ps_n,
                     dV.data(), ldd, true);
        m[3] = now();
        attn_gemm<T>(bb, D, bb, dST.data(), ldt, attn_b_at(Qn.data(), ps_n, i0, 0), ps_n,
                     dK.data(), ldd, true);
        m[4] = now();
        attn_gemm<T>(bb, D, bb, dSt.data(), ldt, attn_b_at(Kn.data(), ps_n, j0, 0), ps_n,
                     dQ.data() + i0 * D, D, true);
        m[5] = now();
        for (int i = 0; i < 5; ++i) t[2 + i] += m[i + 1] - m[i];
      }
    for (int i = 0; i < 7; ++i) g[i].seconds.push_back(t[i]);
  }
  for (const Gemm& x : g) {
    const int64_t calls = x.name[0] == 'f' ? (L / fb) * (L / fb) : (L / bb) * (L / bb);
    const double flop = 2.0 * x.M * x.N * x.K * calls;
    std::printf("%s %ld %ld %ld %.1f\n", x.name, static_cast<long>(x.M), static_cast<long>(x.N),
                static_cast<long>(x.K), flop / median(x.seconds) / 1e9);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 || (std::strcmp(argv[1], "fp32") != 0 && std::strcmp(argv[1], "bf16") != 0)) {
    std::fprintf(stderr, "usage: %s <fp32|bf16> <D> <reps>\n", argv[0]);
    return 2;
  }
  const int64_t D = std::atol(argv[2]);
  const int reps = std::max(1, std::atoi(argv[3]));
  if (D < 1) {
    std::fprintf(stderr, "D must be >= 1\n");
    return 2;
  }
  if (std::strcmp(argv[1], "fp32") == 0)
    run<float>(D, reps);
  else
    run<bf16_t>(D, reps);
  return 0;
}
