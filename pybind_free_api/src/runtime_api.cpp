// Runtime helpers of gatednorm.h: route each request to host memory or the GPU backend.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "tensor_checks.h"

using namespace gn;

namespace {

constexpr size_t kHostAlignment = 64;

gatednorm_status null_arg(const char *name) { return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: must not be NULL", name); }

bool on_host(const void *ptr) {
    gatednorm_device d;
    return gpu_pointer_device(ptr, &d) != GATEDNORM_STATUS_SUCCESS || is_host_device(d.device_type);
}

gatednorm_status check_gpu_device(int32_t device_id) {
    int32_t count = 0;
    gpu_device_count(&count);
    if (device_id < 0 || device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "device_id: %d, but %d GPU(s) are visible to this build", device_id, count);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

GATEDNORM_API int32_t gatednorm_gpu_device_type(void) { return gpu_platform(); }

GATEDNORM_API gatednorm_status gatednorm_device_count(int32_t *count) {
    if (!count) return null_arg("count");
    return gpu_device_count(count);
}

GATEDNORM_API gatednorm_status gatednorm_device_name(int32_t device_id, char *name, size_t capacity) {
    if (!name) return null_arg("name");
    if (capacity == 0) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "capacity: 0; the name needs room for at least its NUL");
    const gatednorm_status st = check_gpu_device(device_id);
    return st != GATEDNORM_STATUS_SUCCESS ? st : gpu_device_name(device_id, name, capacity);
}

GATEDNORM_API gatednorm_status gatednorm_device_attribute(int32_t device_id, int32_t attribute, int64_t *value) {
    if (!value) return null_arg("value");
    if (attribute < GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS || attribute > GATEDNORM_DEVICE_ATTR_L2_BYTES)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "attribute: %d is not a gatednorm_device_attr (1..3)", attribute);
    const gatednorm_status st = check_gpu_device(device_id);
    return st != GATEDNORM_STATUS_SUCCESS ? st : gpu_device_attribute(device_id, attribute, value);
}

GATEDNORM_API gatednorm_status gatednorm_pointer_device(const void *ptr, gatednorm_device *device) {
    if (!device) return null_arg("device");
    if (!ptr) return null_arg("ptr");
    return gpu_pointer_device(ptr, device);
}

GATEDNORM_API gatednorm_status gatednorm_malloc(gatednorm_device device, size_t bytes, void **ptr) {
    if (!ptr) return null_arg("ptr");
    if (device.device_type == GATEDNORM_DEVICE_TYPE_CPU) {
        if (bytes > SIZE_MAX - kHostAlignment)
            return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: %zu bytes of host memory cannot be allocated", bytes);
        const size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
        void *p = aligned_alloc(kHostAlignment, rounded ? rounded : kHostAlignment);
        if (!p) return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: could not allocate %zu bytes of host memory", bytes);
        *ptr = p;
        return GATEDNORM_STATUS_SUCCESS;
    }
    if (device.device_type != gpu_platform() || gpu_platform() == 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "device: cannot allocate on %s with this build (%s)",
                    device_name(device).c_str(), gpu_build_info());
    const gatednorm_status st = check_gpu_device(device.device_id);
    return st != GATEDNORM_STATUS_SUCCESS ? st : gpu_malloc(device.device_id, bytes, ptr);
}

GATEDNORM_API gatednorm_status gatednorm_free(gatednorm_device device, void *ptr) {
    if (!ptr) return GATEDNORM_STATUS_SUCCESS;
    if (device.device_type == GATEDNORM_DEVICE_TYPE_CPU) {
        free(ptr);
        return GATEDNORM_STATUS_SUCCESS;
    }
    if (device.device_type != gpu_platform() || gpu_platform() == 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "device: %s memory was not allocated by this build", device_name(device).c_str());
    return gpu_free(device.device_id, ptr);
}

GATEDNORM_API gatednorm_status gatednorm_memcpy(void *dst, const void *src, size_t bytes, void *stream) {
    if (bytes == 0) return GATEDNORM_STATUS_SUCCESS;
    if (!dst) return null_arg("dst");
    if (!src) return null_arg("src");
    if (on_host(dst) && on_host(src)) {
        memmove(dst, src, bytes);
        return GATEDNORM_STATUS_SUCCESS;
    }
    return gpu_memcpy(dst, src, bytes, stream);
}

GATEDNORM_API gatednorm_status gatednorm_memset(void *dst, int32_t value, size_t bytes, void *stream) {
    if (bytes == 0) return GATEDNORM_STATUS_SUCCESS;
    if (!dst) return null_arg("dst");
    if (on_host(dst)) {
        memset(dst, value, bytes);
        return GATEDNORM_STATUS_SUCCESS;
    }
    return gpu_memset(dst, value, bytes, stream);
}

GATEDNORM_API gatednorm_status gatednorm_stream_create(int32_t device_id, void **stream) {
    if (!stream) return null_arg("stream");
    const gatednorm_status st = check_gpu_device(device_id);
    return st != GATEDNORM_STATUS_SUCCESS ? st : gpu_stream_create(device_id, stream);
}

GATEDNORM_API gatednorm_status gatednorm_stream_synchronize(void *stream) {
    int32_t count = 0;
    gpu_device_count(&count);
    if (count == 0 && !stream) return GATEDNORM_STATUS_SUCCESS;  // host work is already done
    return gpu_stream_synchronize(stream);
}

GATEDNORM_API gatednorm_status gatednorm_stream_destroy(void *stream) {
    if (!stream) return GATEDNORM_STATUS_SUCCESS;
    return gpu_stream_destroy(stream);
}

GATEDNORM_API gatednorm_status gatednorm_device_synchronize(int32_t device_id) {
    const gatednorm_status st = check_gpu_device(device_id);
    return st != GATEDNORM_STATUS_SUCCESS ? st : gpu_device_synchronize(device_id);
}

}  // extern "C"
