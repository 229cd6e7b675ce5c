/* sample.c -- ownership helpers and enum names of the canonical sample. */
#include "sample.h"

#include <stdlib.h>
#include <string.h>

static void free_kvs(she_kv_t *kvs, int n) {
    for (int i = 0; i < n; i++) {
        free(kvs[i].key);
        free(kvs[i].value);
    }
    free(kvs);
}

void she_sample_clear(she_sample_t *s) {
    free(s->sample_id);
    free(s->query);
    free(s->item_id);
    free(s->item_title);
    free(s->item_desc);
    free_kvs(s->item_attrs, s->n_item_attrs);
    free(s->query_type);
    free(s->domain);
    free(s->query_category);
    free_kvs(s->query_attrs, s->n_query_attrs);
    free(s->item_category);
    free_kvs(s->item_gt_attrs, s->n_item_gt_attrs);
    memset(s, 0, sizeof(*s));
}

static char *dup_or_null(const char *s) {
    if (!s)
        return NULL;
    char *d = strdup(s);
    SHE_CHECK_ALLOC(d);
    return d;
}

void she_kv_append(she_kv_t **kvs, int *n, const char *key, const char *value) {
    she_kv_t *grown = realloc(*kvs, (size_t)(*n + 1) * sizeof(**kvs));
    SHE_CHECK_ALLOC(grown);
    grown[*n].key = dup_or_null(key);
    grown[*n].value = dup_or_null(value);
    *kvs = grown;
    (*n)++;
}

static void copy_kvs(she_kv_t **dst, int *dn, const she_kv_t *src, int sn) {
    for (int i = 0; i < sn; i++)
        she_kv_append(dst, dn, src[i].key, src[i].value);
}

void she_sample_copy(she_sample_t *dst, const she_sample_t *src) {
    memset(dst, 0, sizeof(*dst));
    dst->sample_id = dup_or_null(src->sample_id);
    dst->query = dup_or_null(src->query);
    dst->item_id = dup_or_null(src->item_id);
    dst->item_title = dup_or_null(src->item_title);
    dst->item_desc = dup_or_null(src->item_desc);
    copy_kvs(&dst->item_attrs, &dst->n_item_attrs, src->item_attrs, src->n_item_attrs);
    dst->query_type = dup_or_null(src->query_type);
    dst->domain = dup_or_null(src->domain);
    dst->grade = src->grade;
    dst->has_steps = src->has_steps;
    dst->query_category = dup_or_null(src->query_category);
    copy_kvs(&dst->query_attrs, &dst->n_query_attrs, src->query_attrs, src->n_query_attrs);
    dst->item_category = dup_or_null(src->item_category);
    copy_kvs(&dst->item_gt_attrs, &dst->n_item_gt_attrs, src->item_gt_attrs, src->n_item_gt_attrs);
    dst->cat_match = src->cat_match;
    dst->attr_match = src->attr_match;
}

static const char *const grade_names[] = {"unknown", "L1", "L2", "L3", "L4"};
static const char *const grade_labels[] = {"unknown", "Irrelevant", "Mismatch", "Related",
                                           "Excellent"};
static const char *const cat_names[] = {"unknown", "exact", "partial", "none"};
static const char *const attr_names[] = {"unknown", "match", "partial", "conflict", "none"};

/* Index of s in names[1..n-1] (0 = "unknown" is never accepted as input). */
static int lookup(const char *const *names, int n, const char *s) {
    for (int i = 1; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *she_grade_name(she_grade_t g) {
    return (unsigned)g <= SHE_GRADE_L4 ? grade_names[g] : "unknown";
}
const char *she_grade_label(she_grade_t g) {
    return (unsigned)g <= SHE_GRADE_L4 ? grade_labels[g] : "unknown";
}
she_err_t she_grade_parse(const char *s, she_grade_t *g) {
    int i = lookup(grade_names, 5, s);
    if (i < 0)
        return SHE_ERR_INVALID;
    *g = (she_grade_t)i;
    return SHE_OK;
}
const char *she_cat_match_name(she_cat_match_t m) {
    return (unsigned)m <= SHE_CAT_MATCH_NONE ? cat_names[m] : "unknown";
}
she_err_t she_cat_match_parse(const char *s, she_cat_match_t *m) {
    int i = lookup(cat_names, 4, s);
    if (i < 0)
        return SHE_ERR_INVALID;
    *m = (she_cat_match_t)i;
    return SHE_OK;
}
const char *she_attr_match_name(she_attr_match_t m) {
    return (unsigned)m <= SHE_ATTR_MATCH_NONE ? attr_names[m] : "unknown";
}
she_err_t she_attr_match_parse(const char *s, she_attr_match_t *m) {
    int i = lookup(attr_names, 5, s);
    if (i < 0)
        return SHE_ERR_INVALID;
    *m = (she_attr_match_t)i;
    return SHE_OK;
}
