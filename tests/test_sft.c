/* test_sft.c -- SFT sequences (prompt masked, answer targets, truncation keeps the answer), the
 * loss and its gradient direction on a tiny model, and `she train-sft` exact resume:
 * N steps in one run == N/2 steps + restart + N/2 steps, bit for bit. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "dataset.h"
#include "gendata.h"
#include "test.h"
#include "trainer/cot.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

static void set_sample(she_sample_t *s, const char *query, const char *title, she_grade_t g) {
    memset(s, 0, sizeof(*s));
    s->sample_id = strdup("t1");
    s->query = strdup(query);
    s->item_title = strdup(title);
    s->grade = g;
}

static she_sample_t samples[4];

static she_tokenizer_t *tiny_tokenizer(void) {
    char errstr[512];
    set_sample(&samples[0], "red cordless drill", "DEWALT 20V Cordless Drill in Red", SHE_GRADE_L4);
    set_sample(&samples[1], "red cordless drill", "Steel Garden Shed 10 ft x 12 ft", SHE_GRADE_L1);
    set_sample(&samples[2], "white paint", "Behr Premium Plus Interior Paint White",
               SHE_GRADE_L3);
    set_sample(&samples[3], "oak door", "Masonite Pine Door Slab", SHE_GRADE_L2);
    she_tokenizer_t *tok = NULL;
    if (she_sft_train_tokenizer(samples, 4, NULL, NULL, 330, &tok, errstr, sizeof(errstr)) !=
        SHE_OK)
        fprintf(stderr, "train tokenizer: %s\n", errstr);
    return tok;
}

static void free_samples(void) {
    for (int i = 0; i < 4; i++)
        she_sample_clear(&samples[i]);
}

static int decode_eq(const she_tokenizer_t *tok, const int32_t *ids, int n, const char *want) {
    char buf[4096], errstr[512];
    size_t len = 0;
    if (she_tokenizer_decode(tok, ids, n, 0, buf, sizeof(buf), &len, errstr, sizeof(errstr)) !=
        SHE_OK)
        return 0;
    return len == strlen(want) && memcmp(buf, want, len) == 0;
}

static void test_sequence_layout(void) {
    char errstr[512];
    she_tokenizer_t *tok = tiny_tokenizer();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    CHECK_EQ_INT(sp.pad, 0);
    CHECK_EQ_INT(sp.bos, 1);
    CHECK_EQ_INT(sp.eos, 2);
    she_sft_set_t *set = she_sft_set_build(tok, samples, 4, NULL, NULL, 192, errstr,
                                           sizeof(errstr));
    REQUIRE(set->n == 4);
    CHECK_EQ_INT(set->n_skipped, 0);
    CHECK_STR(errstr, "");
    for (int i = 0; i < set->n; i++) {
        const int32_t *seq = set->tokens + set->start[i];
        int n = set->len[i], np = set->n_prompt[i];
        char prompt[4096], chain[SHE_COT_MAX_CHAIN];
        she_cot_t cot;
        CHECK_OK(she_cot_format_prompt(&samples[i], prompt, sizeof(prompt), NULL, errstr,
                                       sizeof(errstr)));
        CHECK_OK(she_teacher_chain(&samples[i], NULL, NULL, &cot, errstr, sizeof(errstr)));
        CHECK_OK(she_cot_format(&cot, chain, sizeof(chain), NULL, errstr, sizeof(errstr)));
        CHECK_EQ_INT(seq[0], sp.bos);
        CHECK(decode_eq(tok, seq + 1, np - 1, prompt));
        CHECK(decode_eq(tok, seq + np, n - np - 1, chain));
        CHECK_EQ_INT(seq[n - 1], sp.eos);
        CHECK_EQ_INT(set->sample[i], i);
    }
    /* a batch of rows 2 and 0: right padding, prompt masked, targets = next answer token */
    she_sft_batch_t *b = she_sft_batch_new(4, 192);
    int idx[2] = {2, 0};
    she_sft_batch_fill(b, set, idx, 2, sp.pad);
    int T = set->len[2] > set->len[0] ? set->len[2] : set->len[0];
    CHECK_EQ_INT(b->T, T);
    long want_targets = 0;
    for (int r = 0; r < 2; r++) {
        const int32_t *seq = set->tokens + set->start[idx[r]];
        int n = set->len[idx[r]], np = set->n_prompt[idx[r]];
        want_targets += n - np;
        for (int t = 0; t < T; t++) {
            int32_t tk = b->tokens[r * T + t], tg = b->targets[r * T + t];
            CHECK_EQ_INT(b->mask[r * T + t], t < n);
            CHECK_EQ_INT(tk, t < n ? seq[t] : sp.pad);
            if (t < np - 1 || t >= n - 1)
                CHECK_EQ_INT(tg, -1);
            else
                CHECK_EQ_INT(tg, seq[t + 1]);
        }
        /* the last prompt token predicts the first answer token; the last answer token
         * before eos predicts eos */
        CHECK_EQ_INT(b->targets[r * T + np - 1], seq[np]);
        CHECK_EQ_INT(b->targets[r * T + n - 2], sp.eos);
    }
    CHECK_EQ_INT(b->n_targets, want_targets);
    {
        int np0 = set->n_prompt[idx[0]];
        CHECK(b->weight[0] == 0.0f && b->weight[np0 - 1] == 1.0f); /* no target, a target */
        /* steps: 0 over the prompt, then 1..5 in order over the answer, eos in step 5 */
        const uint8_t *st = set->step + set->start[idx[0]];
        int n0 = set->len[idx[0]], ok = 1;
        for (int t = 0; t < n0; t++) {
            if (t < np0 ? st[t] != 0 : (st[t] < 1 || st[t] > 5 || (t > np0 && st[t] < st[t - 1])))
                ok = 0;
        }
        CHECK(ok && st[np0] == 1 && st[n0 - 1] == 5 && st[n0 - 2] == 5);
        /* step weights: the grade token and the eos weigh 3 */
        set->step_weight[4] = 3.0f;
        she_sft_batch_fill(b, set, idx, 2, sp.pad);
        CHECK(b->weight[n0 - 2] == 3.0f && b->weight[np0 - 1] == 1.0f);
        set->step_weight[4] = 1.0f;
        she_sft_batch_fill(b, set, idx, 2, sp.pad);
    }
    /* class weights: grades L4, L1, L3, L2 once each, so all weights are equal */
    she_sft_set_weight_by_grade(set, samples, 1.0);
    for (int i = 0; i < 4; i++)
        CHECK_CLOSE(set->weight[i], 1.0, 1e-6, 0);
    samples[3].grade = SHE_GRADE_L4; /* now L4 twice: shares 1/2, 1/4, 1/4, 1/2 */
    she_sft_set_weight_by_grade(set, samples, 1.0);
    CHECK_CLOSE(set->weight[1] / set->weight[0], 2.0, 1e-6, 0);
    CHECK_CLOSE(set->weight[0] + set->weight[1] + set->weight[2] + set->weight[3], 4.0, 1e-5, 0);
    she_sft_batch_fill(b, set, idx, 2, sp.pad);
    CHECK(b->weight[set->n_prompt[2] - 1] == set->weight[2] &&
          b->weight[T + set->n_prompt[0] - 1] == set->weight[0]);
    she_sft_set_weight_by_grade(set, samples, 0.0);
    CHECK(set->weight == NULL);
    she_sft_batch_free(b);
    she_sft_set_free(set);
    she_tokenizer_free(tok);
    free_samples();
}

static void test_truncation_keeps_answer(void) {
    char errstr[512];
    she_tokenizer_t *tok = tiny_tokenizer();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    /* a long title with catalogue attributes */
    she_sample_t s;
    set_sample(&s, "red cordless drill",
               "DEWALT 20V MAX Cordless Lithium-Ion 1/2 in. Drill Driver Kit with Two Batteries "
               "Charger and Contractor Bag in Bright Yellow and Black",
               SHE_GRADE_L3);
    she_kv_append(&s.item_attrs, &s.n_item_attrs, "color", "yellow");
    she_kv_append(&s.item_attrs, &s.n_item_attrs, "brand", "dewalt");
    char chain[SHE_COT_MAX_CHAIN];
    she_cot_t cot;
    REQUIRE_OK(she_teacher_chain(&s, NULL, NULL, &cot, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cot_format(&cot, chain, sizeof(chain), NULL, errstr, sizeof(errstr)));
    int32_t ids[1024];
    int n_full = 0, n_chain = 0, trunc = 1;
    REQUIRE_OK(she_sft_encode_prompt(tok, &sp, &s, 1024, ids, &n_full, &trunc, errstr,
                                     sizeof(errstr)));
    CHECK_EQ_INT(trunc, 0);
    REQUIRE_OK(she_tokenizer_encode(tok, chain, strlen(chain), 0, ids, 1024, &n_chain, errstr,
                                    sizeof(errstr)));
    /* room for the whole answer and eos but 40 tokens fewer than the full prompt: more than
     * the attributes line */
    int max_seq = n_chain + 1 + n_full - 40;
    she_sft_set_t *set = she_sft_set_build(tok, &s, 1, NULL, NULL, max_seq, errstr,
                                           sizeof(errstr));
    REQUIRE(set->n == 1);
    CHECK_EQ_INT(set->n_truncated, 1);
    CHECK(set->len[0] <= max_seq);
    const int32_t *seq = set->tokens + set->start[0];
    int np = set->n_prompt[0];
    CHECK(decode_eq(tok, seq + np, set->len[0] - np - 1, chain)); /* the answer is whole */
    char buf[4096];
    size_t len = 0;
    REQUIRE_OK(she_tokenizer_decode(tok, seq + 1, np - 1, 0, buf, sizeof(buf) - 1, &len, errstr,
                                    sizeof(errstr)));
    buf[len] = '\0';
    CHECK(strncmp(buf, "query: red cordless drill\nitem: DEWALT 20V MAX", 46) == 0);
    CHECK(strstr(buf, "answer:\n") != NULL);
    CHECK(strstr(buf, "Black") == NULL);        /* title words cut from the end */
    CHECK(strstr(buf, "attributes:") == NULL);  /* catalogue attributes go first */
    she_sft_set_free(set);
    /* an answer that cannot fit: skipped with a reason */
    set = she_sft_set_build(tok, &s, 1, NULL, NULL, n_chain, errstr, sizeof(errstr));
    CHECK_EQ_INT(set->n, 0);
    CHECK_EQ_INT(set->n_skipped, 1);
    CHECK(strstr(errstr, "answer") != NULL);
    she_sft_set_free(set);
    /* a query too long for the prompt budget */
    int n_p = 0;
    CHECK_EQ_INT(she_sft_encode_prompt(tok, &sp, &s, 8, ids, &n_p, NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    she_sample_clear(&s);
    she_tokenizer_free(tok);
    free_samples();
}

static void test_loss_values(void) {
    float logp[5] = {-1.0f, -2.0f, -3.0f, -4.0f, -9.0f};
    int32_t targets[5] = {5, -1, 7, 8, -1};
    float d[5];
    CHECK_CLOSE(she_sft_loss(logp, targets, 5, d), (1.0 + 3.0 + 4.0) / 3.0, 1e-12, 0);
    CHECK_CLOSE(d[0], -1.0 / 3.0, 1e-7, 0);
    CHECK_EQ_INT(d[1] == 0.0f, 1);
    CHECK_CLOSE(d[3], -1.0 / 3.0, 1e-7, 0);
    CHECK_EQ_INT(d[4] == 0.0f, 1);
    /* weighted: sum w * nll / sum w over the targets */
    float w[5] = {2.0f, 5.0f, 1.0f, 1.0f, 7.0f};
    CHECK_CLOSE(she_sft_loss_weighted(logp, targets, w, 5, d), (2.0 + 3.0 + 4.0) / 4.0, 1e-12,
                0);
    CHECK_CLOSE(d[0], -2.0 / 4.0, 1e-7, 0);
    CHECK_CLOSE(d[2], -1.0 / 4.0, 1e-7, 0);
    CHECK_EQ_INT(d[1] == 0.0f, 1);
    int32_t none[2] = {-1, -1};
    CHECK_CLOSE(she_sft_loss(logp, none, 2, d), 0.0, 0, 0);
}

/* A few AdamW steps on the SFT loss lower the loss on the same tiny set. */
static void test_loss_decreases(void) {
    char errstr[512];
    she_tokenizer_t *tok = tiny_tokenizer();
    REQUIRE(tok != NULL);
    she_sft_set_t *set = she_sft_set_build(tok, samples, 4, NULL, NULL, 192, errstr,
                                           sizeof(errstr));
    REQUIRE(set->n == 4);
    she_model_config_t cfg = {.vocab_size = she_tokenizer_vocab_size(tok), .hidden_size = 32,
                              .intermediate_size = 64, .n_layers = 1, .n_heads = 2,
                              .n_kv_heads = 2, .max_position_embeddings = 256,
                              .rope_theta = 10000.0, .rms_norm_eps = 1e-5,
                              .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    REQUIRE_OK(she_model_new(&cfg, 4, set->max_len, &m, errstr, sizeof(errstr)));
    she_model_init_weights(m, 3, 0.02f);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_engine_t *e = NULL;
    REQUIRE_OK(she_engine_new(m, opt, &cpu, &e, errstr, sizeof(errstr)));
    she_sft_batch_t *b = she_sft_batch_new(4, set->max_len);
    int idx[4] = {0, 1, 2, 3};
    she_sft_batch_fill(b, set, idx, 4, 0);
    double first = 0, loss = 0, before = 0;
    CHECK_OK(she_sft_eval_loss(e, b, &before, errstr, sizeof(errstr)));
    for (int step = 0; step < 20; step++) {
        float gn;
        CHECK_OK(she_sft_train_step(e, &hp, 3e-3f, 1.0f, b, &loss, &gn, errstr,
                                    sizeof(errstr)));
        if (step == 0)
            first = loss;
        CHECK(gn > 0);
    }
    double after = 0;
    CHECK_OK(she_sft_eval_loss(e, b, &after, errstr, sizeof(errstr)));
    CHECK_CLOSE(first, before, 1e-6, 1e-6); /* the step reports the loss before its update */
    fprintf(stderr, "   loss %.4f -> %.4f after 20 steps\n", before, after);
    CHECK(after < 0.8 * before);
    she_sft_batch_free(b);
    she_engine_free(e);
    she_adamw_free(opt);
    she_model_free(m);
    she_sft_set_free(set);
    she_tokenizer_free(tok);
    free_samples();
}

/* ---- `she train-sft` end to end: resume equivalence and configuration errors ---- */

static char tmpdir[1024];

static she_err_t write_sample(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    return she_sample_write_jsonl(opaque, s, errstr, errstr_size);
}

static int make_data(const char *path) {
    char errstr[512];
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 120;
    o.seed = 5;
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    int ok = she_gendata_run(&o, write_sample, f, errstr, sizeof(errstr)) == SHE_OK;
    fclose(f);
    return ok;
}

static int run_sft(const char *data, const char *cfg, const char *out, const char *steps,
                   const char *stop_after) {
    char *argv[64];
    int argc = 0;
    char *envp[] = {NULL};
    const char *args[] = {"train-sft", "--data", data, "--out", out, "--model-config", cfg,
                          "--vocab", "300", "--lexicons", "", "--batch", "4", "--seq", "256",
                          "--max-steps", steps, "--stop-after", stop_after, "--warmup", "2",
                          "--lr", "3e-3", "--eval-every", "4", "--eval-rows", "4", "--log-every",
                          "1", "--set", "sft.eval.max.new=8", "--log-level", "warn", NULL};
    for (int i = 0; args[i]; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    return she_cmd_train_sft(argc, argv, envp);
}

static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = 0;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static void test_train_sft_resume(void) {
    char data[1200], cfg[1200], a[1200], b[1200], pa[1300], pb[1300];
    snprintf(data, sizeof(data), "%s/sft_data.jsonl", tmpdir);
    snprintf(cfg, sizeof(cfg), "%s/sft_tiny.json", tmpdir);
    snprintf(a, sizeof(a), "%s/sft_a", tmpdir);
    snprintf(b, sizeof(b), "%s/sft_b", tmpdir);
    REQUIRE(make_data(data));
    FILE *f = fopen(cfg, "w");
    REQUIRE(f != NULL);
    fprintf(f, "{\"model_type\": \"llama\", \"hidden_size\": 32, \"intermediate_size\": 64, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": "
               "1, \"vocab_size\": 300, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5, "
               "\"tie_word_embeddings\": true}\n");
    fclose(f);
    char cmd[4000];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", a, b);
    REQUIRE(system(cmd) == 0);
    /* 12 steps at once, 6 + 6 across a restart */
    CHECK_EQ_INT(run_sft(data, cfg, a, "12", "0"), 0);
    CHECK_EQ_INT(run_sft(data, cfg, b, "12", "6"), 0);
    snprintf(pb, sizeof(pb), "%s/last/trainer_state.json", b);
    FILE *st = fopen(pb, "r");
    REQUIRE(st != NULL);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, st);
    buf[n] = '\0';
    fclose(st);
    CHECK(strstr(buf, "\"step\": 6") != NULL);
    CHECK_EQ_INT(run_sft(data, cfg, b, "12", "0"), 0);
    const char *files[] = {"model.safetensors", "optimizer.safetensors", "tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(pa, sizeof(pa), "%s/last/%s", a, files[i]);
        snprintf(pb, sizeof(pb), "%s/last/%s", b, files[i]);
        CHECK_MSG(same_file(pa, pb), "%s differs after resume", files[i]);
    }
    snprintf(pa, sizeof(pa), "%s/best/model.safetensors", a);
    CHECK(access(pa, F_OK) == 0);
    snprintf(pa, sizeof(pa), "%s/train_log.jsonl", a);
    CHECK(access(pa, F_OK) == 0);
}

static void test_train_sft_bad_config(void) {
    char *envp[] = {NULL};
    char *no_data[] = {"train-sft", "--out", "x", NULL};
    CHECK_EQ_INT(she_cmd_train_sft(3, no_data, envp), 2);
    char *bad_lr[] = {"train-sft", "--data", "x", "--out", "y", "--lr", "-1", NULL};
    CHECK_EQ_INT(she_cmd_train_sft(7, bad_lr, envp), 2);
    char *bad_key[] = {"train-sft", "--set", "sft.nope=1", NULL};
    CHECK_EQ_INT(she_cmd_train_sft(3, bad_key, envp), 2);
}

int main(void) {
    const char *t = getenv("SHE_TEST_TMP");
    snprintf(tmpdir, sizeof(tmpdir), "%s", t ? t : "/tmp");
    mkdir(tmpdir, 0777);
    RUN(test_sequence_layout);
    RUN(test_truncation_keeps_answer);
    RUN(test_loss_values);
    RUN(test_loss_decreases);
    RUN(test_train_sft_resume);
    RUN(test_train_sft_bad_config);
    TEST_DONE();
}
