// CPU backend of gated RMSNorm + FP8 per-group quantization: §1's fp32 y per row, then §2's
// group rule with the encoder and scale rules of hip/numerics.h, token by token.
#include <math.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "cpu_quant.h"
#include "numerics.h"

namespace gn {

gatednorm_status cpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &pr) {
    note_kernel("cpu");
    const RmsnormGatedProblem &p = pr.norm;
    const QuantFp8Spec &qs = pr.quant;
    const int64_t D = p.dim, H = p.heads, R = H * D;
    const int xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), os = dtype_size(p.out.dtype);
    const int ws = dtype_size(p.weight_dtype);
    const bool has_z = p.z.data != nullptr, has_copy = p.out.data != nullptr;

    std::vector<float> w(D);
    for (int64_t c = 0; c < D; ++c)
        w[c] = load_as_f32(static_cast<const char *>(p.weight) + c * ws, p.weight_dtype) + p.weight_offset;

    // Tokens split over the pool (cpu_pool.h); a token's rows and groups stay on one thread.
    auto tokens = [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> u, g, y;
    if (u.size() < size_t(D)) u.resize(size_t(D)), g.resize(size_t(D));
    if (y.size() < size_t(R)) y.resize(size_t(R));
    for (int64_t t = t0; t < t1; ++t) {
        for (int64_t h = 0; h < H; ++h) {
            const char *x = p.x.data + (t * p.x.stride_t + h * p.x.stride_h) * xs;
            const char *z = has_z ? p.z.data + (t * p.z.stride_t + h * p.z.stride_h) * zs : nullptr;
            // The sum of squares in double, as cpu_rmsnorm_gated (closer to the reference
            // than a sequential fp32 sum over long rows).
            double ss = 0.0;
            for (int64_t c = 0; c < D; ++c) {
                u[c] = load_as_f32(x + c * xs, p.x.dtype);
                g[c] = has_z ? activate(load_as_f32(z + c * zs, p.z.dtype), p.activation) : 1.0f;
                if (has_z && !p.norm_before_gate) u[c] *= g[c];
                ss += double(u[c]) * double(u[c]);
            }
            const float rstd = 1.0f / sqrtf(float(ss / double(D)) + p.eps);
            float *yr = y.data() + h * D;
            char *out = has_copy ? p.out.data + (t * p.out.stride_t + h * p.out.stride_h) * os : nullptr;
            for (int64_t c = 0; c < D; ++c) {
                float v = u[c] * rstd * w[c];
                if (has_z && p.norm_before_gate) v *= g[c];
                if (has_copy) store_from_f32(out + c * os, p.out.dtype, v);
                if (qs.quantize_rounded) {  // the value an unfused pipeline stored and re-read
                    uint16_t b;
                    if (pr.round_dtype == kBF16) b = f32_to_bf16(v), v = bf16_to_f32(b);
                    else if (pr.round_dtype == kF16) b = f32_to_f16(v), v = f16_to_f32(b);
                }
                yr[c] = v;
            }
        }
        cpu_quantize_row(qs, t, y.data());
    }
    };
    cpu_parallel_for(p.tokens, R * (has_z ? 6 : 3), tokens);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
