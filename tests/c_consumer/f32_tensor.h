/* A contiguous float32 host tensor's descriptor (row-major strides), for the C consumer's
 * programs. */
#ifndef GATEDNORM_C_CONSUMER_F32_TENSOR_H
#define GATEDNORM_C_CONSUMER_F32_TENSOR_H
#include <gatednorm.h>

#include <string.h>

static gatednorm_tensor f32_tensor(float *data, int ndim, const int64_t *shape) {
    gatednorm_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.device.device_type = GATEDNORM_DEVICE_TYPE_CPU;
    t.ndim = ndim;
    t.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT;
    t.dtype.bits = 32;
    t.dtype.lanes = 1;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; --i) {
        t.shape[i] = shape[i];
        t.strides[i] = stride;
        stride *= shape[i];
    }
    return t;
}
#endif
