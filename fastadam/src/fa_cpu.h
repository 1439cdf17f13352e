/* What the CPU (and the OS, for the wider registers) supports.
   GCC's and clang's __builtin_cpu_supports read CPUID and check XGETBV, so AVX is only
   reported where the OS saves the YMM/ZMM state. */
#ifndef FA_CPU_H
#define FA_CPU_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int fa_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int fa_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
           fa_cpu_has_avx2();
}
#else
static int fa_cpu_has_avx2(void) { return 0; }
static int fa_cpu_has_avx512(void) { return 0; }
#endif

#endif
