/* model_cuda.h -- the engine (model.h) and its KV-cache sampler (sampler.h) on one CUDA device.
 *
 * The CPU engine is the reference: every function here computes what its CPU twin computes, in
 * FP32, op for op (embedding, RMSNorm, fused q|k|v GEMM + bias, RoPE, causal GQA attention with
 * the padding mask, o_proj, SwiGLU, LM head, log-softmax at a temperature with the entropy, the
 * whole backward from dL/dlogp and dL/dentropy, AdamW with the same decay split and global-norm
 * clipping).  Matrix products go through cuBLAS (row-major as in model.c, mapped onto cuBLAS's
 * column-major calls; attention as strided-batched GEMMs over the batch rows, one head at a
 * time); elementwise ops and row reductions are plain kernels, each the twin of a model.c loop.
 * Results agree with the CPU to float rounding (different summation orders, expf instead of the
 * CPU's polynomial), not bit for bit; a given GPU and build repeats its own results exactly
 * (no atomics anywhere, every reduction has a fixed order).
 *
 * Memory, as in model.h: parameters, gradients and AdamW's m and v each live in ONE device
 * block with the CPU model's layout and offsets (so a block moves with one cudaMemcpy, and the
 * gradient all-reduce across ranks is one ncclAllReduce over she_cuda_model_grads_device()).
 * Activations, attention score tiles (2 x max_batch x max_seq^2 floats) and the cuBLAS
 * workspace are reserved by she_cuda_model_new; a step allocates nothing on the device.
 *
 * Streams: each model object owns one cudaStream_t and one cuBLAS handle bound to it; all its
 * work (and its samplers') is queued there.  Calls that return results to host arrays
 * (forward's logp/entropy, the AdamW gradient norm, downloads) wait for the stream before
 * returning; the others (backward, zero_grad, the AdamW update itself, upload) return once the
 * work is queued and the host inputs have been copied, so the caller may reuse its arrays at
 * once.  Every call first makes the model's device current on the calling thread.
 *
 * Errors: every CUDA and cuBLAS call and every kernel launch is checked; a failure returns
 * SHE_ERR_CUDA with "file:line: call: reason" in errstr.  After such a failure the device
 * state of the model is undefined (free it).  Built without CUDA, every function returns
 * SHE_ERR_UNSUPPORTED "built without CUDA" (she_device_parse still works).
 *
 * Not here: NCCL/MPI collectives (the learner does them on the grads block and the stream),
 * BF16 storage, fused attention kernels; sampling's top-k/top-p draw runs on the host after
 * the logits of the rows being sampled are copied back (see she_cuda_sampler_generate). */
#ifndef SHE_MODEL_CUDA_H
#define SHE_MODEL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "optim.h"
#include "sampler.h"

/* ---- device selection (`--device cpu | cuda | cuda:N`) ---- */

typedef enum she_device_kind {
    SHE_DEVICE_CPU = 0,
    SHE_DEVICE_CUDA,
} she_device_kind_t;

/* Parses "cpu", "cuda" (= "cuda:0") or "cuda:N" (N a decimal index, 0 <= N < 1024) into kind
 * and index (0 for cpu).  Only the spelling is checked: whether device N exists is for
 * she_cuda_model_new to find out.  SHE_ERR_INVALID, quoting spec, for anything else. */
she_err_t she_device_parse(const char *spec, she_device_kind_t *kind, int *index, char *errstr,
                           size_t errstr_size);

/* ---- math mode of the matrix products (`cuda:N/tf32`, see she_cuda_model_set_math) ---- */

typedef enum she_math {
    SHE_MATH_FP32 = 0,
    SHE_MATH_TF32,
    SHE_MATH_BF16,
} she_math_t;

/* "fp32", "tf32" or "bf16" into *out; SHE_ERR_INVALID quoting s for anything else. */
she_err_t she_math_parse(const char *s, she_math_t *out, char *errstr, size_t errstr_size);
const char *she_math_name(she_math_t math);

/* ---- the model on a device ---- */

typedef struct she_cuda_model_s she_cuda_model_t;

/* Creates the model of `cpu` (its configuration and current weights, copied) on CUDA device
 * `device` for batches of at most max_batch x max_seq (max_seq <= max_position_embeddings; the
 * sizes need not match cpu's).  Gradients and AdamW moments start at zero, the step count at
 * 0, math fp32.  Returns SHE_ERR_CONFIG for bad sizes, SHE_ERR_CUDA when the device cannot be
 * used or the memory cannot be had (*out = NULL then, nothing is left allocated).  The CPU
 * model is not referenced afterwards.  Free with she_cuda_model_free. */
she_err_t she_cuda_model_new(const she_model_t *cpu, int device, int max_batch, int max_seq,
                             she_cuda_model_t **out, char *errstr, size_t errstr_size);
void she_cuda_model_free(she_cuda_model_t *cm);

/* How cuBLAS multiplies the FP32 matrices (storage stays FP32 everywhere; only the products
 * inside the GEMMs change):
 *   fp32  full FP32 (CUBLAS_COMPUTE_32F), the default and what the parity tests compare;
 *   tf32  TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32): inputs rounded to 10 mantissa bits,
 *         FP32 accumulation, several times faster on Ampere and later;
 *   bf16  BF16 tensor cores (CUBLAS_COMPUTE_32F_FAST_16BF): inputs rounded to 7 mantissa bits,
 *         FP32 accumulation; faster still, and the coarsest. */
she_err_t she_cuda_model_set_math(she_cuda_model_t *cm, she_math_t math, char *errstr,
                                  size_t errstr_size);

/* Parameters (and, when opt != NULL, AdamW's m, v and step) from host to device: cpu must have
 * the same configuration (same block size and decay split), opt->n == that size.
 * SHE_ERR_INVALID (nothing copied) when they differ. */
she_err_t she_cuda_model_upload(she_cuda_model_t *cm, const she_model_t *cpu,
                                const she_adamw_t *opt, char *errstr, size_t errstr_size);
/* The reverse, for checkpoints: device parameters into cpu->params (and m, v, step into opt
 * when non-NULL); then she_model_save(cpu, opt, ...) writes them. */
she_err_t she_cuda_model_download(const she_cuda_model_t *cm, she_model_t *cpu,
                                  she_adamw_t *opt, char *errstr, size_t errstr_size);
/* Device gradients into cpu->grads (same configuration required). */
she_err_t she_cuda_model_download_grads(const she_cuda_model_t *cm, she_model_t *cpu,
                                        char *errstr, size_t errstr_size);
/* For parity tests and debugging: the activations of the last forward (and backward scratch)
 * into cpu->a, every array of she_model_acts_t except the score tiles; cpu must have the same
 * configuration and the same max_batch and max_seq (the arrays have the same layout then). */
she_err_t she_cuda_model_download_acts(const she_cuda_model_t *cm, she_model_t *cpu,
                                       char *errstr, size_t errstr_size);

/* she_model_forward on the device, same arguments, checks and results.  tokens, mask and
 * targets are copied to the device; logp and entropy (when non-NULL, and only when targets
 * are given, as on the CPU) are copied back before returning.  SHE_ERR_INVALID as on the CPU,
 * SHE_ERR_CUDA on a device failure. */
she_err_t she_cuda_model_forward(she_cuda_model_t *cm, const int32_t *tokens,
                                 const uint8_t *mask, const int32_t *targets, int B, int T,
                                 float temperature, float *logp, float *entropy, char *errstr,
                                 size_t errstr_size);
/* she_model_backward on the device: dL/dlogp [B, T] and optional dL/dentropy (host arrays,
 * copied) of the last forward, ADDED into the device gradient block.  Unlike the CPU version
 * it returns an error, since device calls can fail; calling it without a forward with targets
 * before it is a bug (asserts). */
she_err_t she_cuda_model_backward(she_cuda_model_t *cm, const float *dlogp,
                                  const float *dentropy, char *errstr, size_t errstr_size);
she_err_t she_cuda_model_zero_grad(she_cuda_model_t *cm, char *errstr, size_t errstr_size);

/* she_model_adamw_step on the device with the model's own m, v and step: gradient norm (in
 * double, fixed chunk order as optim.c), clipping to max_grad_norm after grad_scale, AdamW with
 * weight decay on the matrices only.  *grad_norm (may be NULL) receives the norm before
 * clipping (after grad_scale); the norm is read back to pick the clip factor, so the call
 * waits for the gradients. */
she_err_t she_cuda_model_adamw_step(she_cuda_model_t *cm, const she_adamw_config_t *hp,
                                    float lr, float grad_scale, float max_grad_norm,
                                    float *grad_norm, char *errstr, size_t errstr_size);

/* The device gradient block (n_params floats, the CPU layout) and its size, for an in-place
 * all-reduce; queue it on she_cuda_model_stream() so it runs between backward and AdamW. */
float *she_cuda_model_grads_device(she_cuda_model_t *cm, size_t *n_params);
/* The model's cudaStream_t (as void *, so that C callers need no CUDA headers). */
void *she_cuda_model_stream(she_cuda_model_t *cm);

/* ---- KV-cache sampling on the device (sampler.h's twin) ---- */

typedef struct she_cuda_sampler_s she_cuda_sampler_t;

/* Reserves the device KV cache and scratch for max_batch rows of at most max_seq positions
 * (as she_sampler_new), plus (chunk x n_heads x max_seq) floats of attention scores, chunk =
 * max(max_batch, 512) as on the CPU.  The model must outlive the sampler; its current device
 * weights are read at each call and its stream and cuBLAS handle are used.  SHE_ERR_INVALID for
 * bad sizes, SHE_ERR_CUDA for device failures (*out = NULL).  Free with she_cuda_sampler_free. */
she_err_t she_cuda_sampler_new(const she_cuda_model_t *cm, int max_batch, int max_seq,
                               she_cuda_sampler_t **out, char *errstr, size_t errstr_size);
void she_cuda_sampler_free(she_cuda_sampler_t *s);

/* she_sampler_generate on the device, same arguments, checks and outputs.  Prefill and decode
 * (embedding, every layer, the KV cache, the final norm and the LM head) run on the device;
 * the logits of the rows being sampled (n_rows x V floats per step) are then copied to the
 * host, where the draw runs as in sampler.c, statement for statement (a copy of its static
 * helpers: the per-row splitmix64 generators seeded by (seed, row), the top-k quickselect, the
 * top-p sort, the stop handling), so given equal logits the two samplers pick equal tokens. */
she_err_t she_cuda_sampler_generate(she_cuda_sampler_t *s, const int32_t *const *prompts,
                                    const int *prompt_lens, int B, const she_sample_params_t *p,
                                    uint64_t seed, int32_t *out_tokens, float *out_logp,
                                    float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                                    char *errstr, size_t errstr_size);

#endif
