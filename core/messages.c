/* messages.c -- C structs <-> Avro values of she's message records (schemas/).
 *
 * Fields are looked up by name, not position, so reordering a schema cannot silently swap
 * two fields of the same type; a lookup costs a hash probe, small beside the token arrays. */
#include "messages.h"

#include <stdlib.h>
#include <string.h>

/* Where a conversion is, for messages: the record's full name. */
typedef struct ctx {
    const char *record;
    char *errstr;
    size_t errstr_size;
} ctx_t;

/* Tier 3 for Avro C value calls, which fail only on a schema/code mismatch or ENOMEM. */
#define AV(x, field, call)                                                                   \
    do {                                                                                     \
        if ((call) != 0)                                                                     \
            return she_errf(SHE_ERR_AVRO, (x)->errstr, (x)->errstr_size, "%s.%s: %s: %s",    \
                            (x)->record, (field), #call, avro_strerror());                   \
    } while (0)

static she_err_t field(ctx_t *x, avro_value_t *rec, const char *name, avro_value_t *f) {
    AV(x, name, avro_value_get_by_name(rec, name, f, NULL));
    return SHE_OK;
}

static she_err_t invalid(ctx_t *x, const char *field, const char *what) {
    return she_errf(SHE_ERR_INVALID, x->errstr, x->errstr_size, "%s.%s: %s", x->record, field,
                    what);
}

static she_err_t inconsistent(ctx_t *x, const char *field, const char *what) {
    return she_errf(SHE_ERR_FORMAT, x->errstr, x->errstr_size, "%s.%s: %s", x->record, field,
                    what);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    SHE_CHECK_ALLOC(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- writing fields ---- */

static she_err_t w_string(ctx_t *x, avro_value_t *rec, const char *name, const char *s) {
    avro_value_t f;
    if (!s)
        return invalid(x, name, "required but NULL");
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_string(&f, s));
    return SHE_OK;
}

/* ["null", T] unions: branch 1 holds the value. */
static she_err_t w_branch(ctx_t *x, avro_value_t *rec, const char *name, int present,
                          avro_value_t *b) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_branch(&f, present ? 1 : 0, b));
    if (!present)
        AV(x, name, avro_value_set_null(b));
    return SHE_OK;
}

static she_err_t w_opt_string(ctx_t *x, avro_value_t *rec, const char *name, const char *s) {
    avro_value_t b;
    SHE_TRY(w_branch(x, rec, name, s != NULL, &b));
    if (s)
        AV(x, name, avro_value_set_string(&b, s));
    return SHE_OK;
}

static she_err_t w_opt_long(ctx_t *x, avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t b;
    SHE_TRY(w_branch(x, rec, name, v >= 0, &b));
    if (v >= 0)
        AV(x, name, avro_value_set_long(&b, v));
    return SHE_OK;
}

static she_err_t w_int(ctx_t *x, avro_value_t *rec, const char *name, int32_t v) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_int(&f, v));
    return SHE_OK;
}

static she_err_t w_long(ctx_t *x, avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_long(&f, v));
    return SHE_OK;
}

static she_err_t w_float(ctx_t *x, avro_value_t *rec, const char *name, float v) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_float(&f, v));
    return SHE_OK;
}

static she_err_t w_double(ctx_t *x, avro_value_t *rec, const char *name, double v) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_double(&f, v));
    return SHE_OK;
}

static she_err_t w_bool(ctx_t *x, avro_value_t *rec, const char *name, int v) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_boolean(&f, v != 0));
    return SHE_OK;
}

static she_err_t w_enum(ctx_t *x, avro_value_t *rec, const char *name, int v, int n_symbols) {
    avro_value_t f;
    if (v < 0 || v >= n_symbols)
        return invalid(x, name, "enum value out of range");
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_enum(&f, v));
    return SHE_OK;
}

static she_err_t w_bytes(ctx_t *x, avro_value_t *rec, const char *name, const void *p, size_t n) {
    avro_value_t f;
    if (!p && n)
        return invalid(x, name, "NULL with a non-zero length");
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_set_bytes(&f, (void *)(p ? p : ""), n));
    return SHE_OK;
}

static she_err_t w_int_array(ctx_t *x, avro_value_t *rec, const char *name, const int32_t *v,
                             int n) {
    avro_value_t a, e;
    SHE_TRY(field(x, rec, name, &a));
    for (int i = 0; i < n; i++) {
        AV(x, name, avro_value_append(&a, &e, NULL));
        AV(x, name, avro_value_set_int(&e, v[i]));
    }
    return SHE_OK;
}

static she_err_t w_float_array(ctx_t *x, avro_value_t *rec, const char *name, const float *v,
                               int n) {
    avro_value_t a, e;
    SHE_TRY(field(x, rec, name, &a));
    for (int i = 0; i < n; i++) {
        AV(x, name, avro_value_append(&a, &e, NULL));
        AV(x, name, avro_value_set_float(&e, v[i]));
    }
    return SHE_OK;
}

static she_err_t w_kvs(ctx_t *x, avro_value_t *rec, const char *name, const she_kv_t *kv, int n) {
    avro_value_t a, e;
    SHE_TRY(field(x, rec, name, &a));
    for (int i = 0; i < n; i++) {
        AV(x, name, avro_value_append(&a, &e, NULL));
        SHE_TRY(w_string(x, &e, "key", kv[i].key));
        SHE_TRY(w_string(x, &e, "value", kv[i].value));
    }
    return SHE_OK;
}

static she_err_t w_metrics(ctx_t *x, avro_value_t *rec, const char *name, const she_msg_metric_t *m,
                           int n) {
    avro_value_t map, e;
    SHE_TRY(field(x, rec, name, &map));
    for (int i = 0; i < n; i++) {
        if (!m[i].name)
            return invalid(x, name, "metric without a name");
        AV(x, name, avro_value_add(&map, m[i].name, &e, NULL, NULL));
        AV(x, name, avro_value_set_double(&e, m[i].value));
    }
    return SHE_OK;
}

/* ---- reading fields (the codec has checked types, lengths and enum ranges) ---- */

static she_err_t r_string(ctx_t *x, avro_value_t *rec, const char *name, char **out) {
    avro_value_t f;
    const char *s = NULL;
    size_t n = 0;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_string(&f, &s, &n));
    *out = dup_n(s, n ? n - 1 : 0); /* Avro C counts the NUL */
    return SHE_OK;
}

/* ["null", T] unions: *present = 0 and no branch for null. */
static she_err_t r_branch(ctx_t *x, avro_value_t *rec, const char *name, int *present,
                          avro_value_t *b) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_current_branch(&f, b));
    *present = avro_value_get_type(b) != AVRO_NULL;
    return SHE_OK;
}

static she_err_t r_opt_string(ctx_t *x, avro_value_t *rec, const char *name, char **out) {
    avro_value_t b;
    int present;
    const char *s = NULL;
    size_t n = 0;
    SHE_TRY(r_branch(x, rec, name, &present, &b));
    *out = NULL;
    if (present) {
        AV(x, name, avro_value_get_string(&b, &s, &n));
        *out = dup_n(s, n ? n - 1 : 0);
    }
    return SHE_OK;
}

static she_err_t r_opt_long(ctx_t *x, avro_value_t *rec, const char *name, int64_t *out) {
    avro_value_t b;
    int present;
    SHE_TRY(r_branch(x, rec, name, &present, &b));
    *out = -1;
    if (present) {
        AV(x, name, avro_value_get_long(&b, out));
        if (*out < 0)
            return inconsistent(x, name, "negative version");
    }
    return SHE_OK;
}

static she_err_t r_int(ctx_t *x, avro_value_t *rec, const char *name, int32_t *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_int(&f, out));
    return SHE_OK;
}

static she_err_t r_long(ctx_t *x, avro_value_t *rec, const char *name, int64_t *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_long(&f, out));
    return SHE_OK;
}

static she_err_t r_float(ctx_t *x, avro_value_t *rec, const char *name, float *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_float(&f, out));
    return SHE_OK;
}

static she_err_t r_double(ctx_t *x, avro_value_t *rec, const char *name, double *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_double(&f, out));
    return SHE_OK;
}

static she_err_t r_bool(ctx_t *x, avro_value_t *rec, const char *name, int *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_boolean(&f, out));
    return SHE_OK;
}

static she_err_t r_enum(ctx_t *x, avro_value_t *rec, const char *name, int *out) {
    avro_value_t f;
    SHE_TRY(field(x, rec, name, &f));
    AV(x, name, avro_value_get_enum(&f, out));
    return SHE_OK;
}

/* Bytes as borrowed from the value (valid until the codec's next decode of the record). */
static she_err_t r_bytes_ref(ctx_t *x, avro_value_t *v, const char *name, const uint8_t **p,
                             size_t *n) {
    const void *b = NULL;
    AV(x, name, avro_value_get_bytes(v, &b, n));
    *p = b;
    return SHE_OK;
}

/* calloc that aborts on failure; NULL for zero elements. */
static void *calloc_n(size_t n, size_t size) {
    if (!n)
        return NULL;
    void *p = calloc(n, size);
    SHE_CHECK_ALLOC(p);
    return p;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
    uint8_t *d = malloc(n ? n : 1); /* non-NULL even when empty: NULL means absent */
    SHE_CHECK_ALLOC(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* The array field `name` and its length. */
static she_err_t r_array(ctx_t *x, avro_value_t *rec, const char *name, avro_value_t *a,
                         size_t *n) {
    SHE_TRY(field(x, rec, name, a));
    AV(x, name, avro_value_get_size(a, n));
    if (*n > INT32_MAX)
        return inconsistent(x, name, "more than 2^31 elements");
    return SHE_OK;
}

static she_err_t r_int_array(ctx_t *x, avro_value_t *rec, const char *name, int32_t **out,
                             int *n_out) {
    avro_value_t a, e;
    size_t n;
    SHE_TRY(r_array(x, rec, name, &a, &n));
    int32_t *v = malloc((n ? n : 1) * sizeof(*v));
    SHE_CHECK_ALLOC(v);
    *out = v, *n_out = (int)n; /* owned by the struct from here, so freed on failure */
    for (size_t i = 0; i < n; i++) {
        AV(x, name, avro_value_get_by_index(&a, i, &e, NULL));
        AV(x, name, avro_value_get_int(&e, &v[i]));
    }
    return SHE_OK;
}

static she_err_t r_float_array(ctx_t *x, avro_value_t *rec, const char *name, float **out,
                               int *n_out) {
    avro_value_t a, e;
    size_t n;
    SHE_TRY(r_array(x, rec, name, &a, &n));
    float *v = malloc((n ? n : 1) * sizeof(*v));
    SHE_CHECK_ALLOC(v);
    *out = v, *n_out = (int)n;
    for (size_t i = 0; i < n; i++) {
        AV(x, name, avro_value_get_by_index(&a, i, &e, NULL));
        AV(x, name, avro_value_get_float(&e, &v[i]));
    }
    return SHE_OK;
}

static she_err_t r_kvs(ctx_t *x, avro_value_t *rec, const char *name, she_kv_t **out, int *n_out) {
    avro_value_t a, e;
    size_t n;
    SHE_TRY(r_array(x, rec, name, &a, &n));
    *out = calloc_n(n, sizeof(**out));
    *n_out = (int)n;
    for (size_t i = 0; i < n; i++) {
        AV(x, name, avro_value_get_by_index(&a, i, &e, NULL));
        SHE_TRY(r_string(x, &e, "key", &(*out)[i].key));
        SHE_TRY(r_string(x, &e, "value", &(*out)[i].value));
    }
    return SHE_OK;
}

static she_err_t r_metrics(ctx_t *x, avro_value_t *rec, const char *name, she_msg_metric_t **out,
                           int *n_out) {
    avro_value_t map, e;
    size_t n;
    SHE_TRY(r_array(x, rec, name, &map, &n));
    *out = calloc_n(n, sizeof(**out));
    *n_out = (int)n;
    for (size_t i = 0; i < n; i++) {
        const char *key = NULL;
        AV(x, name, avro_value_get_by_index(&map, i, &e, &key));
        (*out)[i].name = dup_n(key, strlen(key));
        AV(x, name, avro_value_get_double(&e, &(*out)[i].value));
    }
    return SHE_OK;
}

static void free_metrics(she_msg_metric_t *m, int n) {
    for (int i = 0; i < n; i++)
        free(m[i].name);
    free(m);
}

/* ---- codec ---- */

she_err_t she_msg_codec_open(const char *schema_dir, she_avro_codec_t **ac, char *errstr,
                             size_t errstr_size) {
    static const char *const records[] = {
        SHE_MSG_SAMPLE,        SHE_MSG_ROLLOUT_GROUP, SHE_MSG_REWARDED_GROUP,
        SHE_MSG_CHECKPOINT,    SHE_MSG_CONTROL_STATE, SHE_MSG_PASS_RATE,
        SHE_MSG_DEAD_LETTER,   SHE_MSG_DEPLOYMENT_EVENT, SHE_MSG_EVALUATION,
    };
    *ac = she_avro_codec_new();
    she_err_t rc = schema_dir ? she_avro_codec_load_dir(*ac, schema_dir, errstr, errstr_size)
                              : she_avro_codec_load_embedded(*ac, she_schemas_embedded,
                                                             she_schemas_embedded_count, errstr,
                                                             errstr_size);
    for (size_t i = 0; i < sizeof(records) / sizeof(records[0]) && rc == SHE_OK; i++)
        if (!she_avro_codec_fingerprint(*ac, records[i]))
            rc = she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                          "%s has no schema of %s",
                          schema_dir ? schema_dir : "the built-in schema set", records[i]);
    if (rc != SHE_OK) {
        she_avro_codec_free(*ac);
        *ac = NULL;
    }
    return rc;
}

/* The value to fill for record `name`, or an error if the codec lacks the record. */
static she_err_t begin(she_avro_codec_t *ac, ctx_t *x, avro_value_t **v) {
    *v = she_avro_codec_value(ac, x->record);
    if (!*v)
        return she_errf(SHE_ERR_NOT_FOUND, x->errstr, x->errstr_size, "no schema of %s loaded",
                        x->record);
    return SHE_OK;
}

/* ---- sample ---- */

static she_err_t put_sample(ctx_t *x, avro_value_t *v, const she_sample_t *s) {
    SHE_TRY(w_string(x, v, "sample_id", s->sample_id));
    SHE_TRY(w_string(x, v, "query", s->query));
    SHE_TRY(w_string(x, v, "item_id", s->item_id));
    SHE_TRY(w_string(x, v, "item_title", s->item_title));
    SHE_TRY(w_opt_string(x, v, "item_desc", s->item_desc));
    SHE_TRY(w_kvs(x, v, "item_attrs", s->item_attrs, s->n_item_attrs));
    SHE_TRY(w_opt_string(x, v, "query_type", s->query_type));
    SHE_TRY(w_opt_string(x, v, "domain", s->domain));
    SHE_TRY(w_enum(x, v, "grade", (int)s->grade, SHE_GRADE_L4 + 1));
    avro_value_t st;
    SHE_TRY(w_branch(x, v, "steps", s->has_steps, &st));
    if (s->has_steps) {
        SHE_TRY(w_opt_string(x, &st, "query_category", s->query_category));
        SHE_TRY(w_kvs(x, &st, "query_attrs", s->query_attrs, s->n_query_attrs));
        SHE_TRY(w_opt_string(x, &st, "item_category", s->item_category));
        SHE_TRY(w_kvs(x, &st, "item_gt_attrs", s->item_gt_attrs, s->n_item_gt_attrs));
        SHE_TRY(w_enum(x, &st, "cat_match", (int)s->cat_match, SHE_CAT_MATCH_NONE + 1));
        SHE_TRY(w_enum(x, &st, "attr_match", (int)s->attr_match, SHE_ATTR_MATCH_NONE + 1));
    }
    return SHE_OK;
}

she_err_t she_msg_encode_sample(she_avro_codec_t *ac, const she_sample_t *m, const uint8_t **buf,
                                size_t *len, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_SAMPLE, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(put_sample(&x, v, m));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_sample(ctx_t *x, avro_value_t *v, she_sample_t *s) {
    SHE_TRY(r_string(x, v, "sample_id", &s->sample_id));
    SHE_TRY(r_string(x, v, "query", &s->query));
    SHE_TRY(r_string(x, v, "item_id", &s->item_id));
    SHE_TRY(r_string(x, v, "item_title", &s->item_title));
    SHE_TRY(r_opt_string(x, v, "item_desc", &s->item_desc));
    SHE_TRY(r_kvs(x, v, "item_attrs", &s->item_attrs, &s->n_item_attrs));
    SHE_TRY(r_opt_string(x, v, "query_type", &s->query_type));
    SHE_TRY(r_opt_string(x, v, "domain", &s->domain));
    int e;
    SHE_TRY(r_enum(x, v, "grade", &e));
    s->grade = (she_grade_t)e;
    avro_value_t st;
    SHE_TRY(r_branch(x, v, "steps", &s->has_steps, &st));
    if (s->has_steps) {
        SHE_TRY(r_opt_string(x, &st, "query_category", &s->query_category));
        SHE_TRY(r_kvs(x, &st, "query_attrs", &s->query_attrs, &s->n_query_attrs));
        SHE_TRY(r_opt_string(x, &st, "item_category", &s->item_category));
        SHE_TRY(r_kvs(x, &st, "item_gt_attrs", &s->item_gt_attrs, &s->n_item_gt_attrs));
        SHE_TRY(r_enum(x, &st, "cat_match", &e));
        s->cat_match = (she_cat_match_t)e;
        SHE_TRY(r_enum(x, &st, "attr_match", &e));
        s->attr_match = (she_attr_match_t)e;
    }
    return SHE_OK;
}

she_err_t she_msg_decode_sample(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                she_sample_t *m, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_SAMPLE, errstr, errstr_size};
    avro_value_t *v;
    she_sample_clear(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_sample(&x, v, m);
    if (rc != SHE_OK)
        she_sample_clear(m);
    return rc;
}

/* ---- rollout group ---- */

/* Checks what Avro cannot say: one log-prob per token, spans inside the response. */
static she_err_t check_response(ctx_t *x, const she_response_t *r, she_err_t code) {
    const char *why = NULL;
    if (r->n_tokens < 0 || r->n_spans < 0)
        why = "negative count";
    else if (r->n_tokens && (!r->tokens || !r->logprobs))
        why = "NULL tokens or logprobs";
    else if (r->n_spans && !r->spans)
        why = "NULL spans";
    for (int i = 0; !why && i < r->n_spans; i++) {
        const she_step_span_t *sp = &r->spans[i];
        if (sp->step < 1 || sp->step > SHE_MSG_STEPS)
            why = "span step outside 1..5";
        else if (sp->start < 0 || sp->start > sp->end || sp->end > r->n_tokens)
            why = "span outside the response's tokens";
    }
    if (!why)
        return SHE_OK;
    return she_errf(code, x->errstr, x->errstr_size, "%s.responses: %s", x->record, why);
}

static she_err_t put_rollout(ctx_t *x, avro_value_t *v, const she_rollout_group_t *g,
                             const uint8_t *sample, size_t sample_len) {
    SHE_TRY(w_string(x, v, "group_id", g->group_id));
    SHE_TRY(w_string(x, v, "sample_id", g->sample_id));
    SHE_TRY(w_long(x, v, "policy_version", g->policy_version));
    SHE_TRY(w_long(x, v, "created_ms", g->created_ms));
    SHE_TRY(w_bytes(x, v, "sample", sample, sample_len));
    if (g->n_prompt_tokens < 0 || (g->n_prompt_tokens && !g->prompt_tokens))
        return invalid(x, "prompt_tokens", "NULL or negative count");
    SHE_TRY(w_int_array(x, v, "prompt_tokens", g->prompt_tokens, g->n_prompt_tokens));
    avro_value_t a, e, spans, sp;
    SHE_TRY(field(x, v, "responses", &a));
    for (int i = 0; i < g->n_responses; i++) {
        const she_response_t *r = &g->responses[i];
        SHE_TRY(check_response(x, r, SHE_ERR_INVALID));
        AV(x, "responses", avro_value_append(&a, &e, NULL));
        SHE_TRY(w_int_array(x, &e, "tokens", r->tokens, r->n_tokens));
        SHE_TRY(w_float_array(x, &e, "logprobs", r->logprobs, r->n_tokens));
        SHE_TRY(field(x, &e, "spans", &spans));
        for (int k = 0; k < r->n_spans; k++) {
            AV(x, "spans", avro_value_append(&spans, &sp, NULL));
            SHE_TRY(w_int(x, &sp, "step", r->spans[k].step));
            SHE_TRY(w_int(x, &sp, "start", r->spans[k].start));
            SHE_TRY(w_int(x, &sp, "end", r->spans[k].end));
        }
        SHE_TRY(w_bool(x, &e, "truncated", r->truncated));
    }
    return SHE_OK;
}

/* The sample is encoded first: its bytes live in the codec's write buffer until the
 * enclosing record copies them into its value, before that record is encoded. */
she_err_t she_msg_encode_rollout_group(she_avro_codec_t *ac, const she_rollout_group_t *m,
                                       const uint8_t **buf, size_t *len, char *errstr,
                                       size_t errstr_size) {
    ctx_t x = {SHE_MSG_ROLLOUT_GROUP, errstr, errstr_size};
    const uint8_t *sample;
    size_t sample_len;
    avro_value_t *v;
    if (m->n_responses < 0 || (m->n_responses && !m->responses))
        return invalid(&x, "responses", "NULL or negative count");
    SHE_TRY(she_msg_encode_sample(ac, &m->sample, &sample, &sample_len, errstr, errstr_size));
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(put_rollout(&x, v, m, sample, sample_len));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_rollout(she_avro_codec_t *ac, ctx_t *x, avro_value_t *v,
                             she_rollout_group_t *g) {
    SHE_TRY(r_string(x, v, "group_id", &g->group_id));
    SHE_TRY(r_string(x, v, "sample_id", &g->sample_id));
    SHE_TRY(r_long(x, v, "policy_version", &g->policy_version));
    SHE_TRY(r_long(x, v, "created_ms", &g->created_ms));
    SHE_TRY(r_int_array(x, v, "prompt_tokens", &g->prompt_tokens, &g->n_prompt_tokens));
    avro_value_t a, e, spans, sp;
    size_t n, n_spans;
    SHE_TRY(r_array(x, v, "responses", &a, &n));
    g->responses = calloc_n(n, sizeof(*g->responses));
    g->n_responses = (int)n;
    for (size_t i = 0; i < n; i++) {
        she_response_t *r = &g->responses[i];
        int n_logprobs;
        AV(x, "responses", avro_value_get_by_index(&a, i, &e, NULL));
        SHE_TRY(r_int_array(x, &e, "tokens", &r->tokens, &r->n_tokens));
        SHE_TRY(r_float_array(x, &e, "logprobs", &r->logprobs, &n_logprobs));
        if (n_logprobs != r->n_tokens)
            return inconsistent(x, "responses", "logprobs and tokens differ in length");
        SHE_TRY(r_array(x, &e, "spans", &spans, &n_spans));
        r->spans = malloc((n_spans ? n_spans : 1) * sizeof(*r->spans));
        SHE_CHECK_ALLOC(r->spans);
        r->n_spans = (int)n_spans;
        for (size_t k = 0; k < n_spans; k++) {
            AV(x, "spans", avro_value_get_by_index(&spans, k, &sp, NULL));
            SHE_TRY(r_int(x, &sp, "step", &r->spans[k].step));
            SHE_TRY(r_int(x, &sp, "start", &r->spans[k].start));
            SHE_TRY(r_int(x, &sp, "end", &r->spans[k].end));
        }
        SHE_TRY(check_response(x, r, SHE_ERR_FORMAT));
        SHE_TRY(r_bool(x, &e, "truncated", &r->truncated));
    }
    /* Last: decoding the nested sample reuses the codec's reader. */
    const uint8_t *sample = NULL;
    size_t sample_len = 0;
    avro_value_t f;
    char err[SHE_ERRSTR_SIZE];
    SHE_TRY(field(x, v, "sample", &f));
    SHE_TRY(r_bytes_ref(x, &f, "sample", &sample, &sample_len));
    she_err_t rc = she_msg_decode_sample(ac, sample, sample_len, &g->sample, err, sizeof(err));
    if (rc != SHE_OK)
        return she_errf(rc, x->errstr, x->errstr_size, "%s.sample: %s", x->record, err);
    return SHE_OK;
}

she_err_t she_msg_decode_rollout_group(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                       she_rollout_group_t *m, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_ROLLOUT_GROUP, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_rollout_group(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_rollout(ac, &x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_rollout_group(m);
    return rc;
}

void she_msg_clear_rollout_group(she_rollout_group_t *m) {
    free(m->group_id);
    free(m->sample_id);
    she_sample_clear(&m->sample);
    free(m->prompt_tokens);
    for (int i = 0; i < m->n_responses; i++) {
        free(m->responses[i].tokens);
        free(m->responses[i].logprobs);
        free(m->responses[i].spans);
    }
    free(m->responses);
    memset(m, 0, sizeof(*m));
}

/* ---- rewarded group ---- */

she_err_t she_msg_encode_rewarded_group(she_avro_codec_t *ac, const she_rewarded_group_t *m,
                                        const uint8_t **buf, size_t *len, char *errstr,
                                        size_t errstr_size) {
    ctx_t x = {SHE_MSG_REWARDED_GROUP, errstr, errstr_size};
    const uint8_t *rollout;
    size_t rollout_len;
    avro_value_t *v, a, e;
    if (m->n_rewards != m->rollout.n_responses || (m->n_rewards && !m->rewards))
        return invalid(&x, "rewards", "not one per response");
    SHE_TRY(she_msg_encode_rollout_group(ac, &m->rollout, &rollout, &rollout_len, errstr,
                                         errstr_size));
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_bytes(&x, v, "rollout", rollout, rollout_len));
    SHE_TRY(field(&x, v, "rewards", &a));
    for (int i = 0; i < m->n_rewards; i++) {
        AV(&x, "rewards", avro_value_append(&a, &e, NULL));
        SHE_TRY(w_float_array(&x, &e, "step_rewards", m->rewards[i].step_rewards, SHE_MSG_STEPS));
        SHE_TRY(w_float(&x, &e, "total", m->rewards[i].total));
        SHE_TRY(w_bool(&x, &e, "pass", m->rewards[i].pass));
    }
    SHE_TRY(w_float(&x, v, "pass_rate", m->pass_rate));
    SHE_TRY(w_long(&x, v, "created_ms", m->created_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_rewarded(she_avro_codec_t *ac, ctx_t *x, avro_value_t *v,
                              she_rewarded_group_t *g) {
    avro_value_t a, e, sr, f;
    size_t n, n_steps;
    SHE_TRY(r_float(x, v, "pass_rate", &g->pass_rate));
    SHE_TRY(r_long(x, v, "created_ms", &g->created_ms));
    SHE_TRY(r_array(x, v, "rewards", &a, &n));
    g->rewards = calloc_n(n, sizeof(*g->rewards));
    g->n_rewards = (int)n;
    for (size_t i = 0; i < n; i++) {
        she_response_reward_t *r = &g->rewards[i];
        AV(x, "rewards", avro_value_get_by_index(&a, i, &e, NULL));
        SHE_TRY(r_array(x, &e, "step_rewards", &sr, &n_steps));
        if (n_steps != SHE_MSG_STEPS)
            return inconsistent(x, "rewards", "step_rewards not one per chain-of-thought step");
        for (size_t k = 0; k < n_steps; k++) {
            avro_value_t s;
            AV(x, "step_rewards", avro_value_get_by_index(&sr, k, &s, NULL));
            AV(x, "step_rewards", avro_value_get_float(&s, &r->step_rewards[k]));
        }
        SHE_TRY(r_float(x, &e, "total", &r->total));
        SHE_TRY(r_bool(x, &e, "pass", &r->pass));
    }
    const uint8_t *rollout = NULL;
    size_t rollout_len = 0;
    char err[SHE_ERRSTR_SIZE];
    SHE_TRY(field(x, v, "rollout", &f));
    SHE_TRY(r_bytes_ref(x, &f, "rollout", &rollout, &rollout_len));
    she_err_t rc = she_msg_decode_rollout_group(ac, rollout, rollout_len, &g->rollout, err,
                                                sizeof(err));
    if (rc != SHE_OK)
        return she_errf(rc, x->errstr, x->errstr_size, "%s.rollout: %s", x->record, err);
    if (g->n_rewards != g->rollout.n_responses)
        return inconsistent(x, "rewards", "not one per response");
    return SHE_OK;
}

she_err_t she_msg_decode_rewarded_group(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                        she_rewarded_group_t *m, char *errstr,
                                        size_t errstr_size) {
    ctx_t x = {SHE_MSG_REWARDED_GROUP, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_rewarded_group(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_rewarded(ac, &x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_rewarded_group(m);
    return rc;
}

void she_msg_clear_rewarded_group(she_rewarded_group_t *m) {
    she_msg_clear_rollout_group(&m->rollout);
    free(m->rewards);
    memset(m, 0, sizeof(*m));
}

/* ---- checkpoint announcement ---- */

she_err_t she_msg_encode_checkpoint(she_avro_codec_t *ac, const she_checkpoint_announcement_t *m,
                                    const uint8_t **buf, size_t *len, char *errstr,
                                    size_t errstr_size) {
    ctx_t x = {SHE_MSG_CHECKPOINT, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_long(&x, v, "version", m->version));
    SHE_TRY(w_string(&x, v, "uri", m->uri));
    SHE_TRY(w_string(&x, v, "sha256", m->sha256));
    SHE_TRY(w_opt_long(&x, v, "parent_version", m->parent_version));
    SHE_TRY(w_long(&x, v, "created_ms", m->created_ms));
    SHE_TRY(w_metrics(&x, v, "metrics", m->metrics, m->n_metrics));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_checkpoint(ctx_t *x, avro_value_t *v, she_checkpoint_announcement_t *m) {
    SHE_TRY(r_long(x, v, "version", &m->version));
    SHE_TRY(r_string(x, v, "uri", &m->uri));
    SHE_TRY(r_string(x, v, "sha256", &m->sha256));
    SHE_TRY(r_opt_long(x, v, "parent_version", &m->parent_version));
    SHE_TRY(r_long(x, v, "created_ms", &m->created_ms));
    return r_metrics(x, v, "metrics", &m->metrics, &m->n_metrics);
}

she_err_t she_msg_decode_checkpoint(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                    she_checkpoint_announcement_t *m, char *errstr,
                                    size_t errstr_size) {
    ctx_t x = {SHE_MSG_CHECKPOINT, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_checkpoint(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_checkpoint(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_checkpoint(m);
    return rc;
}

void she_msg_clear_checkpoint(she_checkpoint_announcement_t *m) {
    free(m->uri);
    free(m->sha256);
    free_metrics(m->metrics, m->n_metrics);
    memset(m, 0, sizeof(*m));
}

/* ---- control state ---- */

she_err_t she_msg_encode_control_state(she_avro_codec_t *ac, const she_control_state_t *m,
                                       const uint8_t **buf, size_t *len, char *errstr,
                                       size_t errstr_size) {
    ctx_t x = {SHE_MSG_CONTROL_STATE, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_long(&x, v, "seq", m->seq));
    SHE_TRY(w_float(&x, v, "difficulty_lo", m->difficulty_lo));
    SHE_TRY(w_float(&x, v, "difficulty_hi", m->difficulty_hi));
    SHE_TRY(w_int(&x, v, "curriculum_stage", m->curriculum_stage));
    SHE_TRY(w_metrics(&x, v, "quotas", m->quotas, m->n_quotas));
    SHE_TRY(w_string(&x, v, "reason", m->reason));
    SHE_TRY(w_long(&x, v, "updated_ms", m->updated_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_control_state(ctx_t *x, avro_value_t *v, she_control_state_t *m) {
    SHE_TRY(r_long(x, v, "seq", &m->seq));
    SHE_TRY(r_float(x, v, "difficulty_lo", &m->difficulty_lo));
    SHE_TRY(r_float(x, v, "difficulty_hi", &m->difficulty_hi));
    SHE_TRY(r_int(x, v, "curriculum_stage", &m->curriculum_stage));
    SHE_TRY(r_metrics(x, v, "quotas", &m->quotas, &m->n_quotas));
    SHE_TRY(r_string(x, v, "reason", &m->reason));
    return r_long(x, v, "updated_ms", &m->updated_ms);
}

she_err_t she_msg_decode_control_state(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                       she_control_state_t *m, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_CONTROL_STATE, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_control_state(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_control_state(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_control_state(m);
    return rc;
}

void she_msg_clear_control_state(she_control_state_t *m) {
    free_metrics(m->quotas, m->n_quotas);
    free(m->reason);
    memset(m, 0, sizeof(*m));
}

/* ---- pass rate ---- */

she_err_t she_msg_encode_pass_rate(she_avro_codec_t *ac, const she_pass_rate_t *m,
                                   const uint8_t **buf, size_t *len, char *errstr,
                                   size_t errstr_size) {
    ctx_t x = {SHE_MSG_PASS_RATE, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_string(&x, v, "sample_id", m->sample_id));
    SHE_TRY(w_float(&x, v, "pass_rate", m->pass_rate));
    SHE_TRY(w_int(&x, v, "count", m->count));
    SHE_TRY(w_long(&x, v, "policy_version", m->policy_version));
    SHE_TRY(w_long(&x, v, "updated_ms", m->updated_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_pass_rate(ctx_t *x, avro_value_t *v, she_pass_rate_t *m) {
    SHE_TRY(r_string(x, v, "sample_id", &m->sample_id));
    SHE_TRY(r_float(x, v, "pass_rate", &m->pass_rate));
    SHE_TRY(r_int(x, v, "count", &m->count));
    SHE_TRY(r_long(x, v, "policy_version", &m->policy_version));
    return r_long(x, v, "updated_ms", &m->updated_ms);
}

she_err_t she_msg_decode_pass_rate(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                   she_pass_rate_t *m, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_PASS_RATE, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_pass_rate(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_pass_rate(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_pass_rate(m);
    return rc;
}

void she_msg_clear_pass_rate(she_pass_rate_t *m) {
    free(m->sample_id);
    memset(m, 0, sizeof(*m));
}

/* ---- dead letter ---- */

she_err_t she_msg_encode_dead_letter(she_avro_codec_t *ac, const she_dead_letter_t *m,
                                     const uint8_t **buf, size_t *len, char *errstr,
                                     size_t errstr_size) {
    ctx_t x = {SHE_MSG_DEAD_LETTER, errstr, errstr_size};
    avro_value_t *v, key;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_string(&x, v, "source_topic", m->source_topic));
    SHE_TRY(w_int(&x, v, "partition", m->partition));
    SHE_TRY(w_long(&x, v, "offset", m->offset));
    SHE_TRY(w_branch(&x, v, "key", m->key != NULL, &key));
    if (m->key)
        AV(&x, "key", avro_value_set_bytes(&key, m->key, m->key_len));
    SHE_TRY(w_bytes(&x, v, "raw", m->raw, m->raw_len));
    SHE_TRY(w_string(&x, v, "error", m->error));
    SHE_TRY(w_string(&x, v, "component", m->component));
    SHE_TRY(w_long(&x, v, "created_ms", m->created_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_dead_letter(ctx_t *x, avro_value_t *v, she_dead_letter_t *m) {
    avro_value_t key, raw;
    int has_key;
    const uint8_t *p = NULL;
    size_t n = 0;
    SHE_TRY(r_string(x, v, "source_topic", &m->source_topic));
    SHE_TRY(r_int(x, v, "partition", &m->partition));
    SHE_TRY(r_long(x, v, "offset", &m->offset));
    SHE_TRY(r_branch(x, v, "key", &has_key, &key));
    if (has_key) {
        SHE_TRY(r_bytes_ref(x, &key, "key", &p, &n));
        m->key = dup_bytes(p, n), m->key_len = n;
    }
    SHE_TRY(field(x, v, "raw", &raw));
    SHE_TRY(r_bytes_ref(x, &raw, "raw", &p, &n));
    m->raw = dup_bytes(p, n), m->raw_len = n;
    SHE_TRY(r_string(x, v, "error", &m->error));
    SHE_TRY(r_string(x, v, "component", &m->component));
    return r_long(x, v, "created_ms", &m->created_ms);
}

she_err_t she_msg_decode_dead_letter(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                     she_dead_letter_t *m, char *errstr, size_t errstr_size) {
    ctx_t x = {SHE_MSG_DEAD_LETTER, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_dead_letter(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_dead_letter(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_dead_letter(m);
    return rc;
}

void she_msg_clear_dead_letter(she_dead_letter_t *m) {
    free(m->source_topic);
    free(m->key);
    free(m->raw);
    free(m->error);
    free(m->component);
    memset(m, 0, sizeof(*m));
}

/* ---- deployment event ---- */

she_err_t she_msg_encode_deployment_event(she_avro_codec_t *ac, const she_deployment_event_t *m,
                                          const uint8_t **buf, size_t *len, char *errstr,
                                          size_t errstr_size) {
    ctx_t x = {SHE_MSG_DEPLOYMENT_EVENT, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_enum(&x, v, "action", (int)m->action, SHE_DEPLOY_ACTION_ABORT + 1));
    SHE_TRY(w_long(&x, v, "stable_version", m->stable_version));
    SHE_TRY(w_opt_long(&x, v, "canary_version", m->canary_version));
    SHE_TRY(w_float(&x, v, "canary_share", m->canary_share));
    SHE_TRY(w_string(&x, v, "reason", m->reason));
    SHE_TRY(w_metrics(&x, v, "metrics", m->metrics, m->n_metrics));
    SHE_TRY(w_long(&x, v, "created_ms", m->created_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_deployment_event(ctx_t *x, avro_value_t *v, she_deployment_event_t *m) {
    int e;
    SHE_TRY(r_enum(x, v, "action", &e));
    m->action = (she_deploy_action_t)e;
    SHE_TRY(r_long(x, v, "stable_version", &m->stable_version));
    SHE_TRY(r_opt_long(x, v, "canary_version", &m->canary_version));
    SHE_TRY(r_float(x, v, "canary_share", &m->canary_share));
    SHE_TRY(r_string(x, v, "reason", &m->reason));
    SHE_TRY(r_metrics(x, v, "metrics", &m->metrics, &m->n_metrics));
    return r_long(x, v, "created_ms", &m->created_ms);
}

she_err_t she_msg_decode_deployment_event(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                          she_deployment_event_t *m, char *errstr,
                                          size_t errstr_size) {
    ctx_t x = {SHE_MSG_DEPLOYMENT_EVENT, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_deployment_event(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_deployment_event(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_deployment_event(m);
    return rc;
}

void she_msg_clear_deployment_event(she_deployment_event_t *m) {
    free(m->reason);
    free_metrics(m->metrics, m->n_metrics);
    memset(m, 0, sizeof(*m));
}

/* ---- evaluation record ---- */

static int unit_interval(double v) { return v >= 0.0 && v <= 1.0; } /* false for NaN */

/* Checks what Avro cannot say: shares and F1s in [0, 1], a non-negative row count. */
static she_err_t check_evaluation(ctx_t *x, const she_evaluation_record_t *m, she_err_t code) {
    const char *bad = NULL;
    if (m->rows < 0)
        bad = "rows";
    else if (!unit_interval(m->macro_f1))
        bad = "macro_f1";
    else if (!unit_interval(m->good_f1))
        bad = "good_f1";
    else if (!unit_interval(m->accuracy))
        bad = "accuracy";
    else if (!unit_interval(m->format_failure_rate))
        bad = "format_failure_rate";
    for (int i = 0; !bad && i < m->n_per_class_f1; i++)
        if (!unit_interval(m->per_class_f1[i].value))
            bad = "per_class_f1";
    if (!bad)
        return SHE_OK;
    return she_errf(code, x->errstr, x->errstr_size, "%s.%s: outside its range (%s)", x->record,
                    bad, strcmp(bad, "rows") == 0 ? "negative" : "not in [0, 1]");
}

she_err_t she_msg_encode_evaluation(she_avro_codec_t *ac, const she_evaluation_record_t *m,
                                    const uint8_t **buf, size_t *len, char *errstr,
                                    size_t errstr_size) {
    ctx_t x = {SHE_MSG_EVALUATION, errstr, errstr_size};
    avro_value_t *v;
    SHE_TRY(check_evaluation(&x, m, SHE_ERR_INVALID));
    SHE_TRY(begin(ac, &x, &v));
    SHE_TRY(w_long(&x, v, "policy_version", m->policy_version));
    SHE_TRY(w_string(&x, v, "checkpoint_uri", m->checkpoint_uri));
    SHE_TRY(w_string(&x, v, "sha256", m->sha256));
    SHE_TRY(w_string(&x, v, "dataset", m->dataset));
    SHE_TRY(w_long(&x, v, "rows", m->rows));
    SHE_TRY(w_double(&x, v, "macro_f1", m->macro_f1));
    SHE_TRY(w_double(&x, v, "good_f1", m->good_f1));
    SHE_TRY(w_double(&x, v, "accuracy", m->accuracy));
    SHE_TRY(w_double(&x, v, "format_failure_rate", m->format_failure_rate));
    SHE_TRY(w_metrics(&x, v, "per_class_f1", m->per_class_f1, m->n_per_class_f1));
    SHE_TRY(w_long(&x, v, "created_ms", m->created_ms));
    return she_avro_codec_encode(ac, v, buf, len, errstr, errstr_size);
}

static she_err_t get_evaluation(ctx_t *x, avro_value_t *v, she_evaluation_record_t *m) {
    SHE_TRY(r_long(x, v, "policy_version", &m->policy_version));
    SHE_TRY(r_string(x, v, "checkpoint_uri", &m->checkpoint_uri));
    SHE_TRY(r_string(x, v, "sha256", &m->sha256));
    SHE_TRY(r_string(x, v, "dataset", &m->dataset));
    SHE_TRY(r_long(x, v, "rows", &m->rows));
    SHE_TRY(r_double(x, v, "macro_f1", &m->macro_f1));
    SHE_TRY(r_double(x, v, "good_f1", &m->good_f1));
    SHE_TRY(r_double(x, v, "accuracy", &m->accuracy));
    SHE_TRY(r_double(x, v, "format_failure_rate", &m->format_failure_rate));
    SHE_TRY(r_metrics(x, v, "per_class_f1", &m->per_class_f1, &m->n_per_class_f1));
    SHE_TRY(r_long(x, v, "created_ms", &m->created_ms));
    return check_evaluation(x, m, SHE_ERR_FORMAT);
}

she_err_t she_msg_decode_evaluation(she_avro_codec_t *ac, const uint8_t *buf, size_t len,
                                    she_evaluation_record_t *m, char *errstr,
                                    size_t errstr_size) {
    ctx_t x = {SHE_MSG_EVALUATION, errstr, errstr_size};
    avro_value_t *v;
    she_msg_clear_evaluation(m);
    she_err_t rc = she_avro_codec_decode(ac, x.record, buf, len, &v, NULL, errstr, errstr_size);
    if (rc == SHE_OK)
        rc = get_evaluation(&x, v, m);
    if (rc != SHE_OK)
        she_msg_clear_evaluation(m);
    return rc;
}

void she_msg_clear_evaluation(she_evaluation_record_t *m) {
    free(m->checkpoint_uri);
    free(m->sha256);
    free(m->dataset);
    free_metrics(m->per_class_f1, m->n_per_class_f1);
    memset(m, 0, sizeof(*m));
}
