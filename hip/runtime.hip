// GPU side of the runtime helpers of gatednorm.h (device count/name, memory, streams).
#include <stdio.h>
#include <string.h>

#include <atomic>

#include "backend.h"
#include "device_guard.h"

#ifndef GN_GPU_TARGETS
#define GN_GPU_TARGETS "?"
#endif

#if defined(GN_HAS_PDL)
// Which code the runtime picked for this build on the current device: its PTX version says
// whether the build's kernels there were compiled with griddepcontrol (90+) or not, and code
// compiled for 9.0+ runs only on compute capability 9.0+, so it answers both questions.
__global__ void gn_pdl_probe_kernel() {}

bool gn_device_has_pdl(int device) {
    static std::atomic<int> state[gn::kCachedDevices] = {};  // 0: not asked yet, 1: no, 2: yes
    if (device < 0 || device >= gn::kCachedDevices) return false;
    int s = state[device].load(std::memory_order_relaxed);
    if (s == 0) {
        cudaFuncAttributes fa;
        const bool yes = cudaFuncGetAttributes(&fa, gn_pdl_probe_kernel) == cudaSuccess && fa.ptxVersion >= 90;
        (void)cudaGetLastError();
        s = yes ? 2 : 1;
        state[device].store(s, std::memory_order_relaxed);
    }
    return s == 2;
}
#endif

namespace gn {

int gpu_platform() {
#if defined(GN_PLATFORM_CUDA)
    return GATEDNORM_DEVICE_TYPE_CUDA;
#else
    return GATEDNORM_DEVICE_TYPE_ROCM;
#endif
}

const char *gpu_build_info() {
    // Filled once by a static's initializer, which C++ runs in one thread while others wait
    // (a buffer filled on first use, as before, could be read half-written by a second thread).
    struct Text {
        char s[160];
    };
    static const Text info = [] {
        Text t{};
#if defined(GN_PLATFORM_CUDA)
        snprintf(t.s, sizeof t.s, "cuda %d.%d (%s)", __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, GN_GPU_TARGETS);
#else
        snprintf(t.s, sizeof t.s, "hip %d.%d (%s)", HIP_VERSION_MAJOR, HIP_VERSION_MINOR, GN_GPU_TARGETS);
#endif
        return t;
    }();
    return info.s;
}

gatednorm_status gpu_device_count(int32_t *count) {
    // Asked once: the visible set is fixed when the runtime starts, and every op checks
    // its device against it, so this sits on the hot path.
    static const int n = [] {
        int c = 0;
        if (hipGetDeviceCount(&c) != hipSuccess) {  // no driver or no device: zero GPUs, not an error
            (void)hipGetLastError();
            c = 0;
        }
        return c;
    }();
    *count = n;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_device_name(int32_t device_id, char *name, size_t capacity) {
    hipDeviceProp_t prop;
    const hipError_t err = hipGetDeviceProperties(&prop, device_id);
    if (err != hipSuccess) return runtime_fail(err, "device_id");
    snprintf(name, capacity, "%s", prop.name);
    return GATEDNORM_STATUS_SUCCESS;
}

// One attribute query (not hipGetDeviceProperties, which fills the whole struct: ~ms on CUDA).
gatednorm_status gpu_device_attribute(int32_t device_id, int32_t attribute, int64_t *value) {
    const auto which = attribute == GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS ? hipDeviceAttributeMultiprocessorCount
                       : attribute == GATEDNORM_DEVICE_ATTR_WARP_SIZE     ? hipDeviceAttributeWarpSize
                                                                          : hipDeviceAttributeL2CacheSize;
    int v = 0;
    const hipError_t err = hipDeviceGetAttribute(&v, which, device_id);
    if (err != hipSuccess) return runtime_fail(err, "device_id");
    *value = v;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_pointer_device(const void *ptr, gatednorm_device *device) {
    device->device_type = GATEDNORM_DEVICE_TYPE_CPU;
    device->device_id = 0;
    hipPointerAttribute_t attr;
    memset(&attr, 0, sizeof attr);
    if (hipPointerGetAttributes(&attr, ptr) != hipSuccess) {  // unknown to the runtime: host memory
        (void)hipGetLastError();
        return GATEDNORM_STATUS_SUCCESS;
    }
    switch (GN_POINTER_MEMORY_TYPE(attr)) {
        case hipMemoryTypeDevice:
            device->device_type = gpu_platform();
            device->device_id = attr.device;
            break;
        case hipMemoryTypeManaged:
            device->device_type = gpu_platform() == GATEDNORM_DEVICE_TYPE_CUDA ? GATEDNORM_DEVICE_TYPE_CUDA_MANAGED : GATEDNORM_DEVICE_TYPE_ROCM;
            device->device_id = attr.device;
            break;
        case hipMemoryTypeHost:
            device->device_type = gpu_platform() == GATEDNORM_DEVICE_TYPE_CUDA ? GATEDNORM_DEVICE_TYPE_CUDA_HOST : GATEDNORM_DEVICE_TYPE_ROCM_HOST;
            break;
        default:
            break;
    }
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_malloc(int32_t device_id, size_t bytes, void **ptr) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    const hipError_t err = hipMalloc(ptr, bytes);
    if (err != hipSuccess) {
        (void)hipGetLastError();
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: could not allocate %zu bytes on device %d: %s", bytes, device_id, hipGetErrorString(err));
    }
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_free(int32_t device_id, void *ptr) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    const hipError_t err = hipFree(ptr);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "free");
}

gatednorm_status gpu_memcpy(void *dst, const void *src, size_t bytes, void *stream) {
    const hipError_t err = hipMemcpyAsync(dst, src, bytes, hipMemcpyDefault, static_cast<hipStream_t>(stream));
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "memcpy");
}

gatednorm_status gpu_memset(void *dst, int32_t value, size_t bytes, void *stream) {
    const hipError_t err = hipMemsetAsync(dst, value, bytes, static_cast<hipStream_t>(stream));
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "memset");
}

gatednorm_status gpu_stream_create(int32_t device_id, void **stream) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    hipStream_t s = nullptr;
    const hipError_t err = hipStreamCreateWithFlags(&s, hipStreamNonBlocking);
    if (err != hipSuccess) return runtime_fail(err, "stream_create");
    *stream = s;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_stream_synchronize(void *stream) {
    const hipError_t err = hipStreamSynchronize(static_cast<hipStream_t>(stream));
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "stream_synchronize");
}

gatednorm_status gpu_stream_destroy(void *stream) {
    const hipError_t err = hipStreamDestroy(static_cast<hipStream_t>(stream));
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "stream_destroy");
}

gatednorm_status gpu_device_synchronize(int32_t device_id) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    const hipError_t err = hipDeviceSynchronize();
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "device_synchronize");
}

}  // namespace gn
