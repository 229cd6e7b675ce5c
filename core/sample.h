/* sample.h -- the canonical search-log sample: the one record every part of she passes around
 * (readers, the synthetic generator, chain-of-thought teachers, rewards, the Avro schema
 * schemas/sample.avsc mirrors it field for field).
 *
 * Strings are owned by the sample (malloc'd, NUL-terminated UTF-8); optional ones are NULL
 * when absent.  Enumerations use 0 for "unknown" so a zeroed sample is an empty one. */
#ifndef SHE_SAMPLE_H
#define SHE_SAMPLE_H

#include "error.h"

/* Relevance grade; L1..L4 as in the paper. */
typedef enum she_grade {
    SHE_GRADE_UNKNOWN = 0,
    SHE_GRADE_L1 = 1, /* Irrelevant */
    SHE_GRADE_L2 = 2, /* Mismatch: right category, conflicting attributes */
    SHE_GRADE_L3 = 3, /* Related: right category, attributes partly met */
    SHE_GRADE_L4 = 4, /* Excellent: exact category, attributes met */
} she_grade_t;

/* Step 3 of the chain of thought. */
typedef enum she_cat_match {
    SHE_CAT_MATCH_UNKNOWN = 0,
    SHE_CAT_MATCH_EXACT,
    SHE_CAT_MATCH_PARTIAL, /* same parent category, different leaf */
    SHE_CAT_MATCH_NONE,
} she_cat_match_t;

/* Step 4 of the chain of thought. */
typedef enum she_attr_match {
    SHE_ATTR_MATCH_UNKNOWN = 0,
    SHE_ATTR_MATCH_MATCH,    /* every attribute the query asks for is met */
    SHE_ATTR_MATCH_PARTIAL,  /* some met, none contradicted */
    SHE_ATTR_MATCH_CONFLICT, /* at least one contradicted */
    SHE_ATTR_MATCH_NONE,     /* the query asks for no attribute (or nothing can be compared) */
} she_attr_match_t;

typedef struct she_kv {
    char *key;   /* attribute name, e.g. "color" */
    char *value; /* e.g. "red" */
} she_kv_t;

typedef struct she_sample {
    char *sample_id;  /* unique per (query, item) row */
    char *query;
    char *item_id;
    char *item_title;
    char *item_desc;  /* optional */
    she_kv_t *item_attrs; /* optional catalogue attributes (input, not ground truth) */
    int n_item_attrs;
    char *query_type; /* optional: plain | qa | alternative | negation | knowledge | ... */
    char *domain;     /* optional: e.g. "apparel" */
    she_grade_t grade; /* the human label; UNKNOWN for unlabelled logs */

    /* Optional step ground truth (has_steps = 1 when present). */
    int has_steps;
    char *query_category;      /* step 1 */
    she_kv_t *query_attrs;
    int n_query_attrs;
    char *item_category;       /* step 2 */
    she_kv_t *item_gt_attrs;
    int n_item_gt_attrs;
    she_cat_match_t cat_match;   /* step 3 */
    she_attr_match_t attr_match; /* step 4 */
} she_sample_t;

/* Frees every owned field and zeroes the struct (the struct itself is the caller's). */
void she_sample_clear(she_sample_t *s);
/* Deep copy into a zeroed dst. */
void she_sample_copy(she_sample_t *dst, const she_sample_t *src);
/* Appends an attribute (copies both strings) to a kv array. */
void she_kv_append(she_kv_t **kvs, int *n, const char *key, const char *value);

/* Names: "L1".."L4", "exact|partial|none", "match|partial|conflict|none".  Parsers return
 * SHE_ERR_INVALID for anything else (case-sensitive, as the chain-of-thought format is). */
const char *she_grade_name(she_grade_t g);          /* "L3"; "unknown" for 0 */
const char *she_grade_label(she_grade_t g);         /* "Related" */
she_err_t she_grade_parse(const char *s, she_grade_t *g);
const char *she_cat_match_name(she_cat_match_t m);
she_err_t she_cat_match_parse(const char *s, she_cat_match_t *m);
const char *she_attr_match_name(she_attr_match_t m);
she_err_t she_attr_match_parse(const char *s, she_attr_match_t *m);

#endif
