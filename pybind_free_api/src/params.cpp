// params_init / params_read: see params.h.
#include "params.h"

#include <string.h>

#include "backend.h"

namespace gn {

namespace {
// No layout will ever grow past this; a larger struct_size is garbage, not a newer caller.
constexpr size_t kMaxParamsBytes = 4096;

bool known_size(size_t size, const ParamsLayout &l) {
    if (size > kMaxParamsBytes) return false;
    if (size > l.sizes[l.count - 1]) return true;  // a newer caller
    for (int i = 0; i < l.count; ++i)
        if (l.sizes[i] == size) return true;
    return false;
}
gatednorm_status bad_size(const char *name, size_t size, const ParamsLayout &l) {
    return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                "%s: struct_size %zu is not a layout this library knows (first %u, newest %u, or up to 4096 with zeros past the newest); "
                "fill it with %s(p, sizeof *p)",
                name, size, l.sizes[0], l.sizes[l.count - 1], l.init_name);
}
}  // namespace

gatednorm_status params_init(void *caller, size_t size, const void *defaults, const ParamsLayout &l) {
    const size_t ours = l.sizes[l.count - 1];
    if (!caller) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: NULL (pass the struct to fill)", l.name);
    if (!known_size(size, l)) return bad_size(l.name, size, l);
    // Nothing is written before the size is known to be right: a wrong size means the
    // caller's slot may be smaller than anything we would write.
    memcpy(caller, defaults, size < ours ? size : ours);
    if (size > ours) memset(static_cast<char *>(caller) + ours, 0, size - ours);
    const uint32_t s = uint32_t(size);
    memcpy(caller, &s, sizeof s);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status params_read(const void *caller, void *ours_out, const ParamsLayout &l) {
    if (!caller) return GATEDNORM_STATUS_SUCCESS;  // NULL: every option at its default
    const size_t ours = l.sizes[l.count - 1];
    uint32_t size;
    memcpy(&size, caller, sizeof size);
    if (!known_size(size, l)) return bad_size(l.name, size, l);
    if (size > ours) {
        // A newer caller: the fields we lack must be at their zero defaults, else the call
        // asks for something this library would silently ignore.
        const unsigned char *extra = static_cast<const unsigned char *>(caller) + ours;
        for (size_t i = 0; i < size - ours; ++i)
            if (extra[i])
                return fail(GATEDNORM_STATUS_UNSUPPORTED,
                            "%s: byte %zu (past this library's %zu-byte layout) is set: the caller asks for an option this "
                            "library (%u.%u.%u) does not have",
                            l.name, ours + i, ours, GATEDNORM_VERSION_MAJOR, GATEDNORM_VERSION_MINOR, GATEDNORM_VERSION_PATCH);
    }
    memcpy(ours_out, caller, size < ours ? size : ours);
    const uint32_t s = uint32_t(ours);
    memcpy(ours_out, &s, sizeof s);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
