/* test_cot.c -- the chain-of-thought format: exact layout of a chain and a prompt, round trip
 * format -> parse -> format on thousands of generated chains, rejection of malformed chains with
 * the right step flagged (at the right byte) and the other steps still parsed, step spans and
 * the token -> step map SRPO uses, and the value helpers. */
#include <stdint.h>

#include "test.h"
#include "trainer/cot.h"

static const char *const example_text = "1. Query: category=running shoes; color=red, brand=nike\n"
                                        "2. Item: category=trail running shoe; brand=nike, "
                                        "color=red, size=10\n"
                                        "3. Category: exact\n"
                                        "4. Attributes: partial\n"
                                        "5. Grade: L3\n";

static void make_example(she_cot_t *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->query.category, sizeof(c->query.category), "running shoes");
    she_cot_interp_add(&c->query, "color", "red");
    she_cot_interp_add(&c->query, "brand", "nike");
    snprintf(c->item.category, sizeof(c->item.category), "trail running shoe");
    she_cot_interp_add(&c->item, "brand", "nike");
    she_cot_interp_add(&c->item, "color", "red");
    she_cot_interp_add(&c->item, "size", "10");
    c->cat_match = SHE_CAT_MATCH_EXACT;
    c->attr_match = SHE_ATTR_MATCH_PARTIAL;
    c->grade = SHE_GRADE_L3;
}

static void test_format_example(void) {
    char errstr[512], buf[SHE_COT_MAX_CHAIN];
    she_cot_t c;
    size_t len = 0;
    make_example(&c);
    REQUIRE_OK(she_cot_format(&c, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_STR(buf, example_text);
    CHECK_EQ_INT(len, strlen(example_text));

    /* no attributes: the line ends after the category */
    c.query.n_attrs = 0;
    REQUIRE_OK(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)));
    CHECK(strncmp(buf, "1. Query: category=running shoes\n2. Item:", 41) == 0);
}

static void test_format_rejects(void) {
    char errstr[512], buf[SHE_COT_MAX_CHAIN];
    she_cot_t c;
    make_example(&c);
    c.query.category[0] = '\0';
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(strstr(errstr, "step 1") != NULL);
    make_example(&c);
    snprintf(c.item.attrs[0].value, sizeof(c.item.attrs[0].value), "a,b");
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    make_example(&c);
    snprintf(c.item.attrs[0].value, sizeof(c.item.attrs[0].value), " red");
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    make_example(&c);
    snprintf(c.item.attrs[0].key, sizeof(c.item.attrs[0].key), "Color");
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    make_example(&c);
    c.attr_match = SHE_ATTR_MATCH_UNKNOWN;
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(strstr(errstr, "step 4") != NULL);
    make_example(&c);
    c.grade = (she_grade_t)7;
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    make_example(&c);
    c.query.n_attrs = SHE_COT_MAX_ATTRS + 1;
    CHECK_EQ_INT(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    make_example(&c);
    CHECK_EQ_INT(she_cot_format(&c, buf, 40, NULL, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(strstr(errstr, "bytes") != NULL);
}

/* ---- generated chains ---- */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* A random valid value: words of printable ASCII (separators excluded), UTF-8 letters and
 * punctuation the format allows, up to the length limit. */
static void rand_value(char *out, size_t max) {
    static const char *const pieces[] = {"shoe", "red", "3/4", "in.", "o'neil", "#sc-141", "é",
                                         "(x)", "100%", "w/", "a&b", "l", "-", "ünïcode", ":",
                                         "steel", "10", "x", "\"q\"", "漢字"};
    size_t n = 0, words = 1 + rnd(6);
    out[0] = '\0';
    for (size_t w = 0; w < words; w++) {
        const char *p = pieces[rnd(sizeof(pieces) / sizeof(pieces[0]))];
        size_t pl = strlen(p);
        if (n + (n > 0) + pl + 1 > max)
            break;
        if (n > 0)
            out[n++] = rnd(4) ? ' ' : '-';
        memcpy(out + n, p, pl + 1);
        n += pl;
    }
    if (n == 0)
        snprintf(out, max, "x");
}

static void rand_interp(she_cot_interp_t *in) {
    static const char *const keys[] = {"color", "brand", "material", "size", "type", "use",
                                       "feature", "detail", "a", "k_9", "abcdefghijklmnopqrstuvw"};
    memset(in, 0, sizeof(*in));
    rand_value(in->category, rnd(3) ? 24 : SHE_COT_MAX_TEXT);
    int n = (int)rnd(SHE_COT_MAX_ATTRS + 1);
    for (int i = 0; i < n; i++) {
        she_cot_attr_t *a = &in->attrs[in->n_attrs++];
        snprintf(a->key, sizeof(a->key), "%s", keys[rnd(sizeof(keys) / sizeof(keys[0]))]);
        rand_value(a->value, rnd(3) ? 20 : SHE_COT_MAX_TEXT);
    }
}

static void rand_cot(she_cot_t *c) {
    memset(c, 0, sizeof(*c));
    rand_interp(&c->query);
    rand_interp(&c->item);
    c->cat_match = (she_cat_match_t)(1 + rnd(3));
    c->attr_match = (she_attr_match_t)(1 + rnd(4));
    c->grade = (she_grade_t)(1 + rnd(4));
}

static int interp_equal(const she_cot_interp_t *a, const she_cot_interp_t *b) {
    if (strcmp(a->category, b->category) || a->n_attrs != b->n_attrs)
        return 0;
    for (int i = 0; i < a->n_attrs; i++)
        if (strcmp(a->attrs[i].key, b->attrs[i].key) ||
            strcmp(a->attrs[i].value, b->attrs[i].value))
            return 0;
    return 1;
}

static void test_roundtrip_generated(void) {
    char errstr[512], a[SHE_COT_MAX_CHAIN], b[SHE_COT_MAX_CHAIN];
    rng_state = 0x9e3779b97f4a7c15ull;
    size_t longest = 0;
    for (int it = 0; it < 5000; it++) {
        she_cot_t c;
        she_cot_parsed_t p;
        size_t la, lb;
        rand_cot(&c);
        REQUIRE_OK(she_cot_format(&c, a, sizeof(a), &la, errstr, sizeof(errstr)));
        if (la > longest)
            longest = la;
        she_err_t err = she_cot_parse(a, la, &p, errstr, sizeof(errstr));
        REQUIRE_MSG(err == SHE_OK, "chain %d: %s\n%s", it, errstr, a);
        CHECK_EQ_INT(p.n_ok, 5);
        CHECK(interp_equal(&p.cot.query, &c.query));
        CHECK(interp_equal(&p.cot.item, &c.item));
        CHECK(p.cot.cat_match == c.cat_match && p.cot.attr_match == c.attr_match &&
              p.cot.grade == c.grade);
        REQUIRE_OK(she_cot_format(&p.cot, b, sizeof(b), &lb, errstr, sizeof(errstr)));
        REQUIRE_MSG(la == lb && memcmp(a, b, la) == 0, "round trip differs:\n%s\n%s", a, b);
        /* spans tile the text from byte 0 to the end, one line per step */
        CHECK_EQ_INT(p.span[0].begin, 0);
        for (int k = 0; k < 5; k++) {
            CHECK(p.span[k].end > p.span[k].begin);
            CHECK_EQ_INT(a[p.span[k].end - 1], '\n');
            if (k < 4)
                CHECK_EQ_INT(p.span[k].end, p.span[k + 1].begin);
            CHECK_EQ_INT(a[p.span[k].begin], '1' + k);
        }
        CHECK_EQ_INT(p.span[4].end, (int)la);
    }
    /* the longest chain the limits allow still fits SHE_COT_MAX_CHAIN */
    she_cot_t c;
    memset(&c, 0, sizeof(c));
    she_cot_interp_t *sides[2] = {&c.query, &c.item};
    for (int s = 0; s < 2; s++) {
        memset(sides[s]->category, 'c', SHE_COT_MAX_TEXT - 1);
        for (int i = 0; i < SHE_COT_MAX_ATTRS; i++) {
            memset(sides[s]->attrs[i].key, 'k', SHE_COT_MAX_KEY - 1);
            memset(sides[s]->attrs[i].value, 'v', SHE_COT_MAX_TEXT - 1);
        }
        sides[s]->n_attrs = SHE_COT_MAX_ATTRS;
    }
    c.cat_match = SHE_CAT_MATCH_PARTIAL;
    c.attr_match = SHE_ATTR_MATCH_CONFLICT;
    c.grade = SHE_GRADE_L2;
    size_t la;
    CHECK_OK(she_cot_format(&c, a, sizeof(a), &la, errstr, sizeof(errstr)));
    CHECK(longest < la);
}

/* ---- malformed chains ---- */

/* Parses text; checks that exactly the steps in `bad` (a string of step digits) failed. */
static void expect_bad(const char *text, const char *bad, she_cot_parsed_t *p) {
    char errstr[512];
    she_err_t err = she_cot_parse(text, strlen(text), p, errstr, sizeof(errstr));
    CHECK_EQ_INT(err, *bad ? SHE_ERR_FORMAT : SHE_OK);
    for (int k = 1; k <= 5; k++) {
        int should_fail = strchr(bad, '0' + k) != NULL;
        CHECK_MSG(p->ok[k - 1] == !should_fail, "step %d ok=%d in:\n%s\n(%s)", k, p->ok[k - 1],
                  text, p->err[k - 1]);
        CHECK_EQ_INT(p->err_at[k - 1] >= 0, should_fail);
        CHECK_EQ_INT(p->err[k - 1][0] != '\0', should_fail);
    }
    if (*bad) {
        char want[64];
        snprintf(want, sizeof(want), "step %c (%s) at byte %d", bad[0],
                 she_cot_step_name(bad[0] - '0'), p->err_at[bad[0] - '1']);
        CHECK_MSG(strstr(errstr, want) != NULL, "errstr '%s' lacks '%s'", errstr, want);
    }
}

static void check_example_values(const she_cot_parsed_t *p) {
    if (p->ok[0])
        CHECK_STR(p->cot.query.category, "running shoes");
    if (p->ok[1])
        CHECK_EQ_INT(p->cot.item.n_attrs, 3);
    if (p->ok[2])
        CHECK(p->cot.cat_match == SHE_CAT_MATCH_EXACT);
    if (p->ok[3])
        CHECK(p->cot.attr_match == SHE_ATTR_MATCH_PARTIAL);
    if (p->ok[4])
        CHECK(p->cot.grade == SHE_GRADE_L3);
}

static const char *L1 = "1. Query: category=running shoes; color=red, brand=nike\n";
static const char *L2 = "2. Item: category=trail running shoe; brand=nike, color=red, size=10\n";
static const char *L3 = "3. Category: exact\n";
static const char *L4 = "4. Attributes: partial\n";
static const char *L5 = "5. Grade: L3\n";

static void join(char *out, size_t size, const char *a, const char *b, const char *c,
                 const char *d, const char *e) {
    snprintf(out, size, "%s%s%s%s%s", a, b, c, d, e);
}

static void test_parse_malformed(void) {
    char t[1024];
    she_cot_parsed_t p;

    /* the reference chain parses, and so do harmless variations */
    expect_bad(example_text, "", &p);
    check_example_values(&p);
    join(t, sizeof(t), L1, L2, L3, L4, "5. Grade: L3"); /* generation stopped at EOS */
    expect_bad(t, "", &p);
    join(t, sizeof(t), L1, L2, L3, L4, "5. Grade: L3\n\n  \n"); /* trailing whitespace */
    expect_bad(t, "", &p);
    CHECK_EQ_INT(p.span[4].end, (int)strlen(t));

    /* missing step 4: only step 4 fails; step 5 is still read */
    join(t, sizeof(t), L1, L2, L3, "", L5);
    expect_bad(t, "4", &p);
    check_example_values(&p);
    CHECK(strstr(p.err[3], "missing") != NULL);
    CHECK_EQ_INT(p.err_at[3], (int)(strlen(L1) + strlen(L2) + strlen(L3)));
    CHECK_EQ_INT(p.span[3].begin, -1);

    /* steps 3 and 4 swapped: both out of order, the rest fine */
    join(t, sizeof(t), L1, L2, L4, L3, L5);
    expect_bad(t, "34", &p);
    check_example_values(&p);
    CHECK(strstr(p.err[2], "out of order") != NULL);

    /* bad enum value in step 4, flagged at the value's first byte */
    join(t, sizeof(t), L1, L2, L3, "4. Attributes: partal\n", L5);
    expect_bad(t, "4", &p);
    check_example_values(&p);
    CHECK_EQ_INT(p.err_at[3],
                 (int)(strlen(L1) + strlen(L2) + strlen(L3) + strlen("4. Attributes: ")));
    CHECK(strstr(p.err[3], "match|partial|conflict|none") != NULL);
    CHECK(strstr(p.err[3], "partal") != NULL);
    CHECK(p.cot.attr_match == SHE_ATTR_MATCH_UNKNOWN);

    /* bad grade, bad category match */
    join(t, sizeof(t), L1, L2, "3. Category: exactly\n", L4, "5. Grade: L5\n");
    expect_bad(t, "35", &p);
    check_example_values(&p);

    /* duplicated step 3: flagged at the second occurrence */
    char l33[128];
    snprintf(l33, sizeof(l33), "%s%s", L3, L3);
    join(t, sizeof(t), L1, L2, l33, L4, L5);
    expect_bad(t, "3", &p);
    check_example_values(&p);
    CHECK_EQ_INT(p.err_at[2], (int)(strlen(L1) + strlen(L2) + strlen(L3)));
    CHECK(strstr(p.err[2], "again") != NULL);

    /* truncated inside step 2's free text: step 2 fails (no newline), 3..5 missing */
    join(t, sizeof(t), L1, "2. Item: category=trail runn", "", "", "");
    expect_bad(t, "2345", &p);
    check_example_values(&p);
    CHECK(strstr(p.err[1], "newline") != NULL);
    /* truncated inside step 5's value */
    join(t, sizeof(t), L1, L2, L3, L4, "5. Grade: L");
    expect_bad(t, "5", &p);
    check_example_values(&p);
    /* truncated right after step 3's line */
    join(t, sizeof(t), L1, L2, L3, "", "");
    expect_bad(t, "45", &p);

    /* stray line after step 2 spoils step 2 only */
    join(t, sizeof(t), L1, L2, "because the brand matches\n", L3, L4);
    strcat(t, L5);
    expect_bad(t, "2", &p);
    CHECK(strstr(p.err[1], "unexpected text") != NULL);
    CHECK_EQ_INT(p.err_at[1], (int)(strlen(L1) + strlen(L2)));
    /* a blank line between steps is stray text too */
    join(t, sizeof(t), L1, "\n", L2, L3, L4);
    strcat(t, L5);
    expect_bad(t, "1", &p);

    /* text before step 1 */
    join(t, sizeof(t), "Sure! Here is my analysis.\n", L1, L2, L3, L4);
    strcat(t, L5);
    expect_bad(t, "1", &p);
    CHECK_EQ_INT(p.err_at[0], 0);

    /* a step line whose label is wrong is that step's failure, not stray text */
    join(t, sizeof(t), L1, L2, L3, "4 Attributes - partial\n", L5);
    expect_bad(t, "4", &p);
    CHECK(strstr(p.err[3], "expected '4. Attributes: '") != NULL);

    /* attribute syntax in step 1: missing '=' */
    join(t, sizeof(t), "1. Query: category=running shoes; color red\n", L2, L3, L4, L5);
    expect_bad(t, "1", &p);
    CHECK_EQ_INT(p.err_at[0], (int)strlen("1. Query: category=running shoes; "));
    CHECK_EQ_INT(p.cot.query.n_attrs, 0);
    CHECK_STR(p.cot.query.category, ""); /* values of failed steps are cleared */
    /* separators: ';' without space, trailing comma, uppercase key, empty value, no category */
    const char *bad1[] = {"1. Query: category=running shoes;color=red\n",
                          "1. Query: category=running shoes; color=red,\n",
                          "1. Query: category=running shoes; Color=red\n",
                          "1. Query: category=running shoes; color=\n",
                          "1. Query: category=; color=red\n",
                          "1. Query: running shoes\n",
                          "1. Query: category=running shoes \n",
                          "1. Query: category=a=b\n",
                          "1.  Query: category=running shoes\n"};
    for (size_t i = 0; i < sizeof(bad1) / sizeof(bad1[0]); i++) {
        join(t, sizeof(t), bad1[i], L2, L3, L4, L5);
        expect_bad(t, "1", &p);
    }
    /* nine attributes */
    join(t, sizeof(t),
         "1. Query: category=c; a=1, b=2, c=3, d=4, e=5, f=6, g=7, h=8, i=9\n", L2, L3, L4, L5);
    expect_bad(t, "1", &p);

    /* empty and garbage texts: every step missing or failing */
    expect_bad("", "12345", &p);
    expect_bad("L4", "12345", &p);
    /* a number line that is not a step ("10 ft.") is stray text, not step 1 */
    join(t, sizeof(t), L1, L2, L3, L4, L5);
    strcat(t, "10 ft. of garden hose\n");
    expect_bad(t, "5", &p);
}

/* Random edits of valid chains (byte flips, deletions, insertions of format-significant bytes,
 * cuts): the parser never reads out of bounds (run under ASan), its report is consistent, and
 * whenever it accepts a text that text is exactly the formatted chain it returned. */
static void test_parse_mutations(void) {
    char errstr[512], a[SHE_COT_MAX_CHAIN + 64], b[SHE_COT_MAX_CHAIN];
    static const char ins[] = "\n.:;,= 1234567Lx\t\r";
    rng_state = 0x1234567887654321ull;
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        she_cot_t c;
        size_t la;
        rand_cot(&c);
        REQUIRE_OK(she_cot_format(&c, a, sizeof(a) - 64, &la, errstr, sizeof(errstr)));
        for (int e = 0, edits = 1 + (int)rnd(3); e < edits && la > 0; e++) {
            size_t at = rnd((uint32_t)la);
            switch (rnd(4)) {
            case 0:
                a[at] = (char)rnd(256);
                break;
            case 1:
                memmove(a + at, a + at + 1, la - at - 1);
                la--;
                break;
            case 2:
                memmove(a + at + 1, a + at, la - at);
                a[at] = ins[rnd(sizeof(ins) - 1)];
                la++;
                break;
            default:
                la = at;
                break;
            }
        }
        she_cot_parsed_t p;
        she_err_t err = she_cot_parse(a, la, &p, errstr, sizeof(errstr));
        int n_ok = 0;
        for (int k = 0; k < 5; k++) {
            n_ok += p.ok[k];
            CHECK(p.ok[k] ? p.err_at[k] == -1 : p.err_at[k] >= 0 && p.err_at[k] <= (int)la);
            CHECK((p.span[k].begin == -1 && p.span[k].end == -1) ||
                  (p.span[k].begin >= 0 && p.span[k].begin < p.span[k].end &&
                   p.span[k].end <= (int)la));
        }
        CHECK_EQ_INT(n_ok, p.n_ok);
        CHECK_EQ_INT(err == SHE_OK, n_ok == 5);
        int tok_end[3] = {1, (int)la / 2 + 1, (int)la}, steps[3];
        she_cot_token_steps(&p, tok_end, 3, steps);
        for (int i = 0; i < 3; i++)
            CHECK(steps[i] >= 1 && steps[i] <= 5);
        if (err != SHE_OK)
            continue;
        accepted++;
        size_t lb, trimmed = la;
        while (trimmed > 0 && strchr(" \t\r\n", a[trimmed - 1]))
            trimmed--;
        REQUIRE_OK(she_cot_format(&p.cot, b, sizeof(b), &lb, errstr, sizeof(errstr)));
        CHECK_MSG(lb == trimmed + 1 && memcmp(a, b, trimmed) == 0,
                  "accepted text is not its own chain:\n%.*s\n---\n%s", (int)la, a, b);
    }
    CHECK(accepted > 100); /* edits inside values leave many chains valid */
}

/* ---- spans and tokens ---- */

static void test_token_steps(void) {
    char errstr[512];
    she_cot_parsed_t p;
    const char *t = example_text;
    int n = (int)strlen(t);
    CHECK_OK(she_cot_parse(t, (size_t)n, &p, errstr, sizeof(errstr)));
    int b2 = (int)strlen(L1), b3 = b2 + (int)strlen(L2), b4 = b3 + (int)strlen(L3),
        b5 = b4 + (int)strlen(L4);
    CHECK_EQ_INT(p.span[0].begin, 0);
    CHECK_EQ_INT(p.span[0].end, b2);
    CHECK_EQ_INT(p.span[1].begin, b2);
    CHECK_EQ_INT(p.span[2].begin, b3);
    CHECK_EQ_INT(p.span[3].begin, b4);
    CHECK_EQ_INT(p.span[4].begin, b5);
    CHECK_EQ_INT(p.span[4].end, n);

    /* token end offsets as a tokenizer would give them; a token belongs to its last byte's step:
     *  "1" | ". Query..." up to "\n" | "\n2" (spans the boundary) | ... */
    int tok_end[] = {1, b2 - 1, b2 + 1, b3, b3 + 2, b4 - 1, b4, b5, b5 + 3, n, n + 5};
    int want[] = {1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 5};
    int nt = (int)(sizeof(tok_end) / sizeof(tok_end[0])), step[16];
    she_cot_token_steps(&p, tok_end, nt, step);
    for (int i = 0; i < nt; i++)
        CHECK_MSG(step[i] == want[i], "token %d (end %d): step %d, want %d", i, tok_end[i],
                  step[i], want[i]);

    /* leading text belongs to step 1, stray text to the step line above it, and steps out of
     * order keep their own numbers */
    char buf[1024];
    snprintf(buf, sizeof(buf), "ok:\n%s%sgarbage\n%s%s%s", L1, L2, L4, L3, L5);
    n = (int)strlen(buf);
    she_cot_parse(buf, (size_t)n, &p, errstr, sizeof(errstr));
    int g = (int)(strstr(buf, "garbage") - buf), a4 = (int)(strstr(buf, "4. ") - buf),
        a3 = (int)(strstr(buf, "3. ") - buf), a5 = (int)(strstr(buf, "5. ") - buf);
    int te2[] = {2, 4, 5, g + 3, a4 + 1, a3 + 1, a5 + 1, n};
    int want2[] = {1, 1, 1, 2, 4, 3, 5, 5};
    she_cot_token_steps(&p, te2, 8, step);
    for (int i = 0; i < 8; i++)
        CHECK_MSG(step[i] == want2[i], "token %d (end %d): step %d, want %d", i, te2[i], step[i],
                  want2[i]);

    /* nothing parsable: every token is step 1 (the whole answer shares the sequence reward) */
    she_cot_parse("I think L4", 10, &p, errstr, sizeof(errstr));
    int te3[] = {2, 8, 10};
    she_cot_token_steps(&p, te3, 3, step);
    CHECK(step[0] == 1 && step[1] == 1 && step[2] == 1);
}

/* ---- prompt and helpers ---- */

static void test_prompt(void) {
    char errstr[512], buf[4096];
    she_sample_t s;
    memset(&s, 0, sizeof(s));
    s.sample_id = "s1";
    s.query = "  red\tnike\nrunning shoes ";
    s.item_title = "Nike Pegasus 39 Running Shoe, Red";
    she_kv_t attrs[2] = {{"brand", "Nike"}, {"color", "red\n"}};
    s.item_attrs = attrs;
    s.n_item_attrs = 2;
    size_t len;
    REQUIRE_OK(she_cot_format_prompt(&s, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_STR(buf, "query: red nike running shoes\n"
                   "item: Nike Pegasus 39 Running Shoe, Red\n"
                   "attributes: brand=Nike, color=red\n"
                   "answer:\n");
    CHECK_EQ_INT(len, strlen(buf));
    s.n_item_attrs = 0;
    REQUIRE_OK(she_cot_format_prompt(&s, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    CHECK_STR(buf, "query: red nike running shoes\nitem: Nike Pegasus 39 Running Shoe, Red\n"
                   "answer:\n");

    /* a long title is cut at a word boundary within SHE_COT_PROMPT_FIELD_MAX bytes */
    char title[600] = "";
    for (int i = 0; i < 60; i++)
        strcat(title, "word ");
    s.item_title = title;
    REQUIRE_OK(she_cot_format_prompt(&s, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
    const char *it = strstr(buf, "item: ") + 6;
    const char *nl = strchr(it, '\n');
    CHECK(nl - it <= SHE_COT_PROMPT_FIELD_MAX && nl - it > SHE_COT_PROMPT_FIELD_MAX - 6);
    CHECK(nl[-1] == 'd'); /* ends with a whole "word" */

    CHECK_EQ_INT(she_cot_format_prompt(&s, buf, 20, &len, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    s.query = " \n ";
    CHECK_EQ_INT(she_cot_format_prompt(&s, buf, sizeof(buf), &len, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(strstr(errstr, "s1") != NULL);
}

static void test_value_helpers(void) {
    char out[SHE_COT_MAX_TEXT], norm[64];
    she_cot_norm_category("Running-Shoes", norm, sizeof(norm));
    CHECK_STR(norm, "running shoe");
    she_cot_norm_category("  Glass  BOTTLES!! ", norm, sizeof(norm));
    CHECK_STR(norm, "glass bottle");
    she_cot_norm_category("bus", norm, sizeof(norm));
    CHECK_STR(norm, "bus"); /* 3 letters: no plural rule */
    she_cot_norm_category("", norm, sizeof(norm));
    CHECK_STR(norm, "");

    CHECK(she_cot_clean_value(" a, b;c=d\n e ", out));
    CHECK_STR(out, "a b c d e");
    CHECK(!she_cot_clean_value(" ,;= ", out));
    CHECK_STR(out, "");
    /* long text: cut at the last word boundary that fits 63 bytes */
    char lng[200] = "";
    for (int i = 0; i < 20; i++)
        strcat(lng, "abcd ");
    CHECK(she_cot_clean_value(lng, out));
    CHECK_EQ_INT(strlen(out), 59); /* 12 words of 4 + 11 spaces */
    /* one long word of 2-byte characters: cut at a character boundary */
    char u[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(u, "é");
    CHECK(she_cot_clean_value(u, out));
    CHECK_EQ_INT(strlen(out), 62);

    she_cot_interp_t in;
    memset(&in, 0, sizeof(in));
    CHECK(she_cot_interp_add(&in, "color", "red"));
    CHECK(!she_cot_interp_add(&in, "color", " red ")); /* same after cleaning */
    CHECK(she_cot_interp_add(&in, "color", "blue"));
    CHECK(!she_cot_interp_add(&in, "Color", "x"));
    CHECK(!she_cot_interp_add(&in, "size", ",,"));
    for (int i = 0; i < 10; i++) {
        char v[8];
        snprintf(v, sizeof(v), "%d", i);
        she_cot_interp_add(&in, "size", v);
    }
    CHECK_EQ_INT(in.n_attrs, SHE_COT_MAX_ATTRS);
    CHECK_STR(she_cot_step_name(4), "Attributes");
    CHECK_STR(she_cot_step_name(6), "?");
}

int main(void) {
    RUN(test_format_example);
    RUN(test_format_rejects);
    RUN(test_roundtrip_generated);
    RUN(test_parse_malformed);
    RUN(test_parse_mutations);
    RUN(test_token_steps);
    RUN(test_prompt);
    RUN(test_value_helpers);
    TEST_DONE();
}
