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

#endif
