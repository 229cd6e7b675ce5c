/* test_engine.c -- the device façade (core/engine.h) and the device option of the judge and
 * the rollouts.
 *
 * Everywhere (`test_engine`, label unit):
 *   - device selection: "cpu", "" and NULL are the CPU; malformed strings are SHE_ERR_CONFIG
 *     quoting them; a device this machine lacks (cuda:1023, and plain "cuda" where there is no
 *     device) is SHE_ERR_NOT_FOUND quoting it; the judge and the rollouts refuse both the same
 *     way and leave *out NULL;
 *   - the CPU engine IS the CPU engine: three training steps and greedy and sampled generation
 *     through the façade are bit-identical to the same model.h / sampler.h calls made
 *     directly (what keeps exact resume and the golden tests valid); the sync points change
 *     nothing.
 * With a CUDA device (`test_engine_gpu`, label gpu; "skipped: no CUDA device" elsewhere):
 *   - two training steps through the façade on cuda:0 against the CPU engine from the same
 *     weights: logp of each step's forward within atol 1e-4 + rtol 1e-4 (FP32 both sides, other
 *     summation orders), the gradient norm within rtol 1e-3, and after she_engine_download the
 *     parameters within atol 2 lr (1e-4 + 1e-3) max|g| + rtol 1e-5 and AdamW's step equal.
 *     AdamW runs with eps = 1 here: with the usual 1e-8 a first step moves every parameter by
 *     lr * sign(g), so a gradient element that is rounding noise on both sides (opposite signs)
 *     would differ by 2 lr; with eps = 1 each update is ~lr * g, so the parameters inherit the
 *     gradients' tolerance (see tests/test_model_cuda.c, which compares AdamW from equal
 *     gradients instead);
 *   - the sync points: weights changed on the host reach the device only after
 *     she_engine_upload (a forward before and after);
 *   - greedy judging and sampled rollouts of a tiny policy overfitted to one chain (peaked, so
 *     no near-ties): the judge on "cuda" gives exactly the CPU judge's texts, grades and token
 *     counts -- through she_judge_new (made before the training, then she_judge_sync) and
 *     through she_judge_new_engine on a cuda engine that did the overfitting itself; a device
 *     rollout made before the training follows the new weights once it is given a new policy
 *     version, and then draws the same tokens as the CPU rollout with the same seed. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_device.h"
#include "engine.h"
#include "test.h"
#include "trainer/judge.h"
#include "trainer/rollout.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

#define LOGP_ATOL 1e-4
#define LOGP_RTOL 1e-4
#define NORM_RTOL 1e-3
#define GRAD_ATOL_REL 1e-4 /* test_model_cuda.c's gradient tolerance */
#define GRAD_RTOL 1e-3
#define PARAM_RTOL 1e-5

enum { V = 97, B = 3, T = 10 };

static float uniform_pm1(uint64_t *x) {
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*x >> 40) * 0x1.0p-24) * 2.0f - 1.0f;
}

/* A tiny GQA model with q/k/v bias and peaked distributions (std 0.3). */
static she_model_t *tiny_model(void) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = V, .hidden_size = 32, .intermediate_size = 48,
                              .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                              .max_position_embeddings = 64, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 0,
                              .attention_bias = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "qwen2");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, B, T, &m, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she_model_new: %s\n", errstr);
        return NULL;
    }
    she_model_init_weights(m, 7, 0.3f);
    return m;
}

/* Row 0 full, row 1 right-padded, row 2 left-padded; next-token targets, some -1. */
static void make_batch(int32_t *tokens, uint8_t *mask, int32_t *targets, float *dlogp) {
    uint64_t x = 5;
    for (int r = 0; r < B * T; r++) {
        int b = r / T, t = r % T;
        tokens[r] = (int32_t)((uniform_pm1(&x) + 1.0f) * 0.5f * (V - 1));
        mask[r] = b == 0 || (b == 1 && t < T - 3) || (b == 2 && t >= 4);
    }
    for (int r = 0; r < B * T; r++) {
        int t = r % T;
        targets[r] = t + 1 < T && r % 5 != 4 ? tokens[r + 1] : -1;
        dlogp[r] = mask[r] && targets[r] >= 0 ? -1.0f / (B * T) : 0.0f;
    }
}

/* ---- everywhere ---- */

static void test_device_select(void) {
    char errstr[512];
    she_device_t dev = {SHE_DEVICE_CUDA, 5, SHE_MATH_FP32};
    const char *cpus[] = {"cpu", "", NULL};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(she_device_select(cpus[i], &dev, errstr, sizeof(errstr)));
        CHECK(dev.kind == SHE_DEVICE_CPU && dev.index == 0);
    }
    char name[SHE_DEVICE_NAME_MAX];
    she_device_name(&dev, name, sizeof(name));
    CHECK_STR(name, "cpu");
    she_device_name(&(she_device_t){SHE_DEVICE_CUDA, 3, SHE_MATH_FP32}, name, sizeof(name));
    CHECK_STR(name, "cuda:3");
    she_device_name(&(she_device_t){SHE_DEVICE_CUDA, 1023, SHE_MATH_BF16}, name, sizeof(name));
    CHECK_STR(name, "cuda:1023/bf16");
    /* the math mode: the CPU multiplies in FP32 only, malformed modes are refused */
    CHECK_OK(she_device_select("cpu/fp32", &dev, errstr, sizeof(errstr)));
    CHECK(dev.kind == SHE_DEVICE_CPU && dev.math == SHE_MATH_FP32);
    const char *bad[] = {"cuda:x",      "gpu",       "cuda:",     "cuda:-1",   "cuda:1024",
                         "CUDA",        "cuda:0 ",   "cpu/tf32",  "cpu/bf16",  "cuda/fp16",
                         "cuda:0/",     "cuda/tf32/bf16", "cuda:0/TF32", "/tf32"};
    for (int i = 0; i < 14; i++) {
        errstr[0] = '\0';
        CHECK_MSG(she_device_select(bad[i], &dev, errstr, sizeof(errstr)) == SHE_ERR_CONFIG,
                  "\"%s\" accepted", bad[i]);
        CHECK_MSG(strstr(errstr, bad[i]) != NULL, "message \"%s\" does not quote \"%s\"", errstr,
                  bad[i]);
    }
    /* no machine has 1024 devices: absent everywhere, with a math mode too */
    CHECK(she_device_select("cuda:1023", &dev, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
    CHECK_MSG(strstr(errstr, "cuda:1023") != NULL, "message: %s", errstr);
    CHECK(she_device_select("cuda:1023/tf32", &dev, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
    CHECK_MSG(strstr(errstr, "cuda:1023/tf32") != NULL, "message: %s", errstr);
    char why[512];
    int n = she_cuda_device_count(why, sizeof(why));
    if (n == 0) {
        CHECK(she_device_select("cuda", &dev, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
        CHECK_MSG(strstr(errstr, "\"cuda\"") != NULL, "message: %s", errstr);
    } else {
        CHECK_OK(she_device_select("cuda", &dev, errstr, sizeof(errstr)));
        CHECK(dev.kind == SHE_DEVICE_CUDA && dev.index == 0 && dev.math == SHE_MATH_FP32);
        CHECK_OK(she_device_select("cuda:0/bf16", &dev, errstr, sizeof(errstr)));
        CHECK(dev.kind == SHE_DEVICE_CUDA && dev.index == 0 && dev.math == SHE_MATH_BF16);
        CHECK_OK(she_device_select("cuda/tf32", &dev, errstr, sizeof(errstr)));
        CHECK(dev.kind == SHE_DEVICE_CUDA && dev.index == 0 && dev.math == SHE_MATH_TF32);
        char spec[32];
        snprintf(spec, sizeof(spec), "cuda:%d", n);
        CHECK(she_device_select(spec, &dev, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
    }
}

/* A tokenizer and the samples of test_judge.c: two rows whose teacher chain is known, one that
 * makes no prompt. */
static void make_samples(she_sample_t s[3]) {
    memset(s, 0, 3 * sizeof(*s));
    s[0].sample_id = strdup("a");
    s[0].query = strdup("red cordless drill");
    s[0].item_title = strdup("DEWALT Drill in Red");
    s[0].grade = SHE_GRADE_L3;
    s[0].has_steps = 1;
    s[0].query_category = strdup("drill");
    she_kv_append(&s[0].query_attrs, &s[0].n_query_attrs, "color", "red");
    she_kv_append(&s[0].query_attrs, &s[0].n_query_attrs, "type", "cordless");
    s[0].item_category = strdup("drill");
    she_kv_append(&s[0].item_gt_attrs, &s[0].n_item_gt_attrs, "brand", "dewalt");
    she_kv_append(&s[0].item_gt_attrs, &s[0].n_item_gt_attrs, "color", "red");
    s[0].cat_match = SHE_CAT_MATCH_EXACT;
    s[0].attr_match = SHE_ATTR_MATCH_PARTIAL;
    she_sample_copy(&s[1], &s[0]);
    s[2].sample_id = strdup("no title");
    s[2].query = strdup("red cordless drill");
    s[2].grade = SHE_GRADE_L1;
}

static void test_bad_device_refused(void) {
    char errstr[512];
    she_sample_t s[3];
    make_samples(s);
    she_tokenizer_t *tok = NULL;
    REQUIRE_OK(she_sft_train_tokenizer(s, 1, NULL, NULL, 320, &tok, errstr, sizeof(errstr)));
    she_model_config_t cfg = {.vocab_size = 320, .hidden_size = 32, .intermediate_size = 64,
                              .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
                              .max_position_embeddings = 256, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    REQUIRE_OK(she_model_new(&cfg, 1, 8, &m, errstr, sizeof(errstr)));
    she_judge_opts_t o;
    she_judge_opts_default(&o);
    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = 2;
    rc.max_prompt_tokens = 100;
    rc.max_new_tokens = 20;
    const char *specs[] = {"cuda:x", "cuda:1023"};
    she_err_t want[] = {SHE_ERR_CONFIG, SHE_ERR_NOT_FOUND};
    for (int i = 0; i < 2; i++) {
        she_judge_t *j = (she_judge_t *)&o; /* must become NULL */
        o.device = specs[i];
        CHECK(she_judge_new(m, tok, &o, &j, errstr, sizeof(errstr)) == want[i]);
        CHECK(j == NULL);
        CHECK_MSG(strstr(errstr, specs[i]) != NULL, "judge message: %s", errstr);
        she_rollout_t *ro = (she_rollout_t *)&rc;
        rc.device = specs[i];
        CHECK(she_rollout_new(m, tok, &rc, 1, &ro, errstr, sizeof(errstr)) == want[i]);
        CHECK(ro == NULL);
        CHECK_MSG(strstr(errstr, specs[i]) != NULL, "rollout message: %s", errstr);
    }
    /* an engine refuses AdamW state of another size */
    she_adamw_t *opt = she_adamw_new(m->n_params - 1);
    she_engine_t *e = (she_engine_t *)&o;
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    CHECK(she_engine_new(m, opt, &cpu, &e, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(e == NULL);
    she_engine_free(NULL);
    she_engine_sampler_free(NULL);
    she_adamw_free(opt);
    she_model_free(m);
    she_tokenizer_free(tok);
    for (int i = 0; i < 3; i++)
        she_sample_clear(&s[i]);
}

/* Three steps through the façade on the CPU == the same calls on model.h, bit for bit. */
static void test_cpu_engine_is_the_cpu_engine(void) {
    char errstr[512];
    she_model_t *a = tiny_model(), *b = tiny_model();
    REQUIRE(a && b);
    she_adamw_t *oa = she_adamw_new(a->n_params), *ob = she_adamw_new(b->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_engine_t *e = NULL;
    REQUIRE_OK(she_engine_new(b, ob, &cpu, &e, errstr, sizeof(errstr)));
    CHECK(she_engine_model(e) == b);
    CHECK(!she_engine_on_cuda(e));
    CHECK(she_engine_device(e)->kind == SHE_DEVICE_CPU);
    CHECK(she_engine_stream(e) == NULL);
    size_t n = 0;
    int on_device = 1;
    CHECK(she_engine_grads(e, &n, &on_device) == b->grads);
    CHECK(n == b->n_params && on_device == 0);
    int32_t tok[B * T], tgt[B * T];
    uint8_t mask[B * T];
    float dlogp[B * T], dent[B * T], lp_a[B * T], lp_b[B * T], en_a[B * T], en_b[B * T];
    make_batch(tok, mask, tgt, dlogp);
    for (int i = 0; i < B * T; i++)
        dent[i] = 0.01f * (float)(i % 7);
    for (int step = 0; step < 3; step++) {
        she_model_zero_grad(a);
        REQUIRE_OK(she_model_forward(a, tok, mask, tgt, B, T, 0.9f, lp_a, en_a, errstr,
                                     sizeof(errstr)));
        she_model_backward(a, dlogp, dent);
        float gn_a = she_model_adamw_step(a, oa, &hp, 1e-2f, 0.5f, 1.0f), gn_b = -1;
        REQUIRE_OK(she_engine_zero_grad(e, errstr, sizeof(errstr)));
        REQUIRE_OK(she_engine_forward(e, tok, mask, tgt, B, T, 0.9f, lp_b, en_b, errstr,
                                      sizeof(errstr)));
        REQUIRE_OK(she_engine_backward(e, dlogp, dent, errstr, sizeof(errstr)));
        REQUIRE_OK(she_engine_adamw_step(e, &hp, 1e-2f, 0.5f, 1.0f, &gn_b, errstr,
                                         sizeof(errstr)));
        REQUIRE_OK(she_engine_sync(e, errstr, sizeof(errstr)));
        CHECK(memcmp(lp_a, lp_b, sizeof(lp_a)) == 0);
        CHECK(memcmp(en_a, en_b, sizeof(en_a)) == 0);
        CHECK(gn_a == gn_b);
    }
    /* the sync points are nothing on the CPU; its math is FP32, other modes are refused */
    REQUIRE_OK(she_engine_download(e, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_upload(e, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_set_math(e, SHE_MATH_FP32, errstr, sizeof(errstr)));
    CHECK(she_engine_set_math(e, SHE_MATH_TF32, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK_MSG(strstr(errstr, "tf32") != NULL, "message: %s", errstr);
    CHECK(memcmp(a->params, b->params, a->n_params * sizeof(float)) == 0);
    CHECK(memcmp(oa->m, ob->m, a->n_params * sizeof(float)) == 0);
    CHECK(memcmp(oa->v, ob->v, a->n_params * sizeof(float)) == 0);
    CHECK(oa->step == 3 && ob->step == 3);

    /* generation: greedy and sampled, engine sampler == sampler */
    enum { SB = 4, NEW = 12 };
    she_sampler_t *s = NULL;
    she_engine_sampler_t *es = NULL;
    REQUIRE_OK(she_sampler_new(a, SB, 40, &s, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_sampler_new(e, SB, 40, &es, errstr, sizeof(errstr)));
    const int32_t *pp[SB] = {tok, tok + T, tok + T, tok + 2 * T};
    int lens[SB] = {T, 5, 5, 8};
    for (int k = 0; k < 2; k++) {
        she_sample_params_t p = {.temperature = k ? 0.8f : 0.0f, .top_k = k ? 20 : 0,
                                 .top_p = k ? 0.9f : 1.0f, .max_new_tokens = NEW};
        int32_t ta[SB * NEW], tb[SB * NEW];
        float la[SB * NEW], lb[SB * NEW];
        int na[SB], nb[SB];
        she_finish_t fa[SB], fb[SB];
        REQUIRE_OK(she_sampler_generate(s, pp, lens, SB, &p, 42, ta, la, NULL, na, fa, errstr,
                                        sizeof(errstr)));
        REQUIRE_OK(she_engine_generate(es, pp, lens, SB, &p, 42, tb, lb, NULL, nb, fb, errstr,
                                       sizeof(errstr)));
        for (int r = 0; r < SB; r++) {
            CHECK_EQ_INT(na[r], nb[r]);
            CHECK_EQ_INT(fa[r], fb[r]);
            CHECK(memcmp(ta + r * NEW, tb + r * NEW, (size_t)na[r] * sizeof(int32_t)) == 0);
            CHECK(memcmp(la + r * NEW, lb + r * NEW, (size_t)na[r] * sizeof(float)) == 0);
        }
    }
    she_engine_sampler_free(es);
    she_sampler_free(s);
    she_engine_free(e);
    she_adamw_free(oa);
    she_adamw_free(ob);
    she_model_free(a);
    she_model_free(b);
}

/* ---- with a CUDA device ---- */

/* Reports the worst element; 1 when every |got - ref| <= atol + rtol |ref|. */
static int close_all(const char *what, const float *got, const float *ref, size_t n, double atol,
                     double rtol) {
    size_t worst = 0, n_bad = 0;
    double worst_ratio = -1;
    for (size_t i = 0; i < n; i++) {
        double ratio = fabs((double)got[i] - ref[i]) / (atol + rtol * fabs((double)ref[i]));
        if (!(ratio <= 1.0))
            n_bad++;
        if (!(ratio <= worst_ratio))
            worst_ratio = ratio, worst = i;
    }
    CHECK_MSG(n_bad == 0, "%s: %zu of %zu out of tolerance; worst [%zu]: got %.9g, ref %.9g", what,
              n_bad, n, worst, (double)got[worst], (double)ref[worst]);
    return n_bad == 0;
}

static void test_training_steps_on_cuda(void) {
    char errstr[512];
    she_model_t *a = tiny_model(), *b = tiny_model();
    REQUIRE(a && b);
    she_adamw_t *oa = she_adamw_new(a->n_params), *ob = she_adamw_new(b->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    hp.eps = 1.0f; /* see the header: updates ~ lr * g, so they inherit the gradients' tolerance */
    hp.weight_decay = 0.0f;
    const float lr = 1e-2f;
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_device_t gpu = {SHE_DEVICE_CUDA, 0, SHE_MATH_FP32};
    she_engine_t *ec = NULL, *eg = NULL;
    REQUIRE_OK(she_engine_new(a, oa, &cpu, &ec, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_new(b, ob, &gpu, &eg, errstr, sizeof(errstr)));
    CHECK(she_engine_on_cuda(eg));
    CHECK(she_engine_stream(eg) != NULL);
    int on_device = 0;
    size_t n = 0;
    CHECK(she_engine_grads(eg, &n, &on_device) != NULL && on_device == 1 && n == b->n_params);
    int32_t tok[B * T], tgt[B * T];
    uint8_t mask[B * T];
    float dlogp[B * T], lp_c[B * T], lp_g[B * T];
    make_batch(tok, mask, tgt, dlogp);
    double gmax = 0;
    for (int step = 0; step < 2; step++) {
        float gn_c = 0, gn_g = 0;
        she_engine_t *es[2] = {ec, eg};
        float *lps[2] = {lp_c, lp_g}, *gns[2] = {&gn_c, &gn_g};
        for (int k = 0; k < 2; k++) {
            REQUIRE_OK(she_engine_zero_grad(es[k], errstr, sizeof(errstr)));
            REQUIRE_OK(she_engine_forward(es[k], tok, mask, tgt, B, T, 1.0f, lps[k], NULL,
                                          errstr, sizeof(errstr)));
            REQUIRE_OK(she_engine_backward(es[k], dlogp, NULL, errstr, sizeof(errstr)));
            if (k == 0)
                for (size_t i = 0; i < a->n_params; i++)
                    gmax = fmax(gmax, fabs((double)a->grads[i]));
            REQUIRE_OK(she_engine_adamw_step(es[k], &hp, lr, 1.0f, 0.0f, gns[k], errstr,
                                             sizeof(errstr)));
        }
        char what[64];
        snprintf(what, sizeof(what), "step %d: logp", step);
        close_all(what, lp_g, lp_c, B * T, LOGP_ATOL, LOGP_RTOL);
        CHECK_CLOSE(gn_g, gn_c, 0, NORM_RTOL);
    }
    /* the host copy is stale until the download */
    CHECK(memcmp(a->params, b->params, a->n_params * sizeof(float)) != 0);
    CHECK_EQ_INT(ob->step, 0);
    REQUIRE_OK(she_engine_download(eg, errstr, sizeof(errstr)));
    CHECK_EQ_INT(ob->step, 2);
    double atol = 2.0 * lr * (GRAD_ATOL_REL + GRAD_RTOL) * gmax;
    close_all("parameters after 2 steps", b->params, a->params, a->n_params, atol, PARAM_RTOL);

    /* upload: host weights changed after the download reach the device only with it */
    for (size_t i = 0; i < b->n_params; i++)
        a->params[i] = b->params[i] = 0.9f * b->params[i];
    REQUIRE_OK(she_engine_forward(eg, tok, mask, tgt, B, T, 1.0f, lp_g, NULL, errstr,
                                  sizeof(errstr)));
    REQUIRE_OK(she_engine_forward(ec, tok, mask, tgt, B, T, 1.0f, lp_c, NULL, errstr,
                                  sizeof(errstr)));
    double diff = 0;
    for (int i = 0; i < B * T; i++)
        diff = fmax(diff, fabs((double)lp_g[i] - lp_c[i]));
    CHECK_MSG(diff > 1e-3, "the device saw host weights before the upload (max diff %g)", diff);
    REQUIRE_OK(she_engine_upload(eg, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_forward(eg, tok, mask, tgt, B, T, 1.0f, lp_g, NULL, errstr,
                                  sizeof(errstr)));
    close_all("logp after upload", lp_g, lp_c, B * T, LOGP_ATOL, LOGP_RTOL);
    she_engine_free(ec);
    she_engine_free(eg);
    she_adamw_free(oa);
    she_adamw_free(ob);
    she_model_free(a);
    she_model_free(b);
}

/* Trains m through e on the one sequence of set until the loss is below 0.01. */
static int overfit(she_engine_t *e, const she_sft_set_t *set) {
    char errstr[512];
    she_adamw_config_t hp = she_adamw_defaults();
    hp.weight_decay = 0;
    she_sft_batch_t *b = she_sft_batch_new(1, set->max_len);
    int idx[1] = {0};
    she_sft_batch_fill(b, set, idx, 1, 0);
    double loss = 1;
    int ok = 1;
    for (int step = 0; ok && step < 300 && (step < 20 || loss > 0.01); step++)
        ok = she_sft_train_step(e, &hp, 1e-2f, 1.0f, b, &loss, NULL, errstr, sizeof(errstr)) ==
             SHE_OK;
    if (!ok)
        fprintf(stderr, "overfit: %s\n", errstr);
    she_sft_batch_free(b);
    fprintf(stderr, "   overfitted loss %.5f\n", loss);
    return ok && loss < 0.05;
}

static void check_same_judgements(const char *what, const she_judge_result_t *got,
                                  const she_judge_result_t *ref, int n) {
    for (int i = 0; i < n; i++) {
        CHECK_MSG(got[i].grade == ref[i].grade && got[i].format_ok == ref[i].format_ok &&
                      got[i].n_tokens == ref[i].n_tokens && got[i].finish == ref[i].finish &&
                      strcmp(got[i].text, ref[i].text) == 0,
                  "%s: row %d: \"%s\" (%d tokens) vs the CPU's \"%s\" (%d tokens)", what, i,
                  got[i].text, got[i].n_tokens, ref[i].text, ref[i].n_tokens);
    }
}

static void test_judge_and_rollouts_on_cuda(void) {
    char errstr[512];
    she_sample_t s[3];
    make_samples(s);
    she_tokenizer_t *tok = NULL;
    REQUIRE_OK(she_sft_train_tokenizer(s, 1, NULL, NULL, 320, &tok, errstr, sizeof(errstr)));
    she_sft_set_t *set = she_sft_set_build(tok, s, 1, NULL, NULL, 192, errstr, sizeof(errstr));
    REQUIRE(set->n == 1);
    she_model_config_t cfg = {.vocab_size = she_tokenizer_vocab_size(tok), .hidden_size = 32,
                              .intermediate_size = 64, .n_layers = 1, .n_heads = 2,
                              .n_kv_heads = 2, .max_position_embeddings = 256,
                              .rope_theta = 10000.0, .rms_norm_eps = 1e-5,
                              .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *mc = NULL, *mg = NULL;
    REQUIRE_OK(she_model_new(&cfg, 1, set->max_len, &mc, errstr, sizeof(errstr)));
    REQUIRE_OK(she_model_new(&cfg, 1, set->max_len, &mg, errstr, sizeof(errstr)));
    she_model_init_weights(mc, 11, 0.02f);
    she_model_init_weights(mg, 11, 0.02f);
    she_adamw_t *oc = she_adamw_new(mc->n_params), *og = she_adamw_new(mg->n_params);
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_device_t gpu = {SHE_DEVICE_CUDA, 0, SHE_MATH_FP32};
    she_engine_t *ec = NULL, *eg = NULL;
    REQUIRE_OK(she_engine_new(mc, oc, &cpu, &ec, errstr, sizeof(errstr)));
    REQUIRE_OK(she_engine_new(mg, og, &gpu, &eg, errstr, sizeof(errstr)));

    /* made before the training: they must follow the weights that come later */
    she_judge_opts_t o;
    she_judge_opts_default(&o);
    o.max_batch = 2; /* three rows: two batches */
    o.max_new_tokens = 100;
    o.device = "cuda";
    she_judge_t *j_dev = NULL;
    REQUIRE_OK(she_judge_new(mc, tok, &o, &j_dev, errstr, sizeof(errstr)));
    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = 3;
    rc.max_prompt_tokens = 100;
    rc.max_new_tokens = 80;
    rc.top_k = 20;
    she_rollout_t *ro_c = NULL, *ro_g = NULL;
    REQUIRE_OK(she_rollout_new(mc, tok, &rc, 2, &ro_c, errstr, sizeof(errstr)));
    rc.device = "cuda:0";
    REQUIRE_OK(she_rollout_new(mc, tok, &rc, 2, &ro_g, errstr, sizeof(errstr)));
    const she_sample_t *batch[2] = {&s[0], &s[1]};
    she_rollout_group_t g_old[2], g_c[2], g_g[2];
    memset(g_old, 0, sizeof(g_old));
    memset(g_c, 0, sizeof(g_c));
    memset(g_g, 0, sizeof(g_g));
    REQUIRE_OK(she_rollout_generate(ro_g, batch, 2, 0, 9, g_old, errstr, sizeof(errstr)));

    /* the same overfitting on each device */
    REQUIRE(overfit(ec, set));
    REQUIRE(overfit(eg, set));

    she_judge_result_t *ref = calloc(3, sizeof(*ref)), *got = calloc(3, sizeof(*got));
    REQUIRE(ref && got);
    o.device = NULL;
    she_judge_t *j_cpu = NULL, *j_train = NULL;
    REQUIRE_OK(she_judge_new(mc, tok, &o, &j_cpu, errstr, sizeof(errstr)));
    REQUIRE_OK(she_judge_run(j_cpu, s, 3, ref, NULL, NULL, errstr, sizeof(errstr)));
    CHECK_EQ_INT(ref[0].grade, SHE_GRADE_L3);
    CHECK_EQ_INT(ref[0].format_ok, 1);
    CHECK_EQ_INT(ref[2].prompt_ok, 0);
    /* the judge made on "cuda" before the training, synced */
    REQUIRE_OK(she_judge_sync(j_dev, errstr, sizeof(errstr)));
    REQUIRE_OK(she_judge_run(j_dev, s, 3, got, NULL, NULL, errstr, sizeof(errstr)));
    check_same_judgements("she_judge_new on cuda", got, ref, 3);
    /* the judge on the engine that trained on cuda: its own device weights */
    REQUIRE_OK(she_judge_new_engine(eg, tok, &o, &j_train, errstr, sizeof(errstr)));
    REQUIRE_OK(she_judge_run(j_train, s, 3, got, NULL, NULL, errstr, sizeof(errstr)));
    check_same_judgements("she_judge_new_engine on a cuda training engine", got, ref, 3);

    /* rollouts: a new version makes the device rollout take the trained weights */
    REQUIRE_OK(she_rollout_generate(ro_c, batch, 2, 1, 9, g_c, errstr, sizeof(errstr)));
    REQUIRE_OK(she_rollout_generate(ro_g, batch, 2, 1, 9, g_g, errstr, sizeof(errstr)));
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < rc.group_size; k++) {
            const she_response_t *a = &g_c[i].responses[k], *b = &g_g[i].responses[k];
            CHECK_MSG(a->n_tokens == b->n_tokens &&
                          memcmp(a->tokens, b->tokens, sizeof(int32_t) * a->n_tokens) == 0,
                      "rollout %d/%d: %d tokens on cuda, %d on the CPU, or other tokens", i, k,
                      b->n_tokens, a->n_tokens);
            close_all("rollout log-probs", b->logprobs, a->logprobs,
                      (size_t)(a->n_tokens < b->n_tokens ? a->n_tokens : b->n_tokens), LOGP_ATOL,
                      LOGP_RTOL);
        }
    for (int i = 0; i < 2; i++) {
        she_msg_clear_rollout_group(&g_old[i]);
        she_msg_clear_rollout_group(&g_c[i]);
        she_msg_clear_rollout_group(&g_g[i]);
    }
    free(ref);
    free(got);
    she_judge_free(j_cpu);
    she_judge_free(j_dev);
    she_judge_free(j_train);
    she_rollout_free(ro_c);
    she_rollout_free(ro_g);
    she_engine_free(ec);
    she_engine_free(eg);
    she_adamw_free(oc);
    she_adamw_free(og);
    she_model_free(mc);
    she_model_free(mg);
    she_sft_set_free(set);
    she_tokenizer_free(tok);
    for (int i = 0; i < 3; i++)
        she_sample_clear(&s[i]);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--gpu") == 0) {
        char why[512] = "";
        if (she_cuda_device_count(why, sizeof(why)) == 0)
            TEST_SKIP("no CUDA device (%s)", why);
        RUN(test_training_steps_on_cuda);
        RUN(test_judge_and_rollouts_on_cuda);
        TEST_DONE();
    }
    RUN(test_device_select);
    RUN(test_bad_device_refused);
    RUN(test_cpu_engine_is_the_cpu_engine);
    TEST_DONE();
}
