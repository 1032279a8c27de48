// Is the per-thread `cp.async` ring a bandwidth path on this GPU, and if not, why?  Run 109
// measured the three pipelined kernels (gated FP8 E = 16, the add-RMSNorm row kernel, the
// flat group quant) 1.05-1.95x slower than their plain-load forms.  This probe strips the
// arithmetic away: the same access patterns on a stream of words, read-only (the loads kept
// live by a never-true store) and copy (read and write the same bytes), so a gap here belongs
// to the load path, not to any kernel's work.
//
// 256-thread blocks, 32 bytes (two 16-byte chunks) a thread a round, as the flat group quant.
// Two layouts of a round's bytes:
//   lane    a thread's two chunks adjacent (its 32 contiguous bytes): the library's kernels
//           (load_words, and the pipes' copies at p and p + 16), so each warp instruction
//           reads 16 bytes at a 32-byte stride, half of every sector it touches; plain loads
//           pass through L1, which can serve the second instruction, cp.async.cg does not
//   spread  chunk c of all threads contiguous (every instruction reads whole sectors)
// Variants (resident grids: occupancy x SMs, at most kResident blocks an SM, the flat pipe's 6):
//   ldg         one round a thread, a grid of every round (the default kernels)
//   ldg_res     resident grid walking the rounds, plain loads, one round in flight
//   ldg_pf      the same with the next round's loads in registers (as deep as ring2)
//   cpa         one round a thread: cp.async, wait, read back (no ring, no loop)
//   ringS       resident grid, S - 1 rounds in flight in the thread's own ring slots (the
//               library's pipelined kernels, port.h's gn_copy_async_*); ring1 = one round
//               copied and waited for at a time (pairs with ldg_res)
//   ring3 L2    .L2::128B prefetch hint on the copies;  ring3 ca  copies through L1 (.ca)
//   ring3 warp  lane layout, but each warp copies its 1 KB of a round with whole-sector
//               instructions into the ring, then each lane reads its own 32 bytes back after
//               a warp barrier: the library's re-laid pipes (port.h gn_copy_async_warp_span,
//               as the row pipe; "shfl": gn_copy_async_warp, each copy taking its owner
//               lane's address by shuffle, as the FP8 and flat pipes)
// Each is timed as the benchmark times the library (tuner_common.h: a CUDA graph of 16
// launches over 4 rotated sets of 64 MiB, median of 20 replays).  Checked first, untimed, on
// a poisoned destination: copy variants word for word against their source, every variant's
// sum of the words it read against the set's sum (a skipped or doubled round fails); the exit
// status is 1 if any differs.  Not part of the library.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Ihip -Ipybind_free_api/include \
//        -Ipybind_free_api/src scripts/copy_probe.cu -o /tmp/copy_probe && /tmp/copy_probe
#include <stdint.h>
#include <stdio.h>

#include "port.h"
#include "tuner_common.h"

constexpr int kBlock = 256, kChunks = 2, kSets = 4, kResident = 6, kWarp = 32;
constexpr size_t kSetBytes = size_t(64) << 20;
constexpr uint32_t kRounds = uint32_t(kSetBytes / (16 * kChunks * kBlock));

enum Layout : int { kLane = 0, kSpread = 1 };

struct Args {
    const uint4 *src;
    uint4 *dst;                    // copy variants: the same bytes; read-only: nullptr
    uint32_t *sink;                // written only if a loaded word equals a value no set holds
    unsigned long long *read_sum;  // the check run: the sum of every word read; else nullptr
};

// Chunk c of this thread in round `round` (a uint4 index into the set).
template <int LAYOUT>
__device__ __forceinline__ size_t chunk_index(uint32_t round, int c) {
    if constexpr (LAYOUT == kLane) return (size_t(round) * kBlock + threadIdx.x) * kChunks + c;
    return (size_t(round) * kChunks + c) * kBlock + threadIdx.x;
}

struct Acc {
    uint32_t fold = 0;
    unsigned long long sum = 0;
};

template <int LAYOUT>
__device__ __forceinline__ void consume(const Args &a, uint32_t round, const uint4 (&v)[kChunks], Acc &acc) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        if (a.dst) a.dst[chunk_index<LAYOUT>(round, c)] = v[c];
        acc.fold ^= v[c].x ^ v[c].y ^ v[c].z ^ v[c].w;
        if (a.read_sum) acc.sum += 0ull + v[c].x + v[c].y + v[c].z + v[c].w;
    }
}

__device__ __forceinline__ void finish(const Args &a, const Acc &acc) {
    if (acc.fold == 0x7fc00001u) a.sink[0] = acc.fold;  // never true for the sets' contents (fill_kernel)
    if (a.read_sum) atomicAdd(a.read_sum, acc.sum);
}

template <int LAYOUT>
__global__ void __launch_bounds__(kBlock) ldg_kernel(Args a) {
    uint4 v[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) v[c] = a.src[chunk_index<LAYOUT>(blockIdx.x, c)];
    Acc acc;
    consume<LAYOUT>(a, blockIdx.x, v, acc);
    finish(a, acc);
}

template <int LAYOUT>
__global__ void __launch_bounds__(kBlock) ldg_res_kernel(Args a) {
    Acc acc;
    for (uint32_t r = blockIdx.x; r < kRounds; r += gridDim.x) {
        uint4 v[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) v[c] = a.src[chunk_index<LAYOUT>(r, c)];
        consume<LAYOUT>(a, r, v, acc);
    }
    finish(a, acc);
}

// The next round's loads issued into registers before this round is used.
template <int LAYOUT>
__global__ void __launch_bounds__(kBlock) ldg_pf_kernel(Args a) {
    Acc acc;
    uint4 next[kChunks] = {};
    uint32_t r = blockIdx.x;
    if (r < kRounds) {
#pragma unroll
        for (int c = 0; c < kChunks; ++c) next[c] = a.src[chunk_index<LAYOUT>(r, c)];
    }
    for (; r < kRounds; r += gridDim.x) {
        uint4 v[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) v[c] = next[c];
        if (r + gridDim.x < kRounds) {
#pragma unroll
            for (int c = 0; c < kChunks; ++c) next[c] = a.src[chunk_index<LAYOUT>(r + gridDim.x, c)];
        }
        consume<LAYOUT>(a, r, v, acc);
    }
    finish(a, acc);
}

template <int LAYOUT>
__global__ void __launch_bounds__(kBlock) cpa_kernel(Args a) {
    __shared__ uint4 slots[kChunks * kBlock];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) gn_copy_async_b128(&slots[c * kBlock + threadIdx.x], &a.src[chunk_index<LAYOUT>(blockIdx.x, c)], true);
    gn_copy_async_commit();
    gn_copy_async_wait<0>();
    uint4 v[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) v[c] = slots[c * kBlock + threadIdx.x];
    Acc acc;
    consume<LAYOUT>(a, blockIdx.x, v, acc);
    finish(a, acc);
}

// HINT 0: port.h's copy (cp.async.cg, src-size form); 1: the same with .L2::128B; 2: .ca.
// All three in the src-size form, so that the hint is the one difference.
template <int HINT>
__device__ __forceinline__ void copy16(uint4 *smem, const uint4 *gmem) {
    if constexpr (HINT == 0) {
        gn_copy_async_b128(smem, gmem, true);
    } else {
        const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
        if constexpr (HINT == 1)
            asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" ::"r"(d), "l"(__cvta_generic_to_global(gmem)), "r"(16) : "memory");
        else
            asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(__cvta_generic_to_global(gmem)), "r"(16) : "memory");
    }
}

// STAGES = 1: no round ahead (copy, wait, use).  WARP 1 / 2: the lane layout copied a warp's
// 1 KB at a time by the library's port.h helpers (1: gn_copy_async_warp_span, the warp's
// bytes known contiguous; 2: gn_copy_async_warp, owners' addresses by shuffle), each lane
// then reading its own 32 bytes (a warp barrier between the copies landing and the reads,
// and between the reads and the slot's refill); HINT is 0 there.
template <int LAYOUT, int STAGES, int HINT, int WARP = 0>
__global__ void __launch_bounds__(kBlock) ring_kernel(Args a) {
    static_assert(!WARP || (LAYOUT == kLane && HINT == 0), "the warp copy re-lays the lane layout with port.h's copy");
    __shared__ uint4 ring[STAGES * kChunks * kBlock];
    const int warp0 = threadIdx.x - threadIdx.x % kWarp;
    // Slot s, chunk c of this thread: per-thread slots, or (WARP) where port.h places it
    // among its warp's.
    auto slot = [&](int s, int c) -> uint4 * {
        if constexpr (WARP) return &ring[s * kChunks * kBlock + warp0 * kChunks + gn_copy_async_warp_slot<kChunks>(c)];
        return &ring[(s * kChunks + c) * kBlock + threadIdx.x];
    };
    auto issue = [&](uint32_t r, int s) {
        if (r < kRounds) {
            uint4 *warp_slots = &ring[s * kChunks * kBlock + warp0 * kChunks];
            if constexpr (WARP == 1) {
                gn_copy_async_warp_span<kChunks>(warp_slots, reinterpret_cast<const char *>(&a.src[(size_t(r) * kBlock + warp0) * kChunks]), kWarp * kChunks);
            } else if constexpr (WARP == 2) {
                gn_copy_async_warp<kChunks>(warp_slots, reinterpret_cast<const char *>(&a.src[chunk_index<LAYOUT>(r, 0)]), true);
            } else {
#pragma unroll
                for (int c = 0; c < kChunks; ++c) copy16<HINT>(slot(s, c), &a.src[chunk_index<LAYOUT>(r, c)]);
            }
        }
        gn_copy_async_commit();
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(blockIdx.x + uint32_t(s) * gridDim.x, s);
    Acc acc;
    int s = 0;
    for (uint32_t r = blockIdx.x; r < kRounds; r += gridDim.x) {
        issue(r + uint32_t(STAGES - 1) * gridDim.x, s == 0 ? STAGES - 1 : s - 1);
        gn_copy_async_wait<STAGES - 1>();
        if constexpr (WARP) __syncwarp();
        uint4 v[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) v[c] = *slot(s, c);
        if constexpr (WARP) __syncwarp();  // every lane's reads of slot s before any refill of it
        consume<LAYOUT>(a, r, v, acc);
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

__global__ void sum_words(const uint32_t *p, size_t words, unsigned long long *sum) {
    unsigned long long n = 0;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) n += p[i];
    atomicAdd(sum, n);
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

unsigned long long device_value(unsigned long long *p, cudaStream_t s) {
    unsigned long long v = 0;
    CHECK(cudaMemcpyAsync(&v, p, sizeof(v), cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    return v;
}

int main() {
    int dev = 0, sms = 0;
    CHECK(cudaGetDevice(&dev));
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s, %d SMs; %d sets of %zu MiB, %u rounds of %d bytes a block; resident grids <= %d blocks an SM\n",
           prop.name, sms, kSets, kSetBytes >> 20, kRounds, 16 * kChunks * kBlock, kResident);
    uint4 *src[kSets], *dst[kSets];
    uint32_t *sink;
    unsigned long long *counters;  // [0] the set's sum, [1] a variant's read sum, [2] differing words
    for (int i = 0; i < kSets; ++i) {
        CHECK(cudaMalloc(&src[i], kSetBytes));
        CHECK(cudaMalloc(&dst[i], kSetBytes));
        fill_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t *>(src[i]), kSetBytes / 4, 0x1234u + i);
    }
    CHECK(cudaMalloc(&sink, 4));
    CHECK(cudaMalloc(&counters, 3 * sizeof(*counters)));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemsetAsync(counters, 0, sizeof(*counters), s));
    sum_words<<<1024, 256, 0, s>>>(reinterpret_cast<const uint32_t *>(src[0]), kSetBytes / 4, counters);
    const unsigned long long set_sum = device_value(counters, s);
    const Variant variants[] = {
        {"ldg lane", ldg_kernel<kLane>, false},
        {"ldg spread", ldg_kernel<kSpread>, false},
        {"ldg_res lane", ldg_res_kernel<kLane>, true},
        {"ldg_pf lane", ldg_pf_kernel<kLane>, true},
        {"cpa lane", cpa_kernel<kLane>, false},
        {"cpa spread", cpa_kernel<kSpread>, false},
        {"ring1 lane", ring_kernel<kLane, 1, 0>, true},
        {"ring2 lane", ring_kernel<kLane, 2, 0>, true},
        {"ring3 lane", ring_kernel<kLane, 3, 0>, true},
        {"ring4 lane", ring_kernel<kLane, 4, 0>, true},
        {"ring3 spread", ring_kernel<kSpread, 3, 0>, true},
        {"ring3 L2 lane", ring_kernel<kLane, 3, 1>, true},
        {"ring3 ca lane", ring_kernel<kLane, 3, 2>, true},
        {"ring3 warp lane", ring_kernel<kLane, 3, 0, 1>, true},
        {"ring3 warp shfl lane", ring_kernel<kLane, 3, 0, 2>, true},
    };
    const int calls = 4 * kSets;
    bool wrong = false;
    printf("| variant | blocks/SM | grid | read-only us | read TB/s | copy us | copy TB/s (r+w) |\n|---|---|---|---|---|---|---|\n");
    for (const Variant &v : variants) {
        int per_sm = 0;
        CHECK(cudaFuncSetAttribute(v.kernel, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
        CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, v.kernel, kBlock, 0));
        if (v.resident && per_sm > kResident) per_sm = kResident;
        const unsigned grid = v.resident ? unsigned(per_sm * sms) : kRounds;
        float us[2];
        for (int copy = 0; copy < 2; ++copy) {
            // The check, untimed: a poisoned destination; the words read summed; the copy
            // compared word for word with its source.
            CHECK(cudaMemsetAsync(dst[0], 0xff, kSetBytes, s));
            CHECK(cudaMemsetAsync(counters + 1, 0, 2 * sizeof(*counters), s));
            v.kernel<<<grid, kBlock, 0, s>>>(Args{src[0], copy ? dst[0] : nullptr, sink, counters + 1});
            CHECK(cudaGetLastError());
            if (copy) count_diff<<<1024, 256, 0, s>>>(reinterpret_cast<const uint32_t *>(src[0]), reinterpret_cast<const uint32_t *>(dst[0]), kSetBytes / 4, counters + 2);
            const unsigned long long read_sum = device_value(counters + 1, s), nbad = device_value(counters + 2, s);
            if (read_sum != set_sum || nbad) {
                printf("%s (%s): read sum %llu (the set's %llu), %llu words differ from the source\n", v.name,
                       copy ? "copy" : "read-only", read_sum, set_sum, nbad);
                wrong = true;
            }
            cudaGraph_t g;
            cudaGraphExec_t exec;
            CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            for (int c = 0; c < calls; ++c) v.kernel<<<grid, kBlock, 0, s>>>(Args{src[c % kSets], copy ? dst[c % kSets] : nullptr, sink, nullptr});
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
