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

// Rows up to this long keep their buffers (and the widened weight) on the stack: a small call
// touches no heap and no thread-local storage.
constexpr int64_t kStackRow = 512;

// The common case, fused: x, z and out all bf16 (rows contiguous along D, as every row is).
// Per element the same operations in the same order as the generic loop below (load, gate,
// u * act(z) when gating first, the 8-lane double sum of squares, u * rstd * w * g, round
// to bf16), in two passes over the row instead of six, with the activation and the gate
// order as template arguments so that each pass is one branch-free loop.
struct Bf16Rows {
    const char *x, *z;
    char *out;
    int64_t xt, xh, zt, zh, ot, oh;  // strides in bytes
    int64_t H, D;
    const float *w;
    float eps;
};

template <int Act, bool NormBeforeGate>
__attribute__((always_inline)) inline void bf16_rows(const Bf16Rows &a, int64_t r0, int64_t r1, float *u, float *g) {
    const int64_t D = a.D;
    const float *const w = a.w;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = r / a.H, h = r % a.H;
        const uint16_t *x = reinterpret_cast<const uint16_t *>(a.x + t * a.xt + h * a.xh);
        const uint16_t *z = reinterpret_cast<const uint16_t *>(a.z + t * a.zt + h * a.zh);
        uint16_t *out = reinterpret_cast<uint16_t *>(a.out + t * a.ot + h * a.oh);
        // The whole row is read before any of it is written: out may alias x or z.
        for (int64_t c = 0; c < D; ++c) {
            const float zf = f32_from_bits(uint32_t(z[c]) << 16);
            const float s = sigmoid(zf);
            const float gc = Act == kSigmoid ? s : zf * s;
            const float uc = f32_from_bits(uint32_t(x[c]) << 16);
            g[c] = gc;
            u[c] = NormBeforeGate ? uc : uc * gc;
        }
        const double ss = sum_squares(u, D);
        const float rstd = 1.0f / sqrtf(float(ss / double(D)) + a.eps);
        if (NormBeforeGate)
            for (int64_t c = 0; c < D; ++c) out[c] = f32_to_bf16(u[c] * rstd * w[c] * g[c]);
        else
            for (int64_t c = 0; c < D; ++c) out[c] = f32_to_bf16(u[c] * rstd * w[c]);
    }
}

// Compiled three times: AVX-512 (512-bit vectors), AVX2 and the baseline, picked once by
// what the CPU supports.  No FMA in any (-ffp-contract=off) and only IEEE operations, so all
// give the same bits.
__attribute__((always_inline)) inline void bf16_rows_any(const Bf16Rows &a, int act, bool nbg, int64_t r0, int64_t r1,
                                                         float *u, float *g) {
    if (act == kSigmoid) {
        if (nbg) bf16_rows<kSigmoid, true>(a, r0, r1, u, g);
        else bf16_rows<kSigmoid, false>(a, r0, r1, u, g);
    } else {
        if (nbg) bf16_rows<kSilu, true>(a, r0, r1, u, g);
        else bf16_rows<kSilu, false>(a, r0, r1, u, g);
    }
}

using Bf16RowsFn = void (*)(const Bf16Rows &, int, bool, int64_t, int64_t, float *, float *);

void bf16_rows_base(const Bf16Rows &a, int act, bool nbg, int64_t r0, int64_t r1, float *u, float *g) {
    bf16_rows_any(a, act, nbg, r0, r1, u, g);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(GN_NO_CPU_CLONES)
__attribute__((target("avx2")))
void bf16_rows_avx2(const Bf16Rows &a, int act, bool nbg, int64_t r0, int64_t r1, float *u, float *g) {
    bf16_rows_any(a, act, nbg, r0, r1, u, g);
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
void bf16_rows_avx512(const Bf16Rows &a, int act, bool nbg, int64_t r0, int64_t r1, float *u, float *g) {
    bf16_rows_any(a, act, nbg, r0, r1, u, g);
}
// short_rows: for rows shorter than 16 elements, which the 512-bit clone would run in its
// scalar remainder loops; the AVX2 clone covers 8 of them in one vector step.
Bf16RowsFn pick_bf16_rows(bool short_rows) {
    __builtin_cpu_init();
    if (!short_rows && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return bf16_rows_avx512;
    if (__builtin_cpu_supports("avx2")) return bf16_rows_avx2;
    return bf16_rows_base;
}
#else
Bf16RowsFn pick_bf16_rows(bool) { return bf16_rows_base; }
#endif

const Bf16RowsFn bf16_rows_dispatch = pick_bf16_rows(false);
const Bf16RowsFn bf16_rows_dispatch_short = pick_bf16_rows(true);

}  // namespace

gatednorm_status cpu_rmsnorm_gated(const RmsnormGatedProblem &p) {
    note_kernel("cpu");
    const int64_t D = p.dim, H = p.heads;
    const int xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), os = dtype_size(p.out.dtype);
    const int ws = dtype_size(p.weight_dtype);
    const bool has_z = p.z.data != nullptr;

    float wstack[kStackRow];
    std::vector<float> wv(static_cast<size_t>(D <= kStackRow ? 0 : D));
    float *const w = D <= kStackRow ? wstack : wv.data();
    for (int64_t c = 0; c < D; ++c)
        w[c] = load_as_f32(static_cast<const char *>(p.weight) + c * ws, p.weight_dtype) + p.weight_offset;

    if (has_z && p.x.dtype == kBF16 && p.z.dtype == kBF16 && p.out.dtype == kBF16) {
        const Bf16Rows a = {p.x.data, p.z.data, p.out.data,
                            p.x.stride_t * 2, p.x.stride_h * 2, p.z.stride_t * 2, p.z.stride_h * 2,
                            p.out.stride_t * 2, p.out.stride_h * 2, H, D, w, p.eps};
        const int act = p.activation;
        const bool nbg = p.norm_before_gate;
        auto rows = [&](int64_t r0, int64_t r1) {
            if (D <= kStackRow) {
                float u[kStackRow], g[kStackRow];
                (D < 16 ? bf16_rows_dispatch_short : bf16_rows_dispatch)(a, act, nbg, r0, r1, u, g);
            } else {
                bf16_rows_dispatch(a, act, nbg, r0, r1, row_buffer(0, D), row_buffer(1, D));
            }
        };
        cpu_parallel_for(p.tokens * H, D * 4, rows);
        return GATEDNORM_STATUS_SUCCESS;
    }

    auto rows = [&](int64_t r0, int64_t r1) {
        float us[kStackRow], gs[kStackRow], ys[kStackRow];
        const bool small = D <= kStackRow;
        float *u = small ? us : row_buffer(0, D), *g = small ? gs : row_buffer(1, D), *y = small ? ys : row_buffer(2, D);
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t t = r / H, h = r % H;
            const char *x = p.x.data + (t * p.x.stride_t + h * p.x.stride_h) * xs;
            const char *z = has_z ? p.z.data + (t * p.z.stride_t + h * p.z.stride_h) * zs : nullptr;
            // The whole row is read before any of it is written: out may alias x or z.
            gated_row_f32(x, p.x.dtype, z, p.z.dtype, D, p.activation, p.norm_before_gate, w, p.eps, u, g, y);
            store_row_f32(p.out.data + (t * p.out.stride_t + h * p.out.stride_h) * os, p.out.dtype, D, y);
        }
    };
    cpu_parallel_for(p.tokens * H, D * (has_z ? 4 : 1), rows);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
