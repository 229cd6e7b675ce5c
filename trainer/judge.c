/* judge.c -- batched greedy (or sampled) judging with the five-step chain (see judge.h). */
#include "judge.h"

#include <stdlib.h>
#include <string.h>

#include "sft.h"
#include "teacher.h"

struct she_judge_s {
    she_engine_t *own_engine; /* the engine she_judge_new made; NULL on a caller's engine */
    const she_tokenizer_t *tok;
    she_judge_opts_t o;
    she_sft_special_t sp;
    she_engine_sampler_t *sampler;
    int32_t *prompt_ids; /* (max_batch, max_prompt) */
    const int32_t **prompts; /* (max_batch) row pointers into prompt_ids */
    int *prompt_lens;    /* (max_batch) */
    int *rows;           /* (max_batch) sample index of each batch row */
    int32_t *out_tokens; /* (max_batch, max_new_tokens) */
    float *out_logp;     /* (max_batch, max_new_tokens) the sampler requires it */
    int *out_lens;       /* (max_batch) */
    she_finish_t *finish; /* (max_batch) */
};

/* The step-5 lines that end a row: nothing useful can follow them. */
static const char *const stop_strings[4] = {"5. Grade: L1", "5. Grade: L2", "5. Grade: L3",
                                            "5. Grade: L4"};

void she_judge_opts_default(she_judge_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->max_batch = 64;
    o->max_prompt = 128;
    o->max_new_tokens = 128;
    o->temperature = 0.0f;
    o->top_k = 0;
    o->top_p = 1.0f;
    o->seed = 1;
}

she_err_t she_judge_new_engine(she_engine_t *e, const she_tokenizer_t *tok,
                               const she_judge_opts_t *o, she_judge_t **out, char *errstr,
                               size_t errstr_size) {
    *out = NULL;
    const she_model_t *m = she_engine_model(e);
    if (o->max_batch < 1 || o->max_prompt < 2 || o->max_new_tokens < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "judge: batch %d, prompt %d, new tokens %d must be positive (prompt >= 2)",
                        o->max_batch, o->max_prompt, o->max_new_tokens);
    if (she_tokenizer_vocab_size(tok) > m->cfg.vocab_size)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "judge: the tokenizer has %d ids, the model %d",
                        she_tokenizer_vocab_size(tok), m->cfg.vocab_size);
    she_judge_t *j = calloc(1, sizeof(*j));
    SHE_CHECK_ALLOC(j);
    j->tok = tok;
    j->o = *o;
    j->o.device = NULL; /* the caller's string need not outlive the call */
    she_err_t err = she_sft_special_ids(tok, &j->sp, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_engine_sampler_new(e, o->max_batch, o->max_prompt + o->max_new_tokens,
                                     &j->sampler, errstr, errstr_size);
    if (err != SHE_OK) {
        free(j);
        return err == SHE_ERR_FORMAT ? SHE_ERR_INVALID : err;
    }
    size_t B = (size_t)o->max_batch;
    j->prompt_ids = malloc(B * (size_t)o->max_prompt * sizeof(int32_t));
    j->prompts = calloc(B, sizeof(*j->prompts));
    j->prompt_lens = calloc(B, sizeof(int));
    j->rows = calloc(B, sizeof(int));
    j->out_tokens = malloc(B * (size_t)o->max_new_tokens * sizeof(int32_t));
    j->out_logp = malloc(B * (size_t)o->max_new_tokens * sizeof(float));
    j->out_lens = calloc(B, sizeof(int));
    j->finish = calloc(B, sizeof(she_finish_t));
    SHE_CHECK_ALLOC(j->prompt_ids);
    SHE_CHECK_ALLOC(j->prompts);
    SHE_CHECK_ALLOC(j->prompt_lens);
    SHE_CHECK_ALLOC(j->rows);
    SHE_CHECK_ALLOC(j->out_tokens);
    SHE_CHECK_ALLOC(j->out_logp);
    SHE_CHECK_ALLOC(j->out_lens);
    SHE_CHECK_ALLOC(j->finish);
    *out = j;
    return SHE_OK;
}

she_err_t she_judge_new(const she_model_t *m, const she_tokenizer_t *tok,
                        const she_judge_opts_t *o, she_judge_t **out, char *errstr,
                        size_t errstr_size) {
    *out = NULL;
    she_device_t dev;
    SHE_TRY(she_device_select(o->device, &dev, errstr, errstr_size));
    she_engine_t *e = NULL;
    /* without an optimizer the engine never writes the model: generation only reads it */
    SHE_TRY(she_engine_new((she_model_t *)m, NULL, &dev, &e, errstr, errstr_size));
    she_err_t err = she_judge_new_engine(e, tok, o, out, errstr, errstr_size);
    if (err != SHE_OK) {
        she_engine_free(e);
        return err;
    }
    (*out)->own_engine = e;
    return SHE_OK;
}

she_err_t she_judge_sync(she_judge_t *j, char *errstr, size_t errstr_size) {
    return j->own_engine ? she_engine_upload(j->own_engine, errstr, errstr_size) : SHE_OK;
}

void she_judge_free(she_judge_t *j) {
    if (!j)
        return;
    she_engine_sampler_free(j->sampler);
    she_engine_free(j->own_engine);
    free(j->prompt_ids);
    free(j->prompts);
    free(j->prompt_lens);
    free(j->rows);
    free(j->out_tokens);
    free(j->out_logp);
    free(j->out_lens);
    free(j->finish);
    free(j);
}

void she_judge_parse_ids(const she_tokenizer_t *tok, int32_t eos_id, const int32_t *ids, int n,
                         she_judge_result_t *r) {
    int k = 0;
    while (k < n && ids[k] != eos_id)
        k++;
    size_t len = 0;
    char e[SHE_ERRSTR_SIZE];
    she_err_t err = she_tokenizer_decode(tok, ids, k, 0, r->text, SHE_JUDGE_MAX_TEXT - 1, &len, e,
                                         sizeof(e));
    if (err != SHE_OK) /* too long: keep what fits; a bad id: nothing */
        len = len > SHE_JUDGE_MAX_TEXT - 1 ? SHE_JUDGE_MAX_TEXT - 1 : 0;
    r->text[len] = '\0';
    r->text_len = (int)len;
    r->format_ok = she_cot_parse(r->text, len, &r->parsed, e, sizeof(e)) == SHE_OK;
    r->grade = r->parsed.ok[SHE_COT_STEP_GRADE - 1] ? r->parsed.cot.grade : SHE_GRADE_UNKNOWN;
}

she_err_t she_judge_run(she_judge_t *j, const she_sample_t *samples, int n,
                        she_judge_result_t *res, she_judge_progress_fn progress, void *opaque,
                        char *errstr, size_t errstr_size) {
    const she_judge_opts_t *o = &j->o;
    int32_t stop_ids[1] = {j->sp.eos};
    she_sample_params_t p = {.temperature = o->temperature,
                             .top_k = o->top_k,
                             .top_p = o->top_p,
                             .max_new_tokens = o->max_new_tokens,
                             .stop_ids = stop_ids,
                             .n_stop_ids = 1,
                             .stop_strings = stop_strings,
                             .n_stop_strings = 4,
                             .tok = j->tok};
    for (int done = 0; done < n;) {
        /* fill a batch with the next rows that make a prompt */
        int B = 0, next = done;
        while (B < o->max_batch && next < n) {
            she_judge_result_t *r = &res[next];
            memset(r, 0, sizeof(*r));
            int32_t *ids = j->prompt_ids + (size_t)B * (size_t)o->max_prompt;
            char e[SHE_ERRSTR_SIZE];
            if (she_sft_encode_prompt(j->tok, &j->sp, &samples[next], o->max_prompt, ids,
                                      &j->prompt_lens[B], &r->prompt_truncated, e,
                                      sizeof(e)) == SHE_OK) {
                r->prompt_ok = 1;
                j->prompts[B] = ids;
                j->rows[B++] = next;
            } else {
                she_cot_parse("", 0, &r->parsed, e, sizeof(e)); /* every step missing */
            }
            next++;
        }
        if (B > 0) {
            /* a row's draws depend on (seed, row in batch): offset the seed by the first row so
             * sampled judging of a set does not repeat the same stream every batch */
            SHE_TRY(she_engine_generate(j->sampler, j->prompts, j->prompt_lens, B, &p,
                                        o->seed + (uint64_t)done, j->out_tokens, j->out_logp, NULL,
                                        j->out_lens, j->finish, errstr, errstr_size));
            for (int b = 0; b < B; b++) {
                she_judge_result_t *r = &res[j->rows[b]];
                r->n_tokens = j->out_lens[b];
                r->finish = j->finish[b];
                she_judge_parse_ids(j->tok, j->sp.eos,
                                    j->out_tokens + (size_t)b * (size_t)o->max_new_tokens,
                                    j->out_lens[b], r);
            }
        }
        done = next;
        if (progress)
            progress(done, n, opaque);
    }
    return SHE_OK;
}

void she_judge_eval_rows(const she_sample_t *samples, const she_judge_result_t *res, int n,
                         const she_lexicon_t *brands, const she_lexicon_t *materials,
                         she_cot_t *teacher_ref, she_eval_row_t *rows, int *n_teacher) {
    int nt = 0;
    for (int i = 0; i < n; i++) {
        const she_sample_t *s = &samples[i];
        she_eval_row_from(&rows[i], s, res ? &res[i].parsed : NULL);
        char e[SHE_ERRSTR_SIZE];
        if (s->has_steps || !teacher_ref ||
            she_teacher_chain(s, brands, materials, &teacher_ref[i], e, sizeof(e)) != SHE_OK)
            continue;
        const she_cot_t *c = &teacher_ref[i];
        rows[i].gold_query_cat = c->query.category;
        rows[i].gold_item_cat = c->item.category;
        rows[i].gold_cat_match = c->cat_match;
        rows[i].gold_attr_match = c->attr_match;
        nt++;
    }
    if (n_teacher)
        *n_teacher = nt;
}
