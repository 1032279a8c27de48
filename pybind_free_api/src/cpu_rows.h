// Row loads and stores of the CPU backend: a contiguous row of bf16 / fp16 / fp32 to and
// from fp32, one loop per dtype with the rounding rules of hip/numerics.h written so that
// the compiler vectorizes them (bf16 <-> fp32 by integer shifts and a select, no branch).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "numerics.h"

namespace gn {

inline void load_row_f32(const char *src, int dt, int64_t n, float *dst) {
    if (dt == kF32) {
        memcpy(dst, src, size_t(n) * 4);
    } else if (dt == kBF16) {
        const uint16_t *s = reinterpret_cast<const uint16_t *>(src);
        for (int64_t c = 0; c < n; ++c) dst[c] = f32_from_bits(uint32_t(s[c]) << 16);
    } else {
        const uint16_t *s = reinterpret_cast<const uint16_t *>(src);
        for (int64_t c = 0; c < n; ++c) dst[c] = f16_to_f32(s[c]);
    }
}

inline void store_row_f32(char *dst, int dt, int64_t n, const float *src) {
    if (dt == kF32) {
        memcpy(dst, src, size_t(n) * 4);
    } else if (dt == kBF16) {
        uint16_t *d = reinterpret_cast<uint16_t *>(dst);
        for (int64_t c = 0; c < n; ++c) d[c] = f32_to_bf16(src[c]);
    } else {
        uint16_t *d = reinterpret_cast<uint16_t *>(dst);
        for (int64_t c = 0; c < n; ++c) d[c] = f32_to_f16(src[c]);
    }
}

// sum of v[c]^2 in double, in 8 interleaved lanes combined by a fixed tree: the same order
// for a row whatever thread computes it, and vectorizable (a sequential double sum is not).
inline double sum_squares(const float *v, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; ++l) acc[l] += double(v[c + l]) * double(v[c + l]);
    for (; c < n; ++c) acc[c & 7] += double(v[c]) * double(v[c]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The gated norm's fp32 y of one row of D (docs/ops.md §1): x and z (nullptr: none) loaded,
// the gate act(z), u = x or x * act(z), the sum of squares above, y = u * rstd * w [* act(z)],
// every step a loop the compiler vectorizes.  u and g are scratch of D floats; w holds
// weight + weight_offset.  cpu_rmsnorm_gated's general path and cpu_rmsnorm_gated_fp8 both
// compute y here, and its all-bf16 path (bf16_rows) does the same operations in the same
// order, so a copy written beside the FP8 codes has rmsnorm_gated's bits.
inline void gated_row_f32(const char *x, int xdt, const char *z, int zdt, int64_t D, int act, bool norm_before_gate,
                          const float *w, float eps, float *u, float *g, float *y) {
    load_row_f32(x, xdt, D, u);
    if (z) {
        load_row_f32(z, zdt, D, g);
        if (act == kSigmoid)
            for (int64_t c = 0; c < D; ++c) g[c] = sigmoid(g[c]);
        else
            for (int64_t c = 0; c < D; ++c) g[c] = g[c] * sigmoid(g[c]);
        if (!norm_before_gate)
            for (int64_t c = 0; c < D; ++c) u[c] *= g[c];
    }
    // The sum of squares in double: a sequential fp32 sum over long rows would drift further
    // from the reference than the GPU's tree reduction does.
    const double ss = sum_squares(u, D);
    const float rstd = 1.0f / sqrtf(float(ss / double(D)) + eps);
    if (z && norm_before_gate)
        for (int64_t c = 0; c < D; ++c) y[c] = u[c] * rstd * w[c] * g[c];
    else
        for (int64_t c = 0; c < D; ++c) y[c] = u[c] * rstd * w[c];
}

// v rounded to a 16-bit dtype and widened back, in place (quantize_rounded: what an unfused
// pipeline stores and re-reads); fp32 leaves v as it is.
inline void round_row_f32(int dt, int64_t n, float *v) {
    if (dt == kBF16)
        for (int64_t c = 0; c < n; ++c) v[c] = bf16_to_f32(f32_to_bf16(v[c]));
    else if (dt == kF16)
        for (int64_t c = 0; c < n; ++c) v[c] = f16_to_f32(f32_to_f16(v[c]));
}

}  // namespace gn
