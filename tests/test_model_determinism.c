/* test_model_determinism.c -- bit-exact repeatability, save/load and exact resume, and the
 * model-level checks on corrupted checkpoints (the file-level ones are in test_safetensors and
 * test_ckptdir).
 *   - the same training run twice gives bit-identical parameters (OpenMP reductions have a
 *     fixed order);
 *   - save -> load gives bit-identical logp and logits;
 *   - train 2N steps == train N, save (with optimizer state), load, train N more: bit-identical
 *     parameters and losses;
 *   - a checkpoint whose config disagrees with its tensors, or lacks a config key, or lacks the
 *     optimizer file, or whose files changed after commit, is refused with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/ckptdir.h"
#include "core/model.h"
#include "test.h"

#define B_ 4
#define T_ 16
#define STEPS 3

static she_model_config_t small_config(void) {
    she_model_config_t c = {0};
    snprintf(c.model_type, sizeof(c.model_type), "qwen2");
    c.vocab_size = 64;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_position_embeddings = 128;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = 0;
    c.attention_bias = 1;
    return c;
}

typedef struct batch {
    int32_t tok[B_ * T_], tgt[B_ * T_];
    uint8_t mask[B_ * T_];
    float dlogp[B_ * T_];
} batch_t;

/* Batch `k` of a fixed stream: next-token targets, right padding of varying length. */
static void make_batch(batch_t *bt, int k) {
    uint64_t s = 1000 + (uint64_t)k;
    int n_active = 0;
    for (int r = 0; r < B_ * T_; r++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        bt->tok[r] = (int32_t)((s >> 33) % 64);
    }
    for (int b = 0; b < B_; b++) {
        int len = T_ - (b + k) % 5;
        for (int t = 0; t < T_; t++) {
            int r = b * T_ + t;
            bt->mask[r] = t < len;
            bt->tgt[r] = t + 1 < len ? bt->tok[r + 1] : -1;
            n_active += bt->tgt[r] >= 0;
        }
    }
    for (int r = 0; r < B_ * T_; r++)
        bt->dlogp[r] = bt->tgt[r] >= 0 ? -1.0f / (float)n_active : 0.0f;
}

/* SFT steps first..first+n-1 (cosine schedule over 2*STEPS); returns the last mean NLL. */
static float train(she_model_t *m, she_adamw_t *opt, int first, int n) {
    char errstr[512];
    she_adamw_config_t hp = she_adamw_defaults();
    she_lr_schedule_t sched = {SHE_LR_COSINE, 3e-3f, 3e-4f, 2, 2 * STEPS};
    float logp[B_ * T_], loss = 0;
    for (int k = first; k < first + n; k++) {
        batch_t bt;
        make_batch(&bt, k);
        she_model_zero_grad(m);
        if (she_model_forward(m, bt.tok, bt.mask, bt.tgt, B_, T_, 1.0f, logp, NULL, errstr,
                              sizeof(errstr)) != SHE_OK) {
            fprintf(stderr, "forward: %s\n", errstr);
            abort();
        }
        loss = 0;
        for (int r = 0; r < B_ * T_; r++)
            loss += bt.dlogp[r] * logp[r];
        she_model_backward(m, bt.dlogp, NULL);
        she_model_adamw_step(m, opt, &hp, she_lr_at(&sched, opt->step), 1.0f, 1.0f);
    }
    return loss;
}

static const char *tmpdir(void) {
    const char *t = getenv("SHE_TEST_TMP");
    return t ? t : "/tmp";
}

static she_model_t *fresh(void) {
    char errstr[512];
    she_model_config_t c = small_config();
    she_model_t *m = NULL;
    if (she_model_new(&c, B_, T_, &m, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she_model_new: %s\n", errstr);
        abort();
    }
    she_model_init_weights(m, 42, 0.05f);
    return m;
}

static void test_repeatable(void) {
    she_model_t *m1 = fresh(), *m2 = fresh();
    she_adamw_t *o1 = she_adamw_new(m1->n_params), *o2 = she_adamw_new(m2->n_params);
    float l1 = train(m1, o1, 0, STEPS), l2 = train(m2, o2, 0, STEPS);
    CHECK(l1 == l2);
    CHECK(memcmp(m1->params, m2->params, m1->n_params * sizeof(float)) == 0);
    CHECK(memcmp(o1->v, o2->v, m1->n_params * sizeof(float)) == 0);
    she_adamw_free(o1), she_adamw_free(o2);
    she_model_free(m1), she_model_free(m2);
}

static void test_save_load_logits(void) {
    char errstr[512], dir[1024];
    snprintf(dir, sizeof(dir), "%s/model_ckpt_logits", tmpdir());
    she_model_t *m = fresh();
    she_adamw_t *opt = she_adamw_new(m->n_params);
    train(m, opt, 0, 1);
    REQUIRE_OK(she_model_save(m, opt, dir, errstr, sizeof(errstr)));
    she_model_t *m2 = NULL;
    REQUIRE_OK(she_model_load(dir, B_, T_, &m2, NULL, errstr, sizeof(errstr)));
    CHECK(memcmp(m->params, m2->params, m->n_params * sizeof(float)) == 0);
    batch_t bt;
    make_batch(&bt, 7);
    float lp1[B_ * T_], lp2[B_ * T_], e1[B_ * T_], e2[B_ * T_];
    REQUIRE_OK(she_model_forward(m, bt.tok, bt.mask, bt.tgt, B_, T_, 0.9f, lp1, e1, errstr,
                                 sizeof(errstr)));
    REQUIRE_OK(she_model_forward(m2, bt.tok, bt.mask, bt.tgt, B_, T_, 0.9f, lp2, e2, errstr,
                                 sizeof(errstr)));
    CHECK(memcmp(lp1, lp2, sizeof(lp1)) == 0);
    CHECK(memcmp(e1, e2, sizeof(e1)) == 0);
    CHECK(memcmp(m->a.logits, m2->a.logits,
                 (size_t)B_ * T_ * m->cfg.vocab_size * sizeof(float)) == 0);
    she_adamw_free(opt);
    she_model_free(m);
    she_model_free(m2);
}

static void test_exact_resume(void) {
    char errstr[512], dir[1024];
    snprintf(dir, sizeof(dir), "%s/model_ckpt_resume", tmpdir());
    she_model_t *ref = fresh();
    she_adamw_t *ref_opt = she_adamw_new(ref->n_params);
    float ref_loss = train(ref, ref_opt, 0, 2 * STEPS);

    she_model_t *m = fresh();
    she_adamw_t *opt = she_adamw_new(m->n_params);
    train(m, opt, 0, STEPS);
    REQUIRE_OK(she_model_save(m, opt, dir, errstr, sizeof(errstr)));
    she_adamw_free(opt);
    she_model_free(m);

    she_model_t *m2 = NULL;
    she_adamw_t *opt2 = NULL;
    REQUIRE_OK(she_model_load(dir, B_, T_, &m2, &opt2, errstr, sizeof(errstr)));
    CHECK_EQ_INT(opt2->step, STEPS);
    float loss = train(m2, opt2, STEPS, STEPS);
    CHECK(loss == ref_loss);
    CHECK(memcmp(m2->params, ref->params, ref->n_params * sizeof(float)) == 0);
    CHECK(memcmp(opt2->m, ref_opt->m, ref->n_params * sizeof(float)) == 0);
    CHECK(memcmp(opt2->v, ref_opt->v, ref->n_params * sizeof(float)) == 0);
    she_adamw_free(ref_opt), she_adamw_free(opt2);
    she_model_free(ref), she_model_free(m2);
}

/* Writes a committed checkpoint of a fresh model whose config.json is replaced by cfg_json. */
static she_err_t save_with_config(const char *dir, const char *cfg_json, int with_opt,
                                  char *errstr, size_t errstr_size) {
    char tmp[1100], path[1200];
    she_model_t *m = fresh();
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_err_t err = she_ckptdir_begin(dir, tmp, sizeof(tmp), errstr, errstr_size);
    if (err == SHE_OK)
        err = she_model_write_files(m, with_opt ? opt : NULL, tmp, errstr, errstr_size);
    if (err == SHE_OK && cfg_json) {
        snprintf(path, sizeof(path), "%s/config.json", tmp);
        FILE *f = fopen(path, "w");
        fputs(cfg_json, f);
        fclose(f);
    }
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, dir, errstr, errstr_size);
    she_adamw_free(opt);
    she_model_free(m);
    return err;
}

#define GOOD_CFG_HEAD                                                                   \
    "{\"model_type\": \"qwen2\", \"intermediate_size\": 96, \"num_attention_heads\": 4, " \
    "\"num_key_value_heads\": 2, \"vocab_size\": 64, \"max_position_embeddings\": 128, "  \
    "\"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false, "

static void test_corrupt_checkpoints(void) {
    char errstr[512], dir[1024];
    she_model_t *m = NULL;
    she_adamw_t *opt = NULL;

    /* config says hidden 32, tensors are 64 wide */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_bad_shape", tmpdir());
    REQUIRE_OK(save_with_config(
        dir, GOOD_CFG_HEAD "\"hidden_size\": 32, \"num_hidden_layers\": 2}", 1, errstr,
        sizeof(errstr)));
    CHECK(she_model_load(dir, B_, T_, &m, NULL, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
    CHECK(m == NULL);
    CHECK_MSG(strstr(errstr, "model.") != NULL, "message should name the tensor: %s", errstr);
    fprintf(stderr, "  shape mismatch: %s\n", errstr);

    /* one layer fewer in the config than in the file: extra tensors */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_bad_layers", tmpdir());
    REQUIRE_OK(save_with_config(
        dir, GOOD_CFG_HEAD "\"hidden_size\": 64, \"num_hidden_layers\": 1}", 1, errstr,
        sizeof(errstr)));
    CHECK(she_model_load(dir, B_, T_, &m, NULL, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
    fprintf(stderr, "  layer count mismatch: %s\n", errstr);

    /* missing key */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_missing_key", tmpdir());
    REQUIRE_OK(save_with_config(dir, GOOD_CFG_HEAD "\"hidden_size\": 64}", 1, errstr,
                                sizeof(errstr)));
    CHECK(she_model_load(dir, B_, T_, &m, NULL, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
    CHECK_MSG(strstr(errstr, "num_hidden_layers") && strstr(errstr, "config.json"),
              "message should name the file and key: %s", errstr);
    fprintf(stderr, "  missing key: %s\n", errstr);

    /* invalid value: kv heads do not divide heads */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_bad_value", tmpdir());
    REQUIRE_OK(save_with_config(dir,
                                "{\"model_type\": \"llama\", \"intermediate_size\": 96, "
                                "\"num_attention_heads\": 4, \"num_key_value_heads\": 3, "
                                "\"vocab_size\": 64, \"max_position_embeddings\": 128, "
                                "\"rms_norm_eps\": 1e-6, \"hidden_size\": 64, "
                                "\"num_hidden_layers\": 2}",
                                1, errstr, sizeof(errstr)));
    CHECK(she_model_load(dir, B_, T_, &m, NULL, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "num_key_value_heads") != NULL, "%s", errstr);

    /* no optimizer file when the caller asks for one */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_no_opt", tmpdir());
    REQUIRE_OK(save_with_config(dir, NULL, 0, errstr, sizeof(errstr)));
    CHECK_OK(she_model_load(dir, B_, T_, &m, NULL, errstr, sizeof(errstr)));
    she_model_free(m);
    m = NULL;
    CHECK(she_model_load(dir, B_, T_, &m, &opt, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
    CHECK(m == NULL && opt == NULL);

    /* a file changed after commit: the manifest catches it */
    snprintf(dir, sizeof(dir), "%s/model_ckpt_tampered", tmpdir());
    REQUIRE_OK(save_with_config(dir, NULL, 1, errstr, sizeof(errstr)));
    char path[1100];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f != NULL);
    fseek(f, -4, SEEK_END);
    fputc(0x7f, f);
    fclose(f);
    CHECK(she_model_load(dir, B_, T_, &m, &opt, errstr, sizeof(errstr)) != SHE_OK);
    CHECK(m == NULL);
    fprintf(stderr, "  tampered: %s\n", errstr);
}

int main(void) {
    RUN(test_repeatable);
    RUN(test_save_load_logits);
    RUN(test_exact_resume);
    RUN(test_corrupt_checkpoints);
    TEST_DONE();
}
