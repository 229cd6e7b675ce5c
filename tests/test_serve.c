/* test_serve.c -- the pure parts of `she serve` (consumers/serve.h): request parsing and
 * validation (good requests, and each kind of bad one with the message a client gets),
 * routing by query hash (normalisation, a pinned hash computed independently, determinism,
 * share accuracy, monotonic shares, shadow share), and the token-bucket rate limit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/serve.h"
#include "reader.h"
#include "test.h"

static const she_serve_limits_t limits = {.max_field_bytes = 32, .max_desc_bytes = 64,
                                          .max_attributes = 3};

/* Parses body (len: strlen unless given) and expects success. */
static int parse_ok(const char *body, she_sample_t *s) {
    char errstr[SHE_ERRSTR_SIZE] = "";
    memset(s, 0, sizeof(*s));
    she_err_t err = she_serve_parse_request(body, strlen(body), &limits, s, errstr, sizeof(errstr));
    CHECK_MSG(err == SHE_OK, "%s -> %s", body, errstr);
    return err == SHE_OK;
}

/* Expects a refusal whose message holds `want`; the sample stays empty. */
static void parse_bad_n(const char *body, size_t len, const char *want) {
    char errstr[SHE_ERRSTR_SIZE] = "";
    she_sample_t s = {0};
    she_err_t err = she_serve_parse_request(body, len, &limits, &s, errstr, sizeof(errstr));
    CHECK_MSG(err == SHE_ERR_INVALID, "accepted: %.80s", body);
    CHECK_MSG(strstr(errstr, want) != NULL, "%.80s: message \"%s\" lacks \"%s\"", body, errstr,
              want);
    CHECK_MSG(she_utf8_valid_prefix(errstr, strlen(errstr)) == strlen(errstr),
              "message is not UTF-8: %s", errstr);
    CHECK(s.query == NULL && s.item_title == NULL && s.n_item_attrs == 0);
    she_sample_clear(&s);
}

static void parse_bad(const char *body, const char *want) { parse_bad_n(body, strlen(body), want); }

static void test_parse_good(void) {
    she_sample_t s;
    if (parse_ok("{\"query\": \"red running shoes\", \"title\": \"Nike Air Zoom\", "
                 "\"attributes\": {\"color\": \"red\", \"brand\": \"nike\"}, "
                 "\"description\": \"a light shoe\"}",
                 &s)) {
        CHECK_STR(s.query, "red running shoes");
        CHECK_STR(s.item_title, "Nike Air Zoom");
        CHECK_STR(s.item_desc, "a light shoe");
        CHECK_EQ_INT(s.n_item_attrs, 2);
        if (s.n_item_attrs == 2) {
            CHECK_STR(s.item_attrs[0].key, "color");
            CHECK_STR(s.item_attrs[0].value, "red");
            CHECK_STR(s.item_attrs[1].key, "brand");
        }
        she_sample_clear(&s);
    }
    /* optional fields absent or null; UTF-8 and escapes; limits exactly met */
    if (parse_ok("{\"title\":\"t\",\"query\":\"caf\\u00e9 \xe2\x82\xac\",\"attributes\":null,"
                 "\"description\":null}", &s)) {
        CHECK_STR(s.query, "caf\xc3\xa9 \xe2\x82\xac");
        CHECK(s.item_desc == NULL && s.n_item_attrs == 0);
        she_sample_clear(&s);
    }
    char body[512];
    snprintf(body, sizeof(body), "{\"query\":\"%032d\",\"title\":\"t\",\"attributes\":{\"a\":\"1\","
             "\"b\":\"2\",\"c\":\"3\"}}", 7);
    if (parse_ok(body, &s)) {
        CHECK_EQ_INT(strlen(s.query), 32);
        CHECK_EQ_INT(s.n_item_attrs, 3);
        she_sample_clear(&s);
    }
}

static void test_parse_bad(void) {
    parse_bad("", "invalid JSON at line 1");
    parse_bad("{\"query\": \"q\", \"title\": ", "invalid JSON at line 1, column");
    parse_bad("{\"query\": \"q\",\n \"title\": \"t\"", "invalid JSON at line 2");
    parse_bad("not json", "invalid JSON");
    parse_bad("{\"query\":\"q\",\"title\":\"t\"} trailing", "invalid JSON");
    parse_bad("{\"query\":\"q\xff\",\"title\":\"t\"}", "invalid JSON");        /* not UTF-8 */
    parse_bad("{\"query\":\"a\\u0000b\",\"title\":\"t\"}", "invalid JSON");     /* NUL escape */
    /* jansson quotes the bytes near the error, here half a character: the message stays UTF-8
     * (found by the fuzz target) */
    parse_bad("{\"query\":\"q\",\"title\":\"\\u0\xd0\x99\x63\"}", "invalid JSON");
    parse_bad_n("{\"query\":\"q\",\"title\":\"t\"}\0", 26, "invalid JSON");   /* NUL byte */
    parse_bad("{\"query\":\"a\",\"query\":\"b\",\"title\":\"t\"}", "duplicate");
    parse_bad("[\"query\", \"title\"]", "must be a JSON object, got an array");
    parse_bad("\"query\"", "must be a JSON object, got a string");
    parse_bad("42", "must be a JSON object, got an integer");
    parse_bad("{\"title\":\"t\"}", "field \"query\" is required");
    parse_bad("{\"query\":\"q\"}", "field \"title\" is required");
    parse_bad("{\"query\":1,\"title\":\"t\"}", "field \"query\": expected a string, got an integer");
    parse_bad("{\"query\":\"q\",\"title\":null}", "field \"title\": expected a string, got null");
    parse_bad("{\"query\":[\"q\"],\"title\":\"t\"}", "field \"query\": expected a string, got an array");
    parse_bad("{\"query\":\"q\",\"title\":true}", "field \"title\": expected a string, got a boolean");
    parse_bad("{\"query\":\" \\t\\n \",\"title\":\"t\"}", "field \"query\" is empty");
    parse_bad("{\"query\":\"q\",\"title\":\"\"}", "field \"title\" is empty");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"description\":3.5}",
              "field \"description\": expected a string, got a number");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":[\"red\"]}",
              "field \"attributes\": expected an object of strings, got an array");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":\"color=red\"}",
              "expected an object of strings, got a string");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"size\":10}}",
              "\"size\": expected a string, got an integer");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"size\":{\"eu\":\"42\"}}}",
              "\"size\": expected a string, got an object");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"\":\"x\"}}",
              "an attribute name is empty");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\","
              "\"d\":\"4\"}}", "has 4 entries, over the limit of 3");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"colour\":\"red\"}", "unknown field \"colour\"");
    parse_bad("{\"query\":\"q\",\"title\":\"t\",\"Query\":\"q\"}", "unknown field \"Query\"");
    /* sizes: one byte over each limit */
    char body[1024], big[200];
    memset(big, 'x', sizeof(big));
    snprintf(body, sizeof(body), "{\"query\":\"%.33s\",\"title\":\"t\"}", big);
    parse_bad(body, "field \"query\" is 33 bytes, over the limit of 32");
    snprintf(body, sizeof(body), "{\"query\":\"q\",\"title\":\"%.40s\"}", big);
    parse_bad(body, "field \"title\" is 40 bytes, over the limit of 32");
    snprintf(body, sizeof(body), "{\"query\":\"q\",\"title\":\"t\",\"description\":\"%.65s\"}", big);
    parse_bad(body, "field \"description\" is 65 bytes, over the limit of 64");
    snprintf(body, sizeof(body), "{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"k\":\"%.33s\"}}",
             big);
    parse_bad(body, "\"k\" is 33 bytes, over the limit of 32");
    snprintf(body, sizeof(body), "{\"query\":\"q\",\"title\":\"t\",\"attributes\":{\"%.33s\":\"v\"}}",
             big);
    parse_bad(body, "is 33 bytes, over the limit of 32");
    /* a long unknown name is quoted cut, on a character boundary (2-byte characters) */
    char name[400] = "";
    for (int i = 0; i < 100; i++)
        strcat(name, "\xc3\xa9");
    snprintf(body, sizeof(body), "{\"%s\":1}", name);
    parse_bad(body, "...\" (expected query");
    /* nesting far past the parser's depth limit fails cleanly */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    REQUIRE(deep != NULL);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    parse_bad(deep, "invalid JSON");
    free(deep);
}

/* ---- routing ---- */

static double position(uint64_t h) { return (double)(h >> 11) * 0x1.0p-53; }

static void test_route_hash(void) {
    /* normalisation: case, whitespace runs, ends */
    uint64_t h = she_serve_query_hash("red running shoes");
    CHECK(she_serve_query_hash("  Red \t Running\n SHOES ") == h);
    CHECK(she_serve_query_hash("red runningshoes") != h);
    CHECK(she_serve_query_hash("red running shoe") != h);
    /* pinned: FNV-1a 64 of "red running shoes", splitmix64's finaliser (computed in Python),
     * so every replica and every release routes a query the same way */
    CHECK(h == 0x711b7abbbe619e2aull);
    /* non-ASCII bytes are kept as they are */
    CHECK(she_serve_query_hash("caf\xc3\xa9") != she_serve_query_hash("caf\xc3\x89"));
    CHECK_EQ_INT(she_serve_route(h, 0.0, 1.0, NULL), SHE_SERVE_ROLE_STABLE);
    CHECK_EQ_INT(she_serve_route(h, 1.0, 1.0, NULL), SHE_SERVE_ROLE_CANARY);
    CHECK_EQ_INT(she_serve_route(h, 0.44, 0, NULL), SHE_SERVE_ROLE_STABLE); /* at 0.4418 */
    CHECK_EQ_INT(she_serve_route(h, 0.45, 0, NULL), SHE_SERVE_ROLE_CANARY);
    CHECK_STR(she_serve_role_name(SHE_SERVE_ROLE_STABLE), "stable");
    CHECK_STR(she_serve_role_name(SHE_SERVE_ROLE_CANARY), "canary");
}

static void test_route_shares(void) {
    const int n = 40000;
    const double shares[] = {0.01, 0.1, 0.5, 0.9};
    int canary_at[4] = {0}, shadowed = 0, monotonic_ok = 1, deterministic = 1;
    char q[64];
    for (int i = 0; i < n; i++) {
        snprintf(q, sizeof(q), "query number %d", i);
        uint64_t h = she_serve_query_hash(q);
        int prev = 0;
        for (int k = 0; k < 4; k++) {
            int shadow = 0;
            int c = she_serve_route(h, shares[k], 0.25, &shadow) == SHE_SERVE_ROLE_CANARY;
            canary_at[k] += c;
            monotonic_ok &= c >= prev; /* a larger share only adds queries to the canary */
            prev = c;
            if (k == 2)
                shadowed += shadow;
            CHECK(!shadow || c);
        }
        int again = 0;
        deterministic &= she_serve_route(she_serve_query_hash(q), 0.5, 0.25, &again) ==
                             she_serve_route(h, 0.5, 0.25, NULL);
    }
    CHECK(monotonic_ok);
    CHECK(deterministic);
    for (int k = 0; k < 4; k++) {
        double got = (double)canary_at[k] / n;
        /* 4 standard deviations of a binomial share */
        double tol = 4 * sqrt(shares[k] * (1 - shares[k]) / n);
        CHECK_MSG(fabs(got - shares[k]) <= tol, "share %.2f: %.4f of queries routed (tol %.4f)",
                  shares[k], got, tol);
    }
    double shadow_rate = (double)shadowed / canary_at[2];
    CHECK_MSG(fabs(shadow_rate - 0.25) <= 4 * sqrt(0.25 * 0.75 / canary_at[2]),
              "shadow share 0.25: %.4f of canary queries", shadow_rate);
    /* the shadow draw is independent of the canary draw: shadowed queries are spread over
     * the canary range, not bunched at its low end */
    int low = 0, high = 0;
    for (int i = 0; i < n; i++) {
        snprintf(q, sizeof(q), "query number %d", i);
        uint64_t h = she_serve_query_hash(q);
        int shadow = 0;
        if (she_serve_route(h, 0.5, 0.25, &shadow) == SHE_SERVE_ROLE_CANARY && shadow)
            *(position(h) < 0.25 ? &low : &high) += 1;
    }
    CHECK_MSG(abs(low - high) < 0.15 * (low + high), "shadowed: %d low, %d high", low, high);
}

/* ---- rate limit ---- */

static void test_bucket(void) {
    /* times are binary fractions, so the token arithmetic is exact */
    she_serve_bucket_t *b = she_serve_bucket_new(8, 5);
    int ok = 0;
    for (int i = 0; i < 8; i++)
        ok += she_serve_bucket_take(b, 100.0);
    CHECK_EQ_INT(ok, 5); /* starts full: the burst */
    CHECK_EQ_INT(she_serve_bucket_take(b, 100.0625), 0); /* half a token */
    CHECK_EQ_INT(she_serve_bucket_take(b, 100.125), 1);  /* 8/s: one token per 0.125 s */
    CHECK_EQ_INT(she_serve_bucket_take(b, 100.125), 0);
    CHECK_EQ_INT(she_serve_bucket_take(b, 99.0), 0); /* a late clock reading adds nothing */
    ok = 0;
    for (int i = 0; i < 20; i++)
        ok += she_serve_bucket_take(b, 200.0);
    CHECK_EQ_INT(ok, 5); /* an idle minute saves up the burst, no more */
    she_serve_bucket_free(b);
    b = she_serve_bucket_new(0.5, 0); /* burst below 1 means 1 */
    CHECK_EQ_INT(she_serve_bucket_take(b, 0), 1);
    CHECK_EQ_INT(she_serve_bucket_take(b, 1.9), 0);
    CHECK_EQ_INT(she_serve_bucket_take(b, 2.0), 1);
    she_serve_bucket_free(b);
    she_serve_bucket_free(NULL);
}

int main(void) {
    RUN(test_parse_good);
    RUN(test_parse_bad);
    RUN(test_route_hash);
    RUN(test_route_shares);
    RUN(test_bucket);
    TEST_DONE();
}
