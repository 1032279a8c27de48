// CPU backend of the fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): the same
// flag protocol as the GPU kernel, over host memory that the ranks share (POSIX shared memory
// between processes, or one address space), with acquire / release atomics.  The CPU is one
// block: it owns every token.
//   e = own ready flag + 1; copy the partial into own slot e % 2; ready = e (release);
//   wait until every peer's ready >= e (acquire);
//   one-shot: sum the W slots in rank order in fp32 over every column, round to x's dtype, into
//     this rank's reduced region;
//   two-shot: the same sum over this rank's share of the columns only (comm_share_begin), into
//     the same place of its reduced region; gathered = e (release); wait until every peer's
//     gathered >= e (acquire); copy each peer's share from its reduced region into this one's;
//   then add_rmsnorm on the reduced region.
// Two slots suffice: a rank writes slot e % 2 only after every peer's flag reached e - 1,
// i.e. after every peer began call e - 1 and so finished reading the slots of call e - 2.
// The reduced region is reused safely for the same reason one step on: a rank writes it in
// call e only after every peer's ready reached e, i.e. every peer began call e and so finished
// call e - 1, including its two-shot reads of this rank's region.  Within a two-shot call this
// rank writes only the peers' share columns of its own region while the peers read only its
// share columns of it: disjoint bytes.  Each element is still summed by exactly one rank, in
// rank order, with the one-shot arithmetic, so both algorithms give the same bits.
// Out of step: before its ready flag each rank writes its call's signature (the comm's count
// of calls made, refused ones too, the tokens, hidden, dtype and algorithm) into signature
// slot e % 2 of its header, and after the acquire compares every peer's with its own (slot
// e % 2 is rewritten only in call e + 2, which needs this rank's ready >= e + 1: the same
// argument as the data slots').  A difference (a call refused or made on one rank only, or
// with other shapes) fails the call on every rank, which also marks its header so that every
// later call, on any rank, is refused; a timed-out wait marks it too.
#include <sched.h>
#include <string.h>
#include <time.h>

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

// In the CPU header, past the magic, size and name (bytes 0-63): this rank's out-of-step mark
// (the call count at which it found the ranks out of step; 0: never) and two call signatures.
constexpr size_t kStepMark = 128, kStepSig = 192;
constexpr int kSigWords = 4;
static_assert(kStepSig + 2 * kSigWords * 8 <= kCommFlags, "the signatures fit the header");
uint64_t *step_mark(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kStepMark); }
uint64_t *signature(char *buffer, uint64_t e) { return reinterpret_cast<uint64_t *>(buffer + kStepSig) + (e & 1) * kSigWords; }

void mark_out_of_step(const CommState &c) {
    uint64_t *m = step_mark(c.buffers[c.rank]);
    if (!__atomic_load_n(m, __ATOMIC_RELAXED)) __atomic_store_n(m, c.calls, __ATOMIC_RELEASE);
}
uint64_t *gathered_flag(char *buffer) { return reinterpret_cast<uint64_t *>(buffer + kCommFlags + kCommGatheredOffset); }

// Waits (acquire) until every peer's flag (flag_of(buffer)) reaches e: spinning, then yielding,
// then sleeping; after kWaitSeconds on one peer it gives up naming it and `what`.
template <typename FlagOf>
gatednorm_status wait_peers(const CommState &c, FlagOf flag_of, uint64_t e, const char *what) {
    for (int r = 0; r < c.world; ++r) {
        if (r == c.rank) continue;
        const uint64_t *f = flag_of(c.buffers[r]);
        double start = 0.0;
        for (long spin = 0; __atomic_load_n(f, __ATOMIC_ACQUIRE) < e; ++spin) {
            if (spin < 64) continue;
            if (spin == 64) start = now();
            if ((spin & 255) == 0 && now() - start > kWaitSeconds) {
                mark_out_of_step(c);
                return fail(GATEDNORM_STATUS_DEVICE_ERROR,
                            "comm: rank %d waited %.0f s for rank %d's %s of call %llu (every rank must make the same calls with the "
                            "same algorithm); the communicator is unusable now",
                            c.rank, kWaitSeconds, r, what, (unsigned long long)e);
            }
            if (spin < 4096) sched_yield();
            else {
                const timespec ns = {0, 20000};
                nanosleep(&ns, nullptr);
            }
        }
    }
    return GATEDNORM_STATUS_SUCCESS;
}

// Every peer's signature of epoch e against this rank's (after the acquire of their ready).
gatednorm_status check_in_step(const CommState &c, uint64_t e) {
    const uint64_t *mine = signature(c.buffers[c.rank], e);
    for (int r = 0; r < c.world; ++r) {
        if (r == c.rank) continue;
        const uint64_t *theirs = signature(c.buffers[r], e);
        if (!memcmp(mine, theirs, kSigWords * 8)) continue;
        mark_out_of_step(c);
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                    "comm: rank %d's call %llu (%lld tokens x %lld, dtype code %llu%s) meets rank %d's call %llu (%lld x %lld, "
                    "dtype code %llu%s): every rank must make the same calls with the same shapes (one was refused or made on "
                    "one rank only?); the communicator is unusable now",
                    c.rank, (unsigned long long)mine[0], (long long)mine[1], (long long)mine[2], (unsigned long long)(mine[3] & 0xff),
                    mine[3] >> 8 ? ", two-shot" : "", r, (unsigned long long)theirs[0], (long long)theirs[1], (long long)theirs[2],
                    (unsigned long long)(theirs[3] & 0xff), theirs[3] >> 8 ? ", two-shot" : "");
    }
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace

gatednorm_status cpu_comm_usable(const CommState &c) {
    for (int r = 0; r < c.world; ++r) {
        const uint64_t m = __atomic_load_n(step_mark(c.buffers[r]), __ATOMIC_ACQUIRE);
        if (m)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "comm: unusable: rank %d found the ranks out of step at its call %llu (a call refused, timed out or "
                        "made on one rank only); make a new communicator",
                        r, (unsigned long long)m);
    }
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status cpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, bool two_shot) {
    const int xs = dtype_size(p.x_dtype);
    const size_t row = size_t(p.hidden) * xs;
    char *buf = c.buffers[c.rank];
    uint64_t *own = ready_flag(buf);
    const uint64_t e = __atomic_load_n(own, __ATOMIC_RELAXED) + 1;
    const size_t slot = kCommHeader + (e & 1) * c.slot_bytes;
    const size_t red_at = kCommHeader + 2 * c.slot_bytes;  // the reduced region, rows as in the slots
    char *mine = buf + slot;
    for (int64_t t = 0; t < p.tokens; ++t) memcpy(mine + t * row, p.x + t * p.x_st * xs, row);
    uint64_t *sig = signature(buf, e);
    sig[0] = c.calls;
    sig[1] = uint64_t(p.tokens);
    sig[2] = uint64_t(p.hidden);
    sig[3] = uint64_t(p.x_dtype) | (uint64_t(two_shot) << 8);
    __atomic_store_n(own, e, __ATOMIC_RELEASE);  // publishes the partial and the signature
    gatednorm_status st = wait_peers(c, ready_flag, e, "partial");
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    st = check_in_step(c, e);
    if (st != GATEDNORM_STATUS_SUCCESS) return st;

    // One-shot: every column; two-shot: this rank's share.
    const int64_t lo = two_shot ? comm_share_begin(c.rank, c.world, p.hidden) : 0;
    const int64_t hi = two_shot ? comm_share_begin(c.rank + 1, c.world, p.hidden) : p.hidden;
    char *red = buf + red_at;
    const char *s0 = c.buffers[0] + slot;
    for (int64_t t = 0; t < p.tokens; ++t)
        for (int64_t j = lo; j < hi; ++j) {
            const size_t off = size_t(t) * row + size_t(j) * xs;
            float acc = load_as_f32(s0 + off, p.x_dtype);  // rank 0's value itself: no 0 + x (keeps -0)
            for (int r = 1; r < c.world; ++r) acc += load_as_f32(c.buffers[r] + slot + off, p.x_dtype);
            store_from_f32(red + off, p.x_dtype, acc);
        }
    if (two_shot) {
        __atomic_store_n(gathered_flag(buf), e, __ATOMIC_RELEASE);
        st = wait_peers(c, gathered_flag, e, "reduced share");
        if (st != GATEDNORM_STATUS_SUCCESS) return st;
        for (int q = 0; q < c.world; ++q) {
            if (q == c.rank) continue;
            const int64_t qlo = comm_share_begin(q, c.world, p.hidden), qhi = comm_share_begin(q + 1, c.world, p.hidden);
            if (qhi == qlo) continue;
            const char *from = c.buffers[q] + red_at;
            for (int64_t t = 0; t < p.tokens; ++t) {
                const size_t off = size_t(t) * row + size_t(qlo) * xs;
                memcpy(red + off, from + off, size_t(qhi - qlo) * xs);
            }
        }
    }
    p.x = red;
    p.x_st = p.hidden;
    return cpu_add_rmsnorm(p);
}

}  // namespace gn
