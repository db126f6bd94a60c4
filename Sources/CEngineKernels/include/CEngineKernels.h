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

#endif
