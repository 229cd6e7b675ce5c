/* cublas_api.h -- the cuBLAS calls of the CUDA backend, through a table loaded with dlopen when
 * a device model or the benchmark's reference GEMM is made.
 *
 * Why: linking libcublas (and the libcublasLt it pulls in) costs every process about 150 MiB of
 * resident memory before main() runs, 90 of it anonymous -- the broker, control, produce and
 * every consumer on the CPU included.  Loaded on first use, only a process that puts a model on
 * a GPU pays it.  The CUDA runtime and NCCL stay linked: loading them costs a few MiB.
 *
 * Each holder (a device model, the benchmark) opens its own table and closes it when done;
 * dlopen counts the references, so the library is mapped once per process.  The symbol names
 * are the ones cublas_v2.h's macros resolve to.  Built with CUDA only (SHE_HAVE_CUDA). */
#ifndef SHE_CUBLAS_API_H
#define SHE_CUBLAS_API_H

#include <cublas_v2.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "error.h"

typedef struct she_cublas_api {
    void *lib; /* dlopen handle; NULL when closed */
    void *lt;  /* libcublasLt, when it had to be loaded by path first (see she_cublas_api_open) */
    __typeof__(cublasCreate_v2) *create;
    __typeof__(cublasDestroy_v2) *destroy;
    __typeof__(cublasSetStream_v2) *set_stream;
    __typeof__(cublasSetMathMode) *set_math_mode;
    __typeof__(cublasSetWorkspace_v2) *set_workspace;
    /* spelled out: C++ sees an overload of each (the legacy cudaDataType compute type) */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n,
                              int k, const void *alpha, const void *A, cudaDataType, int lda,
                              const void *B, cudaDataType, int ldb, const void *beta, void *C,
                              cudaDataType, int ldc, cublasComputeType_t, cublasGemmAlgo_t);
    cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t,
                                              cublasOperation_t, int m, int n, int k,
                                              const void *alpha, const void *A, cudaDataType,
                                              int lda, long long sA, const void *B, cudaDataType,
                                              int ldb, long long sB, const void *beta, void *C,
                                              cudaDataType, int ldc, long long sC, int count,
                                              cublasComputeType_t, cublasGemmAlgo_t);
} she_cublas_api_t;

/* Loads libcublas (its soname, then the copy in the toolkit it was built against, after that
 * directory's libcublasLt, which libcublas needs and would not find there by itself) and every
 * call above into *api.  SHE_ERR_CUDA naming the library or the missing symbol; *api is then
 * closed (nothing to undo). */
she_err_t she_cublas_api_open(she_cublas_api_t *api, char *errstr, size_t errstr_size);
/* Drops this holder's reference (a closed or zeroed table is fine). */
void she_cublas_api_close(she_cublas_api_t *api);

/* "CUBLAS_STATUS_NOT_SUPPORTED" and so on, without the library (errors are reported even when
 * it could not be loaded). */
const char *she_cublas_status_name(cublasStatus_t st);

#ifdef __cplusplus
}
#endif

#endif
