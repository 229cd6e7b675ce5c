/* baselines.h -- the two reference systems every evaluation report carries next to the policy:
 *   - majority class: always the grade most frequent in the training labels;
 *   - lexical rule: the share of the query's distinct words found in the item title, with three
 *     thresholds mapping it to L1..L4, tuned on the training part to maximise macro F1.
 * Both are deterministic and need no model.  Words are she_cot_norm_category's: lowercase,
 * split at every non-alphanumeric byte, plural "s" dropped ("Shoes," == "shoe"); only the
 * first 1 KB of a query or title is read. */
#ifndef SHE_BASELINES_H
#define SHE_BASELINES_H

#include "error.h"
#include "sample.h"

/* The most frequent grade among samples with a grade (ties go to the lower grade).
 * Returns SHE_ERR_INVALID when no sample has a grade. */
she_err_t she_majority_fit(const she_sample_t *train, int n, she_grade_t *grade, char *errstr,
                           size_t errstr_size);

/* Share of the query's distinct words that appear in the title, as a whole percent 0..100
 * (rounded half up); 0 when the query has no word. */
int she_lexical_overlap_pct(const char *query, const char *title);

typedef struct she_lexical {
    /* overlap percent >= t[0] -> at least L2, >= t[1] -> at least L3, >= t[2] -> L4;
     * 0 <= t[0] <= t[1] <= t[2] <= 101, 101 meaning "never" */
    int t[3];
    double train_macro_f1; /* macro F1 of the chosen thresholds on the training samples */
} she_lexical_t;

/* Grid search over every threshold triple (0..101 each, ordered) for the best macro F1 on the
 * samples with a grade; ties keep the first triple in lexicographic order.  Returns
 * SHE_ERR_INVALID when no sample has a grade, or one has no query or title. */
she_err_t she_lexical_fit(const she_sample_t *train, int n, she_lexical_t *lx, char *errstr,
                          size_t errstr_size);

she_grade_t she_lexical_grade(const she_lexical_t *lx, int overlap_pct);
she_grade_t she_lexical_predict(const she_lexical_t *lx, const char *query, const char *title);

#endif
