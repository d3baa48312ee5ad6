// Argument checks of the memory addressing ops, shared by every backend's ATen glue so all of
// them reject the same inputs with the same messages. (The Python API checks first and raises
// ValueError; these guard direct torch.ops.attnfast calls.)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace attnfast {
namespace checks {

// `t` must have exactly `shape`, the dtype and device of `ref`, and be contiguous.
inline void memory_tensor(const char* op, const char* name, const at::Tensor& t,
                          std::vector<int64_t> shape, const at::Tensor& ref) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.sizes() == c10::IntArrayRef(shape), op, ": ", name, " must have shape ",
              c10::IntArrayRef(shape), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " dtype ", t.scalar_type(),
              " must match ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but the other "
              "inputs are on ", ref.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void memory_dtype(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64 (the DNC state is kept in full precision), got ",
              t.scalar_type());
}

inline void memory_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                        const char* axes) {
  TORCH_CHECK(t.dim() == rank, op, ": ", name, " must be ", rank, "-D ", axes, ", got shape ",
              t.sizes());
}

inline void memory_content(const at::Tensor& memory, const at::Tensor& keys,
                           const at::Tensor& strengths) {
  const char* op = "memory_content";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "keys", keys, 3, "(B, H, W)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  TORCH_CHECK(N >= 1, op, ": memory must have N >= 1 slots, got ", memory.sizes());
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "keys", keys, {B, H, W}, memory);
  memory_tensor(op, "strengths", strengths, {B, H}, memory);
}

inline void dnc_allocation(const at::Tensor& usage, const at::Tensor& gates) {
  const char* op = "dnc_allocation";
  memory_rank(op, "usage", usage, 2, "(B, N)");
  memory_rank(op, "write_gates", gates, 2, "(B, Hw)");
  memory_dtype(op, usage);
  TORCH_CHECK(usage.size(1) < (int64_t(1) << 31), op, ": N must be < 2^31, got ", usage.size(1));
  memory_tensor(op, "usage", usage, {usage.size(0), usage.size(1)}, usage);
  memory_tensor(op, "write_gates", gates, {usage.size(0), gates.size(1)}, usage);
}

inline void memory_write(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                         const at::Tensor& add) {
  const char* op = "memory_write";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "write_weights", ww, 3, "(B, Hw, N)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "write_weights", ww, {B, Hw, N}, memory);
  memory_tensor(op, "erase", erase, {B, Hw, W}, memory);
  memory_tensor(op, "add", add, {B, Hw, W}, memory);
}

inline void dnc_link_read(const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
                          const at::Tensor& rw) {
  const char* op = "dnc_link_read";
  memory_rank(op, "link", link, 4, "(B, Hw, N, N)");
  memory_rank(op, "read_weights", rw, 3, "(B, R, N)");
  memory_dtype(op, link);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  memory_tensor(op, "link", link, {B, Hw, N, N}, link);
  memory_tensor(op, "precedence", prec, {B, Hw, N}, link);
  memory_tensor(op, "write_weights", ww, {B, Hw, N}, link);
  memory_tensor(op, "read_weights", rw, {B, R, N}, link);
}

}  // namespace checks
}  // namespace attnfast
