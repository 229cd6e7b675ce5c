/* bench_cuda_none.c -- bench.h's cuBLAS reference for builds without CUDA (SHE_CUDA=OFF or no
 * nvcc found); with CUDA, bench_cuda.cu defines it instead (the guard keeps one source glob). */
#ifndef SHE_HAVE_CUDA
#include "bench.h"

she_err_t she_bench_cublas_gflops(const she_model_config_t *cfg, int device, int rows, int reps,
                                  she_math_t math, double *gflops, char *errstr,
                                  size_t errstr_size) {
    (void)cfg, (void)device, (void)rows, (void)reps, (void)math, (void)gflops;
    return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size, "built without CUDA");
}
#endif
