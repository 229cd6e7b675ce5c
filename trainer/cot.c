/* cot.c -- formatter, prompt layout and parser of the five-step chain of thought.
 *
 * The parser works line by line.  A line that starts with a digit 1..5 not followed by another
 * digit is a step line for that number (so "4 Attrs - partial" is a malformed step 4, not stray
 * text); every other line is stray and spoils the step above it.  Each step is then judged on
 * its own: present once, in order relative to the other present steps, no stray text in its
 * span, and its line exactly as the grammar says.  See COT_FORMAT.md. */
#include "cot.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const step_names[SHE_COT_N_STEPS] = {"Query", "Item", "Category", "Attributes",
                                                        "Grade"};

const char *she_cot_step_name(int step) {
    return step >= 1 && step <= SHE_COT_N_STEPS ? step_names[step - 1] : "?";
}

/* ---- the alphabet ---- */

/* Bytes a category or attribute value may hold: anything printable but the separators. */
static int is_value_byte(unsigned char c) {
    return c >= 0x20 && c != 0x7f && c != ',' && c != ';' && c != '=';
}

static int is_key_byte(unsigned char c, int first) {
    if (c >= 'a' && c <= 'z')
        return 1;
    return !first && ((c >= '0' && c <= '9') || c == '_');
}

/* Why a value is not writable, or NULL when it is. */
static const char *value_problem(const char *v) {
    size_t n = strlen(v);
    if (n == 0)
        return "is empty";
    if (n >= SHE_COT_MAX_TEXT)
        return "is too long";
    if (v[0] == ' ' || v[n - 1] == ' ')
        return "has a leading or trailing space";
    for (size_t i = 0; i < n; i++)
        if (!is_value_byte((unsigned char)v[i]))
            return "holds a reserved byte (',' ';' '=' or a control byte)";
    return NULL;
}

static int key_valid(const char *k) {
    size_t n = strlen(k);
    if (n == 0 || n >= SHE_COT_MAX_KEY)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_key_byte((unsigned char)k[i], i == 0))
            return 0;
    return 1;
}

/* ---- formatting ---- */

typedef struct writer {
    char *buf;
    size_t size, len;
    int overflow;
} writer_t;

static void wr(writer_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wr(writer_t *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = w->len < w->size ? w->size - w->len : 0;
    int n = vsnprintf(room ? w->buf + w->len : NULL, room, fmt, ap);
    va_end(ap);
    SHE_ASSERT(n >= 0);
    if ((size_t)n >= room)
        w->overflow = 1;
    w->len += (size_t)n;
}

static she_err_t check_interp(const she_cot_interp_t *in, int step, char *errstr,
                              size_t errstr_size) {
    const char *why = value_problem(in->category);
    if (why)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "step %d: category '%s' %s", step,
                        in->category, why);
    if (in->n_attrs < 0 || in->n_attrs > SHE_COT_MAX_ATTRS)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "step %d: %d attributes (max %d)",
                        step, in->n_attrs, SHE_COT_MAX_ATTRS);
    for (int i = 0; i < in->n_attrs; i++) {
        if (!key_valid(in->attrs[i].key))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "step %d: attribute key '%s' is not [a-z][a-z0-9_]{0,22}", step,
                            in->attrs[i].key);
        why = value_problem(in->attrs[i].value);
        if (why)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "step %d: value '%s' of %s %s",
                            step, in->attrs[i].value, in->attrs[i].key, why);
    }
    return SHE_OK;
}

static void write_interp(writer_t *w, int step, const she_cot_interp_t *in) {
    wr(w, "%d. %s: category=%s", step, she_cot_step_name(step), in->category);
    for (int i = 0; i < in->n_attrs; i++)
        wr(w, "%s%s=%s", i == 0 ? "; " : ", ", in->attrs[i].key, in->attrs[i].value);
    wr(w, "\n");
}

she_err_t she_cot_format(const she_cot_t *cot, char *buf, size_t size, size_t *len, char *errstr,
                         size_t errstr_size) {
    SHE_TRY(check_interp(&cot->query, SHE_COT_STEP_QUERY, errstr, errstr_size));
    SHE_TRY(check_interp(&cot->item, SHE_COT_STEP_ITEM, errstr, errstr_size));
    if (cot->cat_match < SHE_CAT_MATCH_EXACT || cot->cat_match > SHE_CAT_MATCH_NONE)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "step 3: category match %d unknown",
                        (int)cot->cat_match);
    if (cot->attr_match < SHE_ATTR_MATCH_MATCH || cot->attr_match > SHE_ATTR_MATCH_NONE)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "step 4: attribute match %d unknown", (int)cot->attr_match);
    if (cot->grade < SHE_GRADE_L1 || cot->grade > SHE_GRADE_L4)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "step 5: grade %d unknown",
                        (int)cot->grade);
    writer_t w = {buf, size, 0, 0};
    write_interp(&w, SHE_COT_STEP_QUERY, &cot->query);
    write_interp(&w, SHE_COT_STEP_ITEM, &cot->item);
    wr(&w, "3. %s: %s\n", she_cot_step_name(3), she_cat_match_name(cot->cat_match));
    wr(&w, "4. %s: %s\n", she_cot_step_name(4), she_attr_match_name(cot->attr_match));
    wr(&w, "5. %s: %s\n", she_cot_step_name(5), she_grade_name(cot->grade));
    if (w.overflow)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "chain needs %zu bytes, buffer has %zu", w.len + 1, size);
    if (len)
        *len = w.len;
    return SHE_OK;
}

/* ---- the prompt ---- */

/* Copies s into out (at most cap bytes + NUL) with every run of separator bytes -- whitespace
 * and control bytes, plus the format's reserved ',' ';' '=' when `value` is set -- turned into
 * one space and the ends trimmed.  Text past cap is cut at the last word boundary, or, for a
 * single long word, before the UTF-8 character that does not fit.  Returns the length. */
static size_t squeeze(const char *s, char *out, size_t cap, int value) {
    size_t n = 0;
    int space = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p == 0x7f || (value && !is_value_byte(*p))) {
            space = n > 0;
            continue;
        }
        if (space) {
            if (n + 1 >= cap)
                break; /* out ends with a whole word */
            out[n++] = ' ';
            space = 0;
        }
        if (n >= cap) { /* inside a word: drop it, or cut it when it is the only one */
            size_t sp = n;
            while (sp > 0 && out[sp - 1] != ' ')
                sp--;
            if (sp > 0)
                n = sp - 1;
            else if ((*p & 0xc0) == 0x80) {
                while (n > 0 && ((unsigned char)out[n - 1] & 0xc0) == 0x80)
                    n--;
                n = n > 0 ? n - 1 : 0;
            }
            break;
        }
        out[n++] = (char)*p;
    }
    out[n] = '\0';
    return n;
}

static void wr_field(writer_t *w, const char *s) {
    char out[SHE_COT_PROMPT_FIELD_MAX + 1];
    squeeze(s, out, SHE_COT_PROMPT_FIELD_MAX, 0);
    wr(w, "%s", out);
}

static int field_empty(const char *s) {
    if (!s)
        return 1;
    for (; *s; s++)
        if ((unsigned char)*s > 0x20 && *s != 0x7f)
            return 0;
    return 1;
}

she_err_t she_cot_format_prompt(const she_sample_t *s, char *buf, size_t size, size_t *len,
                                char *errstr, size_t errstr_size) {
    if (field_empty(s->query))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: empty query",
                        s->sample_id ? s->sample_id : "?");
    if (field_empty(s->item_title))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "sample %s: empty item title",
                        s->sample_id ? s->sample_id : "?");
    writer_t w = {buf, size, 0, 0};
    wr(&w, "query: ");
    wr_field(&w, s->query);
    wr(&w, "\nitem: ");
    wr_field(&w, s->item_title);
    int listed = 0;
    for (int i = 0; i < s->n_item_attrs && listed < SHE_COT_MAX_ATTRS; i++) {
        if (field_empty(s->item_attrs[i].key) || field_empty(s->item_attrs[i].value))
            continue;
        wr(&w, listed == 0 ? "\nattributes: " : ", ");
        wr_field(&w, s->item_attrs[i].key);
        wr(&w, "=");
        wr_field(&w, s->item_attrs[i].value);
        listed++;
    }
    wr(&w, "\nanswer:\n");
    if (w.overflow)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "prompt needs %zu bytes, buffer has %zu", w.len + 1, size);
    if (len)
        *len = w.len;
    return SHE_OK;
}

/* ---- parsing ---- */

typedef struct line {
    int begin, end; /* [begin, end) without the newline */
    int has_nl;
} line_t;

/* Records the first problem of a step; later ones are consequences and would only confuse. */
static void fail(she_cot_parsed_t *p, int step, int at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(she_cot_parsed_t *p, int step, int at, const char *fmt, ...) {
    int i = step - 1;
    if (p->err_at[i] >= 0)
        return;
    p->err_at[i] = at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err[i], sizeof(p->err[i]), fmt, ap);
    va_end(ap);
}

/* A printable excerpt of text[at..end) for error messages. */
static const char *excerpt(const char *text, int at, int end, char out[24]) {
    int n = 0;
    for (int i = at; i < end && n < 20; i++, n++) {
        unsigned char c = (unsigned char)text[i];
        out[n] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (n == 20 && at + n < end) {
        out[n - 3] = out[n - 2] = out[n - 1] = '.';
    }
    out[n] = '\0';
    return out;
}

/* Matches literal lit at text[*at..end); advances *at on success. */
static int take(const char *text, int *at, int end, const char *lit) {
    int n = (int)strlen(lit);
    if (end - *at < n || memcmp(text + *at, lit, (size_t)n) != 0)
        return 0;
    *at += n;
    return 1;
}

/* Reads a value at text[*at..end) up to a byte in stop (or end) into out; 0 and an error on
 * failure. */
static int read_value(she_cot_parsed_t *p, int step, const char *text, int *at, int end,
                      const char *stop, char out[SHE_COT_MAX_TEXT], const char *what) {
    int b = *at, e = b;
    while (e < end && !strchr(stop, text[e]))
        e++;
    char ex[24];
    if (e == b) {
        fail(p, step, b, "expected %s, got '%s'", what, excerpt(text, b, end, ex));
        return 0;
    }
    if (e - b >= SHE_COT_MAX_TEXT) {
        fail(p, step, b, "%s longer than %d bytes", what, SHE_COT_MAX_TEXT - 1);
        return 0;
    }
    if (text[b] == ' ' || text[e - 1] == ' ') {
        fail(p, step, text[b] == ' ' ? b : e - 1, "%s has a leading or trailing space", what);
        return 0;
    }
    for (int i = b; i < e; i++)
        if (!is_value_byte((unsigned char)text[i])) {
            fail(p, step, i, "%s holds reserved byte 0x%02x", what, (unsigned char)text[i]);
            return 0;
        }
    memcpy(out, text + b, (size_t)(e - b));
    out[e - b] = '\0';
    *at = e;
    return 1;
}

static int parse_interp(she_cot_parsed_t *p, int step, const char *text, int at, int end,
                        she_cot_interp_t *in) {
    char ex[24];
    if (!take(text, &at, end, "category=")) {
        fail(p, step, at, "expected 'category=', got '%s'", excerpt(text, at, end, ex));
        return 0;
    }
    if (!read_value(p, step, text, &at, end, ";,=", in->category, "a category"))
        return 0;
    if (at == end)
        return 1;
    if (!take(text, &at, end, "; ")) {
        fail(p, step, at, "expected '; ' or end of line after the category, got '%s'",
             excerpt(text, at, end, ex));
        return 0;
    }
    for (;;) {
        if (in->n_attrs == SHE_COT_MAX_ATTRS) {
            fail(p, step, at, "more than %d attributes", SHE_COT_MAX_ATTRS);
            return 0;
        }
        she_cot_attr_t *a = &in->attrs[in->n_attrs];
        int k = at;
        while (k < end && k - at < SHE_COT_MAX_KEY - 1 &&
               is_key_byte((unsigned char)text[k], k == at))
            k++;
        if (k == at || k == end || text[k] != '=') {
            fail(p, step, at,
                 "expected an attribute key=value (key [a-z][a-z0-9_]{0,22}), got '%s'",
                 excerpt(text, at, end, ex));
            return 0;
        }
        memcpy(a->key, text + at, (size_t)(k - at));
        a->key[k - at] = '\0';
        at = k + 1;
        if (!read_value(p, step, text, &at, end, ";,=", a->value, "an attribute value"))
            return 0;
        in->n_attrs++;
        if (at == end)
            return 1;
        if (!take(text, &at, end, ", ")) {
            fail(p, step, at, "expected ', ' or end of line after an attribute, got '%s'",
                 excerpt(text, at, end, ex));
            return 0;
        }
    }
}

/* Parses the value part of step 3..5 with the sample.h enum parser. */
static int parse_enum(she_cot_parsed_t *p, int step, const char *text, int at, int end) {
    char word[16], ex[24];
    int n = end - at;
    int ok = n > 0 && n < (int)sizeof(word);
    if (ok) {
        memcpy(word, text + at, (size_t)n);
        word[n] = '\0';
        she_cot_t *c = &p->cot;
        if (step == SHE_COT_STEP_CATEGORY)
            ok = she_cat_match_parse(word, &c->cat_match) == SHE_OK;
        else if (step == SHE_COT_STEP_ATTRIBUTES)
            ok = she_attr_match_parse(word, &c->attr_match) == SHE_OK;
        else
            ok = she_grade_parse(word, &c->grade) == SHE_OK;
    }
    if (!ok) {
        static const char *const expect[] = {"exact|partial|none", "match|partial|conflict|none",
                                             "L1|L2|L3|L4"};
        fail(p, step, at, "expected %s, got '%s'", expect[step - SHE_COT_STEP_CATEGORY],
             excerpt(text, at, end, ex));
    }
    return ok;
}

/* Checks one step line against the grammar and fills the step's value. */
static void parse_step_line(she_cot_parsed_t *p, int step, const char *text, const line_t *ln) {
    char prefix[32], ex[24];
    snprintf(prefix, sizeof(prefix), "%d. %s: ", step, she_cot_step_name(step));
    int at = ln->begin;
    if (!take(text, &at, ln->end, prefix)) {
        fail(p, step, at, "expected '%s', got '%s'", prefix, excerpt(text, at, ln->end, ex));
        return;
    }
    int ok;
    if (step == SHE_COT_STEP_QUERY)
        ok = parse_interp(p, step, text, at, ln->end, &p->cot.query);
    else if (step == SHE_COT_STEP_ITEM)
        ok = parse_interp(p, step, text, at, ln->end, &p->cot.item);
    else
        ok = parse_enum(p, step, text, at, ln->end);
    if (ok && !ln->has_nl && step != SHE_COT_STEP_GRADE)
        fail(p, step, ln->end, "line ends without a newline (truncated text?)");
}

static int is_step_line(const char *text, const line_t *ln) {
    int n = ln->end - ln->begin;
    const char *s = text + ln->begin;
    return n > 0 && s[0] >= '1' && s[0] <= '5' && !(n > 1 && s[1] >= '0' && s[1] <= '9');
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

she_err_t she_cot_parse(const char *text, size_t len, she_cot_parsed_t *parsed, char *errstr,
                        size_t errstr_size) {
    she_cot_parsed_t *p = parsed;
    memset(p, 0, sizeof(*p));
    for (int i = 0; i < SHE_COT_N_STEPS; i++) {
        p->span[i].begin = p->span[i].end = -1;
        p->err_at[i] = -1;
    }
    SHE_ASSERT(len < (size_t)INT_MAX); /* byte offsets are ints */
    int n = (int)len;
    /* Trailing whitespace is not part of any line: generation may stop after extra newlines. */
    int content_end = n;
    while (content_end > 0 && is_space(text[content_end - 1]))
        content_end--;

    line_t first[SHE_COT_N_STEPS] = {{0}};
    int count[SHE_COT_N_STEPS] = {0};
    int cur = 0; /* step of the latest step line; 0 before the first */
    for (int b = 0; b < content_end;) {
        line_t ln = {b, b, 0};
        while (ln.end < content_end && text[ln.end] != '\n')
            ln.end++;
        ln.has_nl = ln.end < n && text[ln.end] == '\n';
        if (is_step_line(text, &ln)) {
            int k = text[b] - '0';
            if (cur > 0 && p->span[cur - 1].end < 0)
                p->span[cur - 1].end = b;
            if (count[k - 1]++ == 0) {
                first[k - 1] = ln;
                p->span[k - 1].begin = b;
            } else {
                fail(p, k, b, "step %d appears again (first at byte %d)", k, first[k - 1].begin);
            }
            cur = k;
        } else if (cur == 0) {
            fail(p, SHE_COT_STEP_QUERY, b, "expected '1. %s: ' at the start", step_names[0]);
        } else {
            fail(p, cur, b, "unexpected text after step %d", cur);
        }
        b = ln.end + 1;
    }
    if (cur > 0 && p->span[cur - 1].end < 0)
        p->span[cur - 1].end = n;

    for (int k = 1; k <= SHE_COT_N_STEPS; k++) {
        if (count[k - 1] == 0) {
            int at = 0; /* where it should have been: after the nearest present lower step */
            for (int j = k - 1; j >= 1; j--)
                if (count[j - 1]) {
                    at = p->span[j - 1].end;
                    break;
                }
            fail(p, k, at, "missing: expected a line '%d. %s: ...'", k, she_cot_step_name(k));
            continue;
        }
        for (int j = 1; j <= SHE_COT_N_STEPS; j++) {
            if (j == k || !count[j - 1])
                continue;
            if ((j < k) != (first[j - 1].begin < first[k - 1].begin)) {
                fail(p, k, first[k - 1].begin, "out of order: step %d is %s step %d", k,
                     j < k ? "before" : "after", j);
                break;
            }
        }
        parse_step_line(p, k, text, &first[k - 1]);
    }

    /* Values of failed steps are cleared so a caller cannot use a half-read value. */
    she_cot_t *c = &p->cot;
    int first_bad = 0;
    for (int k = 1; k <= SHE_COT_N_STEPS; k++) {
        p->ok[k - 1] = p->err_at[k - 1] < 0;
        p->n_ok += p->ok[k - 1];
        if (p->ok[k - 1])
            continue;
        if (!first_bad)
            first_bad = k;
        if (k == SHE_COT_STEP_QUERY)
            memset(&c->query, 0, sizeof(c->query));
        else if (k == SHE_COT_STEP_ITEM)
            memset(&c->item, 0, sizeof(c->item));
        else if (k == SHE_COT_STEP_CATEGORY)
            c->cat_match = SHE_CAT_MATCH_UNKNOWN;
        else if (k == SHE_COT_STEP_ATTRIBUTES)
            c->attr_match = SHE_ATTR_MATCH_UNKNOWN;
        else
            c->grade = SHE_GRADE_UNKNOWN;
    }
    if (!first_bad)
        return SHE_OK;
    return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "step %d (%s) at byte %d: %s%s",
                    first_bad, she_cot_step_name(first_bad), p->err_at[first_bad - 1],
                    p->err[first_bad - 1],
                    p->n_ok < SHE_COT_N_STEPS - 1 ? " (and other steps)" : "");
}

void she_cot_token_steps(const she_cot_parsed_t *parsed, const int *tok_end, int n_tok,
                         int *step) {
    for (int t = 0; t < n_tok; t++) {
        int last = tok_end[t] - 1, best = 1, best_begin = -1;
        for (int k = 1; k <= SHE_COT_N_STEPS; k++) {
            int b = parsed->span[k - 1].begin;
            if (b >= 0 && b <= last && b > best_begin) {
                best = k;
                best_begin = b;
            }
        }
        step[t] = best;
    }
}

/* ---- value helpers ---- */

static int is_alnum(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
}

void she_cot_norm_category(const char *s, char *out, size_t size) {
    SHE_ASSERT(size > 0);
    size_t n = 0, word = 0; /* word: start of the current word in out */
    int in_word = 0;
    for (const unsigned char *q = (const unsigned char *)s;; q++) {
        if (*q && is_alnum(*q)) {
            if (!in_word) {
                if (n > 0 && n + 1 < size)
                    out[n++] = ' ';
                word = n;
                in_word = 1;
            }
            if (n + 1 < size)
                out[n++] = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
            continue;
        }
        if (in_word) { /* a word just ended: drop a plural s */
            size_t wl = n - word;
            if (wl >= 4 && out[n - 1] == 's' && out[n - 2] != 's')
                n--;
            in_word = 0;
        }
        if (!*q)
            break;
    }
    out[n] = '\0';
}

int she_cot_clean_value(const char *s, char out[SHE_COT_MAX_TEXT]) {
    return squeeze(s, out, SHE_COT_MAX_TEXT - 1, 1) > 0;
}

int she_cot_interp_add(she_cot_interp_t *in, const char *key, const char *value) {
    char v[SHE_COT_MAX_TEXT];
    if (in->n_attrs >= SHE_COT_MAX_ATTRS || !key_valid(key) || !she_cot_clean_value(value, v))
        return 0;
    for (int i = 0; i < in->n_attrs; i++)
        if (strcmp(in->attrs[i].key, key) == 0 && strcmp(in->attrs[i].value, v) == 0)
            return 0;
    she_cot_attr_t *a = &in->attrs[in->n_attrs++];
    snprintf(a->key, sizeof(a->key), "%s", key);
    memcpy(a->value, v, strlen(v) + 1);
    return 1;
}
