// CPU backend of gated RMSNorm: the same fp32 formula and rounding helpers as the GPU
// kernels (hip/numerics.h), row by row.  What runs on a machine with no GPU.
#include <math.h>

#include <vector>

#include "backend.h"
#include "numerics.h"

namespace gn {

gatednorm_status cpu_rmsnorm_gated(const RmsnormGatedProblem &p) {
    const int64_t D = p.dim;
    const int xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), os = dtype_size(p.out.dtype);
    const int ws = dtype_size(p.weight_dtype);
    const bool has_z = p.z.data != nullptr;

    // Per-thread row buffers that only ever grow: no heap traffic per call (host calls on
    // tiny tensors are dominated by fixed costs).
    thread_local std::vector<float> w, u, g;
    if (w.size() < size_t(D)) {
        w.resize(D);
        u.resize(D);
        g.resize(D);
    }
    for (int64_t c = 0; c < D; ++c)
        w[c] = load_as_f32(static_cast<const char *>(p.weight) + c * ws, p.weight_dtype) + p.weight_offset;

    for (int64_t t = 0; t < p.tokens; ++t) {
        for (int64_t h = 0; h < p.heads; ++h) {
            const char *x = p.x.data + (t * p.x.stride_t + h * p.x.stride_h) * xs;
            const char *z = has_z ? p.z.data + (t * p.z.stride_t + h * p.z.stride_h) * zs : nullptr;
            char *out = p.out.data + (t * p.out.stride_t + h * p.out.stride_h) * os;
            // Read the whole row before writing: out may alias x or z.  The sum of squares
            // is kept in double: a sequential fp32 sum over long rows would drift further
            // from the reference than the GPU's tree reduction does.
            double ss = 0.0;
            for (int64_t c = 0; c < D; ++c) {
                u[c] = load_as_f32(x + c * xs, p.x.dtype);
                g[c] = has_z ? activate(load_as_f32(z + c * zs, p.z.dtype), p.activation) : 1.0f;
                if (has_z && !p.norm_before_gate) u[c] *= g[c];
                ss += double(u[c]) * double(u[c]);
            }
            const float rstd = 1.0f / sqrtf(float(ss / double(D)) + p.eps);
            for (int64_t c = 0; c < D; ++c) {
                float y = u[c] * rstd * w[c];
                if (has_z && p.norm_before_gate) y *= g[c];
                store_from_f32(out + c * os, p.out.dtype, y);
            }
        }
    }
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
