/* What the CPU (and the OS, for the wider registers) supports, from CPUID and XGETBV.

   One implementation for every compiler, so that the logic the wheels rely on is the logic
   the tests run (under emulated CPUs too); only the two instructions are spelled per
   compiler: MSVC's intrinsics, GCC's and Clang's <cpuid.h> and inline asm (which need no
   -mxsave, unlike _xgetbv).

   AVX2 and AVX-512 count only where the OS saves the registers on a context switch: XCR0
   must have the SSE and AVX state bits (and for AVX-512 also opmask, ZMM_Hi256, Hi16_ZMM).
   macOS is the exception: it turns AVX-512 state saving on at a thread's first AVX-512
   instruction, so XCR0 does not show it beforehand; there CPUID alone decides (as LLVM's
   and GCC's own CPU checks do). On other architectures (aarch64) there is one path. */
#ifndef FA_CPU_H
#define FA_CPU_H

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void fa_cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    int x[4];
    __cpuidex(x, (int)leaf, (int)sub);
    r[0] = (unsigned)x[0]; r[1] = (unsigned)x[1]; r[2] = (unsigned)x[2]; r[3] = (unsigned)x[3];
}
static unsigned long long fa_xcr0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void fa_cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long fa_xcr0(void) {
    unsigned lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

/* CPUID.1:ECX */
#define FA_FMA     (1u << 12)
#define FA_F16C    (1u << 29)
#define FA_OSXSAVE (1u << 27)
#define FA_AVX     (1u << 28)
/* CPUID.(7,0):EBX */
#define FA_AVX2     (1u << 5)
#define FA_AVX512F  (1u << 16)
#define FA_AVX512DQ (1u << 17)
#define FA_AVX512BW (1u << 30)
#define FA_AVX512VL (1u << 31)
/* XCR0 */
#define FA_XCR0_AVX    0x06ull   /* XMM, YMM */
#define FA_XCR0_AVX512 0xe0ull   /* opmask, ZMM_Hi256, Hi16_ZMM */

/* 0: none, 1: AVX2 + FMA + F16C (every AVX2 CPU has F16C; the float16 conversions use
   it), 2: that and AVX-512 F/VL/DQ/BW. */
static int fa_cpu_level(void) {
    unsigned r[4], ecx1, ebx7;
    unsigned long long xcr0;
    int avx512_saved;
    fa_cpuid(0, 0, r);
    if (r[0] < 7) return 0;
    fa_cpuid(1, 0, r);
    ecx1 = r[2];
    /* OSXSAVE first: without it XGETBV is an invalid instruction. */
    if ((ecx1 & (FA_OSXSAVE | FA_AVX | FA_FMA | FA_F16C)) !=
        (FA_OSXSAVE | FA_AVX | FA_FMA | FA_F16C)) return 0;
    xcr0 = fa_xcr0();
    if ((xcr0 & FA_XCR0_AVX) != FA_XCR0_AVX) return 0;
    fa_cpuid(7, 0, r);
    ebx7 = r[1];
    if (!(ebx7 & FA_AVX2)) return 0;
#if defined(__APPLE__)
    avx512_saved = 1;
#else
    avx512_saved = (xcr0 & FA_XCR0_AVX512) == FA_XCR0_AVX512;
#endif
    if (avx512_saved && (ebx7 & (FA_AVX512F | FA_AVX512VL | FA_AVX512DQ | FA_AVX512BW)) ==
                            (FA_AVX512F | FA_AVX512VL | FA_AVX512DQ | FA_AVX512BW))
        return 2;
    return 1;
}

static int fa_cpu_has_avx2(void) { return fa_cpu_level() >= 1; }
static int fa_cpu_has_avx512(void) { return fa_cpu_level() >= 2; }
/* AVX512_VBMI (CPUID.(7,0):ECX bit 1) on top of level 2: byte permutes from 128-byte
   tables, which the AVX-512 path's 8-bit state loads use where present. */
static int fa_cpu_has_avx512vbmi(void) {
    unsigned r[4];
    if (fa_cpu_level() < 2) return 0;
    fa_cpuid(7, 0, r);
    return (r[2] & (1u << 1)) != 0;
}

#else
static int fa_cpu_has_avx2(void) { return 0; }
static int fa_cpu_has_avx512(void) { return 0; }
static int fa_cpu_has_avx512vbmi(void) { return 0; }
#endif

#endif
