/* rollout.c -- G sampled responses per prompt, parsed into step spans (see rollout.h). */
#include "rollout.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "sft.h"

/* The judge's stop strings (trainer/judge.c): a rollout ends where an evaluation would. */
static const char *const stop_strings[4] = {"5. Grade: L1", "5. Grade: L2", "5. Grade: L3",
                                            "5. Grade: L4"};

struct she_rollout {
    const she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_rollout_config_t cfg;
    int max_prompts;
    she_engine_t *engine;     /* the policy on cfg.device */
    she_engine_sampler_t *sampler;
    int64_t synced_version;   /* policy version on the device (when synced) */
    int synced;
    int32_t *prompt_ids;   /* (max_prompts, max_prompt_tokens) */
    int *prompt_lens;      /* (max_prompts) */
    const int32_t **rows;  /* (max_prompts * G) prompt pointer per row */
    int *row_lens;         /* (max_prompts * G) */
    int32_t *out_tokens;   /* (max_prompts * G, max_new_tokens) */
    float *out_logp;       /* (max_prompts * G, max_new_tokens) */
    int *out_lens;         /* (max_prompts * G) */
    she_finish_t *finish;  /* (max_prompts * G) */
};

she_rollout_config_t she_rollout_defaults(void) {
    return (she_rollout_config_t){.group_size = 16, .temperature = 0.99f, .top_k = 100,
                                  .top_p = 1.0f, .max_new_tokens = 96, .max_prompt_tokens = 160};
}

she_err_t she_rollout_new(const she_model_t *policy, const she_tokenizer_t *tok,
                          const she_rollout_config_t *cfg, int max_prompts, she_rollout_t **out,
                          char *errstr, size_t errstr_size) {
    *out = NULL;
    if (cfg->group_size < 1 || max_prompts < 1 || cfg->max_new_tokens < 1 ||
        cfg->max_prompt_tokens < 1 || cfg->temperature < 0 || cfg->top_k < 0 ||
        !(cfg->top_p > 0 && cfg->top_p <= 1))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rollout: bad configuration (G %d, prompts %d, new tokens %d, prompt "
                        "tokens %d, temperature %g, top-k %d, top-p %g)",
                        cfg->group_size, max_prompts, cfg->max_new_tokens,
                        cfg->max_prompt_tokens, (double)cfg->temperature, cfg->top_k,
                        (double)cfg->top_p);
    she_sft_special_t sp;
    SHE_TRY(she_sft_special_ids(tok, &sp, errstr, errstr_size));
    if (she_tokenizer_vocab_size(tok) > policy->cfg.vocab_size)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rollout: tokenizer of %d ids for a model of %d",
                        she_tokenizer_vocab_size(tok), policy->cfg.vocab_size);
    int seq = cfg->max_prompt_tokens + cfg->max_new_tokens;
    if (seq > policy->cfg.max_position_embeddings)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rollout: %d prompt + %d new tokens exceed the model's %d positions",
                        cfg->max_prompt_tokens, cfg->max_new_tokens,
                        policy->cfg.max_position_embeddings);
    she_device_t dev;
    SHE_TRY(she_device_select(cfg->device, &dev, errstr, errstr_size));
    she_rollout_t *ro = calloc(1, sizeof(*ro));
    if (!ro)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "rollout: out of memory");
    ro->tok = tok;
    ro->sp = sp;
    ro->cfg = *cfg;
    ro->cfg.device = NULL; /* the caller's string need not outlive the call */
    ro->max_prompts = max_prompts;
    size_t rows = (size_t)max_prompts * cfg->group_size;
    /* without an optimizer the engine never writes the policy: generation only reads it */
    she_err_t err = she_engine_new((she_model_t *)policy, NULL, &dev, &ro->engine, errstr,
                                   errstr_size);
    if (err == SHE_OK)
        err = she_engine_sampler_new(ro->engine, (int)rows, seq, &ro->sampler, errstr,
                                     errstr_size);
    if (err != SHE_OK) {
        she_engine_free(ro->engine);
        free(ro);
        return err;
    }
    ro->prompt_ids = malloc(sizeof(int32_t) * max_prompts * cfg->max_prompt_tokens);
    ro->prompt_lens = malloc(sizeof(int) * max_prompts);
    ro->rows = malloc(sizeof(*ro->rows) * rows);
    ro->row_lens = malloc(sizeof(int) * rows);
    ro->out_tokens = malloc(sizeof(int32_t) * rows * cfg->max_new_tokens);
    ro->out_logp = malloc(sizeof(float) * rows * cfg->max_new_tokens);
    ro->out_lens = malloc(sizeof(int) * rows);
    ro->finish = malloc(sizeof(she_finish_t) * rows);
    if (!ro->prompt_ids || !ro->prompt_lens || !ro->rows || !ro->row_lens || !ro->out_tokens ||
        !ro->out_logp || !ro->out_lens || !ro->finish) {
        she_rollout_free(ro);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "rollout: out of memory");
    }
    *out = ro;
    return SHE_OK;
}

void she_rollout_free(she_rollout_t *ro) {
    if (!ro)
        return;
    she_engine_sampler_free(ro->sampler);
    she_engine_free(ro->engine);
    free(ro->prompt_ids);
    free(ro->prompt_lens);
    free(ro->rows);
    free(ro->row_lens);
    free(ro->out_tokens);
    free(ro->out_logp);
    free(ro->out_lens);
    free(ro->finish);
    free(ro);
}

she_err_t she_response_text(const she_tokenizer_t *tok, int32_t eos_id, const she_response_t *r,
                            char *buf, size_t *len, int *tok_end, char *errstr,
                            size_t errstr_size) {
    size_t n = 0;
    int ended = 0;
    for (int t = 0; t < r->n_tokens; t++) {
        ended = ended || r->tokens[t] == eos_id;
        if (!ended) {
            char piece[256];
            size_t plen = 0;
            she_err_t err = she_tokenizer_decode(tok, &r->tokens[t], 1, 0, piece, sizeof(piece),
                                                 &plen, errstr, errstr_size);
            if (err != SHE_OK)
                return err;
            size_t room = SHE_RESPONSE_TEXT_MAX - 1 - n;
            size_t take = plen < room ? plen : room;
            memcpy(buf + n, piece, take);
            n += take;
        }
        if (tok_end)
            tok_end[t] = (int)n;
    }
    buf[n] = '\0';
    *len = n;
    return SHE_OK;
}

she_err_t she_response_parse(const she_tokenizer_t *tok, int32_t eos_id, const she_response_t *r,
                             she_cot_parsed_t *parsed, char *text, size_t *len, char *errstr,
                             size_t errstr_size) {
    char local[SHE_RESPONSE_TEXT_MAX];
    char *buf = text ? text : local;
    size_t n;
    SHE_TRY(she_response_text(tok, eos_id, r, buf, &n, NULL, errstr, errstr_size));
    if (len)
        *len = n;
    char perr[SHE_ERRSTR_SIZE];
    (void)she_cot_parse(buf, n, parsed, perr, sizeof(perr)); /* partial parses are data */
    return SHE_OK;
}

void she_response_set_spans(she_response_t *r, const int *step) {
    free(r->spans);
    r->spans = NULL;
    r->n_spans = 0;
    if (r->n_tokens == 0)
        return;
    int runs = 1;
    for (int t = 1; t < r->n_tokens; t++)
        runs += step[t] != step[t - 1];
    r->spans = malloc(sizeof(*r->spans) * runs);
    SHE_CHECK_ALLOC(r->spans);
    int start = 0;
    for (int t = 1; t <= r->n_tokens; t++)
        if (t == r->n_tokens || step[t] != step[t - 1]) {
            r->spans[r->n_spans++] = (she_step_span_t){step[start], start, t};
            start = t;
        }
}

void she_response_token_steps(const she_response_t *r, uint8_t *step) {
    uint8_t cur = 1;
    /* spans are in token order when she_response_set_spans wrote them; a message from
     * elsewhere may list them in any order, so each token looks for its own span */
    for (int t = 0; t < r->n_tokens; t++) {
        for (int k = 0; k < r->n_spans; k++) {
            const she_step_span_t *sp = &r->spans[k];
            if (t >= sp->start && t < sp->end && sp->step >= 1 && sp->step <= SHE_COT_N_STEPS) {
                cur = (uint8_t)sp->step;
                break;
            }
        }
        step[t] = cur;
    }
}

she_err_t she_response_make_spans(const she_tokenizer_t *tok, int32_t eos_id, she_response_t *r,
                                  char *errstr, size_t errstr_size) {
    char text[SHE_RESPONSE_TEXT_MAX];
    size_t len;
    int n = r->n_tokens > 0 ? r->n_tokens : 1;
    int *tok_end = malloc(sizeof(int) * n), *step = malloc(sizeof(int) * n);
    SHE_CHECK_ALLOC(tok_end);
    SHE_CHECK_ALLOC(step);
    she_err_t err = she_response_text(tok, eos_id, r, text, &len, tok_end, errstr, errstr_size);
    if (err == SHE_OK) {
        she_cot_parsed_t parsed;
        char perr[SHE_ERRSTR_SIZE];
        (void)she_cot_parse(text, len, &parsed, perr, sizeof(perr));
        she_cot_token_steps(&parsed, tok_end, r->n_tokens, step);
        she_response_set_spans(r, step);
    }
    free(tok_end);
    free(step);
    return err;
}

/* Fills one response from the sampler's row b. */
static she_err_t fill_response(she_rollout_t *ro, int b, she_response_t *r, char *errstr,
                               size_t errstr_size) {
    int n = ro->out_lens[b];
    const int32_t *toks = ro->out_tokens + (size_t)b * ro->cfg.max_new_tokens;
    const float *lp = ro->out_logp + (size_t)b * ro->cfg.max_new_tokens;
    r->n_tokens = n;
    r->tokens = malloc(sizeof(int32_t) * (n ? n : 1));
    r->logprobs = malloc(sizeof(float) * (n ? n : 1));
    SHE_CHECK_ALLOC(r->tokens);
    SHE_CHECK_ALLOC(r->logprobs);
    memcpy(r->tokens, toks, sizeof(int32_t) * n);
    memcpy(r->logprobs, lp, sizeof(float) * n);
    r->truncated = ro->finish[b] == SHE_FINISH_LENGTH;
    return she_response_make_spans(ro->tok, ro->sp.eos, r, errstr, errstr_size);
}

she_err_t she_rollout_generate(she_rollout_t *ro, const she_sample_t *const *samples, int n,
                               int64_t policy_version, uint64_t seed, she_rollout_group_t *groups,
                               char *errstr, size_t errstr_size) {
    const int G = ro->cfg.group_size, P = ro->cfg.max_prompt_tokens;
    if (n < 0 || n > ro->max_prompts)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rollout: %d prompts, at most %d per call", n, ro->max_prompts);
    if (n == 0)
        return SHE_OK;
    for (int i = 0; i < n; i++) {
        SHE_TRY(she_sft_encode_prompt(ro->tok, &ro->sp, samples[i], P,
                                      ro->prompt_ids + (size_t)i * P, &ro->prompt_lens[i], NULL,
                                      errstr, errstr_size));
        for (int g = 0; g < G; g++) {
            /* the same pointer for the G rows lets the sampler prefill the prompt once */
            ro->rows[i * G + g] = ro->prompt_ids + (size_t)i * P;
            ro->row_lens[i * G + g] = ro->prompt_lens[i];
        }
    }
    int32_t stop[1] = {ro->sp.eos};
    she_sample_params_t p = {.temperature = ro->cfg.temperature, .top_k = ro->cfg.top_k,
                             .top_p = ro->cfg.top_p, .max_new_tokens = ro->cfg.max_new_tokens,
                             .stop_ids = stop, .n_stop_ids = 1, .stop_strings = stop_strings,
                             .n_stop_strings = 4, .tok = ro->tok};
    if (!ro->synced || policy_version != ro->synced_version) {
        SHE_TRY(she_engine_upload(ro->engine, errstr, errstr_size));
        ro->synced = 1;
        ro->synced_version = policy_version;
    }
    SHE_TRY(she_engine_generate(ro->sampler, ro->rows, ro->row_lens, n * G, &p, seed,
                                ro->out_tokens, ro->out_logp, NULL, ro->out_lens, ro->finish,
                                errstr, errstr_size));
    she_err_t err = SHE_OK;
    for (int i = 0; i < n && err == SHE_OK; i++) {
        she_rollout_group_t *rg = &groups[i];
        she_sample_copy(&rg->sample, samples[i]);
        const char *sid = samples[i]->sample_id ? samples[i]->sample_id : "";
        rg->sample_id = strdup(sid);
        char gid[512];
        snprintf(gid, sizeof(gid), "%.400s@%" PRId64 "/%" PRIu64, sid, policy_version, seed);
        rg->group_id = strdup(gid);
        SHE_CHECK_ALLOC(rg->sample_id);
        SHE_CHECK_ALLOC(rg->group_id);
        rg->policy_version = policy_version;
        rg->n_prompt_tokens = ro->prompt_lens[i];
        rg->prompt_tokens = malloc(sizeof(int32_t) * rg->n_prompt_tokens);
        SHE_CHECK_ALLOC(rg->prompt_tokens);
        memcpy(rg->prompt_tokens, ro->prompt_ids + (size_t)i * P,
               sizeof(int32_t) * rg->n_prompt_tokens);
        rg->responses = calloc(G, sizeof(she_response_t));
        SHE_CHECK_ALLOC(rg->responses);
        rg->n_responses = G;
        for (int g = 0; g < G && err == SHE_OK; g++)
            err = fill_response(ro, i * G + g, &rg->responses[g], errstr, errstr_size);
    }
    if (err != SHE_OK)
        for (int i = 0; i < n; i++)
            she_msg_clear_rollout_group(&groups[i]);
    return err;
}
