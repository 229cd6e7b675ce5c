/* test_model_grad.c -- the model's backward pass against central finite differences.
 *
 * The reference is an independent, naive double-precision implementation of the same model
 * (written here from the HF definitions), so the finite differences are accurate to ~1e-9 and
 * the comparison measures the float backward alone.  The loss is L = sum a_r logp_r +
 * sum c_r entropy_r with random a, c at a temperature != 1, so dlogp and dentropy both flow.
 * Each parameter group is checked on its own; the group nearest the loss that fails points at
 * the op whose backward is wrong:
 *   lm_head, model.norm          logsoftmax at temperature, entropy, final rmsnorm
 *   down_proj, gate/up_proj      linear, swiglu
 *   post_attention_layernorm     rmsnorm
 *   o_proj, q/k/v_proj (+bias)   attention (GQA, causal, padding mask), rope, linear + bias
 *   input_layernorm, embedding   rmsnorm, embedding (tied: + LM head)
 * Batches mix a full row, a right-padded row and a left-padded row, with some targets -1.
 * Tolerance: |analytic - numeric| <= 2e-3 * max|numeric over the group| + 1e-2 * |numeric|. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "test.h"

/* ---- the double-precision reference ---- */

typedef struct ref {
    const she_model_t *m; /* for sizes and the layout offsets */
    double *p;            /* parameters in double, same layout as m->params */
} ref_t;

static size_t off(const she_model_t *m, const float *p) { return (size_t)(p - m->params); }

static void ref_rmsnorm(double *out, const double *x, const double *w, int D, double eps) {
    double ss = 0;
    for (int i = 0; i < D; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++)
        out[i] = x[i] * r * w[i];
}

/* y (n_out) = W (n_out, n_in) x + b */
static void ref_linear(double *y, const double *W, const double *b, const double *x, int n_in,
                       int n_out) {
    for (int o = 0; o < n_out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < n_in; i++)
            s += W[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

static void ref_rope(double *v, int hd, int pos, double theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double ang = pos * pow(theta, -2.0 * i / hd), c = cos(ang), s = sin(ang);
        double a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

/* Returns L; fills logp/ent (B*T) when non-NULL. */
static double ref_loss(const ref_t *rf, const int32_t *tok, const uint8_t *mask,
                       const int32_t *tgt, int B, int T, double temp, const double *a,
                       const double *cw, double *logp_out, double *ent_out) {
    const she_model_t *m = rf->m;
    const she_model_config_t *c = &m->cfg;
    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, H = c->n_heads;
    int KV = c->n_kv_heads, hd = D / H, kvd = KV * hd, Q = D + 2 * kvd, N = B * T;
    const double *P = rf->p;
    double *x = calloc((size_t)N * D, sizeof(double)), *h = calloc((size_t)N * D, sizeof(double));
    double *qkv = calloc((size_t)N * Q, sizeof(double)), *o = calloc((size_t)N * D, sizeof(double));
    double *gu = calloc(2 * (size_t)F, sizeof(double)), *tmp = calloc((size_t)D + F, sizeof(double));
    double *logits = calloc((size_t)V, sizeof(double)), *sc = calloc((size_t)T, sizeof(double));
    int *pos = calloc((size_t)N, sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0, seen = 0; t < T; t++) {
            seen += mask[b * T + t];
            pos[b * T + t] = seen ? seen - 1 : 0;
        }
    for (int r = 0; r < N; r++)
        memcpy(x + (size_t)r * D, P + off(m, m->w.embed) + (size_t)tok[r] * D, D * sizeof(double));
    for (int l = 0; l < c->n_layers; l++) {
        const double *wqkv = P + off(m, m->w.wqkv) + (size_t)l * Q * D;
        const double *bqkv = m->w.bqkv ? P + off(m, m->w.bqkv) + (size_t)l * Q : NULL;
        for (int r = 0; r < N; r++) {
            ref_rmsnorm(h + (size_t)r * D, x + (size_t)r * D, P + off(m, m->w.ln1) + (size_t)l * D,
                        D, c->rms_norm_eps);
            ref_linear(qkv + (size_t)r * Q, wqkv, bqkv, h + (size_t)r * D, D, Q);
            for (int hh = 0; hh < H; hh++)
                ref_rope(qkv + (size_t)r * Q + hh * hd, hd, pos[r], c->rope_theta);
            for (int g = 0; g < KV; g++)
                ref_rope(qkv + (size_t)r * Q + D + g * hd, hd, pos[r], c->rope_theta);
        }
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++) {
                int g = hh / (H / KV);
                for (int i = 0; i < T; i++) {
                    const double *q = qkv + (size_t)(b * T + i) * Q + hh * hd;
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j <= i; j++) {
                        if (!mask[b * T + j])
                            continue;
                        const double *k = qkv + (size_t)(b * T + j) * Q + D + g * hd;
                        double s = 0;
                        for (int d = 0; d < hd; d++)
                            s += q[d] * k[d];
                        sc[j] = s / sqrt((double)hd);
                        mx = fmax(mx, sc[j]);
                    }
                    double *out = o + (size_t)(b * T + i) * D + hh * hd;
                    memset(out, 0, hd * sizeof(double));
                    if (mx == -INFINITY)
                        continue;
                    for (int j = 0; j <= i; j++)
                        if (mask[b * T + j])
                            sum += exp(sc[j] - mx);
                    for (int j = 0; j <= i; j++) {
                        if (!mask[b * T + j])
                            continue;
                        double p = exp(sc[j] - mx) / sum;
                        const double *v = qkv + (size_t)(b * T + j) * Q + D + kvd + g * hd;
                        for (int d = 0; d < hd; d++)
                            out[d] += p * v[d];
                    }
                }
            }
        for (int r = 0; r < N; r++) {
            double *xr = x + (size_t)r * D;
            ref_linear(tmp, P + off(m, m->w.wo) + (size_t)l * D * D, NULL, o + (size_t)r * D, D, D);
            for (int i = 0; i < D; i++)
                xr[i] += tmp[i];
            ref_rmsnorm(h, xr, P + off(m, m->w.ln2) + (size_t)l * D, D, c->rms_norm_eps);
            ref_linear(gu, P + off(m, m->w.wgu) + (size_t)l * 2 * F * D, NULL, h, D, 2 * F);
            for (int i = 0; i < F; i++)
                gu[i] = gu[i] / (1.0 + exp(-gu[i])) * gu[F + i];
            ref_linear(tmp, P + off(m, m->w.wd) + (size_t)l * D * F, NULL, gu, F, D);
            for (int i = 0; i < D; i++)
                xr[i] += tmp[i];
        }
    }
    double L = 0;
    for (int r = 0; r < N; r++) {
        double lp = 0, ent = 0;
        if (mask[r] && tgt[r] >= 0) {
            ref_rmsnorm(h, x + (size_t)r * D, P + off(m, m->w.lnf), D, c->rms_norm_eps);
            ref_linear(logits, P + off(m, m->w.lm_head), NULL, h, D, V);
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < V; j++)
                mx = fmax(mx, logits[j] / temp);
            for (int j = 0; j < V; j++)
                s += exp(logits[j] / temp - mx);
            double lse = mx + log(s);
            for (int j = 0; j < V; j++) {
                double lpj = logits[j] / temp - lse;
                ent -= exp(lpj) * lpj;
            }
            lp = logits[tgt[r]] / temp - lse;
            L += a[r] * lp + cw[r] * ent;
        }
        if (logp_out)
            logp_out[r] = lp;
        if (ent_out)
            ent_out[r] = ent;
    }
    free(x), free(h), free(qkv), free(o), free(gu), free(tmp), free(logits), free(sc), free(pos);
    return L;
}

/* ---- helpers ---- */

static uint64_t rng_state = 12345;
static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

static she_model_config_t tiny_config(const char *type, int tied, int bias, int H, int KV) {
    she_model_config_t c = {0};
    snprintf(c.model_type, sizeof(c.model_type), "%s", type);
    c.vocab_size = 23;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.n_layers = 2;
    c.n_heads = H;
    c.n_kv_heads = KV;
    c.max_position_embeddings = 64;
    c.rope_theta = 100.0; /* large angles even at small positions */
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = tied;
    c.attention_bias = bias;
    return c;
}

#define B_ 3
#define T_ 7

/* Full row, right-padded row, left-padded row; a few targets -1. */
static void make_batch(int32_t *tok, uint8_t *mask, int32_t *tgt, int V) {
    for (int r = 0; r < B_ * T_; r++) {
        int b = r / T_, t = r % T_;
        tok[r] = (int32_t)(urand() * V);
        tgt[r] = (int32_t)(urand() * V);
        mask[r] = !((b == 1 && t >= T_ - 2) || (b == 2 && t < 3));
    }
    tgt[2] = -1;
    tgt[T_ + 1] = -1;
}

static void check_model(she_model_config_t cfg, float temperature) {
    char errstr[512];
    she_model_t *m = NULL;
    REQUIRE_OK(she_model_new(&cfg, B_, T_, &m, errstr, sizeof(errstr)));
    she_model_init_weights(m, 7, 0.3f);
    /* non-trivial norm weights and biases, so their gradients are exercised */
    for (size_t i = m->n_decay; i < m->n_params; i++)
        m->params[i] = (float)(0.5 + urand());
    if (m->w.bqkv)
        for (int i = 0; i < cfg.n_layers * m->qkv_dim; i++)
            m->w.bqkv[i] = (float)(urand() - 0.5);

    int32_t tok[B_ * T_], tgt[B_ * T_];
    uint8_t mask[B_ * T_];
    make_batch(tok, mask, tgt, cfg.vocab_size);
    double a[B_ * T_], cw[B_ * T_];
    float af[B_ * T_], cf[B_ * T_], logp[B_ * T_], ent[B_ * T_];
    for (int r = 0; r < B_ * T_; r++) {
        af[r] = (float)(a[r] = urand() - 0.5);
        cf[r] = (float)(cw[r] = 0.5 * (urand() - 0.5));
    }

    ref_t rf = {m, malloc(m->n_params * sizeof(double))};
    for (size_t i = 0; i < m->n_params; i++)
        rf.p[i] = m->params[i];
    double rlogp[B_ * T_], rent[B_ * T_];
    ref_loss(&rf, tok, mask, tgt, B_, T_, temperature, a, cw, rlogp, rent);

    she_model_zero_grad(m);
    REQUIRE_OK(she_model_forward(m, tok, mask, tgt, B_, T_, temperature, logp, ent, errstr,
                                 sizeof(errstr)));
    for (int r = 0; r < B_ * T_; r++) {
        CHECK_CLOSE(logp[r], rlogp[r], 1e-5, 1e-5);
        CHECK_CLOSE(ent[r], rent[r], 1e-5, 1e-5);
    }
    she_model_backward(m, af, cf);

    /* every tensor: up to 12 random entries */
    int n_bad = 0, n_checked = 0;
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const she_model_tensor_t *t = &m->tensors[ti];
        size_t numel = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        double num[12], ana[12], scale = 0;
        int n = numel < 12 ? (int)numel : 12;
        for (int k = 0; k < n; k++) {
            size_t i = t->offset + (numel <= 12 ? (size_t)k : (size_t)(urand() * numel));
            double p0 = rf.p[i], eps = 1e-5;
            rf.p[i] = p0 + eps;
            double lp = ref_loss(&rf, tok, mask, tgt, B_, T_, temperature, a, cw, NULL, NULL);
            rf.p[i] = p0 - eps;
            double lm = ref_loss(&rf, tok, mask, tgt, B_, T_, temperature, a, cw, NULL, NULL);
            rf.p[i] = p0;
            num[k] = (lp - lm) / (2 * eps);
            ana[k] = m->grads[i];
            scale = fmax(scale, fabs(num[k]));
        }
        for (int k = 0; k < n; k++) {
            n_checked++;
            if (fabs(ana[k] - num[k]) > 2e-3 * scale + 1e-2 * fabs(num[k])) {
                n_bad++;
                fprintf(stderr, "  %s [%d]: analytic %.8g numeric %.8g\n", t->name, k, ana[k],
                        num[k]);
            }
        }
        CHECK_MSG(scale > 0 || strstr(t->name, "embed"),
                  "%s: all sampled gradients are zero", t->name);
    }
    CHECK_MSG(n_bad == 0, "%d of %d gradient entries differ", n_bad, n_checked);

    /* gradient accumulation: a second forward/backward adds the same amount */
    float *g1 = malloc(m->n_params * sizeof(float));
    memcpy(g1, m->grads, m->n_params * sizeof(float));
    REQUIRE_OK(she_model_forward(m, tok, mask, tgt, B_, T_, temperature, logp, ent, errstr,
                                 sizeof(errstr)));
    she_model_backward(m, af, cf);
    int acc_bad = 0;
    for (size_t i = 0; i < m->n_params; i++)
        acc_bad += fabsf(m->grads[i] - 2 * g1[i]) > 1e-6f + 1e-5f * fabsf(g1[i]);
    CHECK_MSG(acc_bad == 0, "%d gradients are not doubled by a second backward", acc_bad);
    free(g1);
    free(rf.p);
    she_model_free(m);
}

/* MHA, untied, no bias (Llama). */
static void test_llama_mha_untied(void) { check_model(tiny_config("llama", 0, 0, 4, 4), 1.0f); }
/* GQA 4:2, untied, no bias, temperature 0.7. */
static void test_llama_gqa_temperature(void) {
    check_model(tiny_config("llama", 0, 0, 4, 2), 0.7f);
}
/* Qwen2: GQA 4:1, q/k/v bias, tied head, temperature 1.3. */
static void test_qwen2_gqa_bias_tied(void) { check_model(tiny_config("qwen2", 1, 1, 4, 1), 1.3f); }

/* The building blocks shared with the sampler. */
static void test_building_blocks(void) {
    /* she_expf: relative error against libm over the softmax range */
    double worst = 0;
    for (float x = -80.0f; x < 80.0f; x += 0.0137f)
        worst = fmax(worst, fabs(she_expf(x) - exp((double)x)) / exp((double)x));
    CHECK_MSG(worst < 4e-7, "she_expf relative error %.3g", worst);
    CHECK(she_expf(-1e30f) < 1e-37f);
    /* she_rope is a rotation: norms are kept, and position 0 is the identity */
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, v0[8], cs[2] = {cosf(0.3f), cosf(0.9f)};
    float sn[2] = {sinf(0.3f), sinf(0.9f)}, one[2] = {1, 1}, zero[2] = {0, 0};
    memcpy(v0, v, sizeof(v));
    she_rope(v, 2, 4, one, zero);
    CHECK(memcmp(v, v0, sizeof(v)) == 0);
    she_rope(v, 2, 4, cs, sn);
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 8; i++)
        n0 += v0[i] * v0[i], n1 += v[i] * v[i];
    CHECK_CLOSE(n1, n0, 1e-4, 1e-6);
    /* rotate_half: (x0, x2) rotate together with angle 0.3 */
    CHECK_CLOSE(v[0], 1 * cs[0] - 3 * sn[0], 1e-6, 0);
    CHECK_CLOSE(v[2], 3 * cs[0] + 1 * sn[0], 1e-6, 0);
    /* she_swiglu */
    float gu[4] = {0.5f, -2.0f, 3.0f, 0.25f}, out[2];
    she_swiglu(out, gu, 2);
    CHECK_CLOSE(out[0], 0.5 / (1 + exp(-0.5)) * 3.0, 1e-6, 1e-6);
    CHECK_CLOSE(out[1], -2.0 / (1 + exp(2.0)) * 0.25, 1e-6, 1e-6);
}

int main(void) {
    RUN(test_building_blocks);
    RUN(test_llama_mha_untied);
    RUN(test_llama_gqa_temperature);
    RUN(test_qwen2_gqa_bias_tied);
    TEST_DONE();
}
