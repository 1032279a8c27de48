// The CPU backends' FP8 per-group quantization of one token's row (docs/ops.md section 2):
// shared by every op with FP8 outputs, so that the CPU side has one sequence of the rules
// in numerics.h (amax of the group, scale, reciprocal, encode, scale storage).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "numerics.h"

namespace gn {

// Quantizes y[0, groups * G) of token t into q and scales as `qs` describes them.
inline void cpu_quantize_row(const QuantFp8Spec &qs, int64_t t, const float *y) {
    const bool ue8m0 = qs.scale_format != kScaleF32;
    const int sbytes = qs.scale_format == kScaleE8m0 ? 1 : 4;
    const int64_t G = qs.group;
    uint8_t *qrow = reinterpret_cast<uint8_t *>(qs.q + t * qs.q_st);
    char *srow = qs.scales + t * qs.s_st * sbytes;
    const int fmt = qs.format;
    const float fp8_max = qs.fp8_max;
    for (int64_t k = 0; k < qs.groups; ++k) {
        const float *yg = y + k * G;
        uint8_t *qg = qrow + k * G;
        uint32_t amax = 0;  // loops without branches: the compiler vectorizes both
        for (int64_t i = 0; i < G; ++i) amax = amax > abs_bits(yg[i]) ? amax : abs_bits(yg[i]);
        const float s = fp8_group_scale(amax, qs.amax_floor, fp8_max, ue8m0);
        const Fp8GroupCodes codes(s);  // numerics.h's rule; fp8_encode inline keeps the loop vectorized
        if (codes.nan) {
            memset(qg, fp8_nan_code(fmt), size_t(G));
        } else {
            for (int64_t i = 0; i < G; ++i) qg[i] = fp8_encode(codes.scaled(yg[i]), fmt, fp8_max);
        }
        store_group_scale(srow, qs.s_sk, qs.scale_format, k, qs.groups, s);
    }
}

}  // namespace gn
