// W4A16 GEMM kernels over the tiled layout (w4a16_layout.h; docs/w4a16.md draws it).
//
//   NVIDIA (sm_80+):
//     w4a16_gemv_kernel    M <= 8, K % 64 == 0: the decode kernel's scheme without its
//                          per-lane row and K guards, NW warps a block on one col tile.
//     w4a16_gemv_lean_kernel  M <= 16: the gemv kernel's loop on a diet, where G = 128, one
//                          split and whole groups a warp (MT = 2 for M 9..16); M 17..64 at
//                          K 4096 / 12288 and N > 4080 with MT = 4, 6 or 8, at M 17..32 also
//                          other K of whole groups a warp (use_lean_rows).
//     w4a16_decode_kernel  other M <= 64 (make_plan: to 48, and to 64 unless the mma grid
//                          fills the GPU twice; 16-row blocks, MT = 2, above 8 rows):
//                          weight-streaming.
//                          The weight tile is mma.m16n8k16's A
//                          operand (16 columns x 16 k), the activations its B operand (k x
//                          8 rows), so no tensor-core work is spent on absent rows beyond 8
//                          (or 16).  Each lane streams 16-byte tiles of its warp's columns;
//                          the 8 warps of a block split K and sum in shared memory in a fixed
//                          order; split-K across blocks writes fp32 partials to the caller's
//                          workspace and w4a16_splitk_reduce_kernel sums them in split order.
//     w4a16_mma_kernel     GATEDNORM_W4A16_KERNEL=mma only (the reference order of the one
//                          below): 64 x 64 output tiles, activations as the A operand and
//                          the dequantized tile as B.
//     w4a16_mma_wide_kernel  M > 64, and M 49..64 where make_plan says: 64 x 128 tiles,
//                          each warp 64 x 32 (a dequantized pair feeds twice the mmas), the
//                          activations staged in shared memory by cp.async; the same sums in
//                          the same order as w4a16_mma_kernel (the same bits).
//   AMD: w4a16_amd_kernel  one kernel for every M (16 rows a block): MFMA 16x16x16 on CDNA
//                          (wave64), WMMA 16x16x16 on RDNA 3 (wave32), the weight tile as the
//                          A operand again; dequantization in fp32 through numerics.h.
//
// Dequantization (ops.md section 4): the 16-bit pattern base | q is base + q exactly
// (numerics.h int4_magic_base), so (base | q) - (base | z) = q - z is exact and the multiply
// by the 16-bit scale is the only rounding: the same bits as w4a16_dequant_bits.
#pragma once
#include "numerics.h"
#include "port.h"
#include "w4a16_layout.h"

namespace gn {

struct W4a16Args {
    const uint8_t *w = nullptr;    // tiled weights (tile (nt, kc) at (nt * kchunks + kc) * 512)
    const uint8_t *se = nullptr;   // scale entries (w + weight_bytes)
    const char *a = nullptr;       // [M, K] activations
    int64_t a_sm = 0;              // row stride in bytes
    const char *bias = nullptr;
    int bias_dtype = 0;
    char *out = nullptr;
    int64_t o_sm = 0;              // row stride in bytes
    int out_dtype = 0;
    float *ws = nullptr;           // [nsplit, M, N] fp32 partials when nsplit > 1
    int32_t m = 0, n = 0, k = 0;
    int32_t ntiles = 0, kchunks = 0, ngroups = 0, gshift = 0;
    int32_t split_chunks = 0;      // k chunks a split-K part, ceil(kchunks / nsplit) (w4_split_chunks)
    int32_t pdl = 0;               // launched with programmatic dependent launch (w4_pdl_*)
};

// Programmatic dependent launch (params.pdl, CUDA sm_90+).  A kernel launched so may start
// while the previous kernel on the stream finishes; it waits for that grid (and its memory)
// before touching memory, and releases the next PDL-launched grid once its main loop is
// done, so that grid's launch and first wait overlap this one's reduction and stores.  Run
// 64 measured the alternatives: a release at the start let the next grid's blocks take the
// free slots while this grid still streamed (4096x6144: 10% slower than no PDL), and an L2
// prefetch of the weight before the wait (safe: no data reaches the SM) cost 3-17%.  Both
// hooks are no-ops without the launch attribute.
// The wait is unconditional, and every load coherent (w4_ld, gn_load_b128_stream): under
// `if (p.pdl)` ptxas (CUDA 13) issued the lean kernels' first weight, scale and activation
// loads, then ld.global.nc (which it may move as reads of memory nothing writes), above the
// branch, so with PDL they could read the previous grid's output before it was written.
// scripts/pdl_order_check.py checks every kernel's SASS for both.
__device__ __forceinline__ void w4_pdl_wait() { gn_wait_prior_grid(); }
__device__ __forceinline__ void w4_pdl_release(const W4a16Args &p) {
    if (p.pdl) gn_allow_next_grid();
}

// A plain (coherent) load of the activations and scale entries.  Not __ldg: a non-coherent
// load (ld.global.nc) promises that nothing writes the data while the kernel runs, which a
// PDL-launched GEMM cannot promise (the previous grid may still be writing its activations),
// and the compiler may issue such loads above griddepcontrol.wait.  Measured cost: run 123.
template <typename T>
__device__ __forceinline__ T w4_ld(const T *p) {
    return *p;
}

// Chunks [lo, hi) of part `i` of `parts` of the range [lo0, hi0).
__device__ __forceinline__ void w4_split_range(int lo0, int hi0, int i, int parts, int *lo, int *hi) {
    const int per = (hi0 - lo0 + parts - 1) / parts;
    *lo = min(hi0, lo0 + i * per);
    *hi = min(hi0, *lo + per);
}

// The k chunks of split-K part `split`: w4_split_range(0, kchunks, split, nsplit), from the
// host's ceil(kchunks / nsplit), so no kernel divides by the split count before its first
// load (the division cost the gemv kernel 2-5%, run 58).
__device__ __forceinline__ void w4_split_chunks(const W4a16Args &p, int split, int *lo, int *hi) {
    *lo = min(p.kchunks, split * p.split_chunks);
    *hi = min(p.kchunks, *lo + p.split_chunks);
}

// The epilogue of one output: the fp32 sum (+ bias), rounded once; or the split's partial.
__device__ __forceinline__ void w4_emit(const W4a16Args &p, int split, int nsplit, int m, int n, float acc) {
    if (m >= p.m || n >= p.n) return;
    if (nsplit > 1) {
        p.ws[(int64_t(split) * p.m + m) * p.n + n] = acc;
        return;
    }
    if (p.bias) acc += load_as_f32(p.bias + int64_t(n) * dtype_size(p.bias_dtype), p.bias_dtype);
    store_from_f32(p.out + int64_t(m) * p.o_sm + int64_t(n) * dtype_size(p.out_dtype), p.out_dtype, acc);
}

// out[m, n] = sum over splits s (in order) of ws[s, m, n] (+ bias), rounded once.
__global__ void w4a16_splitk_reduce_kernel(const W4a16Args p, int nsplit) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= int64_t(p.m) * p.n) return;
    const int m = int(i / p.n), n = int(i % p.n);
    float acc = 0.0f;
    for (int s = 0; s < nsplit; ++s) acc += p.ws[(int64_t(s) * p.m + m) * p.n + n];
    w4_emit(p, 0, 1, m, n, acc);
}

// Prepack: one thread per 16-byte lane block of a tile, then one per scale entry.
__global__ void w4a16_prepack_kernel(const W4Plain w, const W4Tiled t, uint8_t *packed, int dt) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t lanes = t.ntiles * t.kchunks * 32;
    if (i < lanes) {
        const int lane = int(i & 31);
        const int64_t tile = i >> 5;
        uint32_t words[4];
        w4_pack_lane(w, t, tile / t.kchunks, tile % t.kchunks, lane, words);
        *reinterpret_cast<uint4 *>(packed + i * 16) = make_uint4(words[0], words[1], words[2], words[3]);
        return;
    }
    const int64_t e = i - lanes;
    if (e >= t.ntiles * t.ngroups * 8) return;
    uint16_t v[4];
    const int g = int(e & 7);
    const int64_t ng = e >> 3;
    w4_pack_entry(w, t, ng / t.ngroups, ng % t.ngroups, g, dt, v);
    uint8_t *dst = packed + t.weight_bytes + e * t.entry_bytes;
    *reinterpret_cast<uint32_t *>(dst) = uint32_t(v[0]) | (uint32_t(v[1]) << 16);
    if (t.entry_bytes == 8) *reinterpret_cast<uint32_t *>(dst + 4) = uint32_t(v[2]) | (uint32_t(v[3]) << 16);
}

#if defined(GN_PLATFORM_CUDA)
// ------------------------------------------------------------------------------ NVIDIA
// Packed 16-bit helpers (DT = kBF16 / kF16), all through fma.rn so that sm_80 has them:
// x * 1 + y (exact for the integer difference) and x * s + (-0) (one rounding; -0 keeps
// the sign of an exact zero product, as IEEE multiplication does).
template <int DT>
__device__ __forceinline__ uint32_t w4_fma2(uint32_t x, uint32_t y, uint32_t z) {
    uint32_t r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (DT == kBF16) asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(z));
    else asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(z));
#else
    (void)x; (void)y; (void)z;
    r = 0;
    __trap();  // never launched: the GEMM requires compute capability 8.0
#endif
    return r;
}

template <int DT>
struct W4Consts {
    static constexpr uint32_t kBase2 = DT == kBF16 ? 0x43004300u : 0x64006400u;  // (128, 128) / (1024, 1024)
    static constexpr uint32_t kOne2 = DT == kBF16 ? 0x3f803f80u : 0x3c003c00u;   // (1, 1)
    static constexpr uint32_t kNegZero2 = 0x80008000u;
    static constexpr uint32_t kNegSym2 = kBase2 ^ 0x80008000u ^ 0x00080008u;     // -(base + 8): no zero points
};

// (word & mask) | base as one LOP3.  Written as `&` then `|`, nvcc emitted two (SASS allows
// one immediate an instruction, and ptxas did not put the other in a register): run 69's
// Nsight count, 16 of the lean loop's 100 instructions a chunk.
template <uint32_t MASK, uint32_t BASE>
__device__ __forceinline__ uint32_t w4_mask_or(uint32_t word) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(word), "n"(MASK), "n"(BASE));  // 0xea: (a & b) | c
    return r;
}

// Two weights of one column: codes at bits 0-3 and 16-19 of `word` -> 16-bit w16 pair.
// nzb2: -(base | z) in both halves; s2: the scale in both halves.
template <int DT>
__device__ __forceinline__ uint32_t w4_dequant2(uint32_t word, uint32_t nzb2, uint32_t s2) {
    const uint32_t v = w4_mask_or<0x000f000fu, W4Consts<DT>::kBase2>(word);
    const uint32_t d = w4_fma2<DT>(v, W4Consts<DT>::kOne2, nzb2);  // q - z, exact
    return w4_fma2<DT>(d, s2, W4Consts<DT>::kNegZero2);            // (q - z) * s, one rounding
}

// D += A (16 x 16, row) * B (16 x 8, col), fp32 accumulation.
template <int DT>
__device__ __forceinline__ void w4_mma(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (DT == kBF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)c; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
    __trap();
#endif
}

// The scale entry of a thread for one (col tile, group): per-half scale and -(base | z)
// pairs.  ZP: entry = {s_g, s_g8, zb_g, zb_g8} (8 bytes); else {s_g, s_g8} (4 bytes).
template <int DT, bool ZP>
struct W4Scale {
    uint32_t raw_s = 0, raw_z = 0;
    static constexpr int kEntryBytes = ZP ? 8 : 4;
    // The entry at `entry` (an address in the scale area).
    __device__ __forceinline__ void load_entry(const uint8_t *entry) {
        if constexpr (ZP) {
            const uint2 v = w4_ld(reinterpret_cast<const uint2 *>(entry));
            raw_s = v.x;
            raw_z = v.y;
        } else {
            raw_s = w4_ld(reinterpret_cast<const uint32_t *>(entry));
        }
    }
    __device__ __forceinline__ void load(const W4a16Args &p, int ct, int gi, int g, bool ok) {
        if (ok) load_entry(p.se + ((int64_t(ct) * p.ngroups + gi) * 8 + g) * kEntryBytes);
    }
    __device__ __forceinline__ uint32_t s_lo() const { return __byte_perm(raw_s, 0, 0x1010); }
    __device__ __forceinline__ uint32_t s_hi() const { return __byte_perm(raw_s, 0, 0x3232); }
    __device__ __forceinline__ uint32_t nz_lo() const {
        if constexpr (ZP) return __byte_perm(raw_z, 0, 0x1010) ^ 0x80008000u;
        return W4Consts<DT>::kNegSym2;
    }
    __device__ __forceinline__ uint32_t nz_hi() const {
        if constexpr (ZP) return __byte_perm(raw_z, 0, 0x3232) ^ 0x80008000u;
        return W4Consts<DT>::kNegSym2;
    }
};

__device__ __forceinline__ uint32_t w4_word(const uint4 &v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

// 16 activations of one row at k0 .. k0 + 15 (8 words), zeros for absent rows / k >= K.
__device__ __forceinline__ void w4_load_act16(const W4a16Args &p, int row, int k0, uint32_t out[8]) {
    uint4 lo = make_uint4(0u, 0u, 0u, 0u), hi = lo;
    if (row < p.m && k0 < p.k) {
        const uint4 *src = reinterpret_cast<const uint4 *>(p.a + int64_t(row) * p.a_sm + int64_t(k0) * 2);
        lo = w4_ld(src);
        hi = w4_ld(src + 1);
    }
    out[0] = lo.x; out[1] = lo.y; out[2] = lo.z; out[3] = lo.w;
    out[4] = hi.x; out[5] = hi.y; out[6] = hi.z; out[7] = hi.w;
}

// One k chunk of a lane: its 16 weight bytes dequantized once with its scale entry, then
// four mmas for each of MT 8-row blocks against that block's 16 activations (act[mt], the
// B-operand words), accumulated into acc[mt].  Every NVIDIA decode-style kernel's inner step.
template <int DT, bool ZP, int MT>
__device__ __forceinline__ void w4_chunk_mma_rows(float (&acc)[MT][4], const uint4 &wq, const W4Scale<DT, ZP> &sc, const uint32_t (&act)[MT][8]) {
    const uint32_t slo = sc.s_lo(), shi = sc.s_hi(), zlo = sc.nz_lo(), zhi = sc.nz_hi();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const uint32_t word = w4_word(wq, j);
        const uint32_t a0 = w4_dequant2<DT>(word, zlo, slo);        // column g,     k + 0, 1
        const uint32_t a1 = w4_dequant2<DT>(word >> 4, zhi, shi);   // column g + 8, k + 0, 1
        const uint32_t a2 = w4_dequant2<DT>(word >> 8, zlo, slo);   // column g,     k + 2, 3
        const uint32_t a3 = w4_dequant2<DT>(word >> 12, zhi, shi);  // column g + 8, k + 2, 3
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) w4_mma<DT>(acc[mt], a0, a1, a2, a3, act[mt][2 * j], act[mt][2 * j + 1]);
    }
}

// The same for one 8-row block whose 16 activations are read at `act` (two 16-byte loads
// through L1): the gemv kernels' step.
template <int DT, bool ZP>
__device__ __forceinline__ void w4_chunk_mma(float (&acc)[4], const uint4 &wq, const W4Scale<DT, ZP> &sc, const uint4 *act) {
    const uint4 alo = w4_ld(act), ahi = w4_ld(act + 1);
    const uint32_t b[1][8] = {{alo.x, alo.y, alo.z, alo.w, ahi.x, ahi.y, ahi.z, ahi.w}};
    w4_chunk_mma_rows<DT, ZP, 1>(*reinterpret_cast<float(*)[1][4]>(&acc), wq, sc, b);
}

constexpr int kW4DecodeWarps = 8;
constexpr int kW4DecodeThreads = kW4DecodeWarps * 32;
constexpr int kW4DecodeBlocksPerSm = 2;      // the launch bound: registers for two blocks an SM
constexpr int kW4DecodeBlocksPerSmLean = 3;  // the 80-register builds (U = 2, no spills): three

// grid: (ceil(ntiles / WN) x row blocks, nsplit), the row block (8 MT rows; ceil(M / (8 MT))
// of them) varying fastest: the blocks of one col tile's row blocks start together, so its
// weight bytes come from DRAM once and from L2 for the others (M 17..64).  MT: 8-row blocks (1 or 2);
// WN: col tiles per warp; U: k chunks per batch of loads (double-buffered); ACC: accumulator
// sets (chunk u of a batch adds into set u % ACC, the sets summed in order at the end), so
// that ACC mma chains run side by side (the library launches ACC = 1: 2 and 4 were no faster,
// run 44); BPS: the blocks an SM the launch bound asks registers for (2, or 3 for the
// 80-register builds of hip/w4a16.hip's make_plan).
template <int DT, bool ZP, int MT, int WN, int U, int ACC = 1, int BPS = kW4DecodeBlocksPerSm>
__global__ void __launch_bounds__(kW4DecodeThreads, BPS) w4a16_decode_kernel(const W4a16Args p) {
    static_assert(U % ACC == 0, "every accumulator set takes the same chunks of a batch");
    __shared__ float red[kW4DecodeWarps][WN * MT * 4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // PDL (w4_pdl_*) with both hooks unconditional: the wait returns at once in a grid
    // launched without the attribute, and the release comes after the last store (so at
    // pdl = 0 it is what the grid's end does anyway).  Under `if (p.pdl)` the 80-register
    // two-tile build spilled.
    gn_wait_prior_grid();
    const int g = lane >> 2, t = lane & 3;
    // MT = 1 is for M <= 8: one row block (and the 80-register two-tile build spills with the
    // division below).
    const int rblocks = MT == 1 ? 1 : (p.m + 8 * MT - 1) / (8 * MT);
    const int tile_block = MT == 1 ? int(blockIdx.x) : int(blockIdx.x) / rblocks;
    const int ct0 = tile_block * WN;
    const int split = blockIdx.y, nsplit = gridDim.y;
    const int m0 = (int(blockIdx.x) - tile_block * rblocks) * 8 * MT;
    int c_lo, c_hi, w_lo, w_hi;
    w4_split_chunks(p, split, &c_lo, &c_hi);
    w4_split_range(c_lo, c_hi, warp, kW4DecodeWarps, &w_lo, &w_hi);

    float accs[ACC][WN][MT][4];
#pragma unroll
    for (int a = 0; a < ACC; ++a)
#pragma unroll
        for (int i = 0; i < WN; ++i)
#pragma unroll
            for (int j = 0; j < MT; ++j) accs[a][i][j][0] = accs[a][i][j][1] = accs[a][i][j][2] = accs[a][i][j][3] = 0.0f;

    // Loads are predicated only on the col tile, and not at all at one col tile a warp (a
    // predicated load needs its registers zeroed first: instructions in every chunk of the
    // loop for what only tails need).  A chunk past the warp's range reads its last chunk
    // again, which the compute loop never uses (it stops at w_hi).  Clamping the col tile too
    // (its outputs are dropped by w4_emit) spilled the 80-register two-tile build.  A double
    // buffer without the register copy (two register sets in turn) fits the one-tile builds
    // but ran 2-3% slower (run 51), so the copy stays.
    bool ct_ok[WN];
    const uint8_t *wbase[WN];
#pragma unroll
    for (int i = 0; i < WN; ++i) {
        ct_ok[i] = WN == 1 || ct0 + i < p.ntiles;  // one col tile a warp: the grid has no extra block
        wbase[i] = p.w + int64_t(ct0 + i) * p.kchunks * kW4TileBytes + lane * 16;
    }

    uint4 wq[U][WN];
    W4Scale<DT, ZP> sc[U][WN];
    auto load_batch = [&](int c) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = min(c + u, w_hi - 1);
            const int gi = (kc * kW4TileK + 16 * t) >> p.gshift;
#pragma unroll
            for (int i = 0; i < WN; ++i) {
                wq[u][i] = gn_load_b128_stream(wbase[i] + int64_t(kc) * kW4TileBytes, ct_ok[i]);
                sc[u][i].load(p, ct0 + i, gi, g, ct_ok[i]);
            }
        }
    };

    if (w_lo < w_hi) load_batch(w_lo);
    for (int c = w_lo; c < w_hi; c += U) {
        uint4 cw[U][WN];
        W4Scale<DT, ZP> cs[U][WN];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int i = 0; i < WN; ++i) {
                cw[u][i] = wq[u][i];
                cs[u][i] = sc[u][i];
            }
        if (c + U < w_hi) load_batch(c + U);  // the next batch is in flight while this one computes
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = c + u;
            if (kc >= w_hi) break;
            uint32_t act[MT][8];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) w4_load_act16(p, m0 + 8 * mt + g, kc * kW4TileK + 16 * t, act[mt]);
#pragma unroll
            for (int i = 0; i < WN; ++i) w4_chunk_mma_rows<DT, ZP, MT>(accs[u % ACC][i], cw[u][i], cs[u][i], act);
        }
    }
    float (&acc)[WN][MT][4] = accs[0];
#pragma unroll
    for (int a = 1; a < ACC; ++a)
#pragma unroll
        for (int i = 0; i < WN; ++i)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[i][mt][r] += accs[a][i][mt][r];

    // acc[i][mt][r] is out[m0 + 8 mt + 2 t + (r & 1), 16 (ct0 + i) + g + 8 (r >> 1)]
#pragma unroll
    for (int i = 0; i < WN; ++i)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 4; ++r) red[warp][(i * MT + mt) * 4 + r][lane] = acc[i][mt][r];
    __syncthreads();
    for (int e = threadIdx.x; e < WN * MT * 4 * 32; e += kW4DecodeThreads) {
        const int idx = e >> 5, l = e & 31;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < kW4DecodeWarps; ++w) s += red[w][idx][l];  // fixed order
        const int i = idx / (MT * 4), mt = (idx / 4) % MT, r = idx & 3;
        const int n = 16 * (ct0 + i) + (l >> 2) + 8 * (r >> 1);
        const int m = m0 + 8 * mt + 2 * (l & 3) + (r & 1);
        w4_emit(p, split, nsplit, m, n, s);
    }
    gn_allow_next_grid();
}


// The end of a gemv-style kernel (every thread of the block calls it): warp `warp`'s mma
// sums acc[mt][r] = out[8 mt + 2 t + (r & 1), 16 ct + g + 8 (r >> 1)] (lane = 4 g + t; MT
// 8-row blocks) go to shared memory; then each of the col tile's MT x 4 entries (one
// fragment register of the 32 lanes) is added up by one of its KS warps (entry e by the warp
// with kpart == e % KS), over the KS warps in warp order (the same order every run, whichever
// warp adds it), and emitted, or written as the split's partial.  An entry whose rows
// 8 mt + (r & 1) + {0, 2, 4, 6} all lie at or past M is skipped (a uniform branch).  Spread
// over warps, the last step is min(KS, MT x 4) times shorter than one warp adding every
// entry (at M = 16 and 16 warps that warp read 128 partials a lane while the block held its SM).
// row0: the block's first output row (the lean loop's second row group at M 33..64; else 0).
template <int NW, int KS, int MT>
__device__ __forceinline__ void w4_gemv_finish(const W4a16Args &p, float (&red)[NW][MT * 4][32], const float (&acc)[MT][4], int warp,
                                               int ct, int kpart, int split, int nsplit, int row0 = 0) {
    constexpr int kEntries = MT * 4;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) red[warp][4 * mt + r][lane] = acc[mt][r];
    __syncthreads();
    if (ct >= p.ntiles) return;
    const int first = warp - kpart;  // the col tile's first warp
#pragma unroll
    for (int e0 = 0; e0 < kEntries; e0 += KS) {
        const int e = e0 + kpart, mt = e >> 2, r = e & 3;
        if (e >= kEntries || row0 + 8 * mt + (r & 1) >= p.m) continue;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < KS; ++w) s += red[first + w][e][lane];
        w4_emit(p, split, nsplit, row0 + 8 * mt + 2 * t + (r & 1), 16 * ct + g + 8 * (r >> 1), s);
    }
}
// One 8-row block (the gemv kernel's float[4] sums).
template <int NW, int KS>
__device__ __forceinline__ void w4_gemv_finish(const W4a16Args &p, float (&red)[NW][4][32], const float (&acc)[4], int warp, int ct,
                                               int kpart, int split, int nsplit) {
    w4_gemv_finish<NW, KS, 1>(p, red, *reinterpret_cast<const float(*)[1][4]>(&acc), warp, ct, kpart, split, nsplit);
}

// M <= 8 with K a multiple of 64 (run 56): the decode kernel without what only other
// shapes need.  The activations come from row min(g, M - 1) unconditionally: the mma column
// of an absent row computes a copy of row M - 1's sums, which w4_emit never writes, so the
// loop has no per-lane branch and no zeroing; with no K tail every chunk is whole.  KS of a
// block's NW warps share a col tile's K range (NW / KS col tiles a block; the library
// launches KS = NW: 8, or 16 for few col tiles, which doubles the warps in flight), U chunks
// a batch double-buffered in registers as above; 59 registers at U = 2 (the decode kernel's
// build: 80), so four 8-warp blocks an SM fit.  Same numerics as w4a16_decode_kernel and, at
// KS = NW = 8, the same summation order as it at MT = 1, WN = 1.
template <int DT, bool ZP, int KS, int U, int BPS, int NW = kW4DecodeWarps>
__global__ void __launch_bounds__(NW * 32, BPS) w4a16_gemv_kernel(const W4a16Args p) {
    static_assert(NW % KS == 0, "whole col tiles a block");
    constexpr int kColTiles = NW / KS;
    constexpr int kEntry = W4Scale<DT, ZP>::kEntryBytes;
    __shared__ float red[NW][4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ct = blockIdx.x * kColTiles + warp / KS, kpart = warp % KS;
    const int split = blockIdx.y, nsplit = gridDim.y;
    int c_lo, c_hi, lo, hi;
    w4_split_chunks(p, split, &c_lo, &c_hi);
    w4_split_range(c_lo, c_hi, kpart, KS, &lo, &hi);
    if (ct >= p.ntiles) hi = lo;  // past the last col tile: no chunks, but the block's sync below
    w4_pdl_wait();
    const uint8_t *wb = p.w + int64_t(ct) * p.kchunks * kW4TileBytes + lane * 16;
    const uint8_t *sb = p.se + (int64_t(ct) * p.ngroups * 8 + g) * kEntry;
    const char *ab = p.a + int64_t(min(g, p.m - 1)) * p.a_sm + 32 * t;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    uint4 wq[U];
    W4Scale<DT, ZP> sq[U];
    auto load_batch = [&](int c) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = min(c + u, hi - 1);  // past the range: the last chunk again, never used
            wq[u] = gn_load_b128_stream(wb + int64_t(kc) * kW4TileBytes, true);
            sq[u].load_entry(sb + int64_t((kc * kW4TileK + 16 * t) >> p.gshift) * (8 * kEntry));
        }
    };
    if (lo < hi) load_batch(lo);
    for (int c = lo; c < hi; c += U) {
        uint4 cw[U];
        W4Scale<DT, ZP> cs[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            cw[u] = wq[u];
            cs[u] = sq[u];
        }
        if (c + U < hi) load_batch(c + U);  // the next batch is in flight while this one computes
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kc = c + u;
            if (kc >= hi) break;
            w4_chunk_mma<DT, ZP>(acc, cw[u], cs[u], reinterpret_cast<const uint4 *>(ab + int64_t(kc) * (kW4TileK * 2)));
        }
    }
    w4_pdl_release(p);
    w4_gemv_finish<NW, KS>(p, red, acc, warp, ct, kpart, split, nsplit);
}

// The lean loop's streams for a warp whose K range starts at chunk lo of col tile ct: this
// lane's 16 bytes of each weight chunk, its scale entries (G = 128: chunk kc's group kc / 2),
// each 8-row block's activations (rows past M read row M - 1: their sums are never emitted);
// and the accumulators, zeroed.
template <int MT, int kEntry>
__device__ __forceinline__ void w4_lean_start(const W4a16Args &p, int ct, int lo, const uint8_t *&wp, const uint8_t *&sp,
                                              const char *(&ap)[MT], float (&acc)[MT][4], int row0 = 0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    wp = p.w + (int64_t(ct) * p.kchunks + lo) * kW4TileBytes + lane * 16;
    sp = p.se + ((int64_t(ct) * p.ngroups + (lo >> 1)) * 8 + g) * kEntry;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        ap[mt] = p.a + int64_t(min(row0 + 8 * mt + g, p.m - 1)) * p.a_sm + 32 * t + int64_t(lo) * (kW4TileK * 2);
        acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
    }
}

// One chunk of the lean loop: each of MT 8-row blocks' 16 activations at ap[mt] + offset
// (two 16-byte loads through L1) against the chunk's weights, dequantized once.  At MT 4-8
// (M 17..64) ptxas hoists every activation load of the unrolled loop whatever order the
// source gives them (a form loading each row block's in turn took as many registers), so
// the builds' launch bounds leave room for them (hip/w4a16.hip, use_lean_rows).
template <int DT, bool ZP, int MT>
__device__ __forceinline__ void w4_lean_chunk(float (&acc)[MT][4], const uint4 &wq, const W4Scale<DT, ZP> &sc, const char *const (&ap)[MT],
                                              int offset) {
    uint32_t b[MT][8];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const uint4 *src = reinterpret_cast<const uint4 *>(ap[mt] + offset);
        const uint4 alo = w4_ld(src), ahi = w4_ld(src + 1);
        b[mt][0] = alo.x, b[mt][1] = alo.y, b[mt][2] = alo.z, b[mt][3] = alo.w;
        b[mt][4] = ahi.x, b[mt][5] = ahi.y, b[mt][6] = ahi.z, b[mt][7] = ahi.w;
    }
    w4_chunk_mma_rows<DT, ZP, MT>(acc, wq, sc, b);
}

// The gemv kernel's loop on a diet (run 65, the tuner's lean.gemv: 13.7% fewer instructions
// a chunk, 8.6-12.5% faster at the bench's four shapes), for G = 128, one split, and K
// ranges of whole groups a warp (kchunks a multiple of 2 NW: hip/w4a16.hip's use_gemv_lean):
// unpredicated weight loads from stepped pointers (no zeroing, no clamp, no per-chunk index
// arithmetic), one scale entry a batch (a batch's two chunks lie in one 128-k group),
// activations through stepped pointers.  One col tile a block, its K over the NW warps in
// w4a16_gemv_kernel's ranges and order, so at MT = 1 its sums are that kernel's bit for bit
// (tests compare them through GATEDNORM_W4A16_KERNEL=gemv).  MT = 2 (M 9..16): two 8-row
// blocks share each dequantized chunk, rows past M reading row M - 1 (never emitted); the
// tuner measured it 4-19% faster than the decode kernel at M = 16 (run 66; the library 3-18%,
// run 67).  An L2 prefetch hint 1-4 batches ahead moved it -4..+4% (run 67): not taken.
// 56-64 registers, no spills (the symmetric MT = 2 builds spilled one register before
// w4_mask_or's single LOP3).  MT = 4, 6, 8 (M 17..64, hip/w4a16.hip's use_lean_rows: K 4096
// or 12288, its own warps and compiled counts; MT = 4 on 4 warps with the runtime count at
// other K): the same loop, 124-255 registers, no spills.
// CPW > 0: the host saw kchunks == NW x CPW, so each warp owns exactly CPW chunks from warp x
// CPW (w4_split_range's range) and the loop unrolls whole: every load an immediate offset from
// the start pointers, no counter, no pointer steps, no copies between batches.  Same ranges,
// order and bits as CPW = 0 (the runtime trip count); 10-14% faster at M = 1 and 2-8% at M =
// 16 in the tuner (run 71, its lean.full), 15% at M = 32 (run 134, K 4096).
// RG = 2 (M 33..64 at K other than 4096 / 12288, MT = 4): two blocks a col tile, side by side
// in the grid (the row group varying fastest, so the second block's weight reads find the
// first's in L2), rows 0..31 and 32..63; each row group's sums are those of a GEMM of its
// rows alone on the RG = 1 build (same ranges, order, bits).
// The lean loop of one block on MA of its row blocks (MA <= MT, the block's shared memory
// sized for MT): the row blocks past M are not run at all, so a block of the second row
// group at M 33..40 loads and multiplies for 8 rows, not 32 (the one group at M 17..24 for
// 24).  Each row block's sums are the same whatever MA (a row block's mma chain
// depends only on its own activations), so the bits are those of MA = MT.
template <int DT, bool ZP, int MA, int MT, int NW, int CPW>
__device__ __forceinline__ void w4_lean_rows_body(const W4a16Args &p, float (&red)[NW][MT * 4][32], int warp, int ct, int row0) {
    static_assert(MA >= 1 && MA <= MT, "active row blocks within the build's");
    constexpr int kEntry = W4Scale<DT, ZP>::kEntryBytes;
    int lo, hi;
    if constexpr (CPW > 0) {
        lo = warp * CPW;
        hi = lo + CPW;
    } else {
        w4_split_range(0, p.kchunks, warp, NW, &lo, &hi);
    }
    const int chunks = CPW > 0 ? CPW : hi - lo;  // even, from an even lo (the host's condition)
    const uint8_t *wp, *sp;
    const char *ap[MA];
    float acc[MA][4];
    w4_lean_start<MA, kEntry>(p, ct, lo, wp, sp, ap, acc, row0);
    uint4 w0 = make_uint4(0u, 0u, 0u, 0u), w1 = w0;
    W4Scale<DT, ZP> sq;
    if (chunks > 0) {
        w0 = gn_load_b128_stream_all(wp);
        w1 = gn_load_b128_stream_all(wp + kW4TileBytes);
        sq.load_entry(sp);
    }
    if constexpr (CPW > 0) {  // every load an immediate offset from the start pointers
#pragma unroll
        for (int i = 0; i < CPW; i += 2) {
            const uint4 c0 = w0, c1 = w1;
            const W4Scale<DT, ZP> sc = sq;
            if (i + 2 < CPW) {  // the next batch in flight while this one computes
                w0 = gn_load_b128_stream_all(wp + (i + 2) * kW4TileBytes);
                w1 = gn_load_b128_stream_all(wp + (i + 3) * kW4TileBytes);
                sq.load_entry(sp + (i + 2) / 2 * (8 * kEntry));
            }
            w4_lean_chunk<DT, ZP, MA>(acc, c0, sc, ap, i * (kW4TileK * 2));
            w4_lean_chunk<DT, ZP, MA>(acc, c1, sc, ap, (i + 1) * (kW4TileK * 2));
        }
    } else {  // stepped pointers (a separate loop: one loop for both, nvcc 13 left MT = 1 rolled at CPW >= 8)
        for (int i = 0; i < chunks; i += 2) {
            const uint4 c0 = w0, c1 = w1;
            const W4Scale<DT, ZP> sc = sq;
            if (i + 2 < chunks) {
                wp += 2 * kW4TileBytes;
                sp += 8 * kEntry;
                w0 = gn_load_b128_stream_all(wp);
                w1 = gn_load_b128_stream_all(wp + kW4TileBytes);
                sq.load_entry(sp);
            }
            w4_lean_chunk<DT, ZP, MA>(acc, c0, sc, ap, 0);
            w4_lean_chunk<DT, ZP, MA>(acc, c1, sc, ap, kW4TileK * 2);
#pragma unroll
            for (int mt = 0; mt < MA; ++mt) ap[mt] += 2 * kW4TileK * 2;
        }
    }
    w4_pdl_release(p);
    // MA row blocks' partials in the first NW x MA x 4 x 32 floats of the block's buffer
    w4_gemv_finish<NW, NW, MA>(p, *reinterpret_cast<float(*)[NW][MA * 4][32]>(&red), acc, warp, ct, warp, 0, 1, row0);
}

// The kernel: the lean loop (above) on its block's col tile and row group.  At MT = 4 a block
// runs only the row blocks it has rows for (MA 3 at M 17..24; in the second row group MA 1,
// 2, 3 at M 33..40, 41..48, 49..56), so the second group at M 33 costs a quarter of a full
// one's activation loads and mma; the same bits (each row block's sums are its own chain).
template <int DT, bool ZP, int MT, int NW, int BPS, int CPW, int RG = 1>
__global__ void __launch_bounds__(NW * 32, BPS) w4a16_gemv_lean_kernel(const W4a16Args p) {
    static_assert(CPW % 2 == 0, "whole 128-k groups a warp");
    __shared__ float red[NW][MT * 4][32];
    const int warp = threadIdx.x >> 5;
    const int ct = int(blockIdx.x / RG), row0 = int(blockIdx.x % RG) * (8 * MT);  // RG 1: the block's col tile, row 0
    w4_pdl_wait();
    if constexpr (MT == 4) {
        // the row blocks this block has rows for (block-uniform: no divergence)
        const int active = (p.m - row0 + 7) >> 3;
        if constexpr (RG == 2) {  // one group serves M 17..32 only (3 or 4 row blocks): no dead bodies' registers
            if (active <= 1) return w4_lean_rows_body<DT, ZP, 1, MT, NW, CPW>(p, red, warp, ct, row0);
            if (active == 2) return w4_lean_rows_body<DT, ZP, 2, MT, NW, CPW>(p, red, warp, ct, row0);
        }
        if (active == 3) return w4_lean_rows_body<DT, ZP, 3, MT, NW, CPW>(p, red, warp, ct, row0);
    }
    w4_lean_rows_body<DT, ZP, MT, MT, NW, CPW>(p, red, warp, ct, row0);
}

// The mma kernels' pieces.  One word of a lane's col tile (w4_word) dequantized: columns g
// and g + 8 at two k pairs, as mma.m16n8k16's B operand takes them (b[0], b[2]: columns g;
// b[1], b[3]: columns g + 8).
template <int DT>
__device__ __forceinline__ void w4_dequant_b(uint32_t word, uint32_t zlo, uint32_t slo, uint32_t zhi, uint32_t shi, uint32_t (&b)[4]) {
    b[0] = w4_dequant2<DT>(word, zlo, slo);
    b[1] = w4_dequant2<DT>(word >> 4, zhi, shi);
    b[2] = w4_dequant2<DT>(word >> 8, zlo, slo);
    b[3] = w4_dequant2<DT>(word >> 12, zhi, shi);
}
// An m16 tile's A operand (a0, a2: row g; a1, a3: row g + 8) against one col tile's B.
template <int DT>
__device__ __forceinline__ void w4_mma_col_tile(float (&acc)[2][4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                const uint32_t (&b)[4]) {
    w4_mma<DT>(acc[0], a0, a1, a2, a3, b[0], b[2]);  // columns g
    w4_mma<DT>(acc[1], a0, a1, a2, a3, b[1], b[3]);  // columns g + 8
}
// The epilogue of a warp's MI m16 tiles x 2 col tiles: acc[i][c][h][r] is
// out[m0 + 16 i + g + 8 (r >> 1), 16 (ctbase + c) + 8 h + 2 t + (r & 1)].
template <int MI>
__device__ __forceinline__ void w4_mma_emit(const W4a16Args &p, const float (&acc)[MI][2][2][4], int m0, int ctbase, int g, int t) {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int r = 0; r < 4; ++r)
                    w4_emit(p, 0, 1, m0 + 16 * i + g + 8 * (r >> 1), 16 * (ctbase + c) + 8 * h + 2 * t + (r & 1), acc[i][c][h][r]);
}

// Any M > 16 under GATEDNORM_W4A16_KERNEL=mma (the plan takes the 64 x 128 kernel, which sums
// in this one's order: tests compare the two bit for bit): a 64 x 64 output tile per 128-thread block,
// warps 2 x 2 of 32 x 32.
constexpr int kW4MmaThreads = 128;
template <int DT, bool ZP>
__global__ void __launch_bounds__(kW4MmaThreads) w4a16_mma_kernel(const W4a16Args p) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;
    const int mbase = blockIdx.y * 64 + wm * 32;
    const int ctbase = blockIdx.x * 4 + wn * 2;
    w4_pdl_wait();
    float acc[2][2][2][4];  // [m16 tile][col tile][column half][fragment]
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int h = 0; h < 2; ++h) acc[i][c][h][0] = acc[i][c][h][1] = acc[i][c][h][2] = acc[i][c][h][3] = 0.0f;
    for (int kc = 0; kc < p.kchunks; ++kc) {
        const int k0 = kc * kW4TileK + 16 * t;
        const int gi = k0 >> p.gshift;
        uint4 wq[2];
        W4Scale<DT, ZP> sc[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const bool ok = ctbase + c < p.ntiles;
            wq[c] = gn_load_b128_stream(p.w + (int64_t(ctbase + c) * p.kchunks + kc) * kW4TileBytes + lane * 16, ok);
            sc[c].load(p, ctbase + c, gi, g, ok);
        }
        uint32_t act[2][2][8];  // [m16 tile][row g / g + 8][words]
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            w4_load_act16(p, mbase + 16 * i + g, k0, act[i][0]);
            w4_load_act16(p, mbase + 16 * i + g + 8, k0, act[i][1]);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            uint32_t b[2][4];
#pragma unroll
            for (int c = 0; c < 2; ++c) w4_dequant_b<DT>(w4_word(wq[c], j), sc[c].nz_lo(), sc[c].s_lo(), sc[c].nz_hi(), sc[c].s_hi(), b[c]);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int c = 0; c < 2; ++c)
                    w4_mma_col_tile<DT>(acc[i][c], act[i][0][2 * j], act[i][1][2 * j], act[i][0][2 * j + 1], act[i][1][2 * j + 1], b[c]);
        }
    }
    w4_pdl_release(p);
    w4_mma_emit<2>(p, acc, mbase, ctbase, g, t);
}

// cp.async (sm_80+) group accounting: the wide kernel's ring (and the tuner's).
__device__ __forceinline__ void w4_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void w4_cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// cp.async of SIZE (4, 8 or 16) bytes through L1 (sm_80+; .ca: the wide kernel copies 4-byte
// words, which .cg does not take; as w4_ld's loads, safe under PDL since it is issued after
// the wait, and nothing else in the grid writes what it reads), zero-filled where `ok` is
// false (source size 0: nothing is read).  KEEP_ALL: always read (no source-size operand).
template <int SIZE, bool KEEP_ALL = false>
__device__ __forceinline__ void w4_cp_async_ca(unsigned smem_addr, const void *gmem, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (KEEP_ALL)
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(smem_addr), "l"(gmem), "n"(SIZE) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(smem_addr), "l"(gmem), "n"(SIZE), "r"(ok ? SIZE : 0) : "memory");
#else
    (void)smem_addr; (void)gmem; (void)ok;
    __trap();
#endif
}

// M > 64 (make_plan): a 64 x 128 output tile per 128-thread block, each warp 64 rows x 2
// col tiles.  Against w4a16_mma_kernel (64 x 64, each warp 32 x 32 reading its activations
// from global memory): each dequantized weight pair feeds twice the mmas, the block's
// activations come through shared memory once for its four warps (a 3-stage cp.async
// ring), and the next chunk's weights and scales are loaded into registers before this
// chunk's mmas.
//
// The ring holds each chunk in the mma's A-fragment order, so one 16-byte shared read is
// one mma's A operand as it stands: for m16 tile i, step j (k 4 j .. 4 j + 3 of each lane's
// 16) and lane (g, t), the quad {row g word w, row g + 8 word w, row g word w + 1, row g + 8
// word w + 1} with w = 8 t + 2 j (a word: two 16-bit elements of a row's chunk).  Stored row
// by row (16-byte pieces of one row), a quad took two rows' reads and ptxas rebuilt it with
// four register moves before nearly every mma (run 154's SASS: 235 moves a chunk beside 64
// mmas, 41% of the loop).  The copy is by word (cp.async of 4 bytes) and swizzled: quad
// (i, j, g, t) sits at slot (4 g + t) ^ 2 j of its (i, j) block of 32, so both a warp's
// copy of rows g and g + 8 (16 words each) and its fragment reads hit 32 distinct banks.
// Rows past M are read as row M - 1 (their sums are never stored; an mma's rows do not
// mix), words past K as zeros.  Run 155 (H100): the loop went from 575 to 354 SASS
// instructions a chunk, the kernel 1.23-1.38x faster.
constexpr int kW4WideThreads = 128;
constexpr int kW4WideRows = 64;                         // rows a block
constexpr int kW4WideTiles = 8;                         // col tiles a block (2 a warp)
constexpr int kW4WideStages = 3;
constexpr int kW4WideStageBytes = kW4WideRows * kW4TileK * 2;  // 64 rows x 64 elements
// Byte offset of quad (i, j, g, t) in a stage.
__device__ __forceinline__ int w4_wide_quad(int i, int j, int g, int t) { return i * 2048 + j * 512 + (((4 * g + t) ^ (2 * j)) << 4); }
template <int DT, bool ZP>
__global__ void __launch_bounds__(kW4WideThreads, 3) w4a16_mma_wide_kernel(const W4a16Args p) {
    __shared__ __align__(16) uint8_t sa[kW4WideStages * kW4WideStageBytes];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.y * kW4WideRows;
    const int ctbase = blockIdx.x * kW4WideTiles + 2 * warp;
    const int kchunks = p.kchunks;
    w4_pdl_wait();
    // The copy: warp w stages m16 tile w, one copy rows g and g + 8 (lanes 0-15 / 16-31:
    // `half`) at one half of the chunk (words 16 hw + `word`), so a thread reads words
    // `word` and 16 + `word` of 8 rows: one pointer a row, stepped a chunk at a time.
    const int half = lane >> 4, word = lane & 15;
    const char *src[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) src[r] = p.a + int64_t(min(m0 + 16 * warp + r + 8 * half, p.m - 1)) * p.a_sm + 4 * word;
    // Its destinations: quad (warp, j, r, t) with t = 2 hw + word / 8, j = word % 8 / 2, at
    // position 2 e + half (e = word % 2); of the slot's bits that r sets (2-4) only bit 2
    // meets the swizzle, so an even and an odd base serve all 8 rows with immediate offsets.
    const int cj = (word & 7) >> 1, ce = word & 1;
    const unsigned sa_addr = static_cast<unsigned>(__cvta_generic_to_shared(sa));
    unsigned dst[2][2];  // [hw][row parity]
#pragma unroll
    for (int hw = 0; hw < 2; ++hw)
#pragma unroll
        for (int par = 0; par < 2; ++par)
            dst[hw][par] = sa_addr + w4_wide_quad(warp, cj, par, 2 * hw + (word >> 3)) + 4 * (2 * ce + half);
    auto stage_in = [&](int st, int kc) {
        const int64_t kbytes = int64_t(kc) * (kW4TileK * 2);
        const unsigned so = unsigned(st * kW4WideStageBytes);
        if ((kc + 1) * kW4TileK <= p.k) {
#pragma unroll
            for (int r = 0; r < 8; ++r)
#pragma unroll
                for (int hw = 0; hw < 2; ++hw)
                    w4_cp_async_ca<4, true>(dst[hw][r & 1] + so + 64 * (r & ~1), src[r] + kbytes + 64 * hw, true);
        } else {  // the last chunk of a K that is not a multiple of 64
#pragma unroll
            for (int hw = 0; hw < 2; ++hw) {
                const bool ok = kc * kW4TileK + 2 * (16 * hw + word) < p.k;
#pragma unroll
                for (int r = 0; r < 8; ++r)
                    w4_cp_async_ca<4>(dst[hw][r & 1] + so + 64 * (r & ~1), ok ? src[r] + kbytes + 64 * hw : p.a, ok);
            }
        }
    };
    stage_in(0, 0);
    w4_cp_async_commit();
    if (kchunks > 1) stage_in(1, 1);
    w4_cp_async_commit();
    // This lane's fragment offsets of m16 tile 0 (tile i: + 2048 i), made once: written as
    // w4_wide_quad(i, j, g, t) in the loop they cost 6 more instructions in it (local SASS).
    int rd[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) rd[j] = w4_wide_quad(0, j, g, t);

    float acc[4][2][2][4];  // [m16 tile][col tile][column half][fragment]
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int h = 0; h < 2; ++h) acc[i][c][h][0] = acc[i][c][h][1] = acc[i][c][h][2] = acc[i][c][h][3] = 0.0f;
    bool tile_ok[2];
    uint4 wq[2];
    W4Scale<DT, ZP> sc[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        tile_ok[c] = ctbase + c < p.ntiles;
        wq[c] = gn_load_b128_stream(p.w + int64_t(ctbase + c) * kchunks * kW4TileBytes + lane * 16, tile_ok[c]);
        sc[c].load(p, ctbase + c, (16 * t) >> p.gshift, g, tile_ok[c]);
    }
    int st_read = 0;  // chunk kc's stage; chunk kc + 2 refills the one before it
    for (int kc = 0; kc < kchunks; ++kc) {
        // The next chunk's weights and scales first: in flight during this chunk's mmas.
        uint4 wq_next[2];
        W4Scale<DT, ZP> sc_next[2];
        const bool more = kc + 1 < kchunks;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            wq_next[c] = gn_load_b128_stream(p.w + (int64_t(ctbase + c) * kchunks + kc + 1) * kW4TileBytes + lane * 16, more && tile_ok[c]);
            sc_next[c].load(p, ctbase + c, ((kc + 1) * kW4TileK + 16 * t) >> p.gshift, g, more && tile_ok[c]);
        }
        // Stage kc has landed (only chunk kc + 1's group may still be in flight), for every
        // thread once past the barrier, which also orders the last chunk's reads of the
        // stage refilled next before its refill.
        w4_cp_async_wait<1>();
        __syncthreads();
        if (kc + 2 < kchunks) stage_in(st_read == 0 ? kW4WideStages - 1 : st_read - 1, kc + 2);
        w4_cp_async_commit();  // (an empty group past the end keeps the count uniform)

        const uint8_t *stage = sa + st_read * kW4WideStageBytes;
        uint32_t slo[2], shi[2], zlo[2], zhi[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) slo[c] = sc[c].s_lo(), shi[c] = sc[c].s_hi(), zlo[c] = sc[c].nz_lo(), zhi[c] = sc[c].nz_hi();
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            uint4 af[4];  // [m16 tile]: the A operand of step j
#pragma unroll
            for (int i = 0; i < 4; ++i) af[i] = *reinterpret_cast<const uint4 *>(stage + rd[j] + i * 2048);
            uint32_t b[2][4];
#pragma unroll
            for (int c = 0; c < 2; ++c) w4_dequant_b<DT>(w4_word(wq[c], j), zlo[c], slo[c], zhi[c], shi[c], b[c]);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int c = 0; c < 2; ++c) w4_mma_col_tile<DT>(acc[i][c], af[i].x, af[i].y, af[i].z, af[i].w, b[c]);
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            wq[c] = wq_next[c];
            sc[c] = sc_next[c];
        }
        st_read = st_read == kW4WideStages - 1 ? 0 : st_read + 1;
    }
    w4_cp_async_wait<0>();  // nothing left in flight at exit (only empty groups remain)
    w4_pdl_release(p);
    w4_mma_emit<4>(p, acc, m0, ctbase, g, t);
}

#else
// --------------------------------------------------------------------------------- AMD
// CDNA 2 / 3 / 4 (the _1k bf16 MFMA; gfx908 lacks it: no W4A16 target there, see w4a16.hip).
#if defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || defined(__gfx950__)
#define GN_W4_MFMA 1
#endif
#if defined(__GFX11__)
#define GN_W4_WMMA 1
#endif

typedef short gn_short4 __attribute__((ext_vector_type(4)));
typedef _Float16 gn_half4 __attribute__((ext_vector_type(4)));
typedef short gn_short16 __attribute__((ext_vector_type(16)));
typedef _Float16 gn_half16 __attribute__((ext_vector_type(16)));
typedef float gn_float4 __attribute__((ext_vector_type(4)));
typedef float gn_float8 __attribute__((ext_vector_type(8)));

// CDNA: D[16 x 16] += A[16 x 16] B[16 x 16]; lane l holds A[l % 16][4 (l / 16) + i],
// B[4 (l / 16) + i][l % 16] (i = 0..3) and D[4 (l / 16) + i][l % 16].
template <int DT>
__device__ __forceinline__ gn_float4 w4_mfma(const uint16_t a[4], const uint16_t b[4], gn_float4 c) {
#if defined(GN_W4_MFMA)
    if constexpr (DT == kBF16) {
        const gn_short4 va = {short(a[0]), short(a[1]), short(a[2]), short(a[3])};
        const gn_short4 vb = {short(b[0]), short(b[1]), short(b[2]), short(b[3])};
        return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(va, vb, c, 0, 0, 0);
    } else {
        gn_half4 va, vb;
        for (int i = 0; i < 4; ++i) {
            va[i] = __builtin_bit_cast(_Float16, a[i]);
            vb[i] = __builtin_bit_cast(_Float16, b[i]);
        }
        return __builtin_amdgcn_mfma_f32_16x16x16f16(va, vb, c, 0, 0, 0);
    }
#else
    (void)a; (void)b;
    __builtin_trap();
    return c;
#endif
}

// RDNA 3: D[16 x 16] += A B; lane l holds A[l % 16][0..15], B[0..15][l % 16] (both halves of
// the wave hold the same) and D[2 v + l / 16][l % 16], v = 0..7.
template <int DT>
__device__ __forceinline__ gn_float8 w4_wmma(const uint16_t a[16], const uint16_t b[16], gn_float8 c) {
#if defined(GN_W4_WMMA)
    if constexpr (DT == kBF16) {
        gn_short16 va, vb;
        for (int i = 0; i < 16; ++i) {
            va[i] = short(a[i]);
            vb[i] = short(b[i]);
        }
        return __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(va, vb, c);
    } else {
        gn_half16 va, vb;
        for (int i = 0; i < 16; ++i) {
            va[i] = __builtin_bit_cast(_Float16, a[i]);
            vb[i] = __builtin_bit_cast(_Float16, b[i]);
        }
        return __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(va, vb, c);
    }
#else
    (void)a; (void)b;
    __builtin_trap();
    return c;
#endif
}

__device__ __forceinline__ uint32_t w4_word(const uint4 &v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

// The code of column half h, k = 16 t + 4 j + s in a lane word j (w4_nibble_pos).
__device__ __forceinline__ int w4_code(uint32_t word, int h, int s) { return (word >> (4 * w4_nibble_pos(h, s))) & 0xf; }

// Scale (16-bit bits) and zero point of column n of col tile ct in group gi.
template <bool ZP>
__device__ __forceinline__ void w4_amd_scale(const W4a16Args &p, int ct, int gi, int col, uint16_t *s, int *z) {
    const int g = col & 7, h = col >> 3;
    const int64_t e = (int64_t(ct) * p.ngroups + gi) * 8 + g;
    const uint16_t *ent = reinterpret_cast<const uint16_t *>(p.se + e * (ZP ? 8 : 4));
    *s = ent[h];
    *z = ZP ? int4_magic_code(ent[2 + h]) : 8;
}

// 4 consecutive activations of row `row` at k (zeros past M or K).
__device__ __forceinline__ void w4_amd_act4(const W4a16Args &p, int row, int k, uint16_t out[4]) {
    uint2 v = make_uint2(0u, 0u);
    if (row < p.m && k < p.k) v = *reinterpret_cast<const uint2 *>(p.a + int64_t(row) * p.a_sm + int64_t(k) * 2);
    out[0] = uint16_t(v.x); out[1] = uint16_t(v.x >> 16); out[2] = uint16_t(v.y); out[3] = uint16_t(v.y >> 16);
}

constexpr int kW4AmdWaves = 4;

// grid: (ntiles, nsplit, ceil(M / 16)); block: 4 waves of the device's wave size.  Each wave
// takes a quarter of the block's k chunks for 16 rows x 16 columns; the block sums its waves
// in a fixed order.
template <int DT, bool ZP, int WAVE>
__global__ void __launch_bounds__(kW4AmdWaves * WAVE) w4a16_amd_kernel(const W4a16Args p) {
    __shared__ float red[kW4AmdWaves][8][WAVE];
    const int lane = threadIdx.x % WAVE, wave = threadIdx.x / WAVE;
    const int r = lane & 15;
    const int ct = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y;
    const int m0 = blockIdx.z * 16;
    int c_lo, c_hi, w_lo, w_hi;
    w4_split_chunks(p, split, &c_lo, &c_hi);
    w4_split_range(c_lo, c_hi, wave, kW4AmdWaves, &w_lo, &w_hi);
    const int h = r >> 3, g = r & 7;
    const uint8_t *tiles = p.w + int64_t(ct) * p.kchunks * kW4TileBytes;
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (WAVE == 64) {
        // lane: column r of the tile, k = 16 q .. 16 q + 15 of each chunk (lane 4 g + q's bytes)
        const int q = lane >> 4;
        gn_float4 d = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int kc = w_lo; kc < w_hi; ++kc) {
            const uint4 wv = gn_load_b128_stream(tiles + int64_t(kc) * kW4TileBytes + (4 * g + q) * 16, true);
            const int k0 = kc * kW4TileK + 16 * q;
            uint16_t s16;
            int z;
            w4_amd_scale<ZP>(p, ct, k0 >> p.gshift, r, &s16, &z);
            for (int j = 0; j < 4; ++j) {
                uint16_t a[4], b[4];
                const uint32_t word = w4_word(wv, j);
                for (int s = 0; s < 4; ++s) a[s] = w4a16_dequant_bits(w4_code(word, h, s), z, s16, DT);
                w4_amd_act4(p, m0 + r, k0 + 4 * j, b);
                d = w4_mfma<DT>(a, b, d);
            }
        }
        for (int i = 0; i < 4; ++i) acc[i] = d[i];  // out[m0 + r, 16 ct + 4 q + i]
    } else {
        // lane: column r, all 64 k of each chunk (lanes 4 g + t of the tile); halves duplicate
        gn_float8 d = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int kc = w_lo; kc < w_hi; ++kc) {
            uint4 wv[4];
            uint16_t s16[4];
            int z[4];
            for (int t = 0; t < 4; ++t) {
                wv[t] = gn_load_b128_stream(tiles + int64_t(kc) * kW4TileBytes + (4 * g + t) * 16, true);
                w4_amd_scale<ZP>(p, ct, (kc * kW4TileK + 16 * t) >> p.gshift, r, &s16[t], &z[t]);
            }
            for (int j = 0; j < 4; ++j) {
                uint16_t a[16], b[16];
                for (int t = 0; t < 4; ++t) {
                    const uint32_t word = w4_word(wv[t], j);
                    for (int s = 0; s < 4; ++s) a[4 * t + s] = w4a16_dequant_bits(w4_code(word, h, s), z[t], s16[t], DT);
                    w4_amd_act4(p, m0 + r, kc * kW4TileK + 16 * t + 4 * j, b + 4 * t);
                }
                d = w4_wmma<DT>(a, b, d);
            }
        }
        for (int v = 0; v < 8; ++v) acc[v] = d[v];  // out[m0 + r, 16 ct + 2 v + lane / 16]
    }
    for (int v = 0; v < 8; ++v) red[wave][v][lane] = acc[v];
    __syncthreads();
    if (wave != 0) return;
    for (int v = 0; v < (WAVE == 64 ? 4 : 8); ++v) {
        float s = 0.0f;
        for (int w = 0; w < kW4AmdWaves; ++w) s += red[w][v][lane];  // fixed order
        const int n = 16 * ct + (WAVE == 64 ? 4 * (lane >> 4) + v : 2 * v + (lane >> 4));
        w4_emit(p, split, nsplit, m0 + r, n, s);
    }
}
#endif

}  // namespace gn
