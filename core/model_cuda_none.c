/* model_cuda_none.c -- model_cuda.h for builds without CUDA (SHE_CUDA=OFF or no nvcc found):
 * every device function fails with SHE_ERR_UNSUPPORTED "built without CUDA".  With CUDA,
 * model_cuda.cu defines them instead; the guard keeps one source glob for all of core.
 * she_device_parse and the math-mode names are plain C that both builds need, so they live
 * here, outside the guard. */
#include "model_cuda.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

she_err_t she_device_parse(const char *spec, she_device_kind_t *kind, int *index, char *errstr,
                           size_t errstr_size) {
    if (spec && strcmp(spec, "cpu") == 0) {
        *kind = SHE_DEVICE_CPU;
        *index = 0;
        return SHE_OK;
    }
    if (spec && strcmp(spec, "cuda") == 0) {
        *kind = SHE_DEVICE_CUDA;
        *index = 0;
        return SHE_OK;
    }
    if (spec && strncmp(spec, "cuda:", 5) == 0 && spec[5] >= '0' && spec[5] <= '9') {
        char *end = NULL;
        errno = 0;
        long n = strtol(spec + 5, &end, 10);
        if (errno == 0 && *end == '\0' && n < 1024) {
            *kind = SHE_DEVICE_CUDA;
            *index = (int)n;
            return SHE_OK;
        }
    }
    return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                    "device \"%s\": expected cpu, cuda or cuda:N (0 <= N < 1024)",
                    spec ? spec : "(null)");
}

static const char *const math_names[] = {"fp32", "tf32", "bf16"};

she_err_t she_math_parse(const char *s, she_math_t *out, char *errstr, size_t errstr_size) {
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, math_names[i]) == 0) {
            *out = (she_math_t)i;
            return SHE_OK;
        }
    return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                    "math \"%s\": expected fp32, tf32 or bf16", s ? s : "(null)");
}

const char *she_math_name(she_math_t math) {
    return (unsigned)math < 3 ? math_names[math] : "?";
}

#ifndef SHE_HAVE_CUDA

#define SHE_NO_CUDA(errstr, errstr_size) \
    she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size, "built without CUDA")

she_err_t she_cuda_model_new(const she_model_t *cpu, int device, int max_batch, int max_seq,
                             she_cuda_model_t **out, char *errstr, size_t errstr_size) {
    (void)cpu, (void)device, (void)max_batch, (void)max_seq;
    *out = NULL;
    return SHE_NO_CUDA(errstr, errstr_size);
}

/* Nothing can have been created, so there is nothing to free. */
void she_cuda_model_free(she_cuda_model_t *cm) { (void)cm; }

she_err_t she_cuda_model_set_math(she_cuda_model_t *cm, she_math_t math, char *errstr,
                                  size_t errstr_size) {
    (void)cm, (void)math;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_upload(she_cuda_model_t *cm, const she_model_t *cpu,
                                const she_adamw_t *opt, char *errstr, size_t errstr_size) {
    (void)cm, (void)cpu, (void)opt;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_download(const she_cuda_model_t *cm, she_model_t *cpu,
                                  she_adamw_t *opt, char *errstr, size_t errstr_size) {
    (void)cm, (void)cpu, (void)opt;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_download_grads(const she_cuda_model_t *cm, she_model_t *cpu,
                                        char *errstr, size_t errstr_size) {
    (void)cm, (void)cpu;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_download_acts(const she_cuda_model_t *cm, she_model_t *cpu,
                                       char *errstr, size_t errstr_size) {
    (void)cm, (void)cpu;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_forward(she_cuda_model_t *cm, const int32_t *tokens,
                                 const uint8_t *mask, const int32_t *targets, int B, int T,
                                 float temperature, float *logp, float *entropy, char *errstr,
                                 size_t errstr_size) {
    (void)cm, (void)tokens, (void)mask, (void)targets, (void)B, (void)T, (void)temperature;
    (void)logp, (void)entropy;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_backward(she_cuda_model_t *cm, const float *dlogp,
                                  const float *dentropy, char *errstr, size_t errstr_size) {
    (void)cm, (void)dlogp, (void)dentropy;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_zero_grad(she_cuda_model_t *cm, char *errstr, size_t errstr_size) {
    (void)cm;
    return SHE_NO_CUDA(errstr, errstr_size);
}

she_err_t she_cuda_model_adamw_step(she_cuda_model_t *cm, const she_adamw_config_t *hp,
                                    float lr, float grad_scale, float max_grad_norm,
                                    float *grad_norm, char *errstr, size_t errstr_size) {
    (void)cm, (void)hp, (void)lr, (void)grad_scale, (void)max_grad_norm, (void)grad_norm;
    return SHE_NO_CUDA(errstr, errstr_size);
}

float *she_cuda_model_grads_device(she_cuda_model_t *cm, size_t *n_params) {
    (void)cm;
    if (n_params)
        *n_params = 0;
    return NULL;
}

void *she_cuda_model_stream(she_cuda_model_t *cm) {
    (void)cm;
    return NULL;
}

she_err_t she_cuda_sampler_new(const she_cuda_model_t *cm, int max_batch, int max_seq,
                               she_cuda_sampler_t **out, char *errstr, size_t errstr_size) {
    (void)cm, (void)max_batch, (void)max_seq;
    *out = NULL;
    return SHE_NO_CUDA(errstr, errstr_size);
}

void she_cuda_sampler_free(she_cuda_sampler_t *s) { (void)s; }

she_err_t she_cuda_sampler_generate(she_cuda_sampler_t *s, const int32_t *const *prompts,
                                    const int *prompt_lens, int B, const she_sample_params_t *p,
                                    uint64_t seed, int32_t *out_tokens, float *out_logp,
                                    float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                                    char *errstr, size_t errstr_size) {
    (void)s, (void)prompts, (void)prompt_lens, (void)B, (void)p, (void)seed, (void)out_tokens;
    (void)out_logp, (void)out_logp_trunc, (void)out_lens, (void)finish;
    return SHE_NO_CUDA(errstr, errstr_size);
}

#endif
