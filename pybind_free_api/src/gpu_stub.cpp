// The GPU backend of a build without a GPU toolchain: no devices, every GPU request refused.
#include "backend.h"

namespace gn {
namespace {
// Names the argument that asked for a GPU, as every message does (gatednorm.h).
gatednorm_status no_gpu(const char *arg) { return fail(GATEDNORM_STATUS_NO_DEVICE, "%s: this build of gatednorm has no GPU backend", arg); }
}  // namespace

int gpu_platform() { return 0; }
const char *gpu_build_info() { return "no gpu backend"; }
gatednorm_status gpu_device_count(int32_t *count) { *count = 0; return GATEDNORM_STATUS_SUCCESS; }
gatednorm_status gpu_device_name(int32_t, char *, size_t) { return no_gpu("device_id"); }
gatednorm_status gpu_device_attribute(int32_t, int32_t, int64_t *) { return no_gpu("device_id"); }
gatednorm_status gpu_pointer_device(const void *, gatednorm_device *device) {
    device->device_type = GATEDNORM_DEVICE_TYPE_CPU;
    device->device_id = 0;
    return GATEDNORM_STATUS_SUCCESS;
}
gatednorm_status gpu_malloc(int32_t, size_t, void **) { return no_gpu("device"); }
gatednorm_status gpu_free(int32_t, void *) { return no_gpu("device"); }
gatednorm_status gpu_memcpy(void *, const void *, size_t, void *) { return no_gpu("dst"); }
gatednorm_status gpu_memset(void *, int32_t, size_t, void *) { return no_gpu("dst"); }
gatednorm_status gpu_stream_create(int32_t, void **) { return no_gpu("device_id"); }
gatednorm_status gpu_stream_synchronize(void *) { return no_gpu("stream"); }
gatednorm_status gpu_stream_destroy(void *) { return no_gpu("stream"); }
gatednorm_status gpu_device_synchronize(int32_t) { return no_gpu("device_id"); }
gatednorm_status gpu_rmsnorm_gated(const RmsnormGatedProblem &, void *) { return no_gpu("x"); }
gatednorm_status gpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &, void *) { return no_gpu("x"); }
gatednorm_status gpu_w4a16_target(int32_t, int32_t *, const char *arg) { return no_gpu(arg); }
gatednorm_status gpu_w4a16_workspace_size(int32_t, int64_t, int64_t, int64_t, int64_t, size_t *, const char *arg) { return no_gpu(arg); }
gatednorm_status gpu_w4a16_prepack(const W4a16PrepackProblem &, void *) { return no_gpu("qweight"); }
gatednorm_status gpu_w4a16_gemm(const W4a16GemmProblem &, void *) { return no_gpu("a"); }
gatednorm_status gpu_add_rmsnorm(const AddRmsnormProblem &, void *) { return no_gpu("x"); }
gatednorm_status gpu_allreduce_add_rmsnorm(const CommState &, AddRmsnormProblem, bool, void *) { return no_gpu("x"); }
gatednorm_status gpu_comm_buffer_alloc(int32_t, size_t, void **, uint8_t *) { return no_gpu("device"); }
gatednorm_status gpu_comm_buffer_open(int32_t, const uint8_t *, void **) { return no_gpu("device"); }
gatednorm_status gpu_comm_buffer_header(int32_t, const void *, uint64_t *, const char *) { return no_gpu("device"); }
gatednorm_status gpu_comm_buffer_close(int32_t, void *) { return no_gpu("device"); }
gatednorm_status gpu_comm_check_residency(int32_t, int32_t, void *const *) { return no_gpu("device"); }
gatednorm_status gpu_comm_abort_alloc(CommState &) { return no_gpu("device"); }
void gpu_comm_abort_free(CommState &) {}
gatednorm_status gpu_comm_usable(const CommState &) { return no_gpu("comm"); }
}  // namespace gn
