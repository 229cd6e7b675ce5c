/* cuda_device_none.c -- cuda_device.h for builds without CUDA (SHE_CUDA=OFF or no nvcc found).  With CUDA,
 * cuda_device.cu defines these instead; the guard keeps one source glob for all of core. */
#ifndef SHE_HAVE_CUDA
#include <stdio.h>

#include "cuda_device.h"

int she_cuda_device_count(char *errstr, size_t errstr_size) {
    she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size, "built without CUDA");
    return 0;
}

void she_cuda_describe(char *out, size_t out_size) {
    snprintf(out, out_size, "not built (SHE_CUDA=OFF or nvcc not found)");
}

she_err_t she_saxpy_cuda(int device, int n, float a, const float *x, float *y, char *errstr,
                         size_t errstr_size) {
    (void)device, (void)n, (void)a, (void)x, (void)y;
    return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size, "built without CUDA");
}
#endif
