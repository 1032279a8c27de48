// CPU backend of gated RMSNorm: the same fp32 formula and rounding helpers as the GPU
// kernels (hip/numerics.h), row by row: rows split over the library's pool (cpu_pool.h),
// each row's loads, gate, sum of squares and stores in loops the compiler vectorizes
// (cpu_rows.h).  What runs on a machine with no GPU.
#include <math.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "cpu_rows.h"
#include "numerics.h"

namespace gn {

namespace {

// Per-thread row buffers that only ever grow: no heap traffic per call.
float *row_buffer(int which, int64_t n) {
    thread_local std::vector<float> buf[3];
    if (buf[which].size() < size_t(n)) buf[which].resize(size_t(n));
    return buf[which].data();
}

}  // namespace

gatednorm_status cpu_rmsnorm_gated(const RmsnormGatedProblem &p) {
    const int64_t D = p.dim, H = p.heads;
    const int xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), os = dtype_size(p.out.dtype);
    const int ws = dtype_size(p.weight_dtype);
    const bool has_z = p.z.data != nullptr;

    std::vector<float> wv(static_cast<size_t>(D));
    float *const w = wv.data();
    for (int64_t c = 0; c < D; ++c)
        w[c] = load_as_f32(static_cast<const char *>(p.weight) + c * ws, p.weight_dtype) + p.weight_offset;

    auto rows = [&](int64_t r0, int64_t r1) {
        float *u = row_buffer(0, D), *g = row_buffer(1, D), *y = row_buffer(2, D);
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t t = r / H, h = r % H;
            const char *x = p.x.data + (t * p.x.stride_t + h * p.x.stride_h) * xs;
            char *out = p.out.data + (t * p.out.stride_t + h * p.out.stride_h) * os;
            // The whole row is read before any of it is written: out may alias x or z.
            load_row_f32(x, p.x.dtype, D, u);
            if (has_z) {
                load_row_f32(p.z.data + (t * p.z.stride_t + h * p.z.stride_h) * zs, p.z.dtype, D, g);
                if (p.activation == kSigmoid)
                    for (int64_t c = 0; c < D; ++c) g[c] = sigmoid(g[c]);
                else
                    for (int64_t c = 0; c < D; ++c) g[c] = g[c] * sigmoid(g[c]);
                if (!p.norm_before_gate)
                    for (int64_t c = 0; c < D; ++c) u[c] *= g[c];
            }
            // The sum of squares in double: a sequential fp32 sum over long rows would drift
            // further from the reference than the GPU's tree reduction does.
            const double ss = sum_squares(u, D);
            const float rstd = 1.0f / sqrtf(float(ss / double(D)) + p.eps);
            if (has_z && p.norm_before_gate)
                for (int64_t c = 0; c < D; ++c) y[c] = u[c] * rstd * w[c] * g[c];
            else
                for (int64_t c = 0; c < D; ++c) y[c] = u[c] * rstd * w[c];
            store_row_f32(out, p.out.dtype, D, y);
        }
    };
    cpu_parallel_for(p.tokens * H, D * (has_z ? 4 : 1), rows);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
