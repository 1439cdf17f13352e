/* Checks fastadam/src/fa_half.h (and the 16-bit sums of squares of fa_sumsq.h) against
 * plain scalar reference conversions written here, built once per SIMD flag set by
 * tests/test_half.py.
 *
 *   half_check verify   every float32 bit pattern through both narrowings, every uint16
 *                       through both widenings, stochastic rounding's probabilities; prints
 *                       "ok ... hash=H" (H: a hash of all outputs, equal on every build)
 *                       or the first mismatches and "FAIL ...", exit status 1.
 *   half_check dump KEY INDEX0 < float32s > out
 *                       per input: bf16 RNE, f16 RNE, bf16 SR, f16 SR (uint16 each), then
 *                       fa_random32(KEY, INDEX0 + j) (uint32), as four uint16 arrays and
 *                       one uint32 array, native byte order.
 *   half_check keys < (seed, step, tensor) uint64 triples > fa_sr_key uint64s
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t Py_ssize_t;
#include "fa_sumsq.h"

#define BLOCK 512

static long failures;

static void fail(const char* what, uint64_t input, uint64_t got, uint64_t want) {
    if (failures++ < 10)
        printf("mismatch %s: input %#llx got %#llx want %#llx\n", what,
               (unsigned long long)input, (unsigned long long)got, (unsigned long long)want);
}

/* ---- references: the textbook conversions, one case at a time ---------------------- */

static uint16_t round_shift(uint32_t v, int shift) { /* v >> shift, to nearest even */
    uint32_t q, rem, half;
    if (shift == 0) return (uint16_t)v;
    if (shift > 31) return 0;
    q = v >> shift;
    rem = v & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)q;
}

static uint16_t ref_narrow_f16(uint32_t b) {
    uint32_t sign = (b >> 16) & 0x8000u, a = b & 0x7fffffffu;
    int exp = (int)(a >> 23), e;
    uint32_t full = (a & 0x7fffffu) | 0x800000u;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
    if (exp == 0) return (uint16_t)sign; /* below 2^-126: far under half of 2^-24 */
    e = exp - 127;                         /* |x| = full * 2^(e - 23) */
    if (e > 15) return (uint16_t)(sign | 0x7c00u);
    if (e >= -14) {
        uint32_t h = ((uint32_t)(e + 15) << 10) + round_shift(full, 13) - 0x400u;
        return (uint16_t)(sign | (h >= 0x7c00u ? 0x7c00u : h));
    }
    return (uint16_t)(sign | round_shift(full, -(e + 1))); /* in units of 2^-24 */
}

static uint16_t ref_narrow_bf16(uint32_t b) {
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u);
    return round_shift(b, 16); /* carries into the exponent, up to inf */
}

static uint32_t ref_widen_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    int e = -14;
    if (exp == 31) return sign | (mant ? 0x7fc00000u | (mant << 13) : 0x7f800000u);
    if (exp != 0) return sign | ((exp + 112u) << 23) | (mant << 13);
    if (mant == 0) return sign;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return sign | ((uint32_t)(e + 127) << 23) | ((mant & 0x3ffu) << 13);
}

/* ---- the hash of all outputs -------------------------------------------------------- */

static uint32_t weight[BLOCK]; /* odd: any one changed element changes the block's sum */
static uint64_t hash = 1;

static void hash_u16(const uint16_t* v, int m) {
    uint32_t s = 0;
    int j;
    for (j = 0; j < m; j++) s += v[j] * weight[j];
    hash = fa_mix64(hash ^ s ^ ((uint64_t)m << 32));
}

static void hash_u32(const uint32_t* v, int m) {
    uint32_t s = 0;
    int j;
    for (j = 0; j < m; j++) s += v[j] * weight[j];
    hash = fa_mix64(hash ^ s ^ ((uint64_t)m << 32));
}

/* ---- checks ------------------------------------------------------------------------- */

/* The array functions, and (for builds where those use F16C) the software conversion of
 * their tails on every input too. */
static void check_narrow_all(void) {
    uint32_t bits[BLOCK];
    uint16_t f16[BLOCK], bf16[BLOCK], want16[BLOCK], wantb[BLOCK];
#if defined(FA_HAVE_F16C)
    uint16_t soft[BLOCK];
#endif
    uint64_t start;
    int j;
    for (start = 0; start < 0x100000000ull; start += BLOCK) {
        for (j = 0; j < BLOCK; j++) bits[j] = (uint32_t)start + (uint32_t)j;
        fa_narrow_f16((const float*)(const void*)bits, f16, BLOCK);
        fa_narrow_bf16((const float*)(const void*)bits, bf16, BLOCK);
        for (j = 0; j < BLOCK; j++) want16[j] = ref_narrow_f16(bits[j]);
        for (j = 0; j < BLOCK; j++) wantb[j] = ref_narrow_bf16(bits[j]);
        if (memcmp(f16, want16, sizeof f16) || memcmp(bf16, wantb, sizeof bf16))
            for (j = 0; j < BLOCK; j++) {
                if (f16[j] != want16[j]) fail("narrow_f16", bits[j], f16[j], want16[j]);
                if (bf16[j] != wantb[j]) fail("narrow_bf16", bits[j], bf16[j], wantb[j]);
            }
#if defined(FA_HAVE_F16C) /* the software conversion: equal to F16C's, so to the reference */
        for (j = 0; j < BLOCK; j++) soft[j] = fa_f16_rne_bits(bits[j]);
        if (memcmp(soft, f16, sizeof soft))
            for (j = 0; j < BLOCK; j++)
                if (soft[j] != f16[j]) fail("narrow_f16_software", bits[j], soft[j], f16[j]);
#endif
        hash_u16(f16, BLOCK);
        hash_u16(bf16, BLOCK);
    }
}

static void check_widen_all(void) {
    uint16_t h[BLOCK];
    uint32_t out[BLOCK];
    uint32_t start;
    int j, m;
    /* odd lengths too: the F16C body and the software tail */
    for (start = 0; start < 0x10000u; start += (uint32_t)m) {
        m = 0x10000u - start < 509u ? (int)(0x10000u - start) : 509;
        for (j = 0; j < m; j++) h[j] = (uint16_t)(start + (uint32_t)j);
        fa_widen_f16(h, (float*)(void*)out, m);
        for (j = 0; j < m; j++)
            if (out[j] != ref_widen_f16(h[j]))
                fail("widen_f16", h[j], out[j], ref_widen_f16(h[j]));
        hash_u32(out, m);
        for (j = 0; j < m; j++)
            if (fa_f16_widen_bits(h[j]) != ref_widen_f16(h[j]))
                fail("widen_f16_software", h[j], fa_f16_widen_bits(h[j]), ref_widen_f16(h[j]));
        fa_widen_bf16(h, (float*)(void*)out, m);
        for (j = 0; j < m; j++)
            if (out[j] != (uint32_t)h[j] << 16) fail("widen_bf16", h[j], out[j], h[j] << 16);
        hash_u32(out, m);
    }
}

/* The neighbours toward and away from zero, and the exact P(away), of float32 x in
 * the format: bf16 (is_f16 0) or f16 (1). */
static double trunc_f16(double ax, double* step) { /* |x| toward zero on float16's grid */
    int e;
    double ulp;
    frexp(ax, &e); /* ax = m * 2^e, 0.5 <= m < 1 */
    ulp = ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);
    *step = ulp;
    return floor(ax / ulp) * ulp;
}

static double trunc_bf16(double ax, double* step) {
    int e;
    double ulp;
    frexp(ax, &e);
    ulp = ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 7);
    *step = ulp;
    return floor(ax / ulp) * ulp;
}

static float widen1(uint16_t h, int is_f16) {
    uint32_t b = is_f16 ? ref_widen_f16(h) : (uint32_t)h << 16;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static uint16_t sr1(uint32_t b, uint32_t r, int is_f16) {
    return is_f16 ? fa_f16_sr_bits(b, r) : fa_bf16_sr_bits(b, r);
}

static long sr_values_checked;

/* The rounding of x (finite) for every relevant random value or at the threshold, and the
 * frequency of rounding away over many indices and keys. */
static void check_sr_value(float x, int is_f16) {
    double ax = fabs((double)x), step;
    double lo = is_f16 ? trunc_f16(ax, &step) : trunc_bf16(ax, &step);
    double p = (ax - lo) / step; /* exact: ax and lo share their top bits */
    uint32_t b, r;
    uint16_t down = 0, up = 0, out;
    long ups = 0, n, k;
    static float xs[1 << 16];
    static uint16_t outs[1 << 16];
    memcpy(&b, &x, sizeof b);
    /* the two neighbours, from the extreme random values: r is added to the dropped bits,
     * but in float16's subnormal range rounds up iff r < thr */
    if (is_f16 && ax < 0x1p-14) {
        down = sr1(b, 0xffffffffu, is_f16);
        up = sr1(b, 0, is_f16);
    } else {
        down = sr1(b, 0, is_f16);
        up = sr1(b, 0xffffffffu, is_f16);
    }
    if (fabs((double)widen1(down, is_f16)) != lo) fail("sr_down", b, down, 0);
    if (p > 0 && is_f16 && lo + step == 65536.0) { /* the step past 65504 is inf */
        if ((up & 0x7fffu) != 0x7c00u) fail("sr_up_inf", b, up, 0x7c00u);
    } else if (p > 0 && fabs((double)widen1(up, is_f16)) != lo + step) {
        fail("sr_up", b, up, 0);
    }
    if (p == 0 && up != down) fail("sr_exact_moves", b, up, down);
    sr_values_checked++;
    if (!is_f16 || ax >= 0x1p-14) {
        /* only the dropped 16 (13) low bits of r matter: count them all */
        uint32_t bits = is_f16 ? 13 : 16, count = 1u << bits;
        ups = 0;
        for (r = 0; r < count; r++) {
            out = sr1(b, r, is_f16);
            if (out != up && out != down) fail("sr_neighbour", b, out, r);
            ups += out != down;
        }
        if (p > 0 && (double)ups != p * count)
            fail("sr_count", b, (uint64_t)ups, (uint64_t)(p * count));
    } else {
        double thr = ceil(ldexp(p, 32)); /* round up iff r < thr */
        if (thr > 0 && sr1(b, (uint32_t)(thr - 1), is_f16) != up) fail("sr_thr_below", b, 0, 0);
        if (thr < 0x1p32 && sr1(b, (uint32_t)thr, is_f16) != down) fail("sr_thr_at", b, 0, 0);
    }
    /* over indices with one key, and over keys at one index */
    n = 1 << 16;
    for (k = 0; k < n; k++) xs[k] = x;
    if (is_f16)
        fa_narrow_f16_sr(xs, outs, n, fa_sr_key(7, 0, (uint64_t)b), 0xfffffff0ull);
    else
        fa_narrow_bf16_sr(xs, outs, n, fa_sr_key(7, 0, (uint64_t)b), 0xfffffff0ull);
    ups = 0;
    for (k = 0; k < n; k++) ups += outs[k] != down;
    for (k = 0; k < n; k++) {
        uint32_t rr = fa_random32(fa_sr_key(8, (uint64_t)k, (uint64_t)b), 12345);
        ups += sr1(b, rr, is_f16) != down;
    }
    {
        double pr = (double)ups / (2.0 * n), sd = sqrt(p * (1 - p) / (2.0 * n));
        if (fabs(pr - p) > 5 * sd + 1e-9)
            fail("sr_frequency", b, (uint64_t)(pr * 1e6), (uint64_t)(p * 1e6));
    }
}

static void check_sr(void) {
    static const float fixed[] = {
        1.0f, 1.5f, 1.0009765625f, 1.00048828125f, 1.0f + 0x1p-23f, 1.0f + 0x1p-11f,
        1.0f + 3 * 0x1p-12f, 3.14159265f, 0.1f, 1e-3f, 65504.0f, 65519.0f, 65535.0f, 60000.5f,
        0x1p-14f, 0x1p-14f - 0x1p-30f, 0x1p-15f, 0x1p-15f + 0x1p-30f, 0x1p-24f, 0x1p-25f,
        0x1.8p-24f, 0x1p-30f, 0x1p-40f, 0x1p-60f, 1e-7f, 3e-6f, 0x1p-126f, 0x1p-149f,
        0x1p-148f + 0x1p-149f, 3e38f, 1e-40f, 0.3333333f, 7.0f,
    };
    uint32_t state = 12345;
    size_t i;
    int s, f;
    for (f = 0; f < 2; f++)
        for (s = 0; s < 2; s++) {
            for (i = 0; i < sizeof fixed / sizeof *fixed; i++) {
                float x = s ? -fixed[i] : fixed[i];
                if (f && fabsf(x) >= 65536.0f) continue; /* inf: checked below */
                check_sr_value(x, f);
            }
            for (i = 0; i < 40; i++) { /* random bit patterns in the finite range */
                uint32_t b;
                float x;
                state = fa_mix32(state + 1);
                b = (state & 0x7fffffffu) % (f ? 0x477fe000u : 0x7f7f0000u);
                b |= s ? 0x80000000u : 0;
                memcpy(&x, &b, sizeof x);
                check_sr_value(x, f);
            }
        }
    /* specials: NaN as the round-to-nearest rule, inf stays, float16 beyond 65504 */
    {
        uint32_t specials[] = {0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc00000u, 0x7fa00000u,
                               0x7fbfffffu, 0x477fe000u, 0x477ff000u, 0x47800000u, 0x4f000000u};
        uint32_t rs[] = {0, 1, 0x1000, 0x1fff, 0x8000, 0xffff, 0xffffffffu};
        size_t a, c;
        for (a = 0; a < sizeof specials / sizeof *specials; a++)
            for (c = 0; c < sizeof rs / sizeof *rs; c++) {
                uint32_t b = specials[a];
                uint16_t h = fa_f16_sr_bits(b, rs[c]), bb = fa_bf16_sr_bits(b, rs[c]);
                uint16_t want_h = (b & 0x7fffffffu) > 0x7f800000u ? ref_narrow_f16(b)
                                  : (b & 0x7fffffffu) >= 0x47800000u
                                      ? (uint16_t)(((b >> 16) & 0x8000u) | 0x7c00u)
                                  : (b & 0x7fffffffu) == 0x477fe000u
                                      ? (uint16_t)(((b >> 16) & 0x8000u) | 0x7bffu)
                                      : h;
                if (h != want_h) fail("sr_f16_special", b, h, want_h);
                if ((b & 0x7fffffffu) > 0x7f800000u || (b & 0x7fffffffu) == 0x7f800000u)
                    if (bb != ref_narrow_bf16(b))
                        fail("sr_bf16_special", b, bb, ref_narrow_bf16(b));
            }
    }
}

/* Stochastic rounding outputs for a fixed key, into the hash: a stride through every
 * float32 and every pattern near float16's subnormal range. */
static void hash_sr(void) {
    uint32_t bits[BLOCK];
    uint16_t out[BLOCK];
    uint64_t key = fa_sr_key(2024, 3, 5), start;
    int j;
    for (start = 0; start < 0x100000000ull / 61; start += BLOCK) {
        for (j = 0; j < BLOCK; j++) bits[j] = (uint32_t)((start + (uint64_t)j) * 61u);
        fa_narrow_f16_sr((const float*)(const void*)bits, out, BLOCK, key, start);
        hash_u16(out, BLOCK);
        fa_narrow_bf16_sr((const float*)(const void*)bits, out, BLOCK, key, start);
        hash_u16(out, BLOCK);
    }
    for (start = 0x32800000u; start < 0x39000000u; start += BLOCK) {
        for (j = 0; j < BLOCK; j++) bits[j] = (uint32_t)start + (uint32_t)j;
        fa_narrow_f16_sr((const float*)(const void*)bits, out, BLOCK, key,
                         0xffffff00ull + (start - 0x32800000u)); /* crosses 2^32 */
        hash_u16(out, BLOCK);
    }
}

/* The 16-bit sums of squares equal fa_sumsq_f32 on the widened values, lanes included. */
static void check_sumsq(void) {
    enum { N = 5000 };
    static uint16_t g[N];
    static float w[N];
    double acc16[FA_LANES], acc32[FA_LANES];
    uint32_t state = 99;
    int i, f, lo, hi;
    for (i = 0; i < N; i++) {
        state = fa_mix32(state + (uint32_t)i);
        g[i] = (uint16_t)(state & 0xffffu);
        if (((g[i] >> 10) & 0x1fu) == 0x1fu) g[i] &= 0xbfffu; /* finite float16 */
        if (((g[i] >> 7) & 0xffu) == 0xffu) g[i] &= 0xbfffu;   /* finite bfloat16 */
    }
    for (f = 0; f < 2; f++)
        for (lo = 0; lo < 40; lo += 13)
            for (hi = lo; hi <= N; hi += 997) {
                if (f) fa_widen_f16(g, w, N); else fa_widen_bf16(g, w, N);
                for (i = 0; i < FA_LANES; i++) acc16[i] = acc32[i] = (double)i;
                if (f) fa_sumsq_f16(g, lo, hi, acc16); else fa_sumsq_bf16(g, lo, hi, acc16);
                fa_sumsq_f32(w, lo, hi, acc32);
                if (memcmp(acc16, acc32, sizeof acc16))
                    fail("sumsq", (uint64_t)(f * 1000000 + lo * 10000 + hi), 0, 0);
                hash_u32((const uint32_t*)(const void*)acc16, 2 * FA_LANES);
            }
}

static int verify(void) {
    int j;
    for (j = 0; j < BLOCK; j++) weight[j] = fa_mix32((uint32_t)j) | 1u;
    check_widen_all();
    check_narrow_all();
    check_sr();
    hash_sr();
    check_sumsq();
    if (failures) {
        printf("FAIL %ld mismatches\n", failures);
        return 1;
    }
    printf("ok: 2^32 narrowings x2, 2^16 widenings x2, %ld SR values, sumsq; hash=%016llx\n",
           sr_values_checked, (unsigned long long)hash);
    return 0;
}

static int dump(uint64_t key, uint64_t index0) {
    size_t cap = 1 << 20, n = 0, got;
    float* x = malloc(cap * sizeof *x);
    uint16_t* h;
    uint32_t* r;
    size_t j;
    while (x && (got = fread(x + n, sizeof *x, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) x = realloc(x, (cap *= 2) * sizeof *x);
    }
    h = malloc((n + 1) * sizeof *h);
    r = malloc((n + 1) * sizeof *r);
    if (!x || !h || !r) return 2;
    fa_narrow_bf16(x, h, (ptrdiff_t)n);
    fwrite(h, sizeof *h, n, stdout);
    fa_narrow_f16(x, h, (ptrdiff_t)n);
    fwrite(h, sizeof *h, n, stdout);
    fa_narrow_bf16_sr(x, h, (ptrdiff_t)n, key, index0);
    fwrite(h, sizeof *h, n, stdout);
    fa_narrow_f16_sr(x, h, (ptrdiff_t)n, key, index0);
    fwrite(h, sizeof *h, n, stdout);
    for (j = 0; j < n; j++) r[j] = fa_random32(key, index0 + j);
    fwrite(r, sizeof *r, n, stdout);
    return 0;
}

static int keys(void) {
    uint64_t t[3];
    while (fread(t, sizeof *t, 3, stdin) == 3) {
        uint64_t k = fa_sr_key(t[0], t[1], t[2]);
        fwrite(&k, sizeof k, 1, stdout);
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 2 && !strcmp(argv[1], "verify")) return verify();
    if (argc == 4 && !strcmp(argv[1], "dump"))
        return dump(strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
    if (argc == 2 && !strcmp(argv[1], "keys")) return keys();
    fprintf(stderr, "usage: half_check verify | dump KEY INDEX0 | keys\n");
    return 2;
}
