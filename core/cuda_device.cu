/* cuda_device.cu -- device discovery and the self-test kernel (CPU twin: cuda_device_cpu.c). */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "cuda_device.h"
}
#include "cuda_check.h"

extern "C" int she_cuda_device_count(char *errstr, size_t errstr_size) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        she_errf(SHE_ERR_CUDA, errstr, errstr_size, "cudaGetDeviceCount: %s",
                 cudaGetErrorString(e));
        return 0;
    }
    if (n == 0)
        she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no CUDA device");
    return n;
}

extern "C" void she_cuda_describe(char *out, size_t out_size) {
    char errstr[256];
    int n = she_cuda_device_count(errstr, sizeof(errstr));
    size_t len = (size_t)snprintf(out, out_size, "built with CUDA %d.%d, ", CUDART_VERSION / 1000,
                                  (CUDART_VERSION % 1000) / 10);
    if (n == 0) {
        snprintf(out + len, out_size - len, "no device (%s)", errstr);
        return;
    }
    len += (size_t)snprintf(out + len, out_size - len, "%d device(s):", n);
    for (int d = 0; d < n && len < out_size; d++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, d) != cudaSuccess)
            continue;
        len += (size_t)snprintf(out + len, out_size - len, " %s (sm_%d%d, %.0f GiB)", prop.name,
                                prop.major, prop.minor,
                                (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    }
}

__global__ static void saxpy_kernel(int n, float a, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}

extern "C" she_err_t she_saxpy_cuda(int device, int n, float a, const float *x, float *y,
                                    char *errstr, size_t errstr_size) {
    float *dx = NULL, *dy = NULL;
    size_t bytes = (size_t)n * sizeof(float);
    SHE_TRY_CUDA(cudaSetDevice(device));
    SHE_TRY_CUDA(cudaMalloc(&dx, bytes));
    cudaError_t e = cudaMalloc(&dy, bytes);
    if (e == cudaSuccess)
        e = cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(dy, y, bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        saxpy_kernel<<<(n + 255) / 256, 256>>>(n, a, dx, dy);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaMemcpy(y, dy, bytes, cudaMemcpyDeviceToHost);
    cudaFree(dx);
    cudaFree(dy);
    if (e != cudaSuccess)
        return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "saxpy on device %d: %s", device,
                        cudaGetErrorString(e));
    return SHE_OK;
}
