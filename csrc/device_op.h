// One generic adaptor from a family's CUDA glue to an op kernel, for both device kinds that run
// the CUDA kernels: CUDA tensors (csrc/cuda/cuda_op.h) and CPU tensors under the SIMT harness
// (csrc/simt/*_ops.cpp). The glue `R glue::op(cudaStream_t stream, A... args)` (the schema's
// arguments after the stream) does the argument checks, outputs and launches; the adaptor is the
// kernel `R(A... args)` that
//   1. checks that every tensor argument (and every optional one that is given) is on the
//      device kind, naming the op and the argument from its schema (csrc/schemas.h):
//        "memory_write_forward (CUDA): erase must be a CUDA tensor, got device cpu"
//        "memory_write_forward (SIMT harness): erase must be a CPU tensor, got device cuda:0"
//      -- except arguments named `seed`, host tensors by contract;
//   2. calls the glue through Launch<Device>::run(first tensor, f), which calls f(stream): on CUDA
//      the device guard of the first tensor's device, its current stream and the launch check
//      (cuda_op.h); under the SIMT harness a null stream (launches run to completion).
// Registration, from a family's op list (csrc/op_lists.h): ATTNFAST_IMPL_CUDA / ATTNFAST_IMPL_SIMT.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "schemas.h"

namespace attnfast {
namespace device_op {

// The argument names of `op`'s schema in csrc/schemas.h, in order. Registration-time only.
inline std::vector<std::string_view> argument_names(std::string_view op) {
  const char* schema = schemas::find(op);
  TORCH_CHECK(schema != nullptr, "attnfast: no schema for op '", op, "' in csrc/schemas.h");
  const std::string_view s(schema);
  const size_t open = s.find('('), close = s.find(')');
  std::vector<std::string_view> names;
  std::string_view args = s.substr(open + 1, close - open - 1);
  while (!args.empty()) {
    const size_t comma = args.find(',');
    std::string_view arg = args.substr(0, comma);  // "Type name" or "Type name=default"
    arg = arg.substr(0, arg.find('='));
    while (!arg.empty() && arg.back() == ' ') arg.remove_suffix(1);
    names.push_back(arg.substr(arg.rfind(' ') + 1));
    args = comma == std::string_view::npos ? std::string_view() : args.substr(comma + 1);
  }
  return names;
}

// How the glue is called on a device kind. CUDA: cuda_op.h (only .cu files see CUDA's runtime).
template <c10::DeviceType Device>
struct Launch;

// CPU tensors: the SIMT harness, which runs every launch to completion on the calling thread.
template <>
struct Launch<c10::DeviceType::CPU> {
  static constexpr const char* kName = "SIMT harness";
  template <typename F>
  static auto run(const at::Tensor& /*first*/, F&& f) { return f(nullptr); }
};

template <c10::DeviceType Device, typename R, typename Stream, typename... A>
class Adaptor {
 public:
  using Glue = R (*)(Stream, A...);

  Adaptor(const char* op, Glue glue) : op_(op), glue_(glue), names_(argument_names(op)) {
    TORCH_CHECK(names_.size() == sizeof...(A), "attnfast: the glue of ", op, " takes ",
                sizeof...(A), " arguments after the stream, its schema ", names_.size());
  }

  R operator()(A... args) const {
    const at::Tensor* first = nullptr;
    size_t i = 0;
    (check(args, names_[i++], first), ...);
    TORCH_INTERNAL_ASSERT(first != nullptr, op_, ": no tensor argument to take the device from");
    return Launch<Device>::run(*first, [&](Stream stream) { return glue_(stream, args...); });
  }

 private:
  void check(const at::Tensor& t, std::string_view name, const at::Tensor*& first) const {
    if (name == "seed") return;  // read on the host (csrc/checks/seed.h)
    TORCH_CHECK(t.device().type() == Device, op_, " (", Launch<Device>::kName, "): ", name,
                " must be a ", c10::DeviceTypeName(Device), " tensor, got device ", t.device());
    if (first == nullptr) first = &t;
  }
  void check(const std::optional<at::Tensor>& t, std::string_view name,
             const at::Tensor*& first) const {
    if (t.has_value()) check(*t, name, first);
  }
  template <typename Scalar>
  void check(const Scalar&, std::string_view, const at::Tensor*&) const {}

  const char* op_;
  Glue glue_;
  std::vector<std::string_view> names_;
};

// The kernel of op `op` on Device from its glue (R, the stream type and A... from its signature).
template <c10::DeviceType Device, typename R, typename Stream, typename... A>
Adaptor<Device, R, Stream, A...> adapt(const char* op, R (*glue)(Stream, A...)) {
  return Adaptor<Device, R, Stream, A...>(op, glue);
}

}  // namespace device_op
}  // namespace attnfast

// One op of a family's list (csrc/op_lists.h) in a TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m)
// block: the CUDA kernels on CPU tensors under the SIMT harness (csrc/simt/*_ops.cpp).
#define ATTNFAST_IMPL_SIMT(op) \
  m.impl(#op, ::attnfast::device_op::adapt<c10::DeviceType::CPU>(#op, &::attnfast::glue::op));
