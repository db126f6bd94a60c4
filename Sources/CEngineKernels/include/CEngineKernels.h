#ifndef CENGINEKERNELS_H
#define CENGINEKERNELS_H
#include <stddef.h>
#include <stdint.h>

// Half-precision conversions. Swift's Float16 conversions call a software routine on x86_64 Linux
// (18x slower); these use F16C when the CPU has it and a portable path otherwise.
void cengine_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void cengine_f32_to_f16(const float *src, uint16_t *dst, size_t n);
// bfloat16: widening is a shift; narrowing rounds to nearest even (NaN stays NaN), as torch does.
void cengine_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void cengine_f32_to_bf16(const float *src, uint16_t *dst, size_t n);

// llama.cpp block formats to float32 (dequantize.c): `block_count` packed blocks at `src`, values in
// order at `dst` (32 values per block for Q4_0..Q8_0, 256 for the K-quants).
void cengine_dequantize_q4_0(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q4_1(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q5_0(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q5_1(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q8_0(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q4_K(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q5_K(const uint8_t *src, size_t block_count, float *dst);
void cengine_dequantize_q6_K(const uint8_t *src, size_t block_count, float *dst);
// Index of the first NaN or infinity among n floats, n when there is none.
size_t cengine_first_nonfinite(const float *values, size_t n);


// Forward-pass passes between the GEMMs (forward.c), row-major Float32.
// out[t, i] = weight[i] · (x[t, i] / sqrt(mean_i x[t, i]² + eps)); out [tokens, dim] may alias x [tokens, dim], weight [dim].
void cengine_rmsnorm(float *out, const float *x, const float *weight, size_t tokens, size_t dim, float eps);
// Rotates pairs (i, i + head_dim/2) of every head in place; token t is at position t mod seqlen.
// x [tokens, heads·head_dim], cos_table and sin_table [≥ seqlen, head_dim/2].
void cengine_rope(float *x, const float *cos_table, const float *sin_table, size_t tokens, size_t heads,
                  size_t head_dim, size_t seqlen);
// out = silu(gate) · up; out, gate, up [n].
void cengine_swiglu(float *out, const float *gate, const float *up, size_t n);
// Row r of scores [rows, ld] is query t = first_row + r: softmax over columns 0...t, zeros in t+1..<columns.
void cengine_causal_softmax(float *scores, size_t rows, size_t first_row, size_t columns, size_t ld);
// out = a + b; out, a, b [n] (out may alias a or b).
void cengine_add(float *out, const float *a, const float *b, size_t n);
// −log softmax(logits)[target] for logits [n]: max, then Σ exp(logit − max) (each exp in Float32, summed in Double).
double cengine_cross_entropy(const float *logits, size_t n, size_t target);

// Statistics: Float32 products added into Double sums (exact conversion, so the order of lanes does not matter).
// sum [n] += values [n].
void cengine_add_f32_to_f64(double *sum, const float *values, size_t n);
// Upper triangle, diagonal included: sum [d, d] += product [d, d] where column ≥ row.
void cengine_add_upper_f32_to_f64(double *sum, const float *product, size_t d);

// The k-th smallest of values [n] (0-based, as sorted(values)[k]); reorders values. Values must not be NaN.
double cengine_select(double *values, size_t n, size_t k);

#endif
