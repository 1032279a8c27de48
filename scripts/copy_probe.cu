// Is the per-thread `cp.async` ring a bandwidth path on this GPU?  Run 109 measured the three
// pipelined kernels (gated FP8 E = 16, the add-RMSNorm row kernel, the flat group quant)
// 1.05-1.95x slower than their plain-load forms, their copies reading at 1.3-1.8 TB/s whatever
// the kernel.  This probe strips the arithmetic away: the same access patterns on a stream of
// bf16-sized words, read-only (the loads kept live by a never-true store) and copy (read and
// write the same bytes), so a gap here belongs to the load path, not to any kernel's work.
//
// Variants, 256-thread blocks, 32 bytes (two 16-byte chunks) a thread a round, as the flat
// group quant:
//   ldg        one round a thread, a grid of every round (the library's default kernels)
//   ldg_res    a resident grid (occupancy x SMs) walking the rounds, plain loads
//   cpa        one round a thread: cp.async into its slots, wait, read back (no ring)
//   ring S     a resident grid, the next S - 1 rounds in flight in the thread's ring slots
//              (the library's pipelined kernels' pattern, port.h's gn_copy_async_*), S = 2..4
//   ring3 L2   ring S = 3 with the .L2::128B prefetch hint on the copies
//   ring3 ca   ring S = 3 copying through L1 (cp.async.ca)
// Each is timed as the benchmark times the library (tuner_common.h: a CUDA graph of launches
// over 4 rotated sets of 64 MiB, median of 20 replays).  Copy variants are checked against
// their source after a poisoned run; the exit status is 1 if any differs.  Not part of the
// library.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include \
//        -Ipybind_free_api/src scripts/copy_probe.cu -o /tmp/copy_probe && /tmp/copy_probe
#include <stdint.h>
#include <stdio.h>

#include "port.h"
#include "tuner_common.h"

constexpr int kBlock = 256, kChunks = 2, kSets = 4;
constexpr size_t kSetBytes = size_t(64) << 20;
constexpr uint32_t kRounds = uint32_t(kSetBytes / (16 * kChunks * kBlock));

struct Args {
    const uint4 *src;
    uint4 *dst;      // copy variants: the same bytes; read-only: nullptr
    uint32_t *sink;  // written only if a loaded word equals a value no set holds
};

__device__ __forceinline__ uint32_t fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// The round's two chunks of this thread: consecutive threads' 16 bytes adjacent, as a lane's
// chunks sit in the library's kernels (the second chunk a block's width further on).
__device__ __forceinline__ size_t chunk_index(uint32_t round, int c) {
    return (size_t(round) * kChunks + c) * kBlock + threadIdx.x;
}

__device__ __forceinline__ void consume(const Args &a, uint32_t round, const uint4 (&v)[kChunks], uint32_t &acc) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        if (a.dst) a.dst[chunk_index(round, c)] = v[c];
        acc ^= fold(v[c]);
    }
}

__device__ __forceinline__ void finish(const Args &a, uint32_t acc) {
    if (acc == 0x7fc00001u) a.sink[0] = acc;  // never true for the sets' contents (see fill)
}

__global__ void __launch_bounds__(kBlock) ldg_kernel(Args a) {
    uint4 v[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) v[c] = a.src[chunk_index(blockIdx.x, c)];
    uint32_t acc = 0;
    consume(a, blockIdx.x, v, acc);
    finish(a, acc);
}

__global__ void __launch_bounds__(kBlock) ldg_res_kernel(Args a) {
    uint32_t acc = 0;
    for (uint32_t r = blockIdx.x; r < kRounds; r += gridDim.x) {
        uint4 v[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) v[c] = a.src[chunk_index(r, c)];
        consume(a, r, v, acc);
    }
    finish(a, acc);
}

__global__ void __launch_bounds__(kBlock) cpa_kernel(Args a) {
    __shared__ uint4 slots[kChunks * kBlock];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) gn_copy_async_b128(&slots[c * kBlock + threadIdx.x], &a.src[chunk_index(blockIdx.x, c)], true);
    gn_copy_async_commit();
    gn_copy_async_wait<0>();
    uint4 v[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) v[c] = slots[c * kBlock + threadIdx.x];
    uint32_t acc = 0;
    consume(a, blockIdx.x, v, acc);
    finish(a, acc);
}

// HINT 0: port.h's copy (cp.async.cg); 1: .cg with .L2::128B; 2: cp.async.ca.
template <int HINT>
__device__ __forceinline__ void copy16(uint4 *smem, const uint4 *gmem) {
    if constexpr (HINT == 0) {
        gn_copy_async_b128(smem, gmem, true);
    } else {
        const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
        if constexpr (HINT == 1)
            asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;" ::"r"(d), "l"(__cvta_generic_to_global(gmem)) : "memory");
        else
            asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"(d), "l"(__cvta_generic_to_global(gmem)) : "memory");
    }
}

template <int STAGES, int HINT>
__global__ void __launch_bounds__(kBlock) ring_kernel(Args a) {
    __shared__ uint4 ring[STAGES * kChunks * kBlock];
    auto slot = [&](int s, int c) { return &ring[(s * kChunks + c) * kBlock + threadIdx.x]; };
    auto issue = [&](uint32_t r, int s) {
        if (r < kRounds) {
#pragma unroll
            for (int c = 0; c < kChunks; ++c) copy16<HINT>(slot(s, c), &a.src[chunk_index(r, c)]);
        }
        gn_copy_async_commit();
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(blockIdx.x + uint32_t(s) * gridDim.x, s);
    uint32_t acc = 0;
    int s = 0;
    for (uint32_t r = blockIdx.x; r < kRounds; r += gridDim.x) {
        issue(r + uint32_t(STAGES - 1) * gridDim.x, s == 0 ? STAGES - 1 : s - 1);
        gn_copy_async_wait<STAGES - 1>();
        uint4 v[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) v[c] = *slot(s, c);
        consume(a, r, v, acc);
        s = s + 1 == STAGES ? 0 : s + 1;
    }
    gn_copy_async_wait<0>();
    finish(a, acc);
}

__global__ void fill_kernel(uint32_t *p, size_t words, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 0x9e3779b9u ^ seed;
        h ^= h >> 15;
        h *= 0x2c1b3c6du;
        p[i] = (h ^ (h >> 12)) & 0x3f7f3f7fu;  // bf16 pairs of moderate magnitude; never 0x7fc00001
    }
}

__global__ void count_diff(const uint32_t *a, const uint32_t *b, size_t words, unsigned long long *bad) {
    unsigned long long n = 0;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) n += a[i] != b[i];
    if (n) atomicAdd(bad, n);
}

struct Variant {
    const char *name;
    void (*kernel)(Args);
    bool resident;
};

int main() {
    int dev = 0, sms = 0;
    CHECK(cudaGetDevice(&dev));
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s, %d SMs; %d sets of %zu MiB, %u rounds of %d bytes a block\n", prop.name, sms, kSets,
           kSetBytes >> 20, kRounds, 16 * kChunks * kBlock);
    uint4 *src[kSets], *dst[kSets];
    uint32_t *sink;
    unsigned long long *bad;
    for (int i = 0; i < kSets; ++i) {
        CHECK(cudaMalloc(&src[i], kSetBytes));
        CHECK(cudaMalloc(&dst[i], kSetBytes));
        fill_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t *>(src[i]), kSetBytes / 4, 0x1234u + i);
    }
    CHECK(cudaMalloc(&sink, 4));
    CHECK(cudaMalloc(&bad, sizeof(*bad)));
    CHECK(cudaDeviceSynchronize());
    const Variant variants[] = {
        {"ldg", ldg_kernel, false},
        {"ldg_res", ldg_res_kernel, true},
        {"cpa", cpa_kernel, false},
        {"ring2", ring_kernel<2, 0>, true},
        {"ring3", ring_kernel<3, 0>, true},
        {"ring4", ring_kernel<4, 0>, true},
        {"ring3 L2", ring_kernel<3, 1>, true},
        {"ring3 ca", ring_kernel<3, 2>, true},
    };
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int calls = 4 * kSets;
    bool wrong = false;
    printf("| variant | blocks/SM | grid | read-only us | read TB/s | copy us | copy TB/s (r+w) |\n|---|---|---|---|---|---|---|\n");
    for (const Variant &v : variants) {
        int per_sm = 0;
        CHECK(cudaFuncSetAttribute(v.kernel, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
        CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, v.kernel, kBlock, 0));
        const unsigned grid = v.resident ? unsigned(per_sm * sms) : kRounds;
        float us[2];
        for (int copy = 0; copy < 2; ++copy) {
            // Checked first: a poisoned destination, then every word compared with its source.
            if (copy) {
                CHECK(cudaMemsetAsync(dst[0], 0xff, kSetBytes, s));
                v.kernel<<<grid, kBlock, 0, s>>>(Args{src[0], dst[0], sink});
                CHECK(cudaGetLastError());
                CHECK(cudaMemsetAsync(bad, 0, sizeof(*bad), s));
                count_diff<<<1024, 256, 0, s>>>(reinterpret_cast<const uint32_t *>(src[0]), reinterpret_cast<const uint32_t *>(dst[0]), kSetBytes / 4, bad);
                unsigned long long nbad = 0;
                CHECK(cudaMemcpyAsync(&nbad, bad, sizeof(nbad), cudaMemcpyDeviceToHost, s));
                CHECK(cudaStreamSynchronize(s));
                if (nbad) {
                    printf("%s: %llu words differ from the source\n", v.name, nbad);
                    wrong = true;
                }
            }
            cudaGraph_t g;
            cudaGraphExec_t exec;
            CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            for (int c = 0; c < calls; ++c) v.kernel<<<grid, kBlock, 0, s>>>(Args{src[c % kSets], copy ? dst[c % kSets] : nullptr, sink});
            CHECK(cudaStreamEndCapture(s, &g));
            CHECK(cudaGraphInstantiate(&exec, g, 0));
            CHECK(cudaGraphLaunch(exec, s));  // warm-up replay
            CHECK(cudaStreamSynchronize(s));
            us[copy] = graph_us_per_call(exec, s, 20, calls);
            CHECK(cudaGraphExecDestroy(exec));
            CHECK(cudaGraphDestroy(g));
        }
        printf("| %s | %d | %u | %.2f | %.2f | %.2f | %.2f |\n", v.name, per_sm, grid, us[0], kSetBytes / us[0] * 1e-6,
               us[1], 2.0 * kSetBytes / us[1] * 1e-6);
    }
    return wrong ? 1 : 0;
}
