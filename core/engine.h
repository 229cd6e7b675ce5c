/* engine.h -- the model on the device a command chose (`--device cpu | cuda[:N][/MATH]`): one
 * interface over the CPU engine (model.h, sampler.h) and its CUDA twin (model_cuda.h), so the
 * training and generation loops of every command are written once.
 *
 * An engine always holds a CPU model (borrowed from the caller) and, for training, the
 * caller's AdamW state (borrowed, NULL for an engine that only runs forwards and generates):
 *   - on the CPU they are what every call works on: each call is exactly the model.h /
 *     sampler.h / optim call it names, in the same order, so results are bit-identical to
 *     calling the CPU engine directly (the exact-resume and golden tests rely on it);
 *   - on a CUDA device the device holds the working copy of the parameters, the gradients and
 *     AdamW's moments and step, and the CPU model is the host copy: checkpoints are loaded into
 *     it and written from it.  The copies meet only at two explicit sync points:
 *       she_engine_upload    host -> device: after the host weights (or AdamW's state) were
 *                            loaded or changed, e.g. a hot-reloaded policy;
 *       she_engine_download  device -> host: before a checkpoint is written or the host
 *                            weights are read.
 *     Both are no-ops on the CPU.  she_engine_new uploads once, so a new engine starts from the
 *     host's current weights and AdamW state.
 * Device results agree with the CPU to float rounding, not bit for bit (model_cuda.h).
 *
 * Errors: device selection fails as a usage error (SHE_ERR_CONFIG for a malformed device
 * string, SHE_ERR_NOT_FOUND for a device this machine or build does not have: exit status 2
 * in every command); device failures later are SHE_ERR_CUDA (model_cuda.h: after one the
 * engine's device state is undefined, free it).
 *
 * A training loop, on any device:
 *     she_device_select(conf "<cmd>.device", &dev)       first thing: a bad device is exit 2
 *     load or init cpu (and opt); she_engine_new(cpu, opt, &dev, &e)
 *     per step: she_engine_zero_grad; per micro-batch she_engine_forward + she_engine_backward;
 *               [all-reduce, below]; she_engine_adamw_step
 *     before a checkpoint: she_engine_download, then write cpu and opt as usual
 *
 * Data parallelism (core/dist.h): she_engine_grads() is the gradient block to all-reduce
 * between backward and she_engine_adamw_step -- host memory on the CPU (she_dist_allreduce),
 * device memory on CUDA (she_dist_allreduce_device on she_engine_stream()).
 *
 * Not here: the `<cmd>.device` keys (each command declares its own), collectives, losses. */
#ifndef SHE_ENGINE_H
#define SHE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "model_cuda.h"
#include "optim.h"
#include "sampler.h"

/* ---- device selection ---- */

typedef struct she_device {
    she_device_kind_t kind;
    int index;       /* CUDA device ordinal; 0 for the CPU */
    she_math_t math; /* of the GEMMs on a device (model_cuda.h); always fp32 on the CPU */
} she_device_t;

#define SHE_DEVICE_NAME_MAX 24 /* "cuda:1023/bf16" and the NUL fit */

/* Parses spec ("cpu", "cuda", "cuda:N", each optionally followed by "/fp32", "/tf32" or "/bf16",
 * the math mode of its matrix products; NULL or "" mean "cpu") and, for CUDA, checks that
 * device N exists here.  SHE_ERR_CONFIG for a malformed spec or a math mode other than fp32 on
 * the CPU (whose OpenBLAS products are always FP32), SHE_ERR_NOT_FOUND when the build has no CUDA
 * or the machine no device N; the messages quote spec.  Cheap: commands call it first thing,
 * so a bad --device fails before any data is read. */
she_err_t she_device_select(const char *spec, she_device_t *dev, char *errstr,
                            size_t errstr_size);
/* "cpu", "cuda:N" or, with a math mode other than fp32, "cuda:N/MATH" into out
 * (SHE_DEVICE_NAME_MAX bytes). */
void she_device_name(const she_device_t *dev, char *out, size_t out_size);

/* ---- the engine ---- */

typedef struct she_engine_s she_engine_t;

/* An engine for cpu (and opt, may be NULL) on dev, reserved for cpu's max_batch x max_seq.  On
 * CUDA it creates the device model from cpu's weights in dev's math mode and uploads opt.  cpu and
 * opt are borrowed and must outlive the engine; cpu is only read, except by she_engine_download
 * and, on the CPU, by the training calls.  Returns SHE_ERR_INVALID when opt does not match cpu's
 * size, the device errors of she_cuda_model_new otherwise (*out = NULL then).  Free with
 * she_engine_free (NULL allowed). */
she_err_t she_engine_new(she_model_t *cpu, she_adamw_t *opt, const she_device_t *dev,
                         she_engine_t **out, char *errstr, size_t errstr_size);
void she_engine_free(she_engine_t *e);

she_model_t *she_engine_model(const she_engine_t *e); /* the host copy */
const she_device_t *she_engine_device(const she_engine_t *e);
int she_engine_on_cuda(const she_engine_t *e);

/* Changes the math mode of the GEMMs on a device (model_cuda.h); on the CPU only fp32 is
 * accepted (SHE_ERR_INVALID otherwise). */
she_err_t she_engine_set_math(she_engine_t *e, she_math_t math, char *errstr,
                              size_t errstr_size);

/* The sync points (see above).  upload: the host weights, and AdamW's state when the engine
 * has one.  download: the device weights, and AdamW's moments and step, into the host copies. */
she_err_t she_engine_upload(she_engine_t *e, char *errstr, size_t errstr_size);
she_err_t she_engine_download(she_engine_t *e, char *errstr, size_t errstr_size);

/* ---- training: she_model_forward / _backward / _zero_grad / _adamw_step ---- */

/* she_model_forward on the engine's device: same arguments, checks and outputs (logp and
 * entropy are host arrays, filled before it returns). */
she_err_t she_engine_forward(she_engine_t *e, const int32_t *tokens, const uint8_t *mask,
                             const int32_t *targets, int B, int T, float temperature, float *logp,
                             float *entropy, char *errstr, size_t errstr_size);
/* she_model_backward: ADDS the gradients of the last forward (which had targets).  The host
 * arrays may be reused as soon as it returns. */
she_err_t she_engine_backward(she_engine_t *e, const float *dlogp, const float *dentropy,
                              char *errstr, size_t errstr_size);
she_err_t she_engine_zero_grad(she_engine_t *e, char *errstr, size_t errstr_size);
/* she_model_adamw_step with the engine's AdamW state (the engine must have one: asserts):
 * gradients times grad_scale, global-norm clipping to max_grad_norm (<= 0: none), AdamW at lr;
 * *grad_norm (may be NULL) gets the norm before clipping. */
she_err_t she_engine_adamw_step(she_engine_t *e, const she_adamw_config_t *hp, float lr,
                                float grad_scale, float max_grad_norm, float *grad_norm,
                                char *errstr, size_t errstr_size);

/* The gradient block (n_params floats, model.h's layout) for an in-place all-reduce: host
 * memory on the CPU, device memory on CUDA.  *on_device (may be NULL) says which. */
float *she_engine_grads(she_engine_t *e, size_t *n_params, int *on_device);
/* The cudaStream_t the engine's device work is queued on (NULL on the CPU). */
void *she_engine_stream(she_engine_t *e);
/* Waits until the device work queued so far has finished (backward and the AdamW update
 * return once queued): for timings.  Nothing to do on the CPU.  SHE_ERR_CUDA on a failure. */
she_err_t she_engine_sync(she_engine_t *e, char *errstr, size_t errstr_size);

/* ---- generation: sampler.h on the engine's device ---- */

typedef struct she_engine_sampler_s she_engine_sampler_t;

/* A KV-cache sampler for max_batch rows of at most max_seq positions over the engine's current
 * weights (the device copy on CUDA: after changing the host weights, she_engine_upload).  The
 * engine must outlive it.  Errors as she_sampler_new / she_cuda_sampler_new; *out NULL then.
 * Free with she_engine_sampler_free (NULL allowed). */
she_err_t she_engine_sampler_new(she_engine_t *e, int max_batch, int max_seq,
                                 she_engine_sampler_t **out, char *errstr, size_t errstr_size);
void she_engine_sampler_free(she_engine_sampler_t *s);
/* she_sampler_generate on the engine's device: same arguments, checks and outputs; the CUDA
 * sampler draws on the host with the same generators, so given equal logits it picks the same
 * tokens. */
she_err_t she_engine_generate(she_engine_sampler_t *s, const int32_t *const *prompts,
                              const int *prompt_lens, int B, const she_sample_params_t *p,
                              uint64_t seed, int32_t *out_tokens, float *out_logp,
                              float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                              char *errstr, size_t errstr_size);

#endif
