/* test_model_cuda.c -- the CUDA backend (model_cuda.h) against the CPU engine, the reference.
 *
 * On tiny configurations (GQA with q/k/v bias and an untied head, MHA with a tied head, MQA with
 * bias and a tied head; norm weights and biases randomised so those ops are really exercised)
 * and a batch with a full row, a right-padded row and a left-padded row, some targets -1:
 *   - every op of the forward, from the activations both backends keep (embedding, each
 *     RMSNorm and its 1/rms, q|k|v + bias + RoPE, attention and its log-sum-exp, o_proj +
 *     residual, gate|up, SwiGLU, down + residual, final norm, LM head, log-softmax at a
 *     temperature and the entropy);
 *   - two whole training steps: logp and entropy, every gradient tensor (by its HF name), the
 *     gradient norm, and parameters, m and v after each AdamW step.  Each AdamW step runs on
 *     both sides from the SAME gradients (the device's, downloaded): Adam divides by sqrt(v), so
 *     a gradient element that is pure rounding noise (|g| ~ 1e-9 where the two backends may
 *     disagree in sign) moves its parameter by a full +-lr on either side; comparing updates
 *     from unequal gradients would measure that, not the optimizer;
 *   - KV-cache sampling, greedy and with temperature/top-k/top-p, rows sharing a prompt, a stop
 *     token: the same tokens as the CPU sampler (the draws use the same generators), logp and
 *     logp_trunc close, and each generated token's logp equal to the CPU training forward's.
 *     Where a row's tokens part, the two picks must be a near-tie (their logp within 1e-3);
 *     the row is not compared further, as its continuations differ;
 *   - TF32 and BF16 math run and stay near FP32, and switching back to FP32 restores it; bad
 *     arguments are refused; blocks round-trip exactly.
 * Tolerances, |got - ref| <= atol + rtol * |ref| (FP32 on both sides, but other summation
 * orders, FMA contraction and expf instead of the CPU polynomial; a wrong op is off by O(1)):
 *   activations, logp, entropy, sampled logp    atol 1e-4, rtol 1e-4
 *   gradients, per tensor                       atol 1e-4 * max|ref| over the tensor, rtol 1e-3
 *   AdamW from equal gradients                  params atol 1e-6, rtol 1e-5; m and v atol 1e-12,
 *                                               rtol 1e-5; gradient norm rtol 1e-6
 *   forward with TF32                           atol 5e-2, rtol 5e-2 (10-bit mantissa products)
 *   forward with BF16                           atol 2e-1, rtol 2e-1 (7-bit mantissa products:
 *                                               8x TF32's rounding, summed over D = 32 terms)
 * Comparisons report the worst element (index, both values) and how many are out of bounds.
 *
 * Device-string parsing, and that creating a device model without a device fails cleanly, run
 * everywhere; the rest skips ("skipped: no CUDA device") where no device exists, e.g. CI. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_device.h"
#include "model.h"
#include "model_cuda.h"
#include "sampler.h"
#include "test.h"

#define ACT_ATOL 1e-4
#define ACT_RTOL 1e-4
#define GRAD_ATOL_REL 1e-4
#define GRAD_RTOL 1e-3
#define PARAM_ATOL 1e-6
#define PARAM_RTOL 1e-5
#define MOMENT_ATOL 1e-12
#define MOMENT_RTOL 1e-5
#define NORM_RTOL 1e-6
#define TF32_TOL 5e-2
#define BF16_TOL 2e-1
#define NEAR_TIE 1e-3

enum { V = 97, MAXB = 3, MAXS = 12, B = 3, T = 10 };
enum { SB = 6, SS = 48, NEW = 20 }; /* sampling: rows, positions, new tokens */

typedef struct cfg_case {
    const char *name;
    int kv_heads, bias, tied;
} cfg_case_t;

static const cfg_case_t CASES[] = {
    {"gqa, bias, untied", 2, 1, 0},
    {"mha, tied", 4, 0, 1},
    {"mqa, bias, tied", 1, 1, 1},
};
#define N_CASES ((int)(sizeof(CASES) / sizeof(CASES[0])))

static float uniform_pm1(uint64_t *x) {
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*x >> 40) * 0x1.0p-24) * 2.0f - 1.0f;
}

/* A tiny model with peaked distributions (std 0.3), norm weights 1 +- 0.1, biases +- 0.1. */
static she_model_t *tiny_model(const cfg_case_t *cc, int max_batch, int max_seq) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = V, .hidden_size = 32, .intermediate_size = 48,
                              .n_layers = 2, .n_heads = 4, .n_kv_heads = cc->kv_heads,
                              .max_position_embeddings = 64, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = cc->tied,
                              .attention_bias = cc->bias};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "%s", cc->bias ? "qwen2" : "llama");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, max_batch, max_seq, &m, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she_model_new: %s\n", errstr);
        return NULL;
    }
    she_model_init_weights(m, 7, 0.3f);
    uint64_t x = 99;
    size_t L = (size_t)cfg.n_layers, D = (size_t)cfg.hidden_size;
    for (size_t i = 0; i < L * D; i++) {
        m->w.ln1[i] = 1.0f + 0.1f * uniform_pm1(&x);
        m->w.ln2[i] = 1.0f + 0.1f * uniform_pm1(&x);
    }
    for (size_t i = 0; i < D; i++)
        m->w.lnf[i] = 1.0f + 0.1f * uniform_pm1(&x);
    if (m->w.bqkv)
        for (size_t i = 0; i < L * (size_t)m->qkv_dim; i++)
            m->w.bqkv[i] = 0.1f * uniform_pm1(&x);
    return m;
}

/* Checks got against ref element by element (equal infinities match, NaN never does) and
 * reports the worst one.  Returns 1 when all are within atol + rtol * |ref|. */
static int close_all(const char *what, const float *got, const float *ref, size_t n, double atol,
                     double rtol) {
    size_t worst = 0, n_bad = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], ratio;
        if (isnan(g) || isnan(r))
            ratio = INFINITY;
        else if (isinf(g) || isinf(r))
            ratio = g == r ? 0.0 : INFINITY;
        else
            ratio = fabs(g - r) / (atol + rtol * fabs(r));
        if (ratio > 1.0)
            n_bad++;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    CHECK_MSG(n_bad == 0,
              "%s: %zu of %zu out of tolerance; worst [%zu]: got %.9g, ref %.9g (|diff| %.3g, "
              "allowed %.3g)", what, n_bad, n, worst, (double)got[worst], (double)ref[worst],
              fabs((double)got[worst] - ref[worst]), atol + rtol * fabs((double)ref[worst]));
    return n_bad == 0;
}

/* A [B, T] batch: row 0 full, row 1 right-padded (3), row 2 left-padded (4); targets are the
 * next token, -1 at every 5th position and at each row's end. */
static void make_batch(int32_t *tokens, uint8_t *mask, int32_t *targets) {
    uint64_t x = 5;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int r = b * T + t;
            tokens[r] = (int32_t)((uniform_pm1(&x) + 1.0f) * 0.5f * (V - 1));
            mask[r] = b == 0 || (b == 1 && t < T - 3) || (b == 2 && t >= 4);
        }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int r = b * T + t;
            targets[r] = t + 1 < T && r % 5 != 4 ? tokens[r + 1] : -1;
        }
}

static int row_active(const uint8_t *mask, const int32_t *targets, int r) {
    return mask[r] && targets[r] >= 0;
}

/* ---- tests that run everywhere ---- */

static void test_device_parse(void) {
    char errstr[512];
    she_device_kind_t kind = SHE_DEVICE_CUDA;
    int index = -1;
    CHECK_OK(she_device_parse("cpu", &kind, &index, errstr, sizeof(errstr)));
    CHECK(kind == SHE_DEVICE_CPU && index == 0);
    CHECK_OK(she_device_parse("cuda", &kind, &index, errstr, sizeof(errstr)));
    CHECK(kind == SHE_DEVICE_CUDA && index == 0);
    CHECK_OK(she_device_parse("cuda:3", &kind, &index, errstr, sizeof(errstr)));
    CHECK(kind == SHE_DEVICE_CUDA && index == 3);
    CHECK_OK(she_device_parse("cuda:1023", &kind, &index, errstr, sizeof(errstr)));
    CHECK_EQ_INT(index, 1023);
    const char *bad[] = {"", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda: 1",
                         "cuda:1x", "cuda:1024", "cuda:99999999999999999999", "cpu:0", "cuda0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        CHECK_MSG(she_device_parse(bad[i], &kind, &index, errstr, sizeof(errstr)) ==
                      SHE_ERR_INVALID, "\"%s\" accepted", bad[i]);
        CHECK_MSG(strstr(errstr, "expected cpu, cuda or cuda:N") != NULL, "\"%s\": %s", bad[i],
                  errstr);
    }
    CHECK(she_device_parse(NULL, &kind, &index, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
}

/* Run only where there is no device (or no CUDA in the build): creation fails with a message
 * and leaves nothing behind; the destructors accept NULL. */
static void test_new_fails_without_device(void) {
    char errstr[512] = "";
    she_model_t *m = tiny_model(&CASES[0], MAXB, MAXS);
    REQUIRE(m != NULL);
    static char sentinel;
    she_cuda_model_t *cm = (she_cuda_model_t *)&sentinel; /* must become NULL */
    she_err_t err = she_cuda_model_new(m, 0, MAXB, MAXS, &cm, errstr, sizeof(errstr));
    CHECK(err == SHE_ERR_CUDA || err == SHE_ERR_UNSUPPORTED);
    CHECK(cm == NULL);
    CHECK_MSG(errstr[0] != '\0', "no message");
    fprintf(stderr, "  without a device: %s\n", errstr);
    she_cuda_model_free(NULL);
    she_cuda_sampler_free(NULL);
    she_model_free(m);
}

/* ---- device tests ---- */

static void test_roundtrip_and_accessors(void) {
    char errstr[512];
    she_model_t *m = tiny_model(&CASES[0], MAXB, MAXS), *back = tiny_model(&CASES[0], MAXB, MAXS);
    REQUIRE(m && back);
    she_cuda_model_t *cm = NULL;
    REQUIRE_OK(she_cuda_model_new(m, 0, MAXB, MAXS, &cm, errstr, sizeof(errstr)));
    memset(back->params, 0, m->n_params * sizeof(float));
    CHECK_OK(she_cuda_model_download(cm, back, NULL, errstr, sizeof(errstr)));
    CHECK(memcmp(back->params, m->params, m->n_params * sizeof(float)) == 0);

    she_adamw_t *opt = she_adamw_new(m->n_params), *opt_back = she_adamw_new(m->n_params);
    uint64_t x = 3;
    for (size_t i = 0; i < m->n_params; i++) {
        opt->m[i] = uniform_pm1(&x);
        opt->v[i] = fabsf(uniform_pm1(&x));
        m->params[i] += 0.5f;
    }
    opt->step = 41;
    CHECK_OK(she_cuda_model_upload(cm, m, opt, errstr, sizeof(errstr)));
    CHECK_OK(she_cuda_model_download(cm, back, opt_back, errstr, sizeof(errstr)));
    CHECK(memcmp(back->params, m->params, m->n_params * sizeof(float)) == 0);
    CHECK(memcmp(opt_back->m, opt->m, m->n_params * sizeof(float)) == 0);
    CHECK(memcmp(opt_back->v, opt->v, m->n_params * sizeof(float)) == 0);
    CHECK_EQ_INT(opt_back->step, 41);

    /* gradients start at zero */
    for (size_t i = 0; i < m->n_params; i++)
        back->grads[i] = 1.0f;
    CHECK_OK(she_cuda_model_download_grads(cm, back, errstr, sizeof(errstr)));
    size_t nz = 0;
    for (size_t i = 0; i < m->n_params; i++)
        nz += back->grads[i] != 0.0f;
    CHECK_EQ_INT(nz, 0);

    size_t n = 0;
    CHECK(she_cuda_model_grads_device(cm, &n) != NULL);
    CHECK_EQ_INT(n, m->n_params);
    CHECK(she_cuda_model_stream(cm) != NULL);

    /* another configuration's blocks are refused */
    she_model_t *other = tiny_model(&CASES[1], MAXB, MAXS);
    REQUIRE(other != NULL);
    CHECK(she_cuda_model_upload(cm, other, NULL, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_cuda_model_download(cm, other, NULL, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_model_free(other);
    she_adamw_free(opt);
    she_adamw_free(opt_back);
    she_cuda_model_free(cm);
    she_model_free(m);
    she_model_free(back);
}

static void test_bad_arguments(void) {
    char errstr[512];
    she_model_t *m = tiny_model(&CASES[0], MAXB, MAXS);
    REQUIRE(m != NULL);
    she_cuda_model_t *cm = NULL;
    CHECK(she_cuda_model_new(m, 0, 0, MAXS, &cm, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK(she_cuda_model_new(m, 0, MAXB, 65, &cm, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK(she_cuda_model_new(m, 1 << 20, MAXB, MAXS, &cm, errstr, sizeof(errstr)) ==
          SHE_ERR_CUDA);
    CHECK(cm == NULL);
    REQUIRE_OK(she_cuda_model_new(m, 0, MAXB, MAXS, &cm, errstr, sizeof(errstr)));
    int32_t tokens[MAXB * MAXS] = {0}, targets[MAXB * MAXS] = {0};
    float lp[MAXB * MAXS];
    CHECK(she_cuda_model_forward(cm, tokens, NULL, targets, MAXB + 1, 2, 1.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_cuda_model_forward(cm, tokens, NULL, targets, 1, MAXS + 1, 1.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_cuda_model_forward(cm, tokens, NULL, targets, 1, 2, 0.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_ERR_INVALID);
    tokens[1] = V;
    CHECK(she_cuda_model_forward(cm, tokens, NULL, targets, 1, 2, 1.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_ERR_INVALID);
    tokens[1] = 0;
    targets[0] = V;
    CHECK(she_cuda_model_forward(cm, tokens, NULL, targets, 1, 2, 1.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_ERR_INVALID);
    she_cuda_sampler_t *s = NULL;
    CHECK(she_cuda_sampler_new(cm, 0, 8, &s, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_cuda_sampler_new(cm, 2, 65, &s, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(s == NULL);
    she_cuda_model_free(cm);
    she_model_free(m);
}

/* Compares layer l's slice [l * stride, l * stride + n) of one activation array. */
static void cmp_layer(const char *op, int l, const float *got, const float *ref, size_t stride,
                      size_t n) {
    char what[128];
    snprintf(what, sizeof(what), "layer %d: %s", l, op);
    close_all(what, got + (size_t)l * stride, ref + (size_t)l * stride, n, ACT_ATOL, ACT_RTOL);
}

static void check_forward_ops(const cfg_case_t *cc) {
    char errstr[512];
    fprintf(stderr, "  %s\n", cc->name);
    she_model_t *m = tiny_model(cc, MAXB, MAXS), *got = tiny_model(cc, MAXB, MAXS);
    REQUIRE(m && got);
    she_cuda_model_t *cm = NULL;
    REQUIRE_OK(she_cuda_model_new(m, 0, MAXB, MAXS, &cm, errstr, sizeof(errstr)));
    int32_t tokens[B * T], targets[B * T];
    uint8_t mask[B * T];
    make_batch(tokens, mask, targets);
    const float temperature = 0.7f;
    float lp_c[B * T], ent_c[B * T], lp_g[B * T], ent_g[B * T];
    REQUIRE_OK(she_model_forward(m, tokens, mask, targets, B, T, temperature, lp_c, ent_c, errstr,
                                 sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, targets, B, T, temperature, lp_g, ent_g,
                                      errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_download_acts(cm, got, errstr, sizeof(errstr)));

    const she_model_acts_t *g = &got->a, *r = &m->a;
    size_t N = (size_t)B * T, mN = (size_t)MAXB * MAXS, D = (size_t)m->cfg.hidden_size;
    size_t F = (size_t)m->cfg.intermediate_size, Q = (size_t)m->qkv_dim;
    size_t H = (size_t)m->cfg.n_heads;
    CHECK(memcmp(g->pos, r->pos, N * sizeof(int32_t)) == 0);
    close_all("embedding", g->res, r->res, N * D, ACT_ATOL, ACT_RTOL);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        cmp_layer("input_layernorm", l, g->h1, r->h1, mN * D, N * D);
        cmp_layer("input_layernorm 1/rms", l, g->rstd1, r->rstd1, mN, N);
        cmp_layer("q|k|v + bias + rope", l, g->qkv, r->qkv, mN * Q, N * Q);
        cmp_layer("attention", l, g->att, r->att, mN * D, N * D);
        cmp_layer("attention log-sum-exp", l, g->lse, r->lse, mN * H, B * H * T);
        cmp_layer("o_proj + residual", l, g->res_mid, r->res_mid, mN * D, N * D);
        cmp_layer("post_attention_layernorm", l, g->h2, r->h2, mN * D, N * D);
        cmp_layer("post_attention_layernorm 1/rms", l, g->rstd2, r->rstd2, mN, N);
        cmp_layer("gate|up", l, g->gu, r->gu, mN * 2 * F, N * 2 * F);
        cmp_layer("swiglu", l, g->act, r->act, mN * F, N * F);
        cmp_layer("down_proj + residual", l, g->res + mN * D, r->res + mN * D, mN * D, N * D);
    }
    close_all("final norm", g->hf, r->hf, N * D, ACT_ATOL, ACT_RTOL);
    close_all("final norm 1/rms", g->rstdf, r->rstdf, N, ACT_ATOL, ACT_RTOL);
    close_all("lm_head logits", g->logits, r->logits, N * V, ACT_ATOL, ACT_RTOL);
    for (size_t i = 0; i < N; i++)
        if (row_active(mask, targets, (int)i)) {
            close_all("row log-sum-exp", g->row_lse + i, r->row_lse + i, 1, ACT_ATOL, ACT_RTOL);
            close_all("row entropy", g->row_ent + i, r->row_ent + i, 1, ACT_ATOL, ACT_RTOL);
        }
    close_all("logp", lp_g, lp_c, N, ACT_ATOL, ACT_RTOL);
    close_all("entropy", ent_g, ent_c, N, ACT_ATOL, ACT_RTOL);

    /* without targets: logits only, outputs untouched */
    float sentinel[B * T];
    for (size_t i = 0; i < N; i++)
        sentinel[i] = 42.0f;
    REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, NULL, B, T, 1.0f, sentinel, NULL, errstr,
                                      sizeof(errstr)));
    for (size_t i = 0; i < N; i++)
        CHECK(sentinel[i] == 42.0f);
    REQUIRE_OK(she_cuda_model_download_acts(cm, got, errstr, sizeof(errstr)));
    close_all("lm_head logits (no targets)", g->logits, r->logits, N * V, ACT_ATOL, ACT_RTOL);

    /* TF32 and BF16 math: run, and stay near full FP32; FP32 again is FP32 again */
    REQUIRE_OK(she_cuda_model_set_math(cm, SHE_MATH_TF32, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, targets, B, T, temperature, lp_g, NULL,
                                      errstr, sizeof(errstr)));
    close_all("logp with TF32", lp_g, lp_c, N, TF32_TOL, TF32_TOL);
    REQUIRE_OK(she_cuda_model_set_math(cm, SHE_MATH_BF16, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, targets, B, T, temperature, lp_g, NULL,
                                      errstr, sizeof(errstr)));
    close_all("logp with BF16", lp_g, lp_c, N, BF16_TOL, BF16_TOL);
    CHECK(she_cuda_model_set_math(cm, (she_math_t)7, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    REQUIRE_OK(she_cuda_model_set_math(cm, SHE_MATH_FP32, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, targets, B, T, temperature, lp_g, NULL,
                                      errstr, sizeof(errstr)));
    close_all("logp with FP32 again", lp_g, lp_c, N, ACT_ATOL, ACT_RTOL);
    she_cuda_model_free(cm);
    she_model_free(m);
    she_model_free(got);
}

static void test_forward_ops(void) {
    for (int i = 0; i < N_CASES; i++)
        check_forward_ops(&CASES[i]);
}

static void compare_grads(const she_model_t *ref, const she_model_t *got, int step) {
    for (int i = 0; i < ref->n_tensors; i++) {
        const she_model_tensor_t *t = &ref->tensors[i];
        size_t n = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
        const float *r = ref->grads + t->offset, *g = got->grads + t->offset;
        double mx = 0.0;
        for (size_t j = 0; j < n; j++)
            mx = fabs(r[j]) > mx ? fabs(r[j]) : mx;
        char what[160];
        snprintf(what, sizeof(what), "step %d: grad %s", step, t->name);
        close_all(what, g, r, n, GRAD_ATOL_REL * mx + 1e-12, GRAD_RTOL);
    }
}

static void check_training_step(const cfg_case_t *cc) {
    char errstr[512];
    fprintf(stderr, "  %s\n", cc->name);
    she_model_t *m = tiny_model(cc, MAXB, MAXS), *got = tiny_model(cc, MAXB, MAXS);
    REQUIRE(m && got);
    she_cuda_model_t *cm = NULL;
    REQUIRE_OK(she_cuda_model_new(m, 0, MAXB, MAXS, &cm, errstr, sizeof(errstr)));
    she_adamw_t *opt = she_adamw_new(m->n_params), *opt_got = she_adamw_new(m->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    hp.beta2 = 0.95f;
    hp.weight_decay = 0.1f;
    int32_t tokens[B * T], targets[B * T];
    uint8_t mask[B * T];
    make_batch(tokens, mask, targets);
    float dlogp[B * T], dent[B * T];
    uint64_t x = 11;
    for (int i = 0; i < B * T; i++) {
        dlogp[i] = uniform_pm1(&x);
        dent[i] = 0.3f * uniform_pm1(&x);
    }
    const float temperature = 0.8f, lr = 1e-2f, grad_scale = 0.5f;
    const float max_norm[2] = {0.05f, 0.0f}; /* step 0 clips, step 1 does not */
    for (int step = 0; step < 2; step++) {
        float lp_c[B * T], ent_c[B * T], lp_g[B * T], ent_g[B * T];
        char what[64];
        she_model_zero_grad(m);
        REQUIRE_OK(she_cuda_model_zero_grad(cm, errstr, sizeof(errstr)));
        REQUIRE_OK(she_model_forward(m, tokens, mask, targets, B, T, temperature, lp_c, ent_c,
                                     errstr, sizeof(errstr)));
        REQUIRE_OK(she_cuda_model_forward(cm, tokens, mask, targets, B, T, temperature, lp_g,
                                          ent_g, errstr, sizeof(errstr)));
        snprintf(what, sizeof(what), "step %d: logp", step);
        close_all(what, lp_g, lp_c, B * T, ACT_ATOL, ACT_RTOL);
        snprintf(what, sizeof(what), "step %d: entropy", step);
        close_all(what, ent_g, ent_c, B * T, ACT_ATOL, ACT_RTOL);
        she_model_backward(m, dlogp, dent);
        REQUIRE_OK(she_cuda_model_backward(cm, dlogp, dent, errstr, sizeof(errstr)));
        REQUIRE_OK(she_cuda_model_download_grads(cm, got, errstr, sizeof(errstr)));
        compare_grads(m, got, step);

        /* AdamW from the device's gradients on both sides (see the file comment) */
        memcpy(m->grads, got->grads, m->n_params * sizeof(float));
        float norm_c = she_model_adamw_step(m, opt, &hp, lr, grad_scale, max_norm[step]);
        float norm_g = -1.0f;
        REQUIRE_OK(she_cuda_model_adamw_step(cm, &hp, lr, grad_scale, max_norm[step], &norm_g,
                                             errstr, sizeof(errstr)));
        CHECK_CLOSE(norm_g, norm_c, 0.0, NORM_RTOL);
        if (step == 0)
            CHECK_MSG(norm_c > max_norm[0], "norm %g: step 0 should clip", (double)norm_c);
        REQUIRE_OK(she_cuda_model_download(cm, got, opt_got, errstr, sizeof(errstr)));
        snprintf(what, sizeof(what), "step %d: params after AdamW", step);
        close_all(what, got->params, m->params, m->n_params, PARAM_ATOL, PARAM_RTOL);
        snprintf(what, sizeof(what), "step %d: AdamW m", step);
        close_all(what, opt_got->m, opt->m, m->n_params, MOMENT_ATOL, MOMENT_RTOL);
        snprintf(what, sizeof(what), "step %d: AdamW v", step);
        close_all(what, opt_got->v, opt->v, m->n_params, MOMENT_ATOL, MOMENT_RTOL);
        CHECK_EQ_INT(opt_got->step, opt->step);
    }
    she_adamw_free(opt);
    she_adamw_free(opt_got);
    she_cuda_model_free(cm);
    she_model_free(m);
    she_model_free(got);
}

static void test_training_step(void) {
    for (int i = 0; i < N_CASES; i++)
        check_training_step(&CASES[i]);
}

/* Prompts for SB rows; rows 4 and 5 share row 1's prompt (a group: prefilled once). */
static void make_prompts(int32_t prompts[SB][16], int lens[SB], const int32_t *pp[SB]) {
    uint64_t x = 42;
    for (int b = 0; b < SB; b++) {
        lens[b] = 3 + (b * 5) % 13;
        for (int t = 0; t < lens[b]; t++)
            prompts[b][t] = (int32_t)((uniform_pm1(&x) + 1.0f) * 0.5f * (V - 1));
        pp[b] = prompts[b];
    }
    pp[4] = pp[5] = prompts[1];
    lens[4] = lens[5] = lens[1];
}

/* Each generated token's logp equals the CPU training forward's for the same sequence. */
static void check_against_forward(she_model_t *m, const int32_t *const *pp, const int *lens,
                                  const int32_t *toks, const float *logp, const int *out_lens,
                                  float temperature) {
    char errstr[512];
    static int32_t tk[SB * SS], tg[SB * SS];
    static uint8_t mk[SB * SS];
    static float fl[SB * SS];
    int Tn = 0;
    for (int b = 0; b < SB; b++)
        Tn = lens[b] + out_lens[b] > Tn ? lens[b] + out_lens[b] : Tn;
    for (int i = 0; i < SB * Tn; i++) {
        tk[i] = 0;
        tg[i] = -1;
        mk[i] = 0;
    }
    for (int b = 0; b < SB; b++) {
        int n = lens[b] + out_lens[b];
        for (int t = 0; t < n; t++) {
            tk[b * Tn + t] = t < lens[b] ? pp[b][t] : toks[b * NEW + t - lens[b]];
            mk[b * Tn + t] = 1;
        }
        for (int t = lens[b] - 1; t < n - 1; t++)
            tg[b * Tn + t] = toks[b * NEW + t - lens[b] + 1];
    }
    REQUIRE_OK(she_model_forward(m, tk, mk, tg, SB, Tn, temperature, fl, NULL, errstr,
                                 sizeof(errstr)));
    for (int b = 0; b < SB; b++)
        for (int k = 0; k < out_lens[b]; k++) {
            char what[96];
            snprintf(what, sizeof(what), "row %d token %d: logp vs CPU forward", b, k);
            close_all(what, &logp[b * NEW + k], &fl[b * Tn + lens[b] - 1 + k], 1, ACT_ATOL,
                      ACT_RTOL);
        }
}

static void check_sampling(const cfg_case_t *cc, float temperature, int top_k, float top_p) {
    char errstr[512];
    fprintf(stderr, "  %s, temperature %g, top_k %d, top_p %g\n", cc->name, (double)temperature,
            top_k, (double)top_p);
    she_model_t *m = tiny_model(cc, SB, SS);
    REQUIRE(m != NULL);
    she_sampler_t *s = NULL;
    she_cuda_model_t *cm = NULL;
    she_cuda_sampler_t *cs = NULL;
    REQUIRE_OK(she_sampler_new(m, SB, SS, &s, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_model_new(m, 0, 2, 8, &cm, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_sampler_new(cm, SB, SS, &cs, errstr, sizeof(errstr)));
    int32_t prompts[SB][16];
    int lens[SB];
    const int32_t *pp[SB];
    make_prompts(prompts, lens, pp);
    const int32_t stop[] = {5};
    she_sample_params_t p = {.temperature = temperature, .top_k = top_k, .top_p = top_p,
                             .max_new_tokens = NEW, .stop_ids = stop, .n_stop_ids = 1};
    int32_t tok_c[SB * NEW], tok_g[SB * NEW];
    float lp_c[SB * NEW], lp_g[SB * NEW], lpt_c[SB * NEW], lpt_g[SB * NEW];
    int len_c[SB], len_g[SB];
    she_finish_t fin_c[SB], fin_g[SB];
    REQUIRE_OK(she_sampler_generate(s, pp, lens, SB, &p, 123, tok_c, lp_c, lpt_c, len_c, fin_c,
                                    errstr, sizeof(errstr)));
    REQUIRE_OK(she_cuda_sampler_generate(cs, pp, lens, SB, &p, 123, tok_g, lp_g, lpt_g, len_g,
                                         fin_g, errstr, sizeof(errstr)));
    int n_parted = 0;
    for (int b = 0; b < SB; b++) {
        int parted = 0;
        for (int k = 0; k < len_c[b] && k < len_g[b]; k++) {
            int at = b * NEW + k;
            char what[96];
            if (tok_g[at] != tok_c[at]) {
                CHECK_MSG(fabsf(lp_g[at] - lp_c[at]) <= NEAR_TIE,
                          "row %d token %d: device picked %d (logp %g), CPU %d (logp %g): not a "
                          "near-tie", b, k, tok_g[at], (double)lp_g[at], tok_c[at],
                          (double)lp_c[at]);
                fprintf(stderr, "    row %d parts at token %d (near-tie)\n", b, k);
                parted = 1;
                n_parted++;
                break;
            }
            snprintf(what, sizeof(what), "row %d token %d: logp", b, k);
            close_all(what, &lp_g[at], &lp_c[at], 1, ACT_ATOL, ACT_RTOL);
            snprintf(what, sizeof(what), "row %d token %d: logp_trunc", b, k);
            close_all(what, &lpt_g[at], &lpt_c[at], 1, ACT_ATOL, ACT_RTOL);
        }
        if (!parted) {
            CHECK_EQ_INT(len_g[b], len_c[b]);
            CHECK_EQ_INT(fin_g[b], fin_c[b]);
        }
    }
    CHECK_MSG(n_parted <= 1, "%d rows parted from the CPU sampler's", n_parted);
    check_against_forward(m, pp, lens, tok_g, lp_g, len_g, temperature > 0.0f ? temperature : 1.0f);

    /* a second call reuses the reserved cache and gives the same result */
    int32_t tok2[SB * NEW];
    float lp2[SB * NEW];
    int len2[SB];
    REQUIRE_OK(she_cuda_sampler_generate(cs, pp, lens, SB, &p, 123, tok2, lp2, NULL, len2, NULL,
                                         errstr, sizeof(errstr)));
    for (int b = 0; b < SB; b++) {
        CHECK_EQ_INT(len2[b], len_g[b]);
        CHECK(memcmp(tok2 + b * NEW, tok_g + b * NEW, (size_t)len_g[b] * sizeof(int32_t)) == 0);
        CHECK(memcmp(lp2 + b * NEW, lp_g + b * NEW, (size_t)len_g[b] * sizeof(float)) == 0);
    }
    she_cuda_sampler_free(cs);
    she_cuda_model_free(cm);
    she_sampler_free(s);
    she_model_free(m);
}

static void test_sampling(void) {
    for (int i = 0; i < N_CASES; i++) {
        check_sampling(&CASES[i], 0.0f, 0, 1.0f);
        check_sampling(&CASES[i], 0.9f, 0, 1.0f);
        check_sampling(&CASES[i], 0.8f, 12, 0.9f);
    }
}

int main(void) {
    RUN(test_device_parse);
    char errstr[512] = "";
    if (she_cuda_device_count(errstr, sizeof(errstr)) == 0) {
        RUN(test_new_fails_without_device);
        if (test_fns_failed_)
            TEST_DONE();
        TEST_SKIP("no CUDA device (%s)", errstr);
    }
    RUN(test_roundtrip_and_accessors);
    RUN(test_bad_arguments);
    RUN(test_forward_ops);
    RUN(test_training_step);
    RUN(test_sampling);
    TEST_DONE();
}
