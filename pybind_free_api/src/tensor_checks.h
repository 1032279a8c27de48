// Validation helpers shared by every op's entry point: each returns a status and, on
// failure, a message that names the argument ("x: expected 2 or 3 dims, got 4").
#pragma once
#include <string>

#include "backend.h"

namespace gn {

bool is_host_device(int32_t device_type);
std::string device_name(const gatednorm_device &d);
std::string dtype_name(const gatednorm_dtype &dt);

// Non-null descriptor, sane ndim/shape/lanes; element count and byte extent fit in int64;
// unless empty: non-null data aligned to the element size.
gatednorm_status check_descriptor(const gatednorm_tensor *t, const char *name);

// bf16 / fp16 / fp32 -> gn::Dtype, else an error naming the argument.
gatednorm_status float_dtype(const gatednorm_tensor &t, const char *name, int *dtype);

int64_t element_count(const gatednorm_tensor &t);
inline char *data_ptr(const gatednorm_tensor &t) { return static_cast<char *>(t.data) + t.byte_offset; }

// Same device as the reference tensor (host-like memory counts as one device).
gatednorm_status check_same_device(const gatednorm_tensor &t, const char *name, const gatednorm_tensor &ref, const char *ref_name);

// Element layout of `t` maps distinct indices to distinct addresses (so concurrent writers
// of an output never collide).
gatednorm_status check_no_self_overlap(const gatednorm_tensor &t, const char *name);

// Byte extents intersect?
bool memory_overlaps(const gatednorm_tensor &a, const gatednorm_tensor &b);
// Same address, dtype, shape and strides: a legal in-place alias.
bool same_view(const gatednorm_tensor &a, const gatednorm_tensor &b);

}  // namespace gn
