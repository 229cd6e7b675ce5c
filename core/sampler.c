/* sampler.c -- batched KV-cache generation (see sampler.h). */
#include "sampler.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>


struct she_sampler_s {
    const she_model_t *m;
    int max_batch, max_seq, chunk, n_threads;
    size_t layer_stride;          /* floats per layer in a cache: max_batch * max_seq * KVD */
    float *kc, *vc;               /* (L, max_batch, max_seq, KVD) keys (after RoPE) and values */
    float *rope_cos, *rope_sin;   /* (max_seq, hd/2) */
    float *x, *h, *qkv, *att, *gu, *act; /* packed rows: (chunk, D|D|QKV|D|2F|F) */
    float *hsel;                  /* (chunk, D) final-normed rows whose logits are wanted */
    float *logits;                /* (max_batch, V) packed: slot logit_row[b] holds row b's */
    float *scores;                /* (n_threads, max_seq) */
    float *probs;                 /* (n_threads, V) */
    int32_t *cand;                /* (n_threads, V) */
    int32_t *row_of, *pos_of, *tok_of; /* (chunk) what each packed row is */
    uint8_t *want;                /* (chunk) row needs logits */
    int *len;                     /* (max_batch) tokens in each row's cache */
    int *leader;                  /* (max_batch) row whose prefill this row shares */
    int *active;                  /* (max_batch) rows still generating */
    int *sel_row;                 /* (chunk) cache row of each selected logits row */
    int *logit_row;               /* (max_batch) slot of each row's logits in `logits`, -1 none */
    uint64_t *rng;                /* (max_batch) */
    char *tail;                   /* (max_batch, SHE_SAMPLE_STOP_TAIL) */
    int *tail_len;                /* (max_batch) */
    float *block;                 /* the one float allocation everything above points into */
};

she_err_t she_sampler_new(const she_model_t *m, int max_batch, int max_seq, she_sampler_t **out,
                          char *errstr, size_t errstr_size) {
    const she_model_config_t *c = &m->cfg;
    if (max_batch < 1 || max_seq < 2 || max_seq > c->max_position_embeddings)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "sampler sizes %d x %d: need batch >= 1 and 2 <= seq <= %d", max_batch,
                        max_seq, c->max_position_embeddings);
    she_sampler_t *s = calloc(1, sizeof(*s));
    SHE_CHECK_ALLOC(s);
    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, Q = m->qkv_dim;
    int half = m->head_dim / 2;
    s->m = m;
    s->max_batch = max_batch;
    s->max_seq = max_seq;
    /* Prefill chunks big enough for efficient GEMMs, never smaller than one decode step. */
    s->chunk = max_batch > 512 ? max_batch : 512;
    s->n_threads = omp_get_max_threads();
    s->layer_stride = (size_t)max_batch * max_seq * m->kv_dim;
    size_t C = (size_t)s->chunk;
    size_t floats = 2 * (size_t)c->n_layers * s->layer_stride + 2 * (size_t)max_seq * half +
                    C * ((size_t)3 * D + Q + 3 * (size_t)F) + C * D + (size_t)max_batch * V +
                    (size_t)s->n_threads * max_seq + (size_t)s->n_threads * V;
    s->block = malloc(floats * sizeof(float));
    s->cand = malloc((size_t)s->n_threads * V * sizeof(int32_t));
    s->row_of = malloc(3 * C * sizeof(int32_t));
    s->want = malloc(C);
    s->len = malloc((size_t)(5 * max_batch + C) * sizeof(int));
    s->rng = malloc((size_t)max_batch * sizeof(uint64_t));
    s->tail = malloc((size_t)max_batch * SHE_SAMPLE_STOP_TAIL);
    if (!s->block || !s->cand || !s->row_of || !s->want || !s->len || !s->rng || !s->tail) {
        she_sampler_free(s);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size,
                        "cannot allocate the sampler's %.1f MiB", floats * 4.0 / (1 << 20));
    }
    float *p = s->block;
    s->kc = p, p += (size_t)c->n_layers * s->layer_stride;
    s->vc = p, p += (size_t)c->n_layers * s->layer_stride;
    s->rope_cos = p, p += (size_t)max_seq * half;
    s->rope_sin = p, p += (size_t)max_seq * half;
    s->x = p, p += C * D;
    s->h = p, p += C * D;
    s->qkv = p, p += C * Q;
    s->att = p, p += C * D;
    s->gu = p, p += C * 2 * F;
    s->act = p, p += C * F;
    s->hsel = p, p += C * D;
    s->logits = p, p += (size_t)max_batch * V;
    s->scores = p, p += (size_t)s->n_threads * max_seq;
    s->probs = p;
    s->pos_of = s->row_of + C;
    s->tok_of = s->pos_of + C;
    s->leader = s->len + max_batch;
    s->active = s->leader + max_batch;
    s->tail_len = s->active + max_batch;
    s->logit_row = s->tail_len + max_batch;
    s->sel_row = s->logit_row + max_batch;
    /* Same angles as the training forward (model.c), so cached keys match its keys. */
    for (int t = 0; t < max_seq; t++)
        for (int i = 0; i < half; i++) {
            double inv_freq = pow(c->rope_theta, -(double)(2 * i) / (double)m->head_dim);
            s->rope_cos[(size_t)t * half + i] = (float)cos((double)t * inv_freq);
            s->rope_sin[(size_t)t * half + i] = (float)sin((double)t * inv_freq);
        }
    *out = s;
    return SHE_OK;
}

void she_sampler_free(she_sampler_t *s) {
    if (!s)
        return;
    free(s->block);
    free(s->cand);
    free(s->row_of);
    free(s->want);
    free(s->len);
    free(s->rng);
    free(s->tail);
    free(s);
}

double she_sampler_flops(const she_model_config_t *c, int B, int prompt_len, int n_new) {
    double D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, L = c->n_layers;
    double kvd = (double)c->n_kv_heads * (D / c->n_heads);
    double per_token = 2.0 * L * (D * (D + 2 * kvd) + D * D + 3.0 * D * F);
    double ctx = 0.0; /* sum over generated tokens of the context they attend to */
    for (int i = 0; i < n_new; i++)
        ctx += prompt_len + i + 1;
    double prefill_ctx = 0.5 * prompt_len * (prompt_len + 1.0);
    return (double)B * (per_token * (prompt_len + n_new) + 2.0 * V * D * n_new +
                        4.0 * L * D * (ctx + prefill_ctx));
}

/* C (n, N) (+)= A (n, K) @ W^T, W in [N, K] layout, split over the OpenMP threads. */
static void gemm_nt(const she_sampler_t *s, float *C, const float *A, const float *W, int n,
                    int K, int N, float beta) {
    she_gemm(s->n_threads, 0, 1, n, N, K, 1.0f, A, K, W, K, beta, C, N);
}

/* Runs n packed tokens (row_of/pos_of/tok_of) through every layer, writing their keys and
 * values into the cache, and leaves the final-normed hidden state of each row with want[i]
 * in hsel (in packed order).  Returns how many rows were selected. */
static int packed_forward(she_sampler_t *s, int n) {
    const she_model_t *m = s->m;
    const she_model_config_t *c = &m->cfg;
    const she_model_weights_t *w = &m->w;
    int D = c->hidden_size, F = c->intermediate_size, Q = m->qkv_dim, KVD = m->kv_dim;
    int H = c->n_heads, KV = c->n_kv_heads, hd = m->head_dim, half = hd / 2;
    int group = H / KV;
    float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);

    for (int i = 0; i < n; i++)
        memcpy(s->x + (size_t)i * D, w->embed + (size_t)s->tok_of[i] * D, (size_t)D * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        float *kc = s->kc + (size_t)l * s->layer_stride, *vc = s->vc + (size_t)l * s->layer_stride;
        she_rmsnorm(s->h, NULL, s->x, w->ln1 + (size_t)l * D, n, D, eps);
        if (w->bqkv)
            for (int i = 0; i < n; i++)
                memcpy(s->qkv + (size_t)i * Q, w->bqkv + (size_t)l * Q, (size_t)Q * sizeof(float));
        gemm_nt(s, s->qkv, s->h, w->wqkv + (size_t)l * Q * D, n, D, Q, w->bqkv ? 1.0f : 0.0f);
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
        for (int i = 0; i < n; i++) {
            float *row = s->qkv + (size_t)i * Q;
            const float *cs = s->rope_cos + (size_t)s->pos_of[i] * half;
            const float *sn = s->rope_sin + (size_t)s->pos_of[i] * half;
            she_rope(row, H, hd, cs, sn);
            she_rope(row + D, KV, hd, cs, sn);
            size_t at = ((size_t)s->row_of[i] * s->max_seq + s->pos_of[i]) * KVD;
            memcpy(kc + at, row + D, (size_t)KVD * sizeof(float));
            memcpy(vc + at, row + D + KVD, (size_t)KVD * sizeof(float));
        }
        /* Attention of each (token, head) over its own row's cache up to its position. */
#pragma omp parallel for schedule(dynamic, 4) num_threads(s->n_threads)
        for (int ih = 0; ih < n * H; ih++) {
            int i = ih / H, hh = ih % H, g = hh / group;
            const float *q = s->qkv + (size_t)i * Q + (size_t)hh * hd;
            const float *kbase = kc + (size_t)s->row_of[i] * s->max_seq * KVD + (size_t)g * hd;
            const float *vbase = vc + (size_t)s->row_of[i] * s->max_seq * KVD + (size_t)g * hd;
            float *sc = s->scores + (size_t)omp_get_thread_num() * s->max_seq;
            int ctx = s->pos_of[i] + 1;
            float mx = -INFINITY;
            for (int j = 0; j < ctx; j++) {
                const float *k = kbase + (size_t)j * KVD;
                float dot = 0.0f;
                for (int d = 0; d < hd; d++)
                    dot += q[d] * k[d];
                sc[j] = dot * scale;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            float sum = 0.0f;
            for (int j = 0; j < ctx; j++) {
                sc[j] = she_expf(sc[j] - mx);
                sum += sc[j];
            }
            float *o = s->att + (size_t)i * D + (size_t)hh * hd, inv = 1.0f / sum;
            for (int d = 0; d < hd; d++)
                o[d] = 0.0f;
            for (int j = 0; j < ctx; j++) {
                const float *v = vbase + (size_t)j * KVD;
                float pj = sc[j] * inv;
                for (int d = 0; d < hd; d++)
                    o[d] += pj * v[d];
            }
        }
        gemm_nt(s, s->x, s->att, w->wo + (size_t)l * D * D, n, D, D, 1.0f);
        she_rmsnorm(s->h, NULL, s->x, w->ln2 + (size_t)l * D, n, D, eps);
        gemm_nt(s, s->gu, s->h, w->wgu + (size_t)l * 2 * F * D, n, D, 2 * F, 0.0f);
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
        for (int i = 0; i < n; i++)
            she_swiglu(s->act + (size_t)i * F, s->gu + (size_t)i * 2 * F, F);
        gemm_nt(s, s->x, s->act, w->wd + (size_t)l * D * F, n, F, D, 1.0f);
    }
    int n_sel = 0;
    for (int i = 0; i < n; i++)
        if (s->want[i]) {
            she_rmsnorm(s->hsel + (size_t)n_sel * D, NULL, s->x + (size_t)i * D, w->lnf, 1, D, eps);
            s->sel_row[n_sel++] = s->row_of[i];
        }
    return n_sel;
}

/* Logits of the n_sel rows packed_forward selected, in one GEMM, into packed slots from
 * `first` on; records each row's slot in logit_row. Returns n_sel. */
static int logits_for_selected(she_sampler_t *s, int n_sel, int first) {
    int D = s->m->cfg.hidden_size, V = s->m->cfg.vocab_size;
    gemm_nt(s, s->logits + (size_t)first * V, s->hsel, s->m->w.lm_head, n_sel, D, V, 0.0f);
    for (int k = 0; k < n_sel; k++)
        s->logit_row[s->sel_row[k]] = first + k;
    return n_sel;
}

uint64_t she_sample_row_seed(uint64_t seed, int row) {
    return seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(row + 1));
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uniform01(uint64_t *state) { return (float)(splitmix64(state) >> 40) * 0x1.0p-24f; }

/* Descending by probability, ties by id, so truncation never depends on sort stability. */
static int by_prob_desc(const void *a, const void *b, void *probs_) {
    const float *probs = probs_;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (probs[i] != probs[j])
        return probs[i] > probs[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Moves the k largest probabilities (ties by id) to cand[0..k) (unordered): quickselect. */
static void select_top_k(int32_t *cand, int n, int k, const float *probs) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t pivot = cand[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (probs[cand[i]] > probs[pivot] || (probs[cand[i]] == probs[pivot] && cand[i] < pivot))
                i++;
            while (probs[cand[j]] < probs[pivot] || (probs[cand[j]] == probs[pivot] && cand[j] > pivot))
                j--;
            if (i <= j) {
                int32_t t = cand[i];
                cand[i++] = cand[j];
                cand[j--] = t;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

int32_t she_sample_draw(const float *z, int V, const she_sample_params_t *p, uint64_t *rng,
                          float *probs, int32_t *cand, float *logp, float *logp_trunc) {
    float inv_t = p->temperature > 0.0f ? 1.0f / p->temperature : 1.0f;
    float mx = -INFINITY;
    int32_t argmax = 0;
    for (int j = 0; j < V; j++)
        if (z[j] > mx) {
            mx = z[j];
            argmax = j;
        }
    mx *= inv_t;
    /* Same operations, in the same order, as the training forward's log-softmax. */
    float sum = 0.0f;
    for (int j = 0; j < V; j++) {
        probs[j] = she_expf(z[j] * inv_t - mx);
        sum += probs[j];
    }
    float lse = mx + logf(sum);
    if (p->temperature <= 0.0f) {
        *logp = z[argmax] - lse;
        *logp_trunc = 0.0f;
        return argmax;
    }
    int n = V;
    for (int j = 0; j < V; j++)
        cand[j] = j;
    if (p->top_k > 0 && p->top_k < V) {
        select_top_k(cand, V, p->top_k, probs);
        n = p->top_k;
    }
    float kept = 0.0f;
    if (p->top_p < 1.0f) {
        qsort_r(cand, (size_t)n, sizeof(int32_t), by_prob_desc, probs);
        float mass = 0.0f;
        for (int j = 0; j < n; j++)
            mass += probs[cand[j]];
        int keep = 0;
        for (; keep < n && kept < p->top_p * mass; keep++)
            kept += probs[cand[keep]];
        n = keep > 0 ? keep : 1;
        if (keep == 0)
            kept = probs[cand[0]];
    } else {
        for (int j = 0; j < n; j++)
            kept += probs[cand[j]];
    }
    float u = uniform01(rng) * kept, acc = 0.0f;
    int32_t tok = cand[n - 1];
    for (int j = 0; j < n; j++) {
        acc += probs[cand[j]];
        if (u < acc) {
            tok = cand[j];
            break;
        }
    }
    *logp = z[tok] * inv_t - lse;
    *logp_trunc = logf(probs[tok] / kept);
    return tok;
}

int she_sample_hits_stop_string(char *tail, int *tl, int32_t tok, const she_sample_params_t *p) {
    if (!p->n_stop_strings || !p->tok)
        return 0;
    char piece[128];
    size_t plen = 0;
    char err[64];
    if (she_tokenizer_decode(p->tok, &tok, 1, 0, piece, sizeof(piece), &plen, err, sizeof(err)) !=
        SHE_OK)
        plen = plen < sizeof(piece) ? plen : sizeof(piece);
    if ((size_t)*tl + plen > SHE_SAMPLE_STOP_TAIL) {
        /* keep the last half: stop strings are short */
        int keep = SHE_SAMPLE_STOP_TAIL / 2 < *tl ? SHE_SAMPLE_STOP_TAIL / 2 : *tl;
        memmove(tail, tail + *tl - keep, (size_t)keep);
        *tl = keep;
    }
    if (plen > SHE_SAMPLE_STOP_TAIL - (size_t)*tl)
        plen = SHE_SAMPLE_STOP_TAIL - (size_t)*tl;
    int before = *tl;
    memcpy(tail + *tl, piece, plen);
    *tl += (int)plen;
    for (int i = 0; i < p->n_stop_strings; i++) {
        size_t sl = strlen(p->stop_strings[i]);
        if (sl == 0 || sl > (size_t)*tl)
            continue;
        /* only matches that end inside the new piece are new */
        int from = before - (int)sl + 1 > 0 ? before - (int)sl + 1 : 0;
        if (memmem(tail + from, (size_t)(*tl - from), p->stop_strings[i], sl))
            return 1;
    }
    return 0;
}

int she_sample_row_done(const she_sample_params_t *p, char *tail, int *tail_len, int32_t tok,
                        int last, she_finish_t *why) {
    *why = SHE_FINISH_LENGTH;
    if (she_sample_is_stop_id(p, tok))
        *why = SHE_FINISH_STOP_TOKEN;
    else if (she_sample_hits_stop_string(tail, tail_len, tok, p))
        *why = SHE_FINISH_STOP_STRING;
    return last || *why != SHE_FINISH_LENGTH;
}

int she_sample_is_stop_id(const she_sample_params_t *p, int32_t tok) {
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] == tok)
            return 1;
    return 0;
}

she_err_t she_sampler_generate(she_sampler_t *s, const int32_t *const *prompts,
                               const int *prompt_lens, int B, const she_sample_params_t *p,
                               uint64_t seed, int32_t *out_tokens, float *out_logp,
                               float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                               char *errstr, size_t errstr_size) {
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
    float *tmp_trunc = out_logp_trunc;
    /* GEMMs are split over the OpenMP threads (she_gemm); OpenBLAS's own pool must stay idle. */
    int saved_blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
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
                n_logits += logits_for_selected(s, packed_forward(s, n), n_logits);
                n = 0;
            }
        }
        s->len[b] = prompt_lens[b];
    }
    if (n > 0)
        n_logits += logits_for_selected(s, packed_forward(s, n), n_logits);
    /* Followers share their leader's prefill: copy its cache rows. */
    for (int b = 0; b < B; b++) {
        int ld = s->leader[b];
        if (ld == b)
            continue;
        size_t bytes = (size_t)prompt_lens[b] * s->m->kv_dim * sizeof(float);
        for (int l = 0; l < c->n_layers; l++) {
            size_t off_b = (size_t)l * s->layer_stride + (size_t)b * s->max_seq * s->m->kv_dim;
            size_t off_l = (size_t)l * s->layer_stride + (size_t)ld * s->max_seq * s->m->kv_dim;
            memcpy(s->kc + off_b, s->kc + off_l, bytes);
            memcpy(s->vc + off_b, s->vc + off_l, bytes);
        }
        s->len[b] = prompt_lens[b];
    }

    /* Decode: sample from each row's logits, then run all active rows one position on. */
    int n_active = B;
    for (int b = 0; b < B; b++)
        s->active[b] = b;
    for (int step = 0; step < M && n_active > 0; step++) {
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
        for (int k = 0; k < n_active; k++) {
            int b = s->active[k];
            const float *z = s->logits + (size_t)s->logit_row[s->logit_row[b] >= 0 ? b : s->leader[b]] * V;
            int th = omp_get_thread_num();
            float lp, lpt;
            int32_t tok = she_sample_draw(z, V, p, &s->rng[b], s->probs + (size_t)th * V,
                                     s->cand + (size_t)th * V, &lp, &lpt);
            size_t at = (size_t)b * M + step;
            out_tokens[at] = tok;
            out_logp[at] = lp;
            if (tmp_trunc)
                tmp_trunc[at] = lpt;
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
        logits_for_selected(s, packed_forward(s, n_active), 0);
    }
    openblas_set_num_threads(saved_blas_threads);
    return SHE_OK;
}
