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

// Storage formats of activations and weights (docs/ops.md: bf16 / fp16 / fp32, independently).
enum Dtype : int { kBF16 = 0, kF16 = 1, kF32 = 2 };

GN_HD int dtype_size(int dt) { return dt == kF32 ? 4 : 2; }

GN_HD uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
GN_HD float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// bf16 -> fp32 is exact.
GN_HD float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

// fp32 -> bf16, round to nearest even.  NaN stays NaN (quiet, sign kept); overflow -> inf.
// Written as selects, no branch: the CPU backend's row loops vectorize it.
GN_HD uint16_t f32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x0040u;
    return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
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

// Two pairs of 16-bit values (lo in bits 0-15) added and rounded to their dtype: the rule is
// the sum in fp32, rounded once (RNE) to the dtype (f32_to_bf16 / f32_to_f16: what the CPU
// backend and the generic kernels compute, and this function off NVIDIA).  The
// packed hardware add (NVIDIA sm_90 `add.rn.bf16x2` / `add.rn.f16x2`; sm_80 has no bf16x2
// add, so `fma.rn.bf16x2` by 1.0, exact before its one rounding) rounds the exact sum once,
// and that is the same value: rounding first to fp32 (24 bits) and then to a format of p <= 11
// bits never differs from rounding once where 24 >= 2p + 2 (double rounding is innocuous for
// + there; Figueroa, 1995), subnormal and overflowing results included.  Signed zeros agree
// (-0 + +0 is +0 both ways); a NaN stays NaN (the hardware's canonical payload, as
// pack_bf16x2).  One instruction where the fp32 route takes seven (four widenings, two adds,
// a pack): add-RMSNorm's row kernels, 6% faster at [1024, 4096] (run 118).
template <int DT>
GN_HD uint32_t add_rounded_x2(uint32_t a, uint32_t b) {
    static_assert(DT == kBF16 || DT == kF16, "16-bit pairs");
#if defined(GN_HW_PACKED_CVT)
    uint32_t r;
    if constexpr (DT == kF16) {
        asm("add.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    } else {
#if __CUDA_ARCH__ >= 900
        asm("add.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
#else
        asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(0x3f803f80u), "r"(b));
#endif
    }
    return r;
#else
    const uint16_t a0 = uint16_t(a), a1 = uint16_t(a >> 16), b0 = uint16_t(b), b1 = uint16_t(b >> 16);
    if constexpr (DT == kBF16) return pack_bf16x2(bf16_to_f32(a0) + bf16_to_f32(b0), bf16_to_f32(a1) + bf16_to_f32(b1));
    else return pack_f16x2(f16_to_f32(a0) + f16_to_f32(b0), f16_to_f32(a1) + f16_to_f32(b1));
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

// Gate activations (docs/ops.md section 1).  sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e), e = exp(-|z|):
// the denominator stays in [1, 2], so nothing overflows (sigmoid(-100) is e^-100, not a
// 1/inf), NaN propagates, and the GPU may use its fast exponential and divide (ex2.approx
// and rcp.approx: a few ulp, branch-free, ~10 instructions fewer per element than expf
// and an IEEE divide, which matters in a kernel that streams 6 bytes per element).  The
// CPU evaluates the same expression with host_exp_nonpos (below); no two exp
// implementations are bit-exact.
enum Activation : int { kSilu = 0, kSigmoid = 1 };

#if defined(GN_DEVICE_PASS)
// The special-function unit's 2^x and 1/x as single instructions (NVIDIA MUFU.EX2 /
// MUFU.RCP, AMD v_exp_f32 / v_rcp_f32; a few ulp).  Flushing (ftz) forms: subnormal inputs
// and results go to zero, which spares the range fix-ups the plain .approx forms wrap around
// the instruction; the caller keeps arguments and results normal (sigmoid below).
__device__ __forceinline__ float exp2_approx_ftz(float x) {
#if defined(__CUDA_ARCH__)
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#else
    return __builtin_amdgcn_exp2f(x);
#endif
}
__device__ __forceinline__ float rcp_approx_ftz(float x) {
#if defined(__CUDA_ARCH__)
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#else
    return __builtin_amdgcn_rcpf(x);
#endif
}
#endif

// Host exp(x) for x <= 0 (sigmoid's argument), branch-free arithmetic only so that the
// compiler vectorizes a loop of it (libm's expf is a call per element): Cephes' expf
// (Cody-Waite reduction by ln 2, degree-6 polynomial, within 2 ulp of exp), the power of two
// applied in two normal halves so that results down to the subnormal range are right.
// exp(-inf) = 0, NaN stays NaN.
GN_HD float host_exp_nonpos(float x) {
    const float xc = x > -104.0f ? x : -104.0f;  // exp(-104) rounds to 0; NaN -> -104 (restored below)
    const float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
    float r = xc - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t n = int32_t(nf), n1 = n / 2, n2 = n - n1;  // n in [-150, 0]
    const float e = p * f32_from_bits(uint32_t(n1 + 127) << 23) * f32_from_bits(uint32_t(n2 + 127) << 23);
    return x == x ? e : x;
}

GN_HD float sigmoid(float z) {
#if defined(GN_DEVICE_PASS)
    // e = h * h, h = 2^(-|z| log2(e) / 2): the flushing exp2 is one instruction, and h stays
    // normal wherever e is normal or subnormal (|z| < 103.97; h itself turns subnormal, and is
    // flushed, only past |z| ~ 174.7, where e is 0 either way), so the square (an ordinary,
    // non-flushing multiply) gives e's subnormals as the plain exp2 does, with one multiply
    // in place of its range fix-ups.  1 + e lies in [1, 2]: the flushing reciprocal is exact
    // there to its few ulp.
    const float h = exp2_approx_ftz(fabsf(z) * -0.72134752044448170f);  // log2(e) / 2
    const float e = h * h;
    const float r = rcp_approx_ftz(1.0f + e);
#else
    const float e = host_exp_nonpos(-fabsf(z));
    const float r = 1.0f / (1.0f + e);
#endif
    return z >= 0.0f ? r : e * r;
}
GN_HD float activate(float z, int act) { return act == kSigmoid ? sigmoid(z) : z * sigmoid(z); }


// ---- FP8 (ops.md §2) ------------------------------------------------------------------
// E4M3 in two flavours: fn (OCP; bias 7, max 448 = 0x7e, NaN 0x7f/0xff, has -0) and fnuz
// (bias 8, max 240 = 0x7f, the only NaN is 0x80, so no negative zero).
enum Fp8Format : int { kE4M3FN = 0, kE4M3FNUZ = 1 };
// Scale storage (gatednorm_scale_format).
enum ScaleFormat : int { kScaleF32 = 0, kScaleF32Ue8m0 = 1, kScaleE8m0 = 2, kScaleE8m0Packed = 3 };

GN_HD float fp8_format_max(int fmt) { return fmt == kE4M3FNUZ ? 240.0f : 448.0f; }
GN_HD uint8_t fp8_nan_code(int fmt) { return fmt == kE4M3FNUZ ? 0x80u : 0x7fu; }

// The FP8 encoder: round to nearest even, saturating to +-fp8_max (<= the format's max, not
// necessarily a code: the clamped value is then rounded like any other, and cannot round
// past the format's max, which is a code).  NaN -> the format's NaN (0x7f for fn whatever
// the sign, 0x80 for fnuz).  fnuz: a value rounding to zero is 0x00 (0x80 is its NaN).
// ml_dtypes' float32 -> float8 conversion of the clamped value gives the same bits for every
// non-NaN input (tests/test_rmsnorm_gated_fp8.py sweeps every finite bf16 value).
// Written without branches or library calls (both ranges computed, then selected; no fminf /
// rintf, which a CPU loop cannot vectorize at x86-64's baseline) so that the CPU backend's
// encode loop vectorizes; the same bits as the branchy form it replaced for every float
// (checked over all 2^32 inputs at 448 / fn and 240 / fnuz, sampled at other bounds).
GN_HD uint8_t fp8_encode(float v, int fmt, float fp8_max) {
    const uint32_t u = f32_bits(v);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t sign = (u >> 24) & 0x80u;
    const float mag = f32_from_bits(u & 0x7fffffffu);
    const float a = mag <= fp8_max ? mag : fp8_max;  // the clamp; NaN -> fp8_max (its result is replaced
                                                     // below; a NaN here would reach the int conversion)
    const bool fnuz = fmt == kE4M3FNUZ;
    // Smallest normal: 2^-6 (fn) / 2^-7 (fnuz); below it codes step by the subnormal quantum
    // 2^-9 / 2^-10, so code = rne(a / quantum): a / quantum is exact (a power-of-two scaling)
    // and below 8, and adding then subtracting 2^23 rounds it to an integer, half to even;
    // 8 quanta is the smallest normal's code, 0x08, as it should.
    const float quanta = a * (fnuz ? 1024.0f : 512.0f);
    const uint32_t subnormal = uint32_t(int32_t((quanta + 8388608.0f) - 8388608.0f));
    // Normal: RNE of fp32's 23 mantissa bits to 3, then the exponent rebiased from 127 to
    // 7 / 8 (for a below the normal range this wraps; it is not selected).
    uint32_t b = f32_bits(a);
    b += 0x7ffffu + ((b >> 20) & 1u);
    const uint32_t normal = (b >> 20) - ((fnuz ? 127u - 8u : 127u - 7u) << 3);
    const uint32_t code = a < (fnuz ? 0.0078125f : 0.015625f) ? subnormal : normal;
    const uint32_t r = (fnuz & (code == 0u)) ? 0u : sign | code;  // fnuz has no -0 (& not &&: no branch)
    return uint8_t(nan ? fp8_nan_code(fmt) : r);
}

// FP8 code -> fp32, exact.
GN_HD float fp8_decode(uint8_t c, int fmt) {
    const bool fnuz = fmt == kE4M3FNUZ;
    if (fnuz ? c == 0x80u : (c & 0x7fu) == 0x7fu) return f32_from_bits(0x7fc00000u);
    const uint32_t e = (c >> 3) & 0xfu, m = c & 7u;
    const float mag = e == 0 ? float(m) * (fnuz ? 0.0009765625f : 0.001953125f)
                             : f32_from_bits(((e + (fnuz ? 119u : 120u)) << 23) | (m << 20));
    return c & 0x80u ? -mag : mag;
}

// |v| as raw bits: for non-negative floats the unsigned order of the bits is the numeric
// order, and every NaN lies above +inf, so an integer max over a group propagates a NaN (the
// fp max would drop it: fmaxf(NaN, 1) = 1).  One instruction per element on a GPU.
GN_HD uint32_t abs_bits(float v) { return f32_bits(v) & 0x7fffffffu; }

// UE8M0: the smallest power of two >= s (s a positive normal float): add one to the exponent
// when the mantissa is non-zero, then clear the mantissa; at most 2^127 (E8M0 254), so a
// finite group always gets a finite scale (above 2^127 only fp8_max < 2 and amax near fp32's
// largest reach; its codes then saturate at +-fp8_max like any value past the format).
GN_HD float ue8m0_ceil(float s) {
    uint32_t u = f32_bits(s);
    if (u & 0x7fffffu) u = (u + 0x800000u) & 0xff800000u;
    return f32_from_bits(u < 0x7f800000u ? u : 0x7f000000u);
}

// The scale of a group from its amax (as abs_bits): max(amax, floor) / fp8_max, rounded up to
// a power of two for UE8M0 formats; NaN when the group holds a NaN or an infinity, so that
// the whole group's codes are NaN.  The division is IEEE (correctly rounded) on every side.
GN_HD float fp8_group_scale(uint32_t amax_bits, float amax_floor, float fp8_max, bool ue8m0) {
    if (amax_bits >= 0x7f800000u) return f32_from_bits(0x7fc00000u);
    const float s = fmaxf(f32_from_bits(amax_bits), amax_floor) / fp8_max;
    return ue8m0 ? ue8m0_ceil(s) : s;
}

// The E8M0 byte of a UE8M0 scale: its biased exponent (0xff, E8M0's NaN, for a NaN scale).
GN_HD uint8_t e8m0_byte(float s) { return uint8_t(f32_bits(s) >> 23); }

// Two finite values (|v| <= fp8_max is NOT required: they are clamped here) to two codes, lo
// in bits 0-7: the shared encoder's result, through the hardware convert where the target has
// one for this format.  Callers handle NaN (a NaN group's codes are written as the format's
// NaN by the group epilogue, fp8_quant.h): the converts' NaN rules differ between targets, so
// they never see one.  Equal to fp8_encode for every finite input (tests/
// test_rmsnorm_gated_fp8.py's encoder sweep checks it through the kernels: every bf16 / fp16
// value and every e4m3 rounding position of fp32, ties and neighbours, both formats):
//  - NVIDIA sm_89+: cvt.rn.satfinite.e4m3x2.f32 is OCP E4M3 (fn) with RNE; here the clamp to
//    +-fp8_max comes first, so satfinite never acts (fp8_encode_x2_fn448 below leaves the
//    clamp to satfinite at fp8_max = 448); -0 and negative values rounding to zero give 0x80,
//    as fp8_encode does for fn.
//  - AMD gfx942 (fnuz) and gfx950 (OCP fn): v_cvt_pk_fp8_f32 (RNE).  On gfx942 a negative
//    value rounding to zero may come back 0x80, fnuz's NaN: such bytes are mapped to 0x00.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define GN_HW_FP8_FN 1
#elif defined(__HIP_DEVICE_COMPILE__) && defined(__gfx950__)
#define GN_HW_FP8_FN 1
#define GN_HW_FP8_AMD 1
#elif defined(__HIP_DEVICE_COMPILE__) && defined(__gfx942__)
#define GN_HW_FP8_FNUZ 1
#define GN_HW_FP8_AMD 1
#endif

// Whether fp8_encode_x2 takes the hardware convert for fmt on this target.
GN_HD constexpr bool fp8_hw_convert(int fmt) {
#if defined(GN_HW_FP8_FN)
    return fmt == kE4M3FN;
#elif defined(GN_HW_FP8_FNUZ)
    return fmt == kE4M3FNUZ;
#else
    (void)fmt;
    return false;
#endif
}

// fp8_encode_x2 for fn at fp8_max = 448 on NVIDIA sm_89+, without the clamp: satfinite
// saturates every finite value beyond +-448 to +-448 itself, which is what clamping to +-448
// and rounding gives (values in (448, 464) round to 448 either way; nothing rounds past it).
// Two instructions a value fewer in the FP8 epilogues, which are issue-bound (run 37).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define GN_FP8_FN_SATFINITE 1
__device__ __forceinline__ uint32_t fp8_encode_x2_fn448(float lo, float hi) {
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
}
#endif

GN_HD uint32_t fp8_encode_x2(float lo, float hi, int fmt, float fp8_max) {
#if defined(GN_HW_FP8_FN) || defined(GN_HW_FP8_FNUZ)
    if (fp8_hw_convert(fmt)) {
        lo = fminf(fmaxf(lo, -fp8_max), fp8_max);
        hi = fminf(fmaxf(hi, -fp8_max), fp8_max);
#if defined(__CUDA_ARCH__)
        uint16_t r;
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
        return r;
#else
        uint32_t r = uint32_t(__builtin_amdgcn_cvt_pk_fp8_f32(lo, hi, 0, false)) & 0xffffu;
#if defined(GN_HW_FP8_FNUZ)
        // bytes equal to 0x80 (a signed zero) -> 0x00: the carry of (byte & 0x7f) + 0x7f sets
        // bit 7 exactly where the magnitude is non-zero, and only there the sign is kept.
        const uint32_t nz = ((r & 0x7f7fu) + 0x7f7fu) & 0x8080u;
        r &= nz | 0x7f7fu;
#endif
        return r;
#endif
    }
#endif
    return uint32_t(fp8_encode(lo, fmt, fp8_max)) | (uint32_t(fp8_encode(hi, fmt, fp8_max)) << 8);
}

// How a group's values become codes once its scale s is known (docs/ops.md §2), the one
// statement of the rule for every backend: each value times the group's one IEEE reciprocal
// 1 / s (a reciprocal a group, not a divide an element: y * (1 / s) and y / s differ in the
// last bit, and every backend must agree), then the encoder; a NaN scale (a group holding a
// NaN or an infinity) makes every code the format's NaN, the one place NaN reaches a code (so
// the hardware converts behind fp8_encode_x2 only see finite values).  Users: the kernels'
// group epilogues (fp8_quant.h's encode_codes, the generic kernels through code()) and the
// CPU backend (cpu_quant.h, whose loop calls fp8_encode on scaled() to stay vectorized).
struct Fp8GroupCodes {
    float inv;  // 1 / s
    bool nan;   // s is NaN
    GN_HD static bool nan_scale(float s) { return s != s; }
    GN_HD explicit Fp8GroupCodes(float s) : inv(1.0f / s), nan(nan_scale(s)) {}
    GN_HD float scaled(float v) const { return v * inv; }
    // One value's code, through the hardware convert where the target has one (fp8_encode_x2).
    GN_HD uint8_t code(float v, int fmt, float fp8_max) const {
        return nan ? fp8_nan_code(fmt) : uint8_t(fp8_encode_x2(scaled(v), 0.0f, fmt, fp8_max));
    }
};


// Stores group k's scale of the token whose scales start at `base` (byte address), in the
// scale format's storage: fp32 at k * sk floats; an E8M0 byte at k * sk bytes; packed E8M0:
// byte k % 4 of int32 word k / 4 (words sk apart; little endian, as every target is), and
// the last group of a token zeroes the word's bytes past it, so every byte of q's scales is
// written.  `groups` is the token's group count K.
GN_HD void store_group_scale(char *base, int64_t sk, int fmt, int64_t k, int64_t groups, float s) {
    if (fmt == kScaleF32 || fmt == kScaleF32Ue8m0) {
        *reinterpret_cast<float *>(base + k * sk * 4) = s;
    } else if (fmt == kScaleE8m0) {
        *reinterpret_cast<uint8_t *>(base + k * sk) = e8m0_byte(s);
    } else {
        uint8_t *w = reinterpret_cast<uint8_t *>(base + (k / 4) * sk * 4);
        w[k % 4] = e8m0_byte(s);
        if (k == groups - 1)
            for (int64_t b = k % 4 + 1; b < 4; ++b) w[b] = 0;
    }
}
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
