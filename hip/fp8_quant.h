// Device-side FP8 per-group quantization epilogue (ops.md §2), shared by every kernel with
// FP8 outputs (gated RMSNorm + quant now; §3's rmsnorm / add_rmsnorm and group_quant_fp8).
// The rules themselves (encoder, scale, UE8M0, scale storage) live in numerics.h, shared with
// the CPU backend; this header adds the lane-level parts: the group amax reduced over the
// lanes that hold the group, the codes of a lane's VEC values, the scale written by one lane.
#pragma once
#include "port.h"  // first: under HIP it brings the runtime numerics.h's qualifiers need
#include "numerics.h"
#include "backend.h"

namespace gn {

// What a kernel needs of a QuantFp8Spec, in device-friendly form.
struct Fp8QuantArgs {
    char *q;              // byte_offset applied
    char *scales;
    int64_t q_st;         // bytes per token of q
    int64_t s_st_bytes;   // bytes per token of scales
    int64_t s_sk;         // group stride of scales, in elements of the scale storage (see store_group_scale)
    int32_t group;        // G
    int32_t groups;       // K
    int32_t format;       // Fp8Format
    int32_t scale_format; // ScaleFormat
    float fp8_max;
    float amax_floor;
    int32_t fn448;        // format e4m3fn at fp8_max 448, the default: tested once a lane, not per value
};

// The kernel's form of a resolved spec (every kernel with FP8 outputs fills its arguments here).
inline Fp8QuantArgs fp8_quant_args(const QuantFp8Spec &qs) {
    Fp8QuantArgs qa{};
    qa.q = qs.q;
    qa.scales = qs.scales;
    qa.q_st = qs.q_st;
    qa.s_st_bytes = qs.s_st * (qs.scale_format == kScaleE8m0 ? 1 : 4);
    qa.s_sk = qs.s_sk;
    qa.group = int32_t(qs.group);
    qa.groups = int32_t(qs.groups);
    qa.format = qs.format;
    qa.scale_format = qs.scale_format;
    qa.fp8_max = qs.fp8_max;
    qa.amax_floor = qs.amax_floor;
    qa.fn448 = qs.format == kE4M3FN && qs.fp8_max == 448.0f;
    return qa;
}

// Max of raw |y| bits over aligned groups of `lanes` adjacent lanes (a power of two <= MAXL
// <= 32: such a group never straddles a warp of 32 or 64 lanes, so nothing depends on the
// warp width).  Every lane of the warp must call it with the same `lanes`.  Every level up
// to MAXL is unrolled and predicated, so no loop counter or branch sits in the reduction
// chain when `lanes` is known only at run time.
template <int MAXL>
__device__ __forceinline__ uint32_t lanes_max_bits(uint32_t m, int lanes) {
    static_assert(MAXL <= 32 && (MAXL & (MAXL - 1)) == 0, "groups of <= 32 lanes");
#pragma unroll
    for (int o = MAXL / 2; o > 0; o >>= 1) {
        const uint32_t other = f32_bits(gn_shfl_xor(f32_from_bits(m), o, 32));
        if (o < lanes && other > m) m = other;
    }
    return m;
}

// lanes_max_bits for the group width the kernel was compiled around (add_rmsnorm: G = 128 at
// the lane's VEC, 16 lanes at 8 elements, 8 at 16; the gated kernel: that or its team, the
// smaller), the width known: levels LANES / 2 .. 1 unpredicated, a shuffle and one unsigned
// max each.  The FP8 epilogues are issue-bound at small T: the run-time levels took 20
// instructions a warp (run 113), these 8; with lane_amax_bits, 32 fewer a warp and 0.09-0.18
// us off add+FP8 at T <= 16 (run 114).  Same result: max is max in any order.
template <int MAXL, int LANES>
__device__ __forceinline__ uint32_t lanes_max_bits_at(uint32_t m, int lanes) {
    static_assert(LANES <= MAXL, "a group within the reduction's width");
    if (lanes != LANES) return lanes_max_bits<MAXL>(m, lanes);  // uniform: one test a lane
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) m = max(m, f32_bits(gn_shfl_xor(f32_from_bits(m), o, 32)));
    return m;
}

// A lane's amax as raw |y| bits over its N values (0 where !ok): the bits of max |y[k]|, any
// NaN among them giving bits >= 0x7f800000 as an infinity does (what group_scale tests).
// NVIDIA sm_80+: max.NaN.f32 on |y| (one FMNMX.NAN a value, |.| an operand modifier) in
// place of a compare and a select on the bits; a NaN comes back as the canonical NaN, whose
// scale and codes are any NaN's.  Elsewhere the bits' unsigned max.
template <int N>
__device__ __forceinline__ uint32_t lane_amax_bits_u32(const float (&y)[N], bool ok) {
    // The bits' unsigned max.  `ok` tested a value (not once at the end): in add_rmsnorm's
    // 32-register VEC 16 builds the other form spills (ptxas -v, sm_80 / sm_90a).
    uint32_t m = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) m = ok && abs_bits(y[k]) > m ? abs_bits(y[k]) : m;
    return m;
}

template <int N>
__device__ __forceinline__ uint32_t lane_amax_bits(const float (&y)[N], bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float m = fabsf(y[0]);
#pragma unroll
    for (int k = 1; k < N; ++k) {
        const float v = fabsf(y[k]);
        asm("max.NaN.f32 %0, %0, %1;" : "+f"(m) : "f"(v));
    }
    return ok ? f32_bits(m) : 0u;
#else
    return lane_amax_bits_u32(y, ok);
#endif
}

// The group's scale from the amax bits the lanes of the group agree on.
__device__ __forceinline__ float group_scale(const Fp8QuantArgs &a, uint32_t amax_bits) {
    return fp8_group_scale(amax_bits, a.amax_floor, a.fp8_max, a.scale_format != kScaleF32);
}

// Codes of VEC values (VEC % 4 == 0) into VEC / 4 words, byte i = value i, by numerics.h's
// Fp8GroupCodes rule, two values a convert.
template <int VEC>
__device__ __forceinline__ void encode_codes(const Fp8QuantArgs &a, const float (&y)[VEC], float scale, uint32_t (&w)[VEC / 4]) {
    static_assert(VEC % 4 == 0, "whole words of codes");
    if (scale != scale) {  // tested before the reciprocal is formed (run 37's PTX)
        const uint32_t n = fp8_nan_code(a.format) * 0x01010101u;
#pragma unroll
        for (int i = 0; i < VEC / 4; ++i) w[i] = n;
        return;
    }
    const Fp8GroupCodes g(scale);
    const auto encode_all = [&](auto encode_pair) {
#pragma unroll
        for (int i = 0; i < VEC / 4; ++i) {
            const uint32_t lo = encode_pair(g.scaled(y[4 * i]), g.scaled(y[4 * i + 1]));
            const uint32_t hi = encode_pair(g.scaled(y[4 * i + 2]), g.scaled(y[4 * i + 3]));
            w[i] = lo | (hi << 16);
        }
    };
    // The format's encoder chosen once for the lane, not per pair: the two branches below make
    // the same call on purpose, each compiled with fp8_hw_convert's answer known, so inside
    // the hardware branch fp8_encode_x2's own test folds to the convert.
#if defined(GN_FP8_FN_SATFINITE)
    if (a.fn448) {  // the default: satfinite is the clamp
        encode_all([](float lo, float hi) { return fp8_encode_x2_fn448(lo, hi); });
        return;
    }
#endif
    const auto shared_encoder = [&](float lo, float hi) { return fp8_encode_x2(lo, hi, a.format, a.fp8_max); };
    if (fp8_hw_convert(a.format)) encode_all(shared_encoder);
    else encode_all(shared_encoder);
}

// The scale of group k of token t, stored by the one lane that owns the group's first element.
__device__ __forceinline__ void store_scale(const Fp8QuantArgs &a, int64_t t, int64_t k, float scale) {
    store_group_scale(a.scales + t * a.s_st_bytes, a.s_sk, a.scale_format, k, a.groups, scale);
}

}  // namespace gn
