// SIMT host harness: the fiber runtime (see runtime.h for the model, README.md for the why).
#include "simt/runtime.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#if !defined(__x86_64__) || defined(ATTNFAST_SIMT_UCONTEXT)
#include <ucontext.h>
#define ATTNFAST_SIMT_USE_UCONTEXT 1
#else
#define ATTNFAST_SIMT_USE_UCONTEXT 0
#endif

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

#if !ATTNFAST_SIMT_USE_UCONTEXT
// attnfast_simt_switch(void** save_sp, void* new_sp): saves the callee-saved registers, MXCSR and
// the x87 control word on the current stack, stores the stack pointer to *save_sp, loads new_sp
// and restores the same from there (System V x86-64). A new fiber's stack is prepared so that the
// final `ret` enters attnfast_simt_trampoline with r12 = argument, r13 = entry function.
asm(R"(
    .text
    .p2align 4
    .globl attnfast_simt_switch
    .hidden attnfast_simt_switch
    .type attnfast_simt_switch,@function
attnfast_simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size attnfast_simt_switch,.-attnfast_simt_switch

    .p2align 4
    .globl attnfast_simt_trampoline
    .hidden attnfast_simt_trampoline
    .type attnfast_simt_trampoline,@function
attnfast_simt_trampoline:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size attnfast_simt_trampoline,.-attnfast_simt_trampoline
)");
extern "C" void attnfast_simt_switch(void** save_sp, void* new_sp);
extern "C" void attnfast_simt_trampoline();
#endif

namespace attnfast {
namespace simt {
namespace {

// ---- configuration ------------------------------------------------------------------------------
double env_double(const char* name, double dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return dflt;
  return std::atof(v);
}
size_t stack_bytes() {
  static const size_t b = static_cast<size_t>(env_double("ATTNFAST_SIMT_STACK_KB", 256)) * 1024;
  return b < 64 * 1024 ? 64 * 1024 : b;
}
double timeout_s() {
  static const double t = env_double("ATTNFAST_SIMT_TIMEOUT_S", 120);
  return t;
}
std::atomic<int> g_schedule{static_cast<int>(env_double("ATTNFAST_SIMT_SCHEDULE", 0))};
std::atomic<uint64_t> g_schedule_seed{0x9E3779B97F4A7C15ull};

// ---- fibers -------------------------------------------------------------------------------------
struct FiberAbort {};

enum class State : uint8_t { runnable, barrier, warp, exited };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer (asm switch)
#if ATTNFAST_SIMT_USE_UCONTEXT
  ucontext_t ctx;
#endif
  uint3 tid{};
  int linear = 0;
  State state = State::runnable;
  WarpOp wait_op = WarpOp::shfl;
  unsigned wait_mask = 0;
  // cp.async copies issued and not yet waited for: the source is read at issue, the destination
  // written only when a cp.async.wait_group covers its group (one legal completion time), so a
  // kernel that reads a stage before waiting for it sees stale or poisoned shared memory.
  struct PendingCopy {
    unsigned char* dst;
    unsigned char data[16];
    uint32_t bytes, group;
  };
  std::vector<PendingCopy> cp_pending;
  uint32_t cp_groups = 0;  // groups committed so far
};
constexpr uint32_t kUncommitted = 0xffffffffu;

struct WarpGroup {
  unsigned mask = 0;
  WarpOp op = WarpOp::shfl;
  unsigned arrived = 0;
  void* slots[32] = {};
};

struct Warp {
  unsigned exists = 0, exited = 0;
  std::vector<WarpGroup> groups;
};

// Fiber stacks: mmap'ed, with a PROT_NONE guard page below (a stack overflow faults instead of
// corrupting a neighbour), reused across blocks and launches of the same OS thread.
struct Stack {
  unsigned char* base = nullptr;  // guard page
  size_t bytes = 0;               // usable bytes above the guard page
};
struct StackPool {
  std::vector<Stack> stacks;
  ~StackPool() {
    for (auto& s : stacks) munmap(s.base, s.bytes + static_cast<size_t>(getpagesize()));
  }
  void ensure(size_t n) {
    const size_t page = static_cast<size_t>(getpagesize());
    while (stacks.size() < n) {
      Stack s;
      s.bytes = (stack_bytes() + page - 1) / page * page;
      void* p = mmap(nullptr, s.bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("[attnfast SIMT] cannot allocate fiber stacks");
      mprotect(p, page, PROT_NONE);
      s.base = static_cast<unsigned char*>(p);
      stacks.push_back(s);
    }
  }
  unsigned char* top(size_t i) const {
    return stacks[i].base + static_cast<size_t>(getpagesize()) + stacks[i].bytes;
  }
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int n = 0, live = 0, exited = 0;
  int barrier_arrived = 0, barrier_pred = 0, barrier_result = 0;
  Fiber* current = nullptr;
  void* sched_sp = nullptr;
#if ATTNFAST_SIMT_USE_UCONTEXT
  ucontext_t sched_ctx;
#endif
  bool failed = false;
  std::string error;
  const std::function<void()>* body = nullptr;
};

// Everything below is per OS thread: launches on different OS threads are independent.
struct ThreadState {
  StackPool pool;
  Block* block = nullptr;  // the block being run, while inside run_grid
  std::unique_ptr<unsigned char[]> own_smem_storage;
  unsigned char* own_smem = nullptr;
  size_t smem_bytes = 0;
  std::vector<unsigned char*> smem_bases;  // own buffer + every extern __shared__ array
  uint64_t rng = 0;
  std::atomic<uint64_t>* progress = nullptr;
};
thread_local ThreadState t;

std::mutex& extern_smem_mutex() {
  static std::mutex m;
  return m;
}
std::vector<unsigned char* (*)()>& extern_smem_getters() {
  static std::vector<unsigned char* (*)()> v;
  return v;
}

std::string fmt3(unsigned x, unsigned y, unsigned z) {
  return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
}
std::string hex(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

void switch_to_scheduler(Fiber* f) {
#if ATTNFAST_SIMT_USE_UCONTEXT
  swapcontext(&f->ctx, &t.block->sched_ctx);
#else
  attnfast_simt_switch(&f->sp, t.block->sched_sp);
#endif
}

// Marks the block failed with `msg` and leaves the current fiber for good (its stack is dropped).
[[noreturn]] void fail_in_fiber(const std::string& msg) {
  Block& b = *t.block;
  Fiber* f = b.current;
  if (!b.failed) {
    b.failed = true;
    b.error = "thread " + fmt3(f->tid.x, f->tid.y, f->tid.z) + ": " + msg;
  }
  switch_to_scheduler(f);
  std::abort();  // never resumed
}

void yield_current() { switch_to_scheduler(t.block->current); }

void apply_copies(Fiber& f, uint32_t group_limit) {
  size_t keep = 0;
  for (size_t i = 0; i < f.cp_pending.size(); ++i) {
    auto& c = f.cp_pending[i];
    if (c.group < group_limit) std::memcpy(c.dst, c.data, c.bytes);
    else f.cp_pending[keep++] = c;
  }
  f.cp_pending.resize(keep);
}

void on_exit(Fiber& f) {
  Block& b = *t.block;
  for (auto& c : f.cp_pending) std::memcpy(c.dst, c.data, c.bytes);
  f.cp_pending.clear();
  f.state = State::exited;
  --b.live;
  ++b.exited;
  Warp& w = b.warps[f.linear / 32];
  const unsigned bit = 1u << (f.linear % 32);
  w.exited |= bit;
  if (b.barrier_arrived > 0)
    fail_in_fiber("returned while " + std::to_string(b.barrier_arrived) +
                  " thread(s) of the block wait at __syncthreads (a barrier must be reached by "
                  "every thread of the block)");
  for (const auto& g : w.groups)
    if (g.mask & bit)
      fail_in_fiber(std::string("returned while lanes ") + hex(g.arrived) + " of warp " +
                    std::to_string(f.linear / 32) + " wait at " + warp_op_name(g.op) +
                    " with mask " + hex(g.mask) + ", which includes this lane");
}

void fiber_main(Fiber* f) {
  Block& b = *t.block;
  std::string err;  // leave the catch block before switching stacks
  try {
    (*b.body)();
  } catch (const std::exception& e) {
    err = std::string("exception: ") + e.what();
  } catch (...) {
    err = "unknown exception";
  }
  if (!err.empty()) fail_in_fiber(err);
  on_exit(*f);
  switch_to_scheduler(f);
  std::abort();  // an exited fiber is never resumed
}

#if ATTNFAST_SIMT_USE_UCONTEXT
void fiber_main_uc(unsigned lo, unsigned hi) {
  fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif

void init_fiber(Fiber& f, unsigned char* top, size_t bytes) {
#if ATTNFAST_SIMT_USE_UCONTEXT
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = top - bytes;
  f.ctx.uc_stack.ss_size = bytes;
  f.ctx.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_main_uc), 2,
              static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
#else
  (void)bytes;
  uintptr_t p = reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15};
  p -= 16;  // p % 16 == 0: rsp after the `ret` into the trampoline
  auto* s = reinterpret_cast<uint64_t*>(p);
  s[-1] = reinterpret_cast<uint64_t>(&attnfast_simt_trampoline);  // return address
  s[-2] = 0;                                                       // rbp
  s[-3] = 0;                                                       // rbx
  s[-4] = reinterpret_cast<uint64_t>(&f);                          // r12: argument
  s[-5] = reinterpret_cast<uint64_t>(&fiber_main);                 // r13: entry
  s[-6] = 0;                                                       // r14
  s[-7] = 0;                                                       // r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  uint64_t csr = mxcsr | (static_cast<uint64_t>(fpucw) << 32);
  s[-8] = csr;
  f.sp = &s[-8];
#endif
}

void resume(Block& b, Fiber& f) {
  b.current = &f;
  threadIdx = f.tid;
#if ATTNFAST_SIMT_USE_UCONTEXT
  swapcontext(&b.sched_ctx, &f.ctx);
#else
  attnfast_simt_switch(&b.sched_sp, f.sp);
#endif
  b.current = nullptr;
}

std::string describe_waits(const Block& b) {
  std::ostringstream os;
  int at_barrier = 0;
  for (const auto& f : b.fibers) at_barrier += f.state == State::barrier;
  os << at_barrier << " thread(s) wait at __syncthreads";
  for (size_t wi = 0; wi < b.warps.size(); ++wi)
    for (const auto& g : b.warps[wi].groups)
      os << "; warp " << wi << " lanes " << hex(g.arrived) << " wait at " << warp_op_name(g.op)
         << " for mask " << hex(g.mask);
  os << "; " << b.exited << " thread(s) returned";
  return os.str();
}

// Runs one block to completion or failure; returns the error ("" if none).
std::string run_block(const std::function<void()>& body, std::atomic<uint64_t>& progress,
                      std::chrono::steady_clock::time_point deadline) {
  const int n = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
  t.pool.ensure(static_cast<size_t>(n));
  Block b;
  b.n = b.live = n;
  b.body = &body;
  b.fibers.resize(static_cast<size_t>(n));
  b.warps.resize(static_cast<size_t>((n + 31) / 32));
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[static_cast<size_t>(i)];
    f.linear = i;
    f.tid = uint3{static_cast<unsigned>(i) % blockDim.x, (static_cast<unsigned>(i) / blockDim.x) % blockDim.y,
                 static_cast<unsigned>(i) / (blockDim.x * blockDim.y)};
    b.warps[static_cast<size_t>(i / 32)].exists |= 1u << (i % 32);
    init_fiber(f, t.pool.top(static_cast<size_t>(i)), t.pool.stacks[static_cast<size_t>(i)].bytes);
  }
  t.block = &b;
  const int policy = g_schedule.load(std::memory_order_relaxed);
  int last = n - 1;
  uint64_t steps = 0;
  std::vector<int> runnable;
  for (;;) {
    int next = -1;
    if (policy == 2) {
      runnable.clear();
      for (int i = 0; i < n; ++i)
        if (b.fibers[static_cast<size_t>(i)].state == State::runnable) runnable.push_back(i);
      if (!runnable.empty()) {
        t.rng = t.rng * 6364136223846793005ull + 1442695040888963407ull;
        next = runnable[(t.rng >> 33) % runnable.size()];
      }
    } else {
      for (int k = 1; k <= n; ++k) {
        const int i = policy == 1 ? ((last - k) % n + n) % n : (last + k) % n;
        if (b.fibers[static_cast<size_t>(i)].state == State::runnable) {
          next = i;
          break;
        }
      }
    }
    if (next < 0) {
      if (b.live == 0) break;
      b.failed = true;
      b.error = "deadlock: no thread can continue: " + describe_waits(b);
      break;
    }
    last = next;
    resume(b, b.fibers[static_cast<size_t>(next)]);
    if (b.failed) break;
    progress.fetch_add(1, std::memory_order_relaxed);
    if ((++steps & 1023) == 0 && std::chrono::steady_clock::now() > deadline) {
      b.failed = true;
      b.error = "time limit of " + std::to_string(timeout_s()) +
                " s exceeded (ATTNFAST_SIMT_TIMEOUT_S); " + describe_waits(b);
      break;
    }
  }
  t.block = nullptr;
  return b.failed ? b.error : std::string();
}

// ---- watchdog: a kernel spinning without a scheduling point is aborted after the time limit ----
struct Watch {
  std::atomic<uint64_t>* progress;
  uint64_t seen;
  std::chrono::steady_clock::time_point since;
  std::string what;
};
std::mutex g_watch_mutex;
std::map<uint64_t, Watch> g_watches;
uint64_t g_watch_next = 0;
void watchdog_loop() {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::lock_guard<std::mutex> lock(g_watch_mutex);
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, w] : g_watches) {
      const uint64_t p = w.progress->load(std::memory_order_relaxed);
      if (p != w.seen) {
        w.seen = p;
        w.since = now;
      } else if (std::chrono::duration<double>(now - w.since).count() > timeout_s()) {
        std::fprintf(stderr,
                     "[attnfast SIMT] %s: a CUDA thread ran %.0f s without reaching a "
                     "synchronisation point (an endless loop?); aborting the process\n",
                     w.what.c_str(), timeout_s());
        std::fflush(stderr);
        std::abort();
      }
    }
  }
}
uint64_t watch_begin(std::atomic<uint64_t>* progress, const std::string& what) {
  static std::once_flag once;
  std::call_once(once, [] { std::thread(watchdog_loop).detach(); });
  std::lock_guard<std::mutex> lock(g_watch_mutex);
  const uint64_t id = g_watch_next++;
  g_watches[id] = Watch{progress, progress->load(), std::chrono::steady_clock::now(), what};
  return id;
}
void watch_end(uint64_t id) {
  std::lock_guard<std::mutex> lock(g_watch_mutex);
  g_watches.erase(id);
}

// ---- launch log and kernel names ------------------------------------------------------------------
struct LogEntry {
  std::string kernel, signature, grid, block;
  size_t smem = 0;
  uint64_t launches = 0;
  bool error = false;
};
std::mutex g_log_mutex;
std::map<std::string, LogEntry> g_log;
std::vector<std::string> g_log_order;
std::mutex g_optin_mutex;
std::map<const void*, int> g_optin;

std::string kernel_name(const LaunchConfig& cfg) {
  Dl_info info;
  if (cfg.fn != nullptr && dladdr(cfg.fn, &info) != 0 && info.dli_sname != nullptr &&
      info.dli_saddr == cfg.fn) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    if (status == 0 && d != nullptr) {
      std::string s(d);
      std::free(d);
      // "void ns::kernel<T>(params)" -> "ns::kernel<T>"
      int depth = 0;
      size_t start = 0, end = s.size();
      for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '<') ++depth;
        else if (c == '>') --depth;
        else if (c == ' ' && depth == 0) start = i + 1;
        else if (c == '(' && depth == 0) {
          end = i;
          break;
        }
      }
      return s.substr(start, end - start);
    }
    std::free(d);
  }
  return cfg.text;
}

std::string with_clause(const char* pretty) {
  std::string s(pretty);
  const size_t p = s.find("[with ");
  if (p == std::string::npos) return s;
  std::string w = s.substr(p + 6);
  if (!w.empty() && w.back() == ']') w.pop_back();
  // "P = {const float*, int}; dim3 = ...": keep the kernel's parameter types.
  if (w.rfind("P = {", 0) == 0) {
    const size_t e = w.find("};");
    w = w.substr(5, e == std::string::npos ? std::string::npos : e - 5);
  }
  return w;
}

void log_launch(const LaunchConfig& cfg, bool error) {
  const std::string name = kernel_name(cfg);
  const std::string grid = fmt3(cfg.grid.x, cfg.grid.y, cfg.grid.z);
  const std::string block = fmt3(cfg.block.x, cfg.block.y, cfg.block.z);
  const std::string key = name + "|" + grid + "|" + block + "|" + std::to_string(cfg.smem);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  auto it = g_log.find(key);
  if (it == g_log.end()) {
    g_log_order.push_back(key);
    it = g_log.emplace(key, LogEntry{name, with_clause(cfg.signature), grid, block, cfg.smem, 0,
                                     false})
             .first;
  }
  ++it->second.launches;
  it->second.error = it->second.error || error;
}

void prepare_smem(size_t bytes) {
  if (!t.own_smem_storage) {
    t.own_smem_storage.reset(new unsigned char[kMaxDynamicSmem + kSmemGuard + 1024]);
    const uintptr_t p = reinterpret_cast<uintptr_t>(t.own_smem_storage.get());
    t.own_smem = reinterpret_cast<unsigned char*>((p + 1023) & ~uintptr_t{1023});
  }
  t.smem_bytes = bytes;
  t.smem_bases.clear();
  t.smem_bases.push_back(t.own_smem);
  {
    std::lock_guard<std::mutex> lock(extern_smem_mutex());
    for (auto get : extern_smem_getters()) t.smem_bases.push_back(get());
  }
}
// 0xff bytes: NaN as fp32, bf16 and fp16, so reading shared memory nobody wrote shows up.
void poison_smem() {
  for (unsigned char* b : t.smem_bases) {
    std::memset(b, 0xff, t.smem_bytes);
    std::memset(b + t.smem_bytes, 0xa5, kSmemGuard);
  }
}
std::string check_smem_guards() {
  for (unsigned char* b : t.smem_bases)
    for (size_t i = 0; i < kSmemGuard; ++i)
      if (b[t.smem_bytes + i] != 0xa5)
        return "out-of-bounds write to dynamic shared memory: byte " +
               std::to_string(t.smem_bytes + i) + " past its start was written, but the launch "
               "has only " + std::to_string(t.smem_bytes) + " bytes";
  return "";
}

}  // namespace

// ---- public API -----------------------------------------------------------------------------------
const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl: return "__shfl*_sync";
    case WarpOp::vote: return "__ballot/__any/__all_sync";
    case WarpOp::reduce: return "__reduce_*_sync";
    case WarpOp::syncwarp: return "__syncwarp";
    case WarpOp::ldmatrix: return "ldmatrix";
    case WarpOp::mma: return "mma";
    default: return "warp collective";
  }
}

void fail(const std::string& msg) {
  if (t.block != nullptr && t.block->current != nullptr) fail_in_fiber(msg);
  throw std::runtime_error("[attnfast SIMT] " + msg);
}

void syncthreads(int pred, int* count_out) {
  if (t.block == nullptr || t.block->current == nullptr) fail("__syncthreads outside a kernel");
  Block& b = *t.block;
  Fiber& f = *b.current;
  if (b.exited > 0)
    fail_in_fiber("reached __syncthreads after " + std::to_string(b.exited) +
                  " thread(s) of the block returned (a barrier must be reached by every thread "
                  "of the block)");
  f.state = State::barrier;
  ++b.barrier_arrived;
  b.barrier_pred += pred;
  if (b.barrier_arrived == b.live) {
    b.barrier_result = b.barrier_pred;
    b.barrier_arrived = 0;
    b.barrier_pred = 0;
    for (auto& g : b.fibers)
      if (g.state == State::barrier) g.state = State::runnable;
  } else {
    yield_current();
  }
  if (count_out != nullptr) *count_out = b.barrier_result;
}

unsigned lane_id() {
  return t.block && t.block->current ? static_cast<unsigned>(t.block->current->linear % 32) : 0u;
}
unsigned warp_id() {
  return t.block && t.block->current ? static_cast<unsigned>(t.block->current->linear / 32) : 0u;
}
int block_threads() { return t.block ? t.block->n : 0; }
unsigned active_mask() {
  if (t.block == nullptr || t.block->current == nullptr) return 0;
  const Warp& w = t.block->warps[static_cast<size_t>(t.block->current->linear / 32)];
  return w.exists & ~w.exited;
}
long long clock_ticks() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void warp_collective_impl(unsigned mask, WarpOp op, void* slot, ResolveFn fn, void* ctx) {
  if (t.block == nullptr || t.block->current == nullptr) fail("warp collective outside a kernel");
  Block& b = *t.block;
  Fiber& f = *b.current;
  const int wi = f.linear / 32, lane = f.linear % 32;
  Warp& w = b.warps[static_cast<size_t>(wi)];
  const unsigned bit = 1u << lane;
  const char* name = warp_op_name(op);
  if (!(mask & bit))
    fail_in_fiber(std::string(name) + " with mask " + hex(mask) + " that does not include lane " +
                  std::to_string(lane));
  const unsigned participants = mask & w.exists;
  if (participants & w.exited)
    fail_in_fiber(std::string(name) + " with mask " + hex(mask) + ", but lanes " +
                  hex(participants & w.exited) + " of warp " + std::to_string(wi) +
                  " have returned");
  size_t gi = 0;
  while (gi < w.groups.size() && w.groups[gi].mask != mask) ++gi;
  if (gi == w.groups.size()) {
    w.groups.emplace_back();
    w.groups.back().mask = mask;
    w.groups.back().op = op;
  }
  WarpGroup& g = w.groups[gi];
  if (g.op != op)
    fail_in_fiber(std::string("lanes of warp ") + std::to_string(wi) +
                  " meet at different warp collectives with mask " + hex(mask) + ": this lane at " +
                  name + ", lanes " + hex(g.arrived) + " at " + warp_op_name(g.op));
  g.slots[lane] = slot;
  g.arrived |= bit;
  if (g.arrived == participants) {
    WarpGroup done = g;
    w.groups.erase(w.groups.begin() + static_cast<std::ptrdiff_t>(gi));
    fn(ctx, done.slots, participants);
    for (int l = 0; l < 32; ++l)
      if ((participants >> l & 1u) && l != lane)
        b.fibers[static_cast<size_t>(wi * 32 + l)].state = State::runnable;
  } else {
    f.state = State::warp;
    f.wait_op = op;
    f.wait_mask = mask;
    yield_current();
  }
}

void cp_async_issue(void* dst, const void* src, size_t bytes) {
  if (t.block == nullptr || t.block->current == nullptr) fail("cp.async outside a kernel");
  if (bytes > 16) fail("cp.async of more than 16 bytes");
  Fiber& f = *t.block->current;
  Fiber::PendingCopy c;
  c.dst = static_cast<unsigned char*>(dst);
  c.bytes = static_cast<uint32_t>(bytes);
  c.group = kUncommitted;
  if (src != nullptr) std::memcpy(c.data, src, bytes);
  else std::memset(c.data, 0, bytes);
  f.cp_pending.push_back(c);
}
void cp_async_commit_group() {
  if (t.block == nullptr || t.block->current == nullptr) fail("cp.async outside a kernel");
  Fiber& f = *t.block->current;
  for (auto& c : f.cp_pending)
    if (c.group == kUncommitted) c.group = f.cp_groups;
  ++f.cp_groups;
}
void cp_async_wait_groups(int n) {
  if (t.block == nullptr || t.block->current == nullptr) fail("cp.async outside a kernel");
  Fiber& f = *t.block->current;
  const uint32_t limit = f.cp_groups > static_cast<uint32_t>(n) ? f.cp_groups - n : 0u;
  apply_copies(f, limit);
}

unsigned char* dynamic_smem() { return t.block ? t.own_smem : nullptr; }
size_t dynamic_smem_bytes() { return t.smem_bytes; }

void check_smem_access(const void* p, size_t bytes, const char* what) {
  const auto* q = static_cast<const unsigned char*>(p);
  for (unsigned char* base : t.smem_bases) {
    if (q + bytes > base && q < base + kMaxDynamicSmem + kSmemGuard) {
      if (q < base || q + bytes > base + t.smem_bytes)
        fail(std::string(what) + ": bytes [" + std::to_string(q - base) + ", " +
             std::to_string(q - base + static_cast<std::ptrdiff_t>(bytes)) +
             ") of dynamic shared memory accessed, but the launch has only " +
             std::to_string(t.smem_bytes) + " bytes");
      return;
    }
  }
}

uint32_t smem_address(const void* p) {
  const auto* q = static_cast<const unsigned char*>(p);
  for (unsigned char* base : t.smem_bases)
    if (q >= base && q < base + kMaxDynamicSmem + kSmemGuard) return static_cast<uint32_t>(q - base);
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
}

unsigned char dynamic_tls_init_byte() { return 0xff; }

ExternSmemRegistrar::ExternSmemRegistrar(unsigned char* (*get)()) { register_extern_smem(get); }
void register_extern_smem(unsigned char* (*get)()) {
  std::lock_guard<std::mutex> lock(extern_smem_mutex());
  extern_smem_getters().push_back(get);
}

void set_max_dynamic_smem(const void* fn, int bytes) {
  std::lock_guard<std::mutex> lock(g_optin_mutex);
  g_optin[fn] = bytes;
}

void set_schedule(int policy, uint64_t seed) {
  g_schedule.store(policy);
  g_schedule_seed.store(seed);
}

void run_grid(const LaunchConfig& cfg, const std::function<void()>& body) {
  auto config_error = [&](const std::string& msg) {
    log_launch(cfg, true);
    throw std::runtime_error("[attnfast SIMT] launch of " + kernel_name(cfg) + ": " + msg);
  };
  if (t.block != nullptr) config_error("launch from inside a kernel (dynamic parallelism)");
  const dim3 g = cfg.grid, bl = cfg.block;
  const uint64_t threads = uint64_t{bl.x} * bl.y * bl.z;
  if (bl.x == 0 || bl.y == 0 || bl.z == 0 || bl.x > 1024 || bl.y > 1024 || bl.z > 64 ||
      threads > 1024)
    config_error("invalid block " + fmt3(bl.x, bl.y, bl.z) + " (cudaErrorInvalidConfiguration)");
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    config_error("invalid grid " + fmt3(g.x, g.y, g.z) + " (cudaErrorInvalidConfiguration)");
  if (cfg.smem > kMaxDynamicSmem)
    config_error(std::to_string(cfg.smem) + " bytes of dynamic shared memory exceed the " +
                 std::to_string(kMaxDynamicSmem) + " of any GPU");
  if (cfg.smem > 48 * 1024) {
    int optin = 0;
    {
      std::lock_guard<std::mutex> lock(g_optin_mutex);
      auto it = g_optin.find(cfg.fn);
      if (it != g_optin.end()) optin = it->second;
    }
    if (static_cast<size_t>(optin) < cfg.smem)
      config_error(std::to_string(cfg.smem) +
                   " bytes of dynamic shared memory need an opt-in (allow_dynamic_smem) of at "
                   "least that much; it is " + std::to_string(optin) + " (cudaErrorInvalidValue)");
  }
  t.rng = g_schedule_seed.load();
  prepare_smem(cfg.smem);
  std::atomic<uint64_t> progress{0};
  const std::string what = "kernel " + kernel_name(cfg);
  const uint64_t watch = watch_begin(&progress, what);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(timeout_s() * 1e6));
  gridDim = g;
  blockDim = bl;
  std::string err;
  for (unsigned z = 0; z < g.z && err.empty(); ++z)
    for (unsigned y = 0; y < g.y && err.empty(); ++y)
      for (unsigned x = 0; x < g.x && err.empty(); ++x) {
        blockIdx = uint3{x, y, z};
        poison_smem();
        err = run_block(body, progress, deadline);
        if (err.empty()) err = check_smem_guards();
        if (!err.empty()) err = "block " + fmt3(x, y, z) + ", " + err;
      }
  watch_end(watch);
  log_launch(cfg, !err.empty());
  if (!err.empty())
    throw std::runtime_error("[attnfast SIMT] kernel " + kernel_name(cfg) + " (grid " +
                             fmt3(g.x, g.y, g.z) + ", block " + fmt3(bl.x, bl.y, bl.z) +
                             ", smem " + std::to_string(cfg.smem) + "): " + err);
}

std::string launch_log() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::ostringstream os;
  for (const auto& key : g_log_order) {
    const LogEntry& e = g_log.at(key);
    os << e.kernel << '\t' << e.signature << '\t' << e.grid << '\t' << e.block << '\t' << e.smem
       << '\t' << e.launches << '\t' << (e.error ? "error" : "ok") << '\n';
  }
  return os.str();
}

void clear_launch_log() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log.clear();
  g_log_order.clear();
}

}  // namespace simt
}  // namespace attnfast

