// Elementwise kernels of the LLaMA forward pass and of the statistics (Sources/Engine/Model/LlamaLayers.swift,
// Sources/Worker/InputStatistics.swift). The matrix products are OpenBLAS; these are the passes between them.
// The block's kernels give the same bits as the Swift loops they replace (same operations in the same order,
// glibc's expf): SparseGPT amplifies last-bit changes of the activations into different masks, which moved a
// 16-sample SparseGPT 50 % perplexity by 1.2 % (bench/README.md). The statistics sums and the LM head's
// log-softmax are vectorised (AVX2+FMA chosen at run time; the portable versions compute the same formulas).
#include "CEngineKernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The products in RoPE and the residual sums are rounded as in the Swift code they replace (no fused
// multiply-add), so those stages keep their bits.
#pragma clang fp contract(off)

#if defined(__x86_64__)
static int has_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}

// exp(x) for 8 floats (the LM head's log-softmax only), Cephes' expf: x = n·ln2 + r with |r| ≤ ln2/2, a degree-5 polynomial in r, then 2ⁿ from
// the exponent bits. Within 2 ulp of the correctly rounded value (glibc's expf); 0 below −87.33 (where the
// result would be subnormal) and +∞ above 88.38, as expf's overflow.
__attribute__((target("avx2,fma")))
static inline __m256 exp8(__m256 x) {
    const __m256 too_big = _mm256_cmp_ps(x, _mm256_set1_ps(88.3762626647949f), _CMP_GT_OQ);
    const __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365447504019f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365447504019f)), _mm256_set1_ps(88.3762626647949f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), too_big);
    return _mm256_andnot_ps(too_small, y);
}

// glibc's expf (2.28+, the algorithm of ARM's optimized-routines) for 8 floats, to the bit: x·32/ln2 = k + r in
// Double, 2^(k/32) from a 32-entry table, a cubic in r, rounded to Float32 once. Lanes with |x| ≥ 88 or NaN
// (glibc's special cases) go to expf itself. Checked against glibc's expf on 1.4·10⁹ inputs with |x| < 88
// (bench/README.md): no difference, with or without fused multiply-add (the results are the same).
static const uint64_t exp2_table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

__attribute__((target("avx2,fma")))
static inline __m128 expf4_exact(__m128 x) {
    const __m256d xd = _mm256_cvtps_pd(x);
    const __m256d z = _mm256_mul_pd(xd, _mm256_set1_pd(0x1.71547652b82fep+0 * 32));
    const __m256d shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d shifted = _mm256_add_pd(z, shift);
    const __m256i ki = _mm256_castpd_si256(shifted);
    const __m256d r = _mm256_sub_pd(z, _mm256_sub_pd(shifted, shift));
    __m256i t = _mm256_i64gather_epi64((const long long *)exp2_table, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 52 - 5));
    const __m256d c0 = _mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m256d c1 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32);
    const __m256d c2 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    const __m256d zz = _mm256_fmadd_pd(c0, r, c1);
    __m256d y = _mm256_fmadd_pd(c2, r, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(zz, _mm256_mul_pd(r, r), y);
    y = _mm256_mul_pd(y, _mm256_castsi256_pd(t));
    return _mm256_cvtpd_ps(y);
}

__attribute__((target("avx2,fma")))
static inline __m256 expf8_exact(__m256 x) {
    __m256 y = _mm256_set_m128(expf4_exact(_mm256_extractf128_ps(x, 1)), expf4_exact(_mm256_castps256_ps128(x)));
    // |x| < 88 is glibc's fast path; anything else (large, infinite, NaN) is left to expf.
    const __m256 absolute = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const int fast = _mm256_movemask_ps(_mm256_cmp_ps(absolute, _mm256_set1_ps(88.0f), _CMP_LT_OQ));
    if (fast != 0xff) {
        float lanes[8], values[8];
        _mm256_storeu_ps(lanes, x);
        _mm256_storeu_ps(values, y);
        for (int l = 0; l < 8; l++) if (!(fast & (1 << l))) values[l] = expf(lanes[l]);
        y = _mm256_loadu_ps(values);
    }
    return y;
}

__attribute__((target("avx2,fma")))
static void swiglu_avx2(float *out, const float *gate, const float *up, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = expf8_exact(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// Row exponentials exp(row[j] − maximum) in place; the caller sums them in order.
__attribute__((target("avx2,fma")))
static void exp_shifted_avx2(float *row, size_t count, float maximum) {
    const __m256 m = _mm256_set1_ps(maximum);
    size_t j = 0;
    for (; j + 8 <= count; j += 8) _mm256_storeu_ps(row + j, expf8_exact(_mm256_sub_ps(_mm256_loadu_ps(row + j), m)));
    for (; j < count; j++) row[j] = expf(row[j] - maximum);
}

// Loads the last n < 8 floats into lanes 0..n−1 (the rest `fill`), so a tail goes through the same exp8.
__attribute__((target("avx2,fma")))
static inline __m256 load_tail(const float *p, size_t n, float fill) {
    float lanes[8];
    for (size_t i = 0; i < 8; i++) lanes[i] = i < n ? p[i] : fill;
    return _mm256_loadu_ps(lanes);
}

__attribute__((target("avx2,fma")))
static void add_f32_to_f64_avx2(double *sum, const float *values, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(values + i);
        _mm256_storeu_pd(sum + i, _mm256_add_pd(_mm256_loadu_pd(sum + i), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
        _mm256_storeu_pd(sum + i + 4, _mm256_add_pd(_mm256_loadu_pd(sum + i + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
    }
    for (; i < n; i++) sum[i] += (double)values[i];
}

// Σ exp(x[i] − shift) for x [n], each exp in Float32, summed in Double lanes.
__attribute__((target("avx2,fma")))
static double sum_exp_avx2(const float *x, size_t n, float shift) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    if (i < n) {
        __m256 e = exp8(_mm256_sub_ps(load_tail(x + i, n - i, -INFINITY), s));
        low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(low, high));
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

__attribute__((target("avx2,fma")))
static float max_avx2(const float *x, size_t n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    float maximum = lanes[0];
    for (int l = 1; l < 8; l++) maximum = fmaxf(maximum, lanes[l]);
    for (; i < n; i++) maximum = fmaxf(maximum, x[i]);
    return maximum;
}
#endif

double cengine_cross_entropy(const float *logits, size_t n, size_t target) {
    float maximum;
    double sum;
#if defined(__x86_64__)
    if (has_avx2_fma()) {
        maximum = max_avx2(logits, n);
        sum = sum_exp_avx2(logits, n, maximum);
    } else
#endif
    {
        maximum = -INFINITY;
        for (size_t i = 0; i < n; i++) maximum = fmaxf(maximum, logits[i]);
        sum = 0;
        for (size_t i = 0; i < n; i++) sum += (double)expf(logits[i] - maximum);
    }
    return log(sum) + (double)maximum - (double)logits[target];
}

void cengine_rmsnorm(float *out, const float *x, const float *weight, size_t tokens, size_t dim, float eps) {
    for (size_t t = 0; t < tokens; t++) {
        const float *row = x + t * dim;
        float *out_row = out + t * dim;
        // Sequential sum, as the Swift loop it replaces: a dim-long dependency chain is ~1 % of the block.
        float sum = 0;
        for (size_t i = 0; i < dim; i++) sum += row[i] * row[i];
        const float scale = 1.0f / sqrtf(sum / (float)dim + eps);
        for (size_t i = 0; i < dim; i++) out_row[i] = weight[i] * (row[i] * scale);
    }
}

void cengine_rope(float *x, const float *cos_table, const float *sin_table, size_t tokens, size_t heads,
                  size_t head_dim, size_t seqlen) {
    const size_t half = head_dim / 2;
    for (size_t t = 0; t < tokens; t++) {
        const float *c = cos_table + (t % seqlen) * half, *s = sin_table + (t % seqlen) * half;
        for (size_t h = 0; h < heads; h++) {
            float *head = x + (t * heads + h) * head_dim;
            for (size_t i = 0; i < half; i++) {
                const float x1 = head[i], x2 = head[i + half];
                head[i] = x1 * c[i] - x2 * s[i];
                head[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

void cengine_swiglu(float *out, const float *gate, const float *up, size_t n) {
    // glibc's expf to the bit (vectorised where the CPU allows), as the Swift code this replaces: pruning
    // amplifies last-bit changes of the activations (SparseGPT's masks follow them block after block).
#if defined(__x86_64__)
    if (has_avx2_fma()) { swiglu_avx2(out, gate, up, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cengine_causal_softmax(float *scores, size_t rows, size_t first_row, size_t columns, size_t ld) {
    for (size_t r = 0; r < rows; r++) {
        float *row = scores + r * ld;
        const size_t count = first_row + r + 1;  // columns 0...t of row t
        // glibc's expf and the sum in column order, as before (see cengine_swiglu): the same bits.
        float maximum = -INFINITY;
        for (size_t j = 0; j < count; j++) maximum = fmaxf(maximum, row[j]);
#if defined(__x86_64__)
        if (has_avx2_fma()) {
            exp_shifted_avx2(row, count, maximum);
        } else
#endif
        for (size_t j = 0; j < count; j++) row[j] = expf(row[j] - maximum);
        float sum = 0;
        for (size_t j = 0; j < count; j++) sum += row[j];
        const float inverse = 1.0f / sum;
        for (size_t j = 0; j < count; j++) row[j] *= inverse;
        if (count < columns) memset(row + count, 0, (columns - count) * sizeof(float));
    }
}

void cengine_add(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cengine_add_f32_to_f64(double *sum, const float *values, size_t n) {
#if defined(__x86_64__)
    if (has_avx2_fma()) { add_f32_to_f64_avx2(sum, values, n); return; }
#endif
    for (size_t i = 0; i < n; i++) sum[i] += (double)values[i];
}

void cengine_add_upper_f32_to_f64(double *sum, const float *product, size_t d) {
    for (size_t i = 0; i < d; i++) cengine_add_f32_to_f64(sum + i * d + i, product + i * d + i, d - i);
}

double cengine_select(double *values, size_t n, size_t k) {
    // Quickselect (Hoare partition, median-of-three pivot): the k-th smallest in O(n) expected time,
    // where SparseGPT's mask threshold used a full sort of rows × blocksize scores per block.
    size_t low = 0, high = n - 1;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        double a = values[low], b = values[mid], c = values[high];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = low, j = high;
        while (i <= j) {
            while (values[i] < pivot) i++;
            while (values[j] > pivot) j--;
            if (i <= j) {
                double t = values[i]; values[i] = values[j]; values[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) high = j;
        else if (k >= i) low = i;
        else return values[k];
    }
    return values[k];
}
