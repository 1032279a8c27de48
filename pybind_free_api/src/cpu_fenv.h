// The CPU backend's arithmetic runs under the IEEE defaults whatever the calling thread set:
// round to nearest even, subnormals kept (no flush-to-zero, no denormals-are-zero), every
// floating-point exception masked.  Threads do arrive with other settings: XLA's CPU threads
// (gatednorm.jax_ops' handler runs on them) flush subnormals, as do
// torch.set_flush_denormal(True) and libraries built with fast-math; a C caller debugging
// with feenableexcept traps overflow or invalid operations, which the documented NaN / Inf
// propagation raises (an infinite input row: inf * 0); and a thread inherits the control
// state of the thread that created it, so a pool started from such a thread would keep it.
// Under those settings an output that should be subnormal came out 0 (and differently for
// the rows the caller's thread took and those a worker took), or the process died of
// SIGFPE.  The scope sets the defaults for the host computation and puts the caller's
// settings back afterwards (with any exception flags raised meanwhile, on the caller's thread
// or, handed over by cpu_pool.cpp, on the pool's workers).
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <xmmintrin.h>
#define GN_FENV_MXCSR 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <stdint.h>
#define GN_FENV_FPCR 1
#else
#include <cfenv>
#endif

namespace gn {

#if defined(GN_FENV_MXCSR)
using FpControl = unsigned;
// MXCSR: FTZ (bit 15), DAZ (bit 6) and rounding control (bits 13-14) cleared, the exception
// masks (bits 7-12) set; bits 0-5 are the sticky flags.
constexpr FpControl kNonIeeeControl = 0x8000u | 0x0040u | 0x6000u;
constexpr FpControl kIeeeMasks = 0x1f80u;
constexpr FpControl kStickyFlags = 0x3fu;
inline FpControl fp_control_get() { return _mm_getcsr(); }
inline void fp_control_set(FpControl v) { _mm_setcsr(v); }
// The sticky exception flags on their own (the pool's workers hand theirs to the caller).
using FpFlags = unsigned;
inline FpFlags fp_flags_get() { return _mm_getcsr() & kStickyFlags; }
inline void fp_flags_clear() { _mm_setcsr(_mm_getcsr() & ~kStickyFlags); }
inline void fp_flags_raise(FpFlags f) { _mm_setcsr(_mm_getcsr() | (f & kStickyFlags)); }  // sets, never traps
#elif defined(GN_FENV_FPCR)
using FpControl = uint64_t;
// FPCR: FZ (bit 24), RMode (bits 22-23), FZ16 (bit 19), the trap enables (IOE, DZE, OFE,
// UFE, IXE: bits 8-12; IDE: bit 15) and FEAT_AFP's NEP, AH and FIZ (bits 2, 1, 0: FIZ
// flushes subnormal inputs; RES0, so cleared harmlessly, where the CPU lacks AFP) cleared;
// the flags live in FPSR, untouched here.
constexpr FpControl kNonIeeeControl = (FpControl(1) << 24) | (FpControl(3) << 22) | (FpControl(1) << 19) |
                                      (FpControl(0x1f) << 8) | (FpControl(1) << 15) | FpControl(7);
constexpr FpControl kIeeeMasks = 0;
constexpr FpControl kStickyFlags = 0;
inline FpControl fp_control_get() {
    FpControl v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
inline void fp_control_set(FpControl v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
// FPSR's cumulative flags: IOC, DZC, OFC, UFC, IXC (bits 0-4) and IDC (bit 7).
using FpFlags = uint64_t;
constexpr FpFlags kFpsrFlags = 0x9f;
inline FpFlags fp_status_get() {
    FpFlags v;
    __asm__ __volatile__("mrs %0, fpsr" : "=r"(v));
    return v;
}
inline void fp_status_set(FpFlags v) { __asm__ __volatile__("msr fpsr, %0" : : "r"(v)); }
inline FpFlags fp_flags_get() { return fp_status_get() & kFpsrFlags; }
inline void fp_flags_clear() { fp_status_set(fp_status_get() & ~kFpsrFlags); }
inline void fp_flags_raise(FpFlags f) { fp_status_set(fp_status_get() | (f & kFpsrFlags)); }
#else
// Elsewhere only the rounding mode can be set portably (no flush-to-zero or trap control in
// <cfenv>).
using FpControl = int;
constexpr FpControl kNonIeeeControl = 0, kIeeeMasks = 0, kStickyFlags = 0;
inline FpControl fp_control_get() { return std::fegetround(); }
inline void fp_control_set(FpControl v) { std::fesetround(v); }
// No portable way to set a flag without raising it (a trap the caller enabled would fire):
// the workers' flags are not handed on here.
using FpFlags = int;
inline FpFlags fp_flags_get() { return 0; }
inline void fp_flags_clear() {}
inline void fp_flags_raise(FpFlags) {}
#endif

class IeeeFloatScope {
public:
    IeeeFloatScope() : saved_(fp_control_get()) {
        if (changes()) fp_control_set(ieee(saved_));
    }
    ~IeeeFloatScope() {
        if (changes()) fp_control_set(saved_ | (fp_control_get() & kStickyFlags));
    }
    IeeeFloatScope(const IeeeFloatScope &) = delete;
    IeeeFloatScope &operator=(const IeeeFloatScope &) = delete;

private:
#if defined(GN_FENV_MXCSR) || defined(GN_FENV_FPCR)
    static FpControl ieee(FpControl c) { return (c & ~kNonIeeeControl) | kIeeeMasks; }
    bool changes() const { return ieee(saved_) != saved_; }
#else
    static FpControl ieee(FpControl) { return FE_TONEAREST; }
    bool changes() const { return saved_ != FE_TONEAREST; }
#endif
    const FpControl saved_;
};

}  // namespace gn
