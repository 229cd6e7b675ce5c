/* cuda_check.h -- tier-3 check macros for CUDA, cuBLAS and kernel launches (SHE_LAUNCH: .cu
 * files only; the others also from C files built with CUDA), and the cuBLAS compute type of a
 * math mode, which the model and the benchmark's reference GEMM must agree on.
 * Each names the call, the file and the line; they need `errstr` and `errstr_size` in scope and
 * return SHE_ERR_CUDA from the enclosing she_err_t function. */
#ifndef SHE_CUDA_CHECK_H
#define SHE_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "error.h"
#include "model_cuda.h"
#ifdef __cplusplus
}
#endif
#include "cublas_api.h"

static inline cublasComputeType_t she_cublas_compute(she_math_t math) {
    return math == SHE_MATH_TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
           : math == SHE_MATH_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                   : CUBLAS_COMPUTE_32F;
}

#define SHE_TRY_CUDA(call)                                                                    \
    do {                                                                                      \
        cudaError_t she_cuda_err_ = (call);                                                   \
        if (she_cuda_err_ != cudaSuccess)                                                     \
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s:%d: %s: %s", __FILE__,    \
                            __LINE__, #call, cudaGetErrorString(she_cuda_err_));              \
    } while (0)

#define SHE_TRY_CUBLAS(call)                                                                  \
    do {                                                                                      \
        cublasStatus_t she_cublas_st_ = (call);                                               \
        if (she_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                          \
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s:%d: %s: %s", __FILE__,    \
                            __LINE__, #call, she_cublas_status_name(she_cublas_st_));         \
    } while (0)

/* Queues a kernel on a stream and checks the launch (bad configuration, no device, ...);
 * faults while it runs surface at the next synchronising call. */
#define SHE_LAUNCH(kernel, grid, block, stream, ...)                                          \
    do {                                                                                      \
        kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);                                \
        cudaError_t she_launch_err_ = cudaGetLastError();                                     \
        if (she_launch_err_ != cudaSuccess)                                                   \
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s:%d: launch of %s: %s",    \
                            __FILE__, __LINE__, #kernel, cudaGetErrorString(she_launch_err_)); \
    } while (0)

#endif
