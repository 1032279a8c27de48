// CPU backend of W4A16: the reference GEMM (docs/ops.md section 4) on the PLAIN layout or on
// a TILED buffer of any target, and the host prepack.  The weight is dequantized once per
// call with the one rounding rule of hip/numerics.h (w4a16_dequant_bits), then each output
// is an fp32 sum of a16 * w16 (+ bias) rounded once.  TILED weights are read back through
// the same index functions (hip/w4a16_layout.h) the GPU kernels are written against, so a
// host prepack followed by a host GEMM tests the layout itself.
#include <string.h>

#include <vector>

#include "backend.h"
#include "cpu_pool.h"
#include "numerics.h"
#include "w4a16_layout.h"

namespace gn {

namespace {

W4Plain plain_of(const W4a16Weight &w) {
    W4Plain p;
    p.q = w.q;
    p.q_sn = w.q_sn;
    p.s = static_cast<const char *>(w.s);
    p.s_dt = w.s_dtype;
    p.s_sn = w.s_sn;
    p.s_sg = w.s_sg;
    p.z = w.z;
    p.z_sn = w.z_sn;
    p.z_sg = w.z_sg;
    p.n = w.n;
    p.k = w.k;
    p.group = w.group;
    return p;
}

// w16 of every weight as fp32 (exact), [N][K].
void dequantize(const W4a16Weight &w, int dt, std::vector<float> *out) {
    const int64_t N = w.n, K = w.k, G = w.group;
    out->resize(size_t(N * K));
    if (w.layout == GATEDNORM_W4A16_LAYOUT_PLAIN) {
        const W4Plain p = plain_of(w);
        cpu_parallel_for(N, K * 4, [&](int64_t n0, int64_t n1) {
            for (int64_t n = n0; n < n1; ++n) {
                float *row = out->data() + n * K;
                for (int64_t gi = 0; gi < K / G; ++gi) {
                    const uint16_t s16 = w4a16_scale_bits(w4_plain_scale(p, n, gi), dt);
                    const int z = w4_plain_zero(p, n, gi);
                    for (int64_t k = gi * G; k < (gi + 1) * G; ++k)
                        row[k] = w4a16_half_to_f32(w4a16_dequant_bits(w4_plain_code(p, n, k), z, s16, dt), dt);
                }
            }
        });
        return;
    }
    W4Tiled t;
    w4_tiled_geometry(N, K, G, w.symmetric, &t);  // validated by the API
    cpu_parallel_for(N, K * 8, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
            float *row = out->data() + n * K;
            const int h = int(n % kW4TileN) >> 3;
            for (int64_t k = 0; k < K; ++k) {
                // The offset first, then the shift it sets: in one expression GCC read `shift`
                // before the call wrote it (found by tests/fuzz/fuzz_abi.c under UBSan).
                int shift = 0;
                const int64_t off = w4_code_offset(t, n, k, &shift);
                const int q = (w.tiled[off] >> shift) & 0xf;
                uint16_t e[4];
                memcpy(e, w.tiled + w4_entry_offset(t, n, w4_group_of(t, k)), size_t(t.entry_bytes));
                const int z = w.symmetric ? 8 : int4_magic_code(e[2 + h]);
                row[k] = w4a16_half_to_f32(w4a16_dequant_bits(q, z, e[h], dt), dt);
            }
        }
    });
}

}  // namespace

gatednorm_status cpu_w4a16_gemm(const W4a16GemmProblem &p) {
    note_kernel("cpu");
    const int64_t N = p.w.n, K = p.w.k, M = p.m;
    const int dt = p.a_dtype;
    std::vector<float> w16;
    dequantize(p.w, dt, &w16);
    const int os = dtype_size(p.out_dtype), bs = dtype_size(p.bias_dtype);
    // Outputs [m0, m1) x [n0, n1); each output is the same sequence of operations whoever
    // computes it, so the split (rows of M, or column blocks of N when M is small) never
    // changes a bit.
    auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
        thread_local std::vector<float> a;
        if (a.size() < size_t(K)) a.resize(size_t(K));
        for (int64_t m = m0; m < m1; ++m) {
            const char *arow = static_cast<const char *>(p.a) + m * p.a_sm * 2;
            for (int64_t k = 0; k < K; ++k) a[k] = load_as_f32(arow + k * 2, dt);
            char *orow = static_cast<char *>(p.out) + m * p.out_sm * os;
            for (int64_t n = n0; n < n1; ++n) {
                const float *wr = w16.data() + n * K;
                // fp32 sums in four lanes (the contract allows any order; docs/w4a16.md bounds it)
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                int64_t k = 0;
                for (; k + 4 <= K; k += 4)
                    for (int l = 0; l < 4; ++l) acc[l] += a[k + l] * wr[k + l];
                for (; k < K; ++k) acc[0] += a[k] * wr[k];
                float y = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                if (p.bias) y += load_as_f32(static_cast<const char *>(p.bias) + n * bs, p.bias_dtype);
                store_from_f32(orow + n * os, p.out_dtype, y);
            }
        }
    };
    if (M >= 2 * int64_t(cpu_num_threads()))
        cpu_parallel_for(M, N * K, [&](int64_t m0, int64_t m1) { block(m0, m1, 0, N); });
    else
        cpu_parallel_for(N, M * K, [&](int64_t n0, int64_t n1) { block(0, M, n0, n1); });
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status cpu_w4a16_prepack(const W4a16PrepackProblem &p) {
    W4Tiled t;
    w4_tiled_geometry(p.w.n, p.w.k, p.w.group, p.w.symmetric, &t);  // validated by the API
    const W4Plain w = plain_of(p.w);
    for (int64_t nt = 0; nt < t.ntiles; ++nt)
        for (int64_t kc = 0; kc < t.kchunks; ++kc)
            for (int lane = 0; lane < 32; ++lane) {
                uint32_t words[4];
                w4_pack_lane(w, t, nt, kc, lane, words);
                memcpy(p.packed + (nt * t.kchunks + kc) * kW4TileBytes + lane * 16, words, 16);
            }
    for (int64_t nt = 0; nt < t.ntiles; ++nt)
        for (int64_t gi = 0; gi < t.ngroups; ++gi)
            for (int g = 0; g < 8; ++g) {
                uint16_t e[4];
                w4_pack_entry(w, t, nt, gi, g, p.dtype, e);
                memcpy(p.packed + t.weight_bytes + ((nt * t.ngroups + gi) * 8 + g) * t.entry_bytes, e, size_t(t.entry_bytes));
            }
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
