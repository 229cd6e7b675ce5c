/* lexicon.c -- phrase sets (open-addressing hash of normalised strings) and the head-noun /
 * attribute reader for steps 1-2 of teacher chains.
 *
 * The reader in four passes over the words of a text:
 *   1. split into words and phrases: a phrase ends at ',' ';' ':' '|', a free-standing dash and
 *      before "in" / "with" / "without" / "for" (which also say what the phrase is about);
 *      text in parentheses and model numbers ("#SC-141") are dropped;
 *   2. mark brands and materials (longest lexicon match, brand before material on a tie),
 *      colours, sizes (number + unit, "2x4", "18v", size words) and stop words;
 *   3. the category is the last plain word of the first phrase, with the plain word right
 *      before it ("running shoes", "trim kit") unless that cuts a hyphen compound ("pop-up
 *      greenhouse" -> "greenhouse"); failing that the last plain word anywhere, then the first
 *      phrase's last non-stop word;
 *   4. the other plain words become type / feature / use / detail attributes.
 * Colour, size and unit words are small built-in lists (English, Home Depot style units). */
#include "lexicon.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORD 48    /* bytes incl. NUL of one normalised word; longer words are cut */
#define MAX_WORDS 96   /* words read from one text; the rest is ignored */
#define MAX_NGRAM 6    /* longest lexicon phrase tried, in words */

struct she_lexicon {
    char **slots; /* open addressing, NULL = empty */
    size_t cap;   /* power of two */
    int n;
};

/* ---- words ---- */

static int is_alnum(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
}

/* Bytes that end a word.  '.', '/', '\'', '&', '%', '#' stay inside words ("3/4", "o'neil"). */
static int is_sep(unsigned char c) {
    return c <= 0x20 || c == 0x7f || strchr("-,;:|()[]{}\"!?*=+<>", c) != NULL;
}

/* Lowercases b[0..n) with outer non-alphanumeric bytes stripped into out, dropping the
 * thousands separators of numbers ("1,000" -> "1000"); returns the length. */
static int norm_word(const char *b, int n, char out[MAX_WORD]) {
    int s = 0, e = n;
    while (s < e && !is_alnum((unsigned char)b[s]))
        s++;
    while (e > s && !is_alnum((unsigned char)b[e - 1]))
        e--;
    int len = 0, i = s;
    for (; i < e && len < MAX_WORD - 1; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c != ',')
            out[len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    if (i < e && ((unsigned char)b[i] & 0xc0) == 0x80) { /* cut before a split character */
        while (len > 0 && ((unsigned char)out[len - 1] & 0xc0) == 0x80)
            len--;
        len = len > 0 ? len - 1 : 0;
    }
    out[len] = '\0';
    return len;
}

static int is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

/* Whether p (inside text starting at s) ends a word: a separator, except a comma between
 * digits. */
static int ends_word(const unsigned char *s, const unsigned char *p) {
    if (*p == ',' && p > s && is_digit(p[-1]) && is_digit(p[1]))
        return 0;
    return is_sep(*p);
}

/* ---- the phrase set ---- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t find_slot(char *const *slots, size_t cap, const char *s) {
    size_t i = (size_t)fnv1a(s) & (cap - 1);
    while (slots[i] && strcmp(slots[i], s) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

she_lexicon_t *she_lexicon_new(void) {
    she_lexicon_t *lex = calloc(1, sizeof(*lex));
    SHE_CHECK_ALLOC(lex);
    lex->cap = 64;
    lex->slots = calloc(lex->cap, sizeof(char *));
    SHE_CHECK_ALLOC(lex->slots);
    return lex;
}

void she_lexicon_free(she_lexicon_t *lex) {
    if (!lex)
        return;
    for (size_t i = 0; i < lex->cap; i++)
        free(lex->slots[i]);
    free(lex->slots);
    free(lex);
}

/* Normal form of a phrase: its words (split as in text) joined by one space. */
static void norm_phrase(const char *phrase, char *out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
    const unsigned char *s = (const unsigned char *)phrase;
    for (const unsigned char *p = s; *p;) {
        while (*p && ends_word(s, p))
            p++;
        const char *b = (const char *)p;
        while (*p && !ends_word(s, p))
            p++;
        char w[MAX_WORD];
        int wl = norm_word(b, (int)((const char *)p - b), w);
        if (wl == 0)
            continue;
        if (n + (n > 0) + (size_t)wl + 1 > size)
            break;
        if (n > 0)
            out[n++] = ' ';
        memcpy(out + n, w, (size_t)wl + 1);
        n += (size_t)wl;
    }
}

static void lexicon_put(she_lexicon_t *lex, const char *norm) {
    if ((size_t)(lex->n + 1) * 2 > lex->cap) {
        size_t cap = lex->cap * 2;
        char **slots = calloc(cap, sizeof(char *));
        SHE_CHECK_ALLOC(slots);
        for (size_t i = 0; i < lex->cap; i++)
            if (lex->slots[i])
                slots[find_slot(slots, cap, lex->slots[i])] = lex->slots[i];
        free(lex->slots);
        lex->slots = slots;
        lex->cap = cap;
    }
    size_t i = find_slot(lex->slots, lex->cap, norm);
    if (lex->slots[i])
        return;
    lex->slots[i] = strdup(norm);
    SHE_CHECK_ALLOC(lex->slots[i]);
    lex->n++;
}

void she_lexicon_add(she_lexicon_t *lex, const char *phrase) {
    char norm[256];
    norm_phrase(phrase, norm, sizeof(norm));
    if (norm[0])
        lexicon_put(lex, norm);
}

int she_lexicon_size(const she_lexicon_t *lex) {
    return lex->n;
}

static int contains_norm(const she_lexicon_t *lex, const char *norm) {
    return lex && lex->slots[find_slot(lex->slots, lex->cap, norm)] != NULL;
}

int she_lexicon_contains(const she_lexicon_t *lex, const char *phrase) {
    char norm[256];
    norm_phrase(phrase, norm, sizeof(norm));
    return norm[0] && contains_norm(lex, norm);
}

/* Splits a CSV line in place at commas (the lexicon files are unquoted); returns the count. */
static int split_fields(char *line, char **fields, int max) {
    int n = 0;
    fields[n++] = line;
    for (char *p = line; *p; p++)
        if (*p == ',') {
            *p = '\0';
            if (n == max)
                return max + 1;
            fields[n++] = p + 1;
        }
    return n;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

she_err_t she_lexicon_load(const char *path, int min_count, she_lexicon_t **lex, char *errstr,
                           size_t errstr_size) {
    *lex = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", path, strerror(errno));
    enum { MAX_FIELDS = 16 };
    char *fields[MAX_FIELDS];
    char *line = NULL;
    size_t cap = 0;
    she_err_t err = SHE_OK;
    she_lexicon_t *out = she_lexicon_new();
    int name_col = -1, cnt_col = -1, n_cols = 0;
    long lineno = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        chomp(line);
        int nf = split_fields(line, fields, MAX_FIELDS);
        if (lineno == 1) {
            n_cols = nf;
            for (int i = 0; i < nf && i < MAX_FIELDS; i++) {
                if (strcmp(fields[i], "name") == 0)
                    name_col = i;
                else if (strcmp(fields[i], "cnt_attribute") == 0)
                    cnt_col = i;
            }
            if (name_col < 0 || (min_count > 0 && cnt_col < 0)) {
                err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                               "%s:1: header lacks a '%s' column", path,
                               name_col < 0 ? "name" : "cnt_attribute");
                break;
            }
            continue;
        }
        if (nf == 1 && fields[0][0] == '\0')
            continue; /* blank line */
        if (nf != n_cols) {
            err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                           "%s:%ld: %d fields, the header has %d", path, lineno, nf, n_cols);
            break;
        }
        if (min_count > 0) {
            char *end;
            long cnt = strtol(fields[cnt_col], &end, 10);
            if (end == fields[cnt_col] || *end) {
                err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                               "%s:%ld: cnt_attribute '%s' is not an integer", path, lineno,
                               fields[cnt_col]);
                break;
            }
            if (cnt < min_count)
                continue;
        }
        she_lexicon_add(out, fields[name_col]);
    }
    if (err == SHE_OK && ferror(f))
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: read error", path);
    if (err == SHE_OK && lineno == 0)
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: empty file", path);
    free(line);
    fclose(f);
    if (err != SHE_OK) {
        she_lexicon_free(out);
        return err;
    }
    *lex = out;
    return SHE_OK;
}

/* ---- the reader ---- */

static const char *const color_words[] = {
    "black",  "white",  "red",   "blue",     "green", "yellow",  "orange",   "purple",
    "pink",   "brown",  "gray",  "grey",     "beige", "ivory",   "tan",      "navy",
    "teal",   "cream",  "almond", "bisque",  "biscuit", "charcoal", "espresso", "khaki",
    "maroon", "turquoise", "aqua", "burgundy", "lavender", "olive", "taupe", NULL};
static const char *const size_words[] = {"small", "medium", "large", "xl",   "xxl", "xs",
                                         "mini",  "jumbo",  "king",  "queen", "twin", NULL};
static const char *const unit_words[] = {
    "in",  "inch", "inches", "ft",  "foot", "feet",  "yd",     "yard", "yards", "mm",
    "cm",  "m",    "gal",    "gallon", "gallons", "qt", "quart", "pt",  "oz",   "lb",
    "lbs", "pound", "pounds", "g",  "kg",   "l",     "ml",     "w",    "watt",  "watts",
    "v",   "volt", "volts",  "amp", "amps", "btu",   "gauge",  "ga",   "pack",  "pk",
    "pc",  "pcs",  "piece",  "pieces", "count", "ct", "sq",    "cu",   "psi",   "gpm",
    "hp",  "lumen", "lumens", "tpi", "sheets", "x",  NULL};
static const char *const stop_words[] = {"a",  "an",   "the", "of", "and", "or",  "to", "on",
                                         "at", "by",   "from", "as", "is",  "are", "per",
                                         "&",  "into", "x",
                                         "discontinued", /* Home Depot's "-DISCONTINUED" */
                                         NULL};
/* Lexicon materials too vague to be an attribute (and "water", as in "water heater"). */
static const char *const vague_materials[] = {"mixed", "multi", "multiple", "various",
                                              "specialty", "other", "water", NULL};

static int in_list(const char *const *list, const char *w) {
    for (; *list; list++)
        if (strcmp(*list, w) == 0)
            return 1;
    return 0;
}

typedef enum kind {
    KIND_PLAIN = 0,
    KIND_STOP,
    KIND_BRAND,
    KIND_MATERIAL,
    KIND_COLOR,
    KIND_SIZE,
} kind_t;

/* What a phrase after the first is about, from the word or mark that opened it. */
typedef enum role { ROLE_MAIN = 0, ROLE_FEATURE, ROLE_USE, ROLE_DETAIL, ROLE__COUNT } role_t;
static const char *const role_keys[ROLE__COUNT] = {"type", "feature", "use", "detail"};

typedef struct word {
    char w[MAX_WORD];
    int phrase; /* index into the phrase roles */
    kind_t kind;
    int group;  /* words marked together (a lexicon phrase, a size) share the first's index */
    int hyphen; /* joined to the word before by a hyphen ("pop-up") */
    int head;   /* part of the category */
} word_t;

typedef struct text {
    word_t words[MAX_WORDS];
    int n;
    role_t roles[MAX_WORDS + 1];
    int n_phrases;
} text_t;

static int is_number(const char *w) {
    int digits = 0;
    for (; *w; w++) {
        if (*w >= '0' && *w <= '9')
            digits++;
        else if (*w != '.' && *w != '/')
            return 0;
    }
    return digits > 0;
}

static int has_digit(const char *w) {
    return strpbrk(w, "0123456789") != NULL;
}

/* Pass 1: words and phrases. */
static void split_text(const char *s, text_t *t) {
    memset(t, 0, sizeof(*t));
    t->n_phrases = 1; /* phrase 0 is the main one */
    int brk = 0, depth = 0, skip_joined = 0;
    role_t next_role = ROLE_DETAIL;
    const unsigned char *start = (const unsigned char *)s, *p = start;
    while (*p && t->n < MAX_WORDS) {
        /* separators, with the phrase breaks among them */
        if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0x93 || p[2] == 0x94)) { /* en/em dash */
            brk = 1;
            p += 3;
            continue;
        }
        if (ends_word(start, p)) {
            if (*p == '(' || *p == '[')
                depth++;
            else if ((*p == ')' || *p == ']') && depth > 0)
                depth--;
            else if (strchr(",;:|", *p))
                brk = 1;
            else if (*p == '-' && (p == start || p[-1] <= 0x20 || p[1] <= 0x20))
                brk = 1; /* a free-standing dash; "strong-tie" joins */
            if (*p != '-')
                skip_joined = 0;
            p++;
            continue;
        }
        const char *b = (const char *)p;
        while (*p && !ends_word(start, p))
            p++;
        if (depth > 0)
            continue;
        if (*b == '#') { /* a model number, with the parts joined to it by hyphens */
            skip_joined = 1;
            continue;
        }
        if (skip_joined && b[-1] == '-')
            continue;
        skip_joined = 0;
        char w[MAX_WORD];
        if (norm_word(b, (int)((const char *)p - b), w) == 0)
            continue;
        int after_number = t->n > 0 && is_number(t->words[t->n - 1].w);
        int w_slash = (const char *)p - b == 2 && (b[0] | 0x20) == 'w' && b[1] == '/';
        role_t role = ROLE__COUNT;
        if (strcmp(w, "with") == 0 || w_slash)
            role = ROLE_FEATURE;
        else if (strcmp(w, "for") == 0)
            role = ROLE_USE;
        else if (strcmp(w, "without") == 0 || (strcmp(w, "in") == 0 && !after_number))
            role = ROLE_DETAIL;
        if (role != ROLE__COUNT) { /* the word opens a phrase and is not kept */
            brk = 1;
            next_role = role;
            continue;
        }
        if (brk) { /* a break before the first word opens no phrase */
            if (t->n > 0)
                t->roles[t->n_phrases++] = next_role;
            next_role = ROLE_DETAIL;
            brk = 0;
        }
        word_t *wd = &t->words[t->n];
        memcpy(wd->w, w, sizeof(w));
        wd->phrase = t->n_phrases - 1;
        wd->hyphen = b > s && b[-1] == '-' && b - 1 > s && b[-2] > 0x20;
        wd->group = t->n++;
    }
}

/* Longest lexicon match starting at word i within its phrase; returns its length in words. */
static int match_at(const text_t *t, int i, const she_lexicon_t *lex) {
    if (!lex)
        return 0;
    char buf[MAX_NGRAM * MAX_WORD];
    int best = 0;
    size_t n = 0;
    for (int k = 0; k < MAX_NGRAM && i + k < t->n; k++) {
        const word_t *w = &t->words[i + k];
        if (w->phrase != t->words[i].phrase || w->kind != KIND_PLAIN)
            break;
        if (k > 0)
            buf[n++] = ' ';
        size_t wl = strlen(w->w);
        memcpy(buf + n, w->w, wl + 1);
        n += wl;
        if (contains_norm(lex, buf))
            best = k + 1;
    }
    return best;
}

/* Pass 2: kinds. */
static void mark_words(text_t *t, const she_lexicon_t *brands, const she_lexicon_t *materials) {
    for (int i = 0; i < t->n;) {
        int nb = match_at(t, i, brands), nm = match_at(t, i, materials);
        if (nm == 1 && nb < 1 && in_list(vague_materials, t->words[i].w))
            nm = 0;
        int len = nb >= nm ? nb : nm;
        if (len == 0) {
            i++;
            continue;
        }
        for (int k = 0; k < len; k++) {
            t->words[i + k].kind = nb >= nm ? KIND_BRAND : KIND_MATERIAL;
            t->words[i + k].group = i;
        }
        i += len;
    }
    for (int i = 0; i < t->n; i++) {
        word_t *w = &t->words[i];
        if (w->kind != KIND_PLAIN)
            continue;
        if (in_list(color_words, w->w))
            w->kind = KIND_COLOR;
        else if (in_list(size_words, w->w))
            w->kind = KIND_SIZE;
        else if (is_number(w->w)) {
            /* a number with the units (and "x <number> <unit>") after it is a size; alone
             * ("1-handle") it says nothing and is dropped like a stop word */
            int j = i + 1;
            while (j < t->n && t->words[j].phrase == w->phrase && t->words[j].kind == KIND_PLAIN &&
                   (in_list(unit_words, t->words[j].w) || is_number(t->words[j].w)))
                j++;
            while (j > i + 1 && strcmp(t->words[j - 1].w, "x") == 0)
                j--;
            if (j == i + 1) {
                w->kind = KIND_STOP;
                continue;
            }
            for (int k = i; k < j; k++) {
                t->words[k].kind = KIND_SIZE;
                t->words[k].group = i;
            }
            i = j - 1;
        } else if (has_digit(w->w))
            w->kind = KIND_SIZE; /* "2x4", "18v" */
        else if (in_list(stop_words, w->w))
            w->kind = KIND_STOP;
    }
}

/* Pass 3: the head.  Marks the category words; returns 0 when the text had no word. */
static int pick_head(text_t *t) {
    int h = -1;
    for (int i = t->n - 1; i >= 0 && h < 0; i--)
        if (t->words[i].phrase == 0 && t->words[i].kind == KIND_PLAIN)
            h = i;
    for (int i = t->n - 1; i >= 0 && h < 0; i--)
        if (t->words[i].kind == KIND_PLAIN)
            h = i;
    for (int i = t->n - 1; i >= 0 && h < 0; i--)
        if (t->words[i].phrase == 0 && t->words[i].kind != KIND_STOP)
            h = i;
    if (h < 0)
        return 0;
    t->words[h].head = 1;
    /* the word before joins unless a hyphen compound would be cut ("pop-up greenhouse") */
    const word_t *w = &t->words[h], *prev = h > 0 ? &t->words[h - 1] : NULL;
    if (prev && w->kind == KIND_PLAIN && prev->kind == KIND_PLAIN && prev->phrase == w->phrase &&
        !w->hyphen && !prev->hyphen)
        t->words[h - 1].head = 1;
    return 1;
}

/* Each group of words of one kind (head words excluded) becomes one value of key. */
static void add_runs(const text_t *t, she_cot_interp_t *out, const char *key, kind_t kind) {
    for (int i = 0; i < t->n;) {
        if (t->words[i].kind != kind || t->words[i].head) {
            i++;
            continue;
        }
        char v[SHE_COT_MAX_TEXT * 2];
        size_t n = 0;
        int j = i;
        for (; j < t->n && t->words[j].group == t->words[i].group && !t->words[j].head; j++) {
            size_t wl = strlen(t->words[j].w);
            if (n + wl + 2 > sizeof(v))
                break;
            if (n > 0)
                v[n++] = ' ';
            memcpy(v + n, t->words[j].w, wl + 1);
            n += wl;
        }
        she_cot_interp_add(out, key, v);
        i = j;
    }
}

/* Plain words of each phrase (head excluded) as one value keyed by the phrase's role. */
static void add_phrases(const text_t *t, she_cot_interp_t *out) {
    for (int ph = 0; ph < t->n_phrases; ph++) {
        char v[SHE_COT_MAX_TEXT * 2];
        size_t n = 0;
        for (int i = 0; i < t->n; i++) {
            const word_t *w = &t->words[i];
            if (w->phrase != ph || w->kind != KIND_PLAIN || w->head)
                continue;
            size_t wl = strlen(w->w);
            if (n + wl + 2 > sizeof(v))
                break;
            if (n > 0)
                v[n++] = ' ';
            memcpy(v + n, w->w, wl + 1);
            n += wl;
        }
        if (n > 0)
            she_cot_interp_add(out, role_keys[t->roles[ph]], v);
    }
}

void she_lexicon_interpret(const she_lexicon_t *brands, const she_lexicon_t *materials,
                           const char *text, she_cot_interp_t *out) {
    memset(out, 0, sizeof(*out));
    text_t text_words, *t = &text_words;
    split_text(text, t);
    mark_words(t, brands, materials);
    if (!pick_head(t)) {
        snprintf(out->category, sizeof(out->category), "unknown");
        return;
    }
    char cat[SHE_COT_MAX_TEXT * 2] = "";
    for (int i = 0; i < t->n; i++)
        if (t->words[i].head) {
            size_t n = strlen(cat);
            snprintf(cat + n, sizeof(cat) - n, "%s%s", n ? " " : "", t->words[i].w);
        }
    if (!she_cot_clean_value(cat, out->category))
        snprintf(out->category, sizeof(out->category), "unknown");
    add_runs(t, out, "brand", KIND_BRAND);
    add_runs(t, out, "material", KIND_MATERIAL);
    add_runs(t, out, "color", KIND_COLOR);
    add_runs(t, out, "size", KIND_SIZE);
    add_phrases(t, out);
}
