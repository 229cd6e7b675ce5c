/* model_cuda.cu -- the engine and its KV-cache sampler on a CUDA device (see model_cuda.h).
 *
 * Read side by side with model.c and sampler.c: each function below follows its CPU twin line
 * by line, with she_gemm replaced by cuBLAS and each OpenMP loop by a kernel that does what the
 * loop body does.  Kernels use one thread per output element, or one block per row for row
 * reductions (RMSNorm, softmax), or one thread per column for column sums (weight gradients
 * of norms and biases, the embedding gradient), so no kernel needs atomics and every sum has a
 * fixed order. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "model_cuda.h"
}
#include "cuda_check.h"

/* Threads per block: elementwise kernels, and the row kernels (a multiple of the warp size,
 * which block_reduce needs). */
#define EW_THREADS 256
#define ROW_THREADS 256
/* optim.c's chunk for the gradient norm: the same partial sums in the same order. */
#define NORM_CHUNK 16384
/* cuBLAS workspace, reserved with the model so no GEMM allocates (NVIDIA's advice for Hopper). */
#define BLAS_WORKSPACE (32u << 20)

static unsigned blocks_for(size_t n) { return (unsigned)((n + EW_THREADS - 1) / EW_THREADS); }

/* Index of this thread over a 1-D grid, in size_t (grids here can exceed 2^31 threads). */
__device__ static size_t thread_index(void) {
    return (size_t)blockIdx.x * blockDim.x + threadIdx.x;
}

/* ------------------------------------------------------------------------------------------ */
/* block reductions: every thread of the block gets the result.  The leading __syncthreads lets */
/* a block call them back to back (the previous call's readers are done with `part`).         */

__device__ static float block_reduce(float v, int is_max) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    v = lane < n_warps ? part[lane] : (is_max ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    return v;
}

__device__ static float block_sum(float v) { return block_reduce(v, 0); }
__device__ static float block_max(float v) { return block_reduce(v, 1); }

__device__ static double block_sum_double(double v) {
    __shared__ double part[32];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    v = lane < n_warps ? part[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* kernels, each the twin of a loop in model.c (or sampler.c where named)                      */

/* out[r] = embed[tok[r]] for n rows of D: the embedding lookup. */
__global__ static void k_embed(float *out, const float *embed, const int32_t *tok, int n, int D) {
    size_t i = thread_index();
    if (i >= (size_t)n * D)
        return;
    size_t r = i / D, j = i % D;
    out[i] = embed[(size_t)tok[r] * D + j];
}

/* she_rmsnorm: one block per row; rstd may be NULL. */
__global__ static void k_rmsnorm(float *out, float *rstd, const float *x, const float *w, int D,
                                 float eps) {
    const float *xr = x + (size_t)blockIdx.x * D;
    float *outr = out + (size_t)blockIdx.x * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss);
    float rs = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        outr[i] = xr[i] * rs * w[i];
    if (rstd && threadIdx.x == 0)
        rstd[blockIdx.x] = rs;
}

/* The forward's per-row q|k|v fix-up: add the bias (may be NULL), then she_rope on the q and k
 * heads at the row's position.  One thread per column of (n, Q); a thread in the first half
 * of a q or k head rotates the pair (i, i + half), the second-half threads do nothing. */
__global__ static void k_bias_rope(float *qkv, const float *bias, const int32_t *pos,
                                   const float *cos_t, const float *sin_t, int n, int D, int KVD,
                                   int hd) {
    int Q = D + 2 * KVD, half = hd / 2;
    size_t idx = thread_index();
    if (idx >= (size_t)n * Q)
        return;
    size_t r = idx / Q;
    int j = (int)(idx % Q);
    float *row = qkv + r * Q;
    if (j >= D + KVD) { /* v: bias only */
        if (bias)
            row[j] += bias[j];
        return;
    }
    int i = j % hd; /* q heads tile [0, D), k heads [D, D + KVD), both in steps of hd */
    if (i >= half)
        return;
    float a = row[j], b = row[j + half];
    if (bias) {
        a += bias[j];
        b += bias[j + half];
    }
    size_t at = (size_t)pos[r] * half + i;
    float c = cos_t[at], s = sin_t[at];
    row[j] = a * c - b * s;
    row[j + half] = b * c + a * s;
}

/* rope_backward on the q and k heads of every row of dqkv (the opposite rotation). */
__global__ static void k_rope_backward(float *dqkv, const int32_t *pos, const float *cos_t,
                                       const float *sin_t, int n, int D, int KVD, int hd) {
    int Q = D + 2 * KVD, QK = D + KVD, half = hd / 2;
    size_t idx = thread_index();
    if (idx >= (size_t)n * QK)
        return;
    size_t r = idx / QK;
    int j = (int)(idx % QK), i = j % hd;
    if (i >= half)
        return;
    float *row = dqkv + r * Q;
    size_t at = (size_t)pos[r] * half + i;
    float c = cos_t[at], s = sin_t[at];
    float a = row[j], b = row[j + half];
    row[j] = a * c + b * s;
    row[j + half] = b * c - a * s;
}

/* attn_softmax for head h: one block per score row r = b*T + i of S (B, T, T); lse (B, H, T). */
__global__ static void k_attn_softmax(float *S, float *lse, const uint8_t *mask, int T, int H,
                                      int h) {
    int r = blockIdx.x, b = r / T, i = r % T;
    float *s = S + (size_t)r * T;
    const uint8_t *mk = mask + (size_t)b * T;
    float *l = lse + ((size_t)b * H + h) * T + i;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= i; j += blockDim.x)
        if (mk[j])
            mx = fmaxf(mx, s[j]);
    mx = block_max(mx);
    if (mx == -INFINITY) { /* no visible key: the same for every thread of the block */
        for (int j = threadIdx.x; j < T; j += blockDim.x)
            s[j] = 0.0f;
        if (threadIdx.x == 0)
            *l = -INFINITY;
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        float p = mk[j] ? expf(s[j] - mx) : 0.0f;
        s[j] = p;
        sum += p;
    }
    sum = block_sum(sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        s[j] = j <= i ? s[j] * inv : 0.0f;
    if (threadIdx.x == 0)
        *l = mx + logf(sum);
}

/* attn_probs for head h: P from the scores and the saved log-sum-exp, one block per row. */
__global__ static void k_attn_probs(float *S, const float *lse, const uint8_t *mask, int T, int H,
                                    int h) {
    int r = blockIdx.x, b = r / T, i = r % T;
    float *s = S + (size_t)r * T;
    const uint8_t *mk = mask + (size_t)b * T;
    float l = lse[((size_t)b * H + h) * T + i];
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        s[j] = (l != -INFINITY && j <= i && mk[j]) ? expf(s[j] - l) : 0.0f;
}

/* dS = P * (dP - rowsum(P * dP)) in place in dP, causal part only; one block per row. */
__global__ static void k_attn_dsoftmax(float *dP, const float *P, int T) {
    int r = blockIdx.x, i = r % T;
    const float *p = P + (size_t)r * T;
    float *dp = dP + (size_t)r * T;
    float dot = 0.0f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x)
        dot += p[j] * dp[j];
    dot = block_sum(dot);
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        dp[j] = j <= i ? p[j] * (dp[j] - dot) : 0.0f;
}

/* she_swiglu over n rows of gate|up (2F) into act (F). */
__global__ static void k_swiglu(float *act, const float *gu, int n, int F) {
    size_t idx = thread_index();
    if (idx >= (size_t)n * F)
        return;
    size_t r = idx / F, i = idx % F;
    float g = gu[r * 2 * F + i];
    act[idx] = g / (1.0f + expf(-g)) * gu[r * 2 * F + F + i];
}

/* swiglu_backward over n rows. */
__global__ static void k_swiglu_backward(float *dgu, const float *dact, const float *gu, int n,
                                         int F) {
    size_t idx = thread_index();
    if (idx >= (size_t)n * F)
        return;
    size_t r = idx / F, i = idx % F;
    float g = gu[r * 2 * F + i], u = gu[r * 2 * F + F + i], s = 1.0f / (1.0f + expf(-g));
    dgu[r * 2 * F + i] = dact[idx] * u * s * (1.0f + g * (1.0f - s));
    dgu[r * 2 * F + F + i] = dact[idx] * g * s;
}

/* The forward's log-softmax at temperature and entropy, one block per row; inactive rows
 * (padding or no target) give logp = entropy = 0 and leave row_lse / row_ent alone. */
__global__ static void k_logsoftmax(const float *logits, const int32_t *targets,
                                    const uint8_t *mask, int V, float inv_t, float *row_lse,
                                    float *row_ent, float *logp, float *ent) {
    int r = blockIdx.x;
    if (!(mask[r] && targets[r] >= 0)) {
        if (threadIdx.x == 0)
            logp[r] = ent[r] = 0.0f;
        return;
    }
    const float *z = logits + (size_t)r * V;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        mx = fmaxf(mx, z[j]);
    mx = block_max(mx) * inv_t;
    float s = 0.0f, sz = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float d = z[j] * inv_t - mx, e = expf(d);
        s += e;
        sz += e * d;
    }
    s = block_sum(s);
    sz = block_sum(sz);
    if (threadIdx.x == 0) {
        float lse = mx + logf(s), e = logf(s) - sz / s;
        row_lse[r] = lse;
        row_ent[r] = e;
        logp[r] = z[targets[r]] * inv_t - lse;
        ent[r] = e;
    }
}

/* Backward's logits -> dlogits in place, one block per row (see model.c for the formulas);
 * dlogp and dent may be NULL (zero). */
__global__ static void k_dlogits(float *logits, const int32_t *targets, const uint8_t *mask,
                                 const float *row_lse, const float *row_ent, const float *dlogp,
                                 const float *dent, int V, float inv_t) {
    int r = blockIdx.x;
    float *z = logits + (size_t)r * V;
    if (!(mask[r] && targets[r] >= 0)) {
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            z[j] = 0.0f;
        return;
    }
    float gl = dlogp ? dlogp[r] : 0.0f, ge = dent ? dent[r] : 0.0f;
    float lse = row_lse[r], ent = row_ent[r];
    int target = targets[r];
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lp = z[j] * inv_t - lse, p = expf(lp);
        float v = -p * (gl + ge * (lp + ent)) * inv_t;
        if (j == target)
            v += gl * inv_t;
        z[j] = v;
    }
}

/* rmsnorm_backward's first half: dx (+)= d rmsnorm / dx . dy, one block per row. */
__global__ static void k_rmsnorm_backward_dx(float *dx, int accumulate, const float *dy,
                                             const float *x, const float *rstd, const float *w,
                                             int D) {
    size_t off = (size_t)blockIdx.x * D;
    const float *dyr = dy + off, *xr = x + off;
    float *dxr = dx + off, rs = rstd[blockIdx.x];
    float dot = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        dot += dyr[i] * w[i] * xr[i];
    dot = block_sum(dot);
    float c = dot * rs * rs * rs / (float)D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = rs * dyr[i] * w[i] - c * xr[i];
        dxr[i] = accumulate ? dxr[i] + v : v;
    }
}

/* rmsnorm_backward's second half: dw[c] += sum over rows, in row order, of dy * x * rstd. */
__global__ static void k_rmsnorm_backward_dw(float *dw, const float *dy, const float *x,
                                             const float *rstd, int n, int D) {
    size_t c = thread_index();
    if (c >= (size_t)D)
        return;
    float acc = 0.0f;
    for (int r = 0; r < n; r++)
        acc += dy[(size_t)r * D + c] * x[(size_t)r * D + c] * rstd[r];
    dw[c] += acc;
}

/* dst[c] += sum over rows, in row order, of src[r, c] (the q/k/v bias gradient). */
__global__ static void k_colsum_add(float *dst, const float *src, int n, int cols) {
    size_t c = thread_index();
    if (c >= (size_t)cols)
        return;
    float acc = 0.0f;
    for (int r = 0; r < n; r++)
        acc += src[(size_t)r * cols + c];
    dst[c] += acc;
}

/* The embedding gradient: each thread owns one column and adds the rows in order, so repeated
 * tokens need no atomics. */
__global__ static void k_embed_backward(float *gembed, const float *dres, const int32_t *tok,
                                        int n, int D) {
    size_t c = thread_index();
    if (c >= (size_t)D)
        return;
    for (int r = 0; r < n; r++)
        gembed[(size_t)tok[r] * D + c] += dres[(size_t)r * D + c];
}

/* she_grad_norm's chunk partials: part[c] = sum of g^2 over chunk c, in double. */
__global__ static void k_sumsq_chunks(double *part, const float *g, size_t n) {
    size_t lo = (size_t)blockIdx.x * NORM_CHUNK;
    size_t hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        s += (double)g[i] * g[i];
    s = block_sum_double(s);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}

/* ... added in chunk order by one thread, as optim.c's ordered loop does. */
__global__ static void k_sum_parts(double *total, const double *part, int n_parts) {
    double s = 0.0;
    for (int c = 0; c < n_parts; c++)
        s += part[c];
    *total = s;
}

/* optim.c's coefficients of one AdamW update. */
typedef struct adamw_coef {
    float b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps, grad_scale, decay;
} adamw_coef_t;

/* adamw_scalar for every element; decay applies to [0, n_decay) only. */
__global__ static void k_adamw(float *p, const float *g, float *m, float *v, size_t n,
                               size_t n_decay, adamw_coef_t k) {
    size_t i = thread_index();
    if (i >= n)
        return;
    float decay = i < n_decay ? k.decay : 1.0f;
    float gi = g[i] * k.grad_scale;
    float mi = k.b1 * m[i] + k.one_b1 * gi;
    float vi = k.b2 * v[i] + k.one_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - k.step_size * mi / (sqrtf(vi) / k.bc2_sqrt + k.eps);
}

/* ------------------------------------------------------------------------------------------ */
/* matrix products                                                                            */

/* The cuBLAS calls (cublas_api.h), the handle (on the model's stream) and the compute type of
 * the math mode. */
typedef struct gemm_ctx {
    const she_cublas_api_t *api;
    cublasHandle_t blas;
    cublasComputeType_t compute;
} gemm_ctx_t;

/* she_gemm's contract on cuBLAS: C = alpha op(A) op(B) + beta C, all row-major.  A row-major
 * matrix is its transpose in column-major order, so cuBLAS computes C^T = op(B)^T op(A)^T:
 * operands swapped, M and N swapped, the same leading dimensions and transpose flags. */
static she_err_t gemm(const gemm_ctx_t *g, int ta, int tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc, char *errstr, size_t errstr_size) {
    SHE_TRY_CUBLAS(g->api->gemm_ex(g->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_32F,
                                   ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, g->compute,
                                   CUBLAS_GEMM_DEFAULT));
    return SHE_OK;
}

/* The same for `count` independent products, operand i at X + i * sX. */
static she_err_t gemm_batched(const gemm_ctx_t *g, int ta, int tb, int M, int N, int K,
                              float alpha, const float *A, int lda, long long sA, const float *B,
                              int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                              int count, char *errstr, size_t errstr_size) {
    SHE_TRY_CUBLAS(g->api->gemm_strided_batched_ex(
        g->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
        B, CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, count,
        g->compute, CUBLAS_GEMM_DEFAULT));
    return SHE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* the model object                                                                           */

struct she_cuda_model_s {
    she_model_config_t cfg;
    int head_dim, kv_dim, qkv_dim;
    int max_batch, max_seq;
    int device;
    cudaStream_t stream;
    she_cublas_api_t cublas;      /* this model's reference to the loaded library */
    gemm_ctx_t gemm;              /* cuBLAS handle on `stream`, compute type of the math mode */
    void *blas_ws;                /* (BLAS_WORKSPACE bytes) */

    float *params, *grads;        /* device, (n_params) each, model.h's layout */
    float *adam_m, *adam_v;       /* device, (n_params) each */
    int64_t step;                 /* AdamW updates done */
    size_t n_params, n_decay;
    she_model_weights_t w, g;     /* device pointers into params / grads */

    /* Device activations, model.h's arrays and shapes; `scores` holds P then dP, each
     * (max_batch, max_seq, max_seq).  tokens, targets, pos and mask are device copies. */
    she_model_acts_t a;
    float *rope_cos, *rope_sin;   /* device, (max_seq, hd/2) */
    float *logp, *ent;            /* device, (N) forward outputs */
    float *dlogp, *dent;          /* device, (N) backward inputs */
    double *norm_part;            /* device, (n_chunks + 1): chunk sums, then the total */
    void *dev_block;              /* the one device allocation for all of the above */

    int32_t *h_tokens, *h_targets, *h_pos; /* host staging of the batch, (N) each */
    uint8_t *h_mask;
    int B, T;                     /* shape of the last forward; 0 before any */
    float temperature;
    int backward_ready;
};

/* The float arrays of she_model_acts_t that both backends reserve with the same shapes (model.c's
 * she_model_new table, scores excepted), as offsets into the struct, with their sizes. */
typedef struct act_field {
    size_t offset;
    size_t n;
} act_field_t;

#define N_ACT_FIELDS 22

static void act_fields(const she_model_config_t *c, int qkv_dim, int max_batch, int max_seq,
                       act_field_t f[N_ACT_FIELDS]) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t V = (size_t)c->vocab_size, N = (size_t)max_batch * max_seq, Q = (size_t)qkv_dim;
    size_t H = (size_t)c->n_heads;
    const act_field_t t[] = {
        {offsetof(she_model_acts_t, res), (L + 1) * N * D},
        {offsetof(she_model_acts_t, res_mid), L * N * D},
        {offsetof(she_model_acts_t, h1), L * N * D},
        {offsetof(she_model_acts_t, rstd1), L * N},
        {offsetof(she_model_acts_t, qkv), L * N * Q},
        {offsetof(she_model_acts_t, att), L * N * D},
        {offsetof(she_model_acts_t, lse), L * N * H},
        {offsetof(she_model_acts_t, h2), L * N * D},
        {offsetof(she_model_acts_t, rstd2), L * N},
        {offsetof(she_model_acts_t, gu), L * N * 2 * F},
        {offsetof(she_model_acts_t, act), L * N * F},
        {offsetof(she_model_acts_t, hf), N * D},
        {offsetof(she_model_acts_t, rstdf), N},
        {offsetof(she_model_acts_t, logits), N * V},
        {offsetof(she_model_acts_t, row_lse), N},
        {offsetof(she_model_acts_t, row_ent), N},
        {offsetof(she_model_acts_t, dres), N * D},
        {offsetof(she_model_acts_t, dh), N * D},
        {offsetof(she_model_acts_t, dqkv), N * Q},
        {offsetof(she_model_acts_t, datt), N * D},
        {offsetof(she_model_acts_t, dgu), N * 2 * F},
        {offsetof(she_model_acts_t, dact), N * F},
    };
    static_assert(sizeof(t) / sizeof(t[0]) == N_ACT_FIELDS, "N_ACT_FIELDS is the table's size");
    memcpy(f, t, sizeof(t));
}

/* The field of `a` that f names. */
static float **act_slot(she_model_acts_t *a, const act_field_t *f) {
    return (float **)((char *)a + f->offset);
}
static float *act_get(const she_model_acts_t *a, const act_field_t *f) {
    return *(float *const *)((const char *)a + f->offset);
}

/* Points dst's fields into dst_base at the offsets src's fields have from src_base: the device
 * blocks get exactly the CPU layout (tied lm_head == embed, bqkv NULL without bias). */
static void point_like(const she_model_weights_t *src, const float *src_base, float *dst_base,
                       she_model_weights_t *dst) {
#define POINT(field) dst->field = src->field ? dst_base + (src->field - src_base) : NULL
    POINT(embed);
    POINT(wqkv);
    POINT(wo);
    POINT(wgu);
    POINT(wd);
    POINT(lm_head);
    POINT(ln1);
    POINT(bqkv);
    POINT(ln2);
    POINT(lnf);
#undef POINT
}

/* Bump allocator over the one device block; every array starts on a 256-byte boundary. */
typedef struct carve {
    char *base;
    size_t used;
} carve_t;

static void *carve(carve_t *cv, size_t bytes) {
    void *p = cv->base ? cv->base + cv->used : NULL;
    cv->used += (bytes + 255) / 256 * 256;
    return p;
}

/* RoPE tables exactly as model.c and sampler.c compute them, uploaded to cos_d / sin_d. */
static she_err_t upload_rope(const she_model_config_t *c, int head_dim, int max_seq,
                             float *cos_d, float *sin_d, cudaStream_t stream, char *errstr,
                             size_t errstr_size) {
    size_t half = (size_t)head_dim / 2, n = (size_t)max_seq * half;
    float *h = (float *)malloc(2 * n * sizeof(float));
    if (!h)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "cannot allocate RoPE tables");
    for (size_t t = 0; t < (size_t)max_seq; t++)
        for (size_t i = 0; i < half; i++) {
            double inv_freq = pow(c->rope_theta, -(double)(2 * i) / (double)head_dim);
            double angle = (double)t * inv_freq;
            h[t * half + i] = (float)cos(angle);
            h[n + t * half + i] = (float)sin(angle);
        }
    cudaError_t e = cudaMemcpyAsync(cos_d, h, n * sizeof(float), cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(sin_d, h + n, n * sizeof(float), cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(stream);
    free(h);
    SHE_TRY_CUDA(e);
    return SHE_OK;
}

/* Everything she_cuda_model_new does after the checks; on failure the caller frees cm. */
static she_err_t build(she_cuda_model_t *cm, const she_model_t *cpu, char *errstr,
                       size_t errstr_size) {
    const she_model_config_t *c = &cm->cfg;
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_TRY_CUDA(cudaStreamCreateWithFlags(&cm->stream, cudaStreamNonBlocking));
    SHE_TRY(she_cublas_api_open(&cm->cublas, errstr, errstr_size));
    cm->gemm.api = &cm->cublas;
    SHE_TRY_CUBLAS(cm->cublas.create(&cm->gemm.blas));
    SHE_TRY_CUBLAS(cm->cublas.set_stream(cm->gemm.blas, cm->stream));
    SHE_TRY_CUBLAS(cm->cublas.set_math_mode(cm->gemm.blas, CUBLAS_DEFAULT_MATH));
    cm->gemm.compute = she_cublas_compute(SHE_MATH_FP32);

    size_t N = (size_t)cm->max_batch * cm->max_seq;
    size_t T = (size_t)cm->max_seq, half = (size_t)cm->head_dim / 2, P = cm->n_params;
    size_t n_chunks = (P + NORM_CHUNK - 1) / NORM_CHUNK;
    act_field_t f[N_ACT_FIELDS];
    act_fields(c, cm->qkv_dim, cm->max_batch, cm->max_seq, f);

    /* Two passes over the same carving: count, then point into the allocation. */
    carve_t cv = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        cv.used = 0;
        cm->blas_ws = carve(&cv, BLAS_WORKSPACE);
        cm->params = (float *)carve(&cv, P * sizeof(float));
        cm->grads = (float *)carve(&cv, P * sizeof(float));
        cm->adam_m = (float *)carve(&cv, P * sizeof(float));
        cm->adam_v = (float *)carve(&cv, P * sizeof(float));
        for (int i = 0; i < N_ACT_FIELDS; i++)
            *act_slot(&cm->a, &f[i]) = (float *)carve(&cv, f[i].n * sizeof(float));
        cm->a.scores = (float *)carve(&cv, 2 * (size_t)cm->max_batch * T * T * sizeof(float));
        cm->rope_cos = (float *)carve(&cv, T * half * sizeof(float));
        cm->rope_sin = (float *)carve(&cv, T * half * sizeof(float));
        cm->logp = (float *)carve(&cv, N * sizeof(float));
        cm->ent = (float *)carve(&cv, N * sizeof(float));
        cm->dlogp = (float *)carve(&cv, N * sizeof(float));
        cm->dent = (float *)carve(&cv, N * sizeof(float));
        cm->norm_part = (double *)carve(&cv, (n_chunks + 1) * sizeof(double));
        cm->a.tokens = (int32_t *)carve(&cv, N * sizeof(int32_t));
        cm->a.targets = (int32_t *)carve(&cv, N * sizeof(int32_t));
        cm->a.pos = (int32_t *)carve(&cv, N * sizeof(int32_t));
        cm->a.mask = (uint8_t *)carve(&cv, N);
        if (pass == 0) {
            SHE_TRY_CUDA(cudaMalloc(&cm->dev_block, cv.used));
            cv.base = (char *)cm->dev_block;
        }
    }
    SHE_TRY_CUDA(cudaMemsetAsync(cm->dev_block, 0, cv.used, cm->stream));
    SHE_TRY_CUBLAS(cm->cublas.set_workspace(cm->gemm.blas, cm->blas_ws, BLAS_WORKSPACE));
    point_like(&cpu->w, cpu->params, cm->params, &cm->w);
    point_like(&cpu->w, cpu->params, cm->grads, &cm->g);

    cm->h_tokens = (int32_t *)malloc(3 * N * sizeof(int32_t) + N);
    if (!cm->h_tokens)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "cannot allocate batch staging");
    cm->h_targets = cm->h_tokens + N;
    cm->h_pos = cm->h_targets + N;
    cm->h_mask = (uint8_t *)(cm->h_pos + N);

    SHE_TRY(upload_rope(c, cm->head_dim, cm->max_seq, cm->rope_cos, cm->rope_sin, cm->stream,
                        errstr, errstr_size));
    SHE_TRY_CUDA(cudaMemcpyAsync(cm->params, cpu->params, P * sizeof(float),
                                 cudaMemcpyHostToDevice, cm->stream));
    SHE_TRY_CUDA(cudaStreamSynchronize(cm->stream));
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_new(const she_model_t *cpu, int device, int max_batch,
                                        int max_seq, she_cuda_model_t **out, char *errstr,
                                        size_t errstr_size) {
    *out = NULL;
    const she_model_config_t *c = &cpu->cfg;
    if (max_batch <= 0 || max_seq <= 0 || max_seq > c->max_position_embeddings)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "batch %d x sequence %d: both must be positive and the sequence at most "
                        "max_position_embeddings (%d)", max_batch, max_seq,
                        c->max_position_embeddings);
    if (device < 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "CUDA device %d: must be >= 0",
                        device);
    she_cuda_model_t *cm = (she_cuda_model_t *)calloc(1, sizeof(*cm));
    SHE_CHECK_ALLOC(cm);
    cm->cfg = *c;
    cm->head_dim = cpu->head_dim;
    cm->kv_dim = cpu->kv_dim;
    cm->qkv_dim = cpu->qkv_dim;
    cm->max_batch = max_batch;
    cm->max_seq = max_seq;
    cm->device = device;
    cm->n_params = cpu->n_params;
    cm->n_decay = cpu->n_decay;
    she_err_t err = build(cm, cpu, errstr, errstr_size);
    if (err != SHE_OK) {
        she_cuda_model_free(cm);
        return err;
    }
    *out = cm;
    return SHE_OK;
}

extern "C" void she_cuda_model_free(she_cuda_model_t *cm) {
    if (!cm)
        return;
    /* Teardown errors cannot be acted on; the device memory goes with the context anyway. */
    if (cudaSetDevice(cm->device) == cudaSuccess) {
        if (cm->stream)
            cudaStreamSynchronize(cm->stream);
        if (cm->gemm.blas)
            cm->cublas.destroy(cm->gemm.blas);
        cudaFree(cm->dev_block);
        if (cm->stream)
            cudaStreamDestroy(cm->stream);
    }
    she_cublas_api_close(&cm->cublas);
    free(cm->h_tokens);
    free(cm);
}

extern "C" she_err_t she_cuda_model_set_math(she_cuda_model_t *cm, she_math_t math,
                                             char *errstr, size_t errstr_size) {
    if ((unsigned)math > SHE_MATH_BF16)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "math mode %d", (int)math);
    cm->gemm.compute = she_cublas_compute(math);
    return SHE_OK;
}

/* Host model (and optimizer) compatible with the device blocks. */
static she_err_t check_same(const she_cuda_model_t *cm, const she_model_t *cpu,
                            const she_adamw_t *opt, char *errstr, size_t errstr_size) {
    if (cpu->n_params != cm->n_params || cpu->n_decay != cm->n_decay)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "host model has %zu parameters (%zu decayed), the device model %zu (%zu)",
                        cpu->n_params, cpu->n_decay, cm->n_params, cm->n_decay);
    if (opt && opt->n != cm->n_params)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "optimizer state for %zu parameters, the device model has %zu", opt->n,
                        cm->n_params);
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_upload(she_cuda_model_t *cm, const she_model_t *cpu,
                                           const she_adamw_t *opt, char *errstr,
                                           size_t errstr_size) {
    SHE_TRY(check_same(cm, cpu, opt, errstr, errstr_size));
    size_t bytes = cm->n_params * sizeof(float);
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_TRY_CUDA(cudaMemcpyAsync(cm->params, cpu->params, bytes, cudaMemcpyHostToDevice,
                                 cm->stream));
    if (opt) {
        SHE_TRY_CUDA(cudaMemcpyAsync(cm->adam_m, opt->m, bytes, cudaMemcpyHostToDevice,
                                     cm->stream));
        SHE_TRY_CUDA(cudaMemcpyAsync(cm->adam_v, opt->v, bytes, cudaMemcpyHostToDevice,
                                     cm->stream));
        cm->step = opt->step;
    }
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_download(const she_cuda_model_t *cm, she_model_t *cpu,
                                             she_adamw_t *opt, char *errstr,
                                             size_t errstr_size) {
    SHE_TRY(check_same(cm, cpu, opt, errstr, errstr_size));
    size_t bytes = cm->n_params * sizeof(float);
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_TRY_CUDA(cudaMemcpyAsync(cpu->params, cm->params, bytes, cudaMemcpyDeviceToHost,
                                 cm->stream));
    if (opt) {
        SHE_TRY_CUDA(cudaMemcpyAsync(opt->m, cm->adam_m, bytes, cudaMemcpyDeviceToHost,
                                     cm->stream));
        SHE_TRY_CUDA(cudaMemcpyAsync(opt->v, cm->adam_v, bytes, cudaMemcpyDeviceToHost,
                                     cm->stream));
        opt->step = cm->step;
    }
    SHE_TRY_CUDA(cudaStreamSynchronize(cm->stream));
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_download_grads(const she_cuda_model_t *cm, she_model_t *cpu,
                                                   char *errstr, size_t errstr_size) {
    SHE_TRY(check_same(cm, cpu, NULL, errstr, errstr_size));
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_TRY_CUDA(cudaMemcpyAsync(cpu->grads, cm->grads, cm->n_params * sizeof(float),
                                 cudaMemcpyDeviceToHost, cm->stream));
    SHE_TRY_CUDA(cudaStreamSynchronize(cm->stream));
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_download_acts(const she_cuda_model_t *cm, she_model_t *cpu,
                                                  char *errstr, size_t errstr_size) {
    SHE_TRY(check_same(cm, cpu, NULL, errstr, errstr_size));
    if (cpu->max_batch != cm->max_batch || cpu->max_seq != cm->max_seq)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "host model reserves %d x %d, the device model %d x %d", cpu->max_batch,
                        cpu->max_seq, cm->max_batch, cm->max_seq);
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    act_field_t f[N_ACT_FIELDS];
    act_fields(&cm->cfg, cm->qkv_dim, cm->max_batch, cm->max_seq, f);
    for (int i = 0; i < N_ACT_FIELDS; i++)
        SHE_TRY_CUDA(cudaMemcpyAsync(act_get(&cpu->a, &f[i]), act_get(&cm->a, &f[i]),
                                     f[i].n * sizeof(float), cudaMemcpyDeviceToHost, cm->stream));
    size_t N = (size_t)cm->max_batch * cm->max_seq;
    memcpy(cpu->a.tokens, cm->h_tokens, N * sizeof(int32_t));
    memcpy(cpu->a.targets, cm->h_targets, N * sizeof(int32_t));
    memcpy(cpu->a.pos, cm->h_pos, N * sizeof(int32_t));
    memcpy(cpu->a.mask, cm->h_mask, N);
    SHE_TRY_CUDA(cudaStreamSynchronize(cm->stream));
    return SHE_OK;
}

extern "C" float *she_cuda_model_grads_device(she_cuda_model_t *cm, size_t *n_params) {
    if (n_params)
        *n_params = cm->n_params;
    return cm->grads;
}

extern "C" void *she_cuda_model_stream(she_cuda_model_t *cm) { return (void *)cm->stream; }

/* ------------------------------------------------------------------------------------------ */
/* forward / backward                                                                         */

/* attention_forward: per head, the batch rows as one strided-batched GEMM each way. */
static she_err_t attention_forward(she_cuda_model_t *cm, float *att, float *lse, const float *qkv,
                                   int B, int T, char *errstr, size_t errstr_size) {
    int D = cm->cfg.hidden_size, H = cm->cfg.n_heads, hd = cm->head_dim, Q = cm->qkv_dim;
    int group = H / cm->cfg.n_kv_heads, kvd = cm->kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
    long long TQ = (long long)T * Q, TD = (long long)T * D, TT = (long long)T * T;
    float *S = cm->a.scores;
    for (int h = 0; h < H; h++) {
        int g = h / group;
        const float *q = qkv + h * hd, *k = qkv + D + g * hd, *v = qkv + D + kvd + g * hd;
        SHE_TRY(gemm_batched(&cm->gemm, 0, 1, T, T, hd, scale, q, Q, TQ, k, Q, TQ, 0.0f, S, T, TT,
                             B, errstr, errstr_size));
        SHE_LAUNCH(k_attn_softmax, B * T, ROW_THREADS, cm->stream, S, lse, cm->a.mask, T, H, h);
        SHE_TRY(gemm_batched(&cm->gemm, 0, 0, T, hd, T, 1.0f, S, T, TT, v, Q, TQ, 0.0f, att + h * hd,
                             D, TD, B, errstr, errstr_size));
    }
    return SHE_OK;
}

/* attention_backward: dqkv (overwritten) from datt.  Heads run in order, so the heads of a kv
 * group add into its dK and dV one after the other (beta 0 for the group's first head), as on
 * the CPU.  Ends with the RoPE transpose. */
static she_err_t attention_backward(she_cuda_model_t *cm, float *dqkv, const float *datt,
                                    const float *qkv, const float *lse, int B, int T,
                                    char *errstr, size_t errstr_size) {
    int D = cm->cfg.hidden_size, H = cm->cfg.n_heads, hd = cm->head_dim, Q = cm->qkv_dim;
    int group = H / cm->cfg.n_kv_heads, kvd = cm->kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
    long long TQ = (long long)T * Q, TD = (long long)T * D, TT = (long long)T * T;
    float *P = cm->a.scores, *dP = P + (size_t)cm->max_batch * cm->max_seq * cm->max_seq;
    for (int h = 0; h < H; h++) {
        int g = h / group;
        float beta = h % group ? 1.0f : 0.0f;
        const float *q = qkv + h * hd, *k = qkv + D + g * hd, *v = qkv + D + kvd + g * hd;
        const float *dO = datt + h * hd;
        float *dq = dqkv + h * hd, *dk = dqkv + D + g * hd, *dv = dqkv + D + kvd + g * hd;
        SHE_TRY(gemm_batched(&cm->gemm, 0, 1, T, T, hd, scale, q, Q, TQ, k, Q, TQ, 0.0f, P, T, TT,
                             B, errstr, errstr_size));
        SHE_LAUNCH(k_attn_probs, B * T, ROW_THREADS, cm->stream, P, lse, cm->a.mask, T, H, h);
        /* dV (+)= P^T dO;  dP = dO V^T */
        SHE_TRY(gemm_batched(&cm->gemm, 1, 0, T, hd, T, 1.0f, P, T, TT, dO, D, TD, beta, dv, Q, TQ,
                             B, errstr, errstr_size));
        SHE_TRY(gemm_batched(&cm->gemm, 0, 1, T, T, hd, 1.0f, dO, D, TD, v, Q, TQ, 0.0f, dP, T, TT,
                             B, errstr, errstr_size));
        SHE_LAUNCH(k_attn_dsoftmax, B * T, ROW_THREADS, cm->stream, dP, P, T);
        /* dQ = scale dS K;  dK (+)= scale dS^T Q */
        SHE_TRY(gemm_batched(&cm->gemm, 0, 0, T, hd, T, scale, dP, T, TT, k, Q, TQ, 0.0f, dq, Q, TQ,
                             B, errstr, errstr_size));
        SHE_TRY(gemm_batched(&cm->gemm, 1, 0, T, hd, T, scale, dP, T, TT, q, Q, TQ, beta, dk, Q, TQ,
                             B, errstr, errstr_size));
    }
    int N = B * T;
    SHE_LAUNCH(k_rope_backward, blocks_for((size_t)N * (D + kvd)), EW_THREADS, cm->stream, dqkv,
               cm->a.pos, cm->rope_cos, cm->rope_sin, N, D, kvd, hd);
    return SHE_OK;
}

/* rmsnorm_backward: dx (+)= ..., dw += ... */
static she_err_t rmsnorm_backward(she_cuda_model_t *cm, float *dx, int accumulate, float *dw,
                                  const float *dy, const float *x, const float *rstd,
                                  const float *w, int n_rows, int dim, char *errstr,
                                  size_t errstr_size) {
    SHE_LAUNCH(k_rmsnorm_backward_dx, n_rows, ROW_THREADS, cm->stream, dx, accumulate, dy, x, rstd,
               w, dim);
    SHE_LAUNCH(k_rmsnorm_backward_dw, blocks_for((size_t)dim), EW_THREADS, cm->stream, dw, dy, x,
               rstd, n_rows, dim);
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_forward(she_cuda_model_t *cm, const int32_t *tokens,
                                            const uint8_t *mask, const int32_t *targets, int B,
                                            int T, float temperature, float *logp, float *entropy,
                                            char *errstr, size_t errstr_size) {
    const she_model_config_t *c = &cm->cfg;
    SHE_TRY(she_model_check_batch(c, cm->max_batch, cm->max_seq, tokens, targets, B, T,
                                  temperature, errstr, errstr_size));
    size_t N = (size_t)B * T;
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    she_model_acts_t *a = &cm->a;
    cm->B = B;
    cm->T = T;
    cm->temperature = temperature;
    cm->backward_ready = 0; /* set once the whole forward has been queued */
    for (int b = 0; b < B; b++) {
        int seen = 0;
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            cm->h_tokens[r] = tokens[r];
            cm->h_targets[r] = targets ? targets[r] : -1;
            cm->h_mask[r] = mask ? mask[r] != 0 : 1;
            seen += cm->h_mask[r];
            cm->h_pos[r] = seen > 0 ? seen - 1 : 0;
        }
    }
    cudaStream_t st = cm->stream;
    SHE_TRY_CUDA(cudaMemcpyAsync(a->tokens, cm->h_tokens, N * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
    SHE_TRY_CUDA(cudaMemcpyAsync(a->targets, cm->h_targets, N * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
    SHE_TRY_CUDA(cudaMemcpyAsync(a->pos, cm->h_pos, N * sizeof(int32_t), cudaMemcpyHostToDevice,
                                 st));
    SHE_TRY_CUDA(cudaMemcpyAsync(a->mask, cm->h_mask, N, cudaMemcpyHostToDevice, st));

    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, Q = cm->qkv_dim;
    int H = c->n_heads, hd = cm->head_dim;
    float eps = (float)c->rms_norm_eps;
    const she_model_weights_t *w = &cm->w;
    size_t mND = (size_t)cm->max_batch * cm->max_seq * D, mN = (size_t)cm->max_batch * cm->max_seq;
    size_t mNQ = mN * Q, mNF = mN * F;
    const gemm_ctx_t *blas = &cm->gemm;

    SHE_LAUNCH(k_embed, blocks_for(N * D), EW_THREADS, st, a->res, w->embed, a->tokens, (int)N, D);

    for (int l = 0; l < c->n_layers; l++) {
        const float *res = a->res + l * mND;
        float *h1 = a->h1 + l * mND, *qkv = a->qkv + l * mNQ, *att = a->att + l * mND;
        float *mid = a->res_mid + l * mND, *h2 = a->h2 + l * mND, *gu = a->gu + l * 2 * mNF;
        float *act = a->act + l * mNF, *next = a->res + (l + 1) * mND;
        const float *bqkv = w->bqkv ? w->bqkv + (size_t)l * Q : NULL;

        SHE_LAUNCH(k_rmsnorm, (unsigned)N, ROW_THREADS, st, h1, a->rstd1 + l * mN, res,
                   w->ln1 + (size_t)l * D, D, eps);
        SHE_TRY(gemm(blas, 0, 1, (int)N, Q, D, 1.0f, h1, D, w->wqkv + (size_t)l * Q * D, D, 0.0f,
                     qkv, Q, errstr, errstr_size));
        SHE_LAUNCH(k_bias_rope, blocks_for(N * Q), EW_THREADS, st, qkv, bqkv, a->pos, cm->rope_cos,
                   cm->rope_sin, (int)N, D, cm->kv_dim, hd);
        SHE_TRY(attention_forward(cm, att, a->lse + l * mN * H, qkv, B, T, errstr, errstr_size));
        SHE_TRY_CUDA(cudaMemcpyAsync(mid, res, N * D * sizeof(float), cudaMemcpyDeviceToDevice,
                                     st));
        SHE_TRY(gemm(blas, 0, 1, (int)N, D, D, 1.0f, att, D, w->wo + (size_t)l * D * D, D, 1.0f,
                     mid, D, errstr, errstr_size));
        SHE_LAUNCH(k_rmsnorm, (unsigned)N, ROW_THREADS, st, h2, a->rstd2 + l * mN, mid,
                   w->ln2 + (size_t)l * D, D, eps);
        SHE_TRY(gemm(blas, 0, 1, (int)N, 2 * F, D, 1.0f, h2, D, w->wgu + (size_t)l * 2 * F * D, D,
                     0.0f, gu, 2 * F, errstr, errstr_size));
        SHE_LAUNCH(k_swiglu, blocks_for(N * F), EW_THREADS, st, act, gu, (int)N, F);
        SHE_TRY_CUDA(cudaMemcpyAsync(next, mid, N * D * sizeof(float), cudaMemcpyDeviceToDevice,
                                     st));
        SHE_TRY(gemm(blas, 0, 1, (int)N, D, F, 1.0f, act, F, w->wd + (size_t)l * D * F, F, 1.0f,
                     next, D, errstr, errstr_size));
    }

    SHE_LAUNCH(k_rmsnorm, (unsigned)N, ROW_THREADS, st, a->hf, a->rstdf,
               a->res + c->n_layers * mND, w->lnf, D, eps);
    SHE_TRY(gemm(blas, 0, 1, (int)N, V, D, 1.0f, a->hf, D, w->lm_head, D, 0.0f, a->logits, V,
                 errstr, errstr_size));

    if (targets) {
        SHE_LAUNCH(k_logsoftmax, (unsigned)N, ROW_THREADS, st, a->logits, a->targets, a->mask, V,
                   1.0f / temperature, a->row_lse, a->row_ent, cm->logp, cm->ent);
        if (logp)
            SHE_TRY_CUDA(cudaMemcpyAsync(logp, cm->logp, N * sizeof(float),
                                         cudaMemcpyDeviceToHost, st));
        if (entropy)
            SHE_TRY_CUDA(cudaMemcpyAsync(entropy, cm->ent, N * sizeof(float),
                                         cudaMemcpyDeviceToHost, st));
    }
    /* Always wait: the outputs are then valid, and a fault in this forward is reported by it. */
    SHE_TRY_CUDA(cudaStreamSynchronize(st));
    cm->backward_ready = targets != NULL;
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_backward(she_cuda_model_t *cm, const float *dlogp,
                                             const float *dentropy, char *errstr,
                                             size_t errstr_size) {
    SHE_ASSERT(cm->backward_ready);
    cm->backward_ready = 0;
    const she_model_config_t *c = &cm->cfg;
    she_model_acts_t *a = &cm->a;
    const she_model_weights_t *w = &cm->w;
    she_model_weights_t *gw = &cm->g;
    int B = cm->B, T = cm->T, D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int Q = cm->qkv_dim, H = c->n_heads, L = c->n_layers;
    size_t N = (size_t)B * T;
    size_t mN = (size_t)cm->max_batch * cm->max_seq, mND = mN * D, mNQ = mN * Q, mNF = mN * F;
    float inv_t = 1.0f / cm->temperature;
    cudaStream_t st = cm->stream;
    const gemm_ctx_t *blas = &cm->gemm;
    SHE_TRY_CUDA(cudaSetDevice(cm->device));

    if (dlogp)
        SHE_TRY_CUDA(cudaMemcpyAsync(cm->dlogp, dlogp, N * sizeof(float), cudaMemcpyHostToDevice,
                                     st));
    if (dentropy)
        SHE_TRY_CUDA(cudaMemcpyAsync(cm->dent, dentropy, N * sizeof(float),
                                     cudaMemcpyHostToDevice, st));
    SHE_LAUNCH(k_dlogits, (unsigned)N, ROW_THREADS, st, a->logits, a->targets, a->mask, a->row_lse,
               a->row_ent, dlogp ? cm->dlogp : NULL, dentropy ? cm->dent : NULL, V, inv_t);

    SHE_TRY(gemm(blas, 0, 0, (int)N, D, V, 1.0f, a->logits, V, w->lm_head, D, 0.0f, a->dh, D,
                 errstr, errstr_size));
    SHE_TRY(gemm(blas, 1, 0, V, D, (int)N, 1.0f, a->logits, V, a->hf, D, 1.0f, gw->lm_head, D,
                 errstr, errstr_size));
    SHE_TRY(rmsnorm_backward(cm, a->dres, 0, gw->lnf, a->dh, a->res + L * mND, a->rstdf, w->lnf,
                             (int)N, D, errstr, errstr_size));

    for (int l = L - 1; l >= 0; l--) {
        const float *res = a->res + l * mND, *h1 = a->h1 + l * mND, *qkv = a->qkv + l * mNQ;
        const float *att = a->att + l * mND, *mid = a->res_mid + l * mND;
        const float *h2 = a->h2 + l * mND, *gu = a->gu + l * 2 * mNF, *act = a->act + l * mNF;
        size_t lD = (size_t)l * D, lQ = (size_t)l * Q;

        /* MLP: next = mid + act @ wd^T, act = swiglu(h2 @ wgu^T) */
        SHE_TRY(gemm(blas, 0, 0, (int)N, F, D, 1.0f, a->dres, D, w->wd + lD * F, F, 0.0f, a->dact,
                     F, errstr, errstr_size));
        SHE_TRY(gemm(blas, 1, 0, D, F, (int)N, 1.0f, a->dres, D, act, F, 1.0f, gw->wd + lD * F, F,
                     errstr, errstr_size));
        SHE_LAUNCH(k_swiglu_backward, blocks_for(N * F), EW_THREADS, st, a->dgu, a->dact, gu,
                   (int)N, F);
        SHE_TRY(gemm(blas, 0, 0, (int)N, D, 2 * F, 1.0f, a->dgu, 2 * F, w->wgu + lD * 2 * F, D,
                     0.0f, a->dh, D, errstr, errstr_size));
        SHE_TRY(gemm(blas, 1, 0, 2 * F, D, (int)N, 1.0f, a->dgu, 2 * F, h2, D, 1.0f,
                     gw->wgu + lD * 2 * F, D, errstr, errstr_size));
        SHE_TRY(rmsnorm_backward(cm, a->dres, 1, gw->ln2 + lD, a->dh, mid, a->rstd2 + l * mN,
                                 w->ln2 + lD, (int)N, D, errstr, errstr_size));

        /* attention: mid = res + att @ wo^T */
        SHE_TRY(gemm(blas, 0, 0, (int)N, D, D, 1.0f, a->dres, D, w->wo + lD * D, D, 0.0f, a->datt,
                     D, errstr, errstr_size));
        SHE_TRY(gemm(blas, 1, 0, D, D, (int)N, 1.0f, a->dres, D, att, D, 1.0f, gw->wo + lD * D, D,
                     errstr, errstr_size));
        SHE_TRY(attention_backward(cm, a->dqkv, a->datt, qkv, a->lse + l * mN * H, B, T, errstr,
                                   errstr_size));
        if (gw->bqkv)
            SHE_LAUNCH(k_colsum_add, blocks_for((size_t)Q), EW_THREADS, st, gw->bqkv + lQ, a->dqkv,
                       (int)N, Q);
        SHE_TRY(gemm(blas, 0, 0, (int)N, D, Q, 1.0f, a->dqkv, Q, w->wqkv + lQ * D, D, 0.0f, a->dh,
                     D, errstr, errstr_size));
        SHE_TRY(gemm(blas, 1, 0, Q, D, (int)N, 1.0f, a->dqkv, Q, h1, D, 1.0f, gw->wqkv + lQ * D, D,
                     errstr, errstr_size));
        SHE_TRY(rmsnorm_backward(cm, a->dres, 1, gw->ln1 + lD, a->dh, res, a->rstd1 + l * mN,
                                 w->ln1 + lD, (int)N, D, errstr, errstr_size));
    }

    SHE_LAUNCH(k_embed_backward, blocks_for((size_t)D), EW_THREADS, st, gw->embed, a->dres,
               a->tokens, (int)N, D);
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_zero_grad(she_cuda_model_t *cm, char *errstr,
                                              size_t errstr_size) {
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_TRY_CUDA(cudaMemsetAsync(cm->grads, 0, cm->n_params * sizeof(float), cm->stream));
    return SHE_OK;
}

extern "C" she_err_t she_cuda_model_adamw_step(she_cuda_model_t *cm, const she_adamw_config_t *hp,
                                               float lr, float grad_scale, float max_grad_norm,
                                               float *grad_norm, char *errstr,
                                               size_t errstr_size) {
    size_t n = cm->n_params, n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    cudaStream_t st = cm->stream;
    SHE_TRY_CUDA(cudaSetDevice(cm->device));
    SHE_LAUNCH(k_sumsq_chunks, (unsigned)n_chunks, ROW_THREADS, st, cm->norm_part, cm->grads, n);
    SHE_LAUNCH(k_sum_parts, 1, 1, st, cm->norm_part + n_chunks, cm->norm_part, (int)n_chunks);
    double total = 0.0;
    SHE_TRY_CUDA(cudaMemcpyAsync(&total, cm->norm_part + n_chunks, sizeof(double),
                                 cudaMemcpyDeviceToHost, st));
    SHE_TRY_CUDA(cudaStreamSynchronize(st));

    /* she_model_adamw_step, then she_adamw_update's coefficients. */
    double norm = sqrt(total) * fabsf(grad_scale);
    float scale = grad_scale * she_grad_clip_scale(norm, max_grad_norm);
    int64_t t = cm->step + 1;
    adamw_coef_t k;
    k.b1 = hp->beta1;
    k.b2 = hp->beta2;
    k.one_b1 = 1.0f - hp->beta1;
    k.one_b2 = 1.0f - hp->beta2;
    k.step_size = lr / (1.0f - (float)pow(hp->beta1, (double)t));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(hp->beta2, (double)t));
    k.eps = hp->eps;
    k.grad_scale = scale;
    k.decay = 1.0f - lr * hp->weight_decay;
    SHE_LAUNCH(k_adamw, blocks_for(n), EW_THREADS, st, cm->params, cm->grads, cm->adam_m,
               cm->adam_v, n, cm->n_decay, k);
    cm->step = t;
    if (grad_norm)
        *grad_norm = (float)norm;
    return SHE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* sampler kernels                                                                            */

/* The new tokens' keys and values into the cache at (their row, their position). */
__global__ static void k_cache_store(float *kc, float *vc, const float *qkv,
                                     const int32_t *row_of, const int32_t *pos_of, int n, int D,
                                     int KVD, int max_seq) {
    size_t idx = thread_index();
    if (idx >= (size_t)n * KVD)
        return;
    size_t i = idx / KVD, j = idx % KVD;
    size_t at = ((size_t)row_of[i] * max_seq + pos_of[i]) * KVD + j;
    const float *row = qkv + i * (D + 2 * (size_t)KVD);
    kc[at] = row[D + j];
    vc[at] = row[D + KVD + j];
}

/* sampler.c's attention of one (token, head) over its row's cache up to its position: one block
 * per pair, the scores in scores[pair] (max_seq floats each). */
__global__ static void k_cache_attention(float *att, float *scores, const float *qkv,
                                         const float *kc, const float *vc, const int32_t *row_of,
                                         const int32_t *pos_of, int H, int group, int hd, int D,
                                         int KVD, int max_seq, float scale) {
    int ih = blockIdx.x, i = ih / H, hh = ih % H, g = hh / group, Q = D + 2 * KVD;
    const float *q = qkv + (size_t)i * Q + (size_t)hh * hd;
    const float *kbase = kc + (size_t)row_of[i] * max_seq * KVD + (size_t)g * hd;
    const float *vbase = vc + (size_t)row_of[i] * max_seq * KVD + (size_t)g * hd;
    float *sc = scores + (size_t)ih * max_seq;
    int ctx = pos_of[i] + 1;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        const float *k = kbase + (size_t)j * KVD;
        float dot = 0.0f;
        for (int d = 0; d < hd; d++)
            dot += q[d] * k[d];
        sc[j] = dot * scale;
        mx = fmaxf(mx, sc[j]);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    sum = block_sum(sum); /* its __syncthreads also publishes sc to the whole block */
    float inv = 1.0f / sum;
    float *o = att + (size_t)i * D + (size_t)hh * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < ctx; j++)
            acc += sc[j] * inv * vbase[(size_t)j * KVD + d];
        o[d] = acc;
    }
}

/* dst[k] = src[idx[k]] for n rows of D. */
__global__ static void k_gather_rows(float *dst, const float *src, const int32_t *idx, int n,
                                     int D) {
    size_t i = thread_index();
    if (i >= (size_t)n * D)
        return;
    size_t k = i / D, j = i % D;
    dst[i] = src[(size_t)idx[k] * D + j];
}

/* ------------------------------------------------------------------------------------------ */
/* the sampler object                                                                         */

struct she_cuda_sampler_s {
    const she_cuda_model_t *m;
    int max_batch, max_seq, chunk;
    size_t layer_stride;          /* floats per layer in a cache: max_batch * max_seq * KVD */
    /* device */
    float *kc, *vc;               /* (L, max_batch, max_seq, KVD) keys (after RoPE) and values */
    float *rope_cos, *rope_sin;   /* (max_seq, hd/2) */
    float *x, *h, *qkv, *att, *gu, *act; /* packed rows: (chunk, D|D|QKV|D|2F|F) */
    float *hsel;                  /* (chunk, D) final-normed rows whose logits are wanted */
    float *d_logits;              /* (max_batch, V) logits of the rows of one call */
    float *scores;                /* (chunk * n_heads, max_seq) */
    int32_t *d_row_of, *d_pos_of, *d_tok_of, *d_sel; /* (chunk) each */
    void *dev_block;
    /* host: sampler.c's bookkeeping, same names and meanings */
    float *logits;                /* (max_batch, V) packed: slot logit_row[b] holds row b's */
    float *probs;                 /* (V) */
    int32_t *cand;                /* (V) */
    int32_t *row_of, *pos_of, *tok_of, *sel; /* (chunk) what each packed row is; selected rows */
    uint8_t *want;                /* (chunk) row needs logits */
    int *len, *leader, *active, *tail_len, *logit_row; /* (max_batch) */
    int *sel_row;                 /* (chunk) cache row of each selected logits row */
    uint64_t *rng;                /* (max_batch) */
    char *tail;                   /* (max_batch, SHE_SAMPLE_STOP_TAIL) */
    void *host_block;
};

static she_err_t sampler_build(she_cuda_sampler_t *s, char *errstr, size_t errstr_size) {
    const she_cuda_model_t *m = s->m;
    const she_model_config_t *c = &m->cfg;
    size_t D = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t V = (size_t)c->vocab_size, Q = (size_t)m->qkv_dim, C = (size_t)s->chunk;
    size_t half = (size_t)m->head_dim / 2, MB = (size_t)s->max_batch;
    size_t S = (size_t)s->max_seq;
    SHE_TRY_CUDA(cudaSetDevice(m->device));
    carve_t cv = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        cv.used = 0;
        s->kc = (float *)carve(&cv, (size_t)c->n_layers * s->layer_stride * sizeof(float));
        s->vc = (float *)carve(&cv, (size_t)c->n_layers * s->layer_stride * sizeof(float));
        s->rope_cos = (float *)carve(&cv, S * half * sizeof(float));
        s->rope_sin = (float *)carve(&cv, S * half * sizeof(float));
        s->x = (float *)carve(&cv, C * D * sizeof(float));
        s->h = (float *)carve(&cv, C * D * sizeof(float));
        s->qkv = (float *)carve(&cv, C * Q * sizeof(float));
        s->att = (float *)carve(&cv, C * D * sizeof(float));
        s->gu = (float *)carve(&cv, C * 2 * F * sizeof(float));
        s->act = (float *)carve(&cv, C * F * sizeof(float));
        s->hsel = (float *)carve(&cv, C * D * sizeof(float));
        s->d_logits = (float *)carve(&cv, MB * V * sizeof(float));
        s->scores = (float *)carve(&cv, C * (size_t)c->n_heads * S * sizeof(float));
        s->d_row_of = (int32_t *)carve(&cv, C * sizeof(int32_t));
        s->d_pos_of = (int32_t *)carve(&cv, C * sizeof(int32_t));
        s->d_tok_of = (int32_t *)carve(&cv, C * sizeof(int32_t));
        s->d_sel = (int32_t *)carve(&cv, C * sizeof(int32_t));
        if (pass == 0) {
            SHE_TRY_CUDA(cudaMalloc(&s->dev_block, cv.used));
            cv.base = (char *)s->dev_block;
        }
    }
    SHE_TRY(upload_rope(c, m->head_dim, s->max_seq, s->rope_cos, s->rope_sin, m->stream, errstr,
                        errstr_size));

    size_t host_bytes = MB * V * sizeof(float) + V * sizeof(float) + V * sizeof(int32_t) +
                        4 * C * sizeof(int32_t) + C + 5 * MB * sizeof(int) + C * sizeof(int) +
                        MB * sizeof(uint64_t) + MB * SHE_SAMPLE_STOP_TAIL;
    s->host_block = malloc(host_bytes);
    if (!s->host_block)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size,
                        "cannot allocate the sampler's %.1f MiB of host memory",
                        host_bytes / 1048576.0);
    /* widest alignment first */
    char *p = (char *)s->host_block;
    s->rng = (uint64_t *)p, p += MB * sizeof(uint64_t);
    s->logits = (float *)p, p += MB * V * sizeof(float);
    s->probs = (float *)p, p += V * sizeof(float);
    s->cand = (int32_t *)p, p += V * sizeof(int32_t);
    s->row_of = (int32_t *)p, p += C * sizeof(int32_t);
    s->pos_of = (int32_t *)p, p += C * sizeof(int32_t);
    s->tok_of = (int32_t *)p, p += C * sizeof(int32_t);
    s->sel = (int32_t *)p, p += C * sizeof(int32_t);
    s->len = (int *)p, p += MB * sizeof(int);
    s->leader = (int *)p, p += MB * sizeof(int);
    s->active = (int *)p, p += MB * sizeof(int);
    s->tail_len = (int *)p, p += MB * sizeof(int);
    s->logit_row = (int *)p, p += MB * sizeof(int);
    s->sel_row = (int *)p, p += C * sizeof(int);
    s->want = (uint8_t *)p, p += C;
    s->tail = p;
    return SHE_OK;
}

extern "C" she_err_t she_cuda_sampler_new(const she_cuda_model_t *cm, int max_batch, int max_seq,
                                          she_cuda_sampler_t **out, char *errstr,
                                          size_t errstr_size) {
    *out = NULL;
    const she_model_config_t *c = &cm->cfg;
    if (max_batch < 1 || max_seq < 2 || max_seq > c->max_position_embeddings)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "sampler sizes %d x %d: need batch >= 1 and 2 <= seq <= %d", max_batch,
                        max_seq, c->max_position_embeddings);
    she_cuda_sampler_t *s = (she_cuda_sampler_t *)calloc(1, sizeof(*s));
    SHE_CHECK_ALLOC(s);
    s->m = cm;
    s->max_batch = max_batch;
    s->max_seq = max_seq;
    /* sampler.c's prefill chunk: big enough for efficient GEMMs, never below one decode step. */
    s->chunk = max_batch > 512 ? max_batch : 512;
    s->layer_stride = (size_t)max_batch * max_seq * cm->kv_dim;
    she_err_t err = sampler_build(s, errstr, errstr_size);
    if (err != SHE_OK) {
        she_cuda_sampler_free(s);
        return err;
    }
    *out = s;
    return SHE_OK;
}

extern "C" void she_cuda_sampler_free(she_cuda_sampler_t *s) {
    if (!s)
        return;
    if (cudaSetDevice(s->m->device) == cudaSuccess) {
        cudaStreamSynchronize(s->m->stream);
        cudaFree(s->dev_block);
    }
    free(s->host_block);
    free(s);
}

/* sampler.c's packed_forward: runs the n packed tokens described by row_of/pos_of/tok_of
 * through every layer, writing their keys and values into the cache, and leaves the
 * final-normed hidden state of each row with want[i] in hsel (in packed order); *n_sel
 * receives how many, sel_row their cache rows. */
static she_err_t packed_forward(she_cuda_sampler_t *s, int n, int *n_sel, char *errstr,
                                size_t errstr_size) {
    const she_cuda_model_t *m = s->m;
    const she_model_config_t *c = &m->cfg;
    const she_model_weights_t *w = &m->w;
    int D = c->hidden_size, F = c->intermediate_size, Q = m->qkv_dim, KVD = m->kv_dim;
    int H = c->n_heads, KV = c->n_kv_heads, hd = m->head_dim;
    int group = H / KV;
    float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);
    cudaStream_t st = m->stream;
    const gemm_ctx_t *blas = &m->gemm;

    int ns = 0;
    for (int i = 0; i < n; i++)
        if (s->want[i]) {
            s->sel[ns] = i;
            s->sel_row[ns++] = s->row_of[i];
        }
    SHE_TRY_CUDA(cudaMemcpyAsync(s->d_row_of, s->row_of, (size_t)n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
    SHE_TRY_CUDA(cudaMemcpyAsync(s->d_pos_of, s->pos_of, (size_t)n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
    SHE_TRY_CUDA(cudaMemcpyAsync(s->d_tok_of, s->tok_of, (size_t)n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
    if (ns > 0)
        SHE_TRY_CUDA(cudaMemcpyAsync(s->d_sel, s->sel, (size_t)ns * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, st));

    SHE_LAUNCH(k_embed, blocks_for((size_t)n * D), EW_THREADS, st, s->x, w->embed, s->d_tok_of, n,
               D);
    for (int l = 0; l < c->n_layers; l++) {
        float *kc = s->kc + (size_t)l * s->layer_stride, *vc = s->vc + (size_t)l * s->layer_stride;
        SHE_LAUNCH(k_rmsnorm, (unsigned)n, ROW_THREADS, st, s->h, (float *)NULL, s->x,
                   w->ln1 + (size_t)l * D, D, eps);
        SHE_TRY(gemm(blas, 0, 1, n, Q, D, 1.0f, s->h, D, w->wqkv + (size_t)l * Q * D, D, 0.0f,
                     s->qkv, Q, errstr, errstr_size));
        SHE_LAUNCH(k_bias_rope, blocks_for((size_t)n * Q), EW_THREADS, st, s->qkv,
                   w->bqkv ? w->bqkv + (size_t)l * Q : (const float *)NULL, s->d_pos_of,
                   s->rope_cos, s->rope_sin, n, D, KVD, hd);
        SHE_LAUNCH(k_cache_store, blocks_for((size_t)n * KVD), EW_THREADS, st, kc, vc, s->qkv,
                   s->d_row_of, s->d_pos_of, n, D, KVD, s->max_seq);
        SHE_LAUNCH(k_cache_attention, (unsigned)(n * H), ROW_THREADS, st, s->att, s->scores,
                   s->qkv, kc, vc, s->d_row_of, s->d_pos_of, H, group, hd, D, KVD, s->max_seq,
                   scale);
        SHE_TRY(gemm(blas, 0, 1, n, D, D, 1.0f, s->att, D, w->wo + (size_t)l * D * D, D, 1.0f,
                     s->x, D, errstr, errstr_size));
        SHE_LAUNCH(k_rmsnorm, (unsigned)n, ROW_THREADS, st, s->h, (float *)NULL, s->x,
                   w->ln2 + (size_t)l * D, D, eps);
        SHE_TRY(gemm(blas, 0, 1, n, 2 * F, D, 1.0f, s->h, D, w->wgu + (size_t)l * 2 * F * D, D,
                     0.0f, s->gu, 2 * F, errstr, errstr_size));
        SHE_LAUNCH(k_swiglu, blocks_for((size_t)n * F), EW_THREADS, st, s->act, s->gu, n, F);
        SHE_TRY(gemm(blas, 0, 1, n, D, F, 1.0f, s->act, F, w->wd + (size_t)l * D * F, F, 1.0f,
                     s->x, D, errstr, errstr_size));
    }
    if (ns > 0) {
        SHE_LAUNCH(k_gather_rows, blocks_for((size_t)ns * D), EW_THREADS, st, s->h, s->x, s->d_sel,
                   ns, D);
        SHE_LAUNCH(k_rmsnorm, (unsigned)ns, ROW_THREADS, st, s->hsel, (float *)NULL, s->h, w->lnf,
                   D, eps);
    }
    *n_sel = ns;
    return SHE_OK;
}

/* sampler.c's logits_for_selected: the logits of the n_sel rows packed_forward selected, in
 * one GEMM, copied to the host's packed slots from `first` on; records each row's slot. */
static she_err_t logits_for_selected(she_cuda_sampler_t *s, int n_sel, int first, char *errstr,
                                     size_t errstr_size) {
    const she_cuda_model_t *m = s->m;
    int D = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (n_sel == 0)
        return SHE_OK;
    SHE_TRY(gemm(&m->gemm, 0, 1, n_sel, V, D, 1.0f, s->hsel, D, m->w.lm_head, D, 0.0f, s->d_logits,
                 V, errstr, errstr_size));
    SHE_TRY_CUDA(cudaMemcpyAsync(s->logits + (size_t)first * V, s->d_logits,
                                 (size_t)n_sel * V * sizeof(float), cudaMemcpyDeviceToHost,
                                 m->stream));
    SHE_TRY_CUDA(cudaStreamSynchronize(m->stream));
    for (int k = 0; k < n_sel; k++)
        s->logit_row[s->sel_row[k]] = first + k;
    return SHE_OK;
}

/* packed_forward then logits_for_selected; *n_logits grows by the rows selected. */
static she_err_t run_packed(she_cuda_sampler_t *s, int n, int *n_logits, char *errstr,
                            size_t errstr_size) {
    int n_sel = 0;
    SHE_TRY(packed_forward(s, n, &n_sel, errstr, errstr_size));
    SHE_TRY(logits_for_selected(s, n_sel, *n_logits, errstr, errstr_size));
    *n_logits += n_sel;
    return SHE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* generation: she_sampler_generate with the device forward                                   */

extern "C" she_err_t she_cuda_sampler_generate(she_cuda_sampler_t *s,
                                               const int32_t *const *prompts,
                                               const int *prompt_lens, int B,
                                               const she_sample_params_t *p, uint64_t seed,
                                               int32_t *out_tokens, float *out_logp,
                                               float *out_logp_trunc, int *out_lens,
                                               she_finish_t *finish, char *errstr,
                                               size_t errstr_size) {
    const she_model_config_t *c = &s->m->cfg;
    int V = c->vocab_size, M = p->max_new_tokens;
    if (B < 1 || B > s->max_batch)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "batch %d outside [1, %d]", B,
                        s->max_batch);
    if (M < 1 || !(p->temperature >= 0.0f) || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "bad sampling parameters (max_new_tokens %d, temperature %g, top_k %d, "
                        "top_p %g)", M, (double)p->temperature, p->top_k, (double)p->top_p);
    if (p->n_stop_strings > 0 && !p->tok)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "stop strings need a tokenizer");
    for (int b = 0; b < B; b++) {
        if (prompt_lens[b] < 1 || prompt_lens[b] + M > s->max_seq)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "row %d: prompt %d + %d new tokens outside [1, %d]", b,
                            prompt_lens[b], M, s->max_seq);
        for (int t = 0; t < prompt_lens[b]; t++)
            if (prompts[b][t] < 0 || prompts[b][t] >= V)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "row %d: token %d at %d outside the vocabulary (%d)", b,
                                prompts[b][t], t, V);
    }
    SHE_TRY_CUDA(cudaSetDevice(s->m->device));
    for (int b = 0; b < B; b++) {
        s->leader[b] = b;
        for (int a = 0; a < b; a++)
            if (prompts[a] == prompts[b] && prompt_lens[a] == prompt_lens[b]) {
                s->leader[b] = s->leader[a];
                break;
            }
        s->rng[b] = she_sample_row_seed(seed, b);
        s->len[b] = 0;
        s->tail_len[b] = 0;
        s->logit_row[b] = -1;
        out_lens[b] = 0;
        if (finish)
            finish[b] = SHE_FINISH_LENGTH;
    }

    /* Prefill the leaders in packed chunks; logits for each prompt's last token. */
    int n = 0, n_logits = 0;
    for (int b = 0; b < B; b++) {
        if (s->leader[b] != b)
            continue;
        for (int t = 0; t < prompt_lens[b]; t++) {
            s->row_of[n] = b;
            s->pos_of[n] = t;
            s->tok_of[n] = prompts[b][t];
            s->want[n] = t == prompt_lens[b] - 1;
            n++;
            if (n == s->chunk) {
                SHE_TRY(run_packed(s, n, &n_logits, errstr, errstr_size));
                n = 0;
            }
        }
        s->len[b] = prompt_lens[b];
    }
    if (n > 0)
        SHE_TRY(run_packed(s, n, &n_logits, errstr, errstr_size));
    /* Followers share their leader's prefill: copy its cache rows. */
    size_t kvd = (size_t)s->m->kv_dim;
    for (int b = 0; b < B; b++) {
        int ld = s->leader[b];
        if (ld == b)
            continue;
        size_t bytes = (size_t)prompt_lens[b] * kvd * sizeof(float);
        for (int l = 0; l < c->n_layers; l++) {
            size_t off_b = (size_t)l * s->layer_stride + (size_t)b * s->max_seq * kvd;
            size_t off_l = (size_t)l * s->layer_stride + (size_t)ld * s->max_seq * kvd;
            SHE_TRY_CUDA(cudaMemcpyAsync(s->kc + off_b, s->kc + off_l, bytes,
                                         cudaMemcpyDeviceToDevice, s->m->stream));
            SHE_TRY_CUDA(cudaMemcpyAsync(s->vc + off_b, s->vc + off_l, bytes,
                                         cudaMemcpyDeviceToDevice, s->m->stream));
        }
        s->len[b] = prompt_lens[b];
    }

    /* Decode: sample from each row's logits, then run all active rows one position on. */
    int n_active = B;
    for (int b = 0; b < B; b++)
        s->active[b] = b;
    for (int step = 0; step < M && n_active > 0; step++) {
        for (int k = 0; k < n_active; k++) {
            int b = s->active[k];
            const float *z = s->logits + (size_t)s->logit_row[s->logit_row[b] >= 0 ? b : s->leader[b]] * V;
            float lp, lpt;
            int32_t tok = she_sample_draw(z, V, p, &s->rng[b], s->probs, s->cand, &lp, &lpt);
            size_t at = (size_t)b * M + step;
            out_tokens[at] = tok;
            out_logp[at] = lp;
            if (out_logp_trunc)
                out_logp_trunc[at] = lpt;
            out_lens[b] = step + 1;
        }
        int kept = 0;
        for (int k = 0; k < n_active; k++) {
            int b = s->active[k];
            int32_t tok = out_tokens[(size_t)b * M + step];
            she_finish_t why;
            if (she_sample_row_done(p, s->tail + (size_t)b * SHE_SAMPLE_STOP_TAIL,
                                    &s->tail_len[b], tok, step == M - 1, &why)) {
                if (finish)
                    finish[b] = why;
                continue;
            }
            s->active[kept++] = b;
        }
        for (int b = 0; b < B; b++) /* followers used their leader's logits only at step 0 */
            s->logit_row[b] = -1;
        n_active = kept;
        if (n_active == 0)
            break;
        for (int k = 0; k < n_active; k++) {
            int b = s->active[k];
            s->row_of[k] = b;
            s->pos_of[k] = s->len[b];
            s->tok_of[k] = out_tokens[(size_t)b * M + step];
            s->want[k] = 1;
            s->len[b]++;
        }
        int n_new = 0;
        SHE_TRY(run_packed(s, n_active, &n_new, errstr, errstr_size));
    }
    return SHE_OK;
}
