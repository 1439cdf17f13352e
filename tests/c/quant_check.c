/* Exhaustive check of the 8-bit state kernels (fastadam/src/fa_quant.h) on one build.
 *
 *   quant_check DIR [STRIDE]
 *       DIR holds, per map NAME in {signed, unsigned}: NAME.map (256 float32), NAME.table
 *       (the bucket table, uint32), NAME.words (the kernel words) and NAME.u (its 255
 *       switch points, float32), as tests/test_quant.py writes them with fastadam/quant.py.
 *
 * For every float32 bit pattern y with |y| <= 1.0 (the values a quantized block divides to;
 * with STRIDE > 1, every STRIDE-th, and every pattern within 2^16 of a switch point of
 * either sign), and for NaN, inf and a stride through the rest: the codes fa_q_codes gives (this
 * build's path: the level tables on AVX-512, the bucket table by gathers on AVX2, scalar
 * elsewhere; on AVX-512 also with the level tables switched off) must equal fa_q_code's
 * (the scalar bucket table, which the Python tests check against the nearest-code rule).
 * Every code of fa_q_widen (VBMI byte planes where the CPU has them) must equal the scalar
 * qmap[code] * absmax. Prints "ok ... hash=H", H a hash of all codes (equal on every
 * build), or the first mismatches and "FAIL". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_quant.h"

#define CHUNK 4096

static void load(const char* dir, const char* name, const char* ext, void* out, size_t n) {
    char path[4096];
    FILE* f;
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    f = fopen(path, "rb");
    if (!f || fread(out, 1, n, f) != n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
}

static long failures = 0;
static uint64_t hash = 1;

static void check_range(const char* what, const uint32_t* table, const fa_q_words* w,
                        uint32_t lo, uint32_t hi, uint32_t stride) {
    static uint32_t bits[CHUNK];
    static uint8_t got[CHUNK];
    uint64_t b = lo;
    while (b < (uint64_t)hi) {
        int m = 0, i;
        while (m < CHUNK && b < (uint64_t)hi) {
            bits[m++] = (uint32_t)b;
            b += stride;
        }
        fa_q_codes((const float*)(const void*)bits, 1.0f, table, w, got, m);
        for (i = 0; i < m; i++) {
            uint8_t want = fa_q_code(bits[i], table);
            if (got[i] != want && failures++ < 10)
                printf("mismatch %s: y bits %#x got %u want %u\n", what, bits[i], got[i], want);
        }
        for (i = 0; i + 8 <= m; i += 8) {
            uint64_t word;
            memcpy(&word, got + i, 8);
            hash = (hash ^ word) * 0x100000001b3ull;
        }
    }
}

static void check_map(const char* dir, const char* name, uint32_t stride) {
    static float qmap[256], out[256], want[256], u[255];
    static uint32_t table[2 * FA_QNB];
    static fa_q_words w, plain;
    static uint8_t codes[256];
    const float scales[] = {1.0f, 0.5f, 3.0e-7f, 1.0e30f, 0.0f};
    int i, k, pass;
    load(dir, name, "map", qmap, sizeof qmap);
    load(dir, name, "table", table, sizeof table);
    load(dir, name, "words", &w, sizeof w);
    load(dir, name, "u", u, sizeof u);
    plain = w;
    plain.llo[0] = -1;
    for (pass = 0; pass < 2; pass++) {
        const fa_q_words* ww = pass ? &plain : &w;
        char what[64];
        snprintf(what, sizeof what, "%s%s", name, pass ? " (bucket table)" : "");
        /* every |y| <= 1 of both signs, and beyond: NaN, inf, huge, by a stride */
        check_range(what, table, ww, 0u, 0x3f800001u, stride);
        check_range(what, table, ww, 0x80000000u, 0xbf800001u, stride);
        if (stride > 1) {
            for (i = 0; i < 255; i++) {
                uint32_t m = fa_f32_bits(u[i]) & 0x7fffffffu;
                uint32_t a = m > 65536u ? m - 65536u : 0u;
                check_range(what, table, ww, a, m + 65536u, 1);
                check_range(what, table, ww, a | 0x80000000u, (m + 65536u) | 0x80000000u, 1);
            }
        }
        check_range(what, table, ww, 0x3f800001u, 0x80000000u, 4099);
        check_range(what, table, ww, 0xbf800001u, 0xffffffffu, 4099);
        check_range(what, table, ww, 0x7f800000u, 0x7f800000u + (1u << 20), 1);
        check_range(what, table, ww, 0xff800000u, 0xff800000u + (1u << 20), 1);
    }
    for (i = 0; i < 256; i++)
        codes[i] = (uint8_t)(i * 167 + 13);
    for (k = 0; k < (int)(sizeof scales / sizeof scales[0]); k++) {
        for (i = 0; i < 256; i++)
            want[i] = qmap[codes[i]] * scales[k];
        for (pass = 0; pass < 2; pass++) {
            int n = pass ? 255 : 256;       /* (a tail too) */
            fa_q_widen(codes, qmap, &w, scales[k], out, n);
            if (memcmp(out, want, (size_t)n * sizeof(float)) != 0 && failures++ < 10)
                printf("mismatch widen %s: scale %g, n %d\n", name, scales[k], n);
        }
    }
}

int main(int argc, char** argv) {
    uint32_t stride = argc == 3 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1u;
    if ((argc != 2 && argc != 3) || stride < 1) {
        fprintf(stderr, "usage: quant_check DIR [STRIDE]\n");
        return 2;
    }
    fa_q_init();
    check_map(argv[1], "signed", stride);
    check_map(argv[1], "unsigned", stride);
    if (failures) {
        printf("FAIL %ld mismatches\n", failures);
        return 1;
    }
    printf("ok: |y| <= 1 with stride %u (and near every switch), the rest by a stride, both "
           "maps, both code paths; vbmi=%d; hash=%016llx\n", stride, fa_q_vbmi,
           (unsigned long long)hash);
    return 0;
}
