// The sanitizer step's canary (.ci/sanitize): two deliberate bugs, built with the flags the
// sanitized attnfast build uses and called from Python under the same preload and options as
// the test run. The step fails unless AddressSanitizer reports the out-of-bounds write (into a
// torch-allocated tensor, as a kernel's would be) and UndefinedBehaviorSanitizer the signed
// overflow (the bug class of 32-bit index products).
#include <cstdint>

extern "C" void canary_write_past_end(float* data, int64_t numel) { data[numel] = 1.f; }

extern "C" int canary_int32_index(int rows, int row_stride) { return rows * row_stride; }
