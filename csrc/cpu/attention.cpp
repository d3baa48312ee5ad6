// Fused single-head attention on the CPU: the ATen glue of kernels/attention_impl.h.
//
// Per batch: pack K and V once into the panel-major GEMM operand layout of kernels/attention.h
// (K^T and V; VNNI pairs for bf16), then run the tasks -- forward: one per block of 64 queries; backward:
// four per thread, each owning an interleaved set of key blocks and its own fp32 dQ buffer --
// on all threads, taken from a shared counter (dynamic scheduling: under a causal mask the
// tasks' costs differ by up to Lk / 64 times). Extra memory: the packed K/V of one batch
// (the size of that batch's K and V) plus per-thread tiles of O(block x (D + Dv)); the backward
// adds one fp32 (Lq, D) dQ buffer per task (4 per thread). The (Lq, Lk) matrix is never formed,
// unless the caller asks the forward to keep it (keep_probs: the (B, Lq, Lk) fp32 probabilities,
// returned for the backward, which then reads P instead of recomputing it; attnfast/ops/
// attention.py decides from a memory budget).
// fp16 runs as fp32 (converted here; no fp16 dot-product instruction on this CPU family).
// The CPU backward is always deterministic (no atomics; dQ buffers summed in a fixed order),
// so `deterministic` changes nothing here.
// Block sizes: 64 x 256 in the forward; 64 x 64 in the backward, 128 x 128 for wide heads (see
// block_sizes; ATTNFAST_ATTN_CPU_BLOCKS="bq,bk" overrides both, for tuning).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "checks/attention.h"
#include "checks/seed.h"
#include "cpu/block_cache.h"
#include "cpu/isa.h"
#include "cpu/kernels/attention.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

const AttentionKernels& kernels() { return *isa_kernels().attention; }

DType dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? DType::bf16 : DType::f32;
}

// Query x key block sizes. Forward: 64 x 256 -- the P V product contracts over the key block,
// and the O tile (64 x Dv fp32, in L2) is read and written once per key block. Measured against
// 64 x 64 (B4 Lq1024 Lk5000 D1024 causal: fp32 212.5 -> 199.9 ms, bf16 105.2 -> 95.5; B32 L1024
// D64: fp32 15.9 -> 14.3, bf16 11.1 -> 8.9; D128: fp32 27.1 -> 25.6, bf16 16.7 -> 14.7; flat at
// B4 Lk1024 D1024); 128 x 256 and 64 x 512 were no better. Backward: 64 x 64, and 128 x 128 for
// wide heads (max(D, Dv) >= 512), whose dV/dK/dQ tile GEMMs contract over the block (4-12%
// faster at D = 1024, B4 Lq1024 Lk1024/3072; 5-20% slower at D = 64/128, B32 L1024).
void block_sizes(int64_t* bq, int64_t* bk, bool backward, int64_t head_dim) {
  const bool wide = head_dim >= 512;
  *bq = backward && wide ? 128 : 64;
  *bk = backward ? (wide ? 128 : 64) : 256;
  if (const char* env = std::getenv("ATTNFAST_ATTN_CPU_BLOCKS")) {
    long q = 0, k = 0;
    // bq even (bf16 pair rows), bk a whole number of B-operand panels (the tile GEMMs start
    // K^T / V^T at key j0 = a multiple of bk, which must be a panel's first column).
    // Upper bounds keep the per-thread scratch (a few bq x bk fp32 tiles) to tens of MB.
    constexpr long kMaxQ = 1024, kMaxK = 4096;
    if (std::sscanf(env, "%ld,%ld", &q, &k) == 2 && q >= 2 && q <= kMaxQ && q % 2 == 0 &&
        k >= kAttnPanel && k <= kMaxK && k % kAttnPanel == 0) {
      *bq = q;
      *bk = k;
    } else {
      TORCH_WARN_ONCE("attnfast: ignoring ATTNFAST_ATTN_CPU_BLOCKS=\"", env,
                      "\": expected \"bq,bk\" with bq even in [2, ", kMaxQ,
                      "] and bk a multiple of ", kAttnPanel, " in [", kAttnPanel, ", ", kMaxK,
                      "]; using the default blocks");
    }
  }
}

const void* row_ptr(const at::Tensor& t, int64_t b) {
  return static_cast<const char*>(t.data_ptr()) + b * t.stride(0) * t.element_size();
}

// Runs fn(task, scratch) for every task in [0, n) on up to all threads, tasks taken in order
// from a shared counter; each thread gets `scratch_floats` floats of scratch.
template <typename F>
void run_tasks(int64_t n, int64_t scratch_floats, const F& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    at::Tensor scratch = at::empty({scratch_floats}, at::TensorOptions().dtype(at::kFloat));
    float* s = scratch.data_ptr<float>();
    for (int64_t task = next.fetch_add(1); task < n; task = next.fetch_add(1)) fn(task, s);
  });
}

// Packs `rows` rows of src (row stride ld) with `pack` over all threads, 16 rows per piece.
void pack_rows(AttnPackFn pack, DType dt, const void* src, int64_t ld, int64_t rows, int64_t cols,
               at::Tensor& dst, int64_t ps) {
  const int64_t pieces = (rows + 15) / 16;
  at::parallel_for(0, pieces, 1, [&](int64_t p0, int64_t p1) {
    pack(dt, src, ld, rows, cols, dst.data_ptr(), ps, p0 * 16, std::min(rows, p1 * 16));
  });
}

// out (Lq, D; q's dtype, or fp32) = the sum over tasks c, in order, of buffer c's rows, for each
// query block over the tasks that wrote it (flags (nchunks, nqb)); 0 where none did. One pass
// per row: the row's running sum stays in L1 while the buffers stream by.
void sum_dq(const at::Tensor& buffers, const at::Tensor& touched, int64_t bq, at::Tensor out) {
  const int64_t nchunks = buffers.size(0), Lq = buffers.size(1), D = buffers.size(2);
  const int64_t nqb = touched.size(1);
  const float* buf = buffers.data_ptr<float>();
  const uint8_t* flag = touched.data_ptr<uint8_t>();
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  TORCH_INTERNAL_ASSERT(bf16 || out.scalar_type() == at::kFloat, "dQ is bf16 or fp32 here");
  at::parallel_for(0, Lq, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(D);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t qb = r / bq;
      bool any = false;
      for (int64_t c = 0; c < nchunks; ++c) {
        if (!flag[c * nqb + qb]) continue;
        const float* src = buf + (c * Lq + r) * D;
        if (!any) {
          std::copy(src, src + D, row.begin());
        } else {
          for (int64_t j = 0; j < D; ++j) row[j] += src[j];
        }
        any = true;
      }
      if (!any) std::fill(row.begin(), row.end(), 0.f);
      if (bf16) {
        auto* dst = out.data_ptr<at::BFloat16>() + r * D;
        for (int64_t j = 0; j < D; ++j) dst[j] = at::BFloat16(row[j]);
      } else {
        std::copy(row.begin(), row.end(), out.data_ptr<float>() + r * D);
      }
    }
  });
}

// (B, L) fp32: the dot product of row (b, i) of x with row (b, i) of y over the last dim (x, y:
// (B, L, D), bf16 or fp32, unit stride in the last dim), accumulated in fp32. One pass over
// both: the ATen expression sum(x.float() * y.float()) made three (B, L, D) fp32 temporaries
// (3.3 ms at B4 L1024 D1024 bf16, most of it fresh pages).
at::Tensor row_dots(const at::Tensor& x, const at::Tensor& y) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  at::Tensor out = at::empty({B, L}, x.options().dtype(at::kFloat));
  float* dst = out.data_ptr<float>();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  TORCH_INTERNAL_ASSERT(bf16 || x.scalar_type() == at::kFloat, "row_dots takes bf16 or fp32");
  TORCH_INTERNAL_ASSERT(x.scalar_type() == y.scalar_type() &&
                        (D <= 1 || (x.stride(2) == 1 && y.stride(2) == 1)));
  const char* xb = static_cast<const char*>(x.data_ptr());
  const char* yb = static_cast<const char*>(y.data_ptr());
  const int64_t es = x.element_size();
  const int64_t xs0 = x.stride(0) * es, xs1 = x.stride(1) * es;
  const int64_t ys0 = y.stride(0) * es, ys1 = y.stride(1) * es;
  at::parallel_for(0, B * L, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / L, i = r % L;
      const char* xr = xb + b * xs0 + i * xs1;
      const char* yr = yb + b * ys0 + i * ys1;
      float acc = 0.f;
      if (bf16) {
        // bf16 -> fp32 is exact: the 16 bits become the high half of the fp32 pattern.
        const uint16_t* px = reinterpret_cast<const uint16_t*>(xr);
        const uint16_t* py = reinterpret_cast<const uint16_t*>(yr);
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < D; ++c) {
          const uint32_t ux = uint32_t(px[c]) << 16, uy = uint32_t(py[c]) << 16;
          float fx, fy;
          std::memcpy(&fx, &ux, sizeof fx);
          std::memcpy(&fy, &uy, sizeof fy);
          acc += fx * fy;
        }
      } else {
        const float* px = reinterpret_cast<const float*>(xr);
        const float* py = reinterpret_cast<const float*>(yr);
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < D; ++c) acc += px[c] * py[c];
      }
      dst[r] = acc;
    }
  });
  return out;
}

// A panel-major B operand buffer for contraction length k and n columns; *ps = panel stride.
at::Tensor operand(DType dt, int64_t k, int64_t n, const at::TensorOptions& opts, int64_t* ps) {
  *ps = attn_b_pstride(dt, k);
  return cached_empty({attn_b_elems(dt, k, n)}, opts);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_forward(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const std::optional<at::Tensor>& bias, bool causal, double scale, double dropout_p,
    const at::Tensor& seed, bool keep_probs) {
  checks::attention_common(q_in, k_in, v_in, bias, dropout_p);
  const uint64_t key = checks::dropout_seed(seed, "attention_forward");
  const bool half = q_in.scalar_type() == at::kHalf;
  const at::Tensor q = half ? q_in.to(at::kFloat) : q_in;
  const at::Tensor k = half ? k_in.to(at::kFloat) : k_in;
  const at::Tensor v = half ? v_in.to(at::kFloat) : v_in;
  const int64_t B = q.size(0), Lq = q.size(1), D = q.size(2), Lk = k.size(1), Dv = v.size(2);
  // Outputs from the block cache too: at B16 fp32 a forward+backward made 256 MiB of fresh
  // pages per step (65.8k page faults, ~45 ms of 405).
  at::Tensor out = cached_empty({B, Lq, Dv}, q.options());
  at::Tensor lse = at::empty({B, Lq}, q.options().dtype(at::kFloat));
  // Every element of the kept probs is written by the task owning its row (P or 0). From the
  // block cache: it is freed after each backward and asked for again at the next step.
  at::Tensor probs = keep_probs ? cached_empty({B, Lq, Lk}, q.options().dtype(at::kFloat))
                                : at::empty({0}, q.options().dtype(at::kFloat));
  if (B * Lq == 0) return {half ? out.to(at::kHalf) : out, lse, probs};
  if (Lk == 0) {  // no keys: every row is fully masked
    out.zero_();
    lse.fill_(-INFINITY);
    return {half ? out.to(at::kHalf) : out, lse, probs};
  }
  const DType dt = dtype_of(q);
  AttnFwdArgs a{};
  a.dtype = dt;
  a.q = q.data_ptr();
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  a.B = B, a.Lq = Lq, a.Lk = Lk, a.D = D, a.Dv = Dv;
  a.sqb = q.stride(0), a.sqr = q.stride(1), a.sob = out.stride(0), a.sor = out.stride(1);
  if (bias.has_value()) {
    a.bias = bias->data_ptr<float>();
    a.sbb = bias->stride(0), a.sbq = bias->stride(1), a.sbk = bias->stride(2);
  }
  a.causal = causal;
  a.scale = static_cast<float>(scale);
  a.dropout_p = dropout_p;
  a.seed = key;
  a.probs = keep_probs ? probs.data_ptr<float>() : nullptr;
  block_sizes(&a.bq, &a.bk, /*backward=*/false, std::max(a.D, a.Dv));
  const AttentionKernels& kern = kernels();

  at::Tensor kt = operand(dt, D, Lk, q.options(), &a.pkt);
  at::Tensor vp = operand(dt, Lk, Dv, q.options(), &a.pv);
  a.kt = kt.data_ptr();
  a.v = vp.data_ptr();
  const int64_t nqb = (Lq + a.bq - 1) / a.bq;
  for (int64_t b = 0; b < B; ++b) {
    pack_rows(kern.pack_t, dt, row_ptr(k, b), k.stride(1), Lk, D, kt, a.pkt);
    pack_rows(kern.pack_n, dt, row_ptr(v, b), v.stride(1), Lk, Dv, vp, a.pv);
    // Causal: the last query blocks see the most keys; start them first (longest first).
    run_tasks(nqb, attn_fwd_scratch_floats(a), [&](int64_t task, float* s) {
      kern.forward(a, b, causal ? nqb - 1 - task : task, s);
    });
  }
  return {half ? out.to(at::kHalf) : out, lse, probs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const std::optional<at::Tensor>& probs, const std::optional<at::Tensor>& bias, bool causal,
    double scale, double dropout_p, const at::Tensor& seed, bool deterministic) {
  (void)deterministic;  // always deterministic on the CPU (see the top of this file)
  checks::attention_backward(grad_out_in, q_in, k_in, v_in, out_in, lse_in, bias, dropout_p);
  const bool kept = checks::attention_probs_given(q_in, k_in, probs);
  const uint64_t key = checks::dropout_seed(seed, "attention_backward");
  const bool half = q_in.scalar_type() == at::kHalf;
  auto prep = [&](const at::Tensor& t) {
    at::Tensor r = half ? t.to(at::kFloat) : t;
    return (r.size(2) > 1 && r.stride(2) != 1) ? r.contiguous() : r;
  };
  const at::Tensor q = prep(q_in), k = prep(k_in), v = prep(v_in);
  const at::Tensor dout = prep(grad_out_in), out = prep(out_in);
  const at::Tensor lse = lse_in.contiguous();
  const int64_t B = q.size(0), Lq = q.size(1), D = q.size(2), Lk = k.size(1), Dv = v.size(2);
  at::Tensor dq = cached_empty({B, Lq, D}, q.options());
  // Every row of dK/dV is written by the task owning its key block (zeros where no query sees
  // it), so they start empty.
  at::Tensor dk = cached_empty({B, Lk, D}, q.options());
  at::Tensor dv = cached_empty({B, Lk, Dv}, q.options());
  auto finish = [&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor> {
    if (!half) return {dq, dk, dv};
    return {dq.to(at::kHalf), dk.to(at::kHalf), dv.to(at::kHalf)};
  };
  if (B * Lq == 0 || Lk == 0) {
    dq.zero_();
    dk.zero_();
    dv.zero_();
    return finish();
  }
  // Delta_i = rowsum(dO * O) in fp32 (O is the dropped output, so Delta = sum_j P_ij dP~_ij).
  const at::Tensor delta = row_dots(dout, out);
  const DType dt = dtype_of(q);
  AttnBwdArgs a{};
  a.dtype = dt;
  a.q = q.data_ptr();
  a.dout = dout.data_ptr();
  a.lse = lse.data_ptr<float>();
  a.delta = delta.data_ptr<float>();
  a.dk = dk.data_ptr();
  a.dv = dv.data_ptr();
  a.B = B, a.Lq = Lq, a.Lk = Lk, a.D = D, a.Dv = Dv;
  a.sqb = q.stride(0), a.sqr = q.stride(1), a.sdb = dout.stride(0), a.sdr = dout.stride(1);
  if (bias.has_value()) {
    a.bias = bias->data_ptr<float>();
    a.sbb = bias->stride(0), a.sbq = bias->stride(1), a.sbk = bias->stride(2);
  }
  a.causal = causal;
  a.scale = static_cast<float>(scale);
  a.dropout_p = dropout_p;
  a.seed = key;
  a.probs = kept ? probs->data_ptr<float>() : nullptr;
  block_sizes(&a.bq, &a.bk, /*backward=*/true, std::max(a.D, a.Dv));
  const AttentionKernels& kern = kernels();
  const int64_t nkb = (Lk + a.bk - 1) / a.bk;
  // 4 interleaved key-block chunks per thread, each with its own fp32 dQ buffer: small enough
  // tasks that the dynamic schedule absorbs a thread being preempted on a shared machine
  // (with one chunk per thread, 2 threads ran 2-7x slower than 1 thread under load).
  const int64_t nchunks =
      std::max<int64_t>(1, std::min<int64_t>(nkb, 4 * static_cast<int64_t>(at::get_num_threads())));

  const auto opts = q.options();
  at::Tensor kt = operand(dt, D, Lk, opts, &a.pkt);
  at::Tensor vt = operand(dt, Dv, Lk, opts, &a.pvt);
  at::Tensor qn = operand(dt, Lq, D, opts, &a.pqn);
  at::Tensor don = operand(dt, Lq, Dv, opts, &a.pdon);
  at::Tensor kn = operand(dt, Lk, D, opts, &a.pkn);
  a.qn = qn.data_ptr(), a.don = don.data_ptr(), a.kn = kn.data_ptr();
  const int64_t nqb = (Lq + a.bq - 1) / a.bq;
  at::Tensor dq_acc = cached_empty({nchunks, Lq, D}, opts.dtype(at::kFloat));
  at::Tensor dq_touched = at::empty({nchunks, nqb}, opts.dtype(at::kByte));
  a.kt = kt.data_ptr();
  a.vt = vt.data_ptr();
  for (int64_t b = 0; b < B; ++b) {
    if (!kept)  // K^T is the B operand of S = Q K^T only, which kept probs skip
      pack_rows(kern.pack_t, dt, row_ptr(k, b), k.stride(1), Lk, D, kt, a.pkt);
    pack_rows(kern.pack_t, dt, row_ptr(v, b), v.stride(1), Lk, Dv, vt, a.pvt);
    pack_rows(kern.pack_n, dt, row_ptr(q, b), q.stride(1), Lq, D, qn, a.pqn);
    pack_rows(kern.pack_n, dt, row_ptr(dout, b), dout.stride(1), Lq, Dv, don, a.pdon);
    pack_rows(kern.pack_n, dt, row_ptr(k, b), k.stride(1), Lk, D, kn, a.pkn);
    dq_touched.zero_();
    run_tasks(nchunks, attn_bwd_scratch_floats(a), [&](int64_t c, float* s) {
      AttnBwdArgs ac = a;
      ac.dq_acc = dq_acc.data_ptr<float>() + c * Lq * D;
      ac.dq_touched = dq_touched.data_ptr<uint8_t>() + c * nqb;
      kern.backward(ac, b, c, nchunks, s);
    });
    sum_dq(dq_acc, dq_touched, a.bq, dq.select(0, b));
  }
  return finish();
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_ATTENTION_OPS(ATTNFAST_IMPL_CPU) }
