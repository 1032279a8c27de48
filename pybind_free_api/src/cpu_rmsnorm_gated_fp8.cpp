// CPU backend of gated RMSNorm + FP8 per-group quantization: §1's fp32 y per row, then §2's
// group rule with the encoder and scale rules of hip/numerics.h, token by token.
#include <math.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "cpu_quant.h"
#include "cpu_rows.h"
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
    // Each row through gated_row_f32 (rmsnorm_gated's own row, so the copy has its bits).
    auto tokens = [&](int64_t t0, int64_t t1) {
        thread_local std::vector<float> u, g, y;
        if (u.size() < size_t(D)) u.resize(size_t(D));  // each on its own test (cpu_add_rmsnorm.cpp)
        if (g.size() < size_t(D)) g.resize(size_t(D));
        if (y.size() < size_t(R)) y.resize(size_t(R));
        for (int64_t t = t0; t < t1; ++t) {
            for (int64_t h = 0; h < H; ++h) {
                const char *x = p.x.data + (t * p.x.stride_t + h * p.x.stride_h) * xs;
                const char *z = has_z ? p.z.data + (t * p.z.stride_t + h * p.z.stride_h) * zs : nullptr;
                float *yr = y.data() + h * D;
                gated_row_f32(x, p.x.dtype, z, p.z.dtype, D, p.activation, p.norm_before_gate, w.data(), p.eps, u.data(),
                              g.data(), yr);
                if (has_copy) store_row_f32(p.out.data + (t * p.out.stride_t + h * p.out.stride_h) * os, p.out.dtype, D, yr);
                if (qs.quantize_rounded) round_row_f32(pr.round_dtype, D, yr);
            }
            cpu_quantize_row(qs, t, y.data());
        }
    };
    cpu_parallel_for(p.tokens, R * (has_z ? 6 : 3), tokens);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
