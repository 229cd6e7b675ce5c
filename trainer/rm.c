/* rm.c -- the generative stepwise reward model: exchange text and tokens, step truth,
 * corruptions, SFT examples and the batched scorer (see rm.h). */
#include "rm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "sampler.h"


she_rm_config_t she_rm_defaults(void) {
    return (she_rm_config_t){.max_prompt = 112, .max_chain = 112, .max_justify = 40};
}

int she_rm_max_seq(const she_rm_config_t *cfg) {
    return cfg->max_prompt + cfg->max_chain + cfg->max_justify + SHE_RM_VERDICT_MAX;
}

/* ---- text ---- */

void she_rm_format_chain(const char *chain, size_t chain_len, int step, char *buf, size_t *len) {
    while (chain_len > 0 && (chain[chain_len - 1] == ' ' || chain[chain_len - 1] == '\n' ||
                             chain[chain_len - 1] == '\r' || chain[chain_len - 1] == '\t'))
        chain_len--;
    if (chain_len > SHE_RM_CHAIN_MAX)
        chain_len = SHE_RM_CHAIN_MAX;
    memcpy(buf, chain, chain_len);
    int k = snprintf(buf + chain_len, 32, "\njudge: step %d\n", step);
    *len = chain_len + (size_t)k;
}

she_err_t she_rm_format_justification(const she_cot_t *truth, int step, char *buf, size_t size,
                                      size_t *len, char *errstr, size_t errstr_size) {
    if (step < 1 || step > SHE_RM_N_STEPS)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "rm: step %d is not judged", step);
    char chain[SHE_COT_MAX_CHAIN];
    size_t clen;
    SHE_TRY(she_cot_format(truth, chain, sizeof(chain), &clen, errstr, errstr_size));
    /* line `step` of the formatted chain, after its "N. Label: " */
    const char *line = chain;
    for (int k = 1; k < step; k++) {
        line = strchr(line, '\n');
        SHE_ASSERT(line != NULL);
        line++;
    }
    const char *value = strstr(line, ": ");
    SHE_ASSERT(value != NULL);
    value += 2;
    const char *end = strchr(value, '\n');
    size_t vlen = end ? (size_t)(end - value) : strlen(value);
    int k = snprintf(buf, size, "expected: %.*s\n", (int)vlen, value);
    if (k < 0 || (size_t)k >= size)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "rm: justification buffer too small");
    *len = (size_t)k;
    return SHE_OK;
}

int she_rm_parse_verdict(const char *text, size_t len) {
    const char *c = memmem(text, len, SHE_RM_CORRECT, strlen(SHE_RM_CORRECT));
    const char *i = memmem(text, len, SHE_RM_INCORRECT, strlen(SHE_RM_INCORRECT));
    if (!c && !i)
        return -1;
    if (c && (!i || c < i))
        return 1;
    return 0;
}

static int same_norm(const char *a, const char *b) {
    char na[SHE_COT_MAX_TEXT], nb[SHE_COT_MAX_TEXT];
    she_cot_norm_category(a, na, sizeof(na));
    she_cot_norm_category(b, nb, sizeof(nb));
    return strcmp(na, nb) == 0;
}

/* Same category and the same attributes as a multiset of (key, normalised value). */
static int same_interp(const she_cot_interp_t *a, const she_cot_interp_t *b) {
    if (!same_norm(a->category, b->category) || a->n_attrs != b->n_attrs)
        return 0;
    int used[SHE_COT_MAX_ATTRS] = {0};
    for (int i = 0; i < a->n_attrs; i++) {
        int found = 0;
        for (int j = 0; j < b->n_attrs && !found; j++)
            if (!used[j] && strcmp(a->attrs[i].key, b->attrs[j].key) == 0 &&
                same_norm(a->attrs[i].value, b->attrs[j].value))
                used[j] = found = 1;
        if (!found)
            return 0;
    }
    return 1;
}

int she_rm_step_correct(const she_cot_t *truth, const she_cot_parsed_t *parsed, int step) {
    SHE_ASSERT(step >= 1 && step <= SHE_COT_N_STEPS);
    if (!parsed->ok[step - 1])
        return 0;
    const she_cot_t *c = &parsed->cot;
    switch (step) {
    case SHE_COT_STEP_QUERY: return same_interp(&truth->query, &c->query);
    case SHE_COT_STEP_ITEM: return same_interp(&truth->item, &c->item);
    case SHE_COT_STEP_CATEGORY: return truth->cat_match == c->cat_match;
    case SHE_COT_STEP_ATTRIBUTES: return truth->attr_match == c->attr_match;
    default: return truth->grade == c->grade;
    }
}

const char *she_rm_corruption_name(she_rm_corruption_t kind) {
    static const char *const names[SHE_RM_CORRUPT__COUNT] = {"category", "drop_attr",
                                                             "contradict_attr", "value"};
    return (unsigned)kind < SHE_RM_CORRUPT__COUNT ? names[kind] : "?";
}

/* A value of an enum 1..n other than cur. */
static int other_value(int cur, int n, she_rng_t *rng) {
    int v = 1 + (int)she_rng_below(rng, (uint32_t)(n - 1));
    return v >= cur ? v + 1 : v;
}

int she_rm_corrupt(const she_cot_t *truth, int step, she_rm_corruption_t kind,
                   const she_cot_t *donor, she_rng_t *rng, she_cot_t *out) {
    *out = *truth;
    if (step == SHE_COT_STEP_QUERY || step == SHE_COT_STEP_ITEM) {
        she_cot_interp_t *in = step == SHE_COT_STEP_QUERY ? &out->query : &out->item;
        switch (kind) {
        case SHE_RM_CORRUPT_CATEGORY: {
            if (!donor)
                return 0;
            /* the donor's category on the same side, else on the other */
            const char *c1 = step == SHE_COT_STEP_QUERY ? donor->query.category
                                                        : donor->item.category;
            const char *c2 = step == SHE_COT_STEP_QUERY ? donor->item.category
                                                        : donor->query.category;
            const char *pick = !same_norm(c1, in->category) ? c1
                               : !same_norm(c2, in->category) ? c2 : NULL;
            if (!pick || !pick[0])
                return 0;
            snprintf(in->category, sizeof(in->category), "%s", pick);
            return 1;
        }
        case SHE_RM_CORRUPT_DROP_ATTR: {
            if (in->n_attrs == 0)
                return 0;
            int k = (int)she_rng_below(rng, (uint32_t)in->n_attrs);
            memmove(&in->attrs[k], &in->attrs[k + 1],
                    sizeof(in->attrs[0]) * (size_t)(in->n_attrs - k - 1));
            in->n_attrs--;
            return 1;
        }
        case SHE_RM_CORRUPT_CONTRADICT_ATTR: {
            if (in->n_attrs == 0)
                return 0;
            int k = (int)she_rng_below(rng, (uint32_t)in->n_attrs);
            she_cot_attr_t *a = &in->attrs[k];
            const char *repl = NULL;
            for (int side = 0; side < 2 && donor && !repl; side++) {
                const she_cot_interp_t *d = side == 0 ? &donor->query : &donor->item;
                for (int j = 0; j < d->n_attrs && !repl; j++)
                    if (strcmp(d->attrs[j].key, a->key) == 0 &&
                        !same_norm(d->attrs[j].value, a->value))
                        repl = d->attrs[j].value;
            }
            char buf[SHE_COT_MAX_TEXT + 8];
            if (repl)
                snprintf(buf, sizeof(buf), "%s", repl);
            else if (strncmp(a->value, "not ", 4) == 0)
                snprintf(buf, sizeof(buf), "%s", a->value + 4);
            else
                snprintf(buf, sizeof(buf), "not %s", a->value);
            char clean[SHE_COT_MAX_TEXT];
            if (!she_cot_clean_value(buf, clean) || same_norm(clean, a->value))
                return 0;
            memcpy(a->value, clean, sizeof(clean));
            return 1;
        }
        default: return 0;
        }
    }
    if (kind != SHE_RM_CORRUPT_VALUE)
        return 0;
    switch (step) {
    case SHE_COT_STEP_CATEGORY:
        out->cat_match = (she_cat_match_t)other_value(truth->cat_match, 3, rng);
        return 1;
    case SHE_COT_STEP_ATTRIBUTES:
        out->attr_match = (she_attr_match_t)other_value(truth->attr_match, 4, rng);
        return 1;
    case SHE_COT_STEP_GRADE: out->grade = (she_grade_t)other_value(truth->grade, 4, rng); return 1;
    default: return 0;
    }
}

/* ---- token sequences ---- */

she_err_t she_rm_encode_query(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                              const she_sft_special_t *sp, const she_sample_t *s,
                              const char *chain, size_t chain_len, int step, int32_t *ids,
                              int *n_ids, char *errstr, size_t errstr_size) {
    int np = 0;
    SHE_TRY(she_sft_encode_prompt(tok, sp, s, cfg->max_prompt, ids, &np, NULL, errstr,
                                  errstr_size));
    char text[SHE_RM_CHAIN_MAX + 32];
    size_t len;
    /* a chain that does not fit loses bytes from its end until it does: the judge line stays */
    for (size_t keep = chain_len;; keep = keep * 4 / 5) {
        she_rm_format_chain(chain, keep, step, text, &len);
        int nc = 0;
        char e[SHE_ERRSTR_SIZE];
        if (she_tokenizer_encode(tok, text, len, 0, ids + np, cfg->max_chain, &nc, e,
                                 sizeof(e)) == SHE_OK) {
            *n_ids = np + nc;
            return SHE_OK;
        }
        if (keep == 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "rm: the judge line alone exceeds %d tokens", cfg->max_chain);
    }
}

she_err_t she_rm_encode_answer(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                               const she_sft_special_t *sp, const char *justification,
                               size_t just_len, int correct, int32_t *ids, int *n_ids,
                               char *errstr, size_t errstr_size) {
    int nj = 0, nv = 0;
    SHE_TRY(she_tokenizer_encode(tok, justification, just_len, 0, ids, cfg->max_justify, &nj,
                                 errstr, errstr_size));
    const char *v = correct ? SHE_RM_CORRECT : SHE_RM_INCORRECT;
    SHE_TRY(she_tokenizer_encode(tok, v, strlen(v), 0, ids + nj, SHE_RM_VERDICT_MAX - 1, &nv, errstr,
                                 errstr_size));
    ids[nj + nv] = sp->eos;
    *n_ids = nj + nv + 1;
    return SHE_OK;
}

/* ---- SFT examples ---- */

void she_rm_examples_free(she_rm_examples_t *set) {
    if (!set)
        return;
    for (int i = 0; i < set->n; i++) {
        free(set->ex[i].chain);
        free(set->ex[i].justification);
    }
    free(set->ex);
    memset(set, 0, sizeof(*set));
}

static void push(she_rm_examples_t *set, int sample, int step, int label, she_rm_source_t src,
                 const char *chain, const char *just) {
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 256;
        set->ex = realloc(set->ex, sizeof(*set->ex) * (size_t)set->cap);
        SHE_CHECK_ALLOC(set->ex);
    }
    she_rm_example_t *e = &set->ex[set->n++];
    *e = (she_rm_example_t){sample, step, label, src, strdup(chain), strdup(just)};
    SHE_CHECK_ALLOC(e->chain);
    SHE_CHECK_ALLOC(e->justification);
}

she_err_t she_rm_examples_add(she_rm_examples_t *set, int sample_index, const she_cot_t *truth,
                              const she_cot_t *donor, const char *const *policy_chains,
                              int n_policy, she_rng_t *rng, char *errstr, size_t errstr_size) {
    char chain[SHE_COT_MAX_CHAIN], just[SHE_COT_MAX_CHAIN + 16];
    size_t clen, jlen;
    SHE_TRY(she_cot_format(truth, chain, sizeof(chain), &clen, errstr, errstr_size));
    for (int step = 1; step <= SHE_RM_N_STEPS; step++) {
        SHE_TRY(she_rm_format_justification(truth, step, just, sizeof(just), &jlen, errstr,
                                            errstr_size));
        push(set, sample_index, step, 1, SHE_RM_SRC_TRUTH, chain, just);
        /* one corruption of a kind drawn among those that apply to this step */
        she_rm_corruption_t kinds[SHE_RM_CORRUPT__COUNT];
        int nk = 0;
        if (step <= 2) {
            kinds[nk++] = SHE_RM_CORRUPT_CATEGORY;
            kinds[nk++] = SHE_RM_CORRUPT_DROP_ATTR;
            kinds[nk++] = SHE_RM_CORRUPT_CONTRADICT_ATTR;
        } else {
            kinds[nk++] = SHE_RM_CORRUPT_VALUE;
        }
        for (int tries = nk; tries > 0; tries--) {
            int k = (int)she_rng_below(rng, (uint32_t)nk);
            she_cot_t bad;
            char bchain[SHE_COT_MAX_CHAIN];
            size_t blen;
            char e[SHE_ERRSTR_SIZE];
            if (she_rm_corrupt(truth, step, kinds[k], donor, rng, &bad) &&
                she_cot_format(&bad, bchain, sizeof(bchain), &blen, e, sizeof(e)) == SHE_OK) {
                push(set, sample_index, step, 0, SHE_RM_SRC_CORRUPT, bchain, just);
                break;
            }
            kinds[k] = kinds[--nk]; /* this kind does not apply: draw among the rest */
            if (nk == 0)
                break;
        }
    }
    for (int i = 0; i < n_policy; i++) {
        she_cot_parsed_t parsed;
        char e[SHE_ERRSTR_SIZE];
        (void)she_cot_parse(policy_chains[i], strlen(policy_chains[i]), &parsed, e, sizeof(e));
        for (int step = 1; step <= SHE_RM_N_STEPS; step++) {
            SHE_TRY(she_rm_format_justification(truth, step, just, sizeof(just), &jlen, errstr,
                                                errstr_size));
            push(set, sample_index, step, she_rm_step_correct(truth, &parsed, step),
                 SHE_RM_SRC_POLICY, policy_chains[i], just);
        }
    }
    return SHE_OK;
}

she_sft_set_t *she_rm_sft_set(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                              const she_sft_special_t *sp, const she_sample_t *samples,
                              const she_rm_examples_t *set) {
    she_sft_set_t *out = calloc(1, sizeof(*out));
    SHE_CHECK_ALLOC(out);
    int cap = set->n > 0 ? set->n : 1, maxq = cfg->max_prompt + cfg->max_chain;
    int maxa = cfg->max_justify + SHE_RM_VERDICT_MAX;
    out->cap = cap;
    out->start = malloc(sizeof(size_t) * cap);
    out->len = malloc(sizeof(int) * cap);
    out->n_prompt = malloc(sizeof(int) * cap);
    out->sample = malloc(sizeof(int) * cap);
    out->cap_tokens = (size_t)cap * (maxq + maxa) / 2 + (size_t)(maxq + maxa);
    out->tokens = malloc(sizeof(int32_t) * out->cap_tokens);
    SHE_CHECK_ALLOC(out->start);
    SHE_CHECK_ALLOC(out->len);
    SHE_CHECK_ALLOC(out->n_prompt);
    SHE_CHECK_ALLOC(out->sample);
    SHE_CHECK_ALLOC(out->tokens);
    for (int i = 0; i < set->n; i++) {
        const she_rm_example_t *ex = &set->ex[i];
        if (out->n_tokens + (size_t)(maxq + maxa) > out->cap_tokens) {
            out->cap_tokens = 2 * out->cap_tokens;
            out->tokens = realloc(out->tokens, sizeof(int32_t) * out->cap_tokens);
            SHE_CHECK_ALLOC(out->tokens);
        }
        int32_t *ids = out->tokens + out->n_tokens;
        int nq = 0, na = 0;
        char e[SHE_ERRSTR_SIZE];
        if (she_rm_encode_query(cfg, tok, sp, &samples[ex->sample], ex->chain, strlen(ex->chain),
                                ex->step, ids, &nq, e, sizeof(e)) != SHE_OK ||
            she_rm_encode_answer(cfg, tok, sp, ex->justification, strlen(ex->justification),
                                 ex->label, ids + nq, &na, e, sizeof(e)) != SHE_OK) {
            out->n_skipped++;
            continue;
        }
        int k = out->n++;
        out->start[k] = out->n_tokens;
        out->len[k] = nq + na;
        out->n_prompt[k] = nq;
        out->sample[k] = i;
        out->n_tokens += (size_t)(nq + na);
        out->n_answer_tokens += na;
        out->max_len = nq + na > out->max_len ? nq + na : out->max_len;
    }
    return out;
}

/* ---- the scorer ---- */

struct she_rm {
    she_model_t *model;
    she_engine_t *eng;              /* model on the device judged on (no optimizer) */
    she_engine_sampler_t *sampler;
    const she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_rm_config_t cfg;
    int max_batch, max_seq, max_query;
    int32_t prefix[SHE_RM_VERDICT_MAX]; /* verdict tokens the two share */
    int n_prefix;
    int32_t tok_correct, tok_incorrect; /* the first tokens where they differ */
    int32_t *qids;     /* (max_batch, max_query) */
    int *qlen;         /* (max_batch) */
    int *index;        /* (max_batch) query index of each row */
    const int32_t **rows; /* (max_batch) */
    int32_t *gen;      /* (max_batch, max_justify) */
    float *gen_logp;   /* (max_batch, max_justify) the sampler's, unused */
    int *gen_len;      /* (max_batch) */
    int32_t *tokens;   /* (max_batch, max_seq) forward rows */
    uint8_t *mask;     /* (max_batch, max_seq) */
    int *last;         /* (max_batch) position whose logits hold the verdict choice */
    int32_t *targets;  /* (max_batch, max_seq) on a device: a verdict token at `last`, else -1 */
    float *lp, *lp_correct; /* (max_batch, max_seq) on a device: log-probs of the targets */
};

she_err_t she_rm_new(she_model_t *model, const she_tokenizer_t *tok, const she_rm_config_t *cfg,
                     int max_batch, const she_device_t *dev, she_rm_t **out, char *errstr,
                     size_t errstr_size) {
    *out = NULL;
    int max_seq = she_rm_max_seq(cfg);
    if (max_batch < 1 || max_batch > model->max_batch || max_seq > model->max_seq ||
        cfg->max_prompt < 2 || cfg->max_chain < 8 || cfg->max_justify < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rm: %d rows of %d positions do not fit a model reserved for %d x %d",
                        max_batch, max_seq, model->max_batch, model->max_seq);
    she_sft_special_t sp;
    SHE_TRY(she_sft_special_ids(tok, &sp, errstr, errstr_size));
    int32_t vc[SHE_RM_VERDICT_MAX], vi[SHE_RM_VERDICT_MAX];
    int nc = 0, ni = 0;
    SHE_TRY(she_tokenizer_encode(tok, SHE_RM_CORRECT, strlen(SHE_RM_CORRECT), 0, vc,
                                 SHE_RM_VERDICT_MAX - 1, &nc, errstr, errstr_size));
    SHE_TRY(she_tokenizer_encode(tok, SHE_RM_INCORRECT, strlen(SHE_RM_INCORRECT), 0, vi,
                                 SHE_RM_VERDICT_MAX - 1, &ni, errstr, errstr_size));
    int k = 0;
    while (k < nc && k < ni && vc[k] == vi[k])
        k++;
    if (k == nc || k == ni)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rm: the verdicts do not differ in a token after a shared prefix");
    she_rm_t *rm = calloc(1, sizeof(*rm));
    SHE_CHECK_ALLOC(rm);
    rm->model = model;
    rm->tok = tok;
    rm->sp = sp;
    rm->cfg = *cfg;
    rm->max_batch = max_batch;
    rm->max_seq = max_seq;
    rm->max_query = cfg->max_prompt + cfg->max_chain;
    memcpy(rm->prefix, vc, sizeof(int32_t) * k);
    rm->n_prefix = k;
    rm->tok_correct = vc[k];
    rm->tok_incorrect = vi[k];
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_err_t err = she_engine_new(model, NULL, dev ? dev : &cpu, &rm->eng, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_engine_sampler_new(rm->eng, max_batch, rm->max_query + cfg->max_justify,
                                     &rm->sampler, errstr, errstr_size);
    if (err != SHE_OK) {
        she_rm_free(rm);
        return err;
    }
    rm->qids = malloc(sizeof(int32_t) * max_batch * rm->max_query);
    rm->qlen = malloc(sizeof(int) * max_batch);
    rm->index = malloc(sizeof(int) * max_batch);
    rm->rows = malloc(sizeof(*rm->rows) * max_batch);
    rm->gen = malloc(sizeof(int32_t) * max_batch * cfg->max_justify);
    rm->gen_logp = malloc(sizeof(float) * max_batch * cfg->max_justify);
    rm->gen_len = malloc(sizeof(int) * max_batch);
    rm->tokens = malloc(sizeof(int32_t) * max_batch * max_seq);
    rm->mask = malloc((size_t)max_batch * max_seq);
    rm->last = malloc(sizeof(int) * max_batch);
    SHE_CHECK_ALLOC(rm->qids);
    SHE_CHECK_ALLOC(rm->qlen);
    SHE_CHECK_ALLOC(rm->index);
    SHE_CHECK_ALLOC(rm->rows);
    SHE_CHECK_ALLOC(rm->gen);
    SHE_CHECK_ALLOC(rm->gen_logp);
    SHE_CHECK_ALLOC(rm->gen_len);
    SHE_CHECK_ALLOC(rm->tokens);
    SHE_CHECK_ALLOC(rm->mask);
    SHE_CHECK_ALLOC(rm->last);
    if (she_engine_on_cuda(rm->eng)) {
        rm->targets = malloc(sizeof(int32_t) * max_batch * max_seq);
        rm->lp = malloc(sizeof(float) * max_batch * max_seq);
        rm->lp_correct = malloc(sizeof(float) * max_batch * max_seq);
        SHE_CHECK_ALLOC(rm->targets);
        SHE_CHECK_ALLOC(rm->lp);
        SHE_CHECK_ALLOC(rm->lp_correct);
    }
    *out = rm;
    return SHE_OK;
}

void she_rm_free(she_rm_t *rm) {
    if (!rm)
        return;
    she_engine_sampler_free(rm->sampler);
    she_engine_free(rm->eng);
    free(rm->qids);
    free(rm->qlen);
    free(rm->index);
    free(rm->rows);
    free(rm->gen);
    free(rm->gen_logp);
    free(rm->gen_len);
    free(rm->tokens);
    free(rm->mask);
    free(rm->last);
    free(rm->targets);
    free(rm->lp);
    free(rm->lp_correct);
    free(rm);
}

/* The justification as scoring uses it: the generated text up to its first newline (included);
 * without one, up to a verdict the model began early, with the newline added, so the verdict
 * follows a newline as in training. */
static size_t cut_justification(char *text, size_t len) {
    char *nl = memchr(text, '\n', len);
    if (nl)
        return (size_t)(nl - text) + 1;
    char *br = memchr(text, '[', len);
    size_t n = br ? (size_t)(br - text) : len;
    text[n] = '\n';
    return n + 1;
}

/* P([Correct]) of the B packed rows (stride T) into p_correct[index[b]]: the odds of the two
 * verdict tokens after the shared prefix, from the logits at `last` on the CPU; on a device
 * the logits stay there, so the same odds are read as the difference of the two tokens'
 * log-probs (the softmax's normaliser cancels), one forward with each as the target. */
static she_err_t verdicts(she_rm_t *rm, int B, int T, float *p_correct, char *errstr,
                          size_t errstr_size) {
    int on_device = she_engine_on_cuda(rm->eng);
    if (!on_device) {
        SHE_TRY(she_engine_forward(rm->eng, rm->tokens, rm->mask, NULL, B, T, 1.0f, NULL, NULL,
                                   errstr, errstr_size));
    } else {
        for (size_t i = 0; i < (size_t)B * T; i++)
            rm->targets[i] = -1;
        for (int b = 0; b < B; b++)
            rm->targets[(size_t)b * T + rm->last[b]] = rm->tok_correct;
        SHE_TRY(she_engine_forward(rm->eng, rm->tokens, rm->mask, rm->targets, B, T, 1.0f,
                                   rm->lp_correct, NULL, errstr, errstr_size));
        for (int b = 0; b < B; b++)
            rm->targets[(size_t)b * T + rm->last[b]] = rm->tok_incorrect;
        SHE_TRY(she_engine_forward(rm->eng, rm->tokens, rm->mask, rm->targets, B, T, 1.0f,
                                   rm->lp, NULL, errstr, errstr_size));
    }
    const int V = rm->model->cfg.vocab_size;
    for (int b = 0; b < B; b++) {
        size_t at = (size_t)b * T + rm->last[b];
        const float *z = rm->model->a.logits + at * V;
        double d = on_device ? (double)rm->lp[at] - (double)rm->lp_correct[at]
                             : (double)z[rm->tok_incorrect] - (double)z[rm->tok_correct];
        p_correct[rm->index[b]] = (float)(1.0 / (1.0 + exp(d)));
    }
    return SHE_OK;
}

she_err_t she_rm_judge(she_rm_t *rm, const she_rm_query_t *q, int n, float *p_correct,
                       char *const *justification, char *errstr, size_t errstr_size) {
    static const char *const stop_nl[1] = {"\n"};
    const int MQ = rm->max_query, MJ = rm->cfg.max_justify;
    int32_t stop_ids[1] = {rm->sp.eos};
    she_sample_params_t p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f,
                             .max_new_tokens = MJ, .stop_ids = stop_ids, .n_stop_ids = 1,
                             .stop_strings = stop_nl, .n_stop_strings = 1, .tok = rm->tok};
    for (int done = 0; done < n;) {
        int B = 0;
        for (; done < n && B < rm->max_batch; done++) {
            p_correct[done] = -1.0f;
            if (justification)
                justification[done][0] = '\0';
            char e[SHE_ERRSTR_SIZE];
            if (she_rm_encode_query(&rm->cfg, rm->tok, &rm->sp, q[done].sample, q[done].chain,
                                    q[done].chain_len, q[done].step, rm->qids + (size_t)B * MQ,
                                    &rm->qlen[B], e, sizeof(e)) != SHE_OK)
                continue; /* no prompt: not judged */
            rm->rows[B] = rm->qids + (size_t)B * MQ;
            rm->index[B++] = done;
        }
        if (B == 0)
            continue;
        SHE_TRY(she_engine_generate(rm->sampler, rm->rows, rm->qlen, B, &p, 0, rm->gen,
                                    rm->gen_logp, NULL, rm->gen_len, NULL, errstr, errstr_size));
        /* rows: question + justification + the verdicts' shared prefix */
        int T = 0;
        for (int b = 0; b < B; b++) {
            char text[SHE_RM_JUSTIFY_TEXT];
            size_t len = 0;
            int k = 0;
            const int32_t *g = rm->gen + (size_t)b * MJ;
            while (k < rm->gen_len[b] && g[k] != rm->sp.eos)
                k++;
            char e[SHE_ERRSTR_SIZE];
            if (she_tokenizer_decode(rm->tok, g, k, 0, text, sizeof(text) - 2, &len, e,
                                     sizeof(e)) != SHE_OK)
                len = len > sizeof(text) - 2 ? sizeof(text) - 2 : 0;
            len = cut_justification(text, len);
            text[len] = '\0';
            if (justification)
                memcpy(justification[rm->index[b]], text, len + 1);
            int32_t *row = rm->tokens + (size_t)b * rm->max_seq;
            memcpy(row, rm->qids + (size_t)b * MQ, sizeof(int32_t) * rm->qlen[b]);
            int nj = 0;
            /* a justification over budget keeps its first MJ tokens (encode writes a prefix) */
            (void)she_tokenizer_encode(rm->tok, text, len, 0, row + rm->qlen[b], MJ, &nj, e,
                                       sizeof(e));
            int at = rm->qlen[b] + (nj < MJ ? nj : MJ);
            memcpy(row + at, rm->prefix, sizeof(int32_t) * rm->n_prefix);
            at += rm->n_prefix;
            rm->last[b] = at - 1;
            T = at > T ? at : T;
        }
        /* repack the rows with stride T, right padded */
        for (int b = 0; b < B; b++) {
            int32_t *src = rm->tokens + (size_t)b * rm->max_seq;
            int len = rm->last[b] + 1;
            memmove(rm->tokens + (size_t)b * T, src, sizeof(int32_t) * len);
            for (int t = 0; t < T; t++)
                rm->mask[(size_t)b * T + t] = t < len;
            for (int t = len; t < T; t++)
                rm->tokens[(size_t)b * T + t] = rm->sp.pad;
        }
        SHE_TRY(verdicts(rm, B, T, p_correct, errstr, errstr_size));
    }
    return SHE_OK;
}
