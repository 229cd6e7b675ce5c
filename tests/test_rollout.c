/* test_rollout.c -- rollout groups: G responses per prompt with the SFT prompt layout,
 * behaviour log-probs, spans that tile each response and agree with the parser's token -> step
 * map, reproducibility by seed; spans of a well-formed chain put each line's tokens in its
 * step. */
#include "dataset.h"
#include "gendata.h"
#include "test.h"
#include "trainer/cot.h"
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

static she_tokenizer_t *setup_data(void) {
    char errstr[512];
    data = she_dataset_new();
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 40;
    o.seed = 9;
    if (she_gendata_run(&o, take, data, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_tokenizer_t *tok = NULL;
    if (she_sft_train_tokenizer(data->samples, (int)data->n, NULL, NULL, 400, &tok, errstr,
                                sizeof(errstr)) != SHE_OK)
        fprintf(stderr, "tokenizer: %s\n", errstr);
    return tok;
}

static she_model_t *tiny_model(int vocab) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = vocab, .hidden_size = 32, .intermediate_size = 64,
                              .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                              .max_position_embeddings = 512, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, 4, 256, &m, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_model_init_weights(m, 2, 0.05f);
    return m;
}

static void check_spans(const she_tokenizer_t *tok, int32_t eos, const she_response_t *r) {
    char errstr[512];
    /* the spans tile [0, n) in order */
    int at = 0;
    for (int k = 0; k < r->n_spans; k++) {
        CHECK_EQ_INT(r->spans[k].start, at);
        CHECK(r->spans[k].end > r->spans[k].start);
        CHECK(r->spans[k].step >= 1 && r->spans[k].step <= 5);
        if (k > 0)
            CHECK(r->spans[k].step != r->spans[k - 1].step);
        at = r->spans[k].end;
    }
    CHECK_EQ_INT(at, r->n_tokens);
    /* and say what the parser's token -> step map says */
    char text[SHE_RESPONSE_TEXT_MAX];
    size_t len;
    int tok_end[256], want[256];
    uint8_t got[256];
    REQUIRE(r->n_tokens <= 256);
    CHECK_OK(she_response_text(tok, eos, r, text, &len, tok_end, errstr, sizeof(errstr)));
    she_cot_parsed_t parsed;
    she_cot_parse(text, len, &parsed, errstr, sizeof(errstr));
    she_cot_token_steps(&parsed, tok_end, r->n_tokens, want);
    she_response_token_steps(r, got);
    for (int t = 0; t < r->n_tokens; t++)
        CHECK_EQ_INT(got[t], want[t]);
}

static void test_rollout_groups(void) {
    char errstr[512];
    she_tokenizer_t *tok = setup_data();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    she_model_t *m = tiny_model(she_tokenizer_vocab_size(tok));
    REQUIRE(m != NULL);
    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = 3;
    rc.max_new_tokens = 24;
    rc.max_prompt_tokens = 128;
    she_rollout_t *ro = NULL;
    REQUIRE_OK(she_rollout_new(m, tok, &rc, 2, &ro, errstr, sizeof(errstr)));
    const she_sample_t *batch[2] = {&data->samples[0], &data->samples[5]};
    she_rollout_group_t a[2] = {0}, b[2] = {0}, c[2] = {0};
    REQUIRE_OK(she_rollout_generate(ro, batch, 2, 7, 42, a, errstr, sizeof(errstr)));
    REQUIRE_OK(she_rollout_generate(ro, batch, 2, 7, 42, b, errstr, sizeof(errstr)));
    REQUIRE_OK(she_rollout_generate(ro, batch, 2, 7, 43, c, errstr, sizeof(errstr)));
    int differ = 0;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(a[i].n_responses, 3);
        CHECK_EQ_INT(a[i].policy_version, 7);
        CHECK_STR(a[i].sample_id, batch[i]->sample_id);
        CHECK_STR(a[i].sample.query, batch[i]->query);
        CHECK(strstr(a[i].group_id, "@7/42") != NULL);
        /* the prompt is exactly the SFT / judge prompt */
        int32_t ids[128];
        int n;
        REQUIRE_OK(she_sft_encode_prompt(tok, &sp, batch[i], 128, ids, &n, NULL, errstr,
                                         sizeof(errstr)));
        CHECK_EQ_INT(a[i].n_prompt_tokens, n);
        CHECK(memcmp(a[i].prompt_tokens, ids, sizeof(int32_t) * n) == 0);
        for (int g = 0; g < 3; g++) {
            const she_response_t *r = &a[i].responses[g];
            CHECK(r->n_tokens >= 1 && r->n_tokens <= 24);
            CHECK_EQ_INT(r->truncated, r->n_tokens == 24 && r->tokens[23] != sp.eos);
            for (int t = 0; t < r->n_tokens; t++)
                CHECK(r->logprobs[t] <= 0 && r->logprobs[t] > -50);
            check_spans(tok, sp.eos, r);
            /* same seed: the same tokens; another seed: other tokens somewhere */
            CHECK_EQ_INT(b[i].responses[g].n_tokens, r->n_tokens);
            CHECK(memcmp(b[i].responses[g].tokens, r->tokens, sizeof(int32_t) * r->n_tokens) ==
                  0);
            differ |= c[i].responses[g].n_tokens != r->n_tokens ||
                      memcmp(c[i].responses[g].tokens, r->tokens,
                             sizeof(int32_t) * r->n_tokens) != 0;
        }
        she_msg_clear_rollout_group(&a[i]);
        she_msg_clear_rollout_group(&b[i]);
        she_msg_clear_rollout_group(&c[i]);
    }
    CHECK(differ);
    she_rollout_free(ro);
    she_model_free(m);
    she_tokenizer_free(tok);
    she_dataset_free(data);
}

/* A well-formed chain as a response: every token lies in the step of its line; text before
 * step 1 is step 1's, <|eos|> goes with step 5. */
static void test_spans_of_a_chain(void) {
    char errstr[512];
    she_tokenizer_t *tok = setup_data();
    REQUIRE(tok != NULL);
    she_sft_special_t sp;
    REQUIRE_OK(she_sft_special_ids(tok, &sp, errstr, sizeof(errstr)));
    she_cot_t cot;
    REQUIRE_OK(she_teacher_chain(&data->samples[3], NULL, NULL, &cot, errstr, sizeof(errstr)));
    char text[SHE_COT_MAX_CHAIN + 8] = "well\n";
    size_t len;
    REQUIRE_OK(she_cot_format(&cot, text + 5, sizeof(text) - 5, &len, errstr, sizeof(errstr)));
    len += 5;
    int32_t ids[512];
    int n;
    REQUIRE_OK(she_tokenizer_encode(tok, text, len, 0, ids, 511, &n, errstr, sizeof(errstr)));
    ids[n++] = sp.eos;
    she_response_t r = {.tokens = ids, .n_tokens = n};
    REQUIRE_OK(she_response_make_spans(tok, sp.eos, &r, errstr, sizeof(errstr)));
    CHECK_EQ_INT(r.n_spans, 5);
    uint8_t step[512];
    she_response_token_steps(&r, step);
    CHECK_EQ_INT(step[0], 1);
    CHECK_EQ_INT(step[n - 1], 5);
    /* each token's step is the number of the line its last byte is on (line 0 = "well") */
    size_t at = 0;
    for (int t = 0; t < n - 1; t++) {
        char piece[64];
        size_t pl;
        REQUIRE_OK(she_tokenizer_decode(tok, &ids[t], 1, 0, piece, sizeof(piece), &pl, errstr,
                                        sizeof(errstr)));
        at += pl;
        int line = 0;
        for (size_t i = 0; i + 1 < at; i++)
            line += text[i] == '\n';
        int want = line < 1 ? 1 : line; /* line k >= 1 holds step k */
        CHECK_MSG(step[t] == want, "token %d ends at byte %zu: step %d, want %d", t, at, step[t],
                  want);
    }
    free(r.spans);
    /* runs round trip */
    int steps[6] = {1, 1, 2, 5, 5, 3};
    she_response_t q = {.n_tokens = 6};
    she_response_set_spans(&q, steps);
    CHECK_EQ_INT(q.n_spans, 4);
    she_response_token_steps(&q, step);
    for (int t = 0; t < 6; t++)
        CHECK_EQ_INT(step[t], steps[t]);
    free(q.spans);
    she_tokenizer_free(tok);
    she_dataset_free(data);
}

int main(void) {
    RUN(test_rollout_groups);
    RUN(test_spans_of_a_chain);
    TEST_DONE();
}
