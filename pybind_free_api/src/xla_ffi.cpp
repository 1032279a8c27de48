// XLA FFI handlers: the library's ops as XLA custom calls (gatednorm.jax_ops), in C so that a
// call inside jax.jit takes no Python and no GIL at run time.  One handler per platform kind
// (host, GPU) reads a call's three attributes -- entry (which C entry), slots (each of its
// tensor arguments: an operand, a result or NULL) and params (the params struct's bytes, built
// and checked by the Python wrapper's own option code) -- turns XLA's buffers into descriptors
// and calls the entry, whose validation then applies as for any caller.
//
// XLA's FFI C API (major version 0) is a stable binary interface; the structs below are this
// file's declarations of the parts the handler reads, in the API's layout (enums are C ints;
// fields of the API table it does not call are kept as opaque pointers for their offsets).
// The handler reports API version 0.1: it reads nothing added later without checking the
// table's struct_size first.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>

#include "gatednorm.h"

namespace {

struct XlaExtension {
    size_t struct_size;
    int type;
    XlaExtension *next;
};
struct XlaApiVersion {
    size_t struct_size;
    XlaExtension *extension_start;
    int major_version;
    int minor_version;
};
struct XlaErrorCreateArgs {
    size_t struct_size;
    XlaExtension *extension_start;
    const char *message;
    int errc;
};
struct XlaStreamGetArgs {
    size_t struct_size;
    XlaExtension *extension_start;
    void *ctx;
    void *stream;  // out
};
struct XlaDeviceOrdinalGetArgs {
    size_t struct_size;
    XlaExtension *extension_start;
    void *ctx;
    int32_t device_ordinal;  // out
};
struct XlaApi {
    size_t struct_size;
    XlaExtension *extension_start;
    XlaApiVersion api_version;
    const void *internal_api;
    void *(*error_create)(XlaErrorCreateArgs *);
    void *error_get_message, *error_destroy, *handler_register;
    void *(*stream_get)(XlaStreamGetArgs *);
    void *type_register, *execution_context_get, *state_set, *state_get, *device_memory_allocate,
        *device_memory_free, *thread_pool_schedule, *thread_pool_num_threads, *future_create,
        *future_set_available, *future_set_error, *run_id_get;
    void *(*device_ordinal_get)(XlaDeviceOrdinalGetArgs *);
};
struct XlaBuffer {
    size_t struct_size;
    XlaExtension *extension_start;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
};
struct XlaByteSpan {
    const char *ptr;
    size_t len;
};
struct XlaScalar {
    int dtype;
    void *value;
};
struct XlaArray {
    int dtype;
    size_t size;
    void *data;
};
struct XlaList {  // XLA_FFI_Args and XLA_FFI_Rets: the same layout
    size_t struct_size;
    XlaExtension *extension_start;
    int64_t size;
    int *types;
    void **items;
};
struct XlaAttrs {
    size_t struct_size;
    XlaExtension *extension_start;
    int64_t size;
    int *types;
    XlaByteSpan **names;
    void **attrs;
};
struct XlaCallFrame {
    size_t struct_size;
    XlaExtension *extension_start;
    const XlaApi *api;
    void *ctx;
    int stage;
    XlaList args;
    XlaList rets;
    XlaAttrs attrs;
    void *future;
};
struct XlaMetadata {
    size_t struct_size;
    XlaApiVersion api_version;
    uint32_t traits;
    int64_t state_type_id;
};
struct XlaMetadataExtension {
    XlaExtension extension_base;
    XlaMetadata *metadata;
};

constexpr int kMetadataExtension = 1, kExecute = 3;
constexpr int kAttrArray = 1, kAttrScalar = 3;
constexpr int kXlaS64 = 5, kXlaU8 = 6;
constexpr int kErrInvalidArgument = 3, kErrResourceExhausted = 8, kErrFailedPrecondition = 9, kErrUnimplemented = 12,
              kErrInternal = 13;

// XLA element types (xla_data.proto's PrimitiveType) -> the library's dtype; code 0xff: none.
gatednorm_dtype dtype_of(int xla) {
    constexpr uint8_t kInt = GATEDNORM_DTYPE_CODE_INT, kUint = GATEDNORM_DTYPE_CODE_UINT,
                      kFloat = GATEDNORM_DTYPE_CODE_FLOAT, kBool = 6;  // DLPack's kDLBool
    switch (xla) {  // unlisted types get code 0xff: refused here, by name
        case 16: return {GATEDNORM_DTYPE_CODE_BFLOAT, 16, 1};
        case 10: return {kFloat, 16, 1};
        case 11: return {kFloat, 32, 1};
        case 12: return {kFloat, 64, 1};  // the entries refuse these by name and dtype
        case 1: return {kBool, 8, 1};
        case 2: return {kInt, 8, 1};
        case 3: return {kInt, 16, 1};
        case 4: return {kInt, 32, 1};
        case 5: return {kInt, 64, 1};
        case 6: return {kUint, 8, 1};
        case 7: return {kUint, 16, 1};
        case 8: return {kUint, 32, 1};
        case 9: return {kUint, 64, 1};
        case 20: return {GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN, 8, 1};
        case 25: return {GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FNUZ, 8, 1};
        case 33: return {GATEDNORM_DTYPE_CODE_FLOAT8_E8M0FNU, 8, 1};
        default: return {0xff, 0, 0};
    }
}

struct Entry {
    const char *name;
    int tensors;
    const char *slot_names[7];
};
// By the `entry` attribute: the C entries gatednorm.jax_ops calls, with their tensor arguments.
constexpr Entry kEntries[] = {
    {"rmsnorm_gated", 4, {"x", "z", "weight", "out"}},
    {"rmsnorm_gated_fp8", 6, {"x", "z", "weight", "q", "scales", "y_copy"}},
    {"add_rmsnorm", 7, {"x", "residual", "weight", "residual_out", "y", "q", "scales"}},
    {"group_quant_fp8", 3, {"x", "q", "scales"}},
    {"w4a16_gemm", 7, {"a", "qweight", "scales", "zeros", "bias", "out", "workspace"}},
};
constexpr int kEntryCount = int(sizeof kEntries / sizeof kEntries[0]);

void *xla_error(const XlaCallFrame *f, int errc, const char *message) {
    if (!f->api || !f->api->error_create) return nullptr;  // nothing to report through
    XlaErrorCreateArgs a{sizeof(XlaErrorCreateArgs), nullptr, message, errc};
    return f->api->error_create(&a);  // XLA copies the message
}

struct Message {
    char text[640];
};

void *refuse(const XlaCallFrame *f, const char *what) {
    Message m;
    snprintf(m.text, sizeof m.text, "gatednorm XLA call: %.600s", what);  // a Message of its own may come in: cut it
    return xla_error(f, kErrInvalidArgument, m.text);
}

// The attribute `name` of attribute type `type`, or nullptr; *other_type (if given) says
// whether one of that name is there under another type (a lie, not an absent attribute).
const void *find_attr(const XlaCallFrame *f, const char *name, int type, bool *other_type = nullptr) {
    const size_t n = strlen(name);
    if (other_type) *other_type = false;
    if (f->attrs.size > 0 && (!f->attrs.names || !f->attrs.types || !f->attrs.attrs)) return nullptr;
    for (int64_t i = 0; i < f->attrs.size; ++i) {
        const XlaByteSpan *s = f->attrs.names[i];
        if (s && s->ptr && s->len == n && memcmp(s->ptr, name, n) == 0) {
            if (f->attrs.types[i] == type) return f->attrs.attrs[i];
            if (other_type) *other_type = true;
            return nullptr;
        }
    }
    return nullptr;
}

// A list of buffers (args or rets) the frame claims: its arrays present when it has items.
bool list_ok(const XlaList &l) { return l.size == 0 || (l.size > 0 && l.types && l.items); }

// The optional `views` attribute (int64 array, since 0.5): records [slot, ndim, shape...,
// strides...] (strides in elements) that describe a slot's tensor as a strided view of its
// buffer instead of the buffer's dense row-major shape: jax_ops' column-major scales, whose
// buffer is [groups, T] (or [groups, T padded to 4]) and whose tensor is [T..., groups].  A
// view must lie inside its buffer (every element it reaches, offsets >= 0), one view a slot;
// the entry's own checks (shapes, overlap) then apply to the view as to any caller's tensor.
void *apply_views(const XlaCallFrame *f, const Entry &entry, gatednorm_tensor *descs, const gatednorm_tensor **tensors) {
    bool other_type;
    const auto *attr = static_cast<const XlaArray *>(find_attr(f, "views", kAttrArray, &other_type));
    if (!attr && !other_type) return nullptr;
    if (!attr || attr->dtype != kXlaS64 || (attr->size && !attr->data)) return refuse(f, "views: expected an int64 array");
    const int64_t *v = static_cast<const int64_t *>(attr->data);
    const size_t n = attr->size;
    bool seen[7] = {};
    Message m;
    for (size_t at = 0; at < n;) {
        if (n - at < 2) return refuse(f, "views: a record is cut short (slot, ndim, shape..., strides...)");
        const int64_t slot = v[at], ndim = v[at + 1];
        if (slot < 0 || slot >= entry.tensors || !tensors[slot] || seen[slot]) {
            snprintf(m.text, sizeof m.text, "views: slot %lld names no buffer of the call, or is viewed twice", (long long)slot);
            return refuse(f, m.text);
        }
        const char *name = entry.slot_names[slot];
        if (ndim < 0 || ndim > GATEDNORM_MAX_DIMS || size_t(2 * ndim) > n - at - 2) {
            snprintf(m.text, sizeof m.text, "views: %s's record: ndim %lld (at most %d) or cut short", name, (long long)ndim,
                     GATEDNORM_MAX_DIMS);
            return refuse(f, m.text);
        }
        const int64_t *shape = v + at + 2, *strides = shape + ndim;
        gatednorm_tensor &t = descs[slot];
        int64_t elements = 1;  // the buffer's (its dims are >= 0 and their product fits int64: checked as read)
        for (int d = 0; d < t.ndim; ++d) elements *= t.shape[d];
        int64_t last = 0;  // the view's largest offset
        bool empty = false;
        for (int64_t d = 0; d < ndim; ++d) {
            if (shape[d] < 0 || strides[d] < 0) {
                snprintf(m.text, sizeof m.text, "views: %s: a negative extent or stride", name);
                return refuse(f, m.text);
            }
            if (shape[d] == 0) empty = true;
        }
        for (int64_t d = 0; d < ndim && !empty; ++d) {
            int64_t reach;
            if (__builtin_mul_overflow(shape[d] - 1, strides[d], &reach) || __builtin_add_overflow(last, reach, &last)) {
                snprintf(m.text, sizeof m.text, "views: %s: the view's offsets overflow int64", name);
                return refuse(f, m.text);
            }
        }
        if (!empty && last >= elements) {
            snprintf(m.text, sizeof m.text, "views: %s: the view reaches element %lld of a buffer of %lld", name, (long long)last,
                     (long long)elements);
            return refuse(f, m.text);
        }
        t.ndim = int32_t(ndim);
        for (int d = 0; d < GATEDNORM_MAX_DIMS; ++d) {
            t.shape[d] = d < ndim ? shape[d] : 0;
            t.strides[d] = d < ndim ? strides[d] : 0;
        }
        seen[slot] = true;
        at += size_t(2 + 2 * ndim);
    }
    return nullptr;
}

void *handle(XlaCallFrame *f, bool gpu) {
    for (XlaExtension *e = f->extension_start; e; e = e->next) {
        if (e->type == kMetadataExtension) {  // XLA's question: which API version, which traits
            XlaMetadata *md = reinterpret_cast<XlaMetadataExtension *>(e)->metadata;
            if (!md) return refuse(f, "metadata extension: no metadata to fill");
            md->api_version.major_version = 0;
            md->api_version.minor_version = 1;
            md->traits = 0;
            return nullptr;
        }
    }
    if (f->stage != kExecute) return nullptr;

    const auto *entry_attr = static_cast<const XlaScalar *>(find_attr(f, "entry", kAttrScalar));
    const auto *slots_attr = static_cast<const XlaArray *>(find_attr(f, "slots", kAttrArray));
    const auto *params_attr = static_cast<const XlaArray *>(find_attr(f, "params", kAttrArray));
    if (!entry_attr || entry_attr->dtype != kXlaS64 || !entry_attr->value || !slots_attr || slots_attr->dtype != kXlaS64 ||
        (slots_attr->size && !slots_attr->data) || !params_attr || params_attr->dtype != kXlaU8 ||
        (params_attr->size && !params_attr->data))
        return refuse(f, "attributes: expected entry (int64), slots (int64 array) and params (uint8 array)");
    if (!list_ok(f->args) || !list_ok(f->rets)) return refuse(f, "slots: the frame's operand or result list is malformed");
    const int64_t e = *static_cast<const int64_t *>(entry_attr->value);
    if (e < 0 || e >= kEntryCount) return refuse(f, "entry: not a gatednorm entry");
    const Entry &entry = kEntries[e];
    if (slots_attr->size != size_t(entry.tensors)) return refuse(f, "slots: not one per tensor argument of the entry");
    const int64_t *slots = static_cast<const int64_t *>(slots_attr->data);

    // The params struct, copied out of the attribute's storage (no alignment is promised there):
    // empty (the defaults) or exactly the struct_size it states, at most the 4096 bytes any
    // params_init accepts, so the entry reads only bytes the attribute holds.
    alignas(16) unsigned char params[4096];
    const size_t psize = params_attr->size;
    if (psize) {
        uint32_t stated = 0;
        if (psize >= sizeof stated) memcpy(&stated, params_attr->data, sizeof stated);
        if (psize < sizeof stated || stated != psize || psize > sizeof params)
            return refuse(f, "params: not a params struct (its bytes must be exactly the struct_size it states, at "
                             "most 4096)");
        memcpy(params, params_attr->data, psize);
    }

    void *stream = nullptr;
    gatednorm_device device{GATEDNORM_DEVICE_TYPE_CPU, 0};
    if (gpu) {
        if (!f->api || !f->api->stream_get) return xla_error(f, kErrInternal, "gatednorm XLA call: no XLA stream API");
        XlaStreamGetArgs s{sizeof(XlaStreamGetArgs), nullptr, f->ctx, nullptr};
        if (void *err = f->api->stream_get(&s)) return err;
        stream = s.stream;
        device.device_type = gatednorm_gpu_device_type();
        const size_t ordinal_end = offsetof(XlaApi, device_ordinal_get) + sizeof(void *);
        if (f->api->struct_size >= ordinal_end && f->api->device_ordinal_get) {
            XlaDeviceOrdinalGetArgs d{sizeof(XlaDeviceOrdinalGetArgs), nullptr, f->ctx, 0};
            if (void *err = f->api->device_ordinal_get(&d)) return err;
            device.device_id = d.device_ordinal;
        } else {  // an XLA without the ordinal API: the device that holds the operands
            device.device_id = -1;
        }
    }

    gatednorm_tensor descs[7];
    const gatednorm_tensor *tensors[7];
    for (int i = 0; i < entry.tensors; ++i) {
        const int64_t code = slots[i];
        tensors[i] = nullptr;
        if (code == -1) continue;
        const XlaList &list = code >= 0 ? f->args : f->rets;
        const int64_t k = code >= 0 ? code : -(code + 2);
        Message m;
        if (k < 0 || k >= list.size || !list.items[k] || list.types[k] != 1) {
            snprintf(m.text, sizeof m.text, "slots[%d] (%s): %lld names no buffer", i, entry.slot_names[i], (long long)code);
            return refuse(f, m.text);
        }
        const XlaBuffer *b = static_cast<const XlaBuffer *>(list.items[k]);
        gatednorm_tensor &t = descs[i];
        memset(&t, 0, sizeof t);
        t.data = b->data;
        t.device = device;
        t.dtype = dtype_of(b->dtype);
        if (t.dtype.code == 0xff) {
            snprintf(m.text, sizeof m.text, "%s: XLA element type %d, which gatednorm does not take", entry.slot_names[i],
                     b->dtype);
            return refuse(f, m.text);
        }
        if (b->rank < 0 || b->rank > GATEDNORM_MAX_DIMS) {
            snprintf(m.text, sizeof m.text, "%s: %lld dims; at most %d are supported", entry.slot_names[i],
                     (long long)b->rank, GATEDNORM_MAX_DIMS);
            return refuse(f, m.text);
        }
        if (b->rank > 0 && !b->dims) {
            snprintf(m.text, sizeof m.text, "%s: a buffer of rank %lld without dims", entry.slot_names[i], (long long)b->rank);
            return refuse(f, m.text);
        }
        t.ndim = int32_t(b->rank);
        int64_t stride = 1;
        for (int d = t.ndim - 1; d >= 0; --d) {  // XLA's default layout: dense, row-major
            if (b->dims[d] < 0) {  // refused here: a view (apply_views) would hide it from the entry's checks
                snprintf(m.text, sizeof m.text, "%s: dim %d is negative (%lld)", entry.slot_names[i], d, (long long)b->dims[d]);
                return refuse(f, m.text);
            }
            t.shape[d] = b->dims[d];
            t.strides[d] = stride;
            if (__builtin_mul_overflow(stride, std::max<int64_t>(b->dims[d], 1), &stride)) {
                snprintf(m.text, sizeof m.text, "%s: shape too large (its element count overflows int64)", entry.slot_names[i]);
                return refuse(f, m.text);
            }
        }
        tensors[i] = &t;
    }
    if (void *err = apply_views(f, entry, descs, tensors)) return err;
    if (device.device_id < 0) {  // the GPU of the operands (XLA's stream is on it)
        gatednorm_device d{0, 0};
        if (!tensors[0] || gatednorm_pointer_device(tensors[0]->data, &d) != GATEDNORM_STATUS_SUCCESS)
            return xla_error(f, kErrInternal, "gatednorm XLA call: cannot tell which GPU holds the operands");
        for (int i = 0; i < entry.tensors; ++i)
            if (tensors[i]) descs[i].device.device_id = d.device_id;
    }

    const void *p = psize ? params : nullptr;
    gatednorm_status st = GATEDNORM_STATUS_INTERNAL;
    switch (e) {
        case 0:
            st = gatednorm_rmsnorm_gated(tensors[0], tensors[1], tensors[2], tensors[3],
                                         static_cast<const gatednorm_rmsnorm_gated_params *>(p), stream);
            break;
        case 1:
            st = gatednorm_rmsnorm_gated_fp8(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], tensors[5],
                                             static_cast<const gatednorm_rmsnorm_gated_fp8_params *>(p), stream);
            break;
        case 2:
            st = gatednorm_add_rmsnorm(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], tensors[5], tensors[6],
                                       static_cast<const gatednorm_add_rmsnorm_params *>(p), stream);
            break;
        case 3:
            st = gatednorm_group_quant_fp8(tensors[0], tensors[1], tensors[2],
                                           static_cast<const gatednorm_group_quant_fp8_params *>(p), stream);
            break;
        case 4:
            st = gatednorm_w4a16_gemm(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], tensors[5], tensors[6],
                                      static_cast<const gatednorm_w4a16_params *>(p), stream);
            break;
    }
    if (st == GATEDNORM_STATUS_SUCCESS) return nullptr;
    Message m;
    snprintf(m.text, sizeof m.text, "%s: %s [%s]", entry.name, gatednorm_last_error(), gatednorm_status_string(st));
    const int errc = st == GATEDNORM_STATUS_INVALID_ARGUMENT ? kErrInvalidArgument
                     : st == GATEDNORM_STATUS_UNSUPPORTED    ? kErrUnimplemented
                     : st == GATEDNORM_STATUS_OUT_OF_MEMORY  ? kErrResourceExhausted
                     : st == GATEDNORM_STATUS_NO_DEVICE      ? kErrFailedPrecondition
                                                             : kErrInternal;
    return xla_error(f, errc, m.text);
}

}  // namespace

extern "C" {

// XLA's CPU threads flush subnormals; every entry runs under the IEEE defaults whatever the
// calling thread's settings (guarded(), cpu_fenv.h).
GATEDNORM_API void *gatednorm_xla_ffi_host(void *call_frame) {
    return call_frame ? handle(static_cast<XlaCallFrame *>(call_frame), false) : nullptr;
}

GATEDNORM_API void *gatednorm_xla_ffi_gpu(void *call_frame) {
    return call_frame ? handle(static_cast<XlaCallFrame *>(call_frame), true) : nullptr;
}

}  // extern "C"
