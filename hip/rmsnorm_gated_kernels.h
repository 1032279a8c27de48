// Gated RMSNorm kernels (docs/ops.md section 1).  Two kernels:
//  - vec: rows of D = 8k elements with 16-byte aligned rows; a team of TPR lanes owns a row,
//    each lane CPT chunks of VEC = 8 (or 4, for small problems) elements held in registers,
//    so x and z are read once and out written once with 16- (or 8-) byte accesses.  x and z
//    share a dtype known at compile time, out's too; the weight's (run time) is widened at
//    its use.
//  - generic: any D, alignment and dtype mix; 32 lanes per row, two passes over the row
//    (the second one hits cache).  The slow path that keeps every input legal.
// Both are one-pass: the grid has a team per row, and no lane exits before the team's
// shuffles (rows past the end take part with zeros).
#pragma once
#include "fast_div.h"
#include "numerics.h"
#include "port.h"

namespace gn {

constexpr int kBlockThreads = 256;
constexpr int kGenericTeamLanes = 32;  // <= 32: a team never straddles warps
constexpr int kGenericTeams = kBlockThreads / kGenericTeamLanes;

struct RmsnormGatedArgs {
    const char *x;
    const char *z;  // nullptr: no gate
    char *out;
    const void *weight;
    int64_t x_st, x_sh, z_st, z_sh, o_st, o_sh;  // byte strides
    int64_t x_sr, z_sr, o_sr;                    // byte stride of a row, when flat_rows
    int32_t flat_rows;  // every tensor's row r sits at r * stride: no division by H needed
    int32_t rows;                                // T * H (< 2^31, checked by the launcher)
    int32_t heads;
    FastDiv heads_div;  // row / heads, for rows that are not flat
    int32_t dim;
    int32_t x_dtype, z_dtype, out_dtype, weight_dtype;
    int32_t norm_before_gate;
    int32_t activation;
    float eps;
    float weight_offset;
    float inv_dim;
};

// ---- Chunks of VEC = 4 or 8 elements moved as raw 32-bit words with the widest access that
// fits: 8, 16 or 32 bytes (uint2, uint4, 2 x uint4).
template <int N>
__device__ __forceinline__ void load_words(const char *p, uint32_t (&w)[N]) {
    static_assert(N == 2 || N % 4 == 0, "8, 16 or 32 bytes");
    if constexpr (N == 2) {
        const uint2 a = *reinterpret_cast<const uint2 *>(p);
        w[0] = a.x; w[1] = a.y;
    } else {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) {
            const uint4 a = reinterpret_cast<const uint4 *>(p)[i];
            w[4 * i] = a.x; w[4 * i + 1] = a.y; w[4 * i + 2] = a.z; w[4 * i + 3] = a.w;
        }
    }
}

template <int N>
__device__ __forceinline__ void store_words(char *p, const uint32_t (&w)[N]) {
    static_assert(N == 2 || N % 4 == 0, "8, 16 or 32 bytes");
    if constexpr (N == 2) {
        *reinterpret_cast<uint2 *>(p) = make_uint2(w[0], w[1]);
    } else {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) reinterpret_cast<uint4 *>(p)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
    }
}

// Element k of words holding dtype DT (k is a compile-time index after unrolling).
template <int DT>
__device__ __forceinline__ float word_element(const uint32_t *w, int k) {
    if constexpr (DT == kF32) return f32_from_bits(w[k]);
    const uint32_t word = w[k / 2];
    if constexpr (DT == kBF16) return f32_from_bits(k & 1 ? word & 0xffff0000u : word << 16);
    return f16_to_f32(uint16_t(k & 1 ? word >> 16 : word & 0xffffu));
}

template <int DT, int VEC>
constexpr int kWords = VEC * (DT == kF32 ? 4 : 2) / 4;

template <int DT, int VEC>
__device__ __forceinline__ void load_vec(const char *p, float (&v)[VEC]) {
    uint32_t w[kWords<DT, VEC>];
    load_words(p, w);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = word_element<DT>(w, k);
}

template <int DT, int VEC, bool KEEP = false>
__device__ __forceinline__ void store_vec(char *p, const float (&v)[VEC]) {
    uint32_t w[kWords<DT, VEC>];
#pragma unroll
    for (int i = 0; i < kWords<DT, VEC>; ++i) {
        if constexpr (DT == kF32) w[i] = f32_bits(v[i]);
        else w[i] = DT == kBF16 ? pack_bf16x2(v[2 * i], v[2 * i + 1]) : pack_f16x2(v[2 * i], v[2 * i + 1]);
    }
    static_assert(!KEEP || kWords<DT, VEC> == 4, "kept stores take chunks of one 16-byte access");
    if constexpr (KEEP) gn_store_b128_hint<kHintKeepL2>(p, make_uint4(w[0], w[1], w[2], w[3]));
    else store_words(p, w);
}

// The weight's dtype is known only at run time.  Its chunk is loaded as raw words with no
// use in the branch, and widened only where it is used, so the load overlaps the row's
// loads instead of stalling the thread before them.
template <int VEC>
struct RawChunk {
    uint32_t w[VEC];  // all VEC words for fp32, the first VEC / 2 for 16-bit types
};

template <int VEC>
__device__ __forceinline__ RawChunk<VEC> load_raw_chunk(const char *p, int dt) {
    RawChunk<VEC> r;
    if (dt == kF32) {
        load_words(p, r.w);
    } else {
        uint32_t h[VEC / 2];
        load_words(p, h);
#pragma unroll
        for (int i = 0; i < VEC; ++i) r.w[i] = i < VEC / 2 ? h[i] : 0u;
    }
    return r;
}

template <int DT, int VEC>
__device__ __forceinline__ void widen_chunk(const RawChunk<VEC> &r, float offset, float (&v)[VEC]) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = word_element<DT>(r.w, k) + offset;
}

// The chunk widened by the weight's run-time dtype (a uniform branch).
template <int VEC>
__device__ __forceinline__ void widen_chunk_as(const RawChunk<VEC> &r, int dt, float offset, float (&v)[VEC]) {
    if (dt == kBF16) widen_chunk<kBF16>(r, offset, v);
    else if (dt == kF16) widen_chunk<kF16>(r, offset, v);
    else widen_chunk<kF32>(r, offset, v);
}

// VEC values stored in an output's run-time dtype (a uniform branch).
template <int VEC>
__device__ __forceinline__ void store_vec_as(char *p, int dt, const float (&v)[VEC]) {
    if (dt == kBF16) store_vec<kBF16, VEC>(p, v);
    else if (dt == kF16) store_vec<kF16, VEC>(p, v);
    else store_vec<kF32, VEC>(p, v);
}

// Sum over a team of TPR consecutive lanes.  Teams of up to 32 lanes reduce with shuffles:
// 32 divides every warp width (32 on NVIDIA and RDNA, 64 on CDNA), so such a team never
// straddles warps and nothing here depends on the actual width.  A wider team is the whole
// block: 32-lane groups reduce by shuffle, then meet in shared memory.
constexpr int kShuffleGroup = 32;

template <int TPR, int BLOCK = kBlockThreads>
__device__ __forceinline__ float team_sum(float v) {
    if constexpr (TPR <= kShuffleGroup) {
#pragma unroll
        for (int m = TPR / 2; m > 0; m >>= 1) v += gn_shfl_xor(v, m, TPR);
        return v;
    } else {
        static_assert(TPR == BLOCK, "a team wider than 32 lanes is the whole block");
        constexpr int kGroups = BLOCK / kShuffleGroup;
        __shared__ float partial[kGroups];
        v = team_sum<kShuffleGroup>(v);
        if (threadIdx.x % kShuffleGroup == 0) partial[threadIdx.x / kShuffleGroup] = v;
        __syncthreads();
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < kGroups; ++i) s += partial[i];
        __syncthreads();  // partial[] is rewritten by the next row
        return s;
    }
}

// Byte offsets of row (t, h) in x, z and out.
struct RowOffsets {
    int64_t x, z, out;
};

__device__ __forceinline__ RowOffsets row_offsets(const RmsnormGatedArgs &a, int32_t row) {
    if (a.flat_rows)  // contiguous [T, H] rows: the common case, and the latency-critical one
        return {int64_t(row) * a.x_sr, int64_t(row) * a.z_sr, int64_t(row) * a.o_sr};
    const uint32_t t = fast_div(uint32_t(row), a.heads_div);
    const uint32_t h = uint32_t(row) - t * uint32_t(a.heads);
    return {int64_t(t) * a.x_st + int64_t(h) * a.x_sh, int64_t(t) * a.z_st + int64_t(h) * a.z_sh,
            int64_t(t) * a.o_st + int64_t(h) * a.o_sh};
}

// The default register budget, as resident blocks of 256 threads per multiprocessor, by the
// 16-byte loads of x a lane keeps in flight: one keeps 6 blocks (40 registers; the kernel
// needs 39), two (an fp32 chunk, or two 16-bit chunks) keep 4 (64), four (two fp32 chunks,
// or 16-bit chunks for D > 256, up to 128 registers) keep 2.  The run-3 kernel spilled at 8
// blocks (32 registers) and ran up to 50% slower; today's one-chunk 16-bit kernel fits 32
// without spills, which the launcher asks for past 2^16 rows (rmsnorm_gated.hip).
template <int XDT, int CPT>
constexpr int kMinBlocksPerSM = [] {
    constexpr int loads = CPT * (XDT == kF32 ? 2 : 1);
    return loads == 1 ? 6 : loads == 2 ? 4 : 2;
}();

// Launch variants of the vec kernel, as compile-time flags.
enum VecFlags : int {
    kLateGate = 1,     // with norm_before_gate, load z after the row's sum instead of with x
    kPdl = 2,          // launched with programmatic dependent launch: wait for the prior grid
    kLoadPrefetch = 4, // x and z: 16-byte loads with L2's 256-byte prefetch hint (tuner A/B)
    kLoadNc = 8,       // x and z: 16-byte loads through the read-only path (tuner A/B)
    kStoreKeep = 16,   // out: 16-byte stores that L2 evicts last (tuner A/B)
};

// The cache hint a flag set asks of the x / z loads (0: plain); at most one.  kLoadNc is
// only for calls whose out aliases neither x nor z (the read-only path assumes the data does
// not change during the kernel; the API allows out == x or out == z).
template <int FLAGS>
constexpr int kLoadHint = [] {
    static_assert((FLAGS & kLoadPrefetch) == 0 || (FLAGS & kLoadNc) == 0, "one load hint at a time");
    return (FLAGS & kLoadPrefetch) ? int(kHintPrefetch256) : (FLAGS & kLoadNc) ? int(kHintNc) : 0;
}();

// x / z words at p with the flags' load hint (zeros where !ok), for one 16-byte chunk.
template <int FLAGS>
__device__ __forceinline__ void load_hinted_words(const char *p, bool ok, uint32_t (&w)[4]) {
    const uint4 a = gn_load_b128_hint<kLoadHint<FLAGS>>(p, ok);
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
}

// The row's epilogue, y = u * rstd * (w + offset) [* act(z)], with the weight's dtype and the
// gate's presence fixed: the kernel branches on them once, around straight-line code.  A branch per element
// serialized the exponentials and conversions that a latency-bound call waits on (33
// branches in the 8-element kernel's SASS before, run 11).  Chunks widen one at a time,
// so the weight never occupies CPT x VEC registers.
template <int ODT, int WDT, bool GATE, int TPR, bool KEEP, int CPT, int VEC>
__device__ __forceinline__ void store_row(char *out, int lane, int dim, float rstd, float offset, int act,
                                          const float (&u)[CPT][VEC], const float (&g)[CPT][VEC],
                                          const RawChunk<VEC> (&wraw)[CPT]) {
    constexpr int kOBytes = ODT == kF32 ? 4 : 2;
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
        const int col = (lane + j * TPR) * VEC;
        if (col >= dim) continue;
        float w[VEC], y[VEC];
        widen_chunk<WDT>(wraw[j], offset, w);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            y[k] = u[j][k] * rstd * w[k];
            if constexpr (GATE) y[k] *= activate(g[j][k], act);
        }
        store_vec<ODT, VEC, KEEP>(out + int64_t(col) * kOBytes, y);
    }
}

// A lane's share of one row: CPT chunks of x (and of z, when it is loaded with x) as raw
// words, widened only where they are used.  Rows past the end and columns past D stay zero
// words (0.0f in every dtype).
template <int XDT, int CPT, int VEC>
struct LaneRow {
    uint32_t x[CPT][kWords<XDT, VEC>];
    uint32_t z[CPT][kWords<XDT, VEC>];
};

template <int XDT, int TPR, int CPT, int VEC, int FLAGS>
__device__ __forceinline__ void load_lane_row(const RmsnormGatedArgs &a, const RowOffsets &o, int lane, bool row_ok,
                                              bool with_z, LaneRow<XDT, CPT, VEC> &r) {
    constexpr int kXBytes = XDT == kF32 ? 4 : 2;
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
        const int col = (lane + j * TPR) * VEC;
        const bool ok = row_ok && col < a.dim;
        if constexpr (kLoadHint<FLAGS> != 0) {
            static_assert(kWords<XDT, VEC> == 4, "load hints take chunks of one 16-byte access");
            load_hinted_words<FLAGS>(a.x + o.x + int64_t(col) * kXBytes, ok, r.x[j]);
            // no pointer arithmetic on a null z: the address is x's where z is not loaded
            const char *zp = with_z ? a.z + o.z + int64_t(col) * kXBytes : a.x;
            load_hinted_words<FLAGS>(zp, ok && with_z, r.z[j]);
        } else {
#pragma unroll
            for (int i = 0; i < kWords<XDT, VEC>; ++i) r.x[j][i] = r.z[j][i] = 0u;
            if (ok) load_words(a.x + o.x + int64_t(col) * kXBytes, r.x[j]);
            if (ok && with_z) load_words(a.z + o.z + int64_t(col) * kXBytes, r.z[j]);
        }
    }
}

template <int TPR, int CPT, int VEC>
__device__ __forceinline__ void load_weight_chunks(const RmsnormGatedArgs &a, int lane, RawChunk<VEC> (&wraw)[CPT]) {
    const int wbytes = dtype_size(a.weight_dtype);
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
        const int col = (lane + j * TPR) * VEC;
        wraw[j] = {};
        if (col < a.dim) wraw[j] = load_raw_chunk<VEC>(static_cast<const char *>(a.weight) + col * wbytes, a.weight_dtype);
    }
}

// Whether z travels with x (the pre-sum gate needs it for the sum; the post-sum one too,
// unless kLateGate defers it past the sum).
template <int FLAGS>
__device__ __forceinline__ bool z_with_x(const RmsnormGatedArgs &a) {
    return a.z != nullptr && (!a.norm_before_gate || (FLAGS & kLateGate) == 0);
}

// The row's sum of squares, rstd and epilogue for one lane.  Every lane of the team calls
// it, rows past the end too (row_ok false, zero words): they take part in the team's
// shuffles, then stop.  Run-time choices branch once around straight-line element loops,
// so the conversions and exponentials of a chunk issue back to back once its data arrives.
template <int XDT, int ODT, int TPR, int CPT, int VEC, int FLAGS, int BLOCK>
__device__ __forceinline__ void finish_lane_row(const RmsnormGatedArgs &a, const LaneRow<XDT, CPT, VEC> &r,
                                                const RowOffsets &o, int lane, bool row_ok,
                                                const RawChunk<VEC> (&wraw)[CPT]) {
    constexpr int kXBytes = XDT == kF32 ? 4 : 2;
    const bool has_z = a.z != nullptr;
    const bool gate_first = has_z && !a.norm_before_gate;  // the gate enters the sum (Mamba2)
    const bool gate_after = has_z && a.norm_before_gate;
    float u[CPT][VEC], g[CPT][VEC];
#pragma unroll
    for (int j = 0; j < CPT; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            u[j][k] = word_element<XDT>(r.x[j], k);
            g[j][k] = word_element<XDT>(r.z[j], k);
        }
    if (gate_first) {
#pragma unroll
        for (int j = 0; j < CPT; ++j)
#pragma unroll
            for (int k = 0; k < VEC; ++k) u[j][k] *= activate(g[j][k], a.activation);
    }
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < CPT; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) ss += u[j][k] * u[j][k];
    ss = team_sum<TPR, BLOCK>(ss);
    if (!row_ok) return;  // after the team's shuffles
    const float rstd = rsqrtf(ss * a.inv_dim + a.eps);
    if ((FLAGS & kLateGate) != 0 && gate_after) {
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
            const int col = (lane + j * TPR) * VEC;
            if (col < a.dim) load_vec<XDT, VEC>(a.z + o.z + int64_t(col) * kXBytes, g[j]);
        }
    }

    char *out = a.out + o.out;
    constexpr bool kKeep = (FLAGS & kStoreKeep) != 0;
    const float off = a.weight_offset;
    const int act = a.activation;
    if (gate_after) {
        if (a.weight_dtype == kBF16) store_row<ODT, kBF16, true, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
        else if (a.weight_dtype == kF16) store_row<ODT, kF16, true, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
        else store_row<ODT, kF32, true, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
    } else {
        if (a.weight_dtype == kBF16) store_row<ODT, kBF16, false, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
        else if (a.weight_dtype == kF16) store_row<ODT, kF16, false, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
        else store_row<ODT, kF32, false, TPR, kKeep>(out, lane, a.dim, rstd, off, act, u, g, wraw);
    }
}

// One pass: a team of TPR lanes owns one row (a block holds BLOCK / TPR rows, no loop:
// nothing is loop-invariant for the compiler to hoist in front of the row's loads; 2 and 4
// rows per team measured slower, runs 3 and 9).  x (and z, unless kLateGate defers it) is
// loaded first, then the weight's raw bits, widened only where they are used: a thread
// waits on DRAM once, or twice with kLateGate.  BLOCK and MIN_BLOCKS are chosen by the
// launcher and by scripts/tune_rmsnorm_gated.cu (MIN_BLOCKS counts blocks of 256 threads'
// worth of registers).
template <int XDT, int ODT, int TPR, int CPT, int VEC, int FLAGS = 0, int BLOCK = kBlockThreads,
          int MIN_BLOCKS = kMinBlocksPerSM<XDT, CPT>>
__global__ void GN_LAUNCH_BOUNDS(BLOCK, MIN_BLOCKS * kBlockThreads) rmsnorm_gated_vec_kernel(const RmsnormGatedArgs a) {
    const int lane = threadIdx.x % TPR;
    const int32_t row = blockIdx.x * (BLOCK / TPR) + threadIdx.x / TPR;  // neighbouring teams: neighbouring rows
    const bool row_ok = row < a.rows;
    RowOffsets o{};
    if (row_ok) o = row_offsets(a, row);
    if constexpr ((FLAGS & kPdl) != 0) {
        gn_wait_prior_grid();
        gn_allow_next_grid();
    }
    LaneRow<XDT, CPT, VEC> r;
    load_lane_row<XDT, TPR, CPT, VEC, FLAGS>(a, o, lane, row_ok, z_with_x<FLAGS>(a), r);
    RawChunk<VEC> wraw[CPT];
    load_weight_chunks<TPR>(a, lane, wraw);
    finish_lane_row<XDT, ODT, TPR, CPT, VEC, FLAGS, BLOCK>(a, r, o, lane, row_ok, wraw);
}

template <int FLAGS = 0>
__global__ void __launch_bounds__(kBlockThreads) rmsnorm_gated_generic_kernel(const RmsnormGatedArgs a) {
    constexpr int kTeam = kGenericTeamLanes;
    const int lane = threadIdx.x % kTeam;
    const int32_t row = blockIdx.x * kGenericTeams + threadIdx.x / kTeam;  // one row per team
    const bool row_ok = row < a.rows;
    const bool has_z = a.z != nullptr;
    const bool gate_before = has_z && !a.norm_before_gate;
    const bool gate_after = has_z && a.norm_before_gate;
    const int xs = dtype_size(a.x_dtype), zs = dtype_size(a.z_dtype), os = dtype_size(a.out_dtype);
    const int ws = dtype_size(a.weight_dtype);
    RowOffsets o{};
    if (row_ok) o = row_offsets(a, row);
    if constexpr ((FLAGS & kPdl) != 0) {
        gn_wait_prior_grid();
        gn_allow_next_grid();
    }

    float ss = 0.0f;
    if (row_ok) {
        for (int c = lane; c < a.dim; c += kTeam) {
            float u = load_as_f32(a.x + o.x + int64_t(c) * xs, a.x_dtype);
            if (gate_before) u *= activate(load_as_f32(a.z + o.z + int64_t(c) * zs, a.z_dtype), a.activation);
            ss += u * u;
        }
    }
    ss = team_sum<kTeam>(ss);  // every lane of the team reaches the shuffles
    if (!row_ok) return;
    const float rstd = rsqrtf(ss * a.inv_dim + a.eps);
    for (int c = lane; c < a.dim; c += kTeam) {
        float u = load_as_f32(a.x + o.x + int64_t(c) * xs, a.x_dtype);
        float g = has_z ? activate(load_as_f32(a.z + o.z + int64_t(c) * zs, a.z_dtype), a.activation) : 1.0f;
        if (gate_before) u *= g;
        float y = u * rstd * (load_as_f32(static_cast<const char *>(a.weight) + int64_t(c) * ws, a.weight_dtype) + a.weight_offset);
        if (gate_after) y *= g;
        store_from_f32(a.out + o.out + int64_t(c) * os, a.out_dtype, y);
    }
}

}  // namespace gn
