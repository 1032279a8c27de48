// The params rule every op's options struct follows (gatednorm.h, "Options structs"):
// a struct begins with uint32_t struct_size, is filled by <op>_params_init(p, sizeof *p)
// through the caller's pointer, and only ever grows at the end.
//
// The library knows each op's layout sizes (the first one and every one after it).  A
// caller's struct_size must be one of them, or larger than the newest (a caller built
// against a newer header) with every byte past the newest zero, which is what that newer
// header's _init writes for the fields this library does not have.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "gatednorm.h"

namespace gn {

struct ParamsLayout {
    const char *name;         // "params" as errors name it
    const char *init_name;    // "gatednorm_<op>_params_init"
    const uint32_t *sizes;    // known layout sizes, ascending; the last is sizeof(ours)
    int count;
};

// p_init: fills the caller's `size` bytes at `caller` with `defaults` (ours, sizes.back()
// bytes): our fields up to `size`, zero past ours, struct_size = size.
gatednorm_status params_init(void *caller, size_t size, const void *defaults, const ParamsLayout &layout);

// Reads a caller's struct (NULL: the defaults) into `ours`, which holds the defaults on entry.
gatednorm_status params_read(const void *caller, void *ours, const ParamsLayout &layout);

}  // namespace gn
