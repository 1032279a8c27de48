// A/B of W4A16 decode kernels on one GPU, for NOTES.md / docs/perf-log.md: the library's
// register-batch decode kernel at its knobs (WN col tiles a warp, U chunks a batch, ACC
// accumulator sets: independent mma chains), and the streaming experiment of runs 40-42 (a
// cp.async ring a warp: STAGES chunks in flight, ks warps a col tile, split-K across blocks)
// with its diagnostics: the same access pattern with loads only (the memory system's ceiling
// for it) and compute only (the issue-bound floor), at the issue's shapes, M = 1 and 16. Each
// variant is timed as the benchmark times the library: a CUDA graph of >= 20 launches over
// rotated weight copies (>= 2x L2 per replay), median of 15 replays.  Before it is timed, each
// variant's result (bf16, on a NaN-poisoned output) is compared with a naive reference kernel
// that reads the tiled layout through w4a16_layout.h's own index functions (fp32 sums: a
// variant may differ by summation order only, so <= 2 bf16 ulps + 1e-3 absolute); the exit
// status is 1 if any differs.  Weight bytes: codes + scale entries (what "% of copy" counts),
// against a copy kernel's bandwidth (read + write) measured in the same run. Not part of the
// library.  Modes (runs 56-59): `gemv` (M = 1: the library's w4a16_gemv_kernel at its block
// sizes and with split-K, beside the decode kernel's builds and run 65's leaner loop
// `lean.gemv`), `lean` (M = 1 and 16: the library's lean loop, two 8-row blocks at M = 16,
// with its trip count at run time and compiled in, and with two col tiles a warp, beside
// the gemv and decode builds), `gemv-modes` (three numerics
// modes of a leaner decode loop: the library's, the scale after the mma, no dequantization),
// `bulk` (the gemv loop fed by TMA bulk copies; slower), `ring` (run 60: a persistent grid
// streaming col tiles through a ring of bulk-copy stages, and its loads only; slower),
// `persist` (run 90: the lean loop on a persistent grid prefetching across col tiles; even),
// `fixed` (run 122: the lean kernel's parts alone, where the small shapes' fixed cost goes).
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include \
//        -Ipybind_free_api/src scripts/tune_w4a16.cu -o /tmp/tune_w4 && /tmp/tune_w4 [quick | gemv | gemv-modes | bulk | ring | lean | lean-shape | persist | fixed | act16 | rows | only KxN M NAME KS [MODE]]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tuner_common.h"
#include "w4a16_kernels.h"


using namespace gn;

__device__ uint32_t hash32(uint64_t i) {
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return uint32_t(x);
}

// Random codes; scale entries {s_g, s_g8, base|z_g, base|z_g8} with s in [1/64, 1/8] (bf16).
__global__ void fill_weight(uint8_t *w, W4Tiled t, uint64_t seed) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < t.weight_bytes / 4) {
        reinterpret_cast<uint32_t *>(w)[i] = hash32(seed * 0x100000000ull + uint64_t(i));
        return;
    }
    const int64_t e = i - t.weight_bytes / 4;  // one 8-byte entry each
    if (e >= t.ntiles * t.ngroups * 8) return;
    const uint32_t h = hash32(seed * 0x100000000ull + 0x80000000ull + uint64_t(e));
    uint16_t v[4];
    for (int hh = 0; hh < 2; ++hh) {
        const float s = (1.0f + float((h >> (8 * hh)) & 7)) / 64.0f;
        v[hh] = uint16_t(__float_as_uint(s) >> 16);
        v[2 + hh] = uint16_t(int4_magic_base(kBF16) | ((h >> (16 + 4 * hh)) & 15));
    }
    uint32_t *dst = reinterpret_cast<uint32_t *>(w + t.weight_bytes + e * 8);
    dst[0] = uint32_t(v[0]) | (uint32_t(v[1]) << 16);
    dst[1] = uint32_t(v[2]) | (uint32_t(v[3]) << 16);
}

__global__ void fill_act(uint16_t *a, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) a[i] = uint16_t(__float_as_uint((float(hash32(i + 7) & 0xffff) / 32768.0f) - 1.0f) >> 16);
}

// out[m, n] = sum_k a[m, k] * (q - z) * s, read through the layout's index functions.
__global__ void reference_kernel(const uint8_t *w, W4Tiled t, const uint16_t *a, int m_rows, float *out) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= int64_t(m_rows) * t.n) return;
    const int m = int(i / t.n), n = int(i % t.n);
    float acc = 0.0f;
    for (int64_t k = 0; k < t.k; ++k) {
        int shift;
        const int code = (w[w4_code_offset(t, n, k, &shift)] >> shift) & 15;
        const uint16_t *ent = reinterpret_cast<const uint16_t *>(w + w4_entry_offset(t, n, w4_group_of(t, k)));
        const int h = (n % kW4TileN) >> 3;
        const float s = __uint_as_float(uint32_t(ent[h]) << 16);
        const int z = int4_magic_code(ent[2 + h]);
        // (q - z) * s is exact in bf16 here (s has 3 significant bits): no rounding rule needed
        const float wv = float(code - z) * s;
        acc += __uint_as_float(uint32_t(a[int64_t(m) * t.k + k]) << 16) * wv;
    }
    out[i] = acc;
}

__global__ void copy_kernel(const uint4 *src, uint4 *dst, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) dst[i] = src[i];
}

// ---- the streaming experiment (runs 40-42, not the library's): a warp streams one col
// tile's chunks through a ring of cp.async stages in shared memory (weights, scales and
// activations), ks warps a col tile splitting K.  Correct (every variant matched the
// reference) but slower than the library's register-batch kernel at every shape and M.
// cp.async (sm_80+): 16 or 8 bytes global -> shared, in flight without holding registers;
// a copy not `ok` zero-fills (nothing is read).  .cg for the weights (read once: L2 only),
// .ca for activations and scales (every warp of the GPU re-reads them: L1 keeps them).
__device__ __forceinline__ uint32_t w4_smem_addr(const void *p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void w4_cp_async16_cg(void *dst, const void *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(w4_smem_addr(dst)), "l"(src) : "memory");
#else
    (void)dst; (void)src;
    __trap();
#endif
}
// (the .ca copies, commit and wait: the library's w4_cp_async_ca / _commit / _wait, hip/w4a16_kernels.h)

constexpr int kW4StreamWarps = 8;
constexpr int kW4StreamThreads = kW4StreamWarps * 32;

// One stage of a warp's ring: everything one k chunk of one col tile needs, lane-major so
// that every lane reads back only the bytes it copied itself (no warp sync: a lane's
// cp.async.wait_group covers its own copies).  ROWS activation rows are staged (the
// smallest power of two >= M); lane 4 g + t copies row g's k = 16 t .. 16 t + 15.
template <bool ZP, int ROWS>
struct W4Stage {
    static constexpr int kEntry = ZP ? 8 : 4;
    static constexpr int kWeights = 0, kScales = kW4TileBytes, kActs = kScales + 32 * kEntry;
    static constexpr int kBytes = kActs + ROWS * kW4TileK * 2;
};

template <bool ZP, int ROWS, int STAGES>
constexpr int w4_stream_smem_bytes() { return kW4StreamWarps * STAGES * W4Stage<ZP, ROWS>::kBytes; }

// grid: (ceil(ntiles / (8 / ks)), nsplit); 8 warps a block, `ks` warps per col tile.  Each
// warp streams its col tile's chunks of its K range through a ring of STAGES stages
// (STAGES chunks in flight a warp, no registers held for them), so the bytes in flight an
// SM scale with resident warps x STAGES rather than with the registers a warp can spare.
// The ks partial sums of a col tile are added in warp order (deterministic), then either
// rounded into out or, with split-K (nsplit > 1), written as the split's fp32 partial.
template <int DT, bool ZP, int ROWS, int STAGES>
__global__ void __launch_bounds__(kW4StreamThreads) w4a16_stream_kernel(const W4a16Args p, int ks) {
    static_assert(ROWS == 1 || ROWS == 2 || ROWS == 4 || ROWS == 8 || ROWS == 16, "staged rows");
    using Stage = W4Stage<ZP, ROWS>;
    constexpr int MT = ROWS > 8 ? 2 : 1;  // 8-row halves of the mma's B operand
    extern __shared__ __align__(16) uint8_t w4_ring[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ct = blockIdx.x * (kW4StreamWarps / ks) + warp / ks, kpart = warp % ks;
    const int split = blockIdx.y, nsplit = gridDim.y;
    uint8_t *ring = w4_ring + warp * STAGES * Stage::kBytes;
    int c_lo, c_hi, lo, hi;
    w4_split_range(0, p.kchunks, split, nsplit, &c_lo, &c_hi);
    w4_split_range(c_lo, c_hi, kpart, ks, &lo, &hi);
    if (ct >= p.ntiles) hi = lo;  // past the last col tile: no chunks, but the block's sync below

    const uint8_t *wsrc = p.w + int64_t(ct) * p.kchunks * kW4TileBytes + lane * 16;
    const uint8_t *ssrc = p.se + (int64_t(ct) * p.ngroups * 8 + g) * Stage::kEntry;
    auto issue = [&](int kc, uint8_t *st) {
        const int k0 = kc * kW4TileK + 16 * t;
        w4_cp_async16_cg(st + Stage::kWeights + lane * 16, wsrc + int64_t(kc) * kW4TileBytes);
        w4_cp_async_ca<Stage::kEntry, true>(w4_smem_addr(st + Stage::kScales + lane * Stage::kEntry),
                                            ssrc + int64_t(k0 >> p.gshift) * 8 * Stage::kEntry, true);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int r = g + 8 * mt;
            if (r < ROWS) {  // absent rows and k >= K: zeros (a padded weight is 0, and 0 * NaN is not)
                const bool real = r < p.m && k0 < p.k;
                const char *src = p.a + (real ? int64_t(r) * p.a_sm + int64_t(k0) * 2 : 0);
                uint8_t *dst = st + Stage::kActs + r * (kW4TileK * 2) + t * 32;
                w4_cp_async_ca<16>(w4_smem_addr(dst), src, real);
                w4_cp_async_ca<16>(w4_smem_addr(dst + 16), src + (real ? 16 : 0), real);
            }
        }
    };

    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
        if (lo + s < hi) issue(lo + s, ring + s * Stage::kBytes);
        w4_cp_async_commit();  // empty groups keep the count uniform
    }
    int slot = 0;
    for (int kc = lo; kc < hi; ++kc) {
        w4_cp_async_wait<STAGES - 1>();  // chunk kc's group (the oldest) has landed
        uint8_t *st = ring + slot * Stage::kBytes;
        const uint4 wq = *reinterpret_cast<const uint4 *>(st + Stage::kWeights + lane * 16);
        W4Scale<DT, ZP> sc;
        if constexpr (ZP) {
            const uint2 v = *reinterpret_cast<const uint2 *>(st + Stage::kScales + lane * 8);
            sc.raw_s = v.x;
            sc.raw_z = v.y;
        } else {
            sc.raw_s = *reinterpret_cast<const uint32_t *>(st + Stage::kScales + lane * 4);
        }
        uint32_t act[MT][8];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int r = g + 8 * mt;
            uint4 a_lo = make_uint4(0u, 0u, 0u, 0u), a_hi = a_lo;
            if (r < ROWS) {
                const uint4 *src = reinterpret_cast<const uint4 *>(st + Stage::kActs + r * (kW4TileK * 2) + t * 32);
                a_lo = src[0];
                a_hi = src[1];
            }
            act[mt][0] = a_lo.x; act[mt][1] = a_lo.y; act[mt][2] = a_lo.z; act[mt][3] = a_lo.w;
            act[mt][4] = a_hi.x; act[mt][5] = a_hi.y; act[mt][6] = a_hi.z; act[mt][7] = a_hi.w;
        }
        w4_chunk_mma_rows<DT, ZP, MT>(acc, wq, sc, act);
        // Refill this slot only after its values were consumed above (a lane reads only what it copied).
        if (kc + STAGES < hi) issue(kc + STAGES, st);
        w4_cp_async_commit();
        slot = slot + 1 == STAGES ? 0 : slot + 1;
    }
    w4_cp_async_wait<0>();

    // The warp's partial sums into its own ring (no other warp touches it), then the first
    // warp of each col tile adds its ks warps' partials in warp order.
    // acc[mt][r] is out[8 mt + 2 t + (r & 1), 16 ct + g + 8 (r >> 1)]
    float *red = reinterpret_cast<float *>(ring);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) red[(mt * 4 + r) * 32 + lane] = acc[mt][r];
    __syncthreads();
    if (kpart != 0 || ct >= p.ntiles) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            float s = 0.0f;
            for (int w = 0; w < ks; ++w)
                s += reinterpret_cast<const float *>(w4_ring + (warp + w) * STAGES * Stage::kBytes)[(mt * 4 + r) * 32 + lane];
            w4_emit(p, split, nsplit, 8 * mt + 2 * t + (r & 1), 16 * ct + g + 8 * (r >> 1), s);
        }
}

// ---- diagnostics of the streaming experiment
// MODE 0: the streaming kernel's work; 1: loads only (the ring's words XORed, no dequant or
// mma): the access pattern's own ceiling; 2: compute only (the first STAGES chunks loaded,
// then every chunk computed from the ring without refills): the issue-bound floor.
// INTERLEAVE: warp kpart takes chunks kpart, kpart + ks, ... (the block's in-flight chunks
// one contiguous window) instead of a contiguous range a warp.
template <int STAGES, int MODE, bool INTERLEAVE>
__global__ void __launch_bounds__(kW4StreamThreads) diag_stream_kernel(const W4a16Args p, int ks) {
    using Stage = W4Stage<true, 1>;
    constexpr int DT = kBF16;
    extern __shared__ __align__(16) uint8_t w4_ring[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ct = blockIdx.x * (kW4StreamWarps / ks) + warp / ks, kpart = warp % ks;
    uint8_t *ring = w4_ring + warp * STAGES * Stage::kBytes;
    int lo, hi, step;
    if (INTERLEAVE) {
        lo = kpart;
        hi = p.kchunks;
        step = ks;
    } else {
        w4_split_range(0, p.kchunks, kpart, ks, &lo, &hi);
        step = 1;
    }
    if (ct >= p.ntiles) hi = lo;
    const uint8_t *wsrc = p.w + int64_t(ct) * p.kchunks * kW4TileBytes + lane * 16;
    const uint8_t *ssrc = p.se + (int64_t(ct) * p.ngroups * 8 + g) * Stage::kEntry;
    auto issue = [&](int kc, uint8_t *st) {
        const int k0 = kc * kW4TileK + 16 * t;
        w4_cp_async16_cg(st + Stage::kWeights + lane * 16, wsrc + int64_t(kc) * kW4TileBytes);
        w4_cp_async_ca<Stage::kEntry, true>(w4_smem_addr(st + Stage::kScales + lane * Stage::kEntry), ssrc + int64_t(k0 >> p.gshift) * 8 * Stage::kEntry, true);
        if (g == 0) {
            const bool real = k0 < p.k;
            const char *src = p.a + (real ? int64_t(k0) * 2 : 0);
            uint8_t *dst = st + Stage::kActs + t * 32;
            w4_cp_async_ca<16>(w4_smem_addr(dst), src, real);
            w4_cp_async_ca<16>(w4_smem_addr(dst + 16), src + (real ? 16 : 0), real);
        }
    };
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    uint32_t x = 0;
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
        if (lo + s * step < hi) issue(lo + s * step, ring + s * Stage::kBytes);
        w4_cp_async_commit();
    }
    int slot = 0;
    for (int kc = lo; kc < hi; kc += step) {
        w4_cp_async_wait<STAGES - 1>();
        uint8_t *st = ring + slot * Stage::kBytes;
        const uint4 wq = *reinterpret_cast<const uint4 *>(st + Stage::kWeights + lane * 16);
        if (MODE == 1) {
            x ^= wq.x ^ wq.y ^ wq.z ^ wq.w;
        } else {
            W4Scale<DT, true> sc;
            const uint2 v = *reinterpret_cast<const uint2 *>(st + Stage::kScales + lane * 8);
            sc.raw_s = v.x;
            sc.raw_z = v.y;
            uint32_t act[8];
            uint4 a_lo = make_uint4(0u, 0u, 0u, 0u), a_hi = a_lo;
            if (g == 0) {
                const uint4 *src = reinterpret_cast<const uint4 *>(st + Stage::kActs + t * 32);
                a_lo = src[0];
                a_hi = src[1];
            }
            act[0] = a_lo.x; act[1] = a_lo.y; act[2] = a_lo.z; act[3] = a_lo.w;
            act[4] = a_hi.x; act[5] = a_hi.y; act[6] = a_hi.z; act[7] = a_hi.w;
            const uint32_t slo = sc.s_lo(), shi = sc.s_hi(), zlo = sc.nz_lo(), zhi = sc.nz_hi();
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t word = w4_word(wq, j);
                const uint32_t a0 = w4_dequant2<DT>(word, zlo, slo);
                const uint32_t a1 = w4_dequant2<DT>(word >> 4, zhi, shi);
                const uint32_t a2 = w4_dequant2<DT>(word >> 8, zlo, slo);
                const uint32_t a3 = w4_dequant2<DT>(word >> 12, zhi, shi);
                w4_mma<DT>(acc, a0, a1, a2, a3, act[2 * j], act[2 * j + 1]);
            }
        }
        if (MODE != 2 && kc + STAGES * step < hi) issue(kc + STAGES * step, st);
        w4_cp_async_commit();
        slot = slot + 1 == STAGES ? 0 : slot + 1;
    }
    w4_cp_async_wait<0>();
    float *red = reinterpret_cast<float *>(ring);
    for (int r = 0; r < 4; ++r) red[r * 32 + lane] = acc[r] + (MODE == 1 ? float(x & 1) : 0.0f);
    __syncthreads();
    if (kpart != 0 || ct >= p.ntiles) return;
    for (int r = 0; r < 4; ++r) {
        float s = 0.0f;
        for (int w = 0; w < ks; ++w) s += reinterpret_cast<const float *>(w4_ring + (warp + w) * STAGES * Stage::kBytes)[r * 32 + lane];
        w4_emit(p, 0, 1, 2 * t + (r & 1), 16 * ct + g + 8 * (r >> 1), s);
    }
}

// A variant: how to launch it for (args, ks), whether its result is the GEMM's (checked).
struct Variant {
    std::string name;
    int ks;
    bool checked;
    std::function<void(const W4a16Args &, cudaStream_t)> launch;
};

template <typename K>
std::function<void(const W4a16Args &, cudaStream_t)> stream_launch(K kernel, int smem, int ks, int nsplit, int ntiles, int m, int n) {
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const unsigned blocks = unsigned((ntiles + kW4StreamWarps / ks - 1) / (kW4StreamWarps / ks));
    return [=](const W4a16Args &a, cudaStream_t s) {
        kernel<<<dim3{blocks, unsigned(nsplit), 1u}, kW4StreamThreads, smem, s>>>(a, ks);
        if (nsplit > 1) {
            const int64_t outs = int64_t(m) * n;
            w4a16_splitk_reduce_kernel<<<unsigned((outs + 255) / 256), 256, 0, s>>>(a, nsplit);
        }
    };
}

template <int ROWS, int S>
void add_stream(std::vector<Variant> &vs, int ntiles, int m, int n, bool sweep_split) {
    for (int ks = 1; ks <= kW4StreamWarps; ks *= 2)
        for (int nsplit = 1; nsplit <= (sweep_split && ks == kW4StreamWarps ? 4 : 1); nsplit *= 2)
            vs.push_back({"stream.S" + std::to_string(S) + (nsplit > 1 ? ".split" + std::to_string(nsplit) : ""), ks, true,
                          stream_launch(w4a16_stream_kernel<kBF16, true, ROWS, S>, w4_stream_smem_bytes<true, ROWS, S>(), ks, nsplit,
                                        ntiles, m, n)});
}

template <int S, int MODE, bool IL>
void add_diag(std::vector<Variant> &vs, int ntiles, int m, int n, const char *what) {
    for (int ks = 2; ks <= kW4StreamWarps; ks *= 2)
        vs.push_back({std::string(what) + ".S" + std::to_string(S) + (IL ? ".il" : ""), ks, MODE == 0,
                      stream_launch(diag_stream_kernel<S, MODE, IL>, w4_stream_smem_bytes<true, 1, S>(), ks, 1, ntiles, m, n)});
}

// The library's decode kernel at WN col tiles a warp, U chunks a batch, ACC accumulator
// sets and a launch bound of BPS blocks an SM (the library's plan, hip/w4a16.hip make_plan:
// WN 1 U 4 BPS 2 while one wave of two an SM holds the col tiles, WN 1 U 2 BPS 3 while one
// of three does, else WN 2 U 2, BPS 3 at M <= 8; ACC = 1; no split at these shapes).  Run
// 44: ACC = 2 / 4 within 1% of ACC = 1 (the mma chains are not the limit); ncu: 93
// registers hold 16 warps an SM, no eligible warp 37% of cycles.  Run 45: BPS 3 (80
// registers) gave the plan's middle band.
// A 1-D grid of col tiles: one row block, so M <= 16 (the tuner's M are 1 and 16; the
// library's grid at M 17..64 is col tiles x row blocks, hip/w4a16.hip launch_decode).
template <int MT, int WN, int U, int ACC = 1, int BPS = kW4DecodeBlocksPerSm>
void add_decode(std::vector<Variant> &vs, int ntiles) {
    const unsigned blocks = unsigned((ntiles + WN - 1) / WN);
    vs.push_back({"decode.WN" + std::to_string(WN) + ".U" + std::to_string(U) + (ACC > 1 ? ".A" + std::to_string(ACC) : "")
                      + (BPS != kW4DecodeBlocksPerSm ? ".B" + std::to_string(BPS) : ""), 0, true,
                  [=](const W4a16Args &a, cudaStream_t s) {
                      w4a16_decode_kernel<kBF16, true, MT, WN, U, ACC, BPS><<<blocks, kW4DecodeThreads, 0, s>>>(a);
                  }});
}

// The same at M 17..64 on the library's grid: ceil(ntiles / WN) col-tile groups x ceil(M /
// 16) row blocks, the row block varying fastest (hip/w4a16.hip launch_decode).
template <int WN, int U, int BPS>
void add_decode_rows(std::vector<Variant> &vs, int ntiles, int m) {
    const unsigned blocks = unsigned((ntiles + WN - 1) / WN * ((m + 15) / 16));
    vs.push_back({"decode.rows.WN" + std::to_string(WN) + ".U" + std::to_string(U) + ".B" + std::to_string(BPS), 0, true,
                  [=](const W4a16Args &a, cudaStream_t s) {
                      w4a16_decode_kernel<kBF16, true, 2, WN, U, 1, BPS><<<blocks, kW4DecodeThreads, 0, s>>>(a);
                  }});
}

// ---- run 56: a leaner decode kernel for M <= 8 (K % 64 == 0), three numerics modes.
// KS warps a col tile (8 / KS col tiles a block, each warp a contiguous K range: KS = 8 is
// the library's one col tile a block), U chunks a batch, double-buffered in registers as the
// library's.  Activations come from row min(g, M - 1) unconditionally: an absent row's
// column of the mma computes a copy of row M - 1, which is never emitted, so the loop has
// no per-lane branch and no zeroing.  MODE 0: the library's numerics (w16 = RNE((q - z) s)
// is the mma operand); MODE 1: the scale after the mma (each chunk's four mmas on the exact
// q - z into a zeroed set, then acc += s * set in fp32; needs G >= 64 so that a chunk lies in
// one group: 16 packed multiplies a chunk become 4 FFMA); MODE 2: the floor, base | q as the
// operand (one LOP3 a pair, no zero point, no scale: not the GEMM, unchecked).
template <int MODE, int KS, int U, int BPS>
__global__ void __launch_bounds__(256, BPS) gemv_kernel(const W4a16Args p) {
    constexpr int DT = kBF16;
    constexpr int CPB = 8 / KS;
    __shared__ float red[8][4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ct = blockIdx.x * CPB + warp / KS, kpart = warp % KS;
    int lo, hi;
    w4_split_range(0, p.kchunks, kpart, KS, &lo, &hi);
    if (ct >= p.ntiles) hi = lo;
    const uint8_t *wb = p.w + int64_t(ct) * p.kchunks * kW4TileBytes + lane * 16;
    const uint8_t *sb = p.se + (int64_t(ct) * p.ngroups * 8 + g) * 8;
    const char *ab = p.a + int64_t(min(g, p.m - 1)) * p.a_sm + 32 * t;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    uint4 wq[U];
    uint2 sq[U];
    auto load_batch = [&](int c) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = min(c + u, hi - 1);
            wq[u] = gn_load_b128_stream(wb + int64_t(kc) * kW4TileBytes, true);
            sq[u] = __ldg(reinterpret_cast<const uint2 *>(sb + int64_t((kc * kW4TileK + 16 * t) >> p.gshift) * 64));
        }
    };
    if (lo < hi) load_batch(lo);
    for (int c = lo; c < hi; c += U) {
        uint4 cw[U];
        uint2 cs[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            cw[u] = wq[u];
            cs[u] = sq[u];
        }
        if (c + U < hi) load_batch(c + U);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = c + u;
            if (kc >= hi) break;
            const uint4 *asrc = reinterpret_cast<const uint4 *>(ab + int64_t(kc) * kW4TileK * 2);
            const uint4 alo = __ldg(asrc), ahi = __ldg(asrc + 1);
            const uint32_t act[8] = {alo.x, alo.y, alo.z, alo.w, ahi.x, ahi.y, ahi.z, ahi.w};
            W4Scale<DT, true> sc;
            sc.raw_s = cs[u].x;
            sc.raw_z = cs[u].y;
            const uint32_t slo = MODE == 0 ? sc.s_lo() : W4Consts<DT>::kOne2, shi = MODE == 0 ? sc.s_hi() : W4Consts<DT>::kOne2;
            const uint32_t zlo = sc.nz_lo(), zhi = sc.nz_hi();
            float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            float(&dst)[4] = MODE == 1 ? part : acc;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t word = w4_word(cw[u], j);
                uint32_t a0, a1, a2, a3;
                if constexpr (MODE == 2) {
                    a0 = (word & 0x000f000fu) | W4Consts<DT>::kBase2;
                    a1 = ((word >> 4) & 0x000f000fu) | W4Consts<DT>::kBase2;
                    a2 = ((word >> 8) & 0x000f000fu) | W4Consts<DT>::kBase2;
                    a3 = ((word >> 12) & 0x000f000fu) | W4Consts<DT>::kBase2;
                } else if constexpr (MODE == 1) {
                    a0 = w4_fma2<DT>((word & 0x000f000fu) | W4Consts<DT>::kBase2, W4Consts<DT>::kOne2, zlo);
                    a1 = w4_fma2<DT>(((word >> 4) & 0x000f000fu) | W4Consts<DT>::kBase2, W4Consts<DT>::kOne2, zhi);
                    a2 = w4_fma2<DT>(((word >> 8) & 0x000f000fu) | W4Consts<DT>::kBase2, W4Consts<DT>::kOne2, zlo);
                    a3 = w4_fma2<DT>(((word >> 12) & 0x000f000fu) | W4Consts<DT>::kBase2, W4Consts<DT>::kOne2, zhi);
                } else {
                    a0 = w4_dequant2<DT>(word, zlo, slo);
                    a1 = w4_dequant2<DT>(word >> 4, zhi, shi);
                    a2 = w4_dequant2<DT>(word >> 8, zlo, slo);
                    a3 = w4_dequant2<DT>(word >> 12, zhi, shi);
                }
                w4_mma<DT>(dst, a0, a1, a2, a3, act[2 * j], act[2 * j + 1]);
            }
            if constexpr (MODE == 1) {
                const float s0 = __uint_as_float(cs[u].x << 16), s1 = __uint_as_float(cs[u].x & 0xffff0000u);
                acc[0] = fmaf(s0, part[0], acc[0]);
                acc[1] = fmaf(s0, part[1], acc[1]);
                acc[2] = fmaf(s1, part[2], acc[2]);
                acc[3] = fmaf(s1, part[3], acc[3]);
            }
        }
    }
    w4_gemv_finish<8, KS>(p, red, acc, warp, ct, kpart, 0, 1);
}
template <int MODE, int KS, int U, int BPS>
void add_gemv(std::vector<Variant> &vs, int ntiles) {
    const unsigned blocks = unsigned((ntiles + 8 / KS - 1) / (8 / KS));
    vs.push_back({"gemv.M" + std::to_string(MODE) + ".KS" + std::to_string(KS) + ".U" + std::to_string(U) + ".B" + std::to_string(BPS),
                  0, MODE != 2, [=](const W4a16Args &a, cudaStream_t s) { gemv_kernel<MODE, KS, U, BPS><<<blocks, 256, 0, s>>>(a); }});
}
template <int MODE>
void add_gemv_set(std::vector<Variant> &vs, int ntiles) {
    add_gemv<MODE, 8, 2, 3>(vs, ntiles);
    add_gemv<MODE, 8, 2, 4>(vs, ntiles);
    add_gemv<MODE, 8, 4, 2>(vs, ntiles);
    add_gemv<MODE, 8, 4, 3>(vs, ntiles);
    add_gemv<MODE, 4, 2, 3>(vs, ntiles);
    add_gemv<MODE, 4, 2, 4>(vs, ntiles);
    add_gemv<MODE, 4, 4, 3>(vs, ntiles);
    add_gemv<MODE, 2, 4, 3>(vs, ntiles);
    add_gemv<MODE, 2, 2, 4>(vs, ntiles);
}

// ---- run 65: the gemv loop on a diet (now the library's w4a16_gemv_lean_kernel, which
// tells what it changes), G = 128, added only where kchunks % (2 NW) == 0; MT = 2 for M 9..16
// (run 66).  Runs 66-67 also measured it widened to 4 chunks a batch: 0-29% slower at M = 1 and
// 6-35% at M = 16; and with an L2 prefetch hint 1-4 batches ahead: -4..+4%; both gone.
template <int MT, int NW, int BPS>
void add_lean_gemv(std::vector<Variant> &vs, int ntiles, int kchunks, int group) {
    if (group != 128 || kchunks % (2 * NW)) return;
    vs.push_back({"lean.gemv.MT" + std::to_string(MT) + ".NW" + std::to_string(NW) + ".B" + std::to_string(BPS), 0, true,
                  [=](const W4a16Args &a, cudaStream_t s) { w4a16_gemv_lean_kernel<kBF16, true, MT, NW, BPS, 0><<<unsigned(ntiles), NW * 32, 0, s>>>(a); }});
}

// ---- the lean loop with its trip count compiled in (the library's CPW > 0 builds since run
// 71, where this tuner's own copy measured 10-14% faster at M = 1 than the runtime count).
template <int MT, int NW, int BPS, int CPW>
void add_lean_full(std::vector<Variant> &vs, int ntiles, int kchunks, int group) {
    if (group != 128 || kchunks != NW * CPW) return;
    vs.push_back({"lean.full.MT" + std::to_string(MT) + ".NW" + std::to_string(NW) + ".B" + std::to_string(BPS) + ".CPW" + std::to_string(CPW), 0,
                  true, [=](const W4a16Args &a, cudaStream_t s) { w4a16_gemv_lean_kernel<kBF16, true, MT, NW, BPS, CPW><<<unsigned(ntiles), NW * 32, 0, s>>>(a); }});
}

// ---- two col tiles a warp in the lean loop (mode `lean`, for run 73): at M = 16 each col
// tile's block re-reads all 16 activation rows of its K range (at 4096x24576 1536 col tiles x
// 128 KB through L1 / L2 against 50 MB of weights; M = 16 costs 1.4x M = 1 where the loop's
// instructions grow ~10%).  Here a warp streams col tiles 2b and 2b + 1 over the same K
// range and dequantizes each against one load of the activations: half the activation
// loads and wavefronts a weight byte, twice the weight registers in flight.  Trip count
// compiled in (kchunks == NW CPW), even ntiles; bf16, asymmetric; same sums a col tile as the
// library's lean kernel (same K ranges, order and reduction), so the reference check holds.
template <int MT, int NW, int BPS, int CPW>
__global__ void __launch_bounds__(NW * 32, BPS) lean_wn2_kernel(const W4a16Args p) {
    constexpr int DT = kBF16, kEntry = W4Scale<DT, true>::kEntryBytes;
    __shared__ float red[NW][MT * 4][32];
    const int warp = threadIdx.x >> 5, ct0 = 2 * blockIdx.x, lo = warp * CPW;
    const uint8_t *wp[2], *sp[2];
    const char *ap[MT];
    float acc[2][MT][4];
    w4_lean_start<MT, kEntry>(p, ct0, lo, wp[0], sp[0], ap, acc[0]);
    w4_lean_start<MT, kEntry>(p, ct0 + 1, lo, wp[1], sp[1], ap, acc[1]);
    uint4 w[2][2];
    W4Scale<DT, true> sq[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        w[c][0] = gn_load_b128_stream_all(wp[c]);
        w[c][1] = gn_load_b128_stream_all(wp[c] + kW4TileBytes);
        sq[c].load_entry(sp[c]);
    }
#pragma unroll
    for (int i = 0; i < CPW; i += 2) {
        uint4 cw[2][2];
        W4Scale<DT, true> cs[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            cw[c][0] = w[c][0], cw[c][1] = w[c][1], cs[c] = sq[c];
            if (i + 2 < CPW) {
                w[c][0] = gn_load_b128_stream_all(wp[c] + (i + 2) * kW4TileBytes);
                w[c][1] = gn_load_b128_stream_all(wp[c] + (i + 3) * kW4TileBytes);
                sq[c].load_entry(sp[c] + (i + 2) / 2 * (8 * kEntry));
            }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            uint32_t b[MT][8];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const uint4 *src = reinterpret_cast<const uint4 *>(ap[mt] + (i + h) * (kW4TileK * 2));
                const uint4 alo = __ldg(src), ahi = __ldg(src + 1);
                b[mt][0] = alo.x, b[mt][1] = alo.y, b[mt][2] = alo.z, b[mt][3] = alo.w;
                b[mt][4] = ahi.x, b[mt][5] = ahi.y, b[mt][6] = ahi.z, b[mt][7] = ahi.w;
            }
#pragma unroll
            for (int c = 0; c < 2; ++c) w4_chunk_mma_rows<DT, true, MT>(acc[c], cw[c][h], cs[c], b);
        }
    }
    w4_gemv_finish<NW, NW, MT>(p, red, acc[0], warp, ct0, warp, 0, 1);
    __syncthreads();  // red is reused for the second col tile
    w4_gemv_finish<NW, NW, MT>(p, red, acc[1], warp, ct0 + 1, warp, 0, 1);
}
// ---- a persistent lean loop (mode `persist`, run 90): GRID blocks (at most BPS an SM, all
// resident) take col tiles ct, ct + GRID, ...; a warp's K range is the library's (CPW chunks
// from warp x CPW), and the loads of the next col tile's first batch are issued before the
// last batch of this one is computed, so a block's loads never stop at a col tile's end (the
// library's one-tile blocks drain their loads before the reduction and a new block starts
// cold).  Same K ranges, order and reduction a col tile as the library's lean kernel, so the
// same sums; the reduction buffer alternates between two halves so that the finishing warps'
// reads of tile i cannot meet another warp's writes of tile i + 2 (the barrier of tile i + 1 orders them).
// SEL: the prefetch unconditional, from a selected address (the last col tile re-reads its own
// first batch): which of the two forms ptxas fits without spills depends on the build.
// Run 90: 0.4-0.8% faster at 4096x24576 M = 1 (three rounds of col tiles), 1-5% slower where
// one round suffices, 10-22% slower at M = 16: not taken into the library.
template <int MT, int NW, int BPS, int CPW, bool SEL>
__global__ void __launch_bounds__(NW * 32, BPS) lean_persist_kernel(const W4a16Args p) {
    constexpr int DT = kBF16, kEntry = W4Scale<DT, true>::kEntryBytes;
    static_assert(CPW % 2 == 0, "whole 128-k groups a warp");
    __shared__ float red[2][NW][MT * 4][32];
    const int warp = threadIdx.x >> 5, lo = warp * CPW;
    int ct = blockIdx.x;
    if (ct >= p.ntiles) return;  // the whole block
    const uint8_t *wp, *sp;
    const char *ap[MT];
    float acc[MT][4];
    w4_lean_start<MT, kEntry>(p, ct, lo, wp, sp, ap, acc);
    const int64_t wstep = int64_t(gridDim.x) * p.kchunks * kW4TileBytes, sstep = int64_t(gridDim.x) * p.ngroups * 8 * kEntry;
    uint4 w0 = gn_load_b128_stream_all(wp), w1 = gn_load_b128_stream_all(wp + kW4TileBytes);
    W4Scale<DT, true> sq;
    sq.load_entry(sp);
    for (int it = 0;; ++it) {
        const bool more = ct + int(gridDim.x) < p.ntiles;
        // The activation pointers laundered each col tile: otherwise nvcc hoists the CPW
        // chunks' activation addresses (loop-invariant) out of the tile loop and spills them.
        const char *apl[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) asm volatile("mov.b64 %0, %1;" : "=l"(apl[mt]) : "l"(ap[mt]));
#pragma unroll
        for (int i = 0; i < CPW; i += 2) {
            const uint4 c0 = w0, c1 = w1;
            const W4Scale<DT, true> sc = sq;
            if (i + 2 < CPW) {
                w0 = gn_load_b128_stream_all(wp + (i + 2) * kW4TileBytes);
                w1 = gn_load_b128_stream_all(wp + (i + 3) * kW4TileBytes);
                sq.load_entry(sp + (i + 2) / 2 * (8 * kEntry));
            } else if constexpr (SEL) {  // the next col tile's first batch (past the last: this one's again, unused)
                const uint8_t *const wn = more ? wp + wstep : wp, *const sn = more ? sp + sstep : sp;
                w0 = gn_load_b128_stream_all(wn);
                w1 = gn_load_b128_stream_all(wn + kW4TileBytes);
                sq.load_entry(sn);
            } else if (more) {  // the next col tile's first batch
                w0 = gn_load_b128_stream_all(wp + wstep);
                w1 = gn_load_b128_stream_all(wp + wstep + kW4TileBytes);
                sq.load_entry(sp + sstep);
            }
            w4_lean_chunk<DT, true, MT>(acc, c0, sc, apl, i * (kW4TileK * 2));
            w4_lean_chunk<DT, true, MT>(acc, c1, sc, apl, (i + 1) * (kW4TileK * 2));
        }
        w4_gemv_finish<NW, NW, MT>(p, red[it & 1], acc, warp, ct, warp, 0, 1);
        if (!more) break;
        ct += int(gridDim.x);
        wp += wstep;
        sp += sstep;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
    }
}
// GRID: the blocks launched (at most BPS x SMs, so that all are resident).
template <int MT, int NW, int BPS, int CPW, bool SEL>
void add_lean_persist(std::vector<Variant> &vs, int ntiles, int kchunks, int group, int grid) {
    if (group != 128 || kchunks != NW * CPW || grid <= 0) return;
    grid = std::min(grid, ntiles);
    vs.push_back({"lean.persist.MT" + std::to_string(MT) + ".NW" + std::to_string(NW) + ".B" + std::to_string(BPS) + ".CPW" +
                      std::to_string(CPW) + (SEL ? ".sel" : "") + ".G" + std::to_string(grid),
                  0, true, [=](const W4a16Args &a, cudaStream_t s) { lean_persist_kernel<MT, NW, BPS, CPW, SEL><<<unsigned(grid), NW * 32, 0, s>>>(a); }});
}

template <int MT, int NW, int BPS, int CPW>
void add_lean_wn2(std::vector<Variant> &vs, int ntiles, int kchunks, int group) {
    if (group != 128 || kchunks != NW * CPW || ntiles % 2) return;
    vs.push_back({"lean.wn2.MT" + std::to_string(MT) + ".NW" + std::to_string(NW) + ".B" + std::to_string(BPS) + ".CPW" + std::to_string(CPW), 0,
                  true, [=](const W4a16Args &a, cudaStream_t s) { lean_wn2_kernel<MT, NW, BPS, CPW><<<unsigned(ntiles / 2), NW * 32, 0, s>>>(a); }});
}

// ---- where the small shapes' fixed cost goes (mode `fixed`, run 122).  At 256 col tiles the
// library's M = 1 time grows at the full ceiling a byte (run 119, H100: 4096x4096 5.24 us,
// 12288x4096 10.75), so 4096x4096 is ~2.9 us of bytes and ~2.3 us of fixed cost, where a copy
// of the same bytes has ~1 us.  The lean kernel's grid and addresses with parts taken away:
// WHAT 1 its weight and scale loads only (XORed), 2 no loads (the epilogue only), 3 the
// compute only (weights from registers, activations read as the library reads them), 4 an
// empty block; and a read-only grid-stride kernel over the same bytes (a copy's grid).
template <int NW, int BPS, int CPW, int WHAT>
__global__ void __launch_bounds__(NW * 32, BPS) lean_diag_kernel(const W4a16Args p) {
    constexpr int MT = 1, DT = kBF16, kEntry = W4Scale<DT, true>::kEntryBytes;
    if constexpr (WHAT == 4) {
        return;
    } else {
        __shared__ float red[NW][MT * 4][32];
        const int warp = threadIdx.x >> 5, ct = blockIdx.x, lo = warp * CPW;
        const uint8_t *wp, *sp;
        const char *ap[MT];
        float acc[MT][4];
        w4_lean_start<MT, kEntry>(p, ct, lo, wp, sp, ap, acc);
        if constexpr (WHAT == 1) {
            uint32_t x = 0;
#pragma unroll
            for (int i = 0; i < CPW; ++i) {
                const uint4 w = gn_load_b128_stream_all(wp + i * kW4TileBytes);
                x ^= w.x ^ w.y ^ w.z ^ w.w;
            }
#pragma unroll
            for (int i = 0; i < CPW; i += 2) {
                W4Scale<DT, true> sq;
                sq.load_entry(sp + i / 2 * (8 * kEntry));
                x ^= sq.raw_s ^ sq.raw_z;
            }
            acc[0][0] = __uint_as_float(x & 0x3fffffffu);
        } else if constexpr (WHAT == 3) {
            const uint32_t seed = threadIdx.x * 0x9E3779B9u;
            W4Scale<DT, true> sq;
            sq.raw_s = 0x3c003c00u;
            sq.raw_z = 0x43084308u;
#pragma unroll
            for (int i = 0; i < CPW; ++i) {
                const uint4 w = make_uint4(seed + i, seed ^ i, seed * (i + 3), seed + 7 * i);
                w4_lean_chunk<DT, true, MT>(acc, w, sq, ap, i * (kW4TileK * 2));
            }
        }
        w4_gemv_finish<NW, NW, MT>(p, red, acc, warp, ct, warp, 0, 1);
    }
}
template <int NW, int BPS, int CPW, int WHAT>
void add_lean_diag(std::vector<Variant> &vs, int ntiles, int kchunks, int group) {
    static const char *const kWhat[] = {"", "loads", "epilogue", "compute", "empty"};
    if (group != 128 || kchunks != NW * CPW) return;
    vs.push_back({std::string("diag.") + kWhat[WHAT] + ".NW" + std::to_string(NW) + ".B" + std::to_string(BPS) + ".CPW" + std::to_string(CPW), 0,
                  false, [=](const W4a16Args &a, cudaStream_t s) { lean_diag_kernel<NW, BPS, CPW, WHAT><<<unsigned(ntiles), NW * 32, 0, s>>>(a); }});
}
// ---- where M = 16's cost over M = 1 goes (mode `act16`, run 126).  At M = 16 a warp's chunk
// reads 2 KB of activations (16 rows x 64 k, through L1) against 512 bytes of weights, and
// every col tile's block reads all 16 rows of the whole K (at 4096x4096 256 blocks x 128 KB
// from L2).  The library's MT = 2 lean loop with the activations' source changed: WHAT 1 every
// chunk reads the warp's first chunk's activations (2 KB a warp, L1-resident after the first
// batch: the L2 -> SM traffic gone, the L1 wavefronts kept), WHAT 2 no activation loads (the
// mma's B operand from registers: loads and L1 wavefronts gone).  Sums differ (unchecked).
template <int NW, int BPS, int CPW, int WHAT>
__global__ void __launch_bounds__(NW * 32, BPS) lean_act_diag_kernel(const W4a16Args p) {
    constexpr int MT = 2, DT = kBF16, kEntry = W4Scale<DT, true>::kEntryBytes;
    __shared__ float red[NW][MT * 4][32];
    const int warp = threadIdx.x >> 5, ct = blockIdx.x, lo = warp * CPW;
    const uint8_t *wp, *sp;
    const char *ap[MT];
    float acc[MT][4];
    w4_lean_start<MT, kEntry>(p, ct, lo, wp, sp, ap, acc);
    uint4 w0 = gn_load_b128_stream_all(wp), w1 = gn_load_b128_stream_all(wp + kW4TileBytes);
    W4Scale<DT, true> sq;
    sq.load_entry(sp);
    uint32_t b[MT][8];
    if constexpr (WHAT == 2) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int k = 0; k < 8; ++k) b[mt][k] = 0x3c003c00u ^ (threadIdx.x * 0x9E3779B9u + 97u * k + 31u * mt);
    }
#pragma unroll
    for (int i = 0; i < CPW; i += 2) {
        const uint4 c0 = w0, c1 = w1;
        const W4Scale<DT, true> sc = sq;
        if (i + 2 < CPW) {
            w0 = gn_load_b128_stream_all(wp + (i + 2) * kW4TileBytes);
            w1 = gn_load_b128_stream_all(wp + (i + 3) * kW4TileBytes);
            sq.load_entry(sp + (i + 2) / 2 * (8 * kEntry));
        }
        if constexpr (WHAT == 1) {
            w4_lean_chunk<DT, true, MT>(acc, c0, sc, ap, 0);
            w4_lean_chunk<DT, true, MT>(acc, c1, sc, ap, kW4TileK * 2);
        } else {
            w4_chunk_mma_rows<DT, true, MT>(acc, c0, sc, b);
            w4_chunk_mma_rows<DT, true, MT>(acc, c1, sc, b);
        }
    }
    w4_gemv_finish<NW, NW, MT>(p, red, acc, warp, ct, warp, 0, 1);
}
template <int NW, int BPS, int CPW, int WHAT>
void add_lean_act_diag(std::vector<Variant> &vs, int ntiles, int kchunks, int group) {
    static const char *const kWhat[] = {"", "act-l1", "act-regs"};
    if (group != 128 || kchunks != NW * CPW) return;
    vs.push_back({std::string("diag.") + kWhat[WHAT] + ".MT2.NW" + std::to_string(NW) + ".B" + std::to_string(BPS) + ".CPW" + std::to_string(CPW), 0,
                  false, [=](const W4a16Args &a, cudaStream_t s) { lean_act_diag_kernel<NW, BPS, CPW, WHAT><<<unsigned(ntiles), NW * 32, 0, s>>>(a); }});
}
// Every byte of the weight and scale area read once, 16 bytes a thread, grid-stride over
// BLOCKS x SMs blocks of 512 threads; one store a thread only if its XOR is a magic value.
__global__ void read_all_kernel(const uint4 *src, int64_t n16, uint32_t *sink) {
    uint32_t x = 0;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n16; i += int64_t(gridDim.x) * blockDim.x) {
        const uint4 v = gn_load_b128_stream_all(src + i);
        x ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (x == 0x9E3779B9u) *sink = x;
}
void add_read_all(std::vector<Variant> &vs, int64_t total_bytes, int sms, int blocks_per_sm) {
    vs.push_back({"read.same-bytes.B" + std::to_string(blocks_per_sm), 0, false, [=](const W4a16Args &a, cudaStream_t s) {
                      read_all_kernel<<<unsigned(sms * blocks_per_sm), 512, 0, s>>>(reinterpret_cast<const uint4 *>(a.w), total_bytes / 16,
                                                                                     reinterpret_cast<uint32_t *>(a.out));
                  }});
}

// The library's w4a16_gemv_kernel (run 56's mode 0) at NW warps a block, with split-K
// across blocks (the library's reduce kernel after it) for few col tiles: more warps, more
// bytes in flight an SM.
template <int KS, int U, int BPS, int NW = kW4DecodeWarps>
void add_lib_gemv(std::vector<Variant> &vs, int ntiles, int nsplit, int m, int n) {
    const unsigned blocks = unsigned((ntiles + NW / KS - 1) / (NW / KS));
    vs.push_back({"lib.gemv.KS" + std::to_string(KS) + ".U" + std::to_string(U) + ".B" + std::to_string(BPS) + ".NW" + std::to_string(NW)
                      + (nsplit > 1 ? ".split" + std::to_string(nsplit) : ""), 0, true,
                  [=](const W4a16Args &args, cudaStream_t s) {
                      W4a16Args a = args;
                      a.split_chunks = (a.kchunks + nsplit - 1) / nsplit;
                      w4a16_gemv_kernel<kBF16, true, KS, U, BPS, NW><<<dim3{blocks, unsigned(nsplit), 1u}, NW * 32, 0, s>>>(a);
                      if (nsplit > 1) {
                          const int64_t outs = int64_t(m) * n;
                          w4a16_splitk_reduce_kernel<<<unsigned((outs + 255) / 256), 256, 0, s>>>(a, nsplit);
                      }
                  }});
}

// ---- run 59: the gemv loop fed by bulk copies (sm_90 TMA, cp.async.bulk) into shared
// memory.  Measured 15-50% slower than the gemv kernel at every shape (perf-log run 59): a
// block computes only as its own stages land, so the whole-slab request buys bytes in
// flight but not overlap.  Kept for the record and as a start for a ring of persistent
// blocks.  The design: a block's whole col tile (its K slab: kchunks * 512 contiguous bytes, and its
// scale entries) is requested at once by one thread, in STAGES pieces each with its own
// mbarrier, so the bytes in flight an SM are the resident blocks' slabs (34 KB a block at
// K = 4096) rather than two 512-byte chunks a warp.  Warp w takes chunks w, w + NW, ... (the
// first stage feeds every warp first), waits on its chunk's stage, reads its 16 bytes and
// the scale entry from shared memory, the activations as the gemv kernel does, and runs the
// same dequantization and mma.  M <= 8, K % 64 == 0, no split-K; the slab must fit shared
// memory (K <= ~24k).  Not the library's.
__device__ __forceinline__ uint32_t w4_smem_u32(const void *ptr) { return uint32_t(__cvta_generic_to_shared(ptr)); }
template <int NW, int STAGES, int BPS>
__global__ void __launch_bounds__(NW * 32, BPS) bulk_gemv_kernel(const W4a16Args p) {
    constexpr int DT = kBF16;
    extern __shared__ __align__(128) uint8_t slab[];
    __shared__ __align__(8) uint64_t bar[STAGES];
    __shared__ float red[NW][4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ct = blockIdx.x;
    const int chunks = p.kchunks;
    const int per = (chunks + STAGES - 1) / STAGES;
    const uint32_t wbytes = uint32_t(chunks) * kW4TileBytes, sbytes = uint32_t(p.ngroups) * 64;
    const uint8_t *wsrc = p.w + int64_t(ct) * chunks * kW4TileBytes;
    const uint8_t *ssrc = p.se + int64_t(ct) * p.ngroups * 64;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(w4_smem_u32(&bar[s])));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            const int lo = s * per, hi = min(chunks, lo + per);
            if (lo >= hi) break;
            const uint32_t bytes = uint32_t(hi - lo) * kW4TileBytes + (s == 0 ? sbytes : 0u);
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(w4_smem_u32(&bar[s])), "r"(bytes) : "memory");
            if (s == 0)
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                             :: "r"(w4_smem_u32(slab + wbytes)), "l"(ssrc), "r"(sbytes), "r"(w4_smem_u32(&bar[0])) : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                         :: "r"(w4_smem_u32(slab + uint32_t(lo) * kW4TileBytes)), "l"(wsrc + int64_t(lo) * kW4TileBytes),
                            "r"(uint32_t(hi - lo) * kW4TileBytes), "r"(w4_smem_u32(&bar[s])) : "memory");
        }
    }
#endif
    const char *ab = p.a + int64_t(min(g, p.m - 1)) * p.a_sm + 32 * t;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    // Every warp waits on stage 0 first: the scale entries arrive with it (run 59's 16-warp,
    // 8-stage variant read them early in warps whose first chunk is in stage 1: one WRONG
    // row; fixed after the run, not rerun).
    int waited = -1;
    for (int kc = warp; kc < chunks; kc += NW) {
        if (waited < 0 && kc / per != 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            uint32_t done = 0;
            do {
                asm volatile("{\n\t.reg .pred q;\n\tmbarrier.try_wait.parity.shared::cta.b64 q, [%1], 0;\n\tselp.u32 %0, 1, 0, q;\n\t}"
                             : "=r"(done) : "r"(w4_smem_u32(&bar[0])) : "memory");
            } while (!done);
#endif
        }
        const int st = kc / per;
        if (st != waited) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            uint32_t done = 0;
            do {
                asm volatile("{\n\t.reg .pred q;\n\tmbarrier.try_wait.parity.shared::cta.b64 q, [%1], 0;\n\tselp.u32 %0, 1, 0, q;\n\t}"
                             : "=r"(done) : "r"(w4_smem_u32(&bar[st])) : "memory");
            } while (!done);
#endif
            waited = st;
        }
        const uint4 wv = *reinterpret_cast<const uint4 *>(slab + kc * kW4TileBytes + lane * 16);
        const uint2 sv = *reinterpret_cast<const uint2 *>(slab + wbytes + ((kc * kW4TileK + 16 * t) >> p.gshift) * 64 + g * 8);
        W4Scale<DT, true> sc;
        sc.raw_s = sv.x;
        sc.raw_z = sv.y;
        w4_chunk_mma<DT, true>(acc, wv, sc, reinterpret_cast<const uint4 *>(ab + int64_t(kc) * (kW4TileK * 2)));
    }
    w4_gemv_finish<NW, NW>(p, red, acc, warp, ct, warp, 0, 1);
}
template <int NW, int STAGES, int BPS>
void add_bulk(std::vector<Variant> &vs, const W4Tiled &t) {
    const int smem = int(t.kchunks * kW4TileBytes + t.ngroups * 64);
    if (smem > 200 * 1024) return;
    CHECK(cudaFuncSetAttribute(bulk_gemv_kernel<NW, STAGES, BPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const unsigned blocks = unsigned(t.ntiles);
    vs.push_back({"bulk.NW" + std::to_string(NW) + ".S" + std::to_string(STAGES) + ".B" + std::to_string(BPS), 0, true,
                  [=](const W4a16Args &a, cudaStream_t s) { bulk_gemv_kernel<NW, STAGES, BPS><<<blocks, NW * 32, smem, s>>>(a); }});
}

// ---- run 60: the ring experiment.
// sm_90 bulk copies (TMA) and mbarriers, for the ring kernels below (the tuner builds sm_90a only).
__device__ __forceinline__ void w4_mbar_init(uint64_t *bar, uint32_t count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(w4_smem_u32(bar)), "r"(count) : "memory");
#else
    (void)bar; (void)count;
    __trap();
#endif
}
__device__ __forceinline__ void w4_mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
// Wait until the barrier's phase `parity` has completed.
__device__ __forceinline__ void w4_mbar_wait(uint64_t *bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    do {
        asm volatile("{\n\t.reg .pred q;\n\tmbarrier.try_wait.parity.shared::cta.b64 q, [%1], %2;\n\tselp.u32 %0, 1, 0, q;\n\t}"
                     : "=r"(done) : "r"(w4_smem_u32(bar)), "r"(parity) : "memory");
    } while (!done);
#else
    (void)bar; (void)parity;
    __trap();
#endif
}
__device__ __forceinline__ void w4_mbar_arrive(uint64_t *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(w4_smem_u32(bar)) : "memory");
#else
    (void)bar;
    __trap();
#endif
}
// The producer's arrival: the phase completes when `bytes` more have landed.
__device__ __forceinline__ void w4_mbar_expect(uint64_t *bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(w4_smem_u32(bar)), "r"(bytes) : "memory");
#else
    (void)bar; (void)bytes;
    __trap();
#endif
}
// `bytes` (a multiple of 16; both addresses 16-byte aligned) global -> shared, counted on bar.
__device__ __forceinline__ void w4_bulk_copy(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(w4_smem_u32(dst)), "l"(src), "r"(bytes), "r"(w4_smem_u32(bar)) : "memory");
#else
    (void)dst; (void)src; (void)bytes; (void)bar;
    __trap();
#endif
}

// The scale-entry bytes a ring stage of SC chunks holds: the groups its k range touches
// (SC * 64 / G of them for a power-of-two G, one for per-channel; pieces start at multiples
// of SC chunks, so a group of G > 64 k never straddles two pieces unaligned).
inline int w4_ring_stage_bytes(int sc_chunks, int gshift, int entry_bytes) {
    const int64_t span = int64_t(sc_chunks) * kW4TileK;
    const int64_t groups = gshift >= 31 ? 1 : (span >> gshift) > 0 ? (span >> gshift) : 1;
    return int((sc_chunks * kW4TileBytes + groups * 8 * entry_bytes + 127) / 128 * 128);
}

// A ring's barriers (every thread of the block calls it): `full` completes when the
// producer's bytes have landed, `empty` when the `consumers` warps have arrived.
template <int S>
__device__ __forceinline__ void w4_ring_init(uint64_t *full, uint64_t *empty, int consumers) {
    if (threadIdx.x == 0) {
        for (int s = 0; s < S; ++s) {
            w4_mbar_init(&full[s], 1);
            w4_mbar_init(&empty[s], uint32_t(consumers));
        }
        w4_mbar_init_fence();
    }
    __syncthreads();
}

// The producer of a ring (lane 0 of the extra warp): the block's col tiles (blockIdx.x,
// + gridDim.x, ...) in pieces of SC k chunks, piece i into stage i % S once the stage's
// previous piece has been consumed (its `empty` barrier's phase (i / S - 1) complete): the
// piece's weight tiles (contiguous) and its groups' scale entries (contiguous too) by two
// bulk copies, both counted on the stage's `full` barrier.
template <int SC, int S, int kEntry>
__device__ __forceinline__ void w4_ring_produce(const W4a16Args &p, uint8_t *ring, int stage_bytes, uint64_t *full, uint64_t *empty) {
    int i = 0;
    for (int ct = blockIdx.x; ct < p.ntiles; ct += gridDim.x) {
        for (int c0 = 0; c0 < p.kchunks; c0 += SC, ++i) {
            const int s = i % S;
            if (i >= S) w4_mbar_wait(&empty[s], ((i / S) - 1) & 1);
            const int nch = min(SC, p.kchunks - c0);
            const int gi_lo = (c0 * kW4TileK) >> p.gshift, gi_hi = ((c0 + nch) * kW4TileK - 1) >> p.gshift;
            const uint32_t wbytes = uint32_t(nch) * kW4TileBytes, sbytes = uint32_t(gi_hi - gi_lo + 1) * 8 * kEntry;
            uint8_t *stage = ring + s * stage_bytes;
            w4_mbar_expect(&full[s], wbytes + sbytes);
            w4_bulk_copy(stage + SC * kW4TileBytes, p.se + (int64_t(ct) * p.ngroups + gi_lo) * 8 * kEntry, sbytes, &full[s]);
            w4_bulk_copy(stage, p.w + (int64_t(ct) * p.kchunks + c0) * kW4TileBytes, wbytes, &full[s]);
        }
    }
}

// Run 60's ring kernel (M <= 8, K % 64 == 0, sm_90; measured 20-50% slower than the
// library's gemv kernel at every shape, withdrawn from the library, kept as the record): a
// persistent grid streaming its col tiles (blockIdx.x, + gridDim.x, ...) through a ring of S
// shared-memory stages.  Lane 0 of warp NW (the producer) fills a stage with a piece of SC
// k chunks (weight tiles and the piece's groups' scale entries: two bulk copies counted on
// the stage's `full` barrier) once the NW consumer warps have arrived on its `empty`
// barrier; consumer warp w takes chunks w, w + NW, ... of a piece (weights and scale entry
// from the stage, activations through L1 from row min(g, M - 1)), and at a col tile's end
// warp 0 adds the NW warps' sums in warp order (named barrier 1, the sums double-buffered).
template <int DT, bool ZP, int NW, int SC, int S, int BPS>
__global__ void __launch_bounds__((NW + 1) * 32, BPS) w4a16_ring_kernel(const W4a16Args p, int stage_bytes) {
    constexpr int kEntry = W4Scale<DT, ZP>::kEntryBytes;
    extern __shared__ __align__(128) uint8_t ring_stages[];
    __shared__ __align__(8) uint64_t full[S], empty[S];
    __shared__ float red[2][NW][4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    w4_ring_init<S>(full, empty, NW);
    if (warp == NW) {  // the producer
        if (lane == 0) w4_ring_produce<SC, S, kEntry>(p, ring_stages, stage_bytes, full, empty);
        return;
    }
    const int g = lane >> 2, t = lane & 3;
    const char *ab = p.a + int64_t(min(g, p.m - 1)) * p.a_sm + 32 * t;
    int i = 0, tile = 0;
    for (int ct = blockIdx.x; ct < p.ntiles; ct += gridDim.x, ++tile) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int c0 = 0; c0 < p.kchunks; c0 += SC, ++i) {
            const int s = i % S;
            w4_mbar_wait(&full[s], (i / S) & 1);
            const int nch = min(SC, p.kchunks - c0);
            const int gi_lo = (c0 * kW4TileK) >> p.gshift;
            const uint8_t *stage = ring_stages + s * stage_bytes;
            for (int j = warp; j < nch; j += NW) {
                const int kc = c0 + j;
                static_assert(ZP, "the tuner's weights have zero points");
                const uint2 sv = *reinterpret_cast<const uint2 *>(
                    stage + SC * kW4TileBytes + ((((kc * kW4TileK + 16 * t) >> p.gshift) - gi_lo) * 8 + g) * kEntry);
                W4Scale<DT, ZP> sc;
                sc.raw_s = sv.x;
                sc.raw_z = sv.y;
                const uint4 wq = *reinterpret_cast<const uint4 *>(stage + j * kW4TileBytes + lane * 16);
                w4_chunk_mma<DT, ZP>(acc, wq, sc, reinterpret_cast<const uint4 *>(ab + int64_t(kc) * (kW4TileK * 2)));
            }
            __syncwarp();
            if (lane == 0) w4_mbar_arrive(&empty[s]);  // this warp's reads of the stage are done
        }
        float(&sums)[NW][4][32] = red[tile & 1];
#pragma unroll
        for (int r = 0; r < 4; ++r) sums[warp][r][lane] = acc[r];
        asm volatile("bar.sync 1, %0;" :: "n"(NW * 32) : "memory");  // the consumers only
        if (warp == 0) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                float sum = 0.0f;
#pragma unroll
                for (int w = 0; w < NW; ++w) sum += sums[w][r][lane];
                w4_emit(p, 0, 1, 2 * t + (r & 1), 16 * ct + g + 8 * (r >> 1), sum);
            }
        }
    }
}


// The ring kernel at its knobs, and its loads-only twin: the same producer and ring,
// consumers that XOR their stage's words and arrive (no dequantization or mma: the ring's
// ceiling, unchecked).  G = 128 asymmetric bf16 (the tuner's weights).
template <int NW, int SC, int S, int BPS>
__global__ void __launch_bounds__((NW + 1) * 32, BPS) ring_loads_kernel(const W4a16Args p, int stage_bytes) {
    constexpr int kEntry = 8;
    extern __shared__ __align__(128) uint8_t ring[];
    __shared__ __align__(8) uint64_t full[S], empty[S];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    w4_ring_init<S>(full, empty, NW);
    if (warp == NW) {
        if (lane == 0) w4_ring_produce<SC, S, kEntry>(p, ring, stage_bytes, full, empty);
        return;
    }
    const int g = lane >> 2;
    uint32_t x = 0;
    int i = 0;
    for (int ct = blockIdx.x; ct < p.ntiles; ct += gridDim.x) {
        for (int c0 = 0; c0 < p.kchunks; c0 += SC, ++i) {
            const int s = i % S;
            w4_mbar_wait(&full[s], (i / S) & 1);
            const int nch = min(SC, p.kchunks - c0);
            const uint8_t *st = ring + s * stage_bytes;
            for (int j = warp; j < nch; j += NW) {
                const uint4 wv = *reinterpret_cast<const uint4 *>(st + j * kW4TileBytes + lane * 16);
                const uint2 sv = *reinterpret_cast<const uint2 *>(st + SC * kW4TileBytes + g * kEntry);
                x ^= wv.x ^ wv.y ^ wv.z ^ wv.w ^ sv.x ^ sv.y;
            }
            __syncwarp();
            if (lane == 0) w4_mbar_arrive(&empty[s]);
        }
    }
    if (x == 0x12345679u) p.ws[threadIdx.x] = 1.0f;  // keeps the reads
}
template <int NW, int SC, int S, int BPS, bool LOADS = false>
void add_ring(std::vector<Variant> &vs, const W4Tiled &t, int sms) {
    const int stage_bytes = w4_ring_stage_bytes(SC, t.gshift, t.entry_bytes);
    const int smem = S * stage_bytes;
    auto kernel = LOADS ? ring_loads_kernel<NW, SC, S, BPS> : w4a16_ring_kernel<kBF16, true, NW, SC, S, BPS>;
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const unsigned blocks = unsigned(std::min<int64_t>(t.ntiles, int64_t(sms) * BPS));
    vs.push_back({std::string(LOADS ? "ring-loads" : "ring") + ".NW" + std::to_string(NW) + ".SC" + std::to_string(SC) + ".S" +
                      std::to_string(S) + ".B" + std::to_string(BPS), 0, !LOADS,
                  [=](const W4a16Args &a, cudaStream_t s) { kernel<<<blocks, (NW + 1) * 32, smem, s>>>(a, stage_bytes); }});
}

bool g_wrong = false;

float bf16_to_float(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char **argv) {
    // `only KxN M NAME KS [MODE]`: that one variant of MODE's set (below; default: the plain
    // run's), checked and launched once more untimed, for a profiler (ncu --kernel-name
    // regex:... -c 1 /tmp/tune_w4 only 4096x24576 1 ring.NW16.SC16.S8.B1 0 ring)
    const bool only = (argc == 6 || argc == 7) && !strcmp(argv[1], "only");
    const char *mode = only ? (argc == 7 ? argv[6] : "") : argc > 1 ? argv[1] : "";
    const bool quick = !strcmp(mode, "quick");
    // `gemv`: M = 1 only, the library's decode variants beside its gemv kernel (lib.gemv.*:
    // blocks, batches, split-K); `gemv-modes`: M = 1, run 56's three numerics modes (gemv.M*)
    const bool gemv_modes = !strcmp(mode, "gemv-modes");
    const bool gemv = gemv_modes || !strcmp(mode, "gemv");
    // `bulk`: M = 1, the library's gemv builds beside run 59's bulk-copy (TMA) experiment
    const bool bulk = !strcmp(mode, "bulk");
    // `ring`: M = 1, the library's gemv builds beside run 60's persistent ring (and its loads only)
    const bool ring = !strcmp(mode, "ring");
    // `lean`: M = 1 and 16, the library's gemv and lean kernels (MT = 2 at M = 16) beside
    // the decode builds
    const bool lean = !strcmp(mode, "lean");
    // `lean-shape` (run 75): the compiled-count lean build with fewer warps a col tile (each
    // owning more chunks: less prologue and epilogue a chunk) and other blocks an SM
    const bool lean_shape = !strcmp(mode, "lean-shape");
    // `persist` (run 90): the library's compiled-count lean builds beside a persistent grid of
    // them that prefetches the next col tile's first batch across the reduction
    const bool persist = !strcmp(mode, "persist");
    // `fixed` (run 122): M = 1, the library's lean builds beside lean_diag_kernel's parts and a
    // read of the same bytes
    const bool fixed = !strcmp(mode, "fixed");
    // `act16` (run 126): M = 16, the library's lean builds beside lean_act_diag_kernel's
    const bool act16 = !strcmp(mode, "act16");
    // `rows` (run 131): M 24..64, the library's decode kernel on its row-block grid (each
    // 16-row block dequantizes its chunks again) beside the lean loop with MT = 4 / 6 / 8
    // 8-row blocks sharing each dequantized chunk (one block a col tile)
    const bool rows = !strcmp(mode, "rows");
    auto wanted = [&](int k, int n, int m, const Variant &v) {
        return !only || (std::to_string(k) + "x" + std::to_string(n) == argv[2] && m == atoi(argv[3]) && v.name == argv[4] &&
                         v.ks == atoi(argv[5]));
    };
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));

    // Copy ceiling: 512 MiB read + 512 MiB written.
    double copy_gbps = 0;
    {
        const int64_t n16 = (int64_t(512) << 20) / 16;
        uint4 *a, *b;
        CHECK(cudaMalloc(&a, n16 * 16));
        CHECK(cudaMalloc(&b, n16 * 16));
        CHECK(cudaMemset(a, 1, n16 * 16));
        std::vector<float> ts;
        for (int r = 0; r < 7; ++r) {
            CHECK(cudaEventRecord(e0, s));
            copy_kernel<<<sms * 8, 512, 0, s>>>(a, b, n16);
            CHECK(cudaEventRecord(e1, s));
            CHECK(cudaEventSynchronize(e1));
            float ms;
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            ts.push_back(ms);
        }
        copy_gbps = 2.0 * n16 * 16 / (median(ts) * 1e-3) / 1e9;
        CHECK(cudaFree(a));
        CHECK(cudaFree(b));
    }
    printf("# %s, %d SMs, smem/SM %zu KB; copy kernel %.0f GB/s (read + write)\n", prop.name, sms,
           prop.sharedMemPerMultiprocessor / 1024, copy_gbps);
    printf("# K x N  M  variant  ks  us  GB/s  of-copy  check\n");

    struct Shape { int k, n; };
    const std::vector<Shape> shapes = {{4096, 4096}, {4096, 6144}, {4096, 24576}, {12288, 4096}};
    const std::vector<int> ms = quick || gemv || bulk || ring || fixed ? std::vector<int>{1}
                                : act16                                ? std::vector<int>{16}
                                : rows                                 ? std::vector<int>{24, 32, 48, 64}
                                                                       : std::vector<int>{1, 16};
    for (const Shape sh : shapes) {
        W4Tiled t;
        w4_tiled_geometry(sh.n, sh.k, 128, false, &t);
        const int64_t copies = std::max<int64_t>(2, (int64_t(2 * prop.l2CacheSize) + t.total_bytes - 1) / t.total_bytes + 1);
        std::vector<uint8_t *> ws(copies);
        for (int64_t c = 0; c < copies; ++c) {
            CHECK(cudaMalloc(&ws[c], t.total_bytes));
            const int64_t items = t.weight_bytes / 4 + t.ntiles * t.ngroups * 8;
            fill_weight<<<unsigned((items + 255) / 256), 256, 0, s>>>(ws[c], t, uint64_t(c + 1));
        }
        for (const int m : ms) {
            uint16_t *act;
            float *ref, *wsp;
            char *out;
            CHECK(cudaMalloc(&act, size_t(m) * sh.k * 2));
            CHECK(cudaMalloc(&ref, size_t(m) * sh.n * 4));
            CHECK(cudaMalloc(&out, size_t(m) * sh.n * 2));
            CHECK(cudaMalloc(&wsp, size_t(kW4StreamWarps) * 16 * m * sh.n * 4));
            fill_act<<<unsigned((int64_t(m) * sh.k + 255) / 256), 256, 0, s>>>(act, int64_t(m) * sh.k);
            reference_kernel<<<unsigned((int64_t(m) * sh.n + 127) / 128), 128, 0, s>>>(ws[0], t, act, m, ref);
            std::vector<float> href(size_t(m) * sh.n);
            CHECK(cudaMemcpyAsync(href.data(), ref, href.size() * 4, cudaMemcpyDeviceToHost, s));
            CHECK(cudaStreamSynchronize(s));
            std::vector<Variant> vs;
            const int nt = int(t.ntiles);
            if (rows) {
                add_decode_rows<1, 4, 2>(vs, nt, m);
                add_decode_rows<1, 2, 3>(vs, nt, m);
                add_decode_rows<2, 2, 2>(vs, nt, m);
            } else if (ring || lean_shape || persist || fixed || act16) {  // no decode builds beside them
            } else if (bulk) {
                add_decode<1, 1, 4>(vs, nt);
            } else if (m <= 8) {
                add_decode<1, 1, 4>(vs, nt);
                add_decode<1, 2, 2>(vs, nt);
                add_decode<1, 1, 8>(vs, nt);
                add_decode<1, 2, 4>(vs, nt);
                add_decode<1, 1, 4, 1, 3>(vs, nt);
                add_decode<1, 2, 2, 1, 3>(vs, nt);
                add_decode<1, 1, 2, 1, 3>(vs, nt);
                add_decode<1, 1, 2, 1, 4>(vs, nt);
                add_decode<1, 2, 2, 1, 4>(vs, nt);
            } else {
                add_decode<2, 1, 4>(vs, nt);
                add_decode<2, 2, 2>(vs, nt);
                add_decode<2, 1, 4, 1, 3>(vs, nt);
                add_decode<2, 2, 2, 1, 3>(vs, nt);
                add_decode<2, 1, 2, 1, 3>(vs, nt);
            }
            if (m <= 8 && gemv_modes) {
                add_gemv_set<0>(vs, nt);
                add_gemv_set<1>(vs, nt);
                add_gemv_set<2>(vs, nt);
            }
            if (gemv_modes) {
                add_diag<4, 2, false>(vs, nt, m, sh.n, "compute");
            } else if (gemv) {
                add_gemv<0, 8, 2, 4>(vs, nt);  // run 56's tuner copy of the 8-warp build
                add_lib_gemv<8, 2, 4>(vs, nt, 1, m, sh.n);
                add_lib_gemv<8, 4, 3>(vs, nt, 1, m, sh.n);
                add_lib_gemv<8, 2, 4>(vs, nt, 2, m, sh.n);
                add_lib_gemv<8, 2, 4>(vs, nt, 4, m, sh.n);
                add_lib_gemv<16, 2, 2, 16>(vs, nt, 1, m, sh.n);
                add_lib_gemv<16, 4, 1, 16>(vs, nt, 1, m, sh.n);
                add_lib_gemv<8, 2, 2, 16>(vs, nt, 1, m, sh.n);
                add_lib_gemv<4, 2, 3>(vs, nt, 1, m, sh.n);
                add_lean_gemv<1, 8, 4>(vs, nt, int(t.kchunks), int(t.group));
                add_lean_gemv<1, 16, 2>(vs, nt, int(t.kchunks), int(t.group));
            } else if (fixed) {
                const int kc = int(t.kchunks), gr = int(t.group);
                add_lean_full<1, 16, 2, 4>(vs, nt, kc, gr);   // K 4096, <= 2 x SMs col tiles: the library's
                add_lean_full<1, 8, 4, 8>(vs, nt, kc, gr);    // K 4096, more col tiles: the library's
                add_lean_full<1, 16, 2, 12>(vs, nt, kc, gr);  // K 12288: the library's
                add_lean_diag<16, 2, 4, 1>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 4, 2>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 4, 3>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 4, 4>(vs, nt, kc, gr);
                add_lean_diag<8, 4, 8, 1>(vs, nt, kc, gr);
                add_lean_diag<8, 4, 8, 2>(vs, nt, kc, gr);
                add_lean_diag<8, 4, 8, 3>(vs, nt, kc, gr);
                add_lean_diag<8, 4, 8, 4>(vs, nt, kc, gr);
                add_lean_diag<4, 8, 16, 4>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 12, 1>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 12, 2>(vs, nt, kc, gr);
                add_lean_diag<16, 2, 12, 3>(vs, nt, kc, gr);
                add_read_all(vs, t.total_bytes, sms, 4);
                add_read_all(vs, t.total_bytes, sms, 8);
            } else if (rows) {
                const int kc = int(t.kchunks), gr = int(t.group);
                if (m <= 32) {
                    add_lean_full<4, 8, 2, 8>(vs, nt, kc, gr);    // K 4096
                    add_lean_full<4, 8, 1, 8>(vs, nt, kc, gr);
                    add_lean_full<4, 16, 1, 4>(vs, nt, kc, gr);
                    add_lean_full<4, 4, 4, 16>(vs, nt, kc, gr);
                    add_lean_full<4, 16, 1, 12>(vs, nt, kc, gr);  // K 12288
                    add_lean_full<4, 12, 2, 16>(vs, nt, kc, gr);
                    add_lean_full<4, 8, 2, 24>(vs, nt, kc, gr);
                    // run 132: launch bounds without spills (the library's builds)
                    add_lean_full<4, 4, 3, 16>(vs, nt, kc, gr);   // K 4096
                    add_lean_full<4, 6, 2, 32>(vs, nt, kc, gr);   // K 12288
                    add_lean_full<4, 4, 3, 48>(vs, nt, kc, gr);
                } else {
                    if (m <= 48) {
                        add_lean_full<6, 8, 1, 8>(vs, nt, kc, gr);
                        add_lean_full<6, 4, 2, 16>(vs, nt, kc, gr);
                        add_lean_full<6, 8, 1, 24>(vs, nt, kc, gr);
                    }
                    add_lean_full<8, 8, 1, 8>(vs, nt, kc, gr);    // K 4096
                    add_lean_full<8, 4, 2, 16>(vs, nt, kc, gr);
                    add_lean_full<8, 16, 1, 4>(vs, nt, kc, gr);
                    add_lean_full<8, 16, 1, 12>(vs, nt, kc, gr);  // K 12288
                    add_lean_full<8, 8, 1, 24>(vs, nt, kc, gr);
                }
            } else if (act16) {
                const int kc = int(t.kchunks), gr = int(t.group);
                add_lean_full<2, 16, 2, 4>(vs, nt, kc, gr);   // the library's M = 16 builds
                add_lean_full<2, 8, 4, 8>(vs, nt, kc, gr);
                add_lean_full<2, 16, 2, 12>(vs, nt, kc, gr);
                add_lean_act_diag<16, 2, 4, 1>(vs, nt, kc, gr);
                add_lean_act_diag<16, 2, 4, 2>(vs, nt, kc, gr);
                add_lean_act_diag<8, 4, 8, 1>(vs, nt, kc, gr);
                add_lean_act_diag<8, 4, 8, 2>(vs, nt, kc, gr);
                add_lean_act_diag<16, 2, 12, 1>(vs, nt, kc, gr);
                add_lean_act_diag<16, 2, 12, 2>(vs, nt, kc, gr);
                add_lean_full<1, 16, 2, 4>(vs, nt, kc, gr);   // the M = 1 builds on 16 rows (rows 8..15 unread)
                add_lean_full<1, 8, 4, 8>(vs, nt, kc, gr);
                add_lean_full<1, 16, 2, 12>(vs, nt, kc, gr);
                add_read_all(vs, t.total_bytes, sms, 8);
            } else if (persist) {
                const int kc = int(t.kchunks), gr = int(t.group);
                // each col-tile count in as few equal rounds as the resident blocks allow
                auto rounds_grid = [&](int slots) { const int r = (nt + slots - 1) / slots; return (nt + r - 1) / r; };
                if (m <= 8) {
                    add_lean_full<1, 8, 4, 8>(vs, nt, kc, gr);    // K 4096, > 4 x SMs col tiles: the library's
                    add_lean_full<1, 16, 2, 4>(vs, nt, kc, gr);   // K 4096, fewer col tiles: the library's
                    add_lean_full<1, 16, 2, 12>(vs, nt, kc, gr);  // K 12288: the library's
                    // the forms ptxas fits in 64 registers without spills (nvcc 13.0)
                    add_lean_persist<1, 8, 4, 8, true>(vs, nt, kc, gr, 4 * sms);
                    add_lean_persist<1, 8, 4, 8, true>(vs, nt, kc, gr, rounds_grid(4 * sms));
                    add_lean_persist<1, 8, 4, 8, true>(vs, nt, kc, gr, 2 * sms);
                    add_lean_persist<1, 16, 2, 4, false>(vs, nt, kc, gr, 2 * sms);
                    add_lean_persist<1, 16, 2, 4, false>(vs, nt, kc, gr, rounds_grid(2 * sms));
                    add_lean_persist<1, 16, 2, 12, false>(vs, nt, kc, gr, 2 * sms);
                } else {
                    add_lean_full<2, 8, 4, 8>(vs, nt, kc, gr);
                    add_lean_full<2, 16, 2, 4>(vs, nt, kc, gr);
                    add_lean_gemv<2, 16, 2>(vs, nt, kc, gr);      // K 12288: the library's
                    // MT 2: 16 bytes of spills in this form, more in the others
                    add_lean_persist<2, 8, 4, 8, true>(vs, nt, kc, gr, 4 * sms);
                    add_lean_persist<2, 8, 4, 8, true>(vs, nt, kc, gr, rounds_grid(4 * sms));
                }
            } else if (lean_shape) {
                const int kc = int(t.kchunks), gr = int(t.group);
                if (m <= 8) {
                    add_lean_full<1, 16, 2, 4>(vs, nt, kc, gr);   // K 4096, <= 2 x SMs col tiles: the library's
                    add_lean_full<1, 8, 4, 8>(vs, nt, kc, gr);    // K 4096: the library's
                    add_lean_full<1, 4, 8, 16>(vs, nt, kc, gr);
                    add_lean_full<1, 4, 6, 16>(vs, nt, kc, gr);
                    add_lean_full<1, 16, 2, 12>(vs, nt, kc, gr);  // K 12288: the library's
                    add_lean_full<1, 12, 3, 16>(vs, nt, kc, gr);
                    add_lean_full<1, 12, 2, 16>(vs, nt, kc, gr);
                    add_lean_full<1, 24, 1, 8>(vs, nt, kc, gr);
                    add_lean_full<1, 6, 5, 32>(vs, nt, kc, gr);
                } else {
                    add_lean_full<2, 16, 2, 4>(vs, nt, kc, gr);   // K 4096: 16 warps, CPW 4 compiled (the library's MT 2 has no such build)
                    add_lean_full<2, 8, 4, 8>(vs, nt, kc, gr);    // K 4096: the library's
                    add_lean_full<2, 4, 6, 16>(vs, nt, kc, gr);
                    add_lean_full<2, 4, 8, 16>(vs, nt, kc, gr);
                    add_lean_gemv<2, 16, 2>(vs, nt, kc, gr);      // the runtime count: the library's in the 16-warp tier before run 129
                    add_lean_full<2, 12, 3, 16>(vs, nt, kc, gr);
                    add_lean_full<2, 12, 2, 16>(vs, nt, kc, gr);
                }
            } else if (lean) {
                const int kc = int(t.kchunks), gr = int(t.group);
                if (m <= 8) {
                    add_lib_gemv<8, 2, 4>(vs, nt, 1, m, sh.n);
                    add_lib_gemv<16, 2, 2, 16>(vs, nt, 1, m, sh.n);
                    add_lean_gemv<1, 8, 4>(vs, nt, kc, gr);
                    add_lean_gemv<1, 16, 2>(vs, nt, kc, gr);
                    add_lean_full<1, 8, 4, 8>(vs, nt, kc, gr);    // K 4096
                    add_lean_full<1, 16, 2, 4>(vs, nt, kc, gr);   // K 4096
                    add_lean_full<1, 16, 2, 12>(vs, nt, kc, gr);  // K 12288
                    add_lean_full<1, 8, 4, 24>(vs, nt, kc, gr);   // K 12288
                    add_lean_wn2<1, 8, 3, 8>(vs, nt, kc, gr);
                    add_lean_wn2<1, 16, 1, 4>(vs, nt, kc, gr);
                } else {
                    add_lean_gemv<2, 8, 4>(vs, nt, kc, gr);
                    add_lean_gemv<2, 16, 2>(vs, nt, kc, gr);
                    add_lean_full<2, 8, 4, 8>(vs, nt, kc, gr);
                    add_lean_full<2, 16, 2, 4>(vs, nt, kc, gr);
                    add_lean_full<2, 16, 2, 12>(vs, nt, kc, gr);
                    add_lean_wn2<2, 8, 2, 8>(vs, nt, kc, gr);
                    add_lean_wn2<2, 16, 1, 4>(vs, nt, kc, gr);
                    add_lean_wn2<2, 16, 1, 12>(vs, nt, kc, gr);
                    add_lean_wn2<2, 8, 2, 24>(vs, nt, kc, gr);
                }
            } else if (ring) {
                add_lib_gemv<8, 2, 4>(vs, nt, 1, m, sh.n);
                add_lib_gemv<16, 2, 2, 16>(vs, nt, 1, m, sh.n);
                add_ring<16, 16, 8, 1, true>(vs, t, sms);
                add_ring<8, 8, 8, 2, true>(vs, t, sms);
                add_ring<16, 16, 4, 1>(vs, t, sms);
                add_ring<16, 16, 8, 1>(vs, t, sms);
                add_ring<16, 16, 6, 2>(vs, t, sms);  // run 61: 34 warps an SM
                add_ring<24, 24, 5, 1>(vs, t, sms);
                add_ring<16, 16, 12, 1>(vs, t, sms);
                add_ring<8, 16, 6, 1>(vs, t, sms);
                add_ring<8, 8, 8, 2>(vs, t, sms);
                add_ring<8, 8, 12, 2>(vs, t, sms);
                add_ring<4, 8, 6, 3>(vs, t, sms);
            } else if (bulk) {
                add_lib_gemv<8, 2, 4>(vs, nt, 1, m, sh.n);
                add_lib_gemv<16, 2, 2, 16>(vs, nt, 1, m, sh.n);
                add_bulk<8, 4, 4>(vs, t);
                add_bulk<8, 8, 4>(vs, t);
                add_bulk<16, 4, 2>(vs, t);
                add_bulk<16, 8, 2>(vs, t);
                add_bulk<4, 4, 8>(vs, t);
            } else if (m == 1) {
                add_stream<1, 4>(vs, nt, m, sh.n, !quick);
                add_stream<1, 8>(vs, nt, m, sh.n, false);
                add_diag<4, 0, true>(vs, nt, m, sh.n, "full");
                add_diag<8, 0, true>(vs, nt, m, sh.n, "full");
                add_diag<4, 1, false>(vs, nt, m, sh.n, "loads");
                add_diag<4, 1, true>(vs, nt, m, sh.n, "loads");
                add_diag<8, 1, true>(vs, nt, m, sh.n, "loads");
                add_diag<4, 2, false>(vs, nt, m, sh.n, "compute");
            } else if (m <= 4) {
                add_stream<4, 4>(vs, nt, m, sh.n, false);
            } else {
                add_stream<16, 4>(vs, nt, m, sh.n, false);
                add_stream<16, 2>(vs, nt, m, sh.n, false);
            }
            for (const Variant &v : vs) {
                if (!wanted(sh.k, sh.n, m, v)) continue;
                W4a16Args a{};
                a.a = reinterpret_cast<const char *>(act);
                a.a_sm = int64_t(sh.k) * 2;
                a.out = out;
                a.o_sm = int64_t(sh.n) * 2;
                a.out_dtype = kBF16;
                a.ws = wsp;
                a.m = m;
                a.n = sh.n;
                a.k = sh.k;
                a.ntiles = int32_t(t.ntiles);
                a.kchunks = int32_t(t.kchunks);
                a.ngroups = int32_t(t.ngroups);
                a.gshift = t.gshift;
                a.split_chunks = int32_t(t.kchunks);  // one split (a variant with more sets its own)
                auto launch = [&](int64_t c) {
                    a.w = ws[c];
                    a.se = ws[c] + t.weight_bytes;
                    v.launch(a, s);
                };
                // check on copy 0
                CHECK(cudaMemsetAsync(out, 0xff, size_t(m) * sh.n * 2, s));
                launch(0);
                CHECK(cudaGetLastError());
                std::vector<uint16_t> got(size_t(m) * sh.n);
                CHECK(cudaMemcpyAsync(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost, s));
                CHECK(cudaStreamSynchronize(s));
                double worst = 0;
                bool bad = false;
                for (size_t i = 0; i < got.size() && v.checked; ++i) {
                    const float g = bf16_to_float(got[i]), r = href[i];
                    if (!(std::fabs(g - r) <= 2.0f * 0.0078125f * std::fabs(r) + 1e-3f)) bad = true;
                    worst = std::max(worst, double(std::fabs(g - r)));
                }
                if (bad) g_wrong = true;
                if (only) {
                    launch(1);
                    CHECK(cudaStreamSynchronize(s));
                    printf("%dx%d  %d  %s  %d  launched for a profiler; check %s\n", sh.k, sh.n, m, v.name.c_str(), v.ks, bad ? "WRONG" : "ok");
                    continue;
                }
                // time: a graph of `calls` launches over the rotated copies
                const int calls = int(std::max<int64_t>(20, copies));
                cudaGraph_t graph;
                cudaGraphExec_t exec;
                CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
                for (int i = 0; i < calls; ++i) launch(i % copies);
                CHECK(cudaStreamEndCapture(s, &graph));
                CHECK(cudaGraphInstantiate(&exec, graph, 0));
                CHECK(cudaGraphLaunch(exec, s));
                const float us = graph_us_per_call(exec, s, quick ? 7 : 15, calls);
                CHECK(cudaGraphExecDestroy(exec));
                CHECK(cudaGraphDestroy(graph));
                const double gbps = double(t.total_bytes) / (us * 1e-6) / 1e9;
                printf("%dx%d  %d  %s  %d  %.2f  %.0f  %.0f%%  %s\n", sh.k, sh.n, m, v.name.c_str(), v.ks, us, gbps,
                       100.0 * gbps / copy_gbps,
                       !v.checked ? "(not the GEMM)" : bad ? ("WRONG (max abs diff " + std::to_string(worst) + ")").c_str() : "ok");
                fflush(stdout);
            }
            CHECK(cudaFree(act));
            CHECK(cudaFree(ref));
            CHECK(cudaFree(out));
            CHECK(cudaFree(wsp));
        }
        for (auto *w : ws) CHECK(cudaFree(w));
    }
    printf("# %s\n", g_wrong ? "SOME VARIANT WRONG" : "all variants agree with the reference");
    return g_wrong ? 1 : 0;
}
