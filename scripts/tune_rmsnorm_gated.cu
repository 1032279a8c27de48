// A/B of the gated RMSNorm vec kernel's launch shapes and access flags on one GPU, for
// NOTES.md: bf16 [T, H, 128] with a bf16 gate and weight, one-pass grids, each variant timed
// as the benchmark times the library: a CUDA graph of >= 20 launches over rotated input
// copies (>= 2x L2 per replay where the shape is small) writing one output buffer, median of
// 20 replays, in two passes (the second in reverse order).  Before it is timed, each
// variant's result on a NaN-poisoned output is compared with the first variant's (within
// 1 bf16 ulp, nothing unwritten); the exit status is 1 if any differs.  Variants: 4- or
// 8-element chunks, block sizes, register budgets (resident blocks), the gate loaded after
// the row's sum, cache hints; and an empty kernel: the floor a graph of dependent launches
// puts under any call.  Tried and dropped: a streaming grid, SMs x resident blocks walking
// the rows with the next row's loads in flight (run 14: never faster); two or four chunks a
// lane below 2^17 rows (runs 14, 21); x and z loaded past L1 and evict-first in L2 (run 17:
// 1-15% slower from 24k rows up, one output or one per set); FLA's 8 elements a thread in
// 256-thread blocks with z loaded after the sum, and out kept last in L2 (run 23: 6-15% slower).
// Shapes with a "z~" take z as a column slice of a [T, 4 * H * D] qkvz projection (rows not
// flat: the row -> (t, h) split); "out~" gives each input set its own output.
// Every call reads its input set's own weight, as in the benchmark.
// Not part of the library.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include \
//        -Ipybind_free_api/src scripts/tune_rmsnorm_gated.cu -o /tmp/tune && /tmp/tune [T:H ...]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "rmsnorm_gated_kernels.h"
#include "tuner_common.h"


using namespace gn;
constexpr int D = 128;

struct Set {
    char *x, *z, *w;  // w: each set's own weight copy, as the benchmark rotates weights too
    char *out;        // used by the shapes marked "out~" only: one output per set
};

__global__ void empty_kernel_no_hooks(const RmsnormGatedArgs a) {
    if (a.rows < 0) a.out[0] = 0;
}

struct Variant {
    const char *name;
    void (*kernel)(const RmsnormGatedArgs);
    int block, rows_per_block;
    bool computes;  // writes the op's result (checked before it is timed)
};

template <int LANES, int VEC, int BLOCK, int CPT = 1, int FLAGS = 0, int MIN_BLOCKS = kMinBlocksPerSM<kBF16, CPT>>
Variant vec_variant(const char *name) {
    return {name, rmsnorm_gated_vec_kernel<kBF16, kBF16, LANES, CPT, VEC, FLAGS, BLOCK, MIN_BLOCKS>, BLOCK, BLOCK / LANES, true};
}

bool g_wrong = false;  // a variant's result differed from the reference: exit status 1

// bf16 bits in an order where neighbouring values differ by 1 (NaN poison sorts far away).
int ordered_bf16(uint16_t b) { return (b & 0x8000) ? -int(b & 0x7fff) : int(b); }

// Largest difference in bf16 ulps between a variant's result and the reference (the first
// variant's result for the shape: the library's kernels, tested against float64 by pytest);
// -1 if any element is still the NaN poison.
int max_ulps(const std::vector<uint16_t> &got, const std::vector<uint16_t> &ref) {
    int worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if ((got[i] & 0x7fff) > 0x7f80) return -1;
        worst = std::max(worst, std::abs(ordered_bf16(got[i]) - ordered_bf16(ref[i])));
    }
    return worst;
}

// The variant's result (n elements at out, on the device) against the shape's reference, as
// a note for its line; the first result of a shape becomes the reference.
std::string check_result(const char *out, size_t n, std::vector<uint16_t> &ref) {
    std::vector<uint16_t> got(n);
    CHECK(cudaMemcpy(got.data(), out, n * 2, cudaMemcpyDeviceToHost));
    if (ref.empty()) {
        ref.swap(got);
        return "  (the reference)";
    }
    const int u = max_ulps(got, ref);
    if (u < 0 || u > 1) g_wrong = true;
    if (u < 0) return "  WRONG: outputs left unwritten";
    return u > 1 ? "  WRONG: " + std::to_string(u) + " ulps off" : "  (<= " + std::to_string(u) + " ulp)";
}

float time_variant(const Variant &v, const std::vector<Set> &sets, char *out, int T, int H, bool strided_z,
                   bool rotate_out, std::vector<uint16_t> &ref) {
    cudaFuncAttributes attr;
    CHECK(cudaFuncGetAttributes(&attr, v.kernel));
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, v.kernel, v.block, 0));
    const int rows = T * H;
    const unsigned grid = unsigned((rows + v.rows_per_block - 1) / v.rows_per_block);
    RmsnormGatedArgs a{};
    a.x_st = a.o_st = int64_t(H) * D * 2;
    a.z_st = int64_t(strided_z ? 4 : 1) * H * D * 2;
    a.x_sh = a.z_sh = a.o_sh = D * 2;
    a.x_sr = a.z_sr = a.o_sr = D * 2;
    a.flat_rows = strided_z ? 0 : 1;
    a.rows = rows;
    a.heads = H;
    a.heads_div = make_fast_div(uint32_t(H));
    a.dim = D;
    a.x_dtype = a.z_dtype = a.out_dtype = a.weight_dtype = kBF16;
    a.norm_before_gate = 1;
    a.activation = kSilu;
    a.eps = 1e-6f;
    a.inv_dim = 1.0f / D;
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(v.block);
    cfg.stream = s;
    auto use_set = [&](size_t i) {  // call i reads input set i % sets (and writes its output for out~)
        const Set &st = sets[i % sets.size()];
        a.x = st.x;
        a.z = st.z;
        a.weight = st.w;
        a.out = rotate_out ? st.out : out;
    };
    // One call on set 0 into a NaN-poisoned output, checked against the reference (the sums
    // of 4- and 8-element lanes round differently: 1 ulp is allowed, nothing unwritten).
    use_set(0);
    const size_t n = size_t(rows) * D;
    CHECK(cudaMemset(a.out, 0xff, n * 2));
    CHECK(cudaLaunchKernelEx(&cfg, v.kernel, a));
    CHECK(cudaStreamSynchronize(s));
    const std::string verdict = v.computes ? check_result(a.out, n, ref) : "";
    const int calls = std::max<int>(20, int(sets.size()));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) {
        use_set(i);
        CHECK(cudaLaunchKernelEx(&cfg, v.kernel, a));
    }
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaStreamSynchronize(s));
    const float us = graph_us_per_call(ge, s, 20, calls);
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    // Lines an evict-last variant left behind go back to normal before the next variant.
    CHECK(cudaCtxResetPersistingL2Cache());
    printf("  %-44s grid %6u, %3d regs, %2d blocks/SM: %8.2f us%s\n", v.name, grid, attr.numRegs, per_sm, us,
           verdict.c_str());
    return us;
}

// Shapes named on the command line as T:H (all of them when none is named).
bool wanted(int argc, char **argv, int T, int H) {
    if (argc < 2) return true;
    char name[32];
    snprintf(name, sizeof name, "%d:%d", T, H);
    for (int i = 1; i < argc; ++i)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    int l2 = 0;
    CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<uint16_t> wh(D);
    for (auto &v : wh) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    // Runs 8-12 (H100) settled block size, rows per team, PDL and the late gate for one-pass
    // grids.  Run 13 (the first H200) put FLA 7-8% ahead from 24k rows up, with 16-32
    // elements per thread where ours had 8; runs 14-15 found two chunks per lane 5-6% faster
    // from 262k rows (the library's choice from 2^17 rows until run 18, fp32 x since) and 128-thread blocks 0.5-1.8%
    // faster from 24k to 131k rows (the library's choice there).
    // Run 17: with 8-element chunks in 128-thread blocks, 32 registers (16 blocks per SM, no
    // spills) beat 40 (12) by 2-9% from 24k rows up; run 18 timed that with plain loads: 32
    // registers win from 98k rows, 40 at 24k-32k (the library's switch: 2^16 rows, 16-bit x).
    // Two chunks spill below 64 registers (48: 104 bytes).  Run 21: 48 registers, 64-thread
    // blocks, 256-thread blocks at 32 registers and two 8-element chunks a lane in 16-row
    // 128-thread blocks (FLA's fp32-weight pick) were never more than 0.3% faster at 24k-131k rows.
    // Run 23: z after the sum (FLA's order; its autotuner ran 16 rows per 256 threads, 8
    // elements a thread, below 64k rows in run 20): 7% slower at 32k rows, 8-11% from 98k, in
    // 256-thread blocks too (at 32 registers it spills 60 bytes).  Cache hints (port.h): x and
    // z through the read-only path 1.0-1.4% faster everywhere (the library's choice at 8k-64k
    // rows when out is neither x nor z), with L2's 256-byte prefetch 1.5-2% slower at 24k-32k
    // rows and neutral from 98k, out kept last in L2 6-15% slower at 40 registers and neutral
    // at 32.  Run 24: the read-only path at 32 registers, and 8-element chunks against 4 below
    // 8k rows.
    const Variant variants[] = {
        {"empty kernel, no PDL hooks", empty_kernel_no_hooks, 256, 8, false},
        vec_variant<32, 4, 256>("4 el, 256 thr (library <= 8k)"),
        vec_variant<16, 8, 128, 1, kLoadNc, 6>("8 el, 128 thr, 40 regs, ld.nc (library 8k-64k)"),
        vec_variant<16, 8, 128, 1, 0, 6>("8 el, 128 thr, 40 regs (8k-64k in place)"),
        vec_variant<16, 8, 128, 1, 0, 8>("8 el, 128 thr, 32 regs (library >= 64k)"),
        vec_variant<16, 8, 128, 1, kLoadNc, 8>("8 el, 128 thr, 32 regs, ld.nc"),
        vec_variant<16, 8, 128, 1, kLateGate, 6>("8 el, 128 thr, 40 regs, z after sum"),
        vec_variant<16, 8, 128, 1, kLoadPrefetch, 6>("8 el, 128 thr, 40 regs, L2::256B"),
        vec_variant<16, 8, 128, 1, kStoreKeep, 8>("8 el, 128 thr, 32 regs, out evict-last"),
    };
    // "out~": every input set has its own output, as when the layer's output is not the
    // block the previous call wrote (none of it is in L2 then).
    struct Shape {
        int T, H;
        bool strided_z, rotate_out;
    };
    const Shape shapes[] = {{1, 32, false, false},     {32, 32, false, false},   {128, 24, false, false},
                            {128, 32, false, false},   {1024, 24, false, false},
                            {1024, 32, false, false},  {4096, 24, false, false}, {4096, 32, false, false},
                            {8192, 32, false, false},  {16384, 24, false, false}, {16384, 32, false, false},
                            {65536, 32, false, false},  // the issue's long prefill: 2M rows
                            {128, 32, true, false},    {1024, 32, true, false},  {4096, 32, true, false},
                            {1024, 32, false, true},   {4096, 32, false, true}};
    for (auto &sh : shapes) {
        if (!wanted(argc, argv, sh.T, sh.H)) continue;
        const int T = sh.T, H = sh.H;
        const size_t n = size_t(T) * H * D, bytes = 3 * n * 2;
        const size_t zn = sh.strided_z ? 4 * n : n;  // a qkvz row holds q, k, v and z
        const int nsets = int(std::min<size_t>(4096, std::max<size_t>(1, (2 * size_t(l2) + bytes - 1) / bytes)));
        std::vector<uint16_t> host(n);
        std::vector<Set> sets(nsets);
        for (auto &st : sets) {
            CHECK(cudaMalloc(&st.x, n * 2));
            CHECK(cudaMalloc(&st.z, zn * 2));
            for (auto &v : host) v = f32_to_bf16(nd(rng));
            CHECK(cudaMemcpy(st.x, host.data(), n * 2, cudaMemcpyHostToDevice));
            for (size_t off = 0; off < zn; off += n) CHECK(cudaMemcpy(st.z + off * 2, host.data(), n * 2, cudaMemcpyHostToDevice));
            if (sh.strided_z) st.z += 3 * size_t(H) * D * 2;  // z's columns of the first row
            CHECK(cudaMalloc(&st.w, D * 2));
            CHECK(cudaMemcpy(st.w, wh.data(), D * 2, cudaMemcpyHostToDevice));
            st.out = nullptr;
            if (sh.rotate_out) CHECK(cudaMalloc(&st.out, n * 2));
        }
        char *out;
        CHECK(cudaMalloc(&out, n * 2));
        printf("bf16 [%d, %d, 128]%s%s: %.2f MB per call, %d rotated input sets, %s\n", T, H,
               sh.strided_z ? " z~" : "", sh.rotate_out ? " out~" : "", bytes / 1e6, nsets,
               sh.rotate_out ? "one output per set" : "one output");
        // Twice, the second pass in reverse order: the spread between two timings of one
        // variant, and whether a variant's figure depends on what ran before it.
        std::vector<uint16_t> ref;
        const int nv = int(sizeof variants / sizeof variants[0]);
        for (int pass = 1; pass <= 2; ++pass) {
            printf(" pass %d%s\n", pass, pass == 2 ? " (reverse order)" : "");
            for (int i = 0; i < nv; ++i)
                time_variant(variants[pass == 1 ? i : nv - 1 - i], sets, out, T, H, sh.strided_z, sh.rotate_out, ref);
        }
        for (auto &st : sets) {
            CHECK(cudaFree(st.x));
            CHECK(cudaFree(st.z - (sh.strided_z ? 3 * size_t(H) * D * 2 : 0)));
            CHECK(cudaFree(st.w));
            if (st.out) CHECK(cudaFree(st.out));
        }
        CHECK(cudaFree(out));
    }
    if (g_wrong) fprintf(stderr, "some variant computed a wrong result (WRONG above)\n");
    return g_wrong ? 1 : 0;
}
