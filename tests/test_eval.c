/* test_metrics.c -- evaluation metrics against numbers worked out by hand (in the comments):
 * confusion matrix, per-class P/R/F1, macro F1, Good F1, accuracy, format failures, per-step
 * accuracy, breakdowns, the two-system compare, and the ranking view (goodrates, NDCG@10 on a
 * hand example); then the JSON and Markdown writers. */
#include <jansson.h>

#include "test.h"
#include "trainer/cot.h"
#include "trainer/eval.h"

#define F SHE_GRADE_UNKNOWN /* a format failure */

/* Ten rows.  gold / pred (F = failure):
 *   0 L1 L1   1 L1 L2   2 L2 L2   3 L2 L2   4 L2 L3
 *   5 L3 L3   6 L3 F    7 L3 L4   8 L4 L4   9 L4 L3
 * Confusion [gold][pred L1 L2 L3 L4 F]:
 *   L1 [1 1 0 0 0]  L2 [0 2 1 0 0]  L3 [0 0 1 1 1]  L4 [0 0 1 1 0]
 * Predicted per class: L1 1, L2 3, L3 3, L4 2.
 *   P: L1 1/1, L2 2/3, L3 1/3, L4 1/2    R: L1 1/2, L2 2/3, L3 1/3, L4 1/2
 *   F1: L1 2/3, L2 2/3, L3 1/3, L4 1/2   macro = (2/3+2/3+1/3+1/2)/4 = 13/24
 * Accuracy 5/10; failures 1/10.
 * Good (L3+L4): predicted good = rows 4,5,7,8,9 (5), of which gold good 5,7,8,9 (4);
 *   gold good = rows 5..9 (5): P = 4/5, R = 4/5, F1 = 4/5. */
static const she_grade_t gold10[10] = {1, 1, 2, 2, 2, 3, 3, 3, 4, 4};
static const she_grade_t pred_a[10] = {1, 2, 2, 2, 3, 3, F, 4, 4, 3};
/* B right on rows 0,1,3,4,6; A right on 0,2,3,5,8:
 * both 0,3 (2); A only 2,5,8 (3); B only 1,4,6 (3); neither 7,9 (2). */
static const she_grade_t pred_b[10] = {1, 1, 3, 2, 2, 4, 3, F, 3, 3};

static void rows10(she_eval_row_t *r, const she_grade_t *pred) {
    memset(r, 0, 10 * sizeof(*r));
    for (int i = 0; i < 10; i++) {
        r[i].gold = gold10[i];
        r[i].pred = pred[i];
        r[i].query_type = i < 5 ? "plain" : "qa";
        r[i].domain = i < 2 ? "tools" : NULL;
    }
}

static void test_classification(void) {
    char errstr[512];
    she_eval_row_t r[10];
    rows10(r, pred_a);
    she_eval_metrics_t *m = NULL;
    REQUIRE_OK(she_eval_compute(r, 10, 0, &m, errstr, sizeof(errstr)));
    const she_eval_class_t *c = &m->all;
    static const long want[4][5] = {
        {1, 1, 0, 0, 0}, {0, 2, 1, 0, 0}, {0, 0, 1, 1, 1}, {0, 0, 1, 1, 0}};
    for (int g = 0; g < 4; g++)
        for (int p = 0; p < 5; p++)
            CHECK_MSG(c->confusion[g][p] == want[g][p], "confusion[%d][%d] = %ld, want %ld", g,
                      p, c->confusion[g][p], want[g][p]);
    CHECK_EQ_INT(c->n, 10);
    CHECK_EQ_INT(c->support[0], 2);
    CHECK_EQ_INT(c->support[1], 3);
    CHECK_EQ_INT(c->support[2], 3);
    CHECK_EQ_INT(c->support[3], 2);
    const double tol = 1e-12;
    CHECK_CLOSE(c->precision[0], 1.0, tol, 0);
    CHECK_CLOSE(c->precision[1], 2.0 / 3, tol, 0);
    CHECK_CLOSE(c->precision[2], 1.0 / 3, tol, 0);
    CHECK_CLOSE(c->precision[3], 0.5, tol, 0);
    CHECK_CLOSE(c->recall[0], 0.5, tol, 0);
    CHECK_CLOSE(c->recall[1], 2.0 / 3, tol, 0);
    CHECK_CLOSE(c->recall[2], 1.0 / 3, tol, 0);
    CHECK_CLOSE(c->recall[3], 0.5, tol, 0);
    CHECK_CLOSE(c->f1[0], 2.0 / 3, tol, 0);
    CHECK_CLOSE(c->f1[1], 2.0 / 3, tol, 0);
    CHECK_CLOSE(c->f1[2], 1.0 / 3, tol, 0);
    CHECK_CLOSE(c->f1[3], 0.5, tol, 0);
    CHECK_CLOSE(c->macro_f1, 13.0 / 24, tol, 0);
    CHECK_CLOSE(c->accuracy, 0.5, tol, 0);
    CHECK_EQ_INT(c->n_fail, 1);
    CHECK_CLOSE(c->fail_rate, 0.1, tol, 0);
    CHECK_CLOSE(c->good_precision, 0.8, tol, 0);
    CHECK_CLOSE(c->good_recall, 0.8, tol, 0);
    CHECK_CLOSE(c->good_f1, 0.8, tol, 0);
    CHECK_EQ_INT(m->with_steps, 0);
    CHECK_EQ_INT(m->has_ranking, 0);

    /* Breakdowns.  plain = rows 0-4: confusion L1 [1 1 0 0 0], L2 [0 2 1 0 0]:
     *   accuracy 3/5, F1 L1 2/3, L2 2/3, L3 0, L4 0 -> macro 1/3; no gold good -> Good F1 0.
     * qa = rows 5-9: correct 5 and 8 -> 2/5, one failure.  tools = rows 0-1: 1/2. */
    REQUIRE(m->n_by_type == 2);
    CHECK_STR(m->by_type[0].key, "plain");
    CHECK_STR(m->by_type[1].key, "qa");
    CHECK_CLOSE(m->by_type[0].cls.accuracy, 0.6, tol, 0);
    CHECK_CLOSE(m->by_type[0].cls.macro_f1, 1.0 / 3, tol, 0);
    CHECK_CLOSE(m->by_type[0].cls.good_f1, 0.0, tol, 0);
    CHECK_CLOSE(m->by_type[1].cls.accuracy, 0.4, tol, 0);
    CHECK_EQ_INT(m->by_type[1].cls.n_fail, 1);
    REQUIRE(m->n_by_domain == 1);
    CHECK_STR(m->by_domain[0].key, "tools");
    CHECK_EQ_INT(m->by_domain[0].cls.n, 2);
    CHECK_CLOSE(m->by_domain[0].cls.accuracy, 0.5, tol, 0);
    she_eval_free(m);

    /* all right: every F1 1; no row of a class and no prediction of it: F1 0 */
    she_eval_row_t two[2] = {{.gold = SHE_GRADE_L3, .pred = SHE_GRADE_L3},
                             {.gold = SHE_GRADE_L4, .pred = SHE_GRADE_L4}};
    REQUIRE_OK(she_eval_compute(two, 2, 0, &m, errstr, sizeof(errstr)));
    CHECK_CLOSE(m->all.accuracy, 1.0, tol, 0);
    CHECK_CLOSE(m->all.f1[0], 0.0, tol, 0);
    CHECK_CLOSE(m->all.f1[2], 1.0, tol, 0);
    CHECK_CLOSE(m->all.macro_f1, 0.5, tol, 0);
    CHECK_CLOSE(m->all.good_f1, 1.0, tol, 0);
    CHECK_EQ_INT(m->n_by_type, 0);
    she_eval_free(m);

    /* bad input */
    two[1].gold = SHE_GRADE_UNKNOWN;
    CHECK_EQ_INT(she_eval_compute(two, 2, 0, &m, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(m == NULL);
    CHECK(strstr(errstr, "row 1") != NULL);
    two[1].gold = SHE_GRADE_L4;
    two[1].pred = (she_grade_t)9;
    CHECK_EQ_INT(she_eval_compute(two, 2, 0, &m, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK_EQ_INT(she_eval_compute(two, 0, 0, &m, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    she_eval_free(NULL);
}

static void test_steps(void) {
    /* row 0: query cat "Running Shoes" ~ "running shoe" right, item "sandal" ~ "sandals"
     *        right, step 3 right, step 4 wrong, grade right;
     * row 1: step 1 unparsed (wrong), item "boot" vs "shoe" wrong, step 3 unparsed (wrong),
     *        step 4 right, grade a failure (wrong);
     * row 2: no step ground truth (steps 1-4 not counted), grade right;
     * row 3: only step 3 ground truth, right; grade wrong.
     * step 1: 1/2, step 2: 1/2, step 3: 2/3, step 4: 1/2, step 5: 2/4. */
    she_eval_row_t r[4] = {
        {.gold = SHE_GRADE_L4, .pred = SHE_GRADE_L4, .gold_query_cat = "Running Shoes",
         .pred_query_cat = "running shoe", .gold_item_cat = "sandal", .pred_item_cat = "sandals",
         .gold_cat_match = SHE_CAT_MATCH_EXACT, .pred_cat_match = SHE_CAT_MATCH_EXACT,
         .gold_attr_match = SHE_ATTR_MATCH_MATCH, .pred_attr_match = SHE_ATTR_MATCH_PARTIAL},
        {.gold = SHE_GRADE_L1, .pred = F, .gold_query_cat = "boots", .pred_query_cat = NULL,
         .gold_item_cat = "boot", .pred_item_cat = "shoe", .gold_cat_match = SHE_CAT_MATCH_NONE,
         .pred_cat_match = SHE_CAT_MATCH_UNKNOWN, .gold_attr_match = SHE_ATTR_MATCH_NONE,
         .pred_attr_match = SHE_ATTR_MATCH_NONE},
        {.gold = SHE_GRADE_L2, .pred = SHE_GRADE_L2, .pred_query_cat = "x", .pred_item_cat = "y",
         .pred_cat_match = SHE_CAT_MATCH_EXACT, .pred_attr_match = SHE_ATTR_MATCH_MATCH},
        {.gold = SHE_GRADE_L3, .pred = SHE_GRADE_L4, .gold_cat_match = SHE_CAT_MATCH_PARTIAL,
         .pred_cat_match = SHE_CAT_MATCH_PARTIAL},
    };
    char errstr[512];
    she_eval_metrics_t *m;
    REQUIRE_OK(she_eval_compute(r, 4, 1, &m, errstr, sizeof(errstr)));
    const long n[5] = {2, 2, 3, 2, 4}, ok[5] = {1, 1, 2, 1, 2};
    for (int j = 0; j < 5; j++) {
        CHECK_MSG(m->step_n[j] == n[j] && m->step_correct[j] == ok[j],
                  "step %d: %ld/%ld, want %ld/%ld", j + 1, m->step_correct[j], m->step_n[j],
                  ok[j], n[j]);
        CHECK_CLOSE(m->step_acc[j], (double)ok[j] / (double)n[j], 1e-12, 0);
    }
    CHECK_CLOSE(m->step_acc[4], m->all.accuracy, 1e-12, 0);
    she_eval_free(m);
}

static void test_row_from_parsed(void) {
    char errstr[512];
    const char *answer = "1. Query: category=running shoes; color=red\n"
                         "2. Item: category=sandal\n"
                         "3. Category: partial\n"
                         "4. Attributes: ???\n"
                         "5. Grade: L2\n";
    she_cot_parsed_t p;
    CHECK_EQ_INT(she_cot_parse(answer, strlen(answer), &p, errstr, sizeof(errstr)),
                 SHE_ERR_FORMAT);
    she_sample_t s;
    memset(&s, 0, sizeof(s));
    s.query = "red running shoes";
    s.grade = SHE_GRADE_L2;
    s.query_type = "plain";
    s.has_steps = 1;
    s.query_category = "running shoes";
    s.item_category = "sandals";
    s.cat_match = SHE_CAT_MATCH_PARTIAL;
    s.attr_match = SHE_ATTR_MATCH_CONFLICT;
    she_eval_row_t row;
    she_eval_row_from(&row, &s, &p);
    CHECK(row.gold == SHE_GRADE_L2 && row.pred == SHE_GRADE_L2);
    CHECK_STR(row.query, "red running shoes");
    CHECK_STR(row.pred_query_cat, "running shoes");
    CHECK_STR(row.pred_item_cat, "sandal");
    CHECK(row.pred_cat_match == SHE_CAT_MATCH_PARTIAL);
    CHECK(row.pred_attr_match == SHE_ATTR_MATCH_UNKNOWN); /* step 4 failed */
    CHECK(row.gold_attr_match == SHE_ATTR_MATCH_CONFLICT);
    she_eval_metrics_t *m;
    REQUIRE_OK(she_eval_compute(&row, 1, 1, &m, errstr, sizeof(errstr)));
    CHECK_EQ_INT(m->step_correct[0] + m->step_correct[1] + m->step_correct[2], 3);
    CHECK_EQ_INT(m->step_correct[3], 0);
    CHECK_EQ_INT(m->step_correct[4], 1);
    she_eval_free(m);
    /* no parsed answer: a failure */
    she_eval_row_from(&row, &s, NULL);
    CHECK(row.pred == SHE_GRADE_UNKNOWN && row.pred_query_cat == NULL);
}

static void test_compare(void) {
    char errstr[512];
    she_eval_row_t a[10], b[10];
    rows10(a, pred_a);
    rows10(b, pred_b);
    she_eval_compare_t c = {.name_a = "policy", .name_b = "lexical"};
    REQUIRE_OK(she_eval_compare(a, b, 10, &c, errstr, sizeof(errstr)));
    CHECK_STR(c.name_a, "policy");
    CHECK_EQ_INT(c.n, 10);
    CHECK_EQ_INT(c.both, 2);
    CHECK_EQ_INT(c.a_only, 3);
    CHECK_EQ_INT(c.b_only, 3);
    CHECK_EQ_INT(c.neither, 2);
    CHECK_CLOSE(c.a_only_share, 0.3, 1e-12, 0);
    CHECK_CLOSE(c.neither_share, 0.2, 1e-12, 0);
    b[4].gold = SHE_GRADE_L4;
    CHECK_EQ_INT(she_eval_compare(a, b, 10, &c, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(strstr(errstr, "row 4") != NULL);
}

/* Ranking, worked by hand (gain = gold - 1, discount 1/log2(rank + 1)):
 *  q1: items (gold, pred) = (L4,L2) (L1,L4) (L3,L3) (L2,L1) -> ranked gains 0,2,3,1:
 *      DCG = 2/log2 3 + 3/2 + 1/log2 5 = 3.1925361; ideal 3,2,1,0 = 4.7618595;
 *      NDCG 0.6704389; goodrate 2/4 (not > 1/2: not a good query).
 *  q2: three L1 items: goodrate 0, ideal DCG 0 -> no NDCG.
 *  q3: (L3, pred L3, E = 3.2) (L4, pred L3, E = 3.6): the expected grade breaks the tie, so
 *      L4 first: NDCG 1; goodrate 1.
 *  q4: (L4, failure) (L1, L2) (L4, L2), no probabilities: the failure goes last and the tie
 *      keeps row order -> gains 0,3,3: DCG = 3/log2 3 + 3/2 = 3.3927893, ideal 3,3,0 =
 *      4.8927893 -> 0.6934264; goodrate 2/3 (good query).
 *  q5: 12 items: 6 x (L1, pred L4) then 6 x (L4, pred L3): top 10 = six L1 and four L4:
 *      goodrate 0.4; DCG = 3(1/log2 8 + 1/log2 9 + 1/log2 10 + 1/log2 11), ideal 3 x six
 *      -> 0.3748920.
 *  item goodrate = (0.5 + 0 + 1 + 2/3 + 0.4)/5 = 0.5133333; query goodrate = 2/5;
 *  NDCG@10 = (0.6704389 + 1 + 0.6934264 + 0.3748920)/4 = 0.6846893 over 4 queries. */
static void test_ranking(void) {
    static const float p_a[4] = {0.0f, 0.1f, 0.6f, 0.3f}, p_b[4] = {0.0f, 0.0f, 0.4f, 0.6f};
    she_eval_row_t r[32];
    int n = 0;
#define ROW(q, g, p, pr) r[n++] = (she_eval_row_t){.query = q, .gold = g, .pred = p, .probs = pr}
    ROW("q1", 4, 2, NULL);
    ROW("q3", 3, 3, p_a); /* queries interleaved: grouping must not depend on row order */
    ROW("q1", 1, 4, NULL);
    ROW("q1", 3, 3, NULL);
    ROW("q1", 2, 1, NULL);
    ROW("q2", 1, 4, NULL);
    ROW("q2", 1, 3, NULL);
    ROW("q2", 1, F, NULL);
    ROW("q3", 4, 3, p_b);
    ROW("q4", 4, F, NULL);
    ROW("q4", 1, 2, NULL);
    ROW("q4", 4, 2, NULL);
    for (int i = 0; i < 6; i++)
        ROW("q5", 1, 4, NULL);
    for (int i = 0; i < 6; i++)
        ROW("q5", 4, 3, NULL);
    ROW(NULL, 4, 1, NULL); /* no query key: not in the ranking view */
#undef ROW
    char errstr[512];
    she_eval_metrics_t *m;
    REQUIRE_OK(she_eval_compute(r, n, 0, &m, errstr, sizeof(errstr)));
    REQUIRE(m->has_ranking);
    const she_eval_ranking_t *rk = &m->ranking;
    CHECK_EQ_INT(rk->k, 10);
    CHECK_EQ_INT(rk->n_queries, 5);
    CHECK_EQ_INT(rk->n_ndcg_queries, 4);
    CHECK_CLOSE(rk->item_goodrate, (0.5 + 0 + 1 + 2.0 / 3 + 0.4) / 5, 1e-12, 0);
    CHECK_CLOSE(rk->query_goodrate, 0.4, 1e-12, 0);
    CHECK_CLOSE(rk->ndcg, (0.6704389452 + 1.0 + 0.6934264036 + 0.3748920216) / 4, 1e-9, 0);
    she_eval_free(m);

    /* a single L4 item is its own ideal ranking; q1 alone gives its NDCG */
    REQUIRE_OK(she_eval_compute(r, 1, 0, &m, errstr, sizeof(errstr)));
    CHECK_CLOSE(m->ranking.ndcg, 1.0, 1e-12, 0);
    she_eval_free(m);
    she_eval_row_t q1[4] = {r[0], r[2], r[3], r[4]};
    REQUIRE_OK(she_eval_compute(q1, 4, 0, &m, errstr, sizeof(errstr)));
    CHECK_CLOSE(m->ranking.ndcg, 0.6704389452, 1e-9, 0);
    she_eval_free(m);
}

static char *slurp(FILE *f) {
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n)
        s[0] = '\0';
    return s;
}

static void test_writers(void) {
    char errstr[512];
    she_eval_row_t a[10], b[10];
    rows10(a, pred_a);
    rows10(b, pred_b);
    for (int i = 0; i < 10; i++)
        a[i].query = b[i].query = i < 5 ? "q1" : "q2";
    she_eval_metrics_t *ma, *mb;
    REQUIRE_OK(she_eval_compute(a, 10, 1, &ma, errstr, sizeof(errstr)));
    REQUIRE_OK(she_eval_compute(b, 10, 0, &mb, errstr, sizeof(errstr)));
    she_eval_compare_t cmp = {.name_a = "policy", .name_b = "lexical"};
    REQUIRE_OK(she_eval_compare(a, b, 10, &cmp, errstr, sizeof(errstr)));
    she_eval_report_entry_t entries[2] = {{"policy", ma}, {"lexical", mb}};
    she_eval_report_t rep = {"Test report", entries, 2, &cmp};

    FILE *f = tmpfile();
    REQUIRE(f != NULL);
    REQUIRE_OK(she_eval_write_json(f, &rep, errstr, sizeof(errstr)));
    char *text = slurp(f);
    fclose(f);
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    free(text);
    REQUIRE_MSG(doc != NULL, "JSON does not load: %s", jerr.text);
    CHECK_STR(json_string_value(json_object_get(doc, "title")), "Test report");
    json_t *sys = json_object_get(doc, "systems");
    REQUIRE(json_array_size(sys) == 2);
    json_t *m0 = json_object_get(json_array_get(sys, 0), "metrics");
    CHECK_CLOSE(json_real_value(json_object_get(m0, "accuracy")), 0.5, 1e-9, 0);
    CHECK_CLOSE(json_real_value(json_object_get(m0, "macro_f1")), 13.0 / 24, 1e-6, 0);
    json_t *row2 = json_array_get(json_object_get(json_object_get(m0, "confusion"), "counts"), 2);
    CHECK_EQ_INT(json_integer_value(json_array_get(row2, 4)), 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(
                     json_object_get(json_object_get(m0, "per_class"), "L2"), "support")),
                 3);
    CHECK(json_array_size(json_object_get(m0, "steps")) == 5);
    CHECK(json_array_size(json_object_get(m0, "by_query_type")) == 2);
    CHECK(json_object_get(m0, "ranking") != NULL);
    json_t *m1 = json_object_get(json_array_get(sys, 1), "metrics");
    CHECK(json_object_get(m1, "steps") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(doc, "compare"), "a_only")),
                 3);
    json_decref(doc);

    f = tmpfile();
    REQUIRE(f != NULL);
    REQUIRE_OK(she_eval_write_markdown(f, &rep, errstr, sizeof(errstr)));
    text = slurp(f);
    fclose(f);
    REQUIRE(text != NULL);
    const char *want[] = {
        "# Test report\n",
        "| policy | 10 | 50.00 | 54.17 | 80.00 | 66.67 | 66.67 | 33.33 | 50.00 | 10.00 (1) |\n",
        "| L3 | 0 | 0 | 1 | 1 | 1 |\n",
        "## Per-step accuracy",
        "| plain / policy | 5 | 60.00 | 33.33 | 0.00 |",
        "| tools / lexical | 2 |",
        "| only policy right | 30.00 |",
        "| both wrong | 20.00 |",
        "## Ranking view",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK_MSG(strstr(text, want[i]) != NULL, "Markdown lacks '%s':\n%s", want[i], text);
    free(text);
    she_eval_free(ma);
    she_eval_free(mb);
}

int main(void) {
    RUN(test_classification);
    RUN(test_steps);
    RUN(test_row_from_parsed);
    RUN(test_compare);
    RUN(test_ranking);
    RUN(test_writers);
    TEST_DONE();
}
