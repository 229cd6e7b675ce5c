/* baselines.c -- majority class and the token-overlap rule with grid-searched thresholds. */
#include "baselines.h"

#include <string.h>

#include "cot.h"
#include "trainer/eval.h"

#define TEXT_MAX 1024
#define PCT_LEVELS 102 /* thresholds 0..101 */

she_err_t she_majority_fit(const she_sample_t *train, int n, she_grade_t *grade, char *errstr,
                           size_t errstr_size) {
    long count[SHE_N_GRADES] = {0}, total = 0;
    for (int i = 0; i < n; i++)
        if (train[i].grade >= SHE_GRADE_L1 && train[i].grade <= SHE_GRADE_L4) {
            count[train[i].grade - 1]++;
            total++;
        }
    if (total == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "majority baseline: no labelled sample among %d", n);
    int best = 0;
    for (int g = 1; g < SHE_N_GRADES; g++)
        if (count[g] > count[best])
            best = g;
    *grade = (she_grade_t)(best + 1);
    return SHE_OK;
}

/* Splits normalised text (words separated by one space) in place; returns the word count. */
static int words(char *s, char **w, int max) {
    int n = 0;
    for (char *p = s; *p && n < max;) {
        w[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    return n;
}

int she_lexical_overlap_pct(const char *query, const char *title) {
    char q[TEXT_MAX], t[TEXT_MAX];
    char *qw[TEXT_MAX / 2], *tw[TEXT_MAX / 2];
    she_cot_norm_category(query, q, sizeof(q));
    she_cot_norm_category(title, t, sizeof(t));
    int nq = words(q, qw, TEXT_MAX / 2), nt = words(t, tw, TEXT_MAX / 2);
    int distinct = 0, found = 0;
    for (int i = 0; i < nq; i++) {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++)
            dup = strcmp(qw[i], qw[j]) == 0;
        if (dup)
            continue;
        distinct++;
        for (int j = 0; j < nt; j++)
            if (strcmp(qw[i], tw[j]) == 0) {
                found++;
                break;
            }
    }
    return distinct ? (200 * found + distinct) / (2 * distinct) : 0;
}

she_grade_t she_lexical_grade(const she_lexical_t *lx, int overlap_pct) {
    return (she_grade_t)(1 + (overlap_pct >= lx->t[0]) + (overlap_pct >= lx->t[1]) +
                         (overlap_pct >= lx->t[2]));
}

she_grade_t she_lexical_predict(const she_lexical_t *lx, const char *query, const char *title) {
    return she_lexical_grade(lx, she_lexical_overlap_pct(query, title));
}

she_err_t she_lexical_fit(const she_sample_t *train, int n, she_lexical_t *lx, char *errstr,
                          size_t errstr_size) {
    /* below[t][g]: samples of gold grade g+1 whose overlap is < t, so each threshold triple's
     * confusion matrix is a few differences and the full grid costs nothing. */
    long hist[PCT_LEVELS][SHE_N_GRADES] = {{0}}, below[PCT_LEVELS][SHE_N_GRADES] = {{0}};
    long total = 0;
    for (int i = 0; i < n; i++) {
        const she_sample_t *s = &train[i];
        if (s->grade < SHE_GRADE_L1 || s->grade > SHE_GRADE_L4)
            continue;
        if (!s->query || !s->item_title)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "lexical baseline: sample %s has no query or title",
                            s->sample_id ? s->sample_id : "?");
        hist[she_lexical_overlap_pct(s->query, s->item_title)][s->grade - 1]++;
        total++;
    }
    if (total == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "lexical baseline: no labelled sample among %d", n);
    for (int t = 1; t < PCT_LEVELS; t++)
        for (int g = 0; g < SHE_N_GRADES; g++)
            below[t][g] = below[t - 1][g] + hist[t - 1][g];
    double best = -1;
    she_eval_class_t c;
    for (int t0 = 0; t0 < PCT_LEVELS; t0++)
        for (int t1 = t0; t1 < PCT_LEVELS; t1++)
            for (int t2 = t1; t2 < PCT_LEVELS; t2++) {
                const int cut[5] = {0, t0, t1, t2, PCT_LEVELS - 1};
                memset(&c, 0, sizeof(c));
                for (int g = 0; g < SHE_N_GRADES; g++)
                    for (int p = 0; p < SHE_N_GRADES; p++)
                        c.confusion[g][p] = below[cut[p + 1]][g] - below[cut[p]][g];
                she_eval_class_finish(&c);
                if (c.macro_f1 > best) {
                    best = c.macro_f1;
                    lx->t[0] = t0;
                    lx->t[1] = t1;
                    lx->t[2] = t2;
                }
            }
    lx->train_macro_f1 = best;
    return SHE_OK;
}
