// The communicator of the fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md):
// per-rank buffers (CPU: POSIX shared memory; GPU: device memory and its IPC handle), the
// comm object, and gatednorm_allreduce_add_rmsnorm's validation and dispatch.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include <atomic>
#include <initializer_list>
#include <new>
#include <utility>

#include "backend.h"
#include "numerics.h"
#include "tensor_checks.h"

namespace gn {
gatednorm_status add_rmsnorm_problem(const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *,
                                     const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *,
                                     const gatednorm_add_rmsnorm_params *, AddRmsnormProblem &);
}  // namespace gn

struct gatednorm_comm {
    gn::CommState state;
};

using namespace gn;

namespace {

constexpr size_t kNameOffset = 16;  // CPU header: magic, bytes, segment name

gatednorm_status null_arg(const char *name) { return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: must not be NULL", name); }

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// CPU (host) or the GPU backend's device type with a visible id.
gatednorm_status check_device(const gatednorm_device &d, bool *host) {
    if (d.device_type == GATEDNORM_DEVICE_TYPE_CPU) {
        *host = true;
        return GATEDNORM_STATUS_SUCCESS;
    }
    *host = false;
    const int platform = gpu_platform();
    if (!platform || d.device_type != platform)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "device: %s; expected cpu%s (%s)", device_name(d).c_str(),
                    platform ? " or this build's GPU" : "", gpu_build_info());
    int32_t count = 0;
    gpu_device_count(&count);
    if (d.device_id < 0 || d.device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "device: %s, but %d GPU(s) are visible", device_name(d).c_str(), count);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status host_map(const char *name, bool create, size_t bytes, void **buffer) {
    const int fd = shm_open(name, create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
    if (fd < 0) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "handle: shm_open(\"%s\") failed: %s", name, strerror(errno));
    if (create && ftruncate(fd, off_t(bytes)) != 0) {
        const int err = errno;
        close(fd);
        shm_unlink(name);
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: could not size shared memory \"%s\" to %zu bytes: %s", name, bytes, strerror(err));
    }
#if defined(__linux__)
    // ftruncate only sets the size: a /dev/shm too small for it (a container's 64 MiB) made the
    // first write past the free space kill the process with SIGBUS (review).  Reserve the pages
    // now, so that no room is an error here; a file system that cannot reserve keeps ftruncate's.
    if (create) {
        const int err = posix_fallocate(fd, 0, off_t(bytes));
        if (err != 0 && err != EINVAL && err != EOPNOTSUPP) {
            close(fd);
            shm_unlink(name);
            return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: shared memory (/dev/shm) has no room for %zu bytes of \"%s\": %s",
                        bytes, name, strerror(err));
        }
    }
#endif
    if (!create) {
        struct stat st;
        if (fstat(fd, &st) != 0 || size_t(st.st_size) < kCommHeader) {
            close(fd);
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "handle: shared memory \"%s\" is not a gatednorm comm buffer", name);
        }
        bytes = size_t(st.st_size);
    }
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        if (create) shm_unlink(name);
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "%s: mmap of %zu bytes of \"%s\" failed: %s", create ? "bytes" : "handle", bytes, name,
                    strerror(err));
    }
    if (!create && (static_cast<uint64_t *>(p)[0] != kCommMagic || static_cast<uint64_t *>(p)[1] != bytes)) {
        munmap(p, bytes);
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "handle: shared memory \"%s\" is not a gatednorm comm buffer", name);
    }
    *buffer = p;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status buffer_size(int32_t world, size_t max_input_bytes, size_t *bytes) {
    if (!bytes) return null_arg("bytes");
    if (world < 1 || world > kCommMaxWorld)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "world_size: expected 1 .. %d, got %d", kCommMaxWorld, world);
    if (max_input_bytes == 0 || max_input_bytes > (size_t(1) << 40))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "max_input_bytes: expected 1 .. 2^40, got %zu", max_input_bytes);
    *bytes = kCommHeader + 3 * round_up(max_input_bytes, kCommSlotAlign);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status buffer_alloc(gatednorm_device device, size_t bytes, void **buffer, uint8_t *handle) {
    if (!buffer) return null_arg("buffer");
    if (!handle) return null_arg("handle");
    bool host;
    GN_TRY(check_device(device, &host));
    if (bytes < kCommHeader + 3 * kCommSlotAlign)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "bytes: %zu is below the smallest comm buffer (%zu); use gatednorm_comm_buffer_size",
                    bytes, kCommHeader + 3 * kCommSlotAlign);
    if (!host) return gpu_comm_buffer_alloc(device.device_id, bytes, buffer, handle);
    cpu_comm_remove_stale_segments();
    static std::atomic<unsigned> counter{0};
    char name[48];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(name, sizeof name, "/gatednorm.%d.%u.%lx", int(getpid()), counter.fetch_add(1), (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
    void *p = nullptr;
    GN_TRY(host_map(name, true, bytes, &p));  // ftruncate zero-fills
    uint64_t *h = static_cast<uint64_t *>(p);
    h[0] = kCommMagic;
    h[1] = bytes;
    memcpy(static_cast<char *>(p) + kNameOffset, name, sizeof name);
    static_assert(kNameOffset + sizeof name <= 64, "the name ends where cpu_allreduce.cpp's header words begin");
    cpu_comm_stamp_owner(static_cast<char *>(p));
    memset(handle, 0, GATEDNORM_COMM_HANDLE_BYTES);
    memcpy(handle, name, strlen(name));
    *buffer = p;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status buffer_open(gatednorm_device device, const uint8_t *handle, void **buffer) {
    if (!buffer) return null_arg("buffer");
    if (!handle) return null_arg("handle");
    bool host;
    GN_TRY(check_device(device, &host));
    if (!host) return gpu_comm_buffer_open(device.device_id, handle, buffer);
    char name[GATEDNORM_COMM_HANDLE_BYTES + 1];
    memcpy(name, handle, GATEDNORM_COMM_HANDLE_BYTES);
    name[GATEDNORM_COMM_HANDLE_BYTES] = 0;
    if (name[0] != '/' || strncmp(name, "/gatednorm.", 11) != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "handle: not a handle of a CPU comm buffer (from gatednorm_comm_buffer_alloc)");
    return host_map(name, false, 0, buffer);
}

gatednorm_status host_unmap(void *buffer, bool unlink) {
    const uint64_t *h = static_cast<const uint64_t *>(buffer);
    if (h[0] != kCommMagic) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffer: not a CPU comm buffer");
    char name[48];
    memcpy(name, static_cast<const char *>(buffer) + kNameOffset, sizeof name);
    name[47] = 0;
    const size_t bytes = h[1];
    if (munmap(buffer, bytes) != 0) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffer: munmap failed: %s", strerror(errno));
    if (unlink) shm_unlink(name);
    return GATEDNORM_STATUS_SUCCESS;
}

// The segment's name goes; the mapping stays (host_unmap's unlink of a gone name is harmless).
gatednorm_status buffer_unlink(gatednorm_device device, void *buffer) {
    if (!buffer) return null_arg("buffer");
    bool host;
    GN_TRY(check_device(device, &host));
    if (!host) return GATEDNORM_STATUS_SUCCESS;  // IPC handles name no file
    const uint64_t *h = static_cast<const uint64_t *>(buffer);
    if (h[0] != kCommMagic) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffer: not a CPU comm buffer");
    char name[48];
    memcpy(name, static_cast<const char *>(buffer) + kNameOffset, sizeof name);
    name[47] = 0;
    if (shm_unlink(name) != 0 && errno != ENOENT)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffer: shm_unlink(\"%s\") failed: %s", name, strerror(errno));
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status buffer_release(gatednorm_device device, void *buffer, bool own) {
    if (!buffer) return null_arg("buffer");
    bool host;
    GN_TRY(check_device(device, &host));
    if (host) return host_unmap(buffer, own);
    return own ? gpu_free(device.device_id, buffer) : gpu_comm_buffer_close(device.device_id, buffer);
}

gatednorm_status comm_create(int32_t rank, int32_t world, void *const *buffers, size_t bytes, gatednorm_device device, gatednorm_comm **comm) {
    if (!comm) return null_arg("comm");
    if (world < 1 || world > kCommMaxWorld)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "world_size: expected 1 .. %d, got %d", kCommMaxWorld, world);
    if (rank < 0 || rank >= world) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "rank: expected 0 .. %d (world_size %d), got %d", world - 1, world, rank);
    if (!buffers) return null_arg("buffers");
    bool host;
    GN_TRY(check_device(device, &host));
    if (bytes < kCommHeader + 3 * kCommSlotAlign)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffer_bytes: %zu is below the smallest comm buffer (%zu)", bytes,
                    kCommHeader + 3 * kCommSlotAlign);
    for (int r = 0; r < world; ++r) {
        if (!buffers[r]) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffers[%d]: must not be NULL", r);
        if (reinterpret_cast<uintptr_t>(buffers[r]) % kCommSlotAlign)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffers[%d]: must be %zu-byte aligned", r, kCommSlotAlign);
        for (int k = 0; k < r; ++k)
            if (buffers[k] == buffers[r]) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "buffers[%d]: the same buffer as buffers[%d]", r, k);
        // Each buffer's header says what it is and how large (GPU: read from the device, once
        // at setup): a smaller or foreign buffer, or ranks disagreeing on buffer_bytes, would
        // have the exchange write and read past the buffers' ends.
        uint64_t h[2];
        char name[24];
        snprintf(name, sizeof name, "buffers[%d]", r);
        if (host) memcpy(h, buffers[r], sizeof h);
        else GN_TRY(gpu_comm_buffer_header(device.device_id, buffers[r], h, name));
        if (h[0] != kCommMagic)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: not a %s comm buffer (gatednorm_comm_buffer_alloc / _open)", name,
                        host ? "CPU" : "GPU");
        if (h[1] != bytes)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: %llu bytes, but buffer_bytes is %zu (every rank must use the same size)", name,
                        (unsigned long long)h[1], bytes);
    }
    if (!host) GN_TRY(gpu_comm_check_residency(device.device_id, world, buffers));
    gatednorm_comm *c = new gatednorm_comm;
    c->state.device = device;
    if (!host) {
        const gatednorm_status st = gpu_comm_abort_alloc(c->state);
        if (st != GATEDNORM_STATUS_SUCCESS) {
            delete c;
            return st;
        }
    }
    c->state.rank = rank;
    c->state.world = world;
    for (int r = 0; r < world; ++r) c->state.buffers[r] = static_cast<char *>(buffers[r]);
    if (host) cpu_comm_claim(c->state.buffers[rank], rank);  // which every peer's call checks against its list
    c->state.buffer_bytes = bytes;
    c->state.slot_bytes = (bytes - kCommHeader) / 3 / kCommSlotAlign * kCommSlotAlign;
    *comm = c;
    return GATEDNORM_STATUS_SUCCESS;
}

// The algorithm of one call, from the comm's setting and the call's shape only, so that every
// rank (same setting, same shapes: the callers' rule) picks the same one.  AUTO is provisional
// (never measured: docs/allreduce.md, "Two-shot: when it pays"): two-shot reads 2 / W of
// one-shot's bytes over the links but adds a second barrier and gives up the one-launch fusion,
// so one-shot below 4 ranks (at W = 2 the bytes are the same; at 3 the saving, a third, is left
// to a measurement) and up to kCommGpuBlocks tokens (one launch a rank does the exchange and the
// norm, and so few rows are latency, not bytes); two-shot from 4 ranks above that.  World size
// 1 has no peers: one-shot, whatever was set.
// SUCCESS, or why the comm is unusable: a CPU rank found the ranks out of step or timed out;
// a GPU exchange kernel gave up waiting for a peer (its abort word).
gatednorm_status comm_usable(const CommState &c) {
    return c.device.device_type == GATEDNORM_DEVICE_TYPE_CPU ? cpu_comm_usable(c) : gpu_comm_usable(c);
}

bool two_shot(const CommState &c, int64_t tokens) {
    if (c.world == 1) return false;
    switch (c.algorithm) {
        case GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT: return false;
        case GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT: return true;
        default: return c.world >= 4 && tokens > kCommGpuBlocks;
    }
}

// No tensor of a call may lie in any rank's comm buffer: the exchange writes this rank's
// slots and header and reads the peers' (a review: y over the buffer's header made the comm
// unusable and its shared-memory segment unfreeable; x inside a slot overlapped the copy in).
gatednorm_status check_outside_buffers(const CommState &c, std::initializer_list<std::pair<const gatednorm_tensor *, const char *>> ts) {
    for (const auto &t : ts) {
        if (!t.first) continue;
        for (int r = 0; r < c.world; ++r)
            if (overlaps_bytes(*t.first, c.buffers[r], c.buffer_bytes))
                return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: overlaps the communicator's buffers[%d] (rank %d's exchange memory)",
                            t.second, r, r);
    }
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status allreduce_checked(gatednorm_comm *comm, const gatednorm_tensor *x, const gatednorm_tensor *res, const gatednorm_tensor *weight,
                                   const gatednorm_tensor *res_out, const gatednorm_tensor *y, const gatednorm_tensor *q,
                                   const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, void *stream) {
    if (!comm) return null_arg("comm");
    ++comm->state.calls;  // before any check: a refused call counts (the CPU backend compares the counts)
    GN_TRY(comm_usable(comm->state));
    AddRmsnormProblem p;
    GN_TRY(add_rmsnorm_problem(x, res, weight, res_out, y, q, scales, params, p));
    if (p.pdl) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.pdl: must be 0 for the all-reduce (its flag protocol relies on stream order)");
    const CommState &c = comm->state;
    GN_TRY(check_outside_buffers(c, {{x, "x"}, {res, "residual"}, {weight, "weight"}, {res_out, "residual_out"}, {y, "y"},
                                     {q, "q"}, {scales, "scales"}}));
    const bool comm_host = c.device.device_type == GATEDNORM_DEVICE_TYPE_CPU;
    const bool x_host = is_host_device(x->device.device_type);
    if (comm_host != x_host || (!comm_host && x->device.device_id != c.device.device_id))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "x: on %s, but the communicator is on %s", device_name(x->device).c_str(),
                    device_name(c.device).c_str());
    // x's bytes, from dims that each fit but whose product need not (a broadcast x of 2^42
    // tokens is a legal input): an overflowing product is past any limit, never wrapped.
    size_t need = 0;
    const bool past = __builtin_mul_overflow(size_t(p.tokens), size_t(p.hidden), &need) ||
                      __builtin_mul_overflow(need, size_t(dtype_size(p.x_dtype)), &need) || need > c.slot_bytes;
    if (past)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                    "x: %lld tokens x %lld of %s is past this communicator's fused limit of %zu bytes "
                    "(gatednorm_comm_max_input_bytes); use the collective library's all-reduce and gatednorm_add_rmsnorm",
                    (long long)p.tokens, (long long)p.hidden, dtype_name(x->dtype).c_str(), c.slot_bytes);
    if (need == 0) return GATEDNORM_STATUS_SUCCESS;  // every rank has the same shapes: none takes part
    const bool two = two_shot(c, p.tokens);
    if (comm_host) return cpu_allreduce_add_rmsnorm(c, p, two);
    return gpu_allreduce_add_rmsnorm(c, p, two, stream);
}

}  // namespace

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_size(int32_t world_size, size_t max_input_bytes, size_t *bytes) {
    return buffer_size(world_size, max_input_bytes, bytes);
}

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_alloc(gatednorm_device device, size_t bytes, void **buffer, uint8_t *handle) {
    return guarded("comm_buffer_alloc", [&] { return buffer_alloc(device, bytes, buffer, handle); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_open(gatednorm_device device, const uint8_t *handle, void **buffer) {
    return guarded("comm_buffer_open", [&] { return buffer_open(device, handle, buffer); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_unlink(gatednorm_device device, void *buffer) {
    return guarded("comm_buffer_unlink", [&] { return buffer_unlink(device, buffer); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_close(gatednorm_device device, void *buffer) {
    return guarded("comm_buffer_close", [&] { return buffer_release(device, buffer, false); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_buffer_free(gatednorm_device device, void *buffer) {
    return guarded("comm_buffer_free", [&] { return buffer_release(device, buffer, true); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_create(int32_t rank, int32_t world_size, void *const *buffers, size_t buffer_bytes,
                                                     gatednorm_device device, gatednorm_comm **comm) {
    return guarded("comm_create", [&] { return comm_create(rank, world_size, buffers, buffer_bytes, device, comm); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_destroy(gatednorm_comm *comm) {
    if (comm && comm->state.abort_host) gpu_comm_abort_free(comm->state);
    delete comm;
    return GATEDNORM_STATUS_SUCCESS;
}

GATEDNORM_API gatednorm_status gatednorm_comm_check(const gatednorm_comm *comm) {
    if (!comm) return null_arg("comm");
    return guarded("comm_check", [&] { return comm_usable(comm->state); });
}

GATEDNORM_API gatednorm_status gatednorm_comm_max_input_bytes(const gatednorm_comm *comm, size_t *bytes) {
    if (!comm) return null_arg("comm");
    if (!bytes) return null_arg("bytes");
    *bytes = comm->state.slot_bytes;
    return GATEDNORM_STATUS_SUCCESS;
}

GATEDNORM_API gatednorm_status gatednorm_comm_set_algorithm(gatednorm_comm *comm, int32_t algorithm) {
    if (!comm) return null_arg("comm");
    if (algorithm != GATEDNORM_ALLREDUCE_ALGORITHM_AUTO && algorithm != GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT &&
        algorithm != GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "algorithm: expected 0 (AUTO), 1 (ONE_SHOT) or 2 (TWO_SHOT), got %d", algorithm);
    comm->state.algorithm = algorithm;
    return GATEDNORM_STATUS_SUCCESS;
}

GATEDNORM_API gatednorm_status gatednorm_allreduce_add_rmsnorm(gatednorm_comm *comm, const gatednorm_tensor *x, const gatednorm_tensor *residual,
                                                               const gatednorm_tensor *weight, const gatednorm_tensor *residual_out,
                                                               const gatednorm_tensor *y, const gatednorm_tensor *q, const gatednorm_tensor *scales,
                                                               const gatednorm_add_rmsnorm_params *params, void *stream) {
    return guarded("allreduce_add_rmsnorm",
                   [&] { return allreduce_checked(comm, x, residual, weight, residual_out, y, q, scales, params, stream); });
}

}  // extern "C"
