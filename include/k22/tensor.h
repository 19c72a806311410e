/* tensor.h: dtypes, device tags and the tensor view that ops and io exchange. */
#ifndef K22_TENSOR_H
#define K22_TENSOR_H

#include "k22/k22.h"

typedef enum {
    K22_DTYPE_F32 = 0,
    K22_DTYPE_F16,
    K22_DTYPE_BF16,
    K22_DTYPE_I64,
    K22_DTYPE_I32,
    K22_DTYPE_U8,
    K22_DTYPE_BOOL,
    K22_DTYPE_COUNT
} k22_dtype;

typedef enum { K22_DEV_HOST = 0, K22_DEV_CUDA } k22_device;

#define K22_MAX_DIMS 8

/* A view: never owns data. Contiguous row-major. */
typedef struct {
    void *data;
    k22_dtype dtype;
    int ndim;
    int64_t shape[K22_MAX_DIMS];
    k22_device dev;
} k22_tensor;

size_t k22_dtype_size(k22_dtype t);
/* safetensors spelling: "F32", "F16", "BF16", "I64", "I32", "U8", "BOOL". */
const char *k22_dtype_name(k22_dtype t);
/* Parses the safetensors spelling; returns 0 and sets *out, or -1 when unknown. */
int k22_dtype_parse(const char *s, k22_dtype *out);

/* Element count; 1 for ndim 0. */
int64_t k22_shape_numel(int ndim, const int64_t *shape);

/* Conversions between a stored dtype and f32 (round to nearest even toward f16/bf16; f16
 * subnormals, infinities and NaN kept). Integer and bool dtypes convert by value. */
void k22_convert_to_f32(float *dst, const void *src, k22_dtype src_type, size_t n);
void k22_convert_from_f32(void *dst, k22_dtype dst_type, const float *src, size_t n);
float k22_f16_to_f32(uint16_t h);
uint16_t k22_f32_to_f16(float f);
float k22_bf16_to_f32(uint16_t h);
uint16_t k22_f32_to_bf16(float f);

#endif
