#include "tensor_checks.h"

#include "numerics.h"

#include <math.h>

#include <algorithm>
#include <climits>
#include <stdint.h>
#include <utility>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace gn {

bool is_host_device(int32_t device_type) {
    return device_type == GATEDNORM_DEVICE_TYPE_CPU || device_type == GATEDNORM_DEVICE_TYPE_CUDA_HOST ||
           device_type == GATEDNORM_DEVICE_TYPE_ROCM_HOST;
}

std::string device_name(const gatednorm_device &d) {
    char buf[48];
    switch (d.device_type) {
        case GATEDNORM_DEVICE_TYPE_CPU: return "cpu";
        case GATEDNORM_DEVICE_TYPE_CUDA_HOST: return "cuda_host";
        case GATEDNORM_DEVICE_TYPE_ROCM_HOST: return "rocm_host";
        case GATEDNORM_DEVICE_TYPE_CUDA: snprintf(buf, sizeof buf, "cuda:%d", d.device_id); return buf;
        case GATEDNORM_DEVICE_TYPE_ROCM: snprintf(buf, sizeof buf, "rocm:%d", d.device_id); return buf;
        case GATEDNORM_DEVICE_TYPE_CUDA_MANAGED: snprintf(buf, sizeof buf, "cuda_managed:%d", d.device_id); return buf;
    }
    snprintf(buf, sizeof buf, "device type %d:%d", d.device_type, d.device_id);
    return buf;
}

std::string dtype_name(const gatednorm_dtype &dt) {
    const char *base = nullptr;
    switch (dt.code) {
        case GATEDNORM_DTYPE_CODE_INT: base = "int"; break;
        case GATEDNORM_DTYPE_CODE_UINT: base = "uint"; break;
        case GATEDNORM_DTYPE_CODE_FLOAT: base = "float"; break;
        case GATEDNORM_DTYPE_CODE_BFLOAT: base = "bfloat"; break;
        case GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN: return "float8_e4m3fn";
        case GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FNUZ: return "float8_e4m3fnuz";
        case GATEDNORM_DTYPE_CODE_FLOAT8_E8M0FNU: return "float8_e8m0fnu";
        case 3: return "opaque handle";  // DLPack's kDLOpaqueHandle
        case 5: base = "complex"; break;  // DLPack's kDLComplex
        case 6: if (dt.bits == 8 && dt.lanes == 1) return "bool"; base = "bool"; break;  // kDLBool
        // DLPack 1.1's other narrow floats, named as their producers name them
        case 7: return "float8_e3m4";
        case 8: return "float8_e4m3";
        case 9: return "float8_e4m3b11fnuz";
        case 12: return "float8_e5m2";
        case 13: return "float8_e5m2fnuz";
        case 15: return "float6_e2m3fn";
        case 16: return "float6_e3m2fn";
        case 17: return "float4_e2m1fn";
    }
    char buf[48];
    if (base) snprintf(buf, sizeof buf, "%s%d", base, dt.bits);
    else snprintf(buf, sizeof buf, "DLPack code %d (%d bits)", dt.code, dt.bits);
    if (dt.lanes != 1) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "x%d", dt.lanes);
    return buf;
}

int64_t element_count(const gatednorm_tensor &t) {
    int64_t n = 1;
    for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
    return n;
}

bool is_empty(const gatednorm_tensor &t) {
    for (int i = 0; i < t.ndim; ++i)
        if (t.shape[i] == 0) return true;
    return false;
}

gatednorm_status check_descriptor(const gatednorm_tensor *t, const char *name) {
    if (!t) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: descriptor is NULL", name);
    if (t->ndim < 0 || t->ndim > GATEDNORM_MAX_DIMS)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: ndim %d outside 0..%d", name, t->ndim, GATEDNORM_MAX_DIMS);
    if (t->dtype.lanes != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: dtype lanes must be 1, got %d", name, t->dtype.lanes);
    // Every later size, extent and offset computation relies on these fitting in int64.
    int64_t count = 1;
    for (int i = 0; i < t->ndim; ++i) {
        if (t->shape[i] < 0) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: shape[%d] is negative (%lld)", name, i, (long long)t->shape[i]);
        if (__builtin_mul_overflow(count, t->shape[i], &count))
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: shape has more than 2^63 elements", name);
    }
    // data + byte_offset, and every element the strides reach, must lie below 2^63: byte
    // distances between them are then int64 (ptrdiff_t) values, no later pointer computation
    // wraps, and a garbage offset cannot send a CPU read anywhere (no user-space address on a
    // 64-bit host reaches 2^63).
    const uintptr_t base = reinterpret_cast<uintptr_t>(t->data);
    constexpr uintptr_t kAddressLimit = uintptr_t(INTPTR_MAX);
    if (base > kAddressLimit || t->byte_offset > kAddressLimit - base)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: data %p + byte_offset %llu reaches past 2^63", name, t->data,
                    (unsigned long long)t->byte_offset);
    if (count == 0) return GATEDNORM_STATUS_SUCCESS;
    const int64_t elem = t->dtype.bits % 8 == 0 && t->dtype.bits ? t->dtype.bits / 8 : 1;
    int64_t below = 0, above = 0;  // elements reached before / after the first one
    for (int i = 0; i < t->ndim; ++i) {
        int64_t reach;
        if (t->strides[i] == INT64_MIN || __builtin_mul_overflow(t->shape[i] - 1, std::llabs(t->strides[i]), &reach) ||
            __builtin_add_overflow(t->strides[i] < 0 ? below : above, reach, t->strides[i] < 0 ? &below : &above))
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: strides reach beyond 2^63 elements", name);
    }
    int64_t bytes_below, bytes_above;
    if (__builtin_add_overflow(above, int64_t(1), &above) || __builtin_mul_overflow(above, elem, &bytes_above) ||
        __builtin_mul_overflow(below, elem, &bytes_below))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: strides reach beyond 2^63 bytes", name);
    const uintptr_t first = base + t->byte_offset;
    if (uint64_t(bytes_below) > first || uint64_t(bytes_above) > kAddressLimit - first)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: data %p + byte_offset %llu with these strides reaches outside the address space",
                    name, t->data, (unsigned long long)t->byte_offset);
    if (!t->data) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: data pointer is NULL", name);
    if (reinterpret_cast<uintptr_t>(data_ptr(*t)) % uint64_t(elem) != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: data pointer %p (with byte_offset %llu) is not aligned to its %lld-byte elements",
                    name, t->data, (unsigned long long)t->byte_offset, (long long)elem);
    return GATEDNORM_STATUS_SUCCESS;
}

bool host_contiguous(const gatednorm_tensor *t, int *dtype, uintptr_t *lo, uintptr_t *hi) {
    if (!t || !is_host_device(t->device.device_type) || t->ndim < 1 || t->ndim > GATEDNORM_MAX_DIMS || t->dtype.lanes != 1)
        return false;
    const gatednorm_dtype &d = t->dtype;
    if (d.code == GATEDNORM_DTYPE_CODE_BFLOAT && d.bits == 16) *dtype = kBF16;
    else if (d.code == GATEDNORM_DTYPE_CODE_FLOAT && d.bits == 16) *dtype = kF16;
    else if (d.code == GATEDNORM_DTYPE_CODE_FLOAT && d.bits == 32) *dtype = kF32;
    else return false;
    int64_t count = 1;  // elements of the dims after i: the stride dim i must have
    for (int i = t->ndim - 1; i >= 0; --i) {
        const int64_t n = t->shape[i];
        // A unit dim's stride is never used, but check_descriptor refuses INT64_MIN anywhere
        // (its magnitude has no int64): refused here too, so the full checks say so.
        if (n < 1 || (n > 1 && t->strides[i] != count) || t->strides[i] == INT64_MIN || __builtin_mul_overflow(count, n, &count))
            return false;
    }
    if (t->strides[t->ndim - 1] != 1) return false;  // rows_shape wants it even for a last dim of 1
    const int64_t elem = d.bits / 8;
    int64_t bytes;
    constexpr uintptr_t kAddressLimit = uintptr_t(INTPTR_MAX);
    const uintptr_t base = reinterpret_cast<uintptr_t>(t->data);
    if (!t->data || __builtin_mul_overflow(count, elem, &bytes) || base > kAddressLimit || t->byte_offset > kAddressLimit - base)
        return false;
    const uintptr_t first = base + t->byte_offset;
    if (uint64_t(bytes) > kAddressLimit - first || first % uint64_t(elem) != 0) return false;
    *lo = first;
    *hi = first + uint64_t(bytes);
    return true;
}

gatednorm_status float_dtype(const gatednorm_tensor &t, const char *name, int *dtype) {
    const gatednorm_dtype &d = t.dtype;
    if (d.code == GATEDNORM_DTYPE_CODE_BFLOAT && d.bits == 16) *dtype = kBF16;
    else if (d.code == GATEDNORM_DTYPE_CODE_FLOAT && d.bits == 16) *dtype = kF16;
    else if (d.code == GATEDNORM_DTYPE_CODE_FLOAT && d.bits == 32) *dtype = kF32;
    else
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: dtype %s not supported; expected bfloat16, float16 or float32", name,
                    dtype_name(d).c_str());
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_same_device(const gatednorm_tensor &t, const char *name, const gatednorm_tensor &ref, const char *ref_name) {
    const bool both_host = is_host_device(t.device.device_type) && is_host_device(ref.device.device_type);
    if (both_host) return GATEDNORM_STATUS_SUCCESS;
    if (t.device.device_type != ref.device.device_type || t.device.device_id != ref.device.device_id)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: on %s, but %s is on %s", name, device_name(t.device).c_str(), ref_name,
                    device_name(ref.device).c_str());
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_no_self_overlap(const gatednorm_tensor &t, const char *name) {
    if (is_empty(t)) return GATEDNORM_STATUS_SUCCESS;
    // Dims of size > 1 sorted by |stride|: each stride must clear the span of the ones below.
    int order[GATEDNORM_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t.ndim; ++i)
        if (t.shape[i] > 1) order[n++] = i;
    for (int k = 1; k < n; ++k)  // insertion sort by |stride|; n <= GATEDNORM_MAX_DIMS
        for (int j = k; j > 0 && std::llabs(t.strides[order[j]]) < std::llabs(t.strides[order[j - 1]]); --j)
            std::swap(order[j], order[j - 1]);
    int64_t span = 1;  // elements covered by the dims below
    for (int k = 0; k < n; ++k) {
        const int i = order[k];
        const int64_t s = std::llabs(t.strides[i]);
        if (s < span)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: strides make elements overlap (dim %d has stride %lld, needs >= %lld)", name,
                        i, (long long)t.strides[i], (long long)span);
        span = s * (t.shape[i] - 1) + span;
    }
    return GATEDNORM_STATUS_SUCCESS;
}

namespace {
struct Extent {
    uintptr_t lo, hi;  // [lo, hi)
};
Extent extent(const gatednorm_tensor &t) {
    const int64_t es = std::max<int64_t>(1, t.dtype.bits / 8);
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < t.ndim; ++i) {
        const int64_t reach = (t.shape[i] - 1) * t.strides[i];
        if (reach < 0) lo += reach; else hi += reach;
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(data_ptr(t));
    return {base + lo * es, base + (hi + 1) * es};
}
}  // namespace

bool memory_overlaps(const gatednorm_tensor &a, const gatednorm_tensor &b) {
    if (is_empty(a) || is_empty(b)) return false;
    const Extent ea = extent(a), eb = extent(b);
    return ea.lo < eb.hi && eb.lo < ea.hi;
}

bool overlaps_bytes(const gatednorm_tensor &t, const void *lo, size_t bytes) {
    if (is_empty(t) || !bytes) return false;
    const Extent e = extent(t);
    const uintptr_t b = reinterpret_cast<uintptr_t>(lo);
    return e.lo < b + bytes && b < e.hi;
}

bool same_view(const gatednorm_tensor &a, const gatednorm_tensor &b) {
    if (data_ptr(a) != data_ptr(b) || a.ndim != b.ndim || a.dtype.code != b.dtype.code || a.dtype.bits != b.dtype.bits) return false;
    for (int i = 0; i < a.ndim; ++i)
        if (a.shape[i] != b.shape[i] || (a.shape[i] > 1 && a.strides[i] != b.strides[i])) return false;
    return true;
}

}  // namespace gn

namespace gn {

gatednorm_status check_norm_options(float eps, float weight_offset, int32_t pdl) {
    if (!(eps >= 0.0f) || isinf(eps))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.eps: expected a finite value >= 0, got %.9g", double(eps));
    if (!isfinite(weight_offset))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.weight_offset: expected a finite value, got %.9g", double(weight_offset));
    if (pdl != 0 && pdl != 1) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.pdl: expected 0 or 1, got %d", pdl);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_gate_options(int32_t norm_before_gate, int32_t activation) {
    if (norm_before_gate != 0 && norm_before_gate != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.norm_before_gate: expected 0 or 1, got %d", norm_before_gate);
    if (activation != GATEDNORM_ACTIVATION_SILU && activation != GATEDNORM_ACTIVATION_SIGMOID)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.activation: expected SILU (0) or SIGMOID (1), got %d", activation);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_norm_weight(const gatednorm_tensor &w, int64_t dim, const char *what, int *dtype) {
    GN_TRY(float_dtype(w, "weight", dtype));
    if (w.ndim != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "weight: expected shape [%lld] (%s), got %d dims", (long long)dim, what, w.ndim);
    if (w.shape[0] != dim)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "weight: expected shape [%lld] (%s), got [%lld]", (long long)dim, what,
                    (long long)w.shape[0]);
    if (w.shape[0] > 1 && w.strides[0] != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "weight: must be contiguous (stride 1), got stride %lld", (long long)w.strides[0]);
    return GATEDNORM_STATUS_SUCCESS;
}

std::string dims_text(const int64_t *v, int n) {
    std::string s = "[";
    char buf[32];
    for (int i = 0; i < n; ++i) {
        snprintf(buf, sizeof buf, i ? ", %lld" : "%lld", (long long)v[i]);
        s += buf;
    }
    return s + "]";
}

gatednorm_status rows_shape(const gatednorm_tensor &t, const char *name, int64_t group, RowsShape *out, const char *group_name) {
    if (t.ndim < 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: expected at least 1 dim [..., dim], got 0 (a scalar)", name);
    const int lead = t.ndim - 1;
    // An empty tensor's last dim is taken as contiguous (is_empty: its strides are free;
    // DLPack producers give them any values).
    const int64_t L = t.shape[lead], ls = is_empty(t) ? 1 : t.strides[lead];
    for (int i = 0; i < lead; ++i) {
        out->shape[i] = t.shape[i];
        out->strides[i] = t.strides[i];
    }
    const bool grouped = group > 0 && L != group;
    if (grouped && L % group != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: last dim %lld is not a multiple of %s %lld", name, (long long)L, group_name,
                    (long long)group);
    const int64_t norm = grouped ? group : L;
    if (norm < 1) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: the normalized dim must be >= 1, got %lld", name, (long long)norm);
    if (ls != 1 && norm > 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: last dim must be contiguous (stride 1), got stride %lld", name, (long long)ls);
    int n = lead;
    if (grouped) {
        // Checked first: group > 1 has ls == 1 and group == 1 is ls itself, so this cannot
        // overflow (an empty tensor's ls is 1 here, whatever its descriptor says).
        out->shape[n] = L / group;
        out->strides[n] = group * ls;
        ++n;
    }
    out->shape[n] = norm;
    out->strides[n] = ls;
    out->ndim = n + 1;
    return GATEDNORM_STATUS_SUCCESS;
}

namespace {
// The one rule of both shape comparisons below: the same rank and extents.
gatednorm_status same_dims(const int64_t *got, int got_ndim, const char *name, const int64_t *want, int want_ndim, const char *want_name) {
    bool same = got_ndim == want_ndim;
    for (int i = 0; same && i < got_ndim; ++i) same = got[i] == want[i];
    if (same) return GATEDNORM_STATUS_SUCCESS;
    return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: shape %s does not match %s's %s", name, dims_text(got, got_ndim).c_str(),
                want_name, dims_text(want, want_ndim).c_str());
}
}  // namespace

gatednorm_status same_rows_shape(const RowsShape &got, const char *name, const RowsShape &want, const char *want_name) {
    return same_dims(got.shape, got.ndim, name, want.shape, want.ndim, want_name);
}

gatednorm_status same_shape(const gatednorm_tensor &got, const char *name, const gatednorm_tensor &want, const char *want_name) {
    return same_dims(got.shape, got.ndim, name, want.shape, want.ndim, want_name);
}

gatednorm_status collapse_rows(const RowsShape *const shapes[], const char *const names[], int n, RowsGeometry *g) {
    const RowsShape &ref = *shapes[0];
    const int lead = ref.ndim - 1;
    int64_t ext[GATEDNORM_MAX_DIMS + 1];
    int64_t st[4][GATEDNORM_MAX_DIMS + 1];
    int m = 0;
    for (int i = 0; i < lead; ++i) {
        if (ref.shape[i] == 1) continue;  // a unit dim addresses nothing: its stride is free
        if (ref.shape[i] == 0) {  // no row at all: whatever the strides, nothing to address
            g->dim = ref.shape[lead];
            g->tokens = 0;
            g->heads = 1;
            for (int k = 0; k < n; ++k) g->stride_t[k] = g->stride_h[k] = 0;
            return GATEDNORM_STATUS_SUCCESS;
        }
        ext[m] = ref.shape[i];
        for (int k = 0; k < n; ++k) st[k][m] = shapes[k]->strides[i];
        ++m;
    }
    // Every product here is checked anyway (an empty tensor returned above, but a grouped
    // row's dims come from the caller's descriptor): one that overflows int64 cannot equal a
    // stride, and a merged extent that overflows saturates.
    const auto merges = [&](int k, int i) {
        int64_t p;
        return !__builtin_mul_overflow(ext[i + 1], st[k][i + 1], &p) && st[k][i] == p;
    };
    while (m > 2) {
        int at = -1;
        for (int i = 0; i + 1 < m && at < 0; ++i) {
            bool ok = true;
            for (int k = 0; k < n && ok; ++k) ok = merges(k, i);
            if (ok) at = i;
        }
        if (at < 0) {
            // Named: the first tensor that does not reduce on its own (two or more pairs that
            // do not merge), else (each reduces alone, not together) the one whose unmerged
            // pair, added to those of the tensors before it, makes two.  A review saw x named
            // for a z that did not reduce.
            const auto unmerged = [&](int k) {
                uint32_t bits = 0;
                for (int i = 0; i + 1 < m; ++i)
                    if (!merges(k, i)) bits |= 1u << i;
                return bits;
            };
            int blame = -1;
            for (int k = 0; k < n && blame < 0; ++k)
                if (__builtin_popcount(unmerged(k)) >= 2) blame = k;
            uint32_t seen = 0;
            for (int k = 0; k < n && blame < 0; ++k)
                if (__builtin_popcount(seen |= unmerged(k)) >= 2) blame = k;
            if (blame < 0) blame = 0;
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "%s: leading dims %s with strides %s do not reduce to [tokens, heads]: at most two of them may have "
                        "strides that do not merge (a dim merges with the next when its stride is the next dim's extent times "
                        "its stride)",
                        names[blame], dims_text(shapes[blame]->shape, lead).c_str(), dims_text(shapes[blame]->strides, lead).c_str());
        }
        if (__builtin_mul_overflow(ext[at], ext[at + 1], &ext[at])) ext[at] = INT64_MAX;
        for (int k = 0; k < n; ++k) st[k][at] = st[k][at + 1];
        for (int i = at + 1; i + 1 < m; ++i) {
            ext[i] = ext[i + 1];
            for (int k = 0; k < n; ++k) st[k][i] = st[k][i + 1];
        }
        --m;
    }
    g->dim = ref.shape[lead];
    g->tokens = m >= 1 ? ext[0] : 1;
    g->heads = m >= 2 ? ext[1] : 1;
    for (int k = 0; k < n; ++k) {
        g->stride_t[k] = m >= 1 ? st[k][0] : 0;
        g->stride_h[k] = m >= 2 ? st[k][1] : 0;
    }
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
