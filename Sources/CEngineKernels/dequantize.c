// Dequantisation of llama.cpp's (ggml's) block formats to float32. Each function reads `block_count`
// consecutive blocks at `src` (packed, little-endian, any alignment) and writes the values in order at
// `dst`. The arithmetic follows ggml-quants.c's reference `dequantize_row_*` exactly, in float32 and
// without fused multiply-adds, so results are bit-identical to the reference formulas.
#include "CEngineKernels.h"
#include <string.h>

#pragma STDC FP_CONTRACT OFF

static float half_at(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    float f;
    cengine_f16_to_f32(&h, &f, 1);
    return f;
}

// block_q4_0 (18 bytes): f16 d, 16 bytes of 4-bit quants; low nibbles are elements 0..15, high 16..31.
void cengine_dequantize_q4_0(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 18, dst += 32) {
        const float d = half_at(src);
        const uint8_t *qs = src + 2;
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((qs[j] & 0x0F) - 8) * d;
            dst[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

// block_q4_1 (20 bytes): f16 d, f16 m, 16 bytes of quants; value = q*d + m.
void cengine_dequantize_q4_1(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 20, dst += 32) {
        const float d = half_at(src), m = half_at(src + 2);
        const uint8_t *qs = src + 4;
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(qs[j] & 0x0F) * d + m;
            dst[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

// block_q5_0 (22 bytes): f16 d, u32 qh (fifth bits: bit j for element j), 16 bytes of low nibbles.
void cengine_dequantize_q5_0(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 22, dst += 32) {
        const float d = half_at(src);
        const uint32_t qh = (uint32_t)src[2] | ((uint32_t)src[3] << 8) | ((uint32_t)src[4] << 16) | ((uint32_t)src[5] << 24);
        const uint8_t *qs = src + 6;
        for (int j = 0; j < 16; j++) {
            const int high0 = (int)((qh >> j) & 1) << 4, high1 = (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = (float)(((qs[j] & 0x0F) | high0) - 16) * d;
            dst[j + 16] = (float)(((qs[j] >> 4) | high1) - 16) * d;
        }
    }
}

// block_q5_1 (24 bytes): f16 d, f16 m, u32 qh, 16 bytes of low nibbles; value = q*d + m.
void cengine_dequantize_q5_1(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 24, dst += 32) {
        const float d = half_at(src), m = half_at(src + 2);
        const uint32_t qh = (uint32_t)src[4] | ((uint32_t)src[5] << 8) | ((uint32_t)src[6] << 16) | ((uint32_t)src[7] << 24);
        const uint8_t *qs = src + 8;
        for (int j = 0; j < 16; j++) {
            const int high0 = (int)((qh >> j) & 1) << 4, high1 = (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = (float)((qs[j] & 0x0F) | high0) * d + m;
            dst[j + 16] = (float)((qs[j] >> 4) | high1) * d + m;
        }
    }
}

// block_q8_0 (34 bytes): f16 d, 32 signed bytes; value = q*d.
void cengine_dequantize_q8_0(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 34, dst += 32) {
        const float d = half_at(src);
        const int8_t *qs = (const int8_t *)(src + 2);
        for (int j = 0; j < 32; j++) dst[j] = (float)qs[j] * d;
    }
}

// The 6-bit scale and min of sub-block j (0..7) packed in the 12 scale bytes of Q4_K and Q5_K:
// sub-blocks 0..3 use the low 6 bits of bytes j and j+4; 4..7 take 4 bits from byte j+4 and their top
// 2 bits from the spare high bits of bytes j-4 (scale) and j (min).
static void k_scale_min(int j, const uint8_t *scales, int *scale, int *min) {
    if (j < 4) {
        *scale = scales[j] & 63;
        *min = scales[j + 4] & 63;
    } else {
        *scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        *min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
    }
}

// The multipliers and offsets of sub-blocks j and j + 1 (the low and high nibbles of one 32-byte run).
static void k_pair_scales(int j, const uint8_t *scales, float d, float dmin, float *d0, float *min0, float *d1, float *min1) {
    int sc0, m0, sc1, m1;
    k_scale_min(j, scales, &sc0, &m0);
    k_scale_min(j + 1, scales, &sc1, &m1);
    *d0 = d * (float)sc0, *min0 = dmin * (float)m0;
    *d1 = d * (float)sc1, *min1 = dmin * (float)m1;
}

// block_q4_K (144 bytes, 256 values): f16 d, f16 dmin, 12 scale bytes, 128 quant bytes. Eight sub-blocks
// of 32; each 32-byte run of quants holds two sub-blocks (low nibbles, then high nibbles).
// value = (d*scale)*q - (dmin*min).
void cengine_dequantize_q4_K(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 144) {
        const float d = half_at(src), dmin = half_at(src + 2);
        const uint8_t *scales = src + 4, *qs = src + 16;
        for (int pair = 0; pair < 4; pair++, qs += 32) {
            float d0, min0, d1, min1;
            k_pair_scales(2 * pair, scales, d, dmin, &d0, &min0, &d1, &min1);
            for (int l = 0; l < 32; l++) *dst++ = d0 * (float)(qs[l] & 0x0F) - min0;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)(qs[l] >> 4) - min1;
        }
    }
}

// block_q5_K (176 bytes): f16 d, f16 dmin, 12 scale bytes, 32 bytes of fifth bits, 128 bytes of low
// nibbles. Sub-block s takes its fifth bit from bit s of qh[l].
void cengine_dequantize_q5_K(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 176) {
        const float d = half_at(src), dmin = half_at(src + 2);
        const uint8_t *scales = src + 4, *qh = src + 16, *qs = src + 48;
        for (int pair = 0; pair < 4; pair++, qs += 32) {
            float d0, min0, d1, min1;
            k_pair_scales(2 * pair, scales, d, dmin, &d0, &min0, &d1, &min1);
            const uint8_t bit0 = (uint8_t)(1u << (2 * pair)), bit1 = (uint8_t)(1u << (2 * pair + 1));
            for (int l = 0; l < 32; l++) *dst++ = d0 * (float)((qs[l] & 0x0F) + ((qh[l] & bit0) ? 16 : 0)) - min0;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)((qs[l] >> 4) + ((qh[l] & bit1) ? 16 : 0)) - min1;
        }
    }
}

// block_q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed 8-bit scales,
// f16 d. Two halves of 128 values; in each, value l+32k takes its nibble from ql (low for k=0,1, high for
// k=2,3; offset 32 for k=1,3) and bits 2k..2k+1 of qh[l]; 16 values share a scale. value = (d*scale)*(q-32).
void cengine_dequantize_q6_K(const uint8_t *src, size_t block_count, float *dst) {
    for (size_t b = 0; b < block_count; b++, src += 210) {
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *sc = (const int8_t *)(src + 192);
        const float d = half_at(src + 208);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q0 = (int)(int8_t)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q1 = (int)(int8_t)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q2 = (int)(int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q3 = (int)(int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q0;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q1;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q2;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q3;
            }
        }
    }
}

// Index of the first NaN or infinity among n values, or n when all are finite (a corrupt scale in a
// quantised block makes its whole block non-finite).
size_t cengine_first_nonfinite(const float *values, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, values + i, 4);
        if ((bits & 0x7f800000u) == 0x7f800000u) return i;
    }
    return n;
}
