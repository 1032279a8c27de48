// Validation shared by every op with FP8 per-group outputs (ops.md §2, §3): the quant
// options block, the token dims of a call's tensors, and the q / scales descriptors.
#pragma once
#include "backend.h"
#include "tensor_checks.h"

namespace gn {

// gatednorm_quant_fp8 defaults (format E4M3FN, fp8_max 0 = the format's, floor 1e-10, FP32
// scales, G = 128).
gatednorm_quant_fp8 quant_fp8_defaults();

// fp8_max against `format` (0 = the format's max: +0 only, -0 is a negative bound; else a
// value in [1, the format's max]); the bound to clamp at in *resolved.  Errors name `name`.
gatednorm_status check_fp8_max(float fp8_max, int format, const char *name, float *resolved);

// Checks the block (errors name "params.quant.<field>") and copies its options into spec.
gatednorm_status read_quant_block(const gatednorm_quant_fp8 &b, QuantFp8Spec *spec);

// The token dims of a call: each tensor's leading dims up to (not including) its row dims,
// all of one shape.  collapse_tokens merges them into one token dim (unit dims dropped,
// neighbours merged where every tensor's strides allow) and fails, naming the tensor, where
// they do not merge; a zero extent among them is zero tokens whatever the strides (an empty
// [2, 0, D] batch is accepted, as gatednorm_rmsnorm_gated accepts it).
struct TokenDims {
    const char *name = nullptr;
    int ndim = 0;
    int64_t shape[GATEDNORM_MAX_DIMS] = {};
    int64_t strides[GATEDNORM_MAX_DIMS] = {};
};
constexpr int kMaxTokenTensors = 8;
gatednorm_status collapse_tokens(const TokenDims *const t[], int n, int64_t *tokens, int64_t stride[]);

// q [tokens..., row] and scales [tokens..., K] (K = row / G; ceil(K / 4) words for packed
// E8M0) against the token dims `tok` (shape only) and the row length: dtypes (q's must match
// spec->format), shapes, q's row contiguous, no self-overlap.  Fills spec->q, spec->scales,
// spec->groups and the token dims of both for collapse_tokens (their strides).
gatednorm_status check_quant_outputs(const gatednorm_tensor &q, const gatednorm_tensor &scales, const TokenDims &tok, int64_t row,
                                     QuantFp8Spec *spec, TokenDims *q_tok, TokenDims *s_tok);

// Fails naming `out` when the byte ranges of out and in intersect.
gatednorm_status check_disjoint(const gatednorm_tensor &out, const char *out_name, const gatednorm_tensor &in, const char *in_name);

}  // namespace gn
