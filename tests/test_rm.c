/* test_rm.c -- the generative stepwise reward model's text (verdict parsing, justification,
 * step truth, corruptions, examples), its verdict probability against an independent forward,
 * and step rewards of crafted chains through trainer/reward.c in every mode: a correct chain, a
 * chain with a wrong step 3, a chain whose step 4 does not parse.
 *
 * With --gpu (`test_rm_gpu`, label gpu; "skipped: no CUDA device" elsewhere): the scorer on
 * cuda:0 against the scorer on the CPU on the same questions: the same justifications (greedy;
 * a question whose justification parts at a near-tie is not compared, and at most one may),
 * P([Correct]) within 1e-4 (read from two log-prob forwards on the device, from the logits on
 * the CPU). */
#include <math.h>
#include <string.h>

#include "cuda_device.h"
#include "dataset.h"
#include "gendata.h"
#include "test.h"
#include "trainer/cot.h"
#include "trainer/reward.h"
#include "trainer/rm.h"
#include "trainer/rollout.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

static she_dataset_t *data;

static she_err_t take(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    she_dataset_take(opaque, s);
    return SHE_OK;
}

/* 60 synthetic samples (with step truth) and a tokenizer trained on them. */
static she_tokenizer_t *setup_data(void) {
    char errstr[512];
    data = she_dataset_new();
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 60;
    o.seed = 3;
    if (she_gendata_run(&o, take, data, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_tokenizer_t *tok = NULL;
    if (she_sft_train_tokenizer(data->samples, (int)data->n, NULL, NULL, 400, &tok, errstr,
                                sizeof(errstr)) != SHE_OK)
        fprintf(stderr, "tokenizer: %s\n", errstr);
    return tok;
}

static she_model_t *tiny_model(int vocab, int max_batch, int max_seq) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = vocab, .hidden_size = 32, .intermediate_size = 64,
                              .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                              .max_position_embeddings = 512, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, max_batch, max_seq, &m, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_model_init_weights(m, 11, 0.2f);
    return m;
}

static void test_verdict_parsing(void) {
    CHECK_EQ_INT(she_rm_parse_verdict("[Correct]", 9), 1);
    CHECK_EQ_INT(she_rm_parse_verdict("expected: exact\n[Incorrect]", 27), 0);
    CHECK_EQ_INT(she_rm_parse_verdict("x [Incorrect] then [Correct]", 28), 0);
    CHECK_EQ_INT(she_rm_parse_verdict("[Correct][Incorrect]", 20), 1);
    CHECK_EQ_INT(she_rm_parse_verdict("Correct", 7), -1);
    CHECK_EQ_INT(she_rm_parse_verdict("[Correct", 8), -1);
    CHECK_EQ_INT(she_rm_parse_verdict("[Correct]", 5), -1); /* only len bytes are read */
}

static void make_cot(she_cot_t *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->query.category, sizeof(c->query.category), "running shoes");
    she_cot_interp_add(&c->query, "brand", "nike");
    she_cot_interp_add(&c->query, "color", "red");
    snprintf(c->item.category, sizeof(c->item.category), "running shoe");
    she_cot_interp_add(&c->item, "brand", "nike");
    she_cot_interp_add(&c->item, "color", "blue");
    c->cat_match = SHE_CAT_MATCH_EXACT;
    c->attr_match = SHE_ATTR_MATCH_CONFLICT;
    c->grade = SHE_GRADE_L2;
}

static void parse_cot(const she_cot_t *c, she_cot_parsed_t *p) {
    char errstr[512], buf[SHE_COT_MAX_CHAIN];
    size_t len;
    CHECK_OK(she_cot_format(c, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_OK(she_cot_parse(buf, len, p, errstr, sizeof(errstr)));
}

static void test_justification_and_step_truth(void) {
    char errstr[512], buf[256];
    size_t len;
    she_cot_t t;
    make_cot(&t);
    CHECK_OK(she_rm_format_justification(&t, 1, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_STR(buf, "expected: category=running shoes; brand=nike, color=red\n");
    CHECK_EQ_INT(len, strlen(buf));
    CHECK_OK(she_rm_format_justification(&t, 4, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_STR(buf, "expected: conflict\n");
    CHECK(she_rm_format_justification(&t, 5, buf, sizeof(buf), &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);

    she_cot_parsed_t p;
    parse_cot(&t, &p);
    for (int s = 1; s <= 5; s++)
        CHECK_EQ_INT(she_rm_step_correct(&t, &p, s), 1);
    /* attribute order, case and plural do not matter; a different value does */
    she_cot_t u = t;
    u.query.n_attrs = 0;
    she_cot_interp_add(&u.query, "color", "Red");
    she_cot_interp_add(&u.query, "brand", "Nike");
    snprintf(u.query.category, sizeof(u.query.category), "Running-Shoe");
    parse_cot(&u, &p);
    CHECK_EQ_INT(she_rm_step_correct(&t, &p, 1), 1);
    snprintf(u.query.attrs[0].value, sizeof(u.query.attrs[0].value), "blue");
    parse_cot(&u, &p);
    CHECK_EQ_INT(she_rm_step_correct(&t, &p, 1), 0);
    CHECK_EQ_INT(she_rm_step_correct(&t, &p, 2), 1);
    /* a step that did not parse is wrong */
    p.ok[2] = 0;
    CHECK_EQ_INT(she_rm_step_correct(&t, &p, 3), 0);

    char chain[SHE_RM_CHAIN_MAX + 32];
    she_rm_format_chain("1. Query: x\n\n  ", 15, 2, chain, &len);
    CHECK_STR(chain, "1. Query: x\njudge: step 2\n");
}

static void test_corruptions(void) {
    she_cot_t t, d, bad;
    make_cot(&t);
    make_cot(&d);
    snprintf(d.query.category, sizeof(d.query.category), "sweater");
    snprintf(d.item.attrs[1].value, sizeof(d.item.attrs[1].value), "green");
    she_rng_t rng;
    she_rng_seed(&rng, 5);
    she_cot_parsed_t p;
    for (int step = 1; step <= 5; step++)
        for (int k = 0; k < SHE_RM_CORRUPT__COUNT; k++) {
            int applies = step <= 2 ? k != SHE_RM_CORRUPT_VALUE : k == SHE_RM_CORRUPT_VALUE;
            int did = she_rm_corrupt(&t, step, (she_rm_corruption_t)k, &d, &rng, &bad);
            CHECK_MSG(did == applies, "step %d kind %s", step, she_rm_corruption_name(k));
            if (!did)
                continue;
            parse_cot(&bad, &p);
            for (int s = 1; s <= 5; s++)
                CHECK_MSG(she_rm_step_correct(&t, &p, s) == (s != step), "step %d kind %s: %d",
                          step, she_rm_corruption_name(k), s);
        }
    /* the category kind needs a donor with another category */
    CHECK_EQ_INT(she_rm_corrupt(&t, 1, SHE_RM_CORRUPT_CATEGORY, NULL, &rng, &bad), 0);
    CHECK_EQ_INT(she_rm_corrupt(&t, 1, SHE_RM_CORRUPT_CATEGORY, &t, &rng, &bad), 0);
    /* contradicting without a donor value negates */
    she_cot_t one = t;
    one.query.n_attrs = 1;
    CHECK_EQ_INT(she_rm_corrupt(&one, 1, SHE_RM_CORRUPT_CONTRADICT_ATTR, NULL, &rng, &bad), 1);
    CHECK_STR(bad.query.attrs[0].value, "not nike");
}

static void test_examples(void) {
    char errstr[512];
    she_cot_t t, d;
    make_cot(&t);
    make_cot(&d);
    snprintf(d.item.category, sizeof(d.item.category), "sandal");
    snprintf(d.query.category, sizeof(d.query.category), "sandal");
    she_rm_examples_t set = {0};
    she_rng_t rng;
    she_rng_seed(&rng, 1);
    const char *policy[2] = {"1. Query: category=running shoes; brand=nike, color=red\n"
                             "2. Item: category=boot\n3. Category: partial\n"
                             "4. Attributes: garbage\n5. Grade: L3",
                             "nonsense"};
    REQUIRE_OK(she_rm_examples_add(&set, 7, &t, &d, policy, 2, &rng, errstr, sizeof(errstr)));
    CHECK_EQ_INT(set.n, 4 + 4 + 2 * 4);
    int truth = 0, corrupt = 0;
    for (int i = 0; i < set.n; i++) {
        const she_rm_example_t *e = &set.ex[i];
        CHECK_EQ_INT(e->sample, 7);
        if (e->source == SHE_RM_SRC_TRUTH)
            truth += e->label == 1;
        if (e->source == SHE_RM_SRC_CORRUPT)
            corrupt += e->label == 0;
        CHECK(strncmp(e->justification, "expected: ", 10) == 0);
    }
    CHECK_EQ_INT(truth, 4);
    CHECK_EQ_INT(corrupt, 4);
    /* the policy chain: step 1 right, steps 2-4 wrong; the nonsense chain: all wrong */
    int labels[8];
    for (int i = 0; i < 8; i++)
        labels[i] = set.ex[8 + i].label;
    CHECK(labels[0] == 1 && labels[1] == 0 && labels[2] == 0 && labels[3] == 0);
    CHECK(labels[4] == 0 && labels[5] == 0 && labels[6] == 0 && labels[7] == 0);
    she_rm_examples_free(&set);
}

/* Questions about the teacher chains of the first n samples, steps 1..4 in turn. */
static int teacher_questions(she_rm_query_t *q, char (*chains)[SHE_COT_MAX_CHAIN], int n) {
    char errstr[512];
    for (int i = 0; i < n; i++) {
        she_cot_t c;
        size_t len;
        she_err_t e = she_teacher_chain(&data->samples[i], NULL, NULL, &c, errstr, sizeof(errstr));
        if (e == SHE_OK)
            e = she_cot_format(&c, chains[i], sizeof(chains[i]), &len, errstr, sizeof(errstr));
        if (e != SHE_OK) {
            fprintf(stderr, "teacher chain %d: %s\n", i, errstr);
            return -1;
        }
        q[i] = (she_rm_query_t){&data->samples[i], chains[i], len, 1 + i % 4};
    }
    return 0;
}

/* P([Correct]) from the scorer equals the two-way softmax of an independent forward with the
 * two verdict tokens as targets (log-softmax there, raw logits in the scorer). */
static void test_rm_probability(void) {
    char errstr[512];
    she_tokenizer_t *tok = setup_data();
    REQUIRE(tok != NULL);
    she_rm_config_t rc = she_rm_defaults();
    int seq = she_rm_max_seq(&rc);
    she_model_t *m = tiny_model(she_tokenizer_vocab_size(tok), 8, seq);
    REQUIRE(m != NULL);
    she_rm_t *rm = NULL;
    REQUIRE_OK(she_rm_new(m, tok, &rc, 4, NULL, &rm, errstr, sizeof(errstr)));
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    enum { NQ = 5 };
    she_rm_query_t q[NQ];
    char chains[NQ][SHE_COT_MAX_CHAIN];
    REQUIRE(teacher_questions(q, chains, NQ) == 0);
    float p[NQ];
    char jbuf[NQ][SHE_RM_JUSTIFY_TEXT];
    char *just[NQ];
    for (int i = 0; i < NQ; i++)
        just[i] = jbuf[i];
    REQUIRE_OK(she_rm_judge(rm, q, NQ, p, just, errstr, sizeof(errstr)));
    int32_t vc[16], vi[16];
    int nc, ni;
    REQUIRE_OK(she_tokenizer_encode(tok, SHE_RM_CORRECT, strlen(SHE_RM_CORRECT), 0, vc, 16, &nc,
                                    errstr, sizeof(errstr)));
    REQUIRE_OK(she_tokenizer_encode(tok, SHE_RM_INCORRECT, strlen(SHE_RM_INCORRECT), 0, vi, 16,
                                    &ni, errstr, sizeof(errstr)));
    int k = 0;
    while (vc[k] == vi[k])
        k++;
    for (int i = 0; i < NQ; i++) {
        CHECK(p[i] >= 0 && p[i] <= 1);
        size_t jl = strlen(just[i]);
        REQUIRE(jl > 0 && just[i][jl - 1] == '\n');
        /* question + justification + shared verdict prefix, then each verdict's first token */
        int32_t row[1][512];
        int n = 0;
        REQUIRE_OK(she_rm_encode_query(&rc, tok, &sp, q[i].sample, q[i].chain, q[i].chain_len,
                                       q[i].step, row[0], &n, errstr, sizeof(errstr)));
        int nj = 0;
        she_tokenizer_encode(tok, just[i], jl, 0, row[0] + n, rc.max_justify, &nj, errstr,
                             sizeof(errstr));
        n += nj < rc.max_justify ? nj : rc.max_justify;
        memcpy(row[0] + n, vc, sizeof(int32_t) * k);
        n += k;
        /* two rows [2, n]: the same tokens, the two verdicts' first tokens as last targets */
        int32_t flat[2 * 512], tflat[2 * 512];
        float lp[2 * 512];
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < n; t++) {
                flat[r * n + t] = row[0][t];
                tflat[r * n + t] = t == n - 1 ? (r == 0 ? vc[k] : vi[k]) : -1;
            }
        REQUIRE_OK(she_model_forward(m, flat, NULL, tflat, 2, n, 1.0f, lp, NULL, errstr,
                                     sizeof(errstr)));
        double ref = 1.0 / (1.0 + exp((double)lp[n + n - 1] - (double)lp[n - 1]));
        CHECK_CLOSE(p[i], ref, 1e-5, 1e-4);
    }
    she_rm_free(rm);
    she_model_free(m);
    she_tokenizer_free(tok);
    she_dataset_free(data);
}

/* A response whose tokens spell `text` (plus <|eos|>), with spans as rollouts make them. */
static void make_response(const she_tokenizer_t *tok, const she_sft_special_t *sp,
                          const char *text, she_response_t *r) {
    char errstr[512];
    memset(r, 0, sizeof(*r));
    int32_t ids[1024];
    int n = 0;
    CHECK_OK(she_tokenizer_encode(tok, text, strlen(text), 0, ids, 1023, &n, errstr,
                                  sizeof(errstr)));
    ids[n++] = sp->eos;
    r->n_tokens = n;
    r->tokens = malloc(sizeof(int32_t) * n);
    r->logprobs = calloc(n, sizeof(float));
    memcpy(r->tokens, ids, sizeof(int32_t) * n);
    CHECK_OK(she_response_make_spans(tok, sp->eos, r, errstr, sizeof(errstr)));
}

static void test_reward_modes(void) {
    char errstr[512];
    she_tokenizer_t *tok = setup_data();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    she_rm_config_t rc = she_rm_defaults();
    she_model_t *m = tiny_model(she_tokenizer_vocab_size(tok), 16, she_rm_max_seq(&rc));
    REQUIRE(m != NULL);
    she_rm_t *rm = NULL;
    REQUIRE_OK(she_rm_new(m, tok, &rc, 16, NULL, &rm, errstr, sizeof(errstr)));
    const she_sample_t *s = &data->samples[0];
    REQUIRE(s->has_steps);
    she_cot_t truth;
    REQUIRE_OK(she_teacher_chain(s, NULL, NULL, &truth, errstr, sizeof(errstr)));
    char good[SHE_COT_MAX_CHAIN], bad3[SHE_COT_MAX_CHAIN], bad4[SHE_COT_MAX_CHAIN];
    size_t len;
    REQUIRE_OK(she_cot_format(&truth, good, sizeof(good), &len, errstr, sizeof(errstr)));
    she_cot_t w = truth;
    w.cat_match = truth.cat_match == SHE_CAT_MATCH_NONE ? SHE_CAT_MATCH_EXACT : SHE_CAT_MATCH_NONE;
    REQUIRE_OK(she_cot_format(&w, bad3, sizeof(bad3), &len, errstr, sizeof(errstr)));
    /* step 4 with a value outside the grammar */
    snprintf(bad4, sizeof(bad4), "%s", good);
    char *a = strstr(bad4, "4. Attributes: ");
    REQUIRE(a != NULL);
    char *eol = strchr(a, '\n');
    char tail[SHE_COT_MAX_CHAIN];
    snprintf(tail, sizeof(tail), "%s", eol);
    snprintf(a, sizeof(bad4) - (size_t)(a - bad4), "4. Attributes: matchy%s", tail);
    const char *texts[3] = {good, bad3, bad4};

    for (int mode = 0; mode < SHE_REWARD_MODE__COUNT; mode++) {
        she_rollout_group_t g = {0};
        she_sample_copy(&g.sample, s);
        g.sample_id = strdup(s->sample_id);
        g.group_id = strdup("g");
        g.n_responses = 3;
        g.responses = calloc(3, sizeof(she_response_t));
        for (int k = 0; k < 3; k++)
            make_response(tok, &sp, texts[k], &g.responses[k]);
        she_reward_config_t cfg = she_reward_defaults();
        cfg.mode = (she_reward_mode_t)mode;
        she_rewarder_t *rw = NULL;
        REQUIRE_OK(she_rewarder_new(&cfg, tok, rm, NULL, NULL, &rw, errstr, sizeof(errstr)));
        she_rewarded_group_t out = {0};
        she_step_verdict_t v[3];
        REQUIRE_OK(she_reward_groups(rw, &g, 1, &out, v, errstr, sizeof(errstr)));
        CHECK(g.responses == NULL); /* moved */
        REQUIRE(out.n_rewards == 3);
        const float *r0 = out.rewards[0].step_rewards, *r1 = out.rewards[1].step_rewards,
                    *r2 = out.rewards[2].step_rewards;
        /* verdicts: the parser and the ground truth */
        for (int j = 0; j < 5; j++) {
            CHECK_EQ_INT(v[0].parsed[j], 1);
            CHECK_EQ_INT(v[0].gt[j], 1);
            CHECK_EQ_INT(v[1].parsed[j], 1);
            CHECK_EQ_INT(v[2].parsed[j], j != 3);
        }
        CHECK_EQ_INT(v[1].gt[2], 0);
        CHECK_EQ_INT(v[2].gt[3], 0);
        for (int k = 0; k < 3; k++)
            CHECK_EQ_INT(out.rewards[k].pass, 1);
        CHECK_CLOSE(out.pass_rate, 1.0, 0, 0);
        switch (mode) {
        case SHE_REWARD_MODE_OUTCOME:
            for (int k = 0; k < 3; k++) {
                const float *r = out.rewards[k].step_rewards;
                CHECK(r[0] == 0 && r[1] == 0 && r[2] == 0 && r[3] == 0);
                CHECK_CLOSE(r[4], 1.0, 1e-6, 0);
            }
            break;
        case SHE_REWARD_MODE_SUM:
            CHECK_CLOSE(r0[4], 1.4, 1e-6, 0);
            CHECK_CLOSE(r1[4], 1.2, 1e-6, 0); /* step 3 wrong */
            CHECK_CLOSE(r2[4], 1.2, 1e-6, 0); /* step 4 unparsable */
            CHECK(r0[0] == 0 && r0[2] == 0 && r1[2] == 0 && r2[3] == 0);
            break;
        case SHE_REWARD_MODE_HYBRID:
            for (int k = 0; k < 3; k++) {
                CHECK(v[k].rm[0] >= 0 && v[k].rm[1] >= 0);
                CHECK(v[k].rm[2] < 0 && v[k].rm[3] < 0);
                CHECK_CLOSE(out.rewards[k].step_rewards[0], 0.2 * v[k].rm[0], 1e-6, 0);
            }
            CHECK_CLOSE(r0[2], 0.2, 1e-6, 0);
            CHECK_CLOSE(r0[3], 0.2, 1e-6, 0);
            CHECK_CLOSE(r1[2], 0.0, 0, 0);
            CHECK_CLOSE(r1[3], 0.2, 1e-6, 0);
            CHECK_CLOSE(r2[2], 0.2, 1e-6, 0);
            CHECK_CLOSE(r2[3], 0.0, 0, 0);
            CHECK_CLOSE(r2[4], 1.0, 1e-6, 0);
            break;
        case SHE_REWARD_MODE_RM:
            for (int k = 0; k < 3; k++)
                for (int j = 0; j < 4; j++) {
                    int judged = k != 2 || j != 3; /* the unparsable step is not asked about */
                    CHECK_EQ_INT(v[k].rm[j] >= 0, judged);
                    CHECK_CLOSE(out.rewards[k].step_rewards[j],
                                judged ? 0.2 * v[k].rm[j] : 0.0, 1e-6, 0);
                }
            break;
        }
        double sum = 0;
        for (int j = 0; j < 5; j++)
            sum += r0[j];
        CHECK_CLOSE(out.rewards[0].total, sum, 1e-6, 1e-6);
        she_msg_clear_rewarded_group(&out);
        she_msg_clear_rollout_group(&g);
        she_rewarder_free(rw);
    }
    /* rm and hybrid refuse to run without a reward model */
    she_reward_config_t cfg = she_reward_defaults();
    she_rewarder_t *rw = NULL;
    CHECK(she_rewarder_new(&cfg, tok, NULL, NULL, NULL, &rw, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    she_rm_free(rm);
    she_model_free(m);
    she_tokenizer_free(tok);
    she_dataset_free(data);
}

static void test_rm_on_cuda(void) {
    char errstr[512];
    she_tokenizer_t *tok = setup_data();
    REQUIRE(tok != NULL);
    she_rm_config_t rc = she_rm_defaults();
    she_model_t *m = tiny_model(she_tokenizer_vocab_size(tok), 8, she_rm_max_seq(&rc));
    REQUIRE(m != NULL);
    she_device_t gpu;
    REQUIRE_OK(she_device_select("cuda:0", &gpu, errstr, sizeof(errstr)));
    she_rm_t *cpu_rm = NULL, *gpu_rm = NULL;
    REQUIRE_OK(she_rm_new(m, tok, &rc, 4, NULL, &cpu_rm, errstr, sizeof(errstr)));
    REQUIRE_OK(she_rm_new(m, tok, &rc, 4, &gpu, &gpu_rm, errstr, sizeof(errstr)));
    enum { NQ = 8 }; /* two batches of 4 */
    she_rm_query_t q[NQ];
    char chains[NQ][SHE_COT_MAX_CHAIN];
    REQUIRE(teacher_questions(q, chains, NQ) == 0);
    float pc[NQ], pg[NQ];
    char jc[NQ][SHE_RM_JUSTIFY_TEXT], jg[NQ][SHE_RM_JUSTIFY_TEXT];
    char *just_c[NQ], *just_g[NQ];
    for (int i = 0; i < NQ; i++)
        just_c[i] = jc[i], just_g[i] = jg[i];
    REQUIRE_OK(she_rm_judge(cpu_rm, q, NQ, pc, just_c, errstr, sizeof(errstr)));
    REQUIRE_OK(she_rm_judge(gpu_rm, q, NQ, pg, just_g, errstr, sizeof(errstr)));
    int parted = 0;
    for (int i = 0; i < NQ; i++) {
        if (strcmp(jc[i], jg[i]) != 0) {
            parted++;
            continue;
        }
        CHECK_MSG(fabsf(pc[i] - pg[i]) <= 1e-4f,
                  "question %d: P(correct) %.6f on the CPU, %.6f on cuda:0", i, pc[i], pg[i]);
    }
    CHECK_MSG(parted <= 1, "%d of %d justifications differ between the CPU and cuda:0", parted,
              NQ);
    she_rm_free(cpu_rm);
    she_rm_free(gpu_rm);
    she_model_free(m);
    she_tokenizer_free(tok);
    she_dataset_free(data);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--gpu") == 0) {
        char why[512] = "";
        if (she_cuda_device_count(why, sizeof(why)) == 0)
            TEST_SKIP("no CUDA device (%s)", why);
        RUN(test_rm_on_cuda);
        TEST_DONE();
    }
    RUN(test_verdict_parsing);
    RUN(test_justification_and_step_truth);
    RUN(test_corruptions);
    RUN(test_examples);
    RUN(test_rm_probability);
    RUN(test_reward_modes);
    TEST_DONE();
}
