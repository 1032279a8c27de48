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
    // Built once under the C++ static-initialization guard: calls may run on many threads at
    // once (gatednorm.h), and a lazily filled buffer let a second thread return the text
    // while the first was still writing it.
    struct Info {
        char text[256];
        Info() {
            const char *gpu = gn::gpu_platform() ? gn::gpu_build_info() : "no gpu backend";
            snprintf(text, sizeof text, "gatednorm %d.%d.%d; cpu; %s; %s", GATEDNORM_VERSION_MAJOR, GATEDNORM_VERSION_MINOR,
                     GATEDNORM_VERSION_PATCH, gpu, GN_HOST_COMPILER);
        }
    };
    static const Info info;
    return info.text;
}

}  // extern "C"
