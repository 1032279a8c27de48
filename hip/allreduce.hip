// Fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): GPU side.
//  exchange kernel (fixed grid of kCommGpuBlocks blocks; block b owns tokens b, b + grid, ...):
//    e = own ready[b]'s epoch + 1 (the epoch lives in device memory: graph replays advance it);
//    copy this rank's rows into own slot e % 2; __syncthreads; thread 0: system fence, then
//    ready[b] = e and the call's tag (below); thread 0 spins (volatile) until every peer's
//    ready[b] reaches epoch e, checks its tag, then a fence;
//    __syncthreads; the block sums its rows over the W slots in rank order in fp32 (peers'
//    memory read with loads that bypass L1 (below), issued after that fence and barrier) and
//    stores the sum rounded to x's dtype in the rank's reduced region:
//      one-shot: every column of its rows;
//      two-shot (reduce-scatter + all-gather): only this rank's share of the columns (rank r:
//      [r * n / W, (r + 1) * n / W) of n 16-byte units, or elements on the 2-byte path); then
//      __syncthreads; thread 0: system fence, gathered[b] = e (the second flag of block b's
//      line), spin until every peer's gathered[b] >= e, fence; __syncthreads; the block copies
//      each peer's share of its rows from that peer's reduced region into its own (the same
//      L1-bypassing loads), so its rows are whole again;
//  then, up to kCommGpuBlocks tokens (one a block), the same block runs add_rmsnorm's generic
//  row body (add_rmsnorm_kernels.h: the row kernel's sum order, so the unfused path's bits) on
//  its row after a __syncthreads: one launch a rank; above, add_rmsnorm.hip's kernels read the
//  reduced region in a second launch on the same stream.
// Two slots suffice (cpu_allreduce.cpp has the argument): rank r writes slot e % 2 of block b
// only after every peer's block b raised its flag to e - 1, so every peer has started its call
// e - 1, and stream order finished its call e - 2 (hence no PDL here).  The reduced region, read
// by peers in a two-shot call, is reused one call on by the same argument: rank r writes it in
// call e only after every peer's ready[b] reached e, so every peer started call e and stream
// order finished its call e - 1 with that call's gather; within a call, r writes only the
// peers' share columns of its region while they read only r's share columns of it.  The grid
// is fixed, so every block of every rank counts the same epochs whatever the token count.
// The W exchange kernels of one call must be resident at once (they wait on each other): with
// ranks as streams of one GPU that is W * kCommGpuBlocks blocks of 256 threads.
//
// The kernel is a template on the world size W (every legal one, 1 .. kCommMaxWorld) so that
// the loops over ranks unroll and every peer pointer is a kernel parameter read at a constant
// offset (a run-time index into the parameter array put a copy of it on the stack: 120 bytes
// of local memory), and on VEC: rows move in 16-byte units (uint4 copy-in, one 16-byte load
// per peer per unit, 8 bf16 / fp16 or 4 fp32 values) when the launcher finds every row start
// 16-byte aligned (x, its token stride, the row bytes; the buffers, slots and reduced region
// are 256-byte aligned by construction), else in 2-byte units as before.  The arithmetic is
// the same on both paths and both algorithms: rank 0's value, then + rank 1's, ... + rank
// W-1's in fp32, rounded by numerics.h's f32_to_bf16 / f32_to_f16 (the CPU protocol's
// store_from_f32); each element is summed by one rank, so every rank gets the same bits.
// Two-shot is a run-time (block-uniform) flag, not a template argument: the sum is the same
// code over a narrower column range, and the gather and second barrier are one branch.
// Out of step: a flag holds the epoch in its high 48 bits and a 16-bit tag of the call in its
// low 16, a hash (host side, call_tags) of the comm's call count (refused calls too), tokens,
// hidden, dtype, algorithm, world size and the writing rank.  A waiter that finds a peer's
// flag at exactly its epoch compares the peer's tag with the one its own call expects of that
// rank: a call refused or empty on one rank only, other shapes, or a buffer list out of rank
// order (the flag in buffers[r] written by another rank) gives up as a lost peer does (the
// abort word, "out of step"), caught with probability 1 - 2^-16 a call.  A
// flag past the epoch needs no check: that peer passed its own wait of this call, which read
// this rank's tag at this epoch and found it the same (where every rank's buffer list is the
// same; a list out of order on one rank is caught unless all 16 of its blocks lose that race).
// The check adds no memory traffic.  What it cannot see: an extra call of the same shapes
// launched on one rank only (its epoch and count move together), nor one rank replaying a
// captured graph once more than its peers (a replay's tag is the capture's).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "add_rmsnorm_kernels.h"
#include "backend.h"
#include "device_guard.h"
#include "numerics.h"

namespace gn {
namespace {

constexpr int kExThreads = 256;
static_assert(kExThreads == kGenericThreads, "the fused path runs add_rmsnorm's generic body with the exchange's block");
static_assert(kCommHeader % 16 == 0 && kCommSlotAlign % 16 == 0, "slots and the reduced region start 16-byte aligned");

struct ExArgs {
    char *bufs[kCommMaxWorld];  // read only at compile-time indices (the kernel's W loops unroll)
    char *own;                  // bufs[rank]
    const char *x;
    int64_t x_st;    // bytes between tokens of x
    int64_t tokens;
    int64_t row;     // bytes of a row
    size_t slot_bytes;
    int32_t hidden, dtype, rank;
    int32_t two_shot;  // reduce-scatter + all-gather (else one-shot)
    int32_t copy16;    // x's rows start 16-byte aligned: the copy-in moves 16-byte units (VEC only)
    int32_t fused;     // the block normalizes its rows once whole (norm's x: the reduced region)
    uint32_t *abort_word;    // host memory (CommState::abort_dev): why this rank gave up, 0 while it has not
    uint64_t timeout_ticks;  // a wait longer than this (gn_wall_ticks) gives up
    uint16_t tags[kCommMaxWorld];  // the tag rank r's flags carry in this call (call_tags; tags[rank]: this rank's)
    AddArgs norm;
};

// A flag: epoch << kTagBits | tag.  kCommAbortFlag's epoch no call reaches: a rank that gives
// up raises both its flags of the block's line to it, so that a peer waiting for this rank
// passes its wait, sees it and gives up too (the comm is unusable from then on: every later
// call is refused by the host, comm_usable).  48 bits of epoch last 89 years at 10^5 calls a
// second.
constexpr int kTagBits = 16;
constexpr uint64_t kCommAbortFlag = ~uint64_t(0), kCommAbortEpoch = kCommAbortFlag >> kTagBits;
// The abort word: the reason (low byte) and the peer (next byte).
constexpr uint32_t kAbortTimedOut = 1, kAbortPeerGaveUp = 2, kAbortOutOfStep = 3;

__device__ __forceinline__ float load_volatile(const char *p, int dt) {
    if (dt == kF32) return *reinterpret_cast<const volatile float *>(p);
    const uint16_t h = *reinterpret_cast<const volatile uint16_t *>(p);
    return dt == kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// 16 bytes of a peer's slot, read after the acquire (thread 0's spin + system fence, then
// __syncthreads), never from a stale cache line.  CUDA: one ld.volatile.global.v4.u32 (a
// volatile load is not cached in L1).  HIP: the buffers are fine-grained uncached memory
// (gpu_comm_buffer_alloc) and the system-scope acquire fence invalidates the compute unit's
// L1, so one 16-byte global load is coherent; nontemporal (read once) rather than volatile,
// whose lowering waits for each load to complete before the next issues.  Neither moves
// above the __syncthreads (asm volatile / the barrier's acquire fence).
__device__ __forceinline__ uint4 load_peer_b128(const char *p) {
#if defined(GN_PLATFORM_CUDA)
    uint4 r;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
#else
    typedef unsigned int u32x4 __attribute__((ext_vector_type(4)));
    const u32x4 v = __builtin_nontemporal_load(reinterpret_cast<const u32x4 *>(p));
    return make_uint4(v.x, v.y, v.z, v.w);
#endif
}

__device__ __forceinline__ uint32_t word_of(const uint4 &v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

template <int DT>
__device__ __forceinline__ float lane_f32(const uint4 &v, int k) {  // value k of a 16-byte unit
    if constexpr (DT == kF32) return f32_from_bits(word_of(v, k));
    const uint16_t h = uint16_t(word_of(v, k / 2) >> (16 * (k % 2)));
    if constexpr (DT == kBF16) return bf16_to_f32(h);
    return f16_to_f32(h);
}

template <int DT>
__device__ __forceinline__ uint32_t round_bits(float v) {  // numerics.h's rounding to DT, as bits
    if constexpr (DT == kF32) return f32_bits(v);
    if constexpr (DT == kBF16) return f32_to_bf16(v);
    return f32_to_f16(v);
}

// Rank q's share of n columns in a two-shot call: [share_begin<W>(q, n), share_begin<W>(q + 1, n)),
// backend.h's comm_share_begin with W a constant (the division becomes a multiply).
template <int W>
__device__ __forceinline__ int64_t share_begin(int q, int64_t n) { return int64_t(q) * n / W; }

// Calls f(t, i) once for every token t of this block (t = blockIdx.x, + gridDim.x, ...) and
// every column i in [lo, lo + span), the (token, column) pairs dealt to the block's threads in
// token-major order, so that a span narrower than the block (a two-shot share, a short row)
// still keeps every thread busy.  32-bit counters: fewer than 2^31 tokens (the launcher's
// limit) and columns of one row (< 2^31); one division a thread, then the loop steps
// kExThreads pairs at a time with one carry.
template <typename F>
__device__ __forceinline__ void for_each_cell(int64_t tokens, int64_t lo, int64_t span, F &&f) {
    if (span <= 0) return;
    const uint32_t n = uint32_t(span), T = uint32_t(tokens);
    const uint32_t dk = kExThreads / n, dj = kExThreads % n;
    uint32_t j = threadIdx.x % n;
    for (uint32_t t = blockIdx.x + threadIdx.x / n * gridDim.x; t < T;) {
        f(int64_t(t), lo + j);
        j += dj;
        uint32_t k = dk;
        if (j >= n) {
            j -= n;
            ++k;
        }
        t += k * gridDim.x;
    }
}

// Sum of the W slots over columns [lo, lo + span) (16-byte units) of block b's tokens.
template <int W, int DT>
__device__ __forceinline__ void sum_rows_b128(const ExArgs &a, size_t slot, char *red, int64_t lo, int64_t span) {
    constexpr int kN = DT == kF32 ? 4 : 8;  // values per 16 bytes
    for_each_cell(a.tokens, lo, span, [&](int64_t t, int64_t i) {
        const int64_t off = t * a.row + i * 16;
        uint4 v[W];
#pragma unroll
        for (int r = 0; r < W; ++r) v[r] = load_peer_b128(a.bufs[r] + slot + off);
        float acc[kN];
#pragma unroll
        for (int k = 0; k < kN; ++k) acc[k] = lane_f32<DT>(v[0], k);  // rank 0's value itself: no 0 + x (keeps -0)
#pragma unroll
        for (int r = 1; r < W; ++r)
#pragma unroll
            for (int k = 0; k < kN; ++k) acc[k] += lane_f32<DT>(v[r], k);
        uint32_t w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if constexpr (kN == 4) w[j] = round_bits<DT>(acc[j]);
            else w[j] = round_bits<DT>(acc[2 * j]) | (round_bits<DT>(acc[2 * j + 1]) << 16);
        }
        *reinterpret_cast<uint4 *>(red + off) = make_uint4(w[0], w[1], w[2], w[3]);
    });
}

// The same over columns [lo, lo + span) that are elements (the 2-byte path).
template <int W>
__device__ __forceinline__ void sum_rows_elem(const ExArgs &a, size_t slot, char *red, int64_t lo, int64_t span) {
    const int es = dtype_size(a.dtype);
    for_each_cell(a.tokens, lo, span, [&](int64_t t, int64_t c) {
        const int64_t off = t * a.row + c * es;
        float acc = load_volatile(a.bufs[0] + slot + off, a.dtype);
#pragma unroll
        for (int r = 1; r < W; ++r) acc += load_volatile(a.bufs[r] + slot + off, a.dtype);
        store_from_f32(red + off, a.dtype, acc);
    });
}

template <typename U>
__device__ __forceinline__ U load_peer(const char *p) {  // one column of a peer's reduced region
    if constexpr (sizeof(U) == 16) return load_peer_b128(p);
    else return *reinterpret_cast<const volatile U *>(p);  // the 2-byte path's coherent loads
}

// Two-shot all-gather: every peer's share of block b's tokens, from that peer's reduced region
// into the same place of this rank's.  Columns of U (uint4: 16-byte units; uint16_t / uint32_t:
// elements of the 2-byte path), n a row.  The shares differ by at most one column, so cell j of
// the widest share reads column share_begin(q) + j of every peer q that has one: W - 1 loads
// issued before the stores, as the sum does.  Column indices in 32 bits (n < 2^31), the W + 1
// share bounds computed once.
template <int W, typename U>
__device__ __forceinline__ void gather_shares(const ExArgs &a, size_t red_at, int64_t n) {
    char *red = a.own + red_at;
    uint32_t begin[W + 1];
#pragma unroll
    for (int q = 0; q <= W; ++q) begin[q] = uint32_t(share_begin<W>(q, n));
    for_each_cell(a.tokens, 0, (n + W - 1) / W, [&](int64_t t, int64_t j) {
        const int64_t at = t * a.row;  // the token's row, from the start of a reduced region
        U v[W];
#pragma unroll
        for (int q = 0; q < W; ++q) {
            const uint32_t i = begin[q] + uint32_t(j);
            if (q != a.rank && i < begin[q + 1]) v[q] = load_peer<U>(a.bufs[q] + red_at + at + i * sizeof(U));
        }
#pragma unroll
        for (int q = 0; q < W; ++q) {
            const uint32_t i = begin[q] + uint32_t(j);
            if (q != a.rank && i < begin[q + 1]) *reinterpret_cast<U *>(red + at + i * sizeof(U)) = v[q];
        }
    });
}

// Thread 0's part of a cross-rank barrier on the flag at `at` in block b's flag line (0: ready,
// kCommGatheredOffset: gathered), run between two __syncthreads of the caller: a system fence
// (release: the block's writes, gathered by the first __syncthreads, are ordered before the
// flag), flag = e, a spin (volatile loads) until every peer's same flag reaches e, then a
// system fence (acquire), which the second __syncthreads hands to the block.
// Every thread, before the __syncthreads ahead of a signal: its own writes released at system
// scope.  CUDA needs nothing here (the barrier then thread 0's fence.sc orders the block's
// writes before the flag: PTX fences are cumulative).  AMD: LLVM's lowering of a workgroup
// barrier followed by one wave's system fence did not wait for the other waves' stores in
// every mode (LLVM PRs 160501 / 161638 fixed it for GFX10+ in CU mode; gfx1151 runs in WGP
// mode), so each wave waits for its own stores and writes them back first.
__device__ __forceinline__ void release_own_writes() {
#if defined(GN_PLATFORM_HIP)
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "");
#endif
}

// Returns false where it gave up: a peer's flag did not reach epoch e within a.timeout_ticks (a
// lost, killed or out-of-step peer), a peer had given up (kCommAbortFlag), or a peer's flag at
// epoch e carries another tag than this call expects of it (out of step).  Then it writes the
// abort word, raises this rank's flags of the line to kCommAbortFlag and the block skips the
// rest of the call (its outputs are not written).  The clock is read once every 1024 spins.
template <int W>
__device__ __forceinline__ bool signal_and_wait(const ExArgs &a, int b, size_t at, uint64_t e) {
    __threadfence_system();
    volatile uint64_t *line = reinterpret_cast<volatile uint64_t *>(a.own + kCommFlags + b * kCommFlagStride);
    line[at / 8] = e << kTagBits | a.tags[a.rank];
    const uint64_t start = gn_wall_ticks();
    uint32_t why = 0;
#pragma unroll
    for (int r = 0; r < W; ++r) {
        if (r == a.rank || why) continue;
        const volatile uint64_t *f = reinterpret_cast<const volatile uint64_t *>(a.bufs[r] + kCommFlags + b * kCommFlagStride + at);
        uint64_t v;
        for (uint32_t spin = 1; (v = *f) >> kTagBits < e; ++spin) {
            if ((spin & 1023) == 0 && gn_wall_ticks() - start > a.timeout_ticks) {
                why = kAbortTimedOut | uint32_t(r) << 8;
                break;
            }
        }
        if (why) break;
        if (v == kCommAbortFlag) why = kAbortPeerGaveUp | uint32_t(r) << 8;
        else if (v >> kTagBits == e && uint16_t(v) != a.tags[r]) why = kAbortOutOfStep | uint32_t(r) << 8;
    }
    if (why) {
        line[0] = kCommAbortFlag;
        line[kCommGatheredOffset / 8] = kCommAbortFlag;
        // The first cause stays where blocks race (a plain check, not an atomic: host memory):
        // a timeout or an out-of-step tag, naming the peer, is written over nothing or over a
        // "peer gave up"; a "peer gave up" only over nothing.
        volatile uint32_t *word = a.abort_word;
        const uint32_t had = *word;
        if (had == 0 || ((had & 0xff) == kAbortPeerGaveUp && (why & 0xff) != kAbortPeerGaveUp)) *word = why;
    }
    __threadfence_system();
    return !why;
}

// Thread 0's signal_and_wait, its answer handed to the block (true: carry on).
template <int W>
__device__ __forceinline__ bool block_signal_and_wait(const ExArgs &a, int b, size_t at, uint64_t e) {
    __shared__ int carry_on;
    release_own_writes();
    __syncthreads();  // every thread's writes of this step are done (and, HIP, released)
    if (threadIdx.x == 0) carry_on = signal_and_wait<W>(a, b, at, e);
    __syncthreads();
    return carry_on != 0;
}

// One block a multiprocessor is all the occupancy this kernel needs (a grid of kCommGpuBlocks;
// W of them on one GPU with ranks as streams).  Under the plain bound ptxas spilled a few bytes
// in several instantiations to fit 40 / 48 / 64 registers (occupancy steps); saying so lets it
// take the registers instead (sm_90a: 48 to 90, no stack, docs/allreduce.md).
template <int W, bool VEC>
__global__ void GN_LAUNCH_BOUNDS(kExThreads, kExThreads) allreduce_exchange_kernel(const ExArgs a) {
    const int b = blockIdx.x;
    char *own = a.own;
    const uint64_t e = (*reinterpret_cast<volatile uint64_t *>(own + kCommFlags + b * kCommFlagStride) >> kTagBits) + 1;  // ready[b]'s epoch + 1
    // This block gave up in an earlier call (its flag is kCommAbortFlag): the comm is dead; a
    // kernel enqueued before the host saw it (or a graph replay) must neither wait nor write
    // anything.  Uniform: every thread read the same flag, which only this block's thread 0
    // writes.
    if (e > kCommAbortEpoch) return;
    const size_t slot = kCommHeader + (e & 1) * a.slot_bytes;
    if (VEC && a.copy16) {  // uniform
        const int64_t units = a.row / 16;
        for (int64_t t = b; t < a.tokens; t += gridDim.x) {
            const uint4 *src = reinterpret_cast<const uint4 *>(a.x + t * a.x_st);
            uint4 *dst = reinterpret_cast<uint4 *>(own + slot + t * a.row);
            for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
        }
    } else {
        const int64_t units = a.row / 2;  // rows copied as 16-bit units (every dtype's size is a multiple)
        for (int64_t t = b; t < a.tokens; t += gridDim.x) {
            const uint16_t *src = reinterpret_cast<const uint16_t *>(a.x + t * a.x_st);
            uint16_t *dst = reinterpret_cast<uint16_t *>(own + slot + t * a.row);
            for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
        }
    }
    if (!block_signal_and_wait<W>(a, b, 0, e)) return;  // ready[b]; every thread has read e and written its part
    const size_t red_at = kCommHeader + 2 * a.slot_bytes;
    char *red = own + red_at;
    // Columns: 16-byte units or elements.  One-shot sums them all, two-shot this rank's share.
    const int64_t n = VEC ? a.row / 16 : a.hidden;
    const int64_t lo = a.two_shot ? share_begin<W>(a.rank, n) : 0;
    const int64_t span = (a.two_shot ? share_begin<W>(a.rank + 1, n) : n) - lo;
    if constexpr (VEC) {
        if (a.dtype == kBF16) sum_rows_b128<W, kBF16>(a, slot, red, lo, span);
        else if (a.dtype == kF16) sum_rows_b128<W, kF16>(a, slot, red, lo, span);
        else sum_rows_b128<W, kF32>(a, slot, red, lo, span);
    } else {
        sum_rows_elem<W>(a, slot, red, lo, span);
    }
    if (W > 1 && a.two_shot) {  // uniform: every thread of every block (W = 1 never runs two-shot: no peers)
        // gathered[b], once this block's share of its rows is stored by all its threads
        if (!block_signal_and_wait<W>(a, b, kCommGatheredOffset, e)) return;
        if constexpr (VEC) gather_shares<W, uint4>(a, red_at, n);
        else if (a.dtype == kF32) gather_shares<W, uint32_t>(a, red_at, n);
        else gather_shares<W, uint16_t>(a, red_at, n);
    }
    if (a.fused) {  // uniform: every thread of every block
        __syncthreads();  // the rows this block holds, whole and visible to all its threads
        for (int64_t t = b; t < a.tokens; t += gridDim.x) add_rmsnorm_generic_row(a.norm, t);
    }
}

using ExKernel = void (*)(ExArgs);

// The tag rank r's flags carry in this call (the kernel's out-of-step check): a hash of what
// every rank's call must share (the comm's call count, refused calls and graph captures
// included, tokens, hidden, dtype, algorithm, world size) and of r, the writer.  Each word
// goes through splitmix64's finalizer before the next is folded in (folding the count and
// the tokens together unmixed made (count, tokens) pairs of equal XOR collide: a review).
uint64_t tag_fold(uint64_t h, uint64_t v) {
    h = (h ^ v) + 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

// Every rank's tag of this call: the words all ranks share folded once, the writer's last.
void call_tags(const CommState &c, const AddRmsnormProblem &p, bool two_shot, uint16_t *tags) {
    const uint64_t shared = tag_fold(tag_fold(tag_fold(0, c.calls), uint64_t(p.tokens)), uint64_t(p.hidden));
    const uint64_t last = uint64_t(p.x_dtype) | uint64_t(two_shot) << 8 | uint64_t(c.world) << 24;
    for (int r = 0; r < c.world; ++r) tags[r] = uint16_t(tag_fold(shared, last | uint64_t(r) << 16) >> 48);
}

template <bool VEC>
ExKernel exchange_kernel(int world) {
    switch (world) {
        case 1: return allreduce_exchange_kernel<1, VEC>;
        case 2: return allreduce_exchange_kernel<2, VEC>;
        case 3: return allreduce_exchange_kernel<3, VEC>;
        case 4: return allreduce_exchange_kernel<4, VEC>;
        case 5: return allreduce_exchange_kernel<5, VEC>;
        case 6: return allreduce_exchange_kernel<6, VEC>;
        case 7: return allreduce_exchange_kernel<7, VEC>;
        case 8: return allreduce_exchange_kernel<8, VEC>;
        default: return nullptr;
    }
}
static_assert(kCommMaxWorld == 8, "exchange_kernel instantiates W = 1 .. kCommMaxWorld");

}  // namespace

gatednorm_status gpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, bool two_shot, void *stream_ptr) {
    if (p.tokens >= (int64_t(1) << 31) || p.hidden > (int64_t(1) << 30))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 rows of at most 2^30",
                    (long long)p.tokens, (long long)p.hidden);
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    const hipStream_t s = static_cast<hipStream_t>(stream_ptr);
    ExArgs a;
    memset(&a, 0, sizeof a);
    for (int r = 0; r < c.world; ++r) a.bufs[r] = c.buffers[r];
    a.own = c.buffers[c.rank];
    const int es = dtype_size(p.x_dtype);
    a.x = p.x;
    a.x_st = p.x_st * es;
    a.tokens = p.tokens;
    a.row = p.hidden * es;
    a.slot_bytes = c.slot_bytes;
    a.hidden = int32_t(p.hidden);
    a.dtype = p.x_dtype;
    a.rank = c.rank;
    a.two_shot = two_shot;
    a.abort_word = c.abort_dev;
    a.timeout_ticks = c.timeout_ticks;
    call_tags(c, p, two_shot, a.tags);
    // The sum and the gather move 16-byte units when every row of the slots and of the
    // reduced region starts on a 16-byte boundary: the row bytes (token t's row starts t * row
    // into a slot; buffers are 256-byte aligned by gatednorm_comm_create, and so are the slots,
    // the static_assert above).  Only values every rank shares may decide it: two-shot splits
    // a row into shares in those units, and a rank that counted elements while its peers
    // counted 16-byte units would sum columns nobody gathers (x's own alignment differs from
    // rank to rank).  x's alignment decides only this rank's copy-in width.
    const bool vec = a.row % 16 == 0 && c.slot_bytes % 16 == 0;
    a.copy16 = vec && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && (a.tokens == 1 || a.x_st % 16 == 0);
    const ExKernel k = vec ? exchange_kernel<true>(c.world) : exchange_kernel<false>(c.world);
    if (!k) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "comm: world_size %d", c.world);
    // The norm reads the reduced region (rank-local, x's dtype, rows of `hidden`).
    p.x = c.buffers[c.rank] + kCommHeader + 2 * c.slot_bytes;
    p.x_st = p.hidden;
    p.pdl = false;
    // Up to one token a block: one launch, each block normalizing its row (reduced, or with
    // two-shot gathered whole) with add_rmsnorm's generic body (the row kernel's sum order, so
    // the same bits as the unfused path).  More tokens: the row kernel's own launch after the
    // exchange, which streams large T faster than 16 blocks of 256 threads would.
    a.fused = p.tokens <= kCommGpuBlocks;
    if (a.fused) a.norm = make_add_args(p, 0);
    k<<<kCommGpuBlocks, kExThreads, 0, s>>>(a);
    const gatednorm_status st = check_launch("allreduce exchange");
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    if (!a.fused) return gpu_add_rmsnorm(p, stream_ptr);
    note_kernel(two_shot ? "allreduce.two_shot.fused" : "allreduce.one_shot.fused");
    return st;
}

gatednorm_status gpu_comm_check_residency(int32_t device_id, int32_t world, void *const *buffers) {
    int sharing = 0;
    for (int r = 0; r < world; ++r) {
        gatednorm_device d;
        if (gpu_pointer_device(buffers[r], &d) == GATEDNORM_STATUS_SUCCESS && d.device_type != GATEDNORM_DEVICE_TYPE_CPU &&
            d.device_id == device_id)
            ++sharing;
    }
    if (sharing < 2) return GATEDNORM_STATUS_SUCCESS;
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    hipDeviceProp_t prop;
    hipError_t err = hipGetDeviceProperties(&prop, device_id);
    if (err != hipSuccess) return runtime_fail(err, "device properties");
    int per_sm = 1 << 30;  // the fewer of the two access widths' kernels (the 16-byte one holds more registers)
    for (const ExKernel k : {exchange_kernel<true>(world), exchange_kernel<false>(world)}) {
        int n = 0;
        err = hipOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kExThreads, 0);
        if (err != hipSuccess) return runtime_fail(err, "exchange kernel occupancy");
        per_sm = n < per_sm ? n : per_sm;
    }
#if defined(GN_PLATFORM_HIP)
    // ROCm maps a process's streams onto GPU_MAX_HW_QUEUES hardware queues a device (default 4)
    // and runs a queue's kernels in order: two ranks' streams on one queue would put one
    // rank's exchange kernel behind another that waits for it.  One queue is left for the
    // default stream (allocations, copies), so the ranks need one more queue than they are.
    const char *queues_env = getenv("GPU_MAX_HW_QUEUES");
    const int queues = queues_env && atoi(queues_env) > 0 ? atoi(queues_env) : 4;
    if (sharing >= queues)
        return fail(GATEDNORM_STATUS_UNSUPPORTED,
                    "buffers: %d ranks' buffers are on GPU %d, whose exchange kernels wait on each other, but ROCm runs this "
                    "process's streams on %d hardware queues (GPU_MAX_HW_QUEUES), so two ranks could share one and wait on each "
                    "other forever; set GPU_MAX_HW_QUEUES to at least %d, or put fewer ranks on one GPU",
                    sharing, device_id, queues, sharing + 1);
#endif
    const int64_t fit = int64_t(per_sm) * prop.multiProcessorCount, need = int64_t(sharing) * kCommGpuBlocks;
    if (fit < need)
        return fail(GATEDNORM_STATUS_UNSUPPORTED,
                    "buffers: %d ranks' buffers are on GPU %d, whose exchange kernels wait on each other and so must all be resident "
                    "at once (%lld blocks of %d threads), but it holds %lld (%d a multiprocessor x %d); put fewer ranks on one GPU",
                    sharing, device_id, (long long)need, kExThreads, (long long)fit, per_sm, prop.multiProcessorCount);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_comm_abort_alloc(CommState &c) {
    DeviceGuard guard(c.device.device_id);
    if (!guard.ok()) return guard.status();
    void *host = nullptr, *dev = nullptr;
    hipError_t err = hipHostMalloc(&host, 64, hipHostMallocMapped);
    if (err == hipSuccess) err = hipHostGetDevicePointer(&dev, host, 0);
    if (err != hipSuccess) {
        if (host) (void)hipHostFree(host);
        return runtime_fail(err, "comm (its abort word)");
    }
    memset(host, 0, 64);
    c.abort_host = static_cast<uint32_t *>(host);
    c.abort_dev = static_cast<uint32_t *>(dev);
    const double ticks = comm_wait_seconds() * gn_wall_tick_hz(c.device.device_id);
    c.timeout_ticks = ticks < 1.8e19 ? uint64_t(ticks) : ~uint64_t(0);
    return GATEDNORM_STATUS_SUCCESS;
}

void gpu_comm_abort_free(CommState &c) {
    DeviceGuard guard(c.device.device_id);
    (void)hipDeviceSynchronize();  // no kernel of this comm may still write the word
    (void)hipHostFree(c.abort_host);
    c.abort_host = c.abort_dev = nullptr;
}

gatednorm_status gpu_comm_usable(const CommState &c) {
    const uint32_t why = *reinterpret_cast<const volatile uint32_t *>(c.abort_host);
    if (!why) return GATEDNORM_STATUS_SUCCESS;
    const int peer = int(why >> 8 & 0xff);
    char reason[400];
    if ((why & 0xff) == kAbortTimedOut)
        snprintf(reason, sizeof reason,
                 "waited %.3g s for rank %d (lost, killed, or out of step: every rank must make the same calls with the same "
                 "algorithm; GATEDNORM_COMM_TIMEOUT_S sets the wait) and gave up",
                 comm_wait_seconds(), peer);
    else if ((why & 0xff) == kAbortOutOfStep)
        snprintf(reason, sizeof reason,
                 "found rank %d's call not the same as its own (every rank must make the same calls, refused ones too, with "
                 "the same tokens, hidden, dtype and algorithm, and pass the buffers in rank order: is buffers[%d] rank %d's "
                 "own?) and gave up",
                 peer, peer, peer);
    else
        snprintf(reason, sizeof reason, "found rank %d had given up waiting (see that rank's error) and gave up too", peer);
    return fail(GATEDNORM_STATUS_DEVICE_ERROR,
                "comm: rank %d's exchange kernel %s: that call's outputs (and a residual updated in place) are not valid, nor "
                "are those of calls made since; the communicator is unusable now",
                c.rank, reason);
}

gatednorm_status gpu_comm_buffer_alloc(int32_t device_id, size_t bytes, void **buffer, uint8_t *handle) {
    static_assert(sizeof(hipIpcMemHandle_t) == GATEDNORM_COMM_HANDLE_BYTES, "IPC handle size");
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    void *p = nullptr;
#if defined(GN_PLATFORM_HIP)
    // Uncached (fine-grained) memory: peers on other GPUs see the flags and partials while
    // the kernels run (coarse-grained hipMalloc memory is coherent only at kernel boundaries).
    hipError_t err = hipExtMallocWithFlags(&p, bytes, hipDeviceMallocUncached);
#else
    hipError_t err = hipMalloc(&p, bytes);
#endif
    if (err != hipSuccess) {
        (void)hipGetLastError();
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: could not allocate %zu bytes on device %d: %s", bytes, device_id, hipGetErrorString(err));
    }
    // Zeroed (flags start at epoch 0), then the header every comm checks: magic and size.
    const uint64_t header[2] = {kCommMagic, uint64_t(bytes)};
    err = hipMemsetAsync(p, 0, bytes, nullptr);
    if (err == hipSuccess) err = hipMemcpyAsync(p, header, sizeof header, hipMemcpyDefault, nullptr);
    if (err == hipSuccess) err = hipStreamSynchronize(nullptr);
    hipIpcMemHandle_t h;
    if (err == hipSuccess) err = hipIpcGetMemHandle(&h, p);
    if (err != hipSuccess) {
        (void)hipFree(p);
        return runtime_fail(err, "comm_buffer_alloc");
    }
    memcpy(handle, &h, sizeof h);
    *buffer = p;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_comm_buffer_header(int32_t device_id, const void *buffer, uint64_t header[2], const char *name) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    hipError_t err = hipMemcpyAsync(header, buffer, 2 * sizeof(uint64_t), hipMemcpyDefault, nullptr);
    if (err == hipSuccess) err = hipStreamSynchronize(nullptr);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, name);
}

gatednorm_status gpu_comm_buffer_open(int32_t device_id, const uint8_t *handle, void **buffer) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    hipIpcMemHandle_t h;
    memcpy(&h, handle, sizeof h);
    const hipError_t err = hipIpcOpenMemHandle(buffer, h, hipIpcMemLazyEnablePeerAccess);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "handle");
}

gatednorm_status gpu_comm_buffer_close(int32_t device_id, void *buffer) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    // This process's kernels may still read the mapping (a call returns at its launch): wait
    // for them before it goes.  Peers' reads of this rank's own buffer are the caller's
    // barrier to wait for (gatednorm.h, teardown).
    hipError_t err = hipDeviceSynchronize();
    if (err != hipSuccess) return runtime_fail(err, "buffer");
    err = hipIpcCloseMemHandle(buffer);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "buffer");
}

}  // namespace gn
