// Division of row indices by a divisor fixed per launch (the head count), as a multiply-high
// and a shift: the row -> (t, h) split of strided views sits in front of every thread's
// first load, where an integer divide costs ~20 dependent instructions.
// Round-up method (Granlund & Montgomery 1994): with l = ceil(log2 d) and
// mul = floor(2^32 (2^l - d) / d) + 1, n / d = (mulhi(n, mul) + n) >> l for every n < 2^31
// (mulhi(n, mul) < n, so the sum stays below 2^32).
#pragma once
#include <stdint.h>

#include "numerics.h"  // GN_HD

namespace gn {

struct FastDiv {
    uint32_t mul;
    uint32_t shift;
};

// d in [1, 2^31].
GN_HD FastDiv make_fast_div(uint32_t d) {
    uint32_t l = 0;
    while ((uint64_t(1) << l) < d) ++l;
    const uint64_t mul = ((uint64_t(1) << 32) * ((uint64_t(1) << l) - d)) / d + 1;
    return {uint32_t(mul), l};
}

// n / d for n < 2^31.
GN_HD uint32_t fast_div(uint32_t n, FastDiv f) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
    const uint32_t hi = __umulhi(n, f.mul);
#else
    const uint32_t hi = uint32_t((uint64_t(n) * f.mul) >> 32);
#endif
    return (hi + n) >> f.shift;
}

}  // namespace gn
