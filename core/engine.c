/* engine.c -- one interface over the CPU engine and its CUDA twin (see engine.h).  Every
 * function is a switch between the model.h / sampler.h call and the model_cuda.h call; the CPU
 * branch adds nothing to what the caller would have done, so the CPU path stays bit-identical. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_device.h"
#ifdef SHE_HAVE_CUDA
#include "cuda_check.h"
#endif

struct she_engine_s {
    she_model_t *cpu;      /* host copy (borrowed) */
    she_adamw_t *opt;      /* host AdamW state (borrowed, may be NULL) */
    she_device_t dev;
    she_cuda_model_t *cm;  /* the device copy; NULL on the CPU */
};

struct she_engine_sampler_s {
    she_sampler_t *cpu;
    she_cuda_sampler_t *cuda;
};

she_err_t she_device_select(const char *spec, she_device_t *dev, char *errstr,
                            size_t errstr_size) {
    if (!spec || !spec[0])
        spec = "cpu";
    char base[64];
    she_math_t math = SHE_MATH_FP32;
    const char *slash = strchr(spec, '/');
    snprintf(base, sizeof(base), "%.*s", slash ? (int)(slash - spec) : (int)strlen(spec), spec);
    if (slash && she_math_parse(slash + 1, &math, errstr, errstr_size) != SHE_OK)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "device \"%s\": math mode \"%s\" is not fp32, tf32 or bf16", spec,
                        slash + 1);
    she_device_kind_t kind;
    int index;
    if (strlen(spec) >= sizeof(base) ||
        she_device_parse(base, &kind, &index, errstr, errstr_size) != SHE_OK)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "device \"%s\": expected cpu, cuda or cuda:N (0 <= N < 1024), the CUDA "
                        "forms optionally /fp32, /tf32 or /bf16", spec);
    if (kind == SHE_DEVICE_CPU && math != SHE_MATH_FP32)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "device \"%s\": %s math needs a CUDA device (the CPU multiplies in FP32)",
                        spec, she_math_name(math));
    if (kind == SHE_DEVICE_CUDA) {
        char why[SHE_ERRSTR_SIZE] = "";
        int n = she_cuda_device_count(why, sizeof(why));
        if (n == 0)
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                            "device \"%s\": no CUDA device here (%s)", spec, why);
        if (index >= n)
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                            "device \"%s\": this machine has %d CUDA device(s), cuda:0..cuda:%d",
                            spec, n, n - 1);
    }
    dev->kind = kind;
    dev->index = index;
    dev->math = math;
    return SHE_OK;
}

void she_device_name(const she_device_t *dev, char *out, size_t out_size) {
    if (dev->kind == SHE_DEVICE_CUDA && dev->math != SHE_MATH_FP32)
        snprintf(out, out_size, "cuda:%d/%s", dev->index, she_math_name(dev->math));
    else if (dev->kind == SHE_DEVICE_CUDA)
        snprintf(out, out_size, "cuda:%d", dev->index);
    else
        snprintf(out, out_size, "cpu");
}

she_err_t she_engine_new(she_model_t *cpu, she_adamw_t *opt, const she_device_t *dev,
                         she_engine_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (opt && opt->n != cpu->n_params)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "engine: AdamW state of %zu parameters for a model of %zu", opt->n,
                        cpu->n_params);
    she_engine_t *e = calloc(1, sizeof(*e));
    SHE_CHECK_ALLOC(e);
    e->cpu = cpu;
    e->opt = opt;
    e->dev = *dev;
    if (dev->kind == SHE_DEVICE_CUDA) {
        she_err_t err = she_cuda_model_new(cpu, dev->index, cpu->max_batch, cpu->max_seq, &e->cm,
                                           errstr, errstr_size);
        if (err == SHE_OK)
            err = she_cuda_model_set_math(e->cm, dev->math, errstr, errstr_size);
        if (err == SHE_OK && opt) /* the weights came with the model; the moments come now */
            err = she_cuda_model_upload(e->cm, cpu, opt, errstr, errstr_size);
        if (err != SHE_OK) {
            she_engine_free(e);
            return err;
        }
    }
    *out = e;
    return SHE_OK;
}

void she_engine_free(she_engine_t *e) {
    if (!e)
        return;
    she_cuda_model_free(e->cm);
    free(e);
}

she_model_t *she_engine_model(const she_engine_t *e) { return e->cpu; }
const she_device_t *she_engine_device(const she_engine_t *e) { return &e->dev; }
int she_engine_on_cuda(const she_engine_t *e) { return e->cm != NULL; }

she_err_t she_engine_set_math(she_engine_t *e, she_math_t math, char *errstr,
                              size_t errstr_size) {
    if (e->cm) {
        SHE_TRY(she_cuda_model_set_math(e->cm, math, errstr, errstr_size));
    } else if (math != SHE_MATH_FP32) {
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%s math needs a CUDA device (the CPU multiplies in FP32)",
                        she_math_name(math));
    }
    e->dev.math = math;
    return SHE_OK;
}

she_err_t she_engine_upload(she_engine_t *e, char *errstr, size_t errstr_size) {
    return e->cm ? she_cuda_model_upload(e->cm, e->cpu, e->opt, errstr, errstr_size) : SHE_OK;
}

she_err_t she_engine_download(she_engine_t *e, char *errstr, size_t errstr_size) {
    return e->cm ? she_cuda_model_download(e->cm, e->cpu, e->opt, errstr, errstr_size) : SHE_OK;
}

she_err_t she_engine_forward(she_engine_t *e, const int32_t *tokens, const uint8_t *mask,
                             const int32_t *targets, int B, int T, float temperature, float *logp,
                             float *entropy, char *errstr, size_t errstr_size) {
    if (e->cm)
        return she_cuda_model_forward(e->cm, tokens, mask, targets, B, T, temperature, logp,
                                      entropy, errstr, errstr_size);
    return she_model_forward(e->cpu, tokens, mask, targets, B, T, temperature, logp, entropy,
                             errstr, errstr_size);
}

she_err_t she_engine_backward(she_engine_t *e, const float *dlogp, const float *dentropy,
                              char *errstr, size_t errstr_size) {
    if (e->cm)
        return she_cuda_model_backward(e->cm, dlogp, dentropy, errstr, errstr_size);
    she_model_backward(e->cpu, dlogp, dentropy);
    return SHE_OK;
}

she_err_t she_engine_zero_grad(she_engine_t *e, char *errstr, size_t errstr_size) {
    if (e->cm)
        return she_cuda_model_zero_grad(e->cm, errstr, errstr_size);
    she_model_zero_grad(e->cpu);
    return SHE_OK;
}

she_err_t she_engine_adamw_step(she_engine_t *e, const she_adamw_config_t *hp, float lr,
                                float grad_scale, float max_grad_norm, float *grad_norm,
                                char *errstr, size_t errstr_size) {
    SHE_ASSERT(e->opt != NULL);
    if (e->cm)
        return she_cuda_model_adamw_step(e->cm, hp, lr, grad_scale, max_grad_norm, grad_norm,
                                         errstr, errstr_size);
    float gn = she_model_adamw_step(e->cpu, e->opt, hp, lr, grad_scale, max_grad_norm);
    if (grad_norm)
        *grad_norm = gn;
    return SHE_OK;
}

float *she_engine_grads(she_engine_t *e, size_t *n_params, int *on_device) {
    if (on_device)
        *on_device = e->cm != NULL;
    if (e->cm)
        return she_cuda_model_grads_device(e->cm, n_params);
    if (n_params)
        *n_params = e->cpu->n_params;
    return e->cpu->grads;
}

void *she_engine_stream(she_engine_t *e) {
    return e->cm ? she_cuda_model_stream(e->cm) : NULL;
}

she_err_t she_engine_sync(she_engine_t *e, char *errstr, size_t errstr_size) {
#ifdef SHE_HAVE_CUDA
    if (e->cm)
        SHE_TRY_CUDA(cudaStreamSynchronize((cudaStream_t)she_cuda_model_stream(e->cm)));
#else
    (void)e, (void)errstr, (void)errstr_size; /* no device model without CUDA */
#endif
    return SHE_OK;
}

she_err_t she_engine_sampler_new(she_engine_t *e, int max_batch, int max_seq,
                                 she_engine_sampler_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    she_engine_sampler_t *s = calloc(1, sizeof(*s));
    SHE_CHECK_ALLOC(s);
    she_err_t err = e->cm ? she_cuda_sampler_new(e->cm, max_batch, max_seq, &s->cuda, errstr,
                                                 errstr_size)
                          : she_sampler_new(e->cpu, max_batch, max_seq, &s->cpu, errstr,
                                            errstr_size);
    if (err != SHE_OK) {
        free(s);
        return err;
    }
    *out = s;
    return SHE_OK;
}

void she_engine_sampler_free(she_engine_sampler_t *s) {
    if (!s)
        return;
    she_sampler_free(s->cpu);
    she_cuda_sampler_free(s->cuda);
    free(s);
}

she_err_t she_engine_generate(she_engine_sampler_t *s, const int32_t *const *prompts,
                              const int *prompt_lens, int B, const she_sample_params_t *p,
                              uint64_t seed, int32_t *out_tokens, float *out_logp,
                              float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                              char *errstr, size_t errstr_size) {
    if (s->cuda)
        return she_cuda_sampler_generate(s->cuda, prompts, prompt_lens, B, p, seed, out_tokens,
                                         out_logp, out_logp_trunc, out_lens, finish, errstr,
                                         errstr_size);
    return she_sampler_generate(s->cpu, prompts, prompt_lens, B, p, seed, out_tokens, out_logp,
                                out_logp_trunc, out_lens, finish, errstr, errstr_size);
}
