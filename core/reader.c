/* reader.c -- CSV and JSON Lines readers with column and label mappings, and the JSON Lines
 * writer (see reader.h for the formats and the mapping syntax). */
#include "reader.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"

/* ---- UTF-8 ---- */

size_t she_utf8_valid_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min, cp;
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, min = 0x80, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, min = 0x800, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, min = 0x10000, cp = c & 0x07;
        else
            return i; /* NUL, stray continuation byte, 0xc0/0xc1 or 0xf5.. */
        if (i + len > n)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += len;
    }
    return n;
}

/* ---- small text helpers ---- */

static char *xstrndup(const char *s, size_t n) {
    char *d = strndup(s, n);
    SHE_CHECK_ALLOC(d);
    return d;
}

static void trim(const char **b, const char **e) {
    while (*b < *e && (**b == ' ' || **b == '\t'))
        (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
}

/* A whole (trimmed) string that is a finite number. */
static int parse_number(const char *b, const char *e, double *x) {
    trim(&b, &e);
    if (b == e || e - b > 63)
        return 0;
    char tmp[64];
    memcpy(tmp, b, (size_t)(e - b));
    tmp[e - b] = '\0';
    char *end;
    errno = 0;
    *x = strtod(tmp, &end);
    return errno == 0 && *end == '\0' && isfinite(*x);
}

/* ---- label maps ---- */

typedef enum rule_kind {
    RULE_LT, RULE_LE, RULE_GT, RULE_GE, RULE_EQ, /* the order of ops[] in parse_rule */
    RULE_ELSE,
    RULE_LITERAL
} rule_kind_t;

typedef struct label_rule {
    rule_kind_t kind;
    double x;      /* numeric conditions, and a literal that is a number */
    int x_valid;   /* literal: x holds its number */
    char *literal; /* RULE_LITERAL */
    she_grade_t grade;
} label_rule_t;

struct she_label_map_s {
    label_rule_t *rules;
    int n;
};

static const struct {
    const char *name, *rules;
} label_presets[] = {
    {"grades", "L1=L1,L2=L2,L3=L3,L4=L4"},
    {"homedepot", "lt1.5=L1,le2=L2,lt3=L3,eq3=L4"},
};

void she_label_map_free(she_label_map_t *lm) {
    if (!lm)
        return;
    for (int i = 0; i < lm->n; i++)
        free(lm->rules[i].literal);
    free(lm->rules);
    free(lm);
}

static she_err_t parse_rule(const char *b, const char *e, label_rule_t *r, char *errstr,
                            size_t errstr_size) {
    int len = (int)(e - b);
    const char *eq = NULL;
    for (const char *p = b; p < e; p++)
        if (*p == '=')
            eq = p;
    if (!eq)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "label map rule '%.*s' is not CONDITION=GRADE", len, b);
    const char *cb = b, *ce = eq, *gb = eq + 1, *ge = e;
    trim(&cb, &ce);
    trim(&gb, &ge);
    char grade[8] = "";
    if (ge - gb < (long)sizeof(grade)) {
        memcpy(grade, gb, (size_t)(ge - gb));
        grade[ge - gb] = '\0';
    }
    if (she_grade_parse(grade, &r->grade) != SHE_OK)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "label map rule '%.*s': grade '%.*s' is not L1..L4", len, b,
                        (int)(ge - gb), gb);
    if (cb == ce)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "label map rule '%.*s' has an empty condition", len, b);
    static const char *const ops[] = {"lt", "le", "gt", "ge", "eq"};
    for (int k = 0; k < 5; k++)
        if (ce - cb > 2 && memcmp(cb, ops[k], 2) == 0 && parse_number(cb + 2, ce, &r->x)) {
            r->kind = (rule_kind_t)k;
            return SHE_OK;
        }
    if (ce - cb == 4 && memcmp(cb, "else", 4) == 0) {
        r->kind = RULE_ELSE;
        return SHE_OK;
    }
    r->kind = RULE_LITERAL;
    r->literal = xstrndup(cb, (size_t)(ce - cb));
    r->x_valid = parse_number(cb, ce, &r->x);
    return SHE_OK;
}

she_err_t she_label_map_new(const char *spec, she_label_map_t **out, char *errstr,
                            size_t errstr_size) {
    *out = NULL;
    for (size_t i = 0; i < sizeof(label_presets) / sizeof(label_presets[0]); i++)
        if (strcmp(spec, label_presets[i].name) == 0)
            spec = label_presets[i].rules;
    she_label_map_t *lm = calloc(1, sizeof(*lm));
    SHE_CHECK_ALLOC(lm);
    const char *p = spec;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *b = p, *te = e;
        trim(&b, &te);
        if (b < te) {
            label_rule_t *grown = realloc(lm->rules, (size_t)(lm->n + 1) * sizeof(*grown));
            SHE_CHECK_ALLOC(grown);
            lm->rules = grown;
            memset(&lm->rules[lm->n], 0, sizeof(label_rule_t));
            she_err_t err = parse_rule(b, te, &lm->rules[lm->n], errstr, errstr_size);
            if (err != SHE_OK) {
                she_label_map_free(lm);
                return err;
            }
            lm->n++;
        }
        if (!*e)
            break;
        p = e + 1;
    }
    if (lm->n == 0) {
        she_label_map_free(lm);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "label map '%s' has no rules",
                        spec);
    }
    *out = lm;
    return SHE_OK;
}

she_err_t she_label_map_apply(const she_label_map_t *lm, const char *value, she_grade_t *grade,
                              char *errstr, size_t errstr_size) {
    const char *b = value, *e = value + strlen(value);
    trim(&b, &e);
    double x = 0;
    int numeric = parse_number(b, e, &x);
    for (int i = 0; i < lm->n; i++) {
        const label_rule_t *r = &lm->rules[i];
        int hit = 0;
        switch (r->kind) {
        case RULE_LT: hit = numeric && x < r->x; break;
        case RULE_LE: hit = numeric && x <= r->x; break;
        case RULE_GT: hit = numeric && x > r->x; break;
        case RULE_GE: hit = numeric && x >= r->x; break;
        case RULE_EQ: hit = numeric && x == r->x; break;
        case RULE_ELSE: hit = 1; break;
        case RULE_LITERAL:
            hit = (r->x_valid && numeric) ? x == r->x
                                          : (strlen(r->literal) == (size_t)(e - b) &&
                                             memcmp(r->literal, b, (size_t)(e - b)) == 0);
            break;
        }
        if (hit) {
            *grade = r->grade;
            return SHE_OK;
        }
    }
    return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                    "label '%.*s' matches no rule of the label map", (int)(e - b), b);
}

/* ---- fields and column mappings ---- */

enum {
    F_SAMPLE_ID, F_QUERY, F_ITEM_ID, F_ITEM_TITLE, F_ITEM_DESC, F_ITEM_ATTRS, F_QUERY_TYPE,
    F_DOMAIN, F_GRADE, F_QUERY_CATEGORY, F_QUERY_ATTRS, F_ITEM_CATEGORY, F_ITEM_GT_ATTRS,
    F_CAT_MATCH, F_ATTR_MATCH, N_FIELDS
};
static const char *const field_names[N_FIELDS] = {
    "sample_id", "query", "item_id", "item_title", "item_desc", "item_attrs", "query_type",
    "domain", "grade", "query_category", "query_attrs", "item_category", "item_gt_attrs",
    "cat_match", "attr_match"};
static const char *const field_aliases[N_FIELDS] = {
    "id", NULL, NULL, "title", "desc", "attrs", NULL, NULL, "label", NULL, NULL, NULL,
    "item_attrs_gt", NULL, NULL};

static int is_attrs_field(int f) {
    return f == F_ITEM_ATTRS || f == F_QUERY_ATTRS || f == F_ITEM_GT_ATTRS;
}
static int is_step_field(int f) { return f >= F_QUERY_CATEGORY; }

static int field_lookup(const char *b, size_t n) {
    for (int f = 0; f < N_FIELDS; f++)
        if ((strlen(field_names[f]) == n && memcmp(field_names[f], b, n) == 0) ||
            (field_aliases[f] && strlen(field_aliases[f]) == n &&
             memcmp(field_aliases[f], b, n) == 0))
            return f;
    return -1;
}

/* ---- the reader ---- */

struct she_reader_s {
    char *name;
    int csv;                 /* 1 = CSV, 0 = JSON Lines */
    char *colname[N_FIELDS]; /* column (CSV) or key (JSON) of each field; NULL = not read */
    int explicit_map;        /* the mapping was given: every column it names must exist */
    she_label_map_t *lm;

    char *buf; /* unconsumed input is buf[pos..len) */
    size_t len, cap, pos;
    long long line; /* physical line number of buf[pos], from 1 */
    int finished, started, discarding;
    she_err_t fatal;
    char fatal_msg[SHE_ERRSTR_SIZE];

    /* CSV */
    int n_header;            /* fields per record; 0 until the header has been read */
    char **header;           /* (n_header) column names */
    int colidx[N_FIELDS];    /* header index of each field, -1 = absent */
    char *fbuf;              /* fields of the current record, each NUL-terminated */
    size_t flen, fcap;
    size_t *foff;            /* (nf) offset of each field in fbuf */
    int nf, foffcap;

    she_reader_stats_t stats;
};

static const char *const homedepot_columns =
    "id=id,item_id=product_uid,title=product_title,query=search_term,label=relevance";

she_err_t she_reader_resolve_format(const char *format, const char *path, const char **out,
                                    char *errstr, size_t errstr_size) {
    static const char *const known[] = {"csv", "jsonl", "homedepot"};
    if (format && *format && strcmp(format, "auto") != 0) {
        for (int i = 0; i < 3; i++)
            if (strcmp(format, known[i]) == 0) {
                *out = known[i];
                return SHE_OK;
            }
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "unknown format '%s' (auto, csv, jsonl, homedepot)", format);
    }
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (path && strcmp(path, "-") == 0)
        *out = "jsonl";
    else if (dot && strcasecmp(dot, ".csv") == 0)
        *out = "csv";
    else if (dot && (strcasecmp(dot, ".jsonl") == 0 || strcasecmp(dot, ".ndjson") == 0 ||
                     strcasecmp(dot, ".json") == 0))
        *out = "jsonl";
    else
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "cannot tell the format of '%s' from its name: give csv or jsonl",
                        path ? path : "(null)");
    return SHE_OK;
}

static she_err_t parse_columns(she_reader_t *rd, const char *spec, char *errstr,
                               size_t errstr_size) {
    const char *p = spec;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *b = p, *te = e;
        trim(&b, &te);
        if (b < te) {
            const char *eq = memchr(b, '=', (size_t)(te - b));
            if (!eq)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "column mapping '%.*s' is not field=column", (int)(te - b), b);
            const char *fb = b, *fe = eq, *cb = eq + 1, *ce = te;
            trim(&fb, &fe);
            trim(&cb, &ce);
            int f = field_lookup(fb, (size_t)(fe - fb));
            if (f < 0) {
                char names[400] = "";
                for (int k = 0; k < N_FIELDS; k++)
                    snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                             k ? " " : "", field_names[k]);
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "column mapping: unknown field '%.*s' (fields: %s; aliases: id "
                                "title desc attrs label item_attrs_gt)",
                                (int)(fe - fb), fb, names);
            }
            if (cb == ce)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "column mapping: field '%s' maps to an empty column name",
                                field_names[f]);
            free(rd->colname[f]);
            rd->colname[f] = xstrndup(cb, (size_t)(ce - cb));
        }
        if (!*e)
            return SHE_OK;
        p = e + 1;
    }
}

she_err_t she_reader_new(const char *name, const she_reader_opts_t *opts, she_reader_t **out,
                         char *errstr, size_t errstr_size) {
    *out = NULL;
    const char *format = opts->format ? opts->format : "";
    int homedepot = strcmp(format, "homedepot") == 0;
    if (!homedepot && strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "reader format must be csv, jsonl or homedepot, not '%s'", format);
    she_reader_t *rd = calloc(1, sizeof(*rd));
    SHE_CHECK_ALLOC(rd);
    rd->name = xstrndup(name, strlen(name));
    rd->csv = strcmp(format, "jsonl") != 0;
    rd->line = 1;
    const char *columns = opts->columns && *opts->columns ? opts->columns
                          : homedepot                     ? homedepot_columns
                                                          : NULL;
    const char *labels = opts->label_map && *opts->label_map ? opts->label_map
                         : homedepot                         ? "homedepot"
                                                             : "grades";
    she_err_t err = SHE_OK;
    if (columns) {
        rd->explicit_map = 1;
        err = parse_columns(rd, columns, errstr, errstr_size);
        if (err == SHE_OK && (!rd->colname[F_QUERY] || !rd->colname[F_ITEM_TITLE]))
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "column mapping '%s' must map query and item_title", columns);
    } else {
        for (int f = 0; f < N_FIELDS; f++)
            rd->colname[f] = xstrndup(field_names[f], strlen(field_names[f]));
    }
    if (err == SHE_OK)
        err = she_label_map_new(labels, &rd->lm, errstr, errstr_size);
    if (err != SHE_OK) {
        she_reader_free(rd);
        return err;
    }
    for (int f = 0; f < N_FIELDS; f++)
        rd->colidx[f] = -1;
    *out = rd;
    return SHE_OK;
}

void she_reader_free(she_reader_t *rd) {
    if (!rd)
        return;
    free(rd->name);
    for (int f = 0; f < N_FIELDS; f++)
        free(rd->colname[f]);
    she_label_map_free(rd->lm);
    free(rd->buf);
    for (int i = 0; i < rd->n_header; i++)
        free(rd->header[i]);
    free(rd->header);
    free(rd->fbuf);
    free(rd->foff);
    free(rd);
}

const she_reader_stats_t *she_reader_stats(const she_reader_t *rd) { return &rd->stats; }

void she_reader_feed(she_reader_t *rd, const char *data, size_t n) {
    /* Consumed bytes are dropped once they are half the buffer: amortised O(1) per byte. */
    if (rd->pos > 0 && rd->pos >= rd->len / 2) {
        memmove(rd->buf, rd->buf + rd->pos, rd->len - rd->pos);
        rd->len -= rd->pos;
        rd->pos = 0;
    }
    if (rd->len + n > rd->cap) {
        size_t cap = rd->cap ? rd->cap : 1 << 16;
        while (cap < rd->len + n)
            cap *= 2;
        char *grown = realloc(rd->buf, cap);
        SHE_CHECK_ALLOC(grown);
        rd->buf = grown;
        rd->cap = cap;
    }
    if (n)
        memcpy(rd->buf + rd->len, data, n);
    rd->len += n;
}

void she_reader_finish(she_reader_t *rd) { rd->finished = 1; }

/* Counts a bad row and keeps its message while there is room. */
__attribute__((format(printf, 2, 3))) static void row_error(she_reader_t *rd, const char *fmt,
                                                            ...) {
    rd->stats.n_bad++;
    if (rd->stats.n_messages >= SHE_READER_MAX_MESSAGES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->stats.messages[rd->stats.n_messages++], SHE_ERRSTR_SIZE, fmt, ap);
    va_end(ap);
}

/* Line and 1-based byte column of buf[at], at >= pos. */
static void position_of(const she_reader_t *rd, size_t at, long long *line, long *col) {
    *line = rd->line;
    size_t line_start = rd->pos;
    for (size_t i = rd->pos; i < at; i++)
        if (rd->buf[i] == '\n') {
            (*line)++;
            line_start = i + 1;
        }
    *col = (long)(at - line_start) + 1;
}

/* Consumes buf[pos..end), advancing the line count. */
static void consume(she_reader_t *rd, size_t end) {
    for (size_t i = rd->pos; i < end; i++)
        rd->line += rd->buf[i] == '\n';
    rd->pos = end;
}

/* Skips to the start of the next physical line (discarding what arrives until a newline when
 * none is buffered yet). */
static void skip_line(she_reader_t *rd) {
    const char *nl = memchr(rd->buf + rd->pos, '\n', rd->len - rd->pos);
    if (nl) {
        consume(rd, (size_t)(nl - rd->buf) + 1);
    } else {
        rd->pos = rd->len;
        rd->discarding = !rd->finished;
    }
}

/* Fails the row when [b, b+n) (inside the buffer) is not UTF-8. */
static int check_utf8(she_reader_t *rd, size_t b, size_t n) {
    size_t ok = she_utf8_valid_prefix(rd->buf + b, n);
    if (ok == n)
        return 1;
    long long line;
    long col;
    position_of(rd, b + ok, &line, &col);
    unsigned char byte = (unsigned char)rd->buf[b + ok];
    row_error(rd, "%s:%lld:%ld: %s (byte 0x%02x)", rd->name, line, col,
              byte ? "invalid UTF-8" : "NUL byte", byte);
    return 0;
}

/* ---- building a sample from field values (shared by both formats) ---- */

typedef struct row {
    const char *val[N_FIELDS]; /* text value, NULL = absent */
    json_t *obj[N_FIELDS];     /* JSON: an attribute object instead of text */
    long long line;
} row_t;

/* "column 5 'relevance'" or "field 'relevance'", for messages. */
static const char *where(const she_reader_t *rd, int f, char *tmp, size_t n) {
    if (rd->csv && rd->colidx[f] >= 0)
        snprintf(tmp, n, "column %d '%s'", rd->colidx[f] + 1, rd->colname[f]);
    else
        snprintf(tmp, n, "field '%s'", rd->colname[f] ? rd->colname[f] : field_names[f]);
    return tmp;
}

static char *dup_or_null(const char *v) { return v ? xstrndup(v, strlen(v)) : NULL; }

/* "key:value;key:value" (CSV, or a string in JSON). */
static int parse_attr_text(she_reader_t *rd, const row_t *row, int f, const char *text,
                           she_kv_t **kvs, int *n) {
    const char *p = text;
    for (;;) {
        const char *e = strchr(p, ';');
        if (!e)
            e = p + strlen(p);
        const char *b = p, *te = e;
        trim(&b, &te);
        if (b < te) {
            const char *colon = memchr(b, ':', (size_t)(te - b));
            const char *kb = b, *ke = colon ? colon : b, *vb = colon ? colon + 1 : te, *ve = te;
            trim(&kb, &ke);
            trim(&vb, &ve);
            if (!colon || kb == ke || vb == ve) {
                char tmp[300];
                row_error(rd, "%s:%lld: %s: attribute '%.*s' is not key:value", rd->name,
                          row->line, where(rd, f, tmp, sizeof(tmp)), (int)(te - b), b);
                return 0;
            }
            char *key = xstrndup(kb, (size_t)(ke - kb)), *val = xstrndup(vb, (size_t)(ve - vb));
            she_kv_append(kvs, n, key, val);
            free(key);
            free(val);
        }
        if (!*e)
            return 1;
        p = e + 1;
    }
}

/* Text of a JSON scalar into tmp (or a pointer into the value); NULL for other types. */
static const char *json_scalar_text(json_t *v, char *tmp, size_t n) {
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(tmp, n, "%lld", (long long)json_integer_value(v));
        return tmp;
    }
    if (json_is_real(v)) {
        snprintf(tmp, n, "%.15g", json_real_value(v));
        return tmp;
    }
    return NULL;
}

static int parse_attr_object(she_reader_t *rd, const row_t *row, int f, json_t *obj,
                             she_kv_t **kvs, int *n) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        char num[64];
        const char *text = json_scalar_text(v, num, sizeof(num));
        if (!text) {
            char tmp[300];
            row_error(rd, "%s:%lld: %s: attribute '%s' is not a string or number", rd->name,
                      row->line, where(rd, f, tmp, sizeof(tmp)), key);
            return 0;
        }
        she_kv_append(kvs, n, key, text);
    }
    return 1;
}

static int read_attrs(she_reader_t *rd, const row_t *row, int f, she_kv_t **kvs, int *n) {
    if (row->obj[f])
        return parse_attr_object(rd, row, f, row->obj[f], kvs, n);
    if (row->val[f])
        return parse_attr_text(rd, row, f, row->val[f], kvs, n);
    return 1;
}

/* Fills *s from a row; on a bad value counts the row, clears *s and returns 0. */
static int build_sample(she_reader_t *rd, row_t *row, she_sample_t *s) {
    char tmp[300];
    for (int f = 0; f < N_FIELDS; f++)
        if (row->val[f] && !*row->val[f])
            row->val[f] = NULL; /* an empty value is an absent one */
    static const int required[] = {F_QUERY, F_ITEM_TITLE};
    for (int i = 0; i < 2; i++)
        if (!row->val[required[i]]) {
            int f = required[i];
            row_error(rd, "%s:%lld: %s is missing or empty (%s)", rd->name, row->line,
                      field_names[f], where(rd, f, tmp, sizeof(tmp)));
            return 0;
        }
    memset(s, 0, sizeof(*s));
    s->query = dup_or_null(row->val[F_QUERY]);
    s->item_id = dup_or_null(row->val[F_ITEM_ID]);
    s->item_title = dup_or_null(row->val[F_ITEM_TITLE]);
    s->item_desc = dup_or_null(row->val[F_ITEM_DESC]);
    s->query_type = dup_or_null(row->val[F_QUERY_TYPE]);
    s->domain = dup_or_null(row->val[F_DOMAIN]);
    s->query_category = dup_or_null(row->val[F_QUERY_CATEGORY]);
    s->item_category = dup_or_null(row->val[F_ITEM_CATEGORY]);
    if (row->val[F_SAMPLE_ID]) {
        s->sample_id = dup_or_null(row->val[F_SAMPLE_ID]);
    } else {
        /* Stable across runs and files: the same (query, item) gets the same id. */
        const char *item = s->item_id ? s->item_id : s->item_title;
        size_t nq = strlen(s->query), ni = strlen(item);
        char *key = malloc(nq + ni + 1);
        SHE_CHECK_ALLOC(key);
        memcpy(key, s->query, nq);
        key[nq] = '\x1f';
        memcpy(key + nq + 1, item, ni);
        char id[20];
        snprintf(id, sizeof(id), "h%016llx", (unsigned long long)she_hash64(key, nq + ni + 1));
        free(key);
        s->sample_id = dup_or_null(id);
    }
    char why[SHE_ERRSTR_SIZE];
    if (row->val[F_GRADE] &&
        she_label_map_apply(rd->lm, row->val[F_GRADE], &s->grade, why, sizeof(why)) != SHE_OK) {
        row_error(rd, "%s:%lld: %s: %s", rd->name, row->line, where(rd, F_GRADE, tmp, sizeof(tmp)),
                  why);
        goto bad;
    }
    if (!read_attrs(rd, row, F_ITEM_ATTRS, &s->item_attrs, &s->n_item_attrs) ||
        !read_attrs(rd, row, F_QUERY_ATTRS, &s->query_attrs, &s->n_query_attrs) ||
        !read_attrs(rd, row, F_ITEM_GT_ATTRS, &s->item_gt_attrs, &s->n_item_gt_attrs))
        goto bad;
    if (row->val[F_CAT_MATCH] && she_cat_match_parse(row->val[F_CAT_MATCH], &s->cat_match)) {
        row_error(rd, "%s:%lld: %s: '%s' is not exact|partial|none", rd->name, row->line,
                  where(rd, F_CAT_MATCH, tmp, sizeof(tmp)), row->val[F_CAT_MATCH]);
        goto bad;
    }
    if (row->val[F_ATTR_MATCH] && she_attr_match_parse(row->val[F_ATTR_MATCH], &s->attr_match)) {
        row_error(rd, "%s:%lld: %s: '%s' is not match|partial|conflict|none", rd->name,
                  row->line, where(rd, F_ATTR_MATCH, tmp, sizeof(tmp)), row->val[F_ATTR_MATCH]);
        goto bad;
    }
    for (int f = 0; f < N_FIELDS; f++)
        if (is_step_field(f) && (row->val[f] || row->obj[f]))
            s->has_steps = 1;
    return 1;
bad:
    she_sample_clear(s);
    return 0;
}

/* ---- JSON Lines ---- */

enum { STEP_NEED_MORE, STEP_SAMPLE, STEP_SKIPPED };

static int jsonl_step(she_reader_t *rd, she_sample_t *s) {
    size_t start = rd->pos, avail = rd->len - rd->pos;
    const char *nl = memchr(rd->buf + start, '\n', avail);
    if (!nl && !rd->finished && avail <= SHE_READER_MAX_RECORD)
        return STEP_NEED_MORE;
    size_t end = nl ? (size_t)(nl - rd->buf) : rd->len;
    row_t row = {.line = rd->line};
    if (end - start > SHE_READER_MAX_RECORD) {
        rd->stats.n_rows++;
        row_error(rd, "%s:%lld:1: line longer than %d bytes", rd->name, row.line,
                  SHE_READER_MAX_RECORD);
        skip_line(rd);
        return STEP_SKIPPED;
    }
    size_t n = end - start;
    if (n && rd->buf[start + n - 1] == '\r')
        n--;
    size_t k = 0;
    while (k < n && (rd->buf[start + k] == ' ' || rd->buf[start + k] == '\t'))
        k++;
    int result = STEP_SKIPPED;
    json_t *root = NULL;
    if (k == n)
        goto done; /* blank line */
    rd->stats.n_rows++;
    if (!check_utf8(rd, start, n))
        goto done;
    json_error_t jerr;
    root = json_loadb(rd->buf + start, n, 0, &jerr);
    if (!root) {
        row_error(rd, "%s:%lld:%d: invalid JSON: %s", rd->name, row.line, jerr.position,
                  jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        row_error(rd, "%s:%lld:%zu: not a JSON object", rd->name, row.line, k + 1);
        goto done;
    }
    char num[N_FIELDS][64];
    for (int f = 0; f < N_FIELDS; f++) {
        json_t *v = rd->colname[f] ? json_object_get(root, rd->colname[f]) : NULL;
        if (!v || json_is_null(v))
            continue;
        if (is_attrs_field(f) && json_is_object(v)) {
            row.obj[f] = v;
            continue;
        }
        row.val[f] = json_scalar_text(v, num[f], sizeof(num[f]));
        if (!row.val[f]) {
            row_error(rd, "%s:%lld: field '%s': expected a string%s", rd->name, row.line,
                      rd->colname[f], is_attrs_field(f) ? " or an object" : " or a number");
            goto done;
        }
    }
    if (build_sample(rd, &row, s))
        result = STEP_SAMPLE;
done:
    json_decref(root);
    consume(rd, nl ? end + 1 : end);
    return result;
}

/* ---- CSV ---- */

static void field_char(she_reader_t *rd, char c) {
    if (rd->flen + 1 >= rd->fcap) {
        rd->fcap = rd->fcap ? rd->fcap * 2 : 4096;
        rd->fbuf = realloc(rd->fbuf, rd->fcap);
        SHE_CHECK_ALLOC(rd->fbuf);
    }
    rd->fbuf[rd->flen++] = c;
}

static void field_start(she_reader_t *rd) {
    if (rd->nf == rd->foffcap) {
        rd->foffcap = rd->foffcap ? rd->foffcap * 2 : 32;
        rd->foff = realloc(rd->foff, (size_t)rd->foffcap * sizeof(*rd->foff));
        SHE_CHECK_ALLOC(rd->foff);
    }
    rd->foff[rd->nf++] = rd->flen;
}

static const char *field_text(const she_reader_t *rd, int i) { return rd->fbuf + rd->foff[i]; }

enum { PARSE_NEED_MORE, PARSE_OK, PARSE_ERROR };

/* Parses one record at buf[pos] into the field buffer.  PARSE_OK sets *rec_end past its
 * terminator; PARSE_ERROR sets *err_at (a byte in the buffer) and a reason in why. */
static int csv_parse(she_reader_t *rd, size_t *rec_end, size_t *err_at, char *why, size_t nwhy) {
    const char *buf = rd->buf;
    size_t i = rd->pos, end = rd->len, quote_at = 0;
    enum { FIELD_START, UNQUOTED, QUOTED } st = FIELD_START;
    rd->flen = 0;
    rd->nf = 0;
    field_start(rd);
    for (;;) {
        if (i == end) {
            if (!rd->finished)
                return PARSE_NEED_MORE;
            if (st == QUOTED) {
                *err_at = quote_at;
                snprintf(why, nwhy, "unterminated quoted field");
                return PARSE_ERROR;
            }
            break;
        }
        char c = buf[i];
        if (st == QUOTED) {
            if (c != '"') {
                field_char(rd, c);
                i++;
                continue;
            }
            if (i + 1 == end && !rd->finished)
                return PARSE_NEED_MORE;
            char d = i + 1 < end ? buf[i + 1] : '\n';
            if (d == '"') {
                field_char(rd, '"');
                i += 2;
                continue;
            }
            if (d == '\r' && i + 2 == end && !rd->finished)
                return PARSE_NEED_MORE;
            if (d == ',' || d == '\n' || (d == '\r' && (i + 2 == end || buf[i + 2] == '\n'))) {
                st = UNQUOTED; /* the delimiter is handled below */
                i++;
                continue;
            }
            long long ql;
            long qc;
            position_of(rd, quote_at, &ql, &qc);
            *err_at = i + 1;
            snprintf(why, nwhy, "text after the closing quote of the field opened at %lld:%ld "
                     "(unterminated or unescaped quote?)", ql, qc);
            return PARSE_ERROR;
        }
        if (st == FIELD_START && c == '"') {
            st = QUOTED;
            quote_at = i++;
            continue;
        }
        st = UNQUOTED;
        if (c == ',') {
            field_char(rd, '\0');
            field_start(rd);
            st = FIELD_START;
            i++;
            continue;
        }
        if (c == '\n') {
            i++;
            break;
        }
        if (c == '\r') {
            if (i + 1 == end && !rd->finished)
                return PARSE_NEED_MORE;
            if (i + 1 == end || buf[i + 1] == '\n') {
                i += i + 1 == end ? 1 : 2;
                break;
            }
        }
        field_char(rd, c);
        i++;
    }
    field_char(rd, '\0');
    *rec_end = i;
    return PARSE_OK;
}

static she_err_t set_fatal(she_reader_t *rd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static she_err_t set_fatal(she_reader_t *rd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->fatal_msg, sizeof(rd->fatal_msg), fmt, ap);
    va_end(ap);
    rd->fatal = SHE_ERR_FORMAT;
    return rd->fatal;
}

static void csv_read_header(she_reader_t *rd, long long line) {
    rd->header = calloc((size_t)rd->nf, sizeof(*rd->header));
    SHE_CHECK_ALLOC(rd->header);
    rd->n_header = rd->nf;
    for (int i = 0; i < rd->nf; i++)
        rd->header[i] = dup_or_null(field_text(rd, i));
    for (int f = 0; f < N_FIELDS; f++) {
        if (!rd->colname[f])
            continue;
        for (int i = 0; i < rd->n_header && rd->colidx[f] < 0; i++)
            if (strcmp(rd->header[i], rd->colname[f]) == 0)
                rd->colidx[f] = i;
        if (rd->colidx[f] >= 0 || !(rd->explicit_map || f == F_QUERY || f == F_ITEM_TITLE))
            continue;
        char have[256] = "";
        for (int i = 0; i < rd->n_header && strlen(have) < sizeof(have) - 40; i++)
            snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s'%s'", i ? ", " : "",
                     rd->header[i]);
        set_fatal(rd, "%s:%lld: missing column '%s' (for %s); the header has %s", rd->name, line,
                  rd->colname[f], field_names[f], have);
        return;
    }
}

static int csv_step(she_reader_t *rd, she_sample_t *s) {
    size_t rec_end = 0, err_at = 0;
    char why[256];
    int r = csv_parse(rd, &rec_end, &err_at, why, sizeof(why));
    if (r == PARSE_NEED_MORE && rd->len - rd->pos <= SHE_READER_MAX_RECORD)
        return STEP_NEED_MORE;
    long long line = rd->line;
    if (r == PARSE_NEED_MORE || (r == PARSE_OK && rec_end - rd->pos > SHE_READER_MAX_RECORD)) {
        rd->stats.n_rows++;
        row_error(rd, "%s:%lld:1: record longer than %d bytes (unterminated quote?)", rd->name,
                  line, SHE_READER_MAX_RECORD);
        skip_line(rd);
        return STEP_SKIPPED;
    }
    if (r == PARSE_ERROR) {
        long long el;
        long ec;
        position_of(rd, err_at, &el, &ec);
        if (!rd->n_header) {
            set_fatal(rd, "%s:%lld:%ld: bad header: %s", rd->name, el, ec, why);
            return STEP_SKIPPED;
        }
        rd->stats.n_rows++;
        row_error(rd, "%s:%lld:%ld: %s", rd->name, el, ec, why);
        skip_line(rd); /* resume at the next physical line: a stray quote costs one row */
        return STEP_SKIPPED;
    }
    size_t start = rd->pos, n = rec_end - start;
    int blank = rd->nf == 1 && (n == 0 || rd->buf[start] == '\n' || rd->buf[start] == '\r');
    int result = STEP_SKIPPED;
    if (blank)
        goto done;
    if (!rd->n_header) {
        size_t ok = she_utf8_valid_prefix(rd->buf + start, n);
        if (ok != n) {
            long long el;
            long ec;
            position_of(rd, start + ok, &el, &ec);
            set_fatal(rd, "%s:%lld:%ld: bad header: invalid UTF-8", rd->name, el, ec);
        } else {
            csv_read_header(rd, line);
        }
        goto done;
    }
    rd->stats.n_rows++;
    if (!check_utf8(rd, start, n))
        goto done;
    if (rd->nf != rd->n_header) {
        row_error(rd, "%s:%lld: expected %d fields as in the header, got %d", rd->name, line,
                  rd->n_header, rd->nf);
        goto done;
    }
    row_t row = {.line = line};
    for (int f = 0; f < N_FIELDS; f++)
        if (rd->colidx[f] >= 0)
            row.val[f] = field_text(rd, rd->colidx[f]);
    if (build_sample(rd, &row, s))
        result = STEP_SAMPLE;
done:
    consume(rd, rec_end);
    return result;
}

she_err_t she_reader_next(she_reader_t *rd, she_sample_t *s, int *got, char *errstr,
                          size_t errstr_size) {
    *got = 0;
    for (;;) {
        if (rd->fatal)
            return she_errf(rd->fatal, errstr, errstr_size, "%s", rd->fatal_msg);
        if (!rd->started) {
            if (rd->len - rd->pos < 3 && !rd->finished)
                return SHE_OK;
            if (rd->len - rd->pos >= 3 && memcmp(rd->buf + rd->pos, "\xef\xbb\xbf", 3) == 0)
                rd->pos += 3;
            rd->started = 1;
        }
        if (rd->discarding) {
            const char *nl = memchr(rd->buf + rd->pos, '\n', rd->len - rd->pos);
            if (!nl && !rd->finished) {
                rd->pos = rd->len;
                return SHE_OK;
            }
            rd->discarding = 0;
            consume(rd, nl ? (size_t)(nl - rd->buf) + 1 : rd->len);
        }
        if (rd->pos == rd->len)
            return SHE_OK;
        int r = rd->csv ? csv_step(rd, s) : jsonl_step(rd, s);
        if (r == STEP_NEED_MORE)
            return SHE_OK;
        if (r == STEP_SAMPLE) {
            rd->stats.n_ok++;
            *got = 1;
            return SHE_OK;
        }
    }
}

she_err_t she_reader_read_file(const char *path, const she_reader_opts_t *opts, she_sample_fn fn,
                               void *opaque, she_reader_stats_t *stats, char *errstr,
                               size_t errstr_size) {
    if (stats)
        memset(stats, 0, sizeof(*stats));
    she_reader_opts_t o = *opts;
    SHE_TRY(she_reader_resolve_format(opts->format, path, &o.format, errstr, errstr_size));
    int use_stdin = strcmp(path, "-") == 0;
    FILE *f = use_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "cannot open '%s': %s", path, strerror(errno));
    she_reader_t *rd = NULL;
    she_err_t err = she_reader_new(use_stdin ? "<stdin>" : path, &o, &rd, errstr, errstr_size);
    char *block = malloc(1 << 16);
    SHE_CHECK_ALLOC(block);
    while (err == SHE_OK) {
        size_t n = fread(block, 1, 1 << 16, f);
        she_reader_feed(rd, block, n);
        if (n < (1 << 16)) {
            if (ferror(f)) {
                err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot read '%s': %s", path,
                               strerror(errno));
                break;
            }
            she_reader_finish(rd);
        }
        for (;;) {
            she_sample_t s = {0};
            int got = 0;
            err = she_reader_next(rd, &s, &got, errstr, errstr_size);
            if (err != SHE_OK || !got)
                break;
            err = fn(&s, opaque, errstr, errstr_size);
            she_sample_clear(&s);
            if (err != SHE_OK)
                break;
        }
        if (n < (1 << 16))
            break;
    }
    free(block);
    if (stats && rd)
        *stats = rd->stats;
    she_reader_free(rd);
    if (!use_stdin)
        fclose(f);
    return err;
}

/* ---- writing ---- */

static int set_str(json_t *o, const char *key, const char *v) {
    if (!v)
        return 1;
    json_t *js = json_string(v); /* NULL when v is not UTF-8 */
    return js && json_object_set_new(o, key, js) == 0;
}

static int set_attrs(json_t *o, const char *key, const she_kv_t *kvs, int n, int always) {
    if (n == 0 && !always)
        return 1;
    json_t *a = json_object();
    SHE_CHECK_ALLOC(a);
    json_object_set_new(o, key, a);
    for (int i = 0; i < n; i++)
        if (!set_str(a, kvs[i].key, kvs[i].value ? kvs[i].value : ""))
            return 0;
    return 1;
}

she_err_t she_sample_write_jsonl(FILE *f, const she_sample_t *s, char *errstr,
                                 size_t errstr_size) {
    json_t *o = json_object();
    SHE_CHECK_ALLOC(o);
    int ok = set_str(o, field_names[F_SAMPLE_ID], s->sample_id) &&
             set_str(o, field_names[F_QUERY], s->query) &&
             set_str(o, field_names[F_ITEM_ID], s->item_id) &&
             set_str(o, field_names[F_ITEM_TITLE], s->item_title) &&
             set_str(o, field_names[F_ITEM_DESC], s->item_desc) &&
             set_attrs(o, field_names[F_ITEM_ATTRS], s->item_attrs, s->n_item_attrs, 0) &&
             set_str(o, field_names[F_QUERY_TYPE], s->query_type) &&
             set_str(o, field_names[F_DOMAIN], s->domain) &&
             set_str(o, field_names[F_GRADE],
                     s->grade != SHE_GRADE_UNKNOWN ? she_grade_name(s->grade) : NULL);
    if (ok && s->has_steps)
        ok = set_str(o, field_names[F_QUERY_CATEGORY], s->query_category) &&
             set_attrs(o, field_names[F_QUERY_ATTRS], s->query_attrs, s->n_query_attrs, 1) &&
             set_str(o, field_names[F_ITEM_CATEGORY], s->item_category) &&
             set_attrs(o, field_names[F_ITEM_GT_ATTRS], s->item_gt_attrs, s->n_item_gt_attrs,
                       1) &&
             set_str(o, field_names[F_CAT_MATCH],
                     s->cat_match ? she_cat_match_name(s->cat_match) : NULL) &&
             set_str(o, field_names[F_ATTR_MATCH],
                     s->attr_match ? she_attr_match_name(s->attr_match) : NULL);
    char *text = ok ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!ok)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "sample '%s': a string is not valid UTF-8",
                        s->sample_id ? s->sample_id : "(no id)");
    SHE_CHECK_ALLOC(text);
    int werr = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    free(text);
    if (werr)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "write failed: %s", strerror(errno));
    return SHE_OK;
}
