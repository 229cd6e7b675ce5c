/* trainer/eval.h -- the measurements every relevance result is judged by (symbols she_eval_*;
 * core/metrics.h is the unrelated Prometheus registry): classification metrics over L1..L4 (the
 * paper's offline table), per-step accuracy of the chain of thought, breakdowns per query type
 * and domain, a row-by-row comparison of two systems (the offline stand-in for GSB), the ranking
 * view (item goodrate@10, query goodrate, NDCG@10), and JSON / Markdown reports.
 *
 * Pure functions over arrays of rows: no model, no decoding, no files except the writers'
 * FILE *.  Definitions (also in trainer/COT_FORMAT.md, "Metrics"):
 *   - an unparsable answer (pred = SHE_GRADE_UNKNOWN) predicts no class: it is wrong for
 *     accuracy, lowers the recall of its gold class and adds to no precision denominator;
 *   - per-class F1 is 0 when precision + recall is 0 (no support and no prediction included);
 *     macro F1 is the mean of the four per-class F1s;
 *   - Good F1: positive class = L3+L4 against L1+L2, a failure being a missed positive when
 *     the gold is L3/L4 and not a positive prediction otherwise;
 *   - step j accuracy counts rows with gold for step j; a step the parser rejected is wrong;
 *     steps 1-2 compare categories after she_cot_norm_category; step 5 is the grade;
 *   - ranking: each query's items sorted by predicted grade (failures last), ties by expected
 *     grade sum_g g*P(g) (a row without probabilities counts its predicted grade), then by row
 *     order; top k = 10;
 *     item goodrate@10 = mean over queries of the share of gold L3/L4 in the top min(10, n);
 *     query goodrate = share of queries whose top min(10, n) is more than half L3/L4;
 *     NDCG@10 with gain = gold - 1 (0..3) and discount 1/log2(rank + 1), divided by the DCG of
 *     the query's items in gold order; queries whose items are all L1 (ideal DCG 0) have no
 *     NDCG and are left out of its mean (n_ndcg_queries says how many count). */
#ifndef SHE_TRAINER_EVAL_H
#define SHE_TRAINER_EVAL_H

#include <stdio.h>

#include "cot.h"
#include "sample.h"

#define SHE_EVAL_TOP_K 10
#define SHE_N_GRADES 4

/* One evaluated row.  Strings and probs are borrowed for the duration of the call. */
typedef struct she_eval_row {
    she_grade_t gold;       /* L1..L4 (required) */
    she_grade_t pred;       /* L1..L4, or SHE_GRADE_UNKNOWN for a format failure */
    const float *probs;     /* optional P(L1..L4) (4 floats) for ranking ties; NULL = none */
    const char *query;      /* ranking group key; NULL leaves the row out of the ranking view */
    const char *query_type; /* breakdown keys; NULL = the row is in no group of that breakdown */
    const char *domain;
    /* Step pairs (steps 1-4).  Gold NULL / UNKNOWN: no ground truth for that step, the row does
     * not count for it.  Pred NULL / UNKNOWN: the step did not parse, counted wrong. */
    const char *gold_query_cat, *pred_query_cat;
    const char *gold_item_cat, *pred_item_cat;
    she_cat_match_t gold_cat_match, pred_cat_match;
    she_attr_match_t gold_attr_match, pred_attr_match;
} she_eval_row_t;

/* Fills a row from a sample (gold, keys, step ground truth when has_steps) and, when parsed is
 * non-NULL, the policy's parsed answer (pred grade and steps; a step not ok is a failure).
 * The row borrows strings from both: keep them alive while the row is used. */
void she_eval_row_from(she_eval_row_t *row, const she_sample_t *s, const she_cot_parsed_t *parsed);

typedef struct she_eval_class {
    long n;                                         /* rows */
    long confusion[SHE_N_GRADES][SHE_N_GRADES + 1]; /* [gold L1..L4][pred L1..L4, failure] */
    double precision[SHE_N_GRADES], recall[SHE_N_GRADES], f1[SHE_N_GRADES];
    long support[SHE_N_GRADES]; /* gold rows per class */
    double accuracy, macro_f1;
    double good_precision, good_recall, good_f1;
    long n_fail;
    double fail_rate; /* share of rows with a format failure */
} she_eval_class_t;

typedef struct she_eval_group {
    char *key;
    she_eval_class_t cls;
} she_eval_group_t;

typedef struct she_eval_ranking {
    int k;               /* SHE_EVAL_TOP_K */
    long n_queries;      /* queries with at least one row */
    long n_ndcg_queries; /* those with a non-zero ideal DCG */
    double item_goodrate, query_goodrate, ndcg;
} she_eval_ranking_t;

typedef struct she_eval_metrics {
    she_eval_class_t all;
    int with_steps;                   /* step fields below are meaningful */
    long step_n[SHE_COT_N_STEPS];     /* rows with gold for step [j-1] */
    long step_correct[SHE_COT_N_STEPS];
    double step_acc[SHE_COT_N_STEPS]; /* 0 when step_n is 0 */
    she_eval_group_t *by_type;        /* sorted by key; NULL/0 when no row has a type */
    int n_by_type;
    she_eval_group_t *by_domain;
    int n_by_domain;
    int has_ranking; /* some row had a query key */
    she_eval_ranking_t ranking;
} she_eval_metrics_t;

/* Computes every metric over rows[0..n).  with_steps = 0 for systems that write no chain
 * (baselines): per-step accuracy is then not reported.  Returns SHE_ERR_INVALID (and *out =
 * NULL) when n <= 0, or a row has a gold grade outside L1..L4 or a pred outside 0..L4 (errstr
 * names the row).  Free the result with she_eval_free. */
she_err_t she_eval_compute(const she_eval_row_t *rows, int n, int with_steps,
                           she_eval_metrics_t **out, char *errstr, size_t errstr_size);
void she_eval_free(she_eval_metrics_t *m); /* NULL is fine */

/* Classification metrics only (what the per-group breakdowns use), into *out.  Rows must be
 * valid (checked by she_eval_compute; asserted here). */
void she_eval_class_compute(const she_eval_row_t *rows, int n, she_eval_class_t *out);
/* Fills every other field of c from c->confusion (for callers that count a confusion matrix
 * themselves, e.g. the lexical baseline's threshold search). */
void she_eval_class_finish(she_eval_class_t *c);

/* Two systems on the same rows: shares of rows where only A is right, only B, both, neither.
 * Returns SHE_ERR_INVALID when the gold grades of a[i] and b[i] differ (not the same rows).
 * name_a / name_b are left as the caller set them before the call. */
typedef struct she_eval_compare {
    const char *name_a, *name_b; /* borrowed labels for the report; NULL = "A" / "B" */
    long n, a_only, b_only, both, neither;
    double a_only_share, b_only_share, both_share, neither_share;
} she_eval_compare_t;
she_err_t she_eval_compare(const she_eval_row_t *a, const she_eval_row_t *b, int n,
                           she_eval_compare_t *out, char *errstr, size_t errstr_size);

/* A report: systems side by side (e.g. the policy, majority, lexical), an optional compare. */
typedef struct she_eval_report_entry {
    const char *name;
    const she_eval_metrics_t *m;
} she_eval_report_entry_t;

typedef struct she_eval_report {
    const char *title;
    const she_eval_report_entry_t *entries;
    int n_entries;
    const she_eval_compare_t *compare; /* NULL = none */
} she_eval_report_t;

/* Writers.  Return SHE_ERR_IO when writing fails, SHE_ERR_NOMEM when jansson cannot build the
 * document. */
she_err_t she_eval_write_json(FILE *f, const she_eval_report_t *r, char *errstr,
                              size_t errstr_size);
she_err_t she_eval_write_markdown(FILE *f, const she_eval_report_t *r, char *errstr,
                                  size_t errstr_size);

#endif
