/* sft.c -- SFT sequences, batches and loss (see sft.h). */
#include "sft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cot.h"
#include "teacher.h"

#define PROMPT_BUF 4096 /* she_cot_format_prompt always fits (cot.h) */

she_err_t she_sft_load_lexicons(const char *dir, int min_count, she_lexicon_t **brands,
                                she_lexicon_t **materials, char *errstr, size_t errstr_size) {
    char path[4096];
    *materials = NULL;
    snprintf(path, sizeof(path), "%s/brand_statistics.csv", dir);
    SHE_TRY(she_lexicon_load(path, min_count, brands, errstr, errstr_size));
    snprintf(path, sizeof(path), "%s/material_statistics.csv", dir);
    she_err_t err = she_lexicon_load(path, min_count, materials, errstr, errstr_size);
    if (err != SHE_OK) {
        she_lexicon_free(*brands);
        *brands = NULL;
    }
    return err;
}

she_err_t she_sft_special_ids(const she_tokenizer_t *tok, she_sft_special_t *sp, char *errstr,
                              size_t errstr_size) {
    const char *names[3] = {SHE_SFT_PAD, SHE_SFT_BOS, SHE_SFT_EOS};
    int32_t *ids[3] = {&sp->pad, &sp->bos, &sp->eos};
    for (int i = 0; i < 3; i++) {
        *ids[i] = she_tokenizer_token_id(tok, names[i]);
        if (*ids[i] < 0 || !she_tokenizer_is_special(tok, *ids[i]))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "tokenizer has no special token %s", names[i]);
    }
    return SHE_OK;
}

/* Teacher chain text for s; SHE_ERR_INVALID when the teacher refuses the sample. */
static she_err_t answer_text(const she_sample_t *s, const she_lexicon_t *brands,
                             const she_lexicon_t *materials, char *buf, size_t *len, char *errstr,
                             size_t errstr_size) {
    she_cot_t cot;
    SHE_TRY(she_teacher_chain(s, brands, materials, &cot, errstr, errstr_size));
    return she_cot_format(&cot, buf, SHE_COT_MAX_CHAIN, len, errstr, errstr_size);
}

she_err_t she_sft_train_tokenizer(const she_sample_t *samples, int n, const she_lexicon_t *brands,
                                  const she_lexicon_t *materials, int vocab_size,
                                  she_tokenizer_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    char **texts = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    size_t *lens = calloc((size_t)(n > 0 ? n : 1), sizeof(size_t));
    SHE_CHECK_ALLOC(texts);
    SHE_CHECK_ALLOC(lens);
    size_t n_texts = 0;
    for (int i = 0; i < n; i++) {
        char prompt[PROMPT_BUF], chain[SHE_COT_MAX_CHAIN], e[SHE_ERRSTR_SIZE];
        size_t pl, cl;
        if (she_cot_format_prompt(&samples[i], prompt, sizeof(prompt), &pl, e, sizeof(e)) !=
                SHE_OK ||
            answer_text(&samples[i], brands, materials, chain, &cl, e, sizeof(e)) != SHE_OK)
            continue;
        char *t = malloc(pl + cl);
        SHE_CHECK_ALLOC(t);
        memcpy(t, prompt, pl);
        memcpy(t + pl, chain, cl);
        texts[n_texts] = t;
        lens[n_texts++] = pl + cl;
    }
    she_err_t err;
    if (n_texts == 0) {
        err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                       "no sample gives a prompt and a teacher chain to train a tokenizer on");
    } else {
        const char *special[3] = {SHE_SFT_PAD, SHE_SFT_BOS, SHE_SFT_EOS};
        err = she_tokenizer_train((const char *const *)texts, lens, n_texts, vocab_size, special,
                                  3, out, errstr, errstr_size);
    }
    for (size_t i = 0; i < n_texts; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    return err;
}

/* Encodes text (never splitting special-token text: data cannot forge an eos) after ids[0..at),
 * returning the total in *n; SHE_ERR_INVALID when it does not fit in cap. */
static she_err_t encode_after(const she_tokenizer_t *tok, const char *text, size_t len,
                              int32_t *ids, int at, int cap, int *n, char *errstr,
                              size_t errstr_size) {
    int k = 0;
    if (at > cap)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "no room");
    she_err_t err = she_tokenizer_encode(tok, text, len, 0, ids + at, cap - at, &k, errstr,
                                         errstr_size);
    *n = at + k;
    return err;
}

she_err_t she_sft_encode_prompt(const she_tokenizer_t *tok, const she_sft_special_t *sp,
                                const she_sample_t *s, int max_tokens, int32_t *ids, int *n_ids,
                                int *truncated, char *errstr, size_t errstr_size) {
    const char *id = s->sample_id ? s->sample_id : "?";
    if (truncated)
        *truncated = 0;
    if (max_tokens < 2)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: no room for a prompt",
                        id);
    /* A shallow copy whose item text we shorten; the strings stay the caller's. */
    she_sample_t t = *s;
    char title[PROMPT_BUF];
    if (!s->item_title || !s->query)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: no query or title", id);
    snprintf(title, sizeof(title), "%s", s->item_title);
    t.item_title = title;
    for (;;) {
        char prompt[PROMPT_BUF];
        size_t pl;
        SHE_TRY(she_cot_format_prompt(&t, prompt, sizeof(prompt), &pl, errstr, errstr_size));
        ids[0] = sp->bos;
        char e[SHE_ERRSTR_SIZE];
        if (encode_after(tok, prompt, pl, ids, 1, max_tokens, n_ids, e, sizeof(e)) == SHE_OK)
            return SHE_OK;
        if (truncated)
            *truncated = 1;
        if (t.n_item_attrs > 0) {
            t.n_item_attrs--;
            continue;
        }
        /* drop the last word of the title (and the spaces before it) */
        size_t L = strlen(title);
        while (L > 0 && title[L - 1] == ' ')
            L--;
        while (L > 0 && title[L - 1] != ' ')
            L--;
        while (L > 0 && title[L - 1] == ' ')
            L--;
        if (L == 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "sample %s: the prompt does not fit %d tokens even with a one-word "
                            "title",
                            id, max_tokens);
        title[L] = '\0';
    }
}

/* One sequence into ids (room for max_seq); SHE_ERR_INVALID when it cannot be made. */
/* Chain step (1..5) of each of the n answer tokens ans of chain text (she_cot_token_steps). */
static void answer_steps(const she_tokenizer_t *tok, const char *chain, size_t cl,
                         const int32_t *ans, int n, uint8_t *step) {
    she_cot_parsed_t parsed;
    char e[SHE_ERRSTR_SIZE];
    she_cot_parse(chain, cl, &parsed, e, sizeof(e)); /* a teacher chain always parses */
    int tok_end[SHE_COT_MAX_CHAIN], st[SHE_COT_MAX_CHAIN];
    size_t at = 0;
    for (int k = 0; k < n; k++) {
        char piece[256];
        size_t len = 0;
        she_tokenizer_decode(tok, &ans[k], 1, 0, piece, sizeof(piece), &len, e, sizeof(e));
        at += len;
        tok_end[k] = (int)at;
    }
    she_cot_token_steps(&parsed, tok_end, n, st);
    for (int k = 0; k < n; k++)
        step[k] = (uint8_t)st[k];
}

static she_err_t build_seq(const she_tokenizer_t *tok, const she_sft_special_t *sp,
                           const she_sample_t *s, const she_lexicon_t *brands,
                           const she_lexicon_t *materials, int max_seq, int32_t *ids,
                           uint8_t *step, int *n, int *n_prompt, int *truncated, char *errstr,
                           size_t errstr_size) {
    char chain[SHE_COT_MAX_CHAIN];
    size_t cl;
    SHE_TRY(answer_text(s, brands, materials, chain, &cl, errstr, errstr_size));
    /* The answer's length fixes the prompt's budget; room is left for <|bos|>, one prompt
     * token and <|eos|>. */
    int32_t ans[SHE_COT_MAX_CHAIN];
    int n_ans = 0;
    if (she_tokenizer_encode(tok, chain, cl, 0, ans, max_seq - 3, &n_ans, errstr, errstr_size) !=
        SHE_OK)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "sample %s: the answer alone takes %d tokens, more than %d - 3",
                        s->sample_id ? s->sample_id : "?", n_ans, max_seq);
    uint8_t ans_step[SHE_COT_MAX_CHAIN];
    answer_steps(tok, chain, cl, ans, n_ans, ans_step);
    ans_step[n_ans] = SHE_COT_STEP_GRADE;
    ans[n_ans++] = sp->eos;
    SHE_TRY(she_sft_encode_prompt(tok, sp, s, max_seq - n_ans, ids, n_prompt, truncated, errstr,
                                  errstr_size));
    memcpy(ids + *n_prompt, ans, sizeof(int32_t) * (size_t)n_ans);
    memset(step, 0, (size_t)*n_prompt);
    memcpy(step + *n_prompt, ans_step, (size_t)n_ans);
    *n = *n_prompt + n_ans;
    return SHE_OK;
}

she_sft_set_t *she_sft_set_build(const she_tokenizer_t *tok, const she_sample_t *samples, int n,
                                 const she_lexicon_t *brands, const she_lexicon_t *materials,
                                 int max_seq, char *errstr, size_t errstr_size) {
    SHE_ASSERT(max_seq >= 4 && max_seq <= SHE_COT_MAX_CHAIN);
    if (errstr_size)
        errstr[0] = '\0';
    she_sft_special_t sp;
    SHE_ASSERT(she_sft_special_ids(tok, &sp, errstr, errstr_size) == SHE_OK);
    she_sft_set_t *set = calloc(1, sizeof(*set));
    SHE_CHECK_ALLOC(set);
    size_t cap = (size_t)(n > 0 ? n : 1);
    int32_t *tmp = malloc(cap * (size_t)max_seq * sizeof(int32_t));
    uint8_t *tmp_step = malloc(cap * (size_t)max_seq);
    int *lens = calloc(cap, sizeof(int)), *np = calloc(cap, sizeof(int));
    int *tr = calloc(cap, sizeof(int));
    SHE_CHECK_ALLOC(tmp);
    SHE_CHECK_ALLOC(tmp_step);
    SHE_CHECK_ALLOC(lens);
    SHE_CHECK_ALLOC(np);
    SHE_CHECK_ALLOC(tr);
#pragma omp parallel for schedule(dynamic, 64)
    for (int i = 0; i < n; i++) {
        char e[SHE_ERRSTR_SIZE];
        if (build_seq(tok, &sp, &samples[i], brands, materials, max_seq,
                      tmp + (size_t)i * (size_t)max_seq, tmp_step + (size_t)i * (size_t)max_seq,
                      &lens[i], &np[i], &tr[i], e, sizeof(e)) != SHE_OK)
            lens[i] = 0;
    }
    set->cap = n > 0 ? n : 1;
    set->start = malloc((size_t)set->cap * sizeof(size_t));
    set->len = malloc((size_t)set->cap * sizeof(int));
    set->n_prompt = malloc((size_t)set->cap * sizeof(int));
    set->sample = malloc((size_t)set->cap * sizeof(int));
    SHE_CHECK_ALLOC(set->start);
    SHE_CHECK_ALLOC(set->len);
    SHE_CHECK_ALLOC(set->n_prompt);
    SHE_CHECK_ALLOC(set->sample);
    for (int i = 0; i < n; i++)
        set->cap_tokens += (size_t)lens[i];
    set->tokens = malloc((set->cap_tokens ? set->cap_tokens : 1) * sizeof(int32_t));
    set->step = malloc(set->cap_tokens ? set->cap_tokens : 1);
    SHE_CHECK_ALLOC(set->tokens);
    SHE_CHECK_ALLOC(set->step);
    for (int j = 0; j < SHE_COT_N_STEPS; j++)
        set->step_weight[j] = 1.0f;
    for (int i = 0; i < n; i++) {
        if (lens[i] == 0) {
            if (set->n_skipped++ == 0) { /* again, serially, for the message */
                int a, b, c;
                build_seq(tok, &sp, &samples[i], brands, materials, max_seq,
                          tmp + (size_t)i * (size_t)max_seq, tmp_step + (size_t)i * (size_t)max_seq,
                          &a, &b, &c, errstr, errstr_size);
            }
            continue;
        }
        int k = set->n++;
        set->start[k] = set->n_tokens;
        set->len[k] = lens[i];
        set->n_prompt[k] = np[i];
        set->sample[k] = i;
        memcpy(set->tokens + set->n_tokens, tmp + (size_t)i * (size_t)max_seq,
               sizeof(int32_t) * (size_t)lens[i]);
        memcpy(set->step + set->n_tokens, tmp_step + (size_t)i * (size_t)max_seq,
               (size_t)lens[i]);
        set->n_tokens += (size_t)lens[i];
        set->n_answer_tokens += lens[i] - np[i];
        set->n_truncated += tr[i];
        if (lens[i] > set->max_len)
            set->max_len = lens[i];
    }
    free(tmp);
    free(tmp_step);
    free(lens);
    free(np);
    free(tr);
    return set;
}

void she_sft_set_free(she_sft_set_t *set) {
    if (!set)
        return;
    free(set->tokens);
    free(set->step);
    free(set->start);
    free(set->len);
    free(set->n_prompt);
    free(set->sample);
    free(set->weight);
    free(set);
}

void she_sft_set_weight_by_grade(she_sft_set_t *set, const she_sample_t *samples, double alpha) {
    free(set->weight);
    set->weight = NULL;
    if (alpha == 0 || set->n == 0)
        return;
    long count[5] = {0};
    for (int i = 0; i < set->n; i++)
        count[samples[set->sample[i]].grade]++;
    set->weight = malloc((size_t)set->n * sizeof(float));
    SHE_CHECK_ALLOC(set->weight);
    double sum = 0;
    for (int i = 0; i < set->n; i++) {
        double share = (double)count[samples[set->sample[i]].grade] / set->n;
        set->weight[i] = (float)pow(share, -alpha);
        sum += set->weight[i];
    }
    for (int i = 0; i < set->n; i++)
        set->weight[i] = (float)(set->weight[i] * set->n / sum);
}

she_sft_batch_t *she_sft_batch_new(int max_batch, int max_seq) {
    SHE_ASSERT(max_batch > 0 && max_seq > 0);
    she_sft_batch_t *b = calloc(1, sizeof(*b));
    SHE_CHECK_ALLOC(b);
    size_t N = (size_t)max_batch * (size_t)max_seq;
    b->max_batch = max_batch;
    b->max_seq = max_seq;
    b->tokens = malloc(N * sizeof(int32_t));
    b->mask = malloc(N);
    b->targets = malloc(N * sizeof(int32_t));
    b->weight = malloc(N * sizeof(float));
    b->logp = malloc(N * sizeof(float));
    b->dlogp = malloc(N * sizeof(float));
    SHE_CHECK_ALLOC(b->tokens);
    SHE_CHECK_ALLOC(b->mask);
    SHE_CHECK_ALLOC(b->targets);
    SHE_CHECK_ALLOC(b->weight);
    SHE_CHECK_ALLOC(b->logp);
    SHE_CHECK_ALLOC(b->dlogp);
    return b;
}

void she_sft_batch_free(she_sft_batch_t *b) {
    if (!b)
        return;
    free(b->tokens);
    free(b->mask);
    free(b->targets);
    free(b->weight);
    free(b->logp);
    free(b->dlogp);
    free(b);
}

void she_sft_batch_fill(she_sft_batch_t *b, const she_sft_set_t *set, const int *idx, int B,
                        int32_t pad_id) {
    SHE_ASSERT(B >= 1 && B <= b->max_batch);
    int T = 1;
    for (int r = 0; r < B; r++) {
        SHE_ASSERT(idx[r] >= 0 && idx[r] < set->n && set->len[idx[r]] <= b->max_seq);
        if (set->len[idx[r]] > T)
            T = set->len[idx[r]];
    }
    b->B = B;
    b->T = T;
    b->n_targets = 0;
    for (int r = 0; r < B; r++) {
        const int32_t *seq = set->tokens + set->start[idx[r]];
        /* sets built without per-token steps (e.g. the reward model's) weigh every step 1 */
        const uint8_t *st = set->step ? set->step + set->start[idx[r]] : NULL;
        int n = set->len[idx[r]], np = set->n_prompt[idx[r]];
        int32_t *tk = b->tokens + (size_t)r * T, *tg = b->targets + (size_t)r * T;
        uint8_t *mk = b->mask + (size_t)r * T;
        float *wt = b->weight + (size_t)r * T, w = set->weight ? set->weight[idx[r]] : 1.0f;
        for (int t = 0; t < T; t++) {
            tk[t] = t < n ? seq[t] : pad_id;
            mk[t] = t < n;
            /* position t predicts token t+1: answer tokens are np..n-1 */
            tg[t] = (t >= np - 1 && t < n - 1) ? seq[t + 1] : -1;
            wt[t] = tg[t] < 0 ? 0.0f : st ? w * set->step_weight[st[t + 1] - 1] : w;
        }
        b->n_targets += n - np;
    }
}

double she_sft_loss_weighted(const float *logp, const int32_t *targets, const float *weight,
                             int n, float *dlogp) {
    double wsum = 0, sum = 0;
    for (int i = 0; i < n; i++)
        if (targets[i] >= 0) {
            double w = weight ? weight[i] : 1.0;
            wsum += w;
            sum -= w * logp[i];
        }
    if (dlogp) {
        double g = wsum > 0 ? -1.0 / wsum : 0.0;
        for (int i = 0; i < n; i++)
            dlogp[i] = targets[i] >= 0 ? (float)(g * (weight ? weight[i] : 1.0)) : 0.0f;
    }
    return wsum > 0 ? sum / wsum : 0.0;
}

double she_sft_loss(const float *logp, const int32_t *targets, int n, float *dlogp) {
    return she_sft_loss_weighted(logp, targets, NULL, n, dlogp);
}

she_err_t she_sft_eval_loss(she_engine_t *e, she_sft_batch_t *b, double *loss, char *errstr,
                            size_t errstr_size) {
    SHE_TRY(she_engine_forward(e, b->tokens, b->mask, b->targets, b->B, b->T, 1.0f, b->logp, NULL,
                               errstr, errstr_size));
    *loss = she_sft_loss(b->logp, b->targets, b->B * b->T, NULL);
    return SHE_OK;
}

she_err_t she_sft_train_step(she_engine_t *e, const she_adamw_config_t *hp, float lr,
                             float clip, she_sft_batch_t *b, double *loss, float *grad_norm,
                             char *errstr, size_t errstr_size) {
    SHE_TRY(she_engine_zero_grad(e, errstr, errstr_size));
    SHE_TRY(she_engine_forward(e, b->tokens, b->mask, b->targets, b->B, b->T, 1.0f, b->logp, NULL,
                               errstr, errstr_size));
    *loss = she_sft_loss_weighted(b->logp, b->targets, b->weight, b->B * b->T, b->dlogp);
    SHE_TRY(she_engine_backward(e, b->dlogp, NULL, errstr, errstr_size));
    return she_engine_adamw_step(e, hp, lr, 1.0f, clip, grad_norm, errstr, errstr_size);
}
