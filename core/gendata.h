/* gendata.h -- the seeded synthetic catalogue and query log behind `she gen-data`: she's own
 * labelled data, with full chain-of-thought ground truth, for the demo and the tests.
 *
 * The world: a taxonomy of 7 domains, 17 parent categories and 51 leaf categories (each
 * parent has 3 leaves, so a "partial" category match -- same parent, other leaf -- always
 * exists), with per-category attribute schemas over six keys (brand, color, material, size,
 * style, feature), synonyms for every leaf, and a catalogue of items that grows as queries
 * need them (items are reused across queries, as in a real log).  Item titles come in five
 * templates (title-cased); the attributes a title leaves out are in the description, so every
 * ground-truth attribute of an item can be read from its text.  About a third of the items
 * also carry their attributes as catalogue fields (item_attrs).
 *
 * Query types (query_type), each with its own text templates:
 *   plain        "navy wool sweater size M", "Patagonia hiking pants"
 *   qa           "what to wear for mountaineering"  (a question whose answer is a category)
 *   alternative  "Arc'teryx alternative", "alternative to Bose headphones"  (brand = "not X")
 *   negation     "non-turtleneck sweater", "sneakers not white"  (value = "not X")
 *   knowledge    "grease-removing products for the kitchen"  (the category must be inferred)
 * A query text always has the same interpretation (query_category, query_attrs).
 *
 * Step ground truth, for every sample:
 *   query_category / item_category: leaf names ("sweater");
 *   query_attrs: what the query asks, key -> value or "not <value>";
 *   item_gt_attrs: every attribute of the item;
 *   cat_match: exact (same leaf) | partial (same parent, other leaf) | none;
 *   attr_match (she_gendata_attr_match): none when the query asks no attribute or cat_match is
 *     none (nothing to compare); otherwise conflict when the item states a value for an asked
 *     key that contradicts it (another value; or the negated value); else match when every
 *     asked key is met; else partial (the item does not state some asked key).
 * Grade (she_gendata_grade), a function of steps 3 and 4:
 *   L1  cat none (any attributes)
 *   L2  cat exact or partial, attributes conflict
 *   L3  cat exact with attributes partial, or cat partial with attributes match|partial|none
 *   L4  cat exact with attributes match or none
 *
 * Label noise (annotator disagreement): with probability `noise` a grade is replaced by a
 * different one (an adjacent grade 80% of the time).  The step truth stays clean, and noise
 * draws from its own random stream, so a noisy file equals the clean file of the same seed
 * except for the replaced grades.  Whether noise hit a sample is not stored: it is exactly
 * grade != she_gendata_grade(cat_match, attr_match).
 *
 * Deterministic: one seeded stream, no clock, no threads; the same options give the same
 * samples in the same order (and so byte-identical JSON Lines).
 *
 * What it does not do: model real catalogues' statistics, misspellings or multi-lingual
 * queries, or items with more than one value per attribute. */
#ifndef SHE_GENDATA_H
#define SHE_GENDATA_H

#include <stdint.h>

#include "error.h"
#include "reader.h"
#include "sample.h"

typedef enum she_qtype {
    SHE_QTYPE_PLAIN = 0,
    SHE_QTYPE_QA,
    SHE_QTYPE_ALTERNATIVE,
    SHE_QTYPE_NEGATION,
    SHE_QTYPE_KNOWLEDGE,
    SHE_QTYPE__COUNT
} she_qtype_t;

/* "plain", "qa", "alternative", "negation", "knowledge". */
const char *she_qtype_name(she_qtype_t t);

typedef struct she_gendata_opts {
    long long n_samples;                  /* rows to write */
    uint64_t seed;
    double noise;                         /* probability a grade is replaced, [0, 1] */
    int items_per_query;                  /* rows per query (the last query may have fewer) */
    double type_mix[SHE_QTYPE__COUNT];    /* relative weights of the query types */
    double grade_mix[4];                  /* relative target weights of L1..L4 */
} she_gendata_opts_t;

/* Defaults: 1000 samples, seed 1, no noise, 8 items per query, types plain 0.5, qa 0.12,
 * alternative 0.12, negation 0.13, knowledge 0.13, grades L1 0.10, L2 0.30, L3 0.36, L4 0.24.
 * The grade mix is a target per row; a query that asks no attribute cannot have an L2 row,
 * so its rows are drawn from the other three and the output has less L2 than the mix: the
 * defaults give about 11/23/40/27% (the Home Depot file has 7/25/42/26%). */
void she_gendata_opts_default(she_gendata_opts_t *o);
/* Parses "plain=0.5,qa=0.1,..." into o->type_mix (names not given get weight 0).  At least
 * one weight must be positive.  SHE_ERR_INVALID names the bad part. */
she_err_t she_gendata_parse_type_mix(she_gendata_opts_t *o, const char *spec, char *errstr,
                                     size_t errstr_size);
/* Parses "L1=0.1,L2=0.2,L3=0.4,L4=0.3" into o->grade_mix, like the type mix. */
she_err_t she_gendata_parse_grade_mix(she_gendata_opts_t *o, const char *spec, char *errstr,
                                      size_t errstr_size);

/* Generates o->n_samples samples and calls fn for each (see she_sample_fn in reader.h).
 * SHE_ERR_INVALID for bad options; otherwise fn's first error stops it and is returned. */
she_err_t she_gendata_run(const she_gendata_opts_t *o, she_sample_fn fn, void *opaque,
                          char *errstr, size_t errstr_size);

/* ---- the rules, for tests and for chain-of-thought teachers ---- */
she_grade_t she_gendata_grade(she_cat_match_t cat, she_attr_match_t attr);
/* Category match of two leaf names; NONE when either is not a leaf of the taxonomy. */
she_cat_match_t she_gendata_cat_match(const char *query_category, const char *item_category);
/* Attribute match as defined above (cat_match none is the caller's business: this compares
 * attributes only).  Values are compared exactly; a query value "not X" is met by any other
 * value. */
she_attr_match_t she_gendata_attr_match(const she_kv_t *query_attrs, int n_query_attrs,
                                        const she_kv_t *item_attrs, int n_item_attrs);

/* The taxonomy. */
int she_gendata_n_leaves(void);
int she_gendata_n_parents(void);
int she_gendata_n_domains(void);
const char *she_gendata_leaf_name(int leaf);
const char *she_gendata_leaf_parent(int leaf);
const char *she_gendata_leaf_domain(int leaf);

#endif
