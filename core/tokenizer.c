/* tokenizer.c -- byte-level BPE: training, encoding, decoding, tokenizer.json load/save.
 * See tokenizer.h for the pipeline it reproduces and what it leaves out. */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest vocabulary accepted: ids must stay far from INT32_MAX and the merge keys below. */
#define MAX_VOCAB (1 << 24)
/* Pair key (left << 32 | right) that no real pair has: ids are below MAX_VOCAB. */
#define EMPTY_KEY UINT64_MAX
/* Training only merges pairs seen at least this often; rarer merges only memorize the corpus. */
#define MIN_PAIR_COUNT 2

typedef struct span {
    uint32_t off, len;
} span_t;

/* Open-addressing index of byte strings that live elsewhere (an arena plus a span table):
 * each slot holds an index into the spans, or -1. */
typedef struct strtab {
    int32_t *slot; /* (mask+1) */
    size_t mask, n;
} strtab_t;

struct she_tokenizer_s {
    int n_vocab;
    size_t cap_vocab;
    span_t *tokens;   /* (n_vocab) bytes of each token inside `bytes` */
    uint8_t *special; /* (n_vocab) 1 for special tokens */
    char *bytes;      /* (n_bytes) token byte arena */
    size_t n_bytes, cap_bytes;
    strtab_t ordinary; /* ordinary (non-special) tokens by their bytes */
    int32_t byte_id[256];
    int32_t *special_ids; /* (n_special) */
    int n_special;
    uint8_t special_first[256]; /* 1 where some special token starts with that byte */
    int32_t *merges;            /* (n_merges, 3) left, right, result; the row is the rank */
    int n_merges;
    size_t cap_merges;
    uint64_t *merge_key; /* (merge_mask+1) left << 32 | right, or EMPTY_KEY */
    int32_t *merge_rank; /* (merge_mask+1) */
    size_t merge_mask;
};

/* ---------------------------------------------------------------- hashing, growth */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, finished with a mixer for the low bits */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    return mix64(h ^ n);
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

/* Grows the array *p (elements of `size` bytes, capacity *cap) to hold at least `need`. */
static void grow(void **p, size_t size, size_t need, size_t *cap) {
    if (need <= *cap)
        return;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, ncap * size);
    SHE_CHECK_ALLOC(np);
    *p = np;
    *cap = ncap;
}
#define GROW(arr, need, cap) grow((void **)&(arr), sizeof(*(arr)), (size_t)(need), &(cap))

static void strtab_init(strtab_t *t, size_t cap) {
    size_t n = 64;
    while (n < 2 * cap)
        n *= 2;
    t->slot = malloc(n * sizeof(*t->slot));
    SHE_CHECK_ALLOC(t->slot);
    memset(t->slot, 0xff, n * sizeof(*t->slot));
    t->mask = n - 1;
    t->n = 0;
}

static int32_t strtab_find(const strtab_t *t, const char *arena, const span_t *spans,
                           const void *key, size_t len) {
    for (size_t i = hash_bytes(key, len) & t->mask;; i = (i + 1) & t->mask) {
        int32_t k = t->slot[i];
        if (k < 0)
            return -1;
        if (spans[k].len == len && memcmp(arena + spans[k].off, key, len) == 0)
            return k;
    }
}

static void strtab_place(strtab_t *t, const char *arena, const span_t *spans, int32_t k) {
    size_t i = hash_bytes(arena + spans[k].off, spans[k].len) & t->mask;
    while (t->slot[i] >= 0)
        i = (i + 1) & t->mask;
    t->slot[i] = k;
}

/* Adds index k (whose bytes are not in the table yet), keeping the load below one half. */
static void strtab_add(strtab_t *t, const char *arena, const span_t *spans, int32_t k) {
    if (2 * (t->n + 1) > t->mask + 1) {
        strtab_t big;
        strtab_init(&big, t->mask + 1);
        for (size_t i = 0; i <= t->mask; i++)
            if (t->slot[i] >= 0)
                strtab_place(&big, arena, spans, t->slot[i]);
        big.n = t->n;
        free(t->slot);
        *t = big;
    }
    strtab_place(t, arena, spans, k);
    t->n++;
}

/* ---------------------------------------------------------------- byte-level alphabet */

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68
 * (controls, space, 0x7F-0xA0, soft hyphen) for U+0100 onwards, in byte order. */
static int byte_is_printable(unsigned b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

static unsigned byte_to_cp(unsigned b) {
    if (byte_is_printable(b))
        return b;
    if (b <= 32)
        return 256 + b;
    if (b <= 160)
        return 256 + 33 + (b - 127);
    return 256 + 67; /* 173 */
}

/* Inverse of byte_to_cp; -1 for code points outside the alphabet. */
static int cp_to_byte(unsigned cp) {
    if (cp < 256)
        return byte_is_printable(cp) ? (int)cp : -1;
    unsigned i = cp - 256;
    if (i < 33)
        return (int)i;
    if (i < 67)
        return (int)(127 + i - 33);
    return i == 67 ? 173 : -1;
}

/* Byte-level spelling (UTF-8) of n bytes into out, which holds at least 2*n bytes. */
static size_t bytelevel_encode(const uint8_t *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp = byte_to_cp(s[i]);
        if (cp < 0x80) {
            out[k++] = (char)cp;
        } else {
            out[k++] = (char)(0xC0 | (cp >> 6));
            out[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return k;
}

/* Decodes a byte-level spelling (valid UTF-8, as jansson guarantees) into out (room for
 * strlen(s) bytes).  Returns the byte count, or -1 with *bad_cp set when a character is not
 * in the alphabet. */
static long bytelevel_decode(const char *s_, uint8_t *out, unsigned *bad_cp) {
    const uint8_t *s = (const uint8_t *)s_;
    long k = 0;
    while (*s) {
        unsigned cp;
        if (s[0] < 0x80) {
            cp = *s++;
        } else if ((s[0] & 0xE0) == 0xC0 && s[1]) {
            cp = (unsigned)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
            s += 2;
        } else { /* 3- and 4-byte characters are all outside the alphabet */
            cp = s[0];
            unsigned extra = (s[0] & 0xF0) == 0xE0 ? 2 : 3;
            for (unsigned i = 0; i < extra && s[1]; i++, s++)
                cp = cp << 6 | (s[1] & 0x3F);
            *bad_cp = cp;
            return -1;
        }
        int b = cp_to_byte(cp);
        if (b < 0) {
            *bad_cp = cp;
            return -1;
        }
        out[k++] = (uint8_t)b;
    }
    return k;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n)
            return 0;
        unsigned cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* ---------------------------------------------------------------- vocabulary */

static const uint8_t *token_bytes(const she_tokenizer_t *tok, int32_t id) {
    return (const uint8_t *)tok->bytes + tok->tokens[id].off;
}

/* tokens and special grow together, sharing cap_vocab. */
static void reserve_vocab(she_tokenizer_t *tok, size_t need) {
    if (need <= tok->cap_vocab)
        return;
    size_t cap = tok->cap_vocab;
    GROW(tok->tokens, need, cap);
    GROW(tok->special, need, tok->cap_vocab);
}

static she_tokenizer_t *tokenizer_new(int cap_vocab) {
    she_tokenizer_t *tok = calloc(1, sizeof(*tok));
    SHE_CHECK_ALLOC(tok);
    reserve_vocab(tok, (size_t)cap_vocab);
    strtab_init(&tok->ordinary, (size_t)cap_vocab);
    for (int b = 0; b < 256; b++)
        tok->byte_id[b] = -1;
    return tok;
}

/* Appends the bytes of a token to the arena and returns their span. */
static span_t arena_add(she_tokenizer_t *tok, const void *p, size_t n) {
    SHE_ASSERT(tok->n_bytes + n <= UINT32_MAX);
    GROW(tok->bytes, tok->n_bytes + n, tok->cap_bytes);
    memcpy(tok->bytes + tok->n_bytes, p, n);
    span_t sp = {(uint32_t)tok->n_bytes, (uint32_t)n};
    tok->n_bytes += n;
    return sp;
}

static void mark_special(she_tokenizer_t *tok, int32_t id) {
    tok->special[id] = 1;
    tok->special_ids = realloc(tok->special_ids, (size_t)(tok->n_special + 1) * sizeof(int32_t));
    SHE_CHECK_ALLOC(tok->special_ids);
    tok->special_ids[tok->n_special++] = id;
    tok->special_first[token_bytes(tok, id)[0]] = 1;
}

/* Appends a token with the next id (training builds the vocabulary in id order). */
static int32_t add_token(she_tokenizer_t *tok, const void *p, size_t n, int special) {
    reserve_vocab(tok, (size_t)tok->n_vocab + 1);
    int32_t id = tok->n_vocab++;
    tok->tokens[id] = arena_add(tok, p, n);
    tok->special[id] = 0;
    if (special) {
        mark_special(tok, id);
    } else {
        strtab_add(&tok->ordinary, tok->bytes, tok->tokens, id);
        if (n == 1)
            tok->byte_id[*(const uint8_t *)p] = id;
    }
    return id;
}

static void add_merge(she_tokenizer_t *tok, int32_t left, int32_t right, int32_t result) {
    GROW(tok->merges, 3 * (tok->n_merges + 1), tok->cap_merges);
    int32_t *m = tok->merges + 3 * tok->n_merges++;
    m[0] = left;
    m[1] = right;
    m[2] = result;
}

static int32_t merge_find(const she_tokenizer_t *tok, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    for (size_t i = mix64(key) & tok->merge_mask;; i = (i + 1) & tok->merge_mask) {
        if (tok->merge_key[i] == key)
            return tok->merge_rank[i];
        if (tok->merge_key[i] == EMPTY_KEY)
            return -1;
    }
}

/* Builds the (left, right) -> rank table, once per tokenizer.  Returns the rank of the first
 * pair that repeats an earlier one (the table is unusable then), or -1. */
static int build_merge_table(she_tokenizer_t *tok) {
    size_t n = 64;
    while (n < 2 * (size_t)tok->n_merges)
        n *= 2;
    tok->merge_key = malloc(n * sizeof(*tok->merge_key));
    tok->merge_rank = malloc(n * sizeof(*tok->merge_rank));
    SHE_CHECK_ALLOC(tok->merge_key);
    SHE_CHECK_ALLOC(tok->merge_rank);
    memset(tok->merge_key, 0xff, n * sizeof(*tok->merge_key));
    tok->merge_mask = n - 1;
    for (int r = 0; r < tok->n_merges; r++) {
        uint64_t key = pair_key(tok->merges[3 * r], tok->merges[3 * r + 1]);
        size_t i = mix64(key) & tok->merge_mask;
        while (tok->merge_key[i] != EMPTY_KEY) {
            if (tok->merge_key[i] == key)
                return r;
            i = (i + 1) & tok->merge_mask;
        }
        tok->merge_key[i] = key;
        tok->merge_rank[i] = r;
    }
    return -1;
}

void she_tokenizer_free(she_tokenizer_t *tok) {
    if (!tok)
        return;
    free(tok->tokens);
    free(tok->special);
    free(tok->bytes);
    free(tok->ordinary.slot);
    free(tok->special_ids);
    free(tok->merges);
    free(tok->merge_key);
    free(tok->merge_rank);
    free(tok);
}

int she_tokenizer_vocab_size(const she_tokenizer_t *tok) {
    return tok->n_vocab;
}

int she_tokenizer_is_special(const she_tokenizer_t *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && tok->special[id];
}

int32_t she_tokenizer_token_id(const she_tokenizer_t *tok, const char *text) {
    size_t n = strlen(text);
    for (int i = 0; i < tok->n_special; i++) {
        int32_t id = tok->special_ids[i];
        if (tok->tokens[id].len == n && memcmp(token_bytes(tok, id), text, n) == 0)
            return id;
    }
    return strtab_find(&tok->ordinary, tok->bytes, tok->tokens, text, n);
}

/* ---------------------------------------------------------------- pre-tokenization */

enum { CH_LETTER, CH_DIGIT, CH_SPACE, CH_OTHER };

/* The classes of SHE_TOKENIZER_SPLIT_REGEX; bytes >= 0x80 fall in "other", as every
 * non-ASCII character does in the regex. */
static int char_class(uint8_t c) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return CH_LETTER;
    if (c >= '0' && c <= '9')
        return CH_DIGIT;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D))
        return CH_SPACE;
    return CH_OTHER;
}

/* Length of the regex match at s[i] (s[0..n), i < n), following Oniguruma's leftmost-first
 * alternation and backtracking:
 *   '(?:[sdmt]|ll|ve|re)       contractions
 *   | ?[A-Za-z]+ | ?[0-9]+ | ?[^\x09-\x0D A-Za-z0-9]+     a class run, with one leading space
 *   |[\x09-\x0D ]+(?![^\x09-\x0D ])   a whitespace run that leaves its last character to the
 *                                     next token when a non-space follows (GPT-2's \s+(?!\S))
 *   |[\x09-\x0D ]+                    a lone whitespace character before a non-space. */
static size_t piece_len(const uint8_t *s, size_t n, size_t i) {
    uint8_t c = s[i];
    if (c == '\'' && i + 1 < n) {
        uint8_t c1 = s[i + 1];
        if (c1 == 's' || c1 == 'd' || c1 == 'm' || c1 == 't')
            return 2;
        if (i + 2 < n) {
            uint8_t c2 = s[i + 2];
            if ((c1 == 'l' && c2 == 'l') || (c1 == 'v' && c2 == 'e') || (c1 == 'r' && c2 == 'e'))
                return 3;
        }
    }
    size_t j = i;
    if (c == ' ' && i + 1 < n && char_class(s[i + 1]) != CH_SPACE)
        j = i + 1;
    int k = char_class(s[j]);
    size_t e = j + 1;
    while (e < n && char_class(s[e]) == k)
        e++;
    if (k != CH_SPACE || e == n || e - i == 1)
        return e - i;
    return e - i - 1;
}

/* Called per piece of input: a pre-token (p, n) with special = -1, or a special token id. */
typedef void (*piece_fn)(void *ctx, const uint8_t *p, size_t n, int32_t special);

/* Leftmost, then longest, special token occurring in s[from..n) (HF's added-vocabulary
 * matching).  Returns its position, or n when there is none. */
static size_t find_special(const she_tokenizer_t *tok, const uint8_t *s, size_t n, size_t from,
                           int32_t *id, size_t *len) {
    for (size_t i = from; i < n; i++) {
        if (!tok->special_first[s[i]])
            continue;
        *len = 0;
        for (int k = 0; k < tok->n_special; k++) {
            span_t sp = tok->tokens[tok->special_ids[k]];
            if (sp.len > *len && sp.len <= n - i &&
                memcmp(tok->bytes + sp.off, s + i, sp.len) == 0) {
                *len = sp.len;
                *id = tok->special_ids[k];
            }
        }
        if (*len > 0)
            return i;
    }
    return n;
}

static void split_text(const she_tokenizer_t *tok, const uint8_t *s, size_t n, int split_special,
                       piece_fn fn, void *ctx) {
    size_t pos = 0;
    while (pos < n) {
        int32_t id = -1;
        size_t len = 0;
        size_t at = split_special && tok->n_special ? find_special(tok, s, n, pos, &id, &len) : n;
        while (pos < at) {
            size_t k = piece_len(s, at, pos);
            fn(ctx, s + pos, k, -1);
            pos += k;
        }
        if (at < n) {
            fn(ctx, NULL, 0, id);
            pos = at + len;
        }
    }
}

/* ---------------------------------------------------------------- encoding */

typedef struct sym {
    int32_t id; /* -1 once merged into its left neighbour */
    int32_t prev, next;
} sym_t;

typedef struct mq {
    int32_t rank, pos;
} mq_t;

#define ENC_STACK_SYMS 64

typedef struct enc {
    const she_tokenizer_t *tok;
    int32_t *ids;
    int max_ids, n_ids; /* n_ids counts every id, written or not */
    sym_t *syms;        /* (cap) scratch for one word */
    mq_t *heap;         /* (3*cap) at most n-1 initial pairs plus 2 per merge */
    size_t cap;
    sym_t syms0[ENC_STACK_SYMS];
    mq_t heap0[3 * ENC_STACK_SYMS];
} enc_t;

static void emit(enc_t *e, int32_t id) {
    if (e->n_ids < e->max_ids)
        e->ids[e->n_ids] = id;
    e->n_ids++;
}

static int mq_less(mq_t a, mq_t b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void mq_push(mq_t *h, int *n, mq_t m) {
    int i = (*n)++;
    while (i > 0 && mq_less(m, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static mq_t mq_pop(mq_t *h, int *n) {
    mq_t top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && mq_less(h[c + 1], h[c]))
            c++;
        if (!mq_less(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Pushes the merge of the pair starting at symbol pos, if there is one. */
static void queue_pair(const she_tokenizer_t *tok, const sym_t *syms, int32_t pos, mq_t *h,
                       int *nh) {
    int32_t rank = merge_find(tok, syms[pos].id, syms[syms[pos].next].id);
    if (rank >= 0)
        mq_push(h, nh, (mq_t){rank, pos});
}

/* HF's Word::merge_all without dropout: repeatedly apply the queued merge with the lowest
 * (rank, position); an entry is stale when its pair no longer yields the same token. */
static void bpe_word(enc_t *e, const uint8_t *p, size_t n) {
    const she_tokenizer_t *tok = e->tok;
    if (n == 1) {
        emit(e, tok->byte_id[p[0]]);
        return;
    }
    if (n > e->cap) {
        if (e->syms != e->syms0) {
            free(e->syms);
            free(e->heap);
        }
        e->cap = n;
        e->syms = malloc(n * sizeof(*e->syms));
        e->heap = malloc(3 * n * sizeof(*e->heap));
        SHE_CHECK_ALLOC(e->syms);
        SHE_CHECK_ALLOC(e->heap);
    }
    sym_t *syms = e->syms;
    mq_t *h = e->heap;
    int nh = 0;
    for (size_t i = 0; i < n; i++)
        syms[i] = (sym_t){tok->byte_id[p[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    for (size_t i = 0; i + 1 < n; i++)
        queue_pair(tok, syms, (int32_t)i, h, &nh);
    while (nh > 0) {
        mq_t top = mq_pop(h, &nh);
        sym_t *s = &syms[top.pos];
        if (s->id < 0 || s->next < 0)
            continue;
        int32_t result = tok->merges[3 * top.rank + 2];
        int32_t now = merge_find(tok, s->id, syms[s->next].id);
        if (now < 0 || tok->merges[3 * now + 2] != result)
            continue;
        sym_t *right = &syms[s->next];
        s->id = result;
        right->id = -1;
        s->next = right->next;
        if (s->next >= 0)
            syms[s->next].prev = top.pos;
        if (s->prev >= 0)
            queue_pair(tok, syms, s->prev, h, &nh);
        if (s->next >= 0)
            queue_pair(tok, syms, top.pos, h, &nh);
    }
    for (int32_t i = 0; i >= 0; i = syms[i].next)
        emit(e, syms[i].id);
}

static void encode_piece(void *ctx, const uint8_t *p, size_t n, int32_t special) {
    enc_t *e = ctx;
    if (special >= 0)
        emit(e, special);
    else
        bpe_word(e, p, n);
}

she_err_t she_tokenizer_encode(const she_tokenizer_t *tok, const char *bytes, size_t len,
                               int split_special, int32_t *ids, int max_ids, int *n_ids,
                               char *errstr, size_t errstr_size) {
    *n_ids = 0;
    if (len > INT_MAX)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tokenizer: input of %zu bytes is too long (at most %d)", len, INT_MAX);
    enc_t e;
    e.tok = tok;
    e.ids = ids;
    e.max_ids = max_ids > 0 ? max_ids : 0;
    e.n_ids = 0;
    e.syms = e.syms0;
    e.heap = e.heap0;
    e.cap = ENC_STACK_SYMS;
    split_text(tok, (const uint8_t *)bytes, len, split_special, encode_piece, &e);
    if (e.syms != e.syms0) {
        free(e.syms);
        free(e.heap);
    }
    *n_ids = e.n_ids;
    if (e.n_ids > e.max_ids)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tokenizer: %d ids do not fit in a buffer of %d", e.n_ids, e.max_ids);
    return SHE_OK;
}

/* ---------------------------------------------------------------- decoding */

she_err_t she_tokenizer_decode(const she_tokenizer_t *tok, const int32_t *ids, int n_ids,
                               int skip_special, char *out, size_t cap, size_t *len,
                               char *errstr, size_t errstr_size) {
    size_t k = 0;
    *len = 0;
    for (int i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "tokenizer: ids[%d] = %d is outside the vocabulary (0..%d)", i, id,
                            tok->n_vocab - 1);
        if (skip_special && tok->special[id])
            continue;
        span_t sp = tok->tokens[id];
        if (k < cap)
            memcpy(out + k, tok->bytes + sp.off, sp.len <= cap - k ? sp.len : cap - k);
        k += sp.len;
    }
    *len = k;
    if (k > cap)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tokenizer: %zu decoded bytes do not fit in a buffer of %zu", k, cap);
    return SHE_OK;
}

/* ---------------------------------------------------------------- training */

typedef struct pair {
    uint64_t key;       /* left << 32 | right */
    int64_t count;      /* occurrences in the corpus, weighted by word count */
    int32_t *words;     /* (n_words) words that contain or once contained the pair */
    int n_words;
    size_t cap_words;
    int32_t last_word;  /* the last word appended, so one word is listed once per pass */
    uint32_t stamp;     /* merge step in which the pair was last queued for re-pushing */
    int banned;         /* merging it would spell a special token */
} pair_t;

typedef struct hent {
    int64_t count; /* pair count when pushed; checked against the pair when popped */
    uint64_t key;
} hent_t;

typedef struct trainer {
    she_tokenizer_t *tok;
    /* distinct pre-token words */
    char *wbytes;
    size_t n_wbytes, cap_wbytes;
    span_t *wspan;   /* (n_words) */
    int64_t *wcount; /* (n_words) occurrences in the corpus */
    int n_words;
    size_t cap_wspan, cap_wcount;
    strtab_t wtab;
    int32_t *sym;     /* symbols of every word, at soff[w] .. soff[w] + slen[w] */
    size_t *soff;     /* (n_words) */
    int32_t *slen;    /* (n_words) */
    uint32_t *wstamp; /* (n_words) merge step that last rewrote the word */
    /* adjacent symbol pairs */
    pair_t *pairs;
    int n_pairs;
    size_t cap_pairs;
    int32_t *pslot; /* (pmask+1) index into pairs, or -1 */
    size_t pmask;
    hent_t *heap; /* max-heap by count, then smallest key */
    size_t n_heap, cap_heap;
    int32_t *touched; /* pairs with the new token, whose counts rose in this merge step */
    int n_touched;
    size_t cap_touched;
} trainer_t;

static void count_word(void *ctx, const uint8_t *p, size_t n, int32_t special) {
    trainer_t *t = ctx;
    if (special >= 0)
        return;
    int32_t w = strtab_find(&t->wtab, t->wbytes, t->wspan, p, n);
    if (w < 0) {
        GROW(t->wbytes, t->n_wbytes + n, t->cap_wbytes);
        memcpy(t->wbytes + t->n_wbytes, p, n);
        GROW(t->wspan, t->n_words + 1, t->cap_wspan);
        GROW(t->wcount, t->n_words + 1, t->cap_wcount);
        w = t->n_words++;
        t->wspan[w] = (span_t){(uint32_t)t->n_wbytes, (uint32_t)n};
        t->wcount[w] = 0;
        t->n_wbytes += n;
        strtab_add(&t->wtab, t->wbytes, t->wspan, w);
    }
    t->wcount[w]++;
}

static int32_t pair_find(const trainer_t *t, uint64_t key) {
    for (size_t i = mix64(key) & t->pmask;; i = (i + 1) & t->pmask) {
        int32_t k = t->pslot[i];
        if (k < 0 || t->pairs[k].key == key)
            return k;
    }
}

static void pair_place(trainer_t *t, int32_t k) {
    size_t i = mix64(t->pairs[k].key) & t->pmask;
    while (t->pslot[i] >= 0)
        i = (i + 1) & t->pmask;
    t->pslot[i] = k;
}

/* The pair's index, created with count 0 when new (which may move t->pairs). */
static int32_t pair_get(trainer_t *t, uint64_t key) {
    int32_t k = pair_find(t, key);
    if (k >= 0)
        return k;
    if (2 * (size_t)(t->n_pairs + 1) > t->pmask + 1) {
        size_t n = 2 * (t->pmask + 1);
        free(t->pslot);
        t->pslot = malloc(n * sizeof(*t->pslot));
        SHE_CHECK_ALLOC(t->pslot);
        memset(t->pslot, 0xff, n * sizeof(*t->pslot));
        t->pmask = n - 1;
        for (int32_t i = 0; i < t->n_pairs; i++)
            pair_place(t, i);
    }
    GROW(t->pairs, t->n_pairs + 1, t->cap_pairs);
    k = t->n_pairs++;
    t->pairs[k] = (pair_t){.key = key, .last_word = -1};
    pair_place(t, k);
    return k;
}

static void pair_add_word(pair_t *p, int32_t w) {
    if (p->last_word == w)
        return;
    GROW(p->words, p->n_words + 1, p->cap_words);
    p->words[p->n_words++] = w;
    p->last_word = w;
}

static int hent_before(hent_t a, hent_t b) {
    return a.count > b.count || (a.count == b.count && a.key < b.key);
}

static void heap_sift_down(hent_t *h, size_t n, size_t i) {
    hent_t x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hent_before(h[c + 1], h[c]))
            c++;
        if (!hent_before(h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void heap_push(trainer_t *t, hent_t x) {
    GROW(t->heap, t->n_heap + 1, t->cap_heap);
    size_t i = t->n_heap++;
    while (i > 0 && hent_before(x, t->heap[(i - 1) / 2])) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = x;
}

static hent_t heap_pop(trainer_t *t) {
    hent_t top = t->heap[0];
    t->heap[0] = t->heap[--t->n_heap];
    if (t->n_heap > 0)
        heap_sift_down(t->heap, t->n_heap, 0);
    return top;
}

/* 1 if the byte-level spelling of (s, n) -- the vocabulary key HF looks a merge result up by --
 * is a special token's text.  (The raw bytes cannot be: special-token text is cut out of the
 * corpus before counting.) */
static int spells_special(const she_tokenizer_t *tok, const uint8_t *s, size_t n, char *tmp) {
    size_t m = bytelevel_encode(s, n, tmp);
    for (int i = 0; i < tok->n_special; i++) {
        span_t sp = tok->tokens[tok->special_ids[i]];
        if (sp.len == m && memcmp(tok->bytes + sp.off, tmp, m) == 0)
            return 1;
    }
    return 0;
}

/* Adds the word's adjacent pairs to the counts with weight `sign` * its count; on adding,
 * lists the word under the pairs that involve `fresh` and queues those for re-pushing. */
static void count_pairs(trainer_t *t, int32_t w, int sign, int32_t fresh, uint32_t stamp) {
    const int32_t *s = t->sym + t->soff[w];
    int64_t f = sign * t->wcount[w];
    for (int32_t i = 0; i + 1 < t->slen[w]; i++) {
        int32_t k = pair_get(t, pair_key(s[i], s[i + 1]));
        pair_t *p = &t->pairs[k];
        p->count += f;
        if (sign > 0 && (s[i] == fresh || s[i + 1] == fresh)) {
            pair_add_word(p, w);
            if (p->stamp != stamp) {
                p->stamp = stamp;
                GROW(t->touched, t->n_touched + 1, t->cap_touched);
                t->touched[t->n_touched++] = k;
            }
        }
    }
}

/* Replaces every (left, right) in word w by result, left to right; 1 if anything changed. */
static int merge_word(trainer_t *t, int32_t w, int32_t left, int32_t right, int32_t result) {
    int32_t *s = t->sym + t->soff[w];
    int32_t n = t->slen[w], j = 0;
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == left && s[i + 1] == right) {
            s[j++] = result;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    int changed = j != n;
    t->slen[w] = j;
    return changed;
}

static int word_has_pair(const trainer_t *t, int32_t w, int32_t left, int32_t right) {
    const int32_t *s = t->sym + t->soff[w];
    for (int32_t i = 0; i + 1 < t->slen[w]; i++)
        if (s[i] == left && s[i + 1] == right)
            return 1;
    return 0;
}

static void trainer_free(trainer_t *t) {
    free(t->wbytes);
    free(t->wspan);
    free(t->wcount);
    free(t->wtab.slot);
    free(t->sym);
    free(t->soff);
    free(t->slen);
    free(t->wstamp);
    for (int i = 0; i < t->n_pairs; i++)
        free(t->pairs[i].words);
    free(t->pairs);
    free(t->pslot);
    free(t->heap);
    free(t->touched);
}

/* Learns merges until the vocabulary holds vocab_size ids or no pair is frequent enough. */
static void learn_merges(trainer_t *t, int vocab_size) {
    she_tokenizer_t *tok = t->tok;
    size_t total = 0;
    for (int w = 0; w < t->n_words; w++)
        total += t->wspan[w].len;
    t->sym = malloc((total + 1) * sizeof(*t->sym));
    t->soff = malloc(((size_t)t->n_words + 1) * sizeof(*t->soff));
    t->slen = malloc(((size_t)t->n_words + 1) * sizeof(*t->slen));
    t->wstamp = calloc((size_t)t->n_words + 1, sizeof(*t->wstamp));
    SHE_CHECK_ALLOC(t->sym);
    SHE_CHECK_ALLOC(t->soff);
    SHE_CHECK_ALLOC(t->slen);
    SHE_CHECK_ALLOC(t->wstamp);
    t->pmask = 1023;
    t->pslot = malloc((t->pmask + 1) * sizeof(*t->pslot));
    SHE_CHECK_ALLOC(t->pslot);
    memset(t->pslot, 0xff, (t->pmask + 1) * sizeof(*t->pslot));

    size_t off = 0;
    for (int32_t w = 0; w < t->n_words; w++) {
        const uint8_t *b = (const uint8_t *)t->wbytes + t->wspan[w].off;
        t->soff[w] = off;
        t->slen[w] = (int32_t)t->wspan[w].len;
        for (uint32_t i = 0; i < t->wspan[w].len; i++)
            t->sym[off++] = tok->byte_id[b[i]];
        const int32_t *s = t->sym + t->soff[w];
        for (int32_t i = 0; i + 1 < t->slen[w]; i++) {
            int32_t k = pair_get(t, pair_key(s[i], s[i + 1])); /* before reading t->pairs */
            pair_t *p = &t->pairs[k];
            p->count += t->wcount[w];
            pair_add_word(p, w);
        }
    }
    GROW(t->heap, (size_t)t->n_pairs + 1, t->cap_heap);
    for (int32_t k = 0; k < t->n_pairs; k++)
        t->heap[k] = (hent_t){t->pairs[k].count, t->pairs[k].key};
    t->n_heap = (size_t)t->n_pairs;
    for (size_t i = t->n_heap / 2; i-- > 0;)
        heap_sift_down(t->heap, t->n_heap, i);

    uint8_t *concat = NULL;
    char *tmp = NULL;
    size_t cap_concat = 0, cap_tmp = 0;
    uint32_t stamp = 0;
    while (tok->n_vocab < vocab_size && t->n_heap > 0) {
        hent_t top = heap_pop(t);
        int32_t k = pair_find(t, top.key);
        SHE_ASSERT(k >= 0);
        if (t->pairs[k].banned)
            continue;
        if (t->pairs[k].count != top.count) { /* stale: the count changed since the push */
            if (t->pairs[k].count > 0)
                heap_push(t, (hent_t){t->pairs[k].count, top.key});
            continue;
        }
        if (top.count < MIN_PAIR_COUNT)
            break;
        int32_t left = (int32_t)(top.key >> 32), right = (int32_t)(top.key & 0xffffffffu);
        span_t a = tok->tokens[left], b = tok->tokens[right];
        size_t n = (size_t)a.len + b.len;
        GROW(concat, n, cap_concat);
        GROW(tmp, 2 * n, cap_tmp);
        memcpy(concat, tok->bytes + a.off, a.len);
        memcpy(concat + a.len, tok->bytes + b.off, b.len);
        if (spells_special(tok, concat, n, tmp)) {
            t->pairs[k].banned = 1;
            continue;
        }
        /* Two different splits can spell the same token; like HF's trainer, reuse its id. */
        int32_t result = strtab_find(&tok->ordinary, tok->bytes, tok->tokens, concat, n);
        if (result < 0)
            result = add_token(tok, concat, n, 0);
        add_merge(tok, left, right, result);

        stamp++;
        t->n_touched = 0;
        int32_t *words = t->pairs[k].words;
        int n_list = t->pairs[k].n_words;
        for (int i = 0; i < n_list; i++) {
            int32_t w = words[i];
            if (t->wstamp[w] == stamp || !word_has_pair(t, w, left, right))
                continue;
            t->wstamp[w] = stamp;
            count_pairs(t, w, -1, -1, stamp);
            merge_word(t, w, left, right, result);
            count_pairs(t, w, +1, result, stamp);
        }
        /* (left, right) cannot form again: new adjacencies always involve the result. */
        pair_t *p = &t->pairs[pair_find(t, top.key)];
        SHE_ASSERT(p->count == 0);
        free(p->words);
        p->words = NULL;
        p->n_words = p->cap_words = 0;
        for (int i = 0; i < t->n_touched; i++) {
            pair_t *q = &t->pairs[t->touched[i]];
            if (q->count > 0 && !q->banned)
                heap_push(t, (hent_t){q->count, q->key});
        }
    }
    free(concat);
    free(tmp);
}

she_err_t she_tokenizer_train(const char *const *texts, const size_t *lens, size_t n,
                              int vocab_size, const char *const *special, int n_special,
                              she_tokenizer_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (n_special < 0 || (n_special > 0 && !special))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "tokenizer: bad special list");
    if (vocab_size < n_special + 256 || vocab_size > MAX_VOCAB)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tokenizer: vocab_size %d must be within %d..%d (%d special tokens + "
                        "256 bytes at least)",
                        vocab_size, n_special + 256, MAX_VOCAB, n_special);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens ? lens[i] : strlen(texts[i]);
    if (total > UINT32_MAX)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tokenizer: training corpus of %zu bytes exceeds 4 GiB", total);

    she_tokenizer_t *tok = tokenizer_new(vocab_size);
    for (int i = 0; i < n_special; i++) {
        size_t len = strlen(special[i]);
        if (len == 0 || !utf8_valid((const uint8_t *)special[i], len)) {
            she_tokenizer_free(tok);
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "tokenizer: special token %d is empty or not valid UTF-8", i);
        }
        if (she_tokenizer_token_id(tok, special[i]) >= 0) {
            she_tokenizer_free(tok);
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "tokenizer: special token \"%s\" is listed twice", special[i]);
        }
        /* A one-character special like "a" or "Ġ" would share its vocabulary key with a byte. */
        uint8_t one[4];
        unsigned cp;
        if (len <= 2 && bytelevel_decode(special[i], one, &cp) == 1) {
            she_tokenizer_free(tok);
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "tokenizer: special token \"%s\" is the byte-level spelling of byte "
                            "0x%02X",
                            special[i], one[0]);
        }
        add_token(tok, special[i], len, 1);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        add_token(tok, &c, 1, 0);
    }

    trainer_t t = {.tok = tok};
    strtab_init(&t.wtab, 1 << 16);
    for (size_t i = 0; i < n; i++)
        split_text(tok, (const uint8_t *)texts[i], lens ? lens[i] : strlen(texts[i]), 1,
                   count_word, &t);
    learn_merges(&t, vocab_size);
    trainer_free(&t);
    SHE_ASSERT(build_merge_table(tok) < 0);
    *out = tok;
    return SHE_OK;
}

/* ---------------------------------------------------------------- tokenizer.json */

/* Fails loading with "path: <what>" in errstr. */
static she_err_t bad(char *errstr, size_t errstr_size, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static she_err_t bad(char *errstr, size_t errstr_size, const char *path, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: %s", path, msg);
}

static int is_str(const json_t *obj, const char *key, const char *want) {
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/* Absent or null. */
static int is_unset(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return v == NULL || json_is_null(v);
}

/* Absent, null or false. */
static int is_off(const json_t *obj, const char *key) {
    return is_unset(obj, key) || json_is_false(json_object_get(obj, key));
}

/* Everything around the model must be the pipeline this module implements (tokenizer.h). */
static she_err_t check_pipeline(const json_t *root, const char *path, char *errstr,
                                size_t errstr_size) {
    static const char *const must_be_null[] = {"normalizer", "post_processor", "truncation",
                                               "padding"};
    for (size_t i = 0; i < sizeof(must_be_null) / sizeof(must_be_null[0]); i++)
        if (!is_unset(root, must_be_null[i]))
            return bad(errstr, errstr_size, path, "\"%s\" must be null (not supported)",
                       must_be_null[i]);
    const json_t *pt = json_object_get(root, "pre_tokenizer");
    const json_t *list = json_object_get(pt, "pretokenizers");
    const json_t *split = json_array_get(list, 0), *bl = json_array_get(list, 1);
    if (!is_str(pt, "type", "Sequence") || json_array_size(list) != 2 ||
        !is_str(split, "type", "Split") || !is_str(bl, "type", "ByteLevel"))
        return bad(errstr, errstr_size, path,
                   "pre_tokenizer must be Sequence[Split, ByteLevel] as written by she");
    if (!is_str(json_object_get(split, "pattern"), "Regex", SHE_TOKENIZER_SPLIT_REGEX) ||
        !is_str(split, "behavior", "Isolated") || !json_is_false(json_object_get(split, "invert")))
        return bad(errstr, errstr_size, path,
                   "pre_tokenizer Split must be the isolated, non-inverted regex %s",
                   SHE_TOKENIZER_SPLIT_REGEX);
    if (!json_is_false(json_object_get(bl, "add_prefix_space")) ||
        !json_is_false(json_object_get(bl, "use_regex")))
        return bad(errstr, errstr_size, path,
                   "pre_tokenizer ByteLevel must have add_prefix_space and use_regex false");
    if (!is_str(json_object_get(root, "decoder"), "type", "ByteLevel"))
        return bad(errstr, errstr_size, path, "decoder must be ByteLevel");
    const json_t *model = json_object_get(root, "model");
    if (!is_str(model, "type", "BPE"))
        return bad(errstr, errstr_size, path, "model.type must be \"BPE\"");
    static const char *const model_null[] = {"dropout", "unk_token", "continuing_subword_prefix",
                                             "end_of_word_suffix"};
    for (size_t i = 0; i < sizeof(model_null) / sizeof(model_null[0]); i++)
        if (!is_unset(model, model_null[i]))
            return bad(errstr, errstr_size, path, "model.%s must be null (not supported)",
                       model_null[i]);
    if (!is_off(model, "byte_fallback") || !is_off(model, "ignore_merges"))
        return bad(errstr, errstr_size, path,
                   "model.byte_fallback and model.ignore_merges must be false");
    return SHE_OK;
}

/* Id of a vocabulary key (already range-checked), or -1. */
static int32_t vocab_id(const json_t *vocab, const char *key) {
    const json_t *v = json_object_get(vocab, key);
    return v ? (int32_t)json_integer_value(v) : -1;
}

static she_err_t load_added_tokens(she_tokenizer_t *tok, const json_t *root, const json_t *vocab,
                                   const char *path, char *errstr, size_t errstr_size) {
    const json_t *added = json_object_get(root, "added_tokens");
    if (!is_unset(root, "added_tokens") && !json_is_array(added))
        return bad(errstr, errstr_size, path, "added_tokens must be an array");
    size_t i;
    const json_t *a;
    json_array_foreach(added, i, a) {
        const json_t *id = json_object_get(a, "id");
        const json_t *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content) || json_string_length(content) == 0)
            return bad(errstr, errstr_size, path,
                       "added_tokens[%zu] needs an integer id and a non-empty content", i);
        const char *text = json_string_value(content);
        if (!json_is_true(json_object_get(a, "special")) || !is_off(a, "single_word") ||
            !is_off(a, "lstrip") || !is_off(a, "rstrip") || !is_off(a, "normalized"))
            return bad(errstr, errstr_size, path,
                       "added_tokens[%zu] \"%s\": only special tokens with single_word, lstrip, "
                       "rstrip and normalized false are supported",
                       i, text);
        if (vocab_id(vocab, text) < 0 || vocab_id(vocab, text) != json_integer_value(id))
            return bad(errstr, errstr_size, path,
                       "added_tokens[%zu] \"%s\" has id %lld but model.vocab gives it %d", i,
                       text, (long long)json_integer_value(id), vocab_id(vocab, text));
        int32_t tid = (int32_t)json_integer_value(id);
        if (tok->special[tid])
            return bad(errstr, errstr_size, path, "added_tokens[%zu] \"%s\" is listed twice", i,
                       text);
        tok->tokens[tid] = arena_add(tok, text, json_string_length(content));
        mark_special(tok, tid);
    }
    return SHE_OK;
}

static she_err_t load_vocab(she_tokenizer_t *tok, const json_t *root, const json_t *vocab,
                            const char *path, char *errstr, size_t errstr_size) {
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= tok->n_vocab)
            return bad(errstr, errstr_size, path,
                       "model.vocab[\"%s\"]: id must be an integer in 0..%d (ids are 0..N-1)", key,
                       tok->n_vocab - 1);
    }
    SHE_TRY(load_added_tokens(tok, root, vocab, path, errstr, errstr_size));
    uint8_t *seen = calloc((size_t)tok->n_vocab, 1);
    SHE_CHECK_ALLOC(seen);
    uint8_t *buf = NULL;
    size_t cap_buf = 0;
    she_err_t err = SHE_OK;
    json_object_foreach((json_t *)vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (seen[id]) {
            err = bad(errstr, errstr_size, path, "model.vocab: id %d is used twice (\"%s\")", id,
                      key);
            break;
        }
        seen[id] = 1;
        if (tok->special[id])
            continue;
        GROW(buf, strlen(key) + 1, cap_buf);
        unsigned bad_cp = 0;
        long n = bytelevel_decode(key, buf, &bad_cp);
        if (n <= 0) {
            err = n == 0 ? bad(errstr, errstr_size, path, "model.vocab has an empty token")
                         : bad(errstr, errstr_size, path,
                               "model.vocab[\"%s\"] is not a byte-level token (character "
                               "U+%04X is outside the byte alphabet)",
                               key, bad_cp);
            break;
        }
        tok->tokens[id] = arena_add(tok, buf, (size_t)n);
        if (strtab_find(&tok->ordinary, tok->bytes, tok->tokens, buf, (size_t)n) >= 0) {
            err = bad(errstr, errstr_size, path, "model.vocab[\"%s\"] spells a token twice", key);
            break;
        }
        strtab_add(&tok->ordinary, tok->bytes, tok->tokens, id);
        if (n == 1)
            tok->byte_id[buf[0]] = id;
    }
    free(seen);
    free(buf);
    SHE_TRY(err);
    for (int b = 0; b < 256; b++)
        if (tok->byte_id[b] < 0)
            return bad(errstr, errstr_size, path,
                       "model.vocab has no token for byte 0x%02X (all 256 bytes are required)", b);
    return SHE_OK;
}

static she_err_t load_merges(she_tokenizer_t *tok, const json_t *model, const char *path,
                             char *errstr, size_t errstr_size) {
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges) || json_array_size(merges) > INT_MAX / 3)
        return bad(errstr, errstr_size, path, "model.merges must be an array of pairs");
    size_t i;
    const json_t *m;
    char *buf = NULL, *cat = NULL;
    size_t cap_buf = 0, cap_cat = 0;
    she_err_t err = SHE_OK;
    json_array_foreach(merges, i, m) {
        /* "left right" (all versions) or ["left", "right"] (tokenizers >= 0.20) */
        const char *l = NULL, *r = NULL;
        if (json_is_string(m)) {
            GROW(buf, json_string_length(m) + 1, cap_buf);
            memcpy(buf, json_string_value(m), json_string_length(m) + 1);
            char *sp = strchr(buf, ' ');
            if (sp && !strchr(sp + 1, ' ')) {
                *sp = '\0';
                l = buf;
                r = sp + 1;
            }
        } else if (json_array_size(m) == 2) {
            l = json_string_value(json_array_get(m, 0));
            r = json_string_value(json_array_get(m, 1));
        }
        if (!l || !r) {
            err = bad(errstr, errstr_size, path,
                      "model.merges[%zu] must be \"left right\" or [\"left\", \"right\"]", i);
            break;
        }
        int32_t a = vocab_id(vocab, l), b = vocab_id(vocab, r);
        if (a < 0 || b < 0) {
            err = bad(errstr, errstr_size, path, "model.merges[%zu]: token \"%s\" is not in "
                      "model.vocab", i, a < 0 ? l : r);
            break;
        }
        if (tok->special[a] || tok->special[b]) {
            err = bad(errstr, errstr_size, path, "model.merges[%zu] merges special token \"%s\"",
                      i, tok->special[a] ? l : r);
            break;
        }
        span_t sa = tok->tokens[a], sb = tok->tokens[b];
        GROW(cat, (size_t)sa.len + sb.len, cap_cat);
        memcpy(cat, tok->bytes + sa.off, sa.len);
        memcpy(cat + sa.len, tok->bytes + sb.off, sb.len);
        int32_t c =
            strtab_find(&tok->ordinary, tok->bytes, tok->tokens, cat, (size_t)sa.len + sb.len);
        if (c < 0) {
            err = bad(errstr, errstr_size, path,
                      "model.merges[%zu]: \"%s%s\" is not an ordinary token in model.vocab", i, l,
                      r);
            break;
        }
        add_merge(tok, a, b, c);
    }
    free(buf);
    free(cat);
    SHE_TRY(err);
    int dup = build_merge_table(tok);
    if (dup >= 0)
        return bad(errstr, errstr_size, path, "model.merges[%d] repeats an earlier pair", dup);
    return SHE_OK;
}

she_err_t she_tokenizer_load(const char *path, she_tokenizer_t **out, char *errstr,
                             size_t errstr_size) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: cannot open: %s", path,
                        strerror(errno));
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root)
        return bad(errstr, errstr_size, path, "line %d, column %d: %s", jerr.line, jerr.column,
                   jerr.text);
    she_err_t err;
    const json_t *model = json_object_get(root, "model");
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(root)) {
        err = bad(errstr, errstr_size, path, "not a JSON object");
    } else if ((err = check_pipeline(root, path, errstr, errstr_size)) != SHE_OK) {
    } else if (!json_is_object(vocab) || json_object_size(vocab) < 256 ||
               json_object_size(vocab) > MAX_VOCAB) {
        err = bad(errstr, errstr_size, path,
                  "model.vocab must be an object with 256..%d entries", MAX_VOCAB);
    } else {
        she_tokenizer_t *tok = tokenizer_new((int)json_object_size(vocab));
        tok->n_vocab = (int)json_object_size(vocab);
        memset(tok->special, 0, (size_t)tok->n_vocab);
        err = load_vocab(tok, root, vocab, path, errstr, errstr_size);
        if (err == SHE_OK)
            err = load_merges(tok, model, path, errstr, errstr_size);
        if (err == SHE_OK)
            *out = tok;
        else
            she_tokenizer_free(tok);
    }
    json_decref(root);
    return err;
}

/* The vocabulary key of a token: its text for special tokens, else its byte-level spelling. */
static json_t *token_key(const she_tokenizer_t *tok, int32_t id, char *tmp) {
    span_t sp = tok->tokens[id];
    if (tok->special[id])
        return json_stringn(tok->bytes + sp.off, sp.len);
    return json_stringn(tmp, bytelevel_encode(token_bytes(tok, id), sp.len, tmp));
}

static json_t *pipeline_json(void) {
    return json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}",
                     "type", "Sequence", "pretokenizers",
                     "type", "Split", "pattern", "Regex", SHE_TOKENIZER_SPLIT_REGEX,
                     "behavior", "Isolated", "invert", 0,
                     "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                     "use_regex", 0);
}

she_err_t she_tokenizer_save(const she_tokenizer_t *tok, const char *path, char *errstr,
                             size_t errstr_size) {
    size_t longest = 0;
    for (int id = 0; id < tok->n_vocab; id++)
        if (tok->tokens[id].len > longest)
            longest = tok->tokens[id].len;
    char *tmp = malloc(4 * longest + 2);
    SHE_CHECK_ALLOC(tmp);

    json_t *added = json_array();
    for (int i = 0; i < tok->n_special; i++) {
        int32_t id = tok->special_ids[i];
        json_array_append_new(added, json_pack("{s:i, s:o, s:b, s:b, s:b, s:b, s:b}", "id", id,
                                               "content", token_key(tok, id, tmp),
                                               "single_word", 0, "lstrip", 0, "rstrip", 0,
                                               "normalized", 0, "special", 1));
    }
    json_t *vocab = json_object();
    for (int id = 0; id < tok->n_vocab; id++) {
        json_t *key = token_key(tok, id, tmp);
        json_object_set_new(vocab, json_string_value(key), json_integer(id));
        json_decref(key);
    }
    json_t *merges = json_array();
    for (int r = 0; r < tok->n_merges; r++) {
        const int32_t *m = tok->merges + 3 * r;
        span_t a = tok->tokens[m[0]], b = tok->tokens[m[1]];
        size_t k = bytelevel_encode(token_bytes(tok, m[0]), a.len, tmp);
        tmp[k++] = ' ';
        k += bytelevel_encode(token_bytes(tok, m[1]), b.len, tmp + k);
        json_array_append_new(merges, json_stringn(tmp, k));
    }
    free(tmp);
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                              "dropout", "unk_token", "continuing_subword_prefix",
                              "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", 0, "vocab", vocab, "merges", merges);
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b}, s:o}", "version", "1.0",
        "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer",
        pipeline_json(), "post_processor", "decoder", "type", "ByteLevel", "add_prefix_space", 1,
        "trim_offsets", 1, "use_regex", 1, "model", model);
    SHE_CHECK_ALLOC(root);

    size_t n_tmp = strlen(path) + 5;
    char *tmp_path = malloc(n_tmp);
    SHE_CHECK_ALLOC(tmp_path);
    snprintf(tmp_path, n_tmp, "%s.tmp", path);
    she_err_t err = SHE_OK;
    if (json_dump_file(root, tmp_path, JSON_INDENT(2)) != 0) {
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: cannot write: %s", tmp_path,
                       strerror(errno));
        remove(tmp_path);
    } else if (rename(tmp_path, path) != 0) {
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: cannot rename to %s: %s", tmp_path,
                       path, strerror(errno));
        remove(tmp_path);
    }
    free(tmp_path);
    json_decref(root);
    return err;
}
