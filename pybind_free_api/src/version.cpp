// Version and build description.
#include <stdio.h>

#include "backend.h"

#ifndef GN_HOST_COMPILER
#define GN_HOST_COMPILER "unknown compiler"
#endif

extern "C" {

GATEDNORM_API uint32_t gatednorm_version(void) {
    return (uint32_t(GATEDNORM_VERSION_MAJOR) << 16) | (uint32_t(GATEDNORM_VERSION_MINOR) << 8) | GATEDNORM_VERSION_PATCH;
}

GATEDNORM_API const char *gatednorm_build_info(void) {
    static char info[256];
    if (!info[0]) {
        const char *gpu = gn::gpu_platform() ? gn::gpu_build_info() : "no gpu backend";
        snprintf(info, sizeof info, "gatednorm %d.%d.%d; cpu; %s; %s", GATEDNORM_VERSION_MAJOR, GATEDNORM_VERSION_MINOR,
                 GATEDNORM_VERSION_PATCH, gpu, GN_HOST_COMPILER);
    }
    return info;
}

}  // extern "C"
