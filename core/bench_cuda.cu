/* bench_cuda.cu -- the cuBLAS GEMM reference of `she bench`'s GPU section (bench.h): the
 * projection shapes of she_bench_sgemm_gflops, mapped onto cuBLAS's column-major calls as
 * model_cuda.cu maps them, in the compute type of the math mode measured, timed with CUDA
 * events on one stream. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>

extern "C" {
#include "bench.h"
}
#include "cuda_check.h"

typedef struct gemm_bench {
    she_cublas_api_t cublas;
    cublasHandle_t blas;
    cublasComputeType_t compute; /* of the math mode measured (cuda_check.h) */
    cudaStream_t stream;
    cudaEvent_t start, stop;
    float *A, *B, *C; /* device buffers of `max` floats each */
} gemm_bench_t;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One product of the kind bench.c times: 0 forward Y = X W^T, 1 input gradient dX = dY W,
 * 2 weight gradient dW += dY^T X; rows N, W of o x n (row-major, as in model.c). */
static cublasStatus_t mm(const gemm_bench_t *g, cublasOperation_t ta, cublasOperation_t tb, int m,
                         int n, int k, const float *A, int lda, const float *B, int ldb,
                         const float *beta, float *C, int ldc) {
    const float one = 1.0f;
    return g->cublas.gemm_ex(g->blas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F,
                             ldb, beta, C, CUDA_R_32F, ldc, g->compute, CUBLAS_GEMM_DEFAULT);
}

static she_err_t gemm_once(gemm_bench_t *g, int kind, int N, int o, int n, char *errstr,
                           size_t errstr_size) {
    const float one = 1.0f, zero = 0.0f;
    if (kind == 0)
        SHE_TRY_CUBLAS(mm(g, CUBLAS_OP_T, CUBLAS_OP_N, o, N, n, g->B, n, g->A, n, &zero, g->C, o));
    else if (kind == 1)
        SHE_TRY_CUBLAS(mm(g, CUBLAS_OP_N, CUBLAS_OP_N, n, N, o, g->B, n, g->A, o, &zero, g->C, n));
    else
        SHE_TRY_CUBLAS(mm(g, CUBLAS_OP_N, CUBLAS_OP_T, n, o, N, g->A, n, g->B, o, &one, g->C, n));
    return SHE_OK;
}

static she_err_t measure(gemm_bench_t *g, const she_model_config_t *c, int N, int reps,
                         double *gflops, char *errstr, size_t errstr_size) {
    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int Q = D + 2 * c->n_kv_heads * (D / c->n_heads);
    int outs[] = {Q, D, 2 * F, D, V}, ins[] = {D, D, D, F, D};
    float *ms = (float *)calloc((size_t)reps, sizeof(float));
    SHE_CHECK_ALLOC(ms);
    double flops = 0, secs = 0;
    she_err_t err = SHE_OK;
    for (int i = 0; i < 5 && err == SHE_OK; i++)
        for (int kind = 0; kind < 3 && err == SHE_OK; kind++) {
            err = gemm_once(g, kind, N, outs[i], ins[i], errstr, errstr_size); /* warm-up */
            for (int rep = 0; rep < reps && err == SHE_OK; rep++) {
                cudaError_t e = cudaEventRecord(g->start, g->stream);
                if (e == cudaSuccess)
                    err = gemm_once(g, kind, N, outs[i], ins[i], errstr, errstr_size);
                if (e == cudaSuccess && err == SHE_OK)
                    e = cudaEventRecord(g->stop, g->stream);
                if (e == cudaSuccess && err == SHE_OK)
                    e = cudaEventSynchronize(g->stop);
                if (e == cudaSuccess && err == SHE_OK)
                    e = cudaEventElapsedTime(&ms[rep], g->start, g->stop);
                if (e != cudaSuccess)
                    err = she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s:%d: timing a GEMM: %s",
                                   __FILE__, __LINE__, cudaGetErrorString(e));
            }
            if (err == SHE_OK) {
                qsort(ms, (size_t)reps, sizeof(float), cmp_float);
                secs += ms[reps / 2] * 1e-3;
                flops += 2.0 * N * outs[i] * ins[i];
            }
        }
    free(ms);
    if (err == SHE_OK)
        *gflops = flops / secs / 1e9;
    return err;
}

/* Creates everything measure() uses; on failure what was made is left for release(). */
static she_err_t acquire(gemm_bench_t *g, int device, size_t max, char *errstr,
                         size_t errstr_size) {
    SHE_TRY_CUDA(cudaSetDevice(device));
    SHE_TRY_CUDA(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    SHE_TRY_CUDA(cudaEventCreate(&g->start));
    SHE_TRY_CUDA(cudaEventCreate(&g->stop));
    SHE_TRY_CUDA(cudaMalloc(&g->A, max * sizeof(float)));
    SHE_TRY_CUDA(cudaMalloc(&g->B, max * sizeof(float)));
    SHE_TRY_CUDA(cudaMalloc(&g->C, max * sizeof(float)));
    /* zeros: the values do not change what a GEMM costs, and sums of zeros stay finite */
    SHE_TRY_CUDA(cudaMemsetAsync(g->A, 0, max * sizeof(float), g->stream));
    SHE_TRY_CUDA(cudaMemsetAsync(g->B, 0, max * sizeof(float), g->stream));
    SHE_TRY_CUDA(cudaMemsetAsync(g->C, 0, max * sizeof(float), g->stream));
    SHE_TRY(she_cublas_api_open(&g->cublas, errstr, errstr_size));
    SHE_TRY_CUBLAS(g->cublas.create(&g->blas));
    SHE_TRY_CUBLAS(g->cublas.set_stream(g->blas, g->stream));
    return SHE_OK;
}

static void release(gemm_bench_t *g) {
    if (g->blas)
        g->cublas.destroy(g->blas);
    she_cublas_api_close(&g->cublas);
    cudaFree(g->A);
    cudaFree(g->B);
    cudaFree(g->C);
    if (g->start)
        cudaEventDestroy(g->start);
    if (g->stop)
        cudaEventDestroy(g->stop);
    if (g->stream)
        cudaStreamDestroy(g->stream);
}

extern "C" she_err_t she_bench_cublas_gflops(const she_model_config_t *cfg, int device, int rows,
                                             int reps, she_math_t math, double *gflops,
                                             char *errstr, size_t errstr_size) {
    int D = cfg->hidden_size, F = cfg->intermediate_size, V = cfg->vocab_size;
    int Q = D + 2 * cfg->n_kv_heads * (D / cfg->n_heads);
    int outs[] = {Q, D, 2 * F, D, V}, ins[] = {D, D, D, F, D};
    size_t max = 0; /* the largest operand of any shape, as bench.c sizes its buffers */
    for (int i = 0; i < 5; i++) {
        size_t big = (size_t)(outs[i] > rows ? outs[i] : rows);
        size_t s = big * (size_t)(ins[i] > outs[i] ? ins[i] : outs[i]);
        max = s > max ? s : max;
    }
    if (reps < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%d repetitions", reps);
    gemm_bench_t g = {};
    g.compute = she_cublas_compute(math);
    she_err_t err = acquire(&g, device, max, errstr, errstr_size);
    if (err == SHE_OK)
        err = measure(&g, cfg, rows, reps, gflops, errstr, errstr_size);
    release(&g);
    return err;
}
