/* teacher.c -- teacher chains: step ground truth where present, label decomposition elsewhere. */
#include "teacher.h"

#include <string.h>

she_cat_match_t she_teacher_category_match(const char *query_category, const char *item_category) {
    char q[SHE_COT_MAX_TEXT], it[SHE_COT_MAX_TEXT];
    she_cot_norm_category(query_category, q, sizeof(q));
    she_cot_norm_category(item_category, it, sizeof(it));
    size_t nq = strlen(q), ni = strlen(it);
    if (nq == 0)
        return SHE_CAT_MATCH_PARTIAL;
    if (nq == ni && strcmp(q, it) == 0)
        return SHE_CAT_MATCH_EXACT;
    if (ni > nq && strcmp(it + ni - nq, q) == 0 && it[ni - nq - 1] == ' ')
        return SHE_CAT_MATCH_EXACT;
    return SHE_CAT_MATCH_PARTIAL;
}

/* Attribute names from outside (generator, catalogue) in the format's key alphabet:
 * lowercase, other bytes -> '_', a leading digit or underscore prefixed with 'a'. */
static void clean_key(const char *k, char out[SHE_COT_MAX_KEY]) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)k; *p && n < SHE_COT_MAX_KEY - 1; p++) {
        unsigned char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            c = '_';
        if (n == 0 && !(c >= 'a' && c <= 'z'))
            out[n++] = 'a';
        if (n < SHE_COT_MAX_KEY - 1)
            out[n++] = (char)c;
    }
    out[n] = '\0';
}

/* Step 1 or 2 from ground truth when the category is given, else read out of text. */
static void interp_side(const char *gt_category, const she_kv_t *gt_attrs, int n_gt_attrs,
                        const char *text, const she_lexicon_t *brands,
                        const she_lexicon_t *materials, she_cot_interp_t *out) {
    memset(out, 0, sizeof(*out));
    if (gt_category && she_cot_clean_value(gt_category, out->category)) {
        for (int i = 0; i < n_gt_attrs; i++) {
            char key[SHE_COT_MAX_KEY];
            if (!gt_attrs[i].key || !gt_attrs[i].value)
                continue;
            clean_key(gt_attrs[i].key, key);
            she_cot_interp_add(out, key, gt_attrs[i].value);
        }
        return;
    }
    she_lexicon_interpret(brands, materials, text, out);
}

she_err_t she_teacher_chain(const she_sample_t *s, const she_lexicon_t *brands,
                            const she_lexicon_t *materials, she_cot_t *cot, char *errstr,
                            size_t errstr_size) {
    memset(cot, 0, sizeof(*cot));
    const char *id = s->sample_id ? s->sample_id : "?";
    if (s->grade < SHE_GRADE_L1 || s->grade > SHE_GRADE_L4)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: no grade to teach", id);
    if (!s->query || !s->item_title)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: no query or item title",
                        id);
    int steps = s->has_steps;
    interp_side(steps ? s->query_category : NULL, s->query_attrs, s->n_query_attrs, s->query,
                brands, materials, &cot->query);
    interp_side(steps ? s->item_category : NULL, s->item_gt_attrs, s->n_item_gt_attrs,
                s->item_title, brands, materials, &cot->item);
    /* Catalogue attributes are facts about the item even when the title omits them. */
    if (!(steps && s->item_category))
        for (int i = 0; i < s->n_item_attrs; i++) {
            char key[SHE_COT_MAX_KEY];
            if (!s->item_attrs[i].key || !s->item_attrs[i].value)
                continue;
            clean_key(s->item_attrs[i].key, key);
            she_cot_interp_add(&cot->item, key, s->item_attrs[i].value);
        }
    cot->grade = s->grade;

    she_cat_match_t cat = SHE_CAT_MATCH_UNKNOWN;
    she_attr_match_t attr = SHE_ATTR_MATCH_UNKNOWN;
    switch (s->grade) {
    case SHE_GRADE_L1:
        cat = SHE_CAT_MATCH_NONE;
        attr = SHE_ATTR_MATCH_NONE;
        break;
    case SHE_GRADE_L2:
        cat = she_teacher_category_match(cot->query.category, cot->item.category);
        attr = SHE_ATTR_MATCH_CONFLICT;
        break;
    case SHE_GRADE_L3:
        cat = she_teacher_category_match(cot->query.category, cot->item.category);
        attr = SHE_ATTR_MATCH_PARTIAL;
        break;
    default:
        cat = SHE_CAT_MATCH_EXACT;
        attr = cot->query.n_attrs > 0 ? SHE_ATTR_MATCH_MATCH : SHE_ATTR_MATCH_NONE;
        break;
    }
    cot->cat_match = steps && s->cat_match != SHE_CAT_MATCH_UNKNOWN ? s->cat_match : cat;
    cot->attr_match = steps && s->attr_match != SHE_ATTR_MATCH_UNKNOWN ? s->attr_match : attr;
    return SHE_OK;
}
