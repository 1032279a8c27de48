// Status strings and the thread-local last-error message.
#include <stdarg.h>
#include <stdio.h>

#include "backend.h"

namespace {
thread_local char g_last_error[512];
thread_local const char *g_last_kernel = "";
}

namespace gn {
gatednorm_status fail(gatednorm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}

void note_kernel(const char *name) { g_last_kernel = name; }
}  // namespace gn

extern "C" {

GATEDNORM_API const char *gatednorm_status_string(gatednorm_status status) {
    switch (status) {
        case GATEDNORM_STATUS_SUCCESS: return "success";
        case GATEDNORM_STATUS_INVALID_ARGUMENT: return "invalid argument";
        case GATEDNORM_STATUS_UNSUPPORTED: return "unsupported";
        case GATEDNORM_STATUS_NO_DEVICE: return "no device";
        case GATEDNORM_STATUS_DEVICE_ERROR: return "device error";
        case GATEDNORM_STATUS_OUT_OF_MEMORY: return "out of memory";
        case GATEDNORM_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

GATEDNORM_API const char *gatednorm_last_error(void) { return g_last_error; }

GATEDNORM_API const char *gatednorm_last_kernel(void) { return g_last_kernel; }

}  // extern "C"
