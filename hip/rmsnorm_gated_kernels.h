// Gated RMSNorm kernels (ops.md §1).  Two kernels:
//  - vec: rows of D = 8k elements with 16-byte aligned rows; a team of TPR lanes owns a row,
//    each lane CPT chunks of 8 elements held in registers, so x and z are read once and
//    out written once with 16-byte accesses.  x, z share a dtype known at compile time,
//    out's dtype too; the weight dtype is resolved once per thread at preload.
//  - generic: any D, alignment and dtype mix; 32 lanes per row, two passes over the row
//    (the second one hits cache).  The slow path that keeps every input legal.
// Both are one-pass: the grid has a team per row, and no lane exits before the team's
// shuffles (rows past the end take part with zeros).
#pragma once
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
    int32_t dim;
    int32_t x_dtype, z_dtype, out_dtype, weight_dtype;
    int32_t norm_before_gate;
    int32_t activation;
    float eps;
    float weight_offset;
    float inv_dim;
};

// ---- 8-element vector loads/stores of raw bits (16 bytes for 16-bit types, 32 for fp32).
template <int DT>
__device__ __forceinline__ void load8(const char *p, float (&v)[8]) {
    if constexpr (DT == kF32) {
        const float4 a = reinterpret_cast<const float4 *>(p)[0];
        const float4 b = reinterpret_cast<const float4 *>(p)[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
        const uint4 r = *reinterpret_cast<const uint4 *>(p);
        const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if constexpr (DT == kBF16) {
                v[2 * i] = f32_from_bits(w[i] << 16);
                v[2 * i + 1] = f32_from_bits(w[i] & 0xffff0000u);
            } else {
                v[2 * i] = f16_to_f32(uint16_t(w[i] & 0xffffu));
                v[2 * i + 1] = f16_to_f32(uint16_t(w[i] >> 16));
            }
        }
    }
}

template <int DT>
__device__ __forceinline__ void store8(char *p, const float (&v)[8]) {
    if constexpr (DT == kF32) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) w[i] = DT == kBF16 ? pack_bf16x2(v[2 * i], v[2 * i + 1]) : pack_f16x2(v[2 * i], v[2 * i + 1]);
        *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// The weight's dtype is known only at run time.  Its 8-element chunk is loaded as raw bits
// (16 bytes, or 32 for fp32) with no use in the branch, and widened only where it is used,
// so the load overlaps the row's loads instead of stalling the thread before them.
struct RawChunk {
    uint4 lo, hi;  // hi only for fp32
};

__device__ __forceinline__ RawChunk load_raw_chunk(const char *p, int dt) {
    RawChunk r;
    r.lo = reinterpret_cast<const uint4 *>(p)[0];
    r.hi = dt == kF32 ? reinterpret_cast<const uint4 *>(p)[1] : make_uint4(0, 0, 0, 0);
    return r;
}

__device__ __forceinline__ void widen_chunk(const RawChunk &r, int dt, float offset, float (&v)[8]) {
    const uint32_t w[8] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w, r.hi.x, r.hi.y, r.hi.z, r.hi.w};
    if (dt == kF32) {
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = f32_from_bits(w[k]) + offset;
    } else if (dt == kBF16) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = f32_from_bits(w[i] << 16) + offset;
            v[2 * i + 1] = f32_from_bits(w[i] & 0xffff0000u) + offset;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = f16_to_f32(uint16_t(w[i] & 0xffffu)) + offset;
            v[2 * i + 1] = f16_to_f32(uint16_t(w[i] >> 16)) + offset;
        }
    }
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

__device__ __forceinline__ void row_offsets(const RmsnormGatedArgs &a, int32_t row, int64_t &xo,
                                            int64_t &zo, int64_t &oo) {
    if (a.flat_rows) {  // contiguous [T, H] rows: the common case, and the latency-critical one
        xo = int64_t(row) * a.x_sr;
        zo = int64_t(row) * a.z_sr;
        oo = int64_t(row) * a.o_sr;
        return;
    }
    const uint32_t t = uint32_t(row) / uint32_t(a.heads);
    const uint32_t h = uint32_t(row) - t * uint32_t(a.heads);
    xo = int64_t(t) * a.x_st + int64_t(h) * a.x_sh;
    zo = int64_t(t) * a.z_st + int64_t(h) * a.z_sh;
    oo = int64_t(t) * a.o_st + int64_t(h) * a.o_sh;
}

// Resident blocks per multiprocessor the register budget must allow (256 threads each),
// by the 16-byte loads of x a lane keeps in flight: one keeps 6 blocks (40 registers; the
// kernel needs 39), two (two rows, or an fp32 chunk) keep 4 (64), four-chunk rows
// (D > 256, ~115 registers) keep 2.  8 blocks (32 registers) spilled and ran up to 50%
// slower in run 3's A/B.
template <int XDT, int CPT, int R>
constexpr int kMinBlocksPerSM = [] {
    constexpr int loads = R * CPT * (XDT == kF32 ? 2 : 1);
    return loads == 1 ? 6 : loads == 2 ? 4 : 2;
}();

// A team owns R rows (the library launches R = 1: a block per 256 / TPR rows, no loop,
// so nothing is loop-invariant for the compiler to hoist in front of the row's loads).
// All loads of x and z are issued first, then the weight's raw bits, which are widened
// only where they are used: a thread waits on DRAM once.  R and MIN_BLOCKS stay
// parameters for scripts/tune_rmsnorm_gated.cu (R = 2 and 4 measured slower, NOTES.md), as
// is the block size BLOCK (MIN_BLOCKS counts blocks of 256 threads' worth of registers).
template <int XDT, int ODT, int TPR, int CPT, int R = 1, int MIN_BLOCKS = kMinBlocksPerSM<XDT, CPT, R>,
          int BLOCK = kBlockThreads>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS * kBlockThreads / BLOCK) rmsnorm_gated_vec_kernel(const RmsnormGatedArgs a) {
    constexpr int kTeams = BLOCK / TPR;
    constexpr int kXBytes = XDT == kF32 ? 4 : 2;
    constexpr int kOBytes = ODT == kF32 ? 4 : 2;
    const int lane = threadIdx.x % TPR;
    const int team = threadIdx.x / TPR;
    const bool has_z = a.z != nullptr;
    const int32_t base = blockIdx.x * kTeams * R;

    float u[R][CPT][8], g[R][CPT][8];
    int64_t oo[R];
    bool row_ok[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int32_t row = base + r * kTeams + team;  // neighbouring teams: neighbouring rows
        row_ok[r] = row < a.rows;
        int64_t xo = 0, zo = 0;
        oo[r] = 0;
        if (row_ok[r]) row_offsets(a, row, xo, zo, oo[r]);
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
            const int col = (lane + j * TPR) * 8;
            const bool ok = row_ok[r] && col < a.dim;
#pragma unroll
            for (int k = 0; k < 8; ++k) u[r][j][k] = g[r][j][k] = 0.0f;
            if (ok) load8<XDT>(a.x + xo + int64_t(col) * kXBytes, u[r][j]);
            if (ok && has_z) load8<XDT>(a.z + zo + int64_t(col) * kXBytes, g[r][j]);
        }
    }
    RawChunk wraw[CPT];
    const int wbytes = dtype_size(a.weight_dtype);
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
        const int col = (lane + j * TPR) * 8;
        if (col < a.dim) wraw[j] = load_raw_chunk(static_cast<const char *>(a.weight) + col * wbytes, a.weight_dtype);
    }

    float ss[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        ss[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (has_z) {
                    g[r][j][k] = activate(g[r][j][k], a.activation);
                    if (!a.norm_before_gate) u[r][j][k] *= g[r][j][k];
                }
                ss[r] += u[r][j][k] * u[r][j][k];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) ss[r] = team_sum<TPR, BLOCK>(ss[r]);
    const bool gate_after = has_z && a.norm_before_gate;

#pragma unroll
    for (int j = 0; j < CPT; ++j) {
        const int col = (lane + j * TPR) * 8;
        if (col >= a.dim) continue;
        float w[8];
        widen_chunk(wraw[j], a.weight_dtype, a.weight_offset, w);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (!row_ok[r]) continue;
            const float rstd = rsqrtf(ss[r] * a.inv_dim + a.eps);
            float y[8];
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                y[k] = u[r][j][k] * rstd * w[k];
                if (gate_after) y[k] *= g[r][j][k];
            }
            store8<ODT>(a.out + oo[r] + int64_t(col) * kOBytes, y);
        }
    }
}

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
    int64_t xo = 0, zo = 0, oo = 0;
    if (row_ok) row_offsets(a, row, xo, zo, oo);

    float ss = 0.0f;
    if (row_ok) {
        for (int c = lane; c < a.dim; c += kTeam) {
            float u = load_as_f32(a.x + xo + int64_t(c) * xs, a.x_dtype);
            if (gate_before) u *= activate(load_as_f32(a.z + zo + int64_t(c) * zs, a.z_dtype), a.activation);
            ss += u * u;
        }
    }
    ss = team_sum<kTeam>(ss);  // every lane of the team reaches the shuffles
    if (!row_ok) return;
    const float rstd = rsqrtf(ss * a.inv_dim + a.eps);
    for (int c = lane; c < a.dim; c += kTeam) {
        float u = load_as_f32(a.x + xo + int64_t(c) * xs, a.x_dtype);
        float g = has_z ? activate(load_as_f32(a.z + zo + int64_t(c) * zs, a.z_dtype), a.activation) : 1.0f;
        if (gate_before) u *= g;
        float y = u * rstd * (load_as_f32(static_cast<const char *>(a.weight) + int64_t(c) * ws, a.weight_dtype) + a.weight_offset);
        if (gate_after) y *= g;
        store_from_f32(a.out + oo + int64_t(c) * os, a.out_dtype, y);
    }
}

}  // namespace gn
