// The CPU backend's thread pool: a few persistent workers owned by the library, sized by
// GATEDNORM_NUM_THREADS (or gatednorm_set_num_threads) else the CPUs the process's main
// thread may run on (where its workers run too).  Work is split into contiguous ranges of items (rows of a norm, rows of M or blocks
// of N of a GEMM); the caller's thread takes a range too, and does all of it when the call
// is small, when the pool is busy with another caller's work, or when only one thread is
// configured.  Each item is computed entirely by one thread with the same code whatever the
// split, so results are bit-identical for any thread count.
#pragma once
#include <stdint.h>

#include <type_traits>

#include "gatednorm.h"

namespace gn {

using RangeFn = void (*)(void *ctx, int64_t begin, int64_t end);

// Runs fn(ctx, b, e) over ranges covering [0, n) exactly once and returns when all are done.
// cost: about how many element operations one item is (sizes the split: no thread is woken
// for less than kCpuMinWorkPerThread of them).
void cpu_parallel_for_impl(int64_t n, int64_t cost, RangeFn fn, void *ctx);

constexpr int64_t kCpuMinWorkPerThread = int64_t(1) << 15;

// Whether n items of `cost` are too little work to wake a thread: then cpu_parallel_for runs
// them inline on the caller's thread, without entering the pool (a decode-sized call).
inline bool cpu_work_is_tiny(int64_t n, int64_t cost) {
    return double(n) * double(cost < 1 ? 1 : cost) < double(2 * kCpuMinWorkPerThread);
}

template <class F>
void cpu_parallel_for(int64_t n, int64_t cost, F &&f) {
    if (n <= 0) return;
    if (cpu_work_is_tiny(n, cost)) return (void)f(int64_t(0), n);
    using Fn = typename std::remove_reference<F>::type;
    cpu_parallel_for_impl(n, cost, [](void *c, int64_t b, int64_t e) { (*static_cast<Fn *>(c))(b, e); },
                          const_cast<void *>(static_cast<const void *>(&f)));
}

int cpu_num_threads();
// 0: the default (GATEDNORM_NUM_THREADS, else the cores); n >= 1: n threads (the caller's included).
void cpu_set_num_threads(int n);

}  // namespace gn
