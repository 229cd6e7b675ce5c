/* bench.c -- the measurements behind `she bench`. */
#include "clock.h"
#include "bench.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "optim.h"
#include "sampler.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

she_err_t she_model_preset(const char *name, she_model_config_t *cfg, int *batch, int *seq,
                           char *errstr, size_t errstr_size) {
    /* hidden, layers, heads, kv heads, intermediate, vocab, seq, batch, tied */
    static const struct {
        const char *name;
        int v[9];
    } presets[] = {
        /* c1/c2: the llm.c CPU reference sizes; SwiGLU's three matrices at F ~ 8/3 D match
         * GPT-2's two at 4 D, so the parameter counts (1.3M, 5.8M) agree. */
        {"c1", {128, 4, 4, 4, 344, 4096, 64, 4, 1}},
        {"c2", {256, 6, 4, 4, 688, 4096, 64, 4, 1}},
        {"small", {256, 4, 4, 2, 768, 4096, 128, 32, 1}},
        {"base", {512, 8, 8, 4, 1376, 4096, 128, 32, 1}},
    };
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (strcmp(presets[i].name, name) != 0)
            continue;
        const int *v = presets[i].v;
        memset(cfg, 0, sizeof(*cfg));
        snprintf(cfg->model_type, sizeof(cfg->model_type), "llama");
        cfg->hidden_size = v[0];
        cfg->n_layers = v[1];
        cfg->n_heads = v[2];
        cfg->n_kv_heads = v[3];
        cfg->intermediate_size = v[4];
        cfg->vocab_size = v[5];
        cfg->max_position_embeddings = 512;
        cfg->rope_theta = 10000.0;
        cfg->rms_norm_eps = 1e-5;
        cfg->tie_word_embeddings = v[8];
        if (seq)
            *seq = v[6];
        if (batch)
            *batch = v[7];
        return SHE_OK;
    }
    return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                    "unknown model preset '%s' (c1, c2, small, base)", name);
}

double she_bench_sgemm_gflops(const she_model_config_t *c, int N, int reps) {
    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int Q = D + 2 * c->n_kv_heads * (D / c->n_heads);
    int outs[] = {Q, D, 2 * F, D, V}, ins[] = {D, D, D, F, D};
    size_t max = 0;
    for (int i = 0; i < 5; i++) {
        size_t big = (size_t)(outs[i] > N ? outs[i] : N);
        size_t s = big * (size_t)(ins[i] > outs[i] ? ins[i] : outs[i]);
        max = s > max ? s : max;
    }
    float *A = calloc(max, sizeof(float)), *B = calloc(max, sizeof(float));
    float *C = calloc(max, sizeof(float));
    double *t = calloc((size_t)reps + 1, sizeof(double));
    SHE_CHECK_ALLOC(A);
    SHE_CHECK_ALLOC(B);
    SHE_CHECK_ALLOC(C);
    SHE_CHECK_ALLOC(t);
    for (size_t i = 0; i < max; i++)
        A[i] = B[i] = (float)(i % 13) * 0.01f;
    double flops = 0, secs = 0;
    for (int i = 0; i < 5; i++)
        for (int kind = 0; kind < 3; kind++) {
            int o = outs[i], n = ins[i];
            for (int rep = 0; rep <= reps; rep++) { /* rep 0 warms up the pool and caches */
                double t0 = she_now_s();
                if (kind == 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, o, n, 1, A, n, B, n, 0,
                                C, o);
                else if (kind == 1)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n, o, 1, A, o, B, n,
                                0, C, n);
                else
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, n, N, 1, A, o, B, n, 1,
                                C, n);
                t[rep] = she_now_s() - t0;
            }
            secs += median(t + 1, reps);
            flops += 2.0 * N * o * n;
        }
    free(A), free(B), free(C), free(t);
    return flops / secs / 1e9;
}

she_err_t she_bench_train(const she_model_config_t *cfg, const she_device_t *dev, int B, int T,
                          int steps, she_bench_train_t *out, char *errstr, size_t errstr_size) {
    she_model_t *m = NULL;
    SHE_TRY(she_model_new(cfg, B, T, &m, errstr, errstr_size));
    she_model_init_weights(m, 1, 0.02f);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    she_engine_t *e = NULL;
    she_err_t err = she_engine_new(m, opt, dev, &e, errstr, errstr_size);
    size_t N = (size_t)B * T;
    int32_t *tok = malloc(N * sizeof(int32_t)), *tgt = malloc(N * sizeof(int32_t));
    float *logp = malloc(N * sizeof(float)), *dlogp = malloc(N * sizeof(float));
    double *t_step = calloc((size_t)steps, sizeof(double)), t_f = 0, t_b = 0, t_o = 0;
    SHE_CHECK_ALLOC(tok);
    SHE_CHECK_ALLOC(tgt);
    SHE_CHECK_ALLOC(logp);
    SHE_CHECK_ALLOC(dlogp);
    SHE_CHECK_ALLOC(t_step);
    for (size_t i = 0; i < N; i++) {
        tok[i] = (int32_t)((i * 2654435761u) % (unsigned)cfg->vocab_size);
        tgt[i] = (int32_t)(((i + 1) * 2654435761u) % (unsigned)cfg->vocab_size);
        dlogp[i] = -1.0f / (float)N;
    }
    /* a device queues backward and the update: each phase is waited for before its clock */
    for (int s = -1; s < steps && err == SHE_OK; s++) {
        double t0 = she_now_s();
        err = she_engine_zero_grad(e, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_engine_forward(e, tok, NULL, tgt, B, T, 1.0f, logp, NULL, errstr,
                                     errstr_size);
        double t1 = she_now_s();
        if (err == SHE_OK)
            err = she_engine_backward(e, dlogp, NULL, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_engine_sync(e, errstr, errstr_size);
        double t2 = she_now_s();
        if (err == SHE_OK)
            err = she_engine_adamw_step(e, &hp, 1e-4f, 1.0f, 1.0f, NULL, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_engine_sync(e, errstr, errstr_size);
        double t3 = she_now_s();
        if (s >= 0) {
            t_step[s] = t3 - t0;
            t_f += t1 - t0, t_b += t2 - t1, t_o += t3 - t2;
        }
    }
    if (err == SHE_OK) {
        double total = t_f + t_b + t_o;
        out->step_s_median = median(t_step, steps);
        out->step_s_min = t_step[0];
        out->tokens_per_s = (double)N / out->step_s_median;
        out->gflops = she_model_flops_per_step(cfg, B, T) / out->step_s_median / 1e9;
        out->forward_frac = t_f / total;
        out->backward_frac = t_b / total;
        out->adamw_frac = t_o / total;
    }
    free(tok), free(tgt), free(logp), free(dlogp), free(t_step);
    she_engine_free(e);
    she_adamw_free(opt);
    she_model_free(m);
    return err;
}

she_err_t she_bench_generate(const she_model_config_t *cfg, const she_device_t *dev, int B,
                             int prompt_len, int n_new, int runs, she_bench_gen_t *out,
                             char *errstr, size_t errstr_size) {
    she_model_t *m = NULL;
    she_engine_t *e = NULL;
    she_engine_sampler_t *s = NULL;
    SHE_TRY(she_model_new(cfg, 1, 2, &m, errstr, errstr_size));
    she_model_init_weights(m, 1, 0.02f);
    she_err_t err = she_engine_new(m, NULL, dev, &e, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_engine_sampler_new(e, B, prompt_len + n_new, &s, errstr, errstr_size);
    int32_t *prompts = malloc((size_t)B * prompt_len * sizeof(int32_t));
    int32_t *toks = malloc((size_t)B * n_new * sizeof(int32_t));
    float *logp = malloc((size_t)B * n_new * sizeof(float));
    int *lens = malloc((size_t)B * sizeof(int)), *out_lens = malloc((size_t)B * sizeof(int));
    const int32_t **pp = malloc((size_t)B * sizeof(int32_t *));
    double *t = calloc((size_t)runs, sizeof(double));
    SHE_CHECK_ALLOC(prompts);
    SHE_CHECK_ALLOC(toks);
    SHE_CHECK_ALLOC(logp);
    SHE_CHECK_ALLOC(lens);
    SHE_CHECK_ALLOC(out_lens);
    SHE_CHECK_ALLOC(pp);
    SHE_CHECK_ALLOC(t);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < prompt_len; i++)
            prompts[(size_t)b * prompt_len + i] =
                (int32_t)(((size_t)(b * 7919 + i) * 2654435761u) % (unsigned)cfg->vocab_size);
        pp[b] = prompts + (size_t)b * prompt_len;
        lens[b] = prompt_len;
    }
    she_sample_params_t p = {.temperature = 0.99f, .top_k = 100, .top_p = 1.0f,
                             .max_new_tokens = n_new};
    for (int r = -1; r < runs && err == SHE_OK; r++) {
        double t0 = she_now_s();
        err = she_engine_generate(s, pp, lens, B, &p, 1234 + (uint64_t)r, toks, logp, NULL,
                                  out_lens, NULL, errstr, errstr_size);
        if (r >= 0)
            t[r] = she_now_s() - t0;
    }
    if (err == SHE_OK) {
        out->s_median = median(t, runs);
        out->tokens_per_s = (double)B * n_new / out->s_median;
        out->gflops = she_sampler_flops(cfg, B, prompt_len, n_new) / out->s_median / 1e9;
    }
    free(prompts), free(toks), free(logp), free(lens), free(out_lens), free(pp), free(t);
    she_engine_sampler_free(s);
    she_engine_free(e);
    she_model_free(m);
    return err;
}
