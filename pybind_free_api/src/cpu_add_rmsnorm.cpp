// CPU backend of RMSNorm / add-RMSNorm (ops.md §3) and of the standalone group quantization:
// per token, r = x + residual in fp32 rounded to the residual's dtype and stored, the norm of
// the stored value, then y and / or §2's group rule with the encoder and scale rules of
// hip/numerics.h (the same ones cpu_rmsnorm_gated_fp8 uses).
#include <math.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "cpu_quant.h"
#include "numerics.h"

namespace gn {

gatednorm_status cpu_add_rmsnorm(const AddRmsnormProblem &p) {
    note_kernel("cpu");
    const int64_t H = p.hidden;
    const QuantFp8Spec &qs = p.quant;
    const int xs = dtype_size(p.x_dtype), rs = dtype_size(p.res_dtype), ys = dtype_size(p.y_dtype);

    std::vector<float> w(H, 1.0f);
    if (p.normalize) {
        const int ws = dtype_size(p.weight_dtype);
        for (int64_t c = 0; c < H; ++c)
            w[c] = load_as_f32(static_cast<const char *>(p.weight) + c * ws, p.weight_dtype) + p.weight_offset;
    }
    // Tokens split over the pool (cpu_pool.h); a token's row and groups stay on one thread.
    auto tokens = [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> r, y;
    if (r.size() < size_t(H)) r.resize(size_t(H)), y.resize(size_t(H));
    for (int64_t t = t0; t < t1; ++t) {
        const char *x = p.x + t * p.x_st * xs;
        double ss = 0.0;  // in double, as cpu_rmsnorm_gated
        for (int64_t c = 0; c < H; ++c) {
            float v = load_as_f32(x + c * xs, p.x_dtype);
            if (p.res) {  // the sum rounded to the residual's dtype, stored, and re-read
                char *ro = p.res_out + (t * p.res_out_st + c) * rs;
                v += load_as_f32(p.res + (t * p.res_st + c) * rs, p.res_dtype);
                store_from_f32(ro, p.res_dtype, v);
                v = load_as_f32(ro, p.res_dtype);
            }
            r[c] = v;
            ss += double(v) * double(v);
        }
        const float rstd = p.normalize ? 1.0f / sqrtf(float(ss / double(H)) + p.eps) : 1.0f;
        char *yrow = p.y ? p.y + t * p.y_st * ys : nullptr;
        for (int64_t c = 0; c < H; ++c) {
            float v = p.normalize ? r[c] * rstd * w[c] : r[c];
            if (yrow) store_from_f32(yrow + c * ys, p.y_dtype, v);
            if (p.has_quant && qs.quantize_rounded) {  // the value an unfused pipeline stored and re-read
                if (p.round_dtype == kBF16) v = bf16_to_f32(f32_to_bf16(v));
                else if (p.round_dtype == kF16) v = f16_to_f32(f32_to_f16(v));
            }
            y[c] = v;
        }
        if (!p.has_quant) continue;
        cpu_quantize_row(qs, t, y.data());
    }
    };
    cpu_parallel_for(p.tokens, H * 4, tokens);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
