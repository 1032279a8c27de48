// Validation helpers shared by every op's entry point: each returns a status and, on
// failure, a message that names the argument ("x: expected 2 or 3 dims, got 4").
#pragma once
#include <new>
#include <stdexcept>
#include <string>

#include "backend.h"
#include "cpu_fenv.h"

// Returns from the enclosing function with the status of a failed check.
#define GN_TRY(expr)                                                            \
    do {                                                                        \
        const gatednorm_status gn_try_status_ = (expr);                         \
        if (gn_try_status_ != GATEDNORM_STATUS_SUCCESS) return gn_try_status_;  \
    } while (0)

namespace gn {

bool is_host_device(int32_t device_type);
std::string device_name(const gatednorm_device &d);
std::string dtype_name(const gatednorm_dtype &dt);
// "[3, 2, 128]": a shape or strides in messages.
std::string dims_text(const int64_t *v, int n);

// Non-null descriptor, sane ndim/shape/lanes; element count and byte extent fit in int64;
// unless empty: non-null data aligned to the element size.
gatednorm_status check_descriptor(const gatednorm_tensor *t, const char *name);

// bf16 / fp16 / fp32 -> gn::Dtype, else an error naming the argument.
gatednorm_status float_dtype(const gatednorm_tensor &t, const char *name, int *dtype);

int64_t element_count(const gatednorm_tensor &t);
// Whether t has no element (an extent of 0; no product formed).  An empty tensor addresses
// nothing, so its strides are free (docs/c_abi.md): no contiguity or merge rule applies to it.
bool is_empty(const gatednorm_tensor &t);
inline char *data_ptr(const gatednorm_tensor &t) { return static_cast<char *>(t.data) + t.byte_offset; }

// The common host case, checked in one pass (the fast path of an entry point): t is a
// non-NULL descriptor of host memory, 1 to 8 dims, none empty, a float dtype (into *dtype),
// row-major contiguous (every dim of extent > 1 has the stride of the dims after it), and its
// bytes [*lo, *hi) lie below 2^63, non-NULL and aligned.  Everything check_descriptor,
// float_dtype and rows_shape (no group) would accept, and nothing they would refuse; false
// also for much they accept (strides, empty tensors, devices): the caller then runs the full
// checks, which name what is wrong.
bool host_contiguous(const gatednorm_tensor *t, int *dtype, uintptr_t *lo, uintptr_t *hi);

// Same device as the reference tensor (host-like memory counts as one device).
gatednorm_status check_same_device(const gatednorm_tensor &t, const char *name, const gatednorm_tensor &ref, const char *ref_name);

// Element layout of `t` maps distinct indices to distinct addresses (so concurrent writers
// of an output never collide).
gatednorm_status check_no_self_overlap(const gatednorm_tensor &t, const char *name);

// Byte extents intersect?
bool memory_overlaps(const gatednorm_tensor &a, const gatednorm_tensor &b);
// t's byte extent intersects [lo, lo + bytes)?
bool overlaps_bytes(const gatednorm_tensor &t, const void *lo, size_t bytes);
// Same address, dtype, shape and strides: a legal in-place alias.
bool same_view(const gatednorm_tensor &a, const gatednorm_tensor &b);

}  // namespace gn

namespace gn {

// The logical dims of a [..., L] tensor whose rows are the last dim, with L viewed as
// [L / G, G] when a group size G > 0 is given: what an op's shape checks compare.
// rows_shape fills the first ndim entries; nothing reads past them (left uninitialised: an
// entry point holds several, and zeroing 152 bytes each cost more than all of its checks).
struct RowsShape {
    int ndim = 0;  // leading dims + 1
    int64_t shape[GATEDNORM_MAX_DIMS + 1];
    int64_t strides[GATEDNORM_MAX_DIMS + 1];
};

// The norm options every norm entry's params carry (messages name params.<field>):
// eps finite >= 0, weight_offset finite, pdl 0 or 1; with a gate (gated norms) also
// norm_before_gate 0 or 1 and activation SILU or SIGMOID.
gatednorm_status check_norm_options(float eps, float weight_offset, int32_t pdl);
gatednorm_status check_gate_options(int32_t norm_before_gate, int32_t activation);

// The norm weight: [dim] of a float dtype (into *dtype), contiguous; `what` names the dim
// in messages ("the normalized dim", "hidden, x's last dim").
gatednorm_status check_norm_weight(const gatednorm_tensor &w, int64_t dim, const char *what, int *dtype);

// Runs an entry's checked body so that no C++ exception crosses the C ABI: out of host
// memory and anything unexpected become statuses whose message starts with the op's name.
// The body (checks, host arithmetic, launches) runs under the IEEE defaults whatever the
// calling thread set (cpu_fenv.h); the thread's settings come back on return.
template <class F>
gatednorm_status guarded(const char *op, F &&f) {
    IeeeFloatScope ieee;
    try {
        return f();
    } catch (const std::bad_alloc &) {
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "%s: out of host memory", op);
    } catch (const std::length_error &) {  // a host buffer past what a container can size (N x K of 2^62)
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "%s: out of host memory (a buffer past the largest allocatable size)", op);
    } catch (...) {
        return fail(GATEDNORM_STATUS_INTERNAL, "%s: unexpected C++ exception", op);
    }
}

// Logical dims of t (dtype not checked); the last must be contiguous.
gatednorm_status rows_shape(const gatednorm_tensor &t, const char *name, int64_t group, RowsShape *out,
                            const char *group_name = "group_size");  // the option that set group, for messages
// "z: shape [3, 2, 64] does not match x's [3, 2, 128]"
gatednorm_status same_rows_shape(const RowsShape &got, const char *name, const RowsShape &want, const char *want_name);
// `got` has `want`'s shape as given, before any group or head view (two shapes that differ
// can view alike: [4, 192] and [4, 3, 64] at G = 64).
gatednorm_status same_shape(const gatednorm_tensor &got, const char *name, const gatednorm_tensor &want, const char *want_name);

// Reduces the leading dims shared by `n` tensors of one logical shape to [tokens, heads]:
// unit dims dropped, neighbours merged where every tensor's strides allow it.
struct RowsGeometry {
    int64_t tokens = 1, heads = 1, dim = 1;
    int64_t stride_t[4] = {}, stride_h[4] = {};  // per tensor, in elements
};
gatednorm_status collapse_rows(const RowsShape *const shapes[], const char *const names[], int n, RowsGeometry *g);

}  // namespace gn
