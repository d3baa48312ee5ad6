// The CPU's physical peak: an FMA-throughput loop on every core (benchmark tool, not shipped).
//
// Each thread runs CHAINS independent accumulator chains of one vector FMA instruction:
// enough chains to cover the FMA latency (4-5 cycles) times the FMA ports (2 on Zen 4/5 and
// recent Intel), so the loop is bound by FMA throughput alone. No loads, no stores.
//   fp32: vfmadd231ps zmm (AVX-512F)      16 lanes x 2 flop = 32 flop per instruction
//         vfmadd231ps ymm (AVX2 + FMA)     8 lanes x 2 flop = 16 flop
//   bf16: vdpbf16ps zmm (AVX512_BF16)     16 lanes x 2 bf16 pairs x 2 flop = 64 flop
// Each ISA is a function with a target attribute, so one build (-O2 -fopenmp, no -m flags)
// runs on any x86-64; Python asks the CPU which ones it supports before calling them.
// Build: g++ -O2 -fopenmp -shared -fPIC fma_peak.cpp -o libfma_peak.so  (bench/peak/__init__.py)
#include <immintrin.h>
#include <omp.h>

#include <cstdint>

namespace {

constexpr int CHAINS = 12;

// Runs `iters` iterations of CHAINS FMAs per thread on all OpenMP threads; returns seconds
// (slowest thread, after a barrier) and writes a checksum so nothing is optimised away.
template <typename Body>
double run_all_threads(Body body, int threads, float* checksum) {
  double seconds = 0.0;
  float sum = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
  {
#pragma omp barrier
    double t0 = omp_get_wtime();
    float s = body();
    double dt = omp_get_wtime() - t0;
#pragma omp critical
    if (dt > seconds) seconds = dt;
    sum += s;
  }
  *checksum = sum;
  return seconds;
}

__attribute__((target("avx512f"))) float fp32_avx512_body(int64_t iters) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  // acc = acc * a + b converges to b / (1 - a): no overflow, no denormals.
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) float bf16_avx512_body(int64_t iters) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_setzero_ps();
  // Small bf16 operands: 32 products of 2^-10 per lane per iteration stay finite for any run.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.03125f), _mm512_set1_ps(0.03125f));
  const __m512bh b = a;
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) float fp32_avx2_body(int64_t iters) {
  __m256 acc[CHAINS];
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm256_add_ps(s, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  float total = 0.0f;
  for (float v : lanes) total += v;
  return total;
}

}  // namespace

extern "C" {

int fma_peak_chains() { return CHAINS; }
int fma_peak_max_threads() { return omp_get_max_threads(); }

// Each returns the seconds taken by `iters` iterations on `threads` threads; the flop count is
// threads * iters * CHAINS * flop_per_instruction (see the table at the top).
double fma_peak_fp32_avx512(int64_t iters, int threads, float* checksum) {
  return run_all_threads([=] { return fp32_avx512_body(iters); }, threads, checksum);
}
double fma_peak_bf16_avx512(int64_t iters, int threads, float* checksum) {
  return run_all_threads([=] { return bf16_avx512_body(iters); }, threads, checksum);
}
double fma_peak_fp32_avx2(int64_t iters, int threads, float* checksum) {
  return run_all_threads([=] { return fp32_avx2_body(iters); }, threads, checksum);
}

}  // extern "C"
