/* test_judge.c -- the judge's decode / parse / stop logic: generated ids (crafted) up to the
 * first eos parse into a grade or a format failure; a tiny model overfitted to one chain is
 * judged through the sampler and stops right after "5. Grade: Lx"; rows that make no prompt are
 * failures, not errors; the teacher step reference for rows without step truth. */
#include <stdint.h>

#include "test.h"
#include "trainer/cot.h"
#include "trainer/judge.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

static const char *chain_l3 = "1. Query: category=drill; color=red, type=cordless\n"
                              "2. Item: category=drill; brand=dewalt, color=red\n"
                              "3. Category: exact\n"
                              "4. Attributes: partial\n"
                              "5. Grade: L3\n";

static she_tokenizer_t *make_tok(void) {
    char errstr[512];
    she_sample_t s;
    memset(&s, 0, sizeof(s));
    s.query = "red cordless drill";
    s.item_title = "DEWALT Drill in Red";
    s.grade = SHE_GRADE_L3;
    she_tokenizer_t *tok = NULL;
    if (she_sft_train_tokenizer(&s, 1, NULL, NULL, 300, &tok, errstr, sizeof(errstr)) != SHE_OK)
        fprintf(stderr, "tokenizer: %s\n", errstr);
    return tok;
}

static int encode(const she_tokenizer_t *tok, const char *text, int32_t *ids, int cap) {
    char errstr[512];
    int n = 0;
    she_tokenizer_encode(tok, text, strlen(text), 0, ids, cap, &n, errstr, sizeof(errstr));
    return n;
}

static void test_parse_ids(void) {
    char errstr[512];
    she_tokenizer_t *tok = make_tok();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    int32_t ids[512];
    she_judge_result_t *r = calloc(1, sizeof(*r));
    REQUIRE(r != NULL);

    /* a well-formed chain, eos, then junk that must be ignored */
    int n = encode(tok, chain_l3, ids, 400);
    ids[n++] = sp.eos;
    n += encode(tok, "5. Grade: L1\n", ids + n, 100);
    she_judge_parse_ids(tok, sp.eos, ids, n, r);
    CHECK_EQ_INT(r->format_ok, 1);
    CHECK_EQ_INT(r->grade, SHE_GRADE_L3);
    CHECK_STR(r->text, chain_l3);
    CHECK_EQ_INT(r->parsed.cot.cat_match, SHE_CAT_MATCH_EXACT);

    /* stopped right after the grade (no newline, no eos): still a complete chain */
    n = encode(tok, chain_l3, ids, 400) - 1; /* drop the final "\n" token */
    she_judge_parse_ids(tok, sp.eos, ids, n, r);
    CHECK_EQ_INT(r->format_ok, 1);
    CHECK_EQ_INT(r->grade, SHE_GRADE_L3);

    /* cut inside step 4 (the token budget ran out): no grade */
    n = encode(tok, "1. Query: category=drill\n2. Item: category=drill\n3. Category: exact\n"
                    "4. Attrib", ids, 400);
    she_judge_parse_ids(tok, sp.eos, ids, n, r);
    CHECK_EQ_INT(r->format_ok, 0);
    CHECK_EQ_INT(r->grade, SHE_GRADE_UNKNOWN);
    CHECK_EQ_INT(r->parsed.ok[2], 1); /* step 3 still parsed */

    /* a special token inside the answer stays as text and spoils the chain */
    n = encode(tok, "1. Query: category=drill\n", ids, 400);
    ids[n++] = sp.bos;
    n += encode(tok, "2. Item: category=drill\n3. Category: exact\n4. Attributes: match\n"
                     "5. Grade: L4\n", ids + n, 400);
    she_judge_parse_ids(tok, sp.eos, ids, n, r);
    CHECK_EQ_INT(r->format_ok, 0);
    CHECK_EQ_INT(r->grade, SHE_GRADE_L4); /* step 5 itself is fine */
    CHECK(strstr(r->text, SHE_SFT_BOS) != NULL);

    /* nothing generated */
    she_judge_parse_ids(tok, sp.eos, ids, 0, r);
    CHECK_EQ_INT(r->format_ok, 0);
    CHECK_EQ_INT(r->grade, SHE_GRADE_UNKNOWN);
    free(r);
    she_tokenizer_free(tok);
}

/* Trains a tiny model until it writes chain_l3 after the prompt, then judges through the
 * sampler: greedy decoding reproduces the chain and stops at the step-5 stop string. */
static void test_judge_run_overfitted(void) {
    char errstr[512];
    she_sample_t s[3];
    memset(s, 0, sizeof(s));
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

    /* the teacher writes exactly chain_l3 for this sample */
    she_cot_t cot;
    char chain[SHE_COT_MAX_CHAIN];
    REQUIRE_OK(she_teacher_chain(&s[0], NULL, NULL, &cot, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cot_format(&cot, chain, sizeof(chain), NULL, errstr, sizeof(errstr)));
    CHECK_STR(chain, chain_l3);

    she_tokenizer_t *tok = NULL;
    REQUIRE_OK(she_sft_train_tokenizer(s, 1, NULL, NULL, 320, &tok, errstr, sizeof(errstr)));
    she_sft_set_t *set = she_sft_set_build(tok, s, 1, NULL, NULL, 192, errstr, sizeof(errstr));
    REQUIRE(set->n == 1);
    CHECK_EQ_INT(set->n_truncated, 0); /* the judge sees the same prompt */
    she_model_config_t cfg = {.vocab_size = she_tokenizer_vocab_size(tok), .hidden_size = 32,
                              .intermediate_size = 64, .n_layers = 1, .n_heads = 2,
                              .n_kv_heads = 2, .max_position_embeddings = 256,
                              .rope_theta = 10000.0, .rms_norm_eps = 1e-5,
                              .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    REQUIRE_OK(she_model_new(&cfg, 1, set->max_len, &m, errstr, sizeof(errstr)));
    she_model_init_weights(m, 11, 0.02f);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    hp.weight_decay = 0;
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_engine_t *e = NULL;
    REQUIRE_OK(she_engine_new(m, opt, &cpu, &e, errstr, sizeof(errstr)));
    she_sft_batch_t *b = she_sft_batch_new(1, set->max_len);
    int idx[1] = {0};
    she_sft_batch_fill(b, set, idx, 1, 0);
    double loss = 0;
    for (int step = 0; step < 300 && (step < 20 || loss > 0.01); step++)
        REQUIRE_OK(she_sft_train_step(e, &hp, 1e-2f, 1.0f, b, &loss, NULL, errstr,
                                      sizeof(errstr)));
    she_engine_free(e);
    fprintf(stderr, "   overfitted loss %.5f\n", loss);
    CHECK(loss < 0.05);

    she_judge_opts_t o;
    she_judge_opts_default(&o);
    o.max_batch = 2; /* three rows: two batches */
    o.max_new_tokens = 100;
    she_judge_t *j = NULL;
    REQUIRE_OK(she_judge_new(m, tok, &o, &j, errstr, sizeof(errstr)));
    she_judge_result_t *res = calloc(3, sizeof(*res));
    REQUIRE(res != NULL);
    REQUIRE_OK(she_judge_run(j, s, 3, res, NULL, NULL, errstr, sizeof(errstr)));
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(res[i].prompt_ok, 1);
        CHECK_EQ_INT(res[i].format_ok, 1);
        CHECK_EQ_INT(res[i].grade, SHE_GRADE_L3);
        CHECK_EQ_INT(res[i].finish, SHE_FINISH_STOP_STRING);
        /* the chain without its final newline: generation stopped at "5. Grade: L3" */
        CHECK(res[i].text_len == (int)strlen(chain_l3) - 1 &&
              strncmp(res[i].text, chain_l3, strlen(chain_l3) - 1) == 0);
        CHECK(res[i].n_tokens < o.max_new_tokens);
    }
    CHECK_EQ_INT(res[2].prompt_ok, 0);
    CHECK_EQ_INT(res[2].format_ok, 0);
    CHECK_EQ_INT(res[2].grade, SHE_GRADE_UNKNOWN);
    CHECK_EQ_INT(res[2].n_tokens, 0);

    /* evaluation rows: step truth where present */
    she_eval_row_t rows[3];
    she_cot_t ref[3];
    int n_teacher = -1;
    she_judge_eval_rows(s, res, 2, NULL, NULL, ref, rows, &n_teacher);
    CHECK_EQ_INT(n_teacher, 0);
    CHECK_EQ_INT(rows[0].pred, SHE_GRADE_L3);
    CHECK_EQ_INT(rows[0].gold_cat_match, SHE_CAT_MATCH_EXACT);

    she_judge_free(j);
    free(res);
    she_sft_batch_free(b);
    she_adamw_free(opt);
    she_model_free(m);
    she_sft_set_free(set);
    she_tokenizer_free(tok);
    for (int i = 0; i < 3; i++)
        she_sample_clear(&s[i]);
}

/* Rows without step truth get the teacher's decomposition as their step reference. */
static void test_teacher_reference(void) {
    she_sample_t s;
    memset(&s, 0, sizeof(s));
    s.query = "red cordless drill";
    s.item_title = "Steel Garden Shed";
    s.grade = SHE_GRADE_L1;
    she_eval_row_t row;
    she_cot_t ref;
    int n_teacher = 0;
    she_judge_eval_rows(&s, NULL, 1, NULL, NULL, &ref, &row, &n_teacher);
    CHECK_EQ_INT(n_teacher, 1);
    CHECK_EQ_INT(row.gold, SHE_GRADE_L1);
    CHECK_EQ_INT(row.pred, SHE_GRADE_UNKNOWN);
    CHECK_EQ_INT(row.gold_cat_match, SHE_CAT_MATCH_NONE);
    CHECK_EQ_INT(row.gold_attr_match, SHE_ATTR_MATCH_NONE);
    CHECK_STR(row.gold_query_cat, "cordless drill");
    /* without teacher_ref: no step reference */
    she_judge_eval_rows(&s, NULL, 1, NULL, NULL, NULL, &row, &n_teacher);
    CHECK_EQ_INT(n_teacher, 0);
    CHECK(row.gold_query_cat == NULL);
}

int main(void) {
    RUN(test_parse_ids);
    RUN(test_judge_run_overfitted);
    RUN(test_teacher_reference);
    TEST_DONE();
}
