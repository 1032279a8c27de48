// Every rounding rule of gatednorm, defined once, shared by the CPU backend (plain C++)
// and the GPU kernels (HIP/CUDA).  Values of 16-bit and 8-bit formats travel as raw bits,
// so both sides run the very same code and agree bit for bit wherever the fp32 math does.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GN_HD __host__ __device__ __forceinline__
#else
#define GN_HD inline
#endif

// Device passes of a GPU compiler (not the host pass, not the CPU backend).
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define GN_DEVICE_PASS 1
#endif
// NVIDIA sm_80+: packed RNE converts fp32x2 -> bf16x2 / f16x2 in one instruction.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GN_HW_PACKED_CVT 1
#endif

namespace gn {

// Storage formats of activations and weights (ops.md: bf16 / fp16 / fp32, independently).
enum Dtype : int { kBF16 = 0, kF16 = 1, kF32 = 2 };

GN_HD int dtype_size(int dt) { return dt == kF32 ? 4 : 2; }

GN_HD uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
GN_HD float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// bf16 -> fp32 is exact.
GN_HD float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

// fp32 -> bf16, round to nearest even.  NaN stays NaN (quiet, sign kept); overflow -> inf.
GN_HD uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

// fp16 -> fp32 is exact; subnormals are scaled by 2^-24, which is exact in fp32.
// Exact everywhere, so the hardware convert is the same function.
GN_HD float f16_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#elif defined(__HIP_DEVICE_COMPILE__)
    return float(__builtin_bit_cast(_Float16, h));
#else
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) return f32_from_bits(sign | f32_bits(float(mant) * 5.9604644775390625e-8f));
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

// fp32 -> fp16, round to nearest even, overflow -> inf, NaN -> quiet NaN.
GN_HD uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return uint16_t(sign | (u > 0x7f800000u ? 0x7e00u | ((u >> 13) & 0x1ffu) : 0x7c00u));
    if (u >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (u < 0x38800000u) {
        // Result is subnormal (or zero): the fp32 adder does the RNE for us when the value
        // is added to 0.5, whose ulp (2^-24) is exactly fp16's subnormal quantum.
        float r = f32_from_bits(u) + 0.5f;
        return uint16_t(sign | uint16_t(f32_bits(r) - 0x3f000000u));
    }
    uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // rebias exponent (127 -> 15) and add the RNE half-ulp
    return uint16_t(sign | uint16_t(u >> 13));
}

// Two values rounded (RNE) and packed, lo in bits 0-15.  The hardware path agrees with
// f32_to_bf16 / f32_to_f16 on every non-NaN input; a NaN stays NaN (canonical payload).
GN_HD uint32_t pack_bf16x2(float lo, float hi) {
#if defined(GN_HW_PACKED_CVT)
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return uint32_t(f32_to_bf16(lo)) | (uint32_t(f32_to_bf16(hi)) << 16);
#endif
}

GN_HD uint32_t pack_f16x2(float lo, float hi) {
#if defined(GN_HW_PACKED_CVT)
    uint32_t r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return uint32_t(f32_to_f16(lo)) | (uint32_t(f32_to_f16(hi)) << 16);
#endif
}

GN_HD float load_as_f32(const void *p, int dt) {
    if (dt == kF32) return *static_cast<const float *>(p);
    uint16_t h = *static_cast<const uint16_t *>(p);
    return dt == kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

GN_HD void store_from_f32(void *p, int dt, float v) {
    if (dt == kF32) { *static_cast<float *>(p) = v; return; }
    *static_cast<uint16_t *>(p) = dt == kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
}

// Gate activations (ops.md §1).  sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e), e = exp(-|z|):
// the denominator stays in [1, 2], so nothing overflows (sigmoid(-100) is e^-100, not a
// 1/inf), NaN propagates, and the GPU may use its fast exponential and divide (ex2.approx
// and rcp.approx: a few ulp, branch-free, ~10 instructions fewer per element than expf
// and an IEEE divide, which matters in a kernel that streams 6 bytes per element).  The
// CPU evaluates the same expression with libm; no two exp implementations are bit-exact.
enum Activation : int { kSilu = 0, kSigmoid = 1 };

GN_HD float sigmoid(float z) {
#if defined(GN_DEVICE_PASS)
    const float e = __expf(-fabsf(z));
    const float r = __fdividef(1.0f, 1.0f + e);
#else
    const float e = expf(-fabsf(z));
    const float r = 1.0f / (1.0f + e);
#endif
    return z >= 0.0f ? r : e * r;
}
GN_HD float activate(float z, int act) { return act == kSigmoid ? sigmoid(z) : z * sigmoid(z); }

// ---------------------------------------------------------------- int4 weights (W4A16)
// The unpack rule (docs/w4a16.md, "Plain"): two 4-bit codes 0..15 per byte along K, low
// nibble first: byte b of a row holds k = 2b in bits 0-3 and k = 2b + 1 in bits 4-7.
GN_HD int int4_code(const uint8_t *row, int64_t k) { return (row[k >> 1] >> ((k & 1) * 4)) & 0xf; }

// The one rounding of W4A16 (ops.md section 4): a weight dequantizes to the 16-bit value
//     w16 = RNE_dt((q - z) * s16),   s16 = RNE_dt(scale)  (the scale in the activations' dtype)
// q - z is an exact integer in -15..15 and its product with a 16-bit value is exact in fp32,
// so the conversion below is the only rounding; the GPU kernels reach the same bits with
// packed 16-bit arithmetic (w4a16_kernels.h: the subtraction is exact, the multiply rounds
// once).  The GEMM then accumulates a16 * w16 in fp32 and rounds once at the output.
GN_HD uint16_t w4a16_scale_bits(float scale, int dt) { return dt == kBF16 ? f32_to_bf16(scale) : f32_to_f16(scale); }
GN_HD float w4a16_half_to_f32(uint16_t h, int dt) { return dt == kBF16 ? bf16_to_f32(h) : f16_to_f32(h); }
GN_HD uint16_t w4a16_dequant_bits(int q, int z, uint16_t s16, int dt) {
    const float w = float(q - z) * w4a16_half_to_f32(s16, dt);
    return dt == kBF16 ? f32_to_bf16(w) : f32_to_f16(w);
}
// Magic-number conversion: for a code q in 0..15, the 16-bit pattern (base | q) is exactly
// base_value + q (bf16 128 + q: 0x4300, ulp 1 at 128; fp16 1024 + q: 0x6400, ulp 1 at
// 1024), so (base | q) - (base | z) = q - z exactly in 16-bit arithmetic.
GN_HD uint16_t int4_magic_base(int dt) { return dt == kBF16 ? uint16_t(0x4300) : uint16_t(0x6400); }
// Zero points travel in the tiled layout as (base | z); z is its low nibble.
GN_HD int int4_magic_code(uint16_t v) { return v & 0xf; }

}  // namespace gn
