// The GPU backend of a build without a GPU toolchain: no devices, every GPU request refused.
#include "backend.h"

namespace gn {
namespace {
gatednorm_status no_gpu() { return fail(GATEDNORM_STATUS_NO_DEVICE, "this build of gatednorm has no GPU backend"); }
}  // namespace

int gpu_platform() { return 0; }
const char *gpu_build_info() { return "no gpu backend"; }
gatednorm_status gpu_device_count(int32_t *count) { *count = 0; return GATEDNORM_STATUS_SUCCESS; }
gatednorm_status gpu_device_name(int32_t, char *, size_t) { return no_gpu(); }
gatednorm_status gpu_pointer_device(const void *, gatednorm_device *device) {
    device->device_type = GATEDNORM_DEVICE_TYPE_CPU;
    device->device_id = 0;
    return GATEDNORM_STATUS_SUCCESS;
}
gatednorm_status gpu_malloc(int32_t, size_t, void **) { return no_gpu(); }
gatednorm_status gpu_free(int32_t, void *) { return no_gpu(); }
gatednorm_status gpu_memcpy(void *, const void *, size_t, void *) { return no_gpu(); }
gatednorm_status gpu_memset(void *, int32_t, size_t, void *) { return no_gpu(); }
gatednorm_status gpu_stream_create(int32_t, void **) { return no_gpu(); }
gatednorm_status gpu_stream_synchronize(void *) { return no_gpu(); }
gatednorm_status gpu_stream_destroy(void *) { return no_gpu(); }
gatednorm_status gpu_device_synchronize(int32_t) { return no_gpu(); }
gatednorm_status gpu_rmsnorm_gated(const RmsnormGatedProblem &, void *) { return no_gpu(); }
gatednorm_status gpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &, void *) { return no_gpu(); }
gatednorm_status gpu_add_rmsnorm(const AddRmsnormProblem &, void *) { return no_gpu(); }
}  // namespace gn
