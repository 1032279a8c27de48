// The add-RMSNorm pieces shared by hip/add_rmsnorm.hip (its kernels) and hip/allreduce.hip
// (the fused one-shot path): the kernel arguments, the generic per-row body and the sum
// order both kernels of add_rmsnorm.hip follow (ops.md §3).
#pragma once
#include "port.h"  // first (the HIP runtime)
#include "backend.h"
#include "fp8_quant.h"
#include "rmsnorm_gated_kernels.h"

namespace gn {

struct AddArgs {
    const char *x, *res;
    char *res_out, *y;
    const void *weight;
    int64_t x_st, res_st, res_out_st, y_st;  // bytes
    Fp8QuantArgs qa;
    int32_t hidden;
    int32_t gl;      // row kernel: lanes per group
    int32_t g_log2;  // row kernel: log2(G)
    int32_t x_dtype, res_dtype, y_dtype, weight_dtype, round_dtype;
    int32_t normalize, has_quant, quantize_rounded, pdl;
    float eps, weight_offset, inv_hidden;
    int32_t flat_lanes;    // flat group-quant kernel: lanes of kFlatVec elements in all (< 2^31)
    int32_t flat_lpr;      // ... and a row's lanes (hidden / kFlatVec)
    FastDiv flat_lpr_div;
};

constexpr int kMaxRowThreads = 1024;
constexpr int kGenericThreads = 256;

// v rounded to dtype dt and widened back (what a store and a re-read give): numerics.h's rules.
__device__ __forceinline__ float round_to(float v, int dt) {
    if (dt == kBF16) return bf16_to_f32(f32_to_bf16(v));
    if (dt == kF16) return f16_to_f32(f32_to_f16(v));
    return v;
}

// The sum of squares' order (row_sum_squares in hip/add_rmsnorm.hip has the whole argument):
// 8-element chunks, 32-chunk spans reduced by an xor butterfly, spans added in order.
constexpr int kChunk = 8;
constexpr int kSpan = kChunk * kShuffleGroup;  // 256 elements
constexpr int kMaxSpans = 16384 / kSpan;

// A span's chunk sums combined by the xor butterfly over LANES adjacent lanes (offsets
// LANES / 2 .. 1; every lane ends with the same bits, addition commutes): the one butterfly
// the row kernel (32 lanes at VEC 8, 16 at VEC 16 on each half) and the generic body use.
template <int LANES>
__device__ __forceinline__ float span_butterfly(float v) {
#pragma unroll
    for (int m = LANES / 2; m > 0; m >>= 1) v += gn_shfl_xor(v, m, LANES);
    return v;
}

// ---- the generic body
// Element c of the stored row (the residual as stored, or x).
__device__ __forceinline__ float stored_at(const AddArgs &a, int64_t t, int64_t c) {
    if (a.res) return load_as_f32(a.res_out + t * a.res_out_st + c * dtype_size(a.res_dtype), a.res_dtype);
    return load_as_f32(a.x + t * a.x_st + c * dtype_size(a.x_dtype), a.x_dtype);
}

__device__ __forceinline__ float y_at(const AddArgs &a, int64_t t, int64_t c, float rstd) {
    const float r = stored_at(a, t, c);
    if (!a.normalize) return r;
    const float w = load_as_f32(static_cast<const char *>(a.weight) + c * dtype_size(a.weight_dtype), a.weight_dtype) + a.weight_offset;
    return r * rstd * w;
}

// Element c of row t as the row kernel sees it: x, or x + residual rounded to the residual's
// dtype (stored here, as the row kernel stores it).
__device__ __forceinline__ float generic_stored(const AddArgs &a, int64_t t, int64_t c) {
    float v = load_as_f32(a.x + t * a.x_st + c * dtype_size(a.x_dtype), a.x_dtype);
    if (a.res) {
        const int rs = dtype_size(a.res_dtype);
        v += load_as_f32(a.res + t * a.res_st + c * rs, a.res_dtype);
        v = round_to(v, a.res_dtype);
        store_from_f32(a.res_out + t * a.res_out_st + c * rs, a.res_dtype, v);
    }
    return v;
}

// The row's sum of squares in row_sum_squares' order, for any hidden: 8-element chunks (past
// hidden: +0), summed k = 0..7 by fmaf; a span of 32 chunks by the xor butterfly 16 .. 1 in
// a 32-lane group; the spans' partials added in order from 0.  The block's 8 groups take 8
// spans a round; every thread adds the round's partials to its running sum in span order.
// So add_rmsnorm here gives the bits rmsnorm gives on the stored residual in the row kernel
// (a misaligned input residual sends add_rmsnorm here while the stored one is aligned).
// Also stores the residual (first pass over the row).
__device__ __forceinline__ float generic_sum_squares(const AddArgs &a, int64_t t) {
    constexpr int kGroups = kGenericThreads / kShuffleGroup;
    __shared__ float partial[kGroups];
    const int64_t H = a.hidden;
    const int lane = threadIdx.x % kShuffleGroup, group = threadIdx.x / kShuffleGroup;
    const int64_t spans = (H + kSpan - 1) / kSpan;
    float total = 0.0f;
    for (int64_t r0 = 0; r0 < spans; r0 += kGroups) {
        const int64_t c0 = (r0 + group) * kSpan + int64_t(lane) * kChunk;
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < kChunk; ++k) {
            const float e = c0 + k < H ? generic_stored(a, t, c0 + k) : 0.0f;
            v = fmaf(e, e, v);
        }
        v = span_butterfly<kShuffleGroup>(v);
        if (lane == 0) partial[group] = v;
        __syncthreads();
        const int n = spans - r0 < kGroups ? int(spans - r0) : kGroups;
        for (int i = 0; i < n; ++i) total += partial[i];
        __syncthreads();  // before the next round overwrites partial; also publishes the residual
    }
    return total;
}

// Row t by a block of kGenericThreads threads (the generic kernel's body; also the fused
// all-reduce's, hip/allreduce.hip): the sum pass (storing the residual), then y, or groups
// handed to 32-lane teams (amax pass, then codes and y).  Every thread of the block calls it.
__device__ __forceinline__ void add_rmsnorm_generic_row(const AddArgs &a, int64_t t) {
    const int64_t H = a.hidden;
    // Its barriers also make the stored residual visible to the whole block.
    const float ss = generic_sum_squares(a, t);
    const float rstd = a.normalize ? rsqrtf(fmaf(ss, a.inv_hidden, a.eps)) : 1.0f;
    const int ys = dtype_size(a.y_dtype);
    if (!a.has_quant) {
        for (int64_t c = threadIdx.x; c < H; c += kGenericThreads) store_from_f32(a.y + t * a.y_st + c * ys, a.y_dtype, y_at(a, t, c, rstd));
        return;
    }
    const int lane = threadIdx.x % kShuffleGroup, team = threadIdx.x / kShuffleGroup;
    const int64_t G = a.qa.group;
    uint8_t *q = reinterpret_cast<uint8_t *>(a.qa.q + t * a.qa.q_st);
    for (int64_t k = team; k < a.qa.groups; k += kGenericThreads / kShuffleGroup) {
        uint32_t m = 0;
        for (int64_t c = k * G + lane; c < (k + 1) * G; c += kShuffleGroup) {
            float v = y_at(a, t, c, rstd);
            if (a.quantize_rounded) v = round_to(v, a.round_dtype);
            m = abs_bits(v) > m ? abs_bits(v) : m;
        }
        m = lanes_max_bits<kShuffleGroup>(m, kShuffleGroup);
        const float s = group_scale(a.qa, m);
        const Fp8GroupCodes codes(s);
        for (int64_t c = k * G + lane; c < (k + 1) * G; c += kShuffleGroup) {
            const float v = y_at(a, t, c, rstd);
            if (a.y) store_from_f32(a.y + t * a.y_st + c * ys, a.y_dtype, v);
            const float vq = a.quantize_rounded ? round_to(v, a.round_dtype) : v;
            q[c] = codes.code(vq, a.qa.format, a.qa.fp8_max);
        }
        if (lane == 0) store_scale(a.qa, t, k, s);
    }
}

// The kernels' arguments for problem p (vec: the row kernel's VEC, 0 for the generic body).
AddArgs make_add_args(const AddRmsnormProblem &p, int vec);

}  // namespace gn
