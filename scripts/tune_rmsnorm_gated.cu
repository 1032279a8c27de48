// A/B of the gated RMSNorm vec kernel's shapes on one GPU, for NOTES.md, bf16 [T, H, 128]
// with a bf16 gate and weight, one-pass grids: 16 lanes x 8-element chunks (kernel v4, the
// library's choice above 32k rows) against 32 lanes x 4-element chunks (its choice up to
// 32k rows), also with 512-thread blocks and 8 blocks/SM.  (Runs 2-5 measured rows per
// team, persistent grids, blocks per SM and block sizes: NOTES.md.)  Timed as the
// benchmark does: a CUDA graph of >= 20 launches over rotated input copies (>= 2x L2 per
// replay where the shape is small), median of 20 replays.  Not part of the library.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include \
//        -Ipybind_free_api/src scripts/tune_rmsnorm_gated.cu -o /tmp/tune && /tmp/tune
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <random>
#include <vector>

#include "rmsnorm_gated_kernels.h"

#define CHECK(x)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

using namespace gn;
constexpr int D = 128, TPR = 16;

struct Set {
    char *x, *z, *out;
};

template <int LANES, int CPT, int R, int MINB, int BLOCK = kBlockThreads, int VEC = 8>
float time_variant(const std::vector<Set> &sets, const void *w, int T, int H, const char *name) {
    auto kernel = rmsnorm_gated_vec_kernel<kBF16, kBF16, LANES, CPT, R, MINB, BLOCK, VEC>;
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, BLOCK, 0));
    cudaFuncAttributes attr;
    CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int rows = T * H, rows_per_block = BLOCK / LANES * R;
    const unsigned grid = unsigned((rows + rows_per_block - 1) / rows_per_block);
    RmsnormGatedArgs a{};
    a.weight = w;
    a.x_st = a.z_st = a.o_st = int64_t(H) * D * 2;
    a.x_sh = a.z_sh = a.o_sh = D * 2;
    a.x_sr = a.z_sr = a.o_sr = D * 2;
    a.flat_rows = 1;
    a.rows = rows;
    a.heads = H;
    a.dim = D;
    a.x_dtype = a.z_dtype = a.out_dtype = a.weight_dtype = kBF16;
    a.norm_before_gate = 1;
    a.activation = kSilu;
    a.eps = 1e-6f;
    a.inv_dim = 1.0f / D;
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int calls = std::max<int>(20, int(sets.size()));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) {
        const Set &st = sets[i % sets.size()];
        a.x = st.x;
        a.z = st.z;
        a.out = st.out;
        kernel<<<grid, BLOCK, 0, s>>>(a);
    }
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaStreamSynchronize(s));
    std::vector<float> ts;
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    for (int r = 0; r < 20; ++r) {
        CHECK(cudaEventRecord(e0, s));
        CHECK(cudaGraphLaunch(ge, s));
        CHECK(cudaEventRecord(e1, s));
        CHECK(cudaEventSynchronize(e1));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms * 1000.0f / calls);
    }
    std::sort(ts.begin(), ts.end());
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    printf("  %-34s grid %6u, %3d regs, %d blocks/SM, %3d B local: %8.2f us\n", name, grid, attr.numRegs, per_sm,
           int(attr.localSizeBytes), ts[ts.size() / 2]);
    return ts[ts.size() / 2];
}

int main() {
    int l2 = 0;
    CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<uint16_t> wh(D);
    for (auto &v : wh) v = f32_to_bf16(1.0f + 0.1f * nd(rng));
    void *w;
    CHECK(cudaMalloc(&w, D * 2));
    CHECK(cudaMemcpy(w, wh.data(), D * 2, cudaMemcpyHostToDevice));
    const int shapes[][2] = {{1, 32}, {128, 32}, {1024, 32}, {4096, 24}, {4096, 32}, {16384, 32}};
    for (auto &sh : shapes) {
        const int T = sh[0], H = sh[1];
        const size_t n = size_t(T) * H * D, bytes = 3 * n * 2;
        const int nsets = int(std::min<size_t>(4096, std::max<size_t>(1, (2 * size_t(l2) + bytes - 1) / bytes)));
        std::vector<uint16_t> host(n);
        std::vector<Set> sets(nsets);
        for (auto &st : sets) {
            CHECK(cudaMalloc(&st.x, n * 2));
            CHECK(cudaMalloc(&st.z, n * 2));
            CHECK(cudaMalloc(&st.out, n * 2));
            for (auto &v : host) v = f32_to_bf16(nd(rng));
            CHECK(cudaMemcpy(st.x, host.data(), n * 2, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(st.z, host.data(), n * 2, cudaMemcpyHostToDevice));
        }
        printf("bf16 [%d, %d, 128]: %.1f MB per call, %d rotated sets\n", T, H, bytes / 1e6, nsets);
        time_variant<TPR, 1, 1, 6>(sets, w, T, H, "16 lanes x 8 elements (v4)");
        time_variant<32, 1, 1, 6, 256, 4>(sets, w, T, H, "32 lanes x 4 elements");
        time_variant<32, 1, 1, 6, 512, 4>(sets, w, T, H, "32 lanes x 4 elements, 512-thr blocks");
        time_variant<32, 1, 1, 8, 256, 4>(sets, w, T, H, "32 lanes x 4 elements, 8 blk/SM");
        for (auto &st : sets) {
            CHECK(cudaFree(st.x));
            CHECK(cudaFree(st.z));
            CHECK(cudaFree(st.out));
        }
    }
    return 0;
}
