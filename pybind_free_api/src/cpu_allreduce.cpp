// CPU backend of the fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): the same
// flag protocol as the GPU kernel, over host memory that the ranks share (POSIX shared memory
// between processes, or one address space), with acquire / release atomics.
//   e = own ready flag + 1; copy the partial into own slot e % 2; ready = e (release);
//   wait until every peer's ready >= e (acquire); sum the W slots in rank order in fp32,
//   round to x's dtype; then add_rmsnorm on that x.
// Two slots suffice: a rank writes slot e % 2 only after every peer's flag reached e - 1,
// i.e. after every peer began call e - 1 and so finished reading the slots of call e - 2.
#include <sched.h>
#include <string.h>
#include <time.h>

#include <vector>

#include "backend.h"
#include "numerics.h"

namespace gn {
namespace {

constexpr double kWaitSeconds = 60.0;

double now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

uint64_t *ready_flag(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kCommFlags); }

}  // namespace

gatednorm_status cpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p) {
    const int xs = dtype_size(p.x_dtype);
    const size_t row = size_t(p.hidden) * xs;
    const size_t n = size_t(p.tokens) * size_t(p.hidden);
    uint64_t *own = ready_flag(c.buffers[c.rank]);
    const uint64_t e = __atomic_load_n(own, __ATOMIC_RELAXED) + 1;
    const size_t slot = kCommHeader + (e & 1) * c.slot_bytes;
    char *mine = c.buffers[c.rank] + slot;
    for (int64_t t = 0; t < p.tokens; ++t) memcpy(mine + t * row, p.x + t * p.x_st * xs, row);
    __atomic_store_n(own, e, __ATOMIC_RELEASE);

    for (int r = 0; r < c.world; ++r) {
        if (r == c.rank) continue;
        const uint64_t *f = ready_flag(c.buffers[r]);
        double start = 0.0;
        for (long spin = 0; __atomic_load_n(f, __ATOMIC_ACQUIRE) < e; ++spin) {
            if (spin < 64) continue;
            if (spin == 64) start = now();
            if ((spin & 255) == 0 && now() - start > kWaitSeconds)
                return fail(GATEDNORM_STATUS_DEVICE_ERROR,
                            "comm: rank %d waited %.0f s for rank %d's partial of call %llu (every rank must make the same calls); "
                            "the communicator is unusable now", c.rank, kWaitSeconds, r, (unsigned long long)e);
            if (spin < 4096) sched_yield();
            else {
                const timespec ns = {0, 20000};
                nanosleep(&ns, nullptr);
            }
        }
    }

    std::vector<char> red(n * xs);
    const char *s0 = c.buffers[0] + slot;
    for (size_t i = 0; i < n; ++i) {
        float acc = load_as_f32(s0 + i * xs, p.x_dtype);  // rank 0's value itself: no 0 + x (keeps -0)
        for (int r = 1; r < c.world; ++r) acc += load_as_f32(c.buffers[r] + slot + i * xs, p.x_dtype);
        store_from_f32(red.data() + i * xs, p.x_dtype, acc);
    }
    p.x = red.data();
    p.x_st = p.hidden;
    return cpu_add_rmsnorm(p);
}

}  // namespace gn
