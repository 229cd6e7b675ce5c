/* teacher.h -- the chain of thought SFT teaches for a sample.
 *
 * Where the sample carries step ground truth (has_steps, e.g. from `she gen-data`), the chain
 * says exactly that.  Where it does not (Home Depot and other plain labelled logs), the chain is
 * built by label decomposition: steps 1-2 are read out of the query and the item title by the
 * lexicon reader (trainer/lexicon.h), steps 3-4 follow from the grade --
 *   L1 -> category none,            attributes none
 *   L2 -> category exact|partial,   attributes conflict
 *   L3 -> category exact|partial,   attributes partial
 *   L4 -> category exact,           attributes match (none when step 1 lists no attribute)
 * with exact-vs-partial for L2/L3 decided by comparing the two read categories.  Which parts of
 * this are assumptions is written down in trainer/COT_FORMAT.md, "Label decomposition".
 * A field of the step ground truth that is absent (NULL / UNKNOWN) falls back to the same rule.
 *
 * No I/O and no allocation; the lexicons are the caller's (loaded once, shared read-only). */
#ifndef SHE_TEACHER_H
#define SHE_TEACHER_H

#include "cot.h"
#include "lexicon.h"
#include "sample.h"

/* Fills *cot (zeroed first) with the teacher chain for s.  brands/materials may be NULL.
 * Returns SHE_ERR_INVALID when s has no grade (nothing to teach) or no query / item title;
 * the chain it returns always formats (she_cot_format succeeds on it). */
she_err_t she_teacher_chain(const she_sample_t *s, const she_lexicon_t *brands,
                            const she_lexicon_t *materials, she_cot_t *cot, char *errstr,
                            size_t errstr_size);

/* The step-3 rule used for L2/L3 decomposition: exact when the normalised categories are equal
 * or the item's ends with the query's, whole words (query "shoes", item "running shoe": the item
 * is a kind of what was asked for); partial otherwise. */
she_cat_match_t she_teacher_category_match(const char *query_category, const char *item_category);

#endif
