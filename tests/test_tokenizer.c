/* test_tokenizer.c -- byte-level BPE tokenizer: round trips, save/load, special tokens,
 * rejection of malformed tokenizer.json files, and the golden test against HF `tokenizers`.
 *
 * Fixtures (tests/fixtures/, rebuilt by scripts/make_tokenizer_fixture.py):
 *   tokenizer_corpus.txt   training corpus, documents separated by 0x1E
 *   tokenizer_golden.json  tokenizer trained on it by this module (vocab 1000)
 *   tokenizer_golden.bin   strings with the ids HF tokenizers gives them (format below)
 *
 * Besides running the tests, the executable trains a tokenizer for the fixture script and for
 * timing:  test_tokenizer --train CORPUS VOCAB_SIZE OUT_JSON  (documents separated by 0x1E,
 * special tokens <|pad|> <|bos|> <|eos|>). */
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "core/tokenizer.h"
#include "test.h"

static const char *const SPECIALS[] = {"<|pad|>", "<|bos|>", "<|eos|>"};
#define N_SPECIALS 3

/* ------------------------------------------------------------------ helpers */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static void fixture_path(char *out, size_t cap, const char *name) {
    const char *src = getenv("SHE_SOURCE_DIR");
    snprintf(out, cap, "%s/tests/fixtures/%s", src ? src : ".", name);
}

static void tmp_path(char *out, size_t cap, const char *name) {
    const char *tmp = getenv("SHE_TEST_TMP");
    snprintf(out, cap, "%s/%s", tmp ? tmp : "/tmp", name);
}

/* Splits a corpus buffer in place into documents at 0x1E bytes. */
typedef struct corpus {
    char *buf;
    const char **docs;
    size_t *lens;
    size_t n;
} corpus_t;

static int corpus_load(corpus_t *c, const char *path) {
    size_t len;
    c->buf = read_file(path, &len);
    if (!c->buf)
        return -1;
    c->n = 0;
    for (size_t i = 0; i < len; i++)
        c->n += c->buf[i] == 0x1E;
    c->n++;
    c->docs = malloc(c->n * sizeof(*c->docs));
    c->lens = malloc(c->n * sizeof(*c->lens));
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || c->buf[i] == 0x1E) {
            c->docs[k] = c->buf + start;
            c->lens[k++] = i - start;
            start = i + 1;
        }
    }
    return 0;
}

static void corpus_free(corpus_t *c) {
    free(c->buf);
    free(c->docs);
    free(c->lens);
}

/* Trains the fixture tokenizer (same recipe as the committed golden json) on the corpus. */
static she_tokenizer_t *train_fixture(int vocab_size) {
    char path[1024], errstr[512];
    corpus_t c;
    fixture_path(path, sizeof(path), "tokenizer_corpus.txt");
    if (corpus_load(&c, path) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    she_tokenizer_t *tok = NULL;
    she_err_t err = she_tokenizer_train(c.docs, c.lens, c.n, vocab_size, SPECIALS, N_SPECIALS,
                                        &tok, errstr, sizeof(errstr));
    if (err != SHE_OK)
        fprintf(stderr, "train: %s\n", errstr);
    corpus_free(&c);
    return tok;
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* A random byte string mixing text, whitespace runs, UTF-8, invalid bytes and special-token
 * text, so every pre-tokenizer branch and every byte value shows up. */
static size_t random_bytes(uint64_t *rng, char *out, size_t cap) {
    static const char *const parts[] = {
        "the", " quick", " Brown", "fox's", "'ll", "'", "''s", " 42", "3.14", "  ", "\t\t",
        "\n", "\r\n", " \n ", "\v\f", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x98\x80",
        "\xff", "\xc3", "\x80\x80", "\xed\xa0\x80", "\xc0\xaf", "<|eos|>", "<|pad", "|>",
        "<|bos|><|eos|>",
        "\x00", "--", "!?", " (", "_x_", "\xc2\xa0", "\xe3\x80\x80"};
    size_t n = 0, want = rng_next(rng) % (cap / 4);
    while (n < want) {
        uint64_t r = rng_next(rng);
        if (r % 3 == 0) {
            out[n++] = (char)(r >> 8);
        } else {
            const char *p = parts[(r >> 8) % (sizeof(parts) / sizeof(parts[0]))];
            size_t len = p[0] ? strlen(p) : 1;
            if (n + len > cap)
                break;
            memcpy(out + n, p, len);
            n += len;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ tests */

static void test_roundtrip_random(void) {
    char errstr[512];
    she_tokenizer_t *tok = train_fixture(600);
    REQUIRE(tok != NULL);
    enum { CAP = 1024 };
    char in[CAP], out[CAP];
    int32_t ids[CAP + 8];
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    int bad = 0;
    for (int t = 0; t < 3000 && bad < 5; t++) {
        size_t n = random_bytes(&rng, in, CAP);
        for (int split = 0; split <= 1; split++) {
            int n_ids = 0;
            size_t len = 0;
            CHECK_OK(she_tokenizer_encode(tok, in, n, split, ids, CAP + 8, &n_ids, errstr,
                                          sizeof(errstr)));
            CHECK(n_ids <= (int)n);
            for (int i = 0; i < n_ids; i++)
                CHECK(ids[i] >= 0 && ids[i] < she_tokenizer_vocab_size(tok));
            CHECK_OK(she_tokenizer_decode(tok, ids, n_ids, 0, out, CAP, &len, errstr,
                                          sizeof(errstr)));
            if (len != n || memcmp(in, out, n) != 0) {
                CHECK_MSG(0, "case %d (split %d): round trip of %zu bytes gave %zu bytes", t, split,
                          n, len);
                bad++;
            }
        }
    }
    /* every single byte value on its own */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int n_ids = 0;
        size_t len = 0;
        CHECK_OK(she_tokenizer_encode(tok, &c, 1, 1, ids, 4, &n_ids, errstr, sizeof(errstr)));
        CHECK_EQ_INT(n_ids, 1);
        CHECK_OK(she_tokenizer_decode(tok, ids, n_ids, 0, out, 4, &len, errstr, sizeof(errstr)));
        CHECK(len == 1 && out[0] == c);
    }
    she_tokenizer_free(tok);
}

/* Saving, loading and saving again gives the same file and the same encodings; training is
 * deterministic (a second run saves the same bytes). */
static void test_save_load(void) {
    char errstr[512], p1[1024], p2[1024], p3[1024];
    tmp_path(p1, sizeof(p1), "tok_a.json");
    tmp_path(p2, sizeof(p2), "tok_b.json");
    tmp_path(p3, sizeof(p3), "tok_c.json");
    she_tokenizer_t *tok = train_fixture(800), *again = train_fixture(800), *loaded = NULL;
    REQUIRE(tok && again);
    REQUIRE_OK(she_tokenizer_save(tok, p1, errstr, sizeof(errstr)));
    REQUIRE_OK(she_tokenizer_save(again, p3, errstr, sizeof(errstr)));
    REQUIRE_OK(she_tokenizer_load(p1, &loaded, errstr, sizeof(errstr)));
    REQUIRE_OK(she_tokenizer_save(loaded, p2, errstr, sizeof(errstr)));
    size_t n1 = 0, n2 = 0, n3 = 0;
    char *f1 = read_file(p1, &n1), *f2 = read_file(p2, &n2), *f3 = read_file(p3, &n3);
    REQUIRE(f1 && f2 && f3);
    CHECK_MSG(n1 == n2 && memcmp(f1, f2, n1) == 0, "save(load(save(t))) differs from save(t)");
    CHECK_MSG(n1 == n3 && memcmp(f1, f3, n1) == 0, "training twice gave different tokenizers");
    CHECK_EQ_INT(she_tokenizer_vocab_size(loaded), she_tokenizer_vocab_size(tok));
    CHECK_EQ_INT(she_tokenizer_vocab_size(tok), 800);

    enum { CAP = 1024 };
    char in[CAP];
    int32_t a[CAP], b[CAP];
    uint64_t rng = 12345;
    for (int t = 0; t < 1000; t++) {
        size_t n = random_bytes(&rng, in, CAP);
        int na = 0, nb = 0;
        CHECK_OK(she_tokenizer_encode(tok, in, n, 1, a, CAP, &na, errstr, sizeof(errstr)));
        CHECK_OK(she_tokenizer_encode(loaded, in, n, 1, b, CAP, &nb, errstr, sizeof(errstr)));
        if (na != nb || memcmp(a, b, (size_t)na * sizeof(*a)) != 0) {
            CHECK_MSG(0, "case %d encodes differently after save/load", t);
            break;
        }
    }
    free(f1);
    free(f2);
    free(f3);
    she_tokenizer_free(tok);
    she_tokenizer_free(again);
    she_tokenizer_free(loaded);
}

static void test_special_tokens(void) {
    char errstr[512];
    corpus_t c;
    char path[1024];
    fixture_path(path, sizeof(path), "tokenizer_corpus.txt");
    REQUIRE(corpus_load(&c, path) == 0);
    /* "<|it|>" is a prefix of "<|it|>em": matching must take the longest at a position */
    static const char *const sp[] = {"<|pad|>", "<|bos|>", "<|eos|>", "<|it|>", "<|it|>em"};
    she_tokenizer_t *tok = NULL;
    she_err_t err = she_tokenizer_train(c.docs, c.lens, c.n, 500, sp, 5, &tok, errstr,
                                        sizeof(errstr));
    corpus_free(&c);
    REQUIRE_OK(err);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(she_tokenizer_token_id(tok, sp[i]), i);
        CHECK(she_tokenizer_is_special(tok, i));
    }
    CHECK(!she_tokenizer_is_special(tok, 5));
    CHECK(!she_tokenizer_is_special(tok, -1));
    CHECK_EQ_INT(she_tokenizer_token_id(tok, "<|nope|>"), -1);
    CHECK_EQ_INT(she_tokenizer_token_id(tok, "A"), 5 + 'A'); /* bytes follow the specials */

    const char *text = "a<|eos|>b <|it|>em<|it|>e<|pad|";
    int32_t ids[128], plain[128];
    int n = 0, n_plain = 0;
    REQUIRE_OK(she_tokenizer_encode(tok, text, strlen(text), 1, ids, 128, &n, errstr,
                                    sizeof(errstr)));
    /* a, <|eos|>, b, " ", <|it|>em, <|it|>, e, then plain "<|pad|" (no special) */
    REQUIRE(n >= 7);
    CHECK_EQ_INT(ids[0], 5 + 'a');
    CHECK_EQ_INT(ids[1], 2);
    CHECK_EQ_INT(ids[2], 5 + 'b');
    CHECK_EQ_INT(ids[3], 5 + ' ');
    CHECK_EQ_INT(ids[4], 4);
    CHECK_EQ_INT(ids[5], 3);
    CHECK_EQ_INT(ids[6], 5 + 'e');
    for (int i = 7; i < n; i++)
        CHECK(!she_tokenizer_is_special(tok, ids[i]));

    /* split_special = 0: the same text is ordinary bytes */
    REQUIRE_OK(she_tokenizer_encode(tok, text, strlen(text), 0, plain, 128, &n_plain, errstr,
                                    sizeof(errstr)));
    for (int i = 0; i < n_plain; i++)
        CHECK(!she_tokenizer_is_special(tok, plain[i]));

    char out[128];
    size_t len = 0;
    CHECK_OK(she_tokenizer_decode(tok, ids, n, 0, out, sizeof(out), &len, errstr, sizeof(errstr)));
    CHECK(len == strlen(text) && memcmp(out, text, len) == 0);
    CHECK_OK(she_tokenizer_decode(tok, ids, n, 1, out, sizeof(out), &len, errstr, sizeof(errstr)));
    const char *skipped = "ab e<|pad|";
    CHECK(len == strlen(skipped) && memcmp(out, skipped, len) == 0);
    she_tokenizer_free(tok);

    /* bad arguments */
    const char *txt = "x";
    static const char *const dup[] = {"<|a|>", "<|a|>"};
    static const char *const empty[] = {""};
    static const char *const bad_utf8[] = {"\xff"};
    CHECK(she_tokenizer_train(&txt, NULL, 1, 300, dup, 2, &tok, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(tok == NULL);
    CHECK(she_tokenizer_train(&txt, NULL, 1, 300, empty, 1, &tok, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(she_tokenizer_train(&txt, NULL, 1, 300, bad_utf8, 1, &tok, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    static const char *const byte_key[] = {"\xc4\xa0"}; /* "Ġ" is the key of byte 0x20 */
    CHECK(she_tokenizer_train(&txt, NULL, 1, 300, byte_key, 1, &tok, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(she_tokenizer_train(&txt, NULL, 1, 256, SPECIALS, N_SPECIALS, &tok, errstr,
                              sizeof(errstr)) == SHE_ERR_INVALID);
}

/* Training: merges follow counts, and a merge whose byte-level spelling is a special token's
 * text is never learned (HF would map that merge to the special id). */
static void test_train_small(void) {
    char errstr[512];
    static const char *const sp[] = {"\xc4\xa0x"}; /* "Ġx", the byte-level spelling of " x" */
    const char *texts[] = {"aaab aaab aaab x x x", " x"};
    she_tokenizer_t *tok = NULL;
    REQUIRE_OK(she_tokenizer_train(texts, NULL, 2, 300, sp, 1, &tok, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_tokenizer_token_id(tok, " x"), -1);
    int32_t ids[16];
    int n = 0;
    REQUIRE_OK(she_tokenizer_encode(tok, " x", 2, 1, ids, 16, &n, errstr, sizeof(errstr)));
    CHECK_EQ_INT(n, 2);
    CHECK(she_tokenizer_token_id(tok, " aaab") >= 0); /* 3 occurrences: fully merged */
    REQUIRE_OK(she_tokenizer_encode(tok, " aaab", 5, 1, ids, 16, &n, errstr, sizeof(errstr)));
    CHECK_EQ_INT(n, 1);
    /* stops when no pair occurs twice: far fewer than 300 ids */
    CHECK(she_tokenizer_vocab_size(tok) < 300);
    she_tokenizer_free(tok);
}

static void test_buffers_too_small(void) {
    char errstr[512];
    she_tokenizer_t *tok = train_fixture(400);
    REQUIRE(tok != NULL);
    const char *text = "Hello world, this is a sentence with a few words.";
    int32_t full[64], part[4];
    int n = 0, m = 0;
    REQUIRE_OK(she_tokenizer_encode(tok, text, strlen(text), 1, full, 64, &n, errstr,
                                    sizeof(errstr)));
    REQUIRE(n > 4);
    CHECK(she_tokenizer_encode(tok, text, strlen(text), 1, part, 4, &m, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK_EQ_INT(m, n);
    CHECK(memcmp(part, full, sizeof(part)) == 0);
    char out[8];
    size_t len = 0;
    CHECK(she_tokenizer_decode(tok, full, n, 0, out, sizeof(out), &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK_EQ_INT(len, strlen(text));
    CHECK(memcmp(out, text, sizeof(out)) == 0);
    int32_t bad_id = she_tokenizer_vocab_size(tok);
    CHECK(she_tokenizer_decode(tok, &bad_id, 1, 0, out, sizeof(out), &len, errstr,
                               sizeof(errstr)) == SHE_ERR_INVALID);
    she_tokenizer_free(tok);
}

/* Writes `json` (or, when json is NULL, the raw text) to a scratch file and expects load to
 * fail with an error that names the file and contains `want`. */
static void expect_rejected(const char *name, json_t *json, const char *text, const char *want) {
    char path[1024], errstr[512] = "";
    tmp_path(path, sizeof(path), name);
    if (json) {
        REQUIRE(json_dump_file(json, path, 0) == 0);
    } else {
        FILE *f = fopen(path, "wb");
        REQUIRE(f != NULL);
        fputs(text, f);
        fclose(f);
    }
    she_tokenizer_t *sentinel = (she_tokenizer_t *)&sentinel, *tok = sentinel;
    she_err_t err = she_tokenizer_load(path, &tok, errstr, sizeof(errstr));
    CHECK_MSG(err == SHE_ERR_FORMAT, "%s: load returned %d (%s)", name, err, errstr);
    CHECK_MSG(err == SHE_OK || tok == NULL, "%s: *out not NULL on failure", name);
    CHECK_MSG(strstr(errstr, path) != NULL && strstr(errstr, want) != NULL,
              "%s: error \"%s\" should name the file and say \"%s\"", name, errstr, want);
    if (err == SHE_OK)
        she_tokenizer_free(tok);
}

static void test_malformed_files(void) {
    char errstr[512], good[1024];
    tmp_path(good, sizeof(good), "tok_good.json");
    she_tokenizer_t *tok = train_fixture(300);
    REQUIRE(tok != NULL);
    REQUIRE_OK(she_tokenizer_save(tok, good, errstr, sizeof(errstr)));
    she_tokenizer_free(tok);

    tok = NULL;
    CHECK(she_tokenizer_load("/nonexistent/tokenizer.json", &tok, errstr, sizeof(errstr)) ==
          SHE_ERR_IO);
    CHECK(tok == NULL && strstr(errstr, "/nonexistent/tokenizer.json") != NULL);
    expect_rejected("bad_syntax.json", NULL, "{\"model\": {\"type\": \"BPE\",", "line");
    expect_rejected("bad_array.json", NULL, "[1, 2, 3]", "not a JSON object");
    expect_rejected("bad_empty.json", NULL, "", "line");

    json_error_t jerr;
#define MUTATE(name, want, ...)                                                  \
    do {                                                                         \
        json_t *root = json_load_file(good, 0, &jerr);                           \
        REQUIRE(root != NULL);                                                   \
        json_t *model = json_object_get(root, "model");                          \
        json_t *vocab = json_object_get(model, "vocab");                         \
        json_t *merges = json_object_get(model, "merges");                       \
        json_t *added = json_object_get(root, "added_tokens");                   \
        (void)model, (void)vocab, (void)merges, (void)added;                     \
        __VA_ARGS__;                                                             \
        expect_rejected(name, root, NULL, want);                                 \
        json_decref(root);                                                       \
    } while (0)

    MUTATE("model_type.json", "model.type",
           json_object_set_new(model, "type", json_string("WordPiece")));
    MUTATE("no_model.json", "model.type", json_object_del(root, "model"));
    MUTATE("normalizer.json", "normalizer",
           json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFC")));
    MUTATE("pretok.json", "pre_tokenizer",
           json_object_set_new(root, "pre_tokenizer",
                               json_pack("{s:s, s:b}", "type", "ByteLevel", "use_regex", 1)));
    MUTATE("regex.json", "regex",
           json_object_set_new(json_object_get(json_array_get(json_object_get(json_object_get(
                                   root, "pre_tokenizer"), "pretokenizers"), 0), "pattern"),
                               "Regex", json_string("\\s+")));
    MUTATE("bytefallback.json", "byte_fallback",
           json_object_set_new(model, "byte_fallback", json_true()));
    MUTATE("vocab_type.json", "model.vocab", json_object_set_new(model, "vocab", json_array()));
    MUTATE("vocab_gap.json", "0..", json_object_set_new(vocab, "zzzq", json_integer(100000)));
    MUTATE("vocab_str.json", "integer", json_object_set_new(vocab, "Ġt", json_string("5")));
    MUTATE("vocab_dup_id.json", "used twice", json_object_set_new(vocab, "A", json_integer(0)));
    /* rename a token: "€" (U+20AC) is not a byte-level character; "ĤĤ" is bytes 0x82 0x82 */
    MUTATE("vocab_alphabet.json", "byte alphabet",
           json_object_set(vocab, "\xe2\x82\xac", json_object_get(vocab, "B"));
           json_object_del(vocab, "B"));
    MUTATE("missing_byte.json", "byte 0x41",
           json_object_set(vocab, "\xc4\xa4\xc4\xa4", json_object_get(vocab, "A"));
           json_object_del(vocab, "A"));
    MUTATE("merge_unknown.json", "not in model.vocab",
           json_array_append_new(merges, json_string("qqqq zzzz")));
    MUTATE("merge_shape.json", "model.merges[",
           json_array_append_new(merges, json_string("a b c")));
    MUTATE("merge_result.json", "not an ordinary token",
           json_array_append_new(merges, json_string("\xc3\xbf \xc3\xbf")));
    MUTATE("merge_dup.json", "repeats",
           json_array_append(merges, json_array_get(merges, 0)));
    MUTATE("merge_special.json", "special",
           json_array_append_new(merges, json_string("<|pad|> a")));
    MUTATE("merges_type.json", "model.merges",
           json_object_set_new(model, "merges", json_integer(3)));
    MUTATE("added_id.json", "added_tokens[0]",
           json_object_set_new(json_array_get(added, 0), "id", json_integer(7)));
    MUTATE("added_nonspecial.json", "only special",
           json_object_set_new(json_array_get(added, 0), "special", json_false()));
    MUTATE("added_lstrip.json", "only special",
           json_object_set_new(json_array_get(added, 1), "lstrip", json_true()));
    MUTATE("post.json", "post_processor",
           json_object_set_new(root, "post_processor", json_pack("{s:s}", "type", "ByteLevel")));
#undef MUTATE
}

/* tokenizer_golden.bin: "SHTK", uint32 version (1), uint32 n_cases, uint32 vocab_size, then
 * per case uint32 flags (bit 0: split special tokens), uint32 n_bytes, the bytes, uint32 n_ids,
 * int32 ids; all little-endian. */
static uint32_t get_u32(const unsigned char **p) {
    const unsigned char *b = *p;
    *p += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void test_golden_hf(void) {
    char errstr[512], jpath[1024], bpath[1024];
    fixture_path(jpath, sizeof(jpath), "tokenizer_golden.json");
    fixture_path(bpath, sizeof(bpath), "tokenizer_golden.bin");
    she_tokenizer_t *tok = NULL;
    REQUIRE_OK(she_tokenizer_load(jpath, &tok, errstr, sizeof(errstr)));
    size_t size = 0;
    unsigned char *buf = (unsigned char *)read_file(bpath, &size);
    REQUIRE_MSG(buf != NULL && size >= 16, "cannot read %s", bpath);
    const unsigned char *p = buf, *end = buf + size;
    CHECK(memcmp(p, "SHTK", 4) == 0);
    p += 4;
    uint32_t version = get_u32(&p), n_cases = get_u32(&p), vocab = get_u32(&p);
    CHECK_EQ_INT(version, 1);
    CHECK_EQ_INT(vocab, she_tokenizer_vocab_size(tok));
    int32_t *ids = NULL, *got = NULL;
    int cap = 0, mismatches = 0, invalid_utf8 = 0;
    uint32_t i;
    for (i = 0; i < n_cases && p + 8 <= end; i++) {
        uint32_t flags = get_u32(&p), n_bytes = get_u32(&p);
        const char *bytes = (const char *)p;
        if (p + n_bytes + 4 > end)
            break;
        p += n_bytes;
        uint32_t n_ids = get_u32(&p);
        if (p + 4 * (size_t)n_ids > end)
            break;
        if ((int)n_ids + 1 > cap) {
            cap = 2 * (int)n_ids + 16;
            ids = realloc(ids, (size_t)cap * sizeof(*ids));
            got = realloc(got, (size_t)cap * sizeof(*got));
        }
        for (uint32_t k = 0; k < n_ids; k++)
            ids[k] = (int32_t)get_u32(&p);
        invalid_utf8 += (flags & 2) != 0;
        int n_got = 0;
        she_err_t err = she_tokenizer_encode(tok, bytes, n_bytes, (int)(flags & 1), got, cap,
                                             &n_got, errstr, sizeof(errstr));
        if (err != SHE_OK || n_got != (int)n_ids ||
            memcmp(got, ids, n_ids * sizeof(*ids)) != 0) {
            if (mismatches++ < 5) {
                fprintf(stderr, "case %u (flags %u, %u bytes): HF gives %u ids, we give %d:",
                        i, flags, n_bytes, n_ids, n_got);
                for (int k = 0; k < n_got && k < 16; k++)
                    fprintf(stderr, " %d/%d", k < (int)n_ids ? ids[k] : -1, got[k]);
                fprintf(stderr, "\n");
            }
        }
    }
    CHECK_MSG(i == n_cases && p == end, "%s truncated or has trailing bytes (case %u of %u)",
              bpath, i, n_cases);
    CHECK_MSG(mismatches == 0, "%d of %u strings encode differently from HF tokenizers",
              mismatches, n_cases);
    CHECK(n_cases >= 2000 && invalid_utf8 > 100);
    if (mismatches == 0)
        fprintf(stderr, "golden: all %u strings (%d invalid UTF-8) match HF tokenizers\n",
                n_cases, invalid_utf8);
    free(ids);
    free(got);
    free(buf);
    she_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ --train mode */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int train_main(const char *corpus, const char *vocab, const char *out) {
    char errstr[512];
    corpus_t c;
    if (corpus_load(&c, corpus) != 0) {
        fprintf(stderr, "cannot read %s\n", corpus);
        return 1;
    }
    size_t total = 0;
    for (size_t i = 0; i < c.n; i++)
        total += c.lens[i];
    double t0 = now_s();
    she_tokenizer_t *tok = NULL;
    if (she_tokenizer_train(c.docs, c.lens, c.n, atoi(vocab), SPECIALS, N_SPECIALS, &tok, errstr,
                            sizeof(errstr)) != SHE_OK ||
        she_tokenizer_save(tok, out, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "%s\n", errstr);
        corpus_free(&c);
        return 1;
    }
    double t1 = now_s();
    /* encoding throughput over the same corpus */
    int32_t *ids = malloc(sizeof(*ids) * 65536);
    size_t n_tokens = 0;
    for (size_t i = 0; i < c.n; i++) {
        int n = 0; /* a longer document fails with its full count in n, all that is needed */
        (void)she_tokenizer_encode(tok, c.docs[i], c.lens[i], 1, ids, 65536, &n, errstr,
                                   sizeof(errstr));
        n_tokens += (size_t)n;
    }
    double t2 = now_s();
    printf("trained %d ids on %zu documents (%.1f MB) in %.2f s; encoded them to %zu tokens "
           "in %.2f s (%.1f MB/s)\n",
           she_tokenizer_vocab_size(tok), c.n, (double)total / 1e6, t1 - t0, n_tokens, t2 - t1,
           (double)total / 1e6 / (t2 - t1));
    free(ids);
    she_tokenizer_free(tok);
    corpus_free(&c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--train") == 0)
        return train_main(argv[2], argv[3], argv[4]);
    RUN(test_roundtrip_random);
    RUN(test_save_load);
    RUN(test_special_tokens);
    RUN(test_train_small);
    RUN(test_buffers_too_small);
    RUN(test_malformed_files);
    RUN(test_golden_hf);
    TEST_DONE();
}
