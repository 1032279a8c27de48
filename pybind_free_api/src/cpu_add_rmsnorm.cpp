// CPU backend of RMSNorm / add-RMSNorm (ops.md §3) and of the standalone group quantization:
// per token, r = x + residual in fp32 rounded to the residual's dtype and stored, the norm of
// the stored value (its sum of squares as cpu_rmsnorm_gated's), then y and / or §2's group rule with the encoder and scale rules of
// hip/numerics.h (the same ones cpu_rmsnorm_gated_fp8 uses).
#include <math.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "cpu_quant.h"
#include "cpu_rows.h"
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
    // Row loops the compiler vectorizes (cpu_rows.h), each the same operation per element.
    auto tokens = [&](int64_t t0, int64_t t1) {
        thread_local std::vector<float> r, y;
        // Each buffer on its own test: if the second resize threw (OUT_OF_MEMORY, a call the
        // caller may retry), a shared test would leave y short for the next call on this thread.
        if (r.size() < size_t(H)) r.resize(size_t(H));
        if (y.size() < size_t(H)) y.resize(size_t(H));
        for (int64_t t = t0; t < t1; ++t) {
            load_row_f32(p.x + t * p.x_st * xs, p.x_dtype, H, r.data());
            if (p.res) {  // the sum in fp32, rounded to the residual's dtype, stored, and re-read
                load_row_f32(p.res + t * p.res_st * rs, p.res_dtype, H, y.data());
                for (int64_t c = 0; c < H; ++c) r[c] += y[c];
                char *ro = p.res_out + t * p.res_out_st * rs;
                store_row_f32(ro, p.res_dtype, H, r.data());
                load_row_f32(ro, p.res_dtype, H, r.data());
            }
            if (p.normalize) {
                const float rstd = 1.0f / sqrtf(float(sum_squares(r.data(), H) / double(H)) + p.eps);
                for (int64_t c = 0; c < H; ++c) y[c] = r[c] * rstd * w[c];
            } else {
                for (int64_t c = 0; c < H; ++c) y[c] = r[c];
            }
            if (p.y) store_row_f32(p.y + t * p.y_st * ys, p.y_dtype, H, y.data());
            if (!p.has_quant) continue;
            if (qs.quantize_rounded) round_row_f32(p.round_dtype, H, y.data());  // what an unfused pipeline re-reads
            cpu_quantize_row(qs, t, y.data());
        }
    };
    cpu_parallel_for(p.tokens, H * 4, tokens);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
