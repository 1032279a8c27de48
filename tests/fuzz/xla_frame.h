/* The XLA FFI C API's call frame (major version 0), as the tests build it: declared from the
 * API's published header, independently of pybind_free_api/src/xla_ffi.cpp, so a layout slip
 * there is caught.  Shared by tests/fuzz/fuzz_abi.c and tests/c_consumer/two_copies.c. */
#ifndef GATEDNORM_TESTS_XLA_FRAME_H
#define GATEDNORM_TESTS_XLA_FRAME_H
#include <stddef.h>
#include <stdint.h>
typedef struct xla_ext { size_t struct_size; int type; struct xla_ext *next; } xla_ext;
typedef struct { size_t struct_size; xla_ext *ext; int major, minor; } xla_version;
typedef struct { size_t struct_size; xla_ext *ext; const char *message; int errc; } xla_error_args;
typedef struct {
    size_t struct_size; xla_ext *ext; xla_version version; const void *internal;
    void *(*error_create)(xla_error_args *);
    void *unused[16];
    void *(*device_ordinal_get)(void *);
} xla_api;
typedef struct { size_t struct_size; xla_ext *ext; int dtype; void *data; int64_t rank; int64_t *dims; } xla_buffer;
typedef struct { const char *ptr; size_t len; } xla_span;
typedef struct { int dtype; void *value; } xla_scalar;
typedef struct { int dtype; size_t size; void *data; } xla_array;
typedef struct { size_t struct_size; xla_ext *ext; int64_t size; int *types; void **items; } xla_list;
typedef struct { size_t struct_size; xla_ext *ext; int64_t size; int *types; xla_span **names; void **attrs; } xla_attrs;
typedef struct {
    size_t struct_size; xla_ext *ext; const xla_api *api; void *ctx; int stage;
    xla_list args, rets; xla_attrs attrs; void *future;
} xla_frame;
#endif
