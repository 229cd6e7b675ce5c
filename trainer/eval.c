/* trainer/eval.c -- classification, per-step, breakdown, compare and ranking metrics; report
 * writers.
 * Definitions are in eval.h. */
#include "trainer/eval.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const grade_cols[SHE_N_GRADES + 1] = {"L1", "L2", "L3", "L4", "fail"};

/* ---- rows ---- */

void she_eval_row_from(she_eval_row_t *row, const she_sample_t *s, const she_cot_parsed_t *parsed) {
    memset(row, 0, sizeof(*row));
    row->gold = s->grade;
    row->query = s->query;
    row->query_type = s->query_type;
    row->domain = s->domain;
    if (s->has_steps) {
        row->gold_query_cat = s->query_category;
        row->gold_item_cat = s->item_category;
        row->gold_cat_match = s->cat_match;
        row->gold_attr_match = s->attr_match;
    }
    if (!parsed)
        return;
    const she_cot_t *c = &parsed->cot;
    row->pred = parsed->ok[SHE_COT_STEP_GRADE - 1] ? c->grade : SHE_GRADE_UNKNOWN;
    row->pred_query_cat = parsed->ok[SHE_COT_STEP_QUERY - 1] ? c->query.category : NULL;
    row->pred_item_cat = parsed->ok[SHE_COT_STEP_ITEM - 1] ? c->item.category : NULL;
    row->pred_cat_match = parsed->ok[SHE_COT_STEP_CATEGORY - 1] ? c->cat_match
                                                                 : SHE_CAT_MATCH_UNKNOWN;
    row->pred_attr_match = parsed->ok[SHE_COT_STEP_ATTRIBUTES - 1] ? c->attr_match
                                                                    : SHE_ATTR_MATCH_UNKNOWN;
}

/* ---- classification ---- */

static double ratio(double a, double b) {
    return b > 0 ? a / b : 0.0;
}

static double f1_of(double p, double r) {
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

void she_eval_class_compute(const she_eval_row_t *rows, int n, she_eval_class_t *out) {
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
        int g = (int)rows[i].gold - 1;
        int p = rows[i].pred == SHE_GRADE_UNKNOWN ? SHE_N_GRADES : (int)rows[i].pred - 1;
        SHE_ASSERT(g >= 0 && g < SHE_N_GRADES && p >= 0 && p <= SHE_N_GRADES);
        out->confusion[g][p]++;
    }
    she_eval_class_finish(out);
}

void she_eval_class_finish(she_eval_class_t *out) {
    out->n = 0;
    out->n_fail = 0;
    out->macro_f1 = 0;
    memset(out->support, 0, sizeof(out->support));
    long correct = 0, predicted[SHE_N_GRADES] = {0};
    for (int g = 0; g < SHE_N_GRADES; g++) {
        for (int p = 0; p <= SHE_N_GRADES; p++) {
            out->support[g] += out->confusion[g][p];
            if (p < SHE_N_GRADES)
                predicted[p] += out->confusion[g][p];
        }
        out->n_fail += out->confusion[g][SHE_N_GRADES];
        out->n += out->support[g];
        correct += out->confusion[g][g];
    }
    for (int c = 0; c < SHE_N_GRADES; c++) {
        out->precision[c] = ratio((double)out->confusion[c][c], (double)predicted[c]);
        out->recall[c] = ratio((double)out->confusion[c][c], (double)out->support[c]);
        out->f1[c] = f1_of(out->precision[c], out->recall[c]);
        out->macro_f1 += out->f1[c] / SHE_N_GRADES;
    }
    out->accuracy = ratio((double)correct, (double)out->n);
    out->fail_rate = ratio((double)out->n_fail, (double)out->n);
    /* Good = L3+L4 (indices 2, 3). */
    long tp = 0, pred_pos = 0;
    for (int g = 0; g < SHE_N_GRADES; g++)
        for (int p = 2; p < SHE_N_GRADES; p++) {
            pred_pos += out->confusion[g][p];
            if (g >= 2)
                tp += out->confusion[g][p];
        }
    out->good_precision = ratio((double)tp, (double)pred_pos);
    out->good_recall = ratio((double)tp, (double)(out->support[2] + out->support[3]));
    out->good_f1 = f1_of(out->good_precision, out->good_recall);
}

/* ---- per-step accuracy ---- */

/* A step-1/2 category is right when it equals the gold one after normalisation; a step that
 * did not parse (NULL) is wrong. */
static int cat_right(const char *gold, const char *pred) {
    if (!pred)
        return 0;
    char ng[SHE_COT_MAX_TEXT * 2], np[SHE_COT_MAX_TEXT * 2];
    she_cot_norm_category(gold, ng, sizeof(ng));
    she_cot_norm_category(pred, np, sizeof(np));
    return strcmp(ng, np) == 0;
}

static void compute_steps(she_eval_metrics_t *m, const she_eval_row_t *rows, int n) {
    for (int i = 0; i < n; i++) {
        const she_eval_row_t *r = &rows[i];
        int has[SHE_COT_N_STEPS] = {r->gold_query_cat != NULL, r->gold_item_cat != NULL,
                                    r->gold_cat_match != SHE_CAT_MATCH_UNKNOWN,
                                    r->gold_attr_match != SHE_ATTR_MATCH_UNKNOWN, 1};
        for (int j = 0; j < SHE_COT_N_STEPS; j++) {
            if (!has[j])
                continue;
            int right;
            if (j == 0)
                right = cat_right(r->gold_query_cat, r->pred_query_cat);
            else if (j == 1)
                right = cat_right(r->gold_item_cat, r->pred_item_cat);
            else if (j == 2)
                right = r->pred_cat_match == r->gold_cat_match;
            else if (j == 3)
                right = r->pred_attr_match == r->gold_attr_match;
            else
                right = r->pred == r->gold;
            m->step_n[j]++;
            m->step_correct[j] += right;
        }
    }
    for (int j = 0; j < SHE_COT_N_STEPS; j++)
        m->step_acc[j] = ratio((double)m->step_correct[j], (double)m->step_n[j]);
}

/* ---- grouping ---- */

typedef struct keyed {
    const char *key;
    int idx;
} keyed_t;

static int cmp_keyed(const void *a, const void *b) {
    const keyed_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Rows with a non-NULL key (at byte offset `field` of the row), sorted by key then row order.
 * Returns how many; *out is malloc'd (NULL when none). */
static int sort_by_key(const she_eval_row_t *rows, int n, size_t field, keyed_t **out) {
    keyed_t *k = malloc((size_t)n * sizeof(*k));
    SHE_CHECK_ALLOC(k);
    int m = 0;
    for (int i = 0; i < n; i++) {
        const char *key = *(const char *const *)((const char *)&rows[i] + field);
        if (key)
            k[m++] = (keyed_t){key, i};
    }
    if (m == 0) {
        free(k);
        *out = NULL;
        return 0;
    }
    qsort(k, (size_t)m, sizeof(*k), cmp_keyed);
    *out = k;
    return m;
}

static void breakdown(const she_eval_row_t *rows, int n, size_t field, she_eval_row_t *scratch,
                      she_eval_group_t **groups, int *n_groups) {
    keyed_t *k;
    int m = sort_by_key(rows, n, field, &k);
    *groups = NULL;
    *n_groups = 0;
    for (int a = 0; a < m;) {
        int b = a;
        while (b < m && strcmp(k[b].key, k[a].key) == 0) {
            scratch[b - a] = rows[k[b].idx];
            b++;
        }
        she_eval_group_t *grown = realloc(*groups, (size_t)(*n_groups + 1) * sizeof(**groups));
        SHE_CHECK_ALLOC(grown);
        *groups = grown;
        she_eval_group_t *gr = &grown[(*n_groups)++];
        gr->key = strdup(k[a].key);
        SHE_CHECK_ALLOC(gr->key);
        she_eval_class_compute(scratch, b - a, &gr->cls);
        a = b;
    }
    free(k);
}

/* ---- ranking ---- */

typedef struct ranked {
    int pred;        /* 0 for a failure: below L1 */
    double expected; /* sum g*P(g), or the predicted grade without probabilities */
    int gold;
    int idx;
} ranked_t;

static int cmp_ranked(const void *a, const void *b) {
    const ranked_t *x = a, *y = b;
    if (x->pred != y->pred)
        return y->pred - x->pred;
    if (x->expected != y->expected)
        return x->expected < y->expected ? 1 : -1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_int_desc(const void *a, const void *b) {
    return *(const int *)b - *(const int *)a;
}

static double dcg(const int *gold, int m) {
    double s = 0;
    for (int i = 0; i < m; i++)
        s += (gold[i] - 1) / log2(i + 2.0);
    return s;
}

static void compute_ranking(const she_eval_row_t *rows, int n, she_eval_metrics_t *m) {
    keyed_t *k;
    int nk = sort_by_key(rows, n, offsetof(she_eval_row_t, query), &k);
    she_eval_ranking_t *rk = &m->ranking;
    rk->k = SHE_EVAL_TOP_K;
    m->has_ranking = nk > 0;
    if (!nk)
        return;
    ranked_t *items = malloc((size_t)nk * sizeof(*items));
    int *gold = malloc((size_t)nk * sizeof(*gold));
    SHE_CHECK_ALLOC(items);
    SHE_CHECK_ALLOC(gold);
    double sum_item = 0, sum_ndcg = 0;
    long good_queries = 0;
    for (int a = 0; a < nk;) {
        int b = a;
        for (; b < nk && strcmp(k[b].key, k[a].key) == 0; b++) {
            const she_eval_row_t *r = &rows[k[b].idx];
            ranked_t *it = &items[b - a];
            it->pred = (int)r->pred;
            it->gold = (int)r->gold;
            it->idx = k[b].idx;
            it->expected = it->pred;
            if (r->probs) {
                it->expected = 0;
                for (int g = 0; g < SHE_N_GRADES; g++)
                    it->expected += (g + 1) * (double)r->probs[g];
            }
        }
        int cnt = b - a, top = cnt < rk->k ? cnt : rk->k;
        qsort(items, (size_t)cnt, sizeof(*items), cmp_ranked);
        int good = 0;
        for (int i = 0; i < top; i++) {
            gold[i] = items[i].gold;
            good += items[i].gold >= SHE_GRADE_L3;
        }
        double share = (double)good / top;
        sum_item += share;
        good_queries += share > 0.5;
        double got = dcg(gold, top);
        for (int i = 0; i < cnt; i++)
            gold[i] = items[i].gold;
        qsort(gold, (size_t)cnt, sizeof(*gold), cmp_int_desc);
        double ideal = dcg(gold, top);
        if (ideal > 0) {
            sum_ndcg += got / ideal;
            rk->n_ndcg_queries++;
        }
        rk->n_queries++;
        a = b;
    }
    rk->item_goodrate = sum_item / (double)rk->n_queries;
    rk->query_goodrate = (double)good_queries / (double)rk->n_queries;
    rk->ndcg = ratio(sum_ndcg, (double)rk->n_ndcg_queries);
    free(items);
    free(gold);
    free(k);
}

/* ---- entry points ---- */

she_err_t she_eval_compute(const she_eval_row_t *rows, int n, int with_steps,
                           she_eval_metrics_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (n <= 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "no rows to evaluate");
    for (int i = 0; i < n; i++) {
        if (rows[i].gold < SHE_GRADE_L1 || rows[i].gold > SHE_GRADE_L4)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "row %d: gold grade %d is not L1..L4", i, (int)rows[i].gold);
        if (rows[i].pred < SHE_GRADE_UNKNOWN || rows[i].pred > SHE_GRADE_L4)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "row %d: predicted grade %d is not L1..L4 or a failure", i,
                            (int)rows[i].pred);
    }
    she_eval_metrics_t *m = calloc(1, sizeof(*m));
    SHE_CHECK_ALLOC(m);
    she_eval_class_compute(rows, n, &m->all);
    m->with_steps = with_steps;
    if (with_steps)
        compute_steps(m, rows, n);
    she_eval_row_t *scratch = malloc((size_t)n * sizeof(*scratch));
    SHE_CHECK_ALLOC(scratch);
    breakdown(rows, n, offsetof(she_eval_row_t, query_type), scratch, &m->by_type, &m->n_by_type);
    breakdown(rows, n, offsetof(she_eval_row_t, domain), scratch, &m->by_domain, &m->n_by_domain);
    free(scratch);
    compute_ranking(rows, n, m);
    *out = m;
    return SHE_OK;
}

static void free_groups(she_eval_group_t *g, int n) {
    for (int i = 0; i < n; i++)
        free(g[i].key);
    free(g);
}

void she_eval_free(she_eval_metrics_t *m) {
    if (!m)
        return;
    free_groups(m->by_type, m->n_by_type);
    free_groups(m->by_domain, m->n_by_domain);
    free(m);
}

she_err_t she_eval_compare(const she_eval_row_t *a, const she_eval_row_t *b, int n,
                           she_eval_compare_t *out, char *errstr, size_t errstr_size) {
    const char *na = out->name_a, *nb = out->name_b;
    memset(out, 0, sizeof(*out));
    out->name_a = na;
    out->name_b = nb;
    for (int i = 0; i < n; i++) {
        if (a[i].gold != b[i].gold)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "row %d: gold %s vs %s: the two sets are not on the same rows", i,
                            she_grade_name(a[i].gold), she_grade_name(b[i].gold));
        int ra = a[i].pred == a[i].gold, rb = b[i].pred == b[i].gold;
        out->a_only += ra && !rb;
        out->b_only += rb && !ra;
        out->both += ra && rb;
        out->neither += !ra && !rb;
    }
    out->n = n;
    out->a_only_share = ratio((double)out->a_only, n);
    out->b_only_share = ratio((double)out->b_only, n);
    out->both_share = ratio((double)out->both, n);
    out->neither_share = ratio((double)out->neither, n);
    return SHE_OK;
}

/* ---- JSON ---- */

/* jansson's json_object_set_new and json_array_append_new take ownership even on failure, so
 * building can go on and one NULL check at the end catches an allocation failure anywhere:
 * a failed child makes its parent's set fail, which is remembered here. */
typedef struct jb {
    int failed;
} jb_t;

static void jset(jb_t *jb, json_t *obj, const char *key, json_t *v) {
    if (!obj || !v || json_object_set_new(obj, key, v) != 0)
        jb->failed = 1;
}

static void jpush(jb_t *jb, json_t *arr, json_t *v) {
    if (!arr || !v || json_array_append_new(arr, v) != 0)
        jb->failed = 1;
}

static json_t *class_json(jb_t *jb, const she_eval_class_t *c) {
    json_t *o = json_object();
    jset(jb, o, "n", json_integer(c->n));
    jset(jb, o, "accuracy", json_real(c->accuracy));
    jset(jb, o, "macro_f1", json_real(c->macro_f1));
    jset(jb, o, "good_f1", json_real(c->good_f1));
    jset(jb, o, "good_precision", json_real(c->good_precision));
    jset(jb, o, "good_recall", json_real(c->good_recall));
    jset(jb, o, "format_failures", json_integer(c->n_fail));
    jset(jb, o, "format_failure_rate", json_real(c->fail_rate));
    json_t *per = json_object();
    for (int g = 0; g < SHE_N_GRADES; g++) {
        json_t *pc = json_object();
        jset(jb, pc, "precision", json_real(c->precision[g]));
        jset(jb, pc, "recall", json_real(c->recall[g]));
        jset(jb, pc, "f1", json_real(c->f1[g]));
        jset(jb, pc, "support", json_integer(c->support[g]));
        jset(jb, per, grade_cols[g], pc);
    }
    jset(jb, o, "per_class", per);
    json_t *cm = json_object(), *rows = json_array(), *cols = json_array();
    for (int p = 0; p <= SHE_N_GRADES; p++)
        jpush(jb, cols, json_string(grade_cols[p]));
    for (int g = 0; g < SHE_N_GRADES; g++) {
        json_t *row = json_array();
        for (int p = 0; p <= SHE_N_GRADES; p++)
            jpush(jb, row, json_integer(c->confusion[g][p]));
        jpush(jb, rows, row);
    }
    jset(jb, cm, "gold_rows", json_pack("[ssss]", "L1", "L2", "L3", "L4"));
    jset(jb, cm, "pred_columns", cols);
    jset(jb, cm, "counts", rows);
    jset(jb, o, "confusion", cm);
    return o;
}

static json_t *groups_json(jb_t *jb, const she_eval_group_t *g, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = class_json(jb, &g[i].cls);
        jset(jb, o, "key", json_string(g[i].key));
        jpush(jb, arr, o);
    }
    return arr;
}

static json_t *metrics_json(jb_t *jb, const she_eval_metrics_t *m) {
    json_t *o = class_json(jb, &m->all);
    if (m->with_steps) {
        json_t *steps = json_array();
        for (int j = 0; j < SHE_COT_N_STEPS; j++)
            jpush(jb, steps, json_pack("{s:i, s:s, s:I, s:I, s:f}", "step", j + 1, "name",
                                       she_cot_step_name(j + 1), "n", (json_int_t)m->step_n[j],
                                       "correct", (json_int_t)m->step_correct[j], "accuracy",
                                       m->step_acc[j]));
        jset(jb, o, "steps", steps);
    }
    if (m->n_by_type)
        jset(jb, o, "by_query_type", groups_json(jb, m->by_type, m->n_by_type));
    if (m->n_by_domain)
        jset(jb, o, "by_domain", groups_json(jb, m->by_domain, m->n_by_domain));
    if (m->has_ranking) {
        const she_eval_ranking_t *r = &m->ranking;
        jset(jb, o, "ranking",
             json_pack("{s:i, s:I, s:I, s:f, s:f, s:f}", "k", r->k, "queries",
                       (json_int_t)r->n_queries, "ndcg_queries", (json_int_t)r->n_ndcg_queries,
                       "item_goodrate", r->item_goodrate, "query_goodrate", r->query_goodrate,
                       "ndcg", r->ndcg));
    }
    return o;
}

she_err_t she_eval_write_json(FILE *f, const she_eval_report_t *r, char *errstr,
                              size_t errstr_size) {
    jb_t jb = {0};
    json_t *doc = json_object(), *systems = json_array();
    jset(&jb, doc, "title", json_string(r->title ? r->title : ""));
    for (int i = 0; i < r->n_entries; i++) {
        json_t *e = json_object();
        jset(&jb, e, "name", json_string(r->entries[i].name));
        jset(&jb, e, "metrics", metrics_json(&jb, r->entries[i].m));
        jpush(&jb, systems, e);
    }
    jset(&jb, doc, "systems", systems);
    if (r->compare) {
        const she_eval_compare_t *c = r->compare;
        jset(&jb, doc, "compare",
             json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "a",
                       c->name_a ? c->name_a : "A", "b", c->name_b ? c->name_b : "B", "n",
                       (json_int_t)c->n, "a_only", (json_int_t)c->a_only, "b_only",
                       (json_int_t)c->b_only, "both", (json_int_t)c->both, "neither",
                       (json_int_t)c->neither, "a_only_share", c->a_only_share, "b_only_share",
                       c->b_only_share, "both_share", c->both_share, "neither_share",
                       c->neither_share));
    }
    she_err_t err = SHE_OK;
    if (jb.failed || !doc)
        err = she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "building the JSON report failed");
    else if (json_dumpf(doc, f, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0 ||
             fputc('\n', f) == EOF || fflush(f) != 0 || ferror(f))
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "writing the JSON report failed");
    json_decref(doc);
    return err;
}

/* ---- Markdown ---- */

static void pct(FILE *f, double x) {
    fprintf(f, " %.2f |", 100.0 * x);
}

static void class_header(FILE *f, const char *first) {
    fprintf(f, "| %s | rows | accuracy | macro F1 | Good F1 | F1 L1 | F1 L2 | F1 L3 | F1 L4 | "
               "format failures |\n",
            first);
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

static void class_row(FILE *f, const char *name, const char *name2, const she_eval_class_t *c) {
    fprintf(f, "| %s%s%s | %ld |", name, name2 ? " / " : "", name2 ? name2 : "", c->n);
    pct(f, c->accuracy);
    pct(f, c->macro_f1);
    pct(f, c->good_f1);
    for (int g = 0; g < SHE_N_GRADES; g++)
        pct(f, c->f1[g]);
    fprintf(f, " %.2f (%ld) |\n", 100.0 * c->fail_rate, c->n_fail);
}

static void md_breakdown(FILE *f, const she_eval_report_t *r, const char *title, int by_domain) {
    int any = 0;
    for (int i = 0; i < r->n_entries; i++)
        any |= by_domain ? r->entries[i].m->n_by_domain > 0 : r->entries[i].m->n_by_type > 0;
    if (!any)
        return;
    fprintf(f, "\n## By %s\n\n", title);
    class_header(f, by_domain ? "domain / system" : "query type / system");
    for (int i = 0; i < r->n_entries; i++) {
        const she_eval_metrics_t *m = r->entries[i].m;
        const she_eval_group_t *g = by_domain ? m->by_domain : m->by_type;
        int ng = by_domain ? m->n_by_domain : m->n_by_type;
        for (int j = 0; j < ng; j++)
            class_row(f, g[j].key, r->entries[i].name, &g[j].cls);
    }
}

she_err_t she_eval_write_markdown(FILE *f, const she_eval_report_t *r, char *errstr,
                                  size_t errstr_size) {
    fprintf(f, "# %s\n\n", r->title ? r->title : "Evaluation");
    fprintf(f, "Percentages.  Format failures (unparsable answers) count as wrong.\n\n");
    class_header(f, "system");
    for (int i = 0; i < r->n_entries; i++)
        class_row(f, r->entries[i].name, NULL, &r->entries[i].m->all);

    int any_steps = 0, any_rank = 0;
    for (int i = 0; i < r->n_entries; i++) {
        any_steps |= r->entries[i].m->with_steps;
        any_rank |= r->entries[i].m->has_ranking;
    }
    if (any_steps) {
        fprintf(f, "\n## Per-step accuracy\n\n| system |");
        for (int j = 1; j <= SHE_COT_N_STEPS; j++)
            fprintf(f, " %d %s |", j, she_cot_step_name(j));
        fprintf(f, "\n|---|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < r->n_entries; i++) {
            const she_eval_metrics_t *m = r->entries[i].m;
            if (!m->with_steps)
                continue;
            fprintf(f, "| %s |", r->entries[i].name);
            for (int j = 0; j < SHE_COT_N_STEPS; j++) {
                if (m->step_n[j])
                    fprintf(f, " %.2f (n=%ld) |", 100.0 * m->step_acc[j], m->step_n[j]);
                else
                    fprintf(f, " n/a |");
            }
            fprintf(f, "\n");
        }
    }
    if (any_rank) {
        fprintf(f, "\n## Ranking view (top %d by predicted grade)\n\n", SHE_EVAL_TOP_K);
        fprintf(f, "| system | queries | item goodrate@%d | query goodrate | NDCG@%d (queries) |\n",
                SHE_EVAL_TOP_K, SHE_EVAL_TOP_K);
        fprintf(f, "|---|---:|---:|---:|---:|\n");
        for (int i = 0; i < r->n_entries; i++) {
            const she_eval_metrics_t *m = r->entries[i].m;
            if (!m->has_ranking)
                continue;
            const she_eval_ranking_t *rk = &m->ranking;
            fprintf(f, "| %s | %ld |", r->entries[i].name, rk->n_queries);
            pct(f, rk->item_goodrate);
            pct(f, rk->query_goodrate);
            fprintf(f, " %.2f (%ld) |\n", 100.0 * rk->ndcg, rk->n_ndcg_queries);
        }
    }
    md_breakdown(f, r, "query type", 0);
    md_breakdown(f, r, "domain", 1);
    if (r->compare) {
        const she_eval_compare_t *c = r->compare;
        const char *a = c->name_a ? c->name_a : "A", *b = c->name_b ? c->name_b : "B";
        fprintf(f, "\n## %s vs %s on the same %ld rows\n\n| outcome | share |\n|---|---:|\n", a,
                b, c->n);
        fprintf(f, "| only %s right |", a);
        pct(f, c->a_only_share);
        fprintf(f, "\n| only %s right |", b);
        pct(f, c->b_only_share);
        fprintf(f, "\n| both right |");
        pct(f, c->both_share);
        fprintf(f, "\n| both wrong |");
        pct(f, c->neither_share);
        fprintf(f, "\n");
    }
    fprintf(f, "\n## Confusion matrices (rows: gold, columns: predicted)\n");
    for (int i = 0; i < r->n_entries; i++) {
        const she_eval_class_t *c = &r->entries[i].m->all;
        fprintf(f, "\n%s\n\n| gold \\ pred | L1 | L2 | L3 | L4 | fail |\n"
                   "|---|---:|---:|---:|---:|---:|\n",
                r->entries[i].name);
        for (int g = 0; g < SHE_N_GRADES; g++) {
            fprintf(f, "| %s |", grade_cols[g]);
            for (int p = 0; p <= SHE_N_GRADES; p++)
                fprintf(f, " %ld |", c->confusion[g][p]);
            fprintf(f, "\n");
        }
    }
    if (fflush(f) != 0 || ferror(f))
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "writing the Markdown report failed");
    return SHE_OK;
}
