/* cuda_device_cpu.c -- CPU twins of the kernels in cuda_device.cu (always built). */
#include "cuda_device.h"

void she_saxpy_cpu(int n, float a, const float *x, float *y) {
    for (int i = 0; i < n; i++)
        y[i] = a * x[i] + y[i];
}
