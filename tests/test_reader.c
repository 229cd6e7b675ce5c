/* test_reader.c -- CSV / JSON Lines readers, column and label maps, the JSON Lines writer,
 * and the split by query (core/reader.h, core/dataset.h).
 *
 * Fixtures (tests/fixtures/reader_*): small hand-made files with good and bad rows.  When
 * ../shared/data/homedepot/train.csv exists beside the repository, the Home Depot preset is
 * also checked against the counts its README gives; otherwise that check is skipped. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "gendata.h"
#include "reader.h"
#include "test.h"

static char fixture_path[4096];

static const char *fixture(const char *name) {
    const char *root = getenv("SHE_SOURCE_DIR");
    snprintf(fixture_path, sizeof(fixture_path), "%s/tests/fixtures/%s", root ? root : ".", name);
    return fixture_path;
}

static she_dataset_t *load(const char *path, const char *format, const char *columns,
                           const char *labels, she_reader_stats_t *st) {
    char errstr[SHE_ERRSTR_SIZE];
    she_dataset_t *ds = she_dataset_new();
    she_reader_opts_t o = {format, columns, labels};
    she_err_t err = she_dataset_load(ds, path, &o, st, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        fprintf(stderr, "load %s: %s\n", path, errstr);
        she_dataset_free(ds);
        return NULL;
    }
    return ds;
}

/* 1 when some kept message contains every needle. */
static int has_message(const she_reader_stats_t *st, const char *a, const char *b) {
    for (int i = 0; i < st->n_messages; i++)
        if (strstr(st->messages[i], a) && (!b || strstr(st->messages[i], b)))
            return 1;
    return 0;
}

static void dump_messages(const she_reader_stats_t *st) {
    for (int i = 0; i < st->n_messages; i++)
        fprintf(stderr, "   message: %s\n", st->messages[i]);
}

static const char *attr(const she_kv_t *kv, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return kv[i].value;
    return NULL;
}

/* ---- label maps ---- */

static void test_label_map_thresholds(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_label_map_t *lm = NULL;
    REQUIRE_OK(she_label_map_new("homedepot", &lm, errstr, sizeof(errstr)));
    /* shared/data/README.md: L1 < 1.5 <= L2 <= 2.0 < L3 < 3.0 = L4 */
    static const struct {
        const char *v;
        she_grade_t g;
    } cases[] = {{"1", SHE_GRADE_L1},    {"1.0", SHE_GRADE_L1}, {"1.33", SHE_GRADE_L1},
                 {"1.5", SHE_GRADE_L2},  {"1.67", SHE_GRADE_L2}, {"2.0", SHE_GRADE_L2},
                 {"2", SHE_GRADE_L2},    {"2.33", SHE_GRADE_L3}, {"2.5", SHE_GRADE_L3},
                 {"2.67", SHE_GRADE_L3}, {" 3.0 ", SHE_GRADE_L4}, {"3", SHE_GRADE_L4}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        she_grade_t g = SHE_GRADE_UNKNOWN;
        CHECK_OK(she_label_map_apply(lm, cases[i].v, &g, errstr, sizeof(errstr)));
        CHECK_MSG(g == cases[i].g, "'%s' -> %s, want %s", cases[i].v, she_grade_name(g),
                  she_grade_name(cases[i].g));
    }
    she_grade_t g;
    CHECK(she_label_map_apply(lm, "3.5", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(strstr(errstr, "3.5") != NULL);
    CHECK(she_label_map_apply(lm, "high", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_label_map_apply(lm, "", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_label_map_free(lm);

    /* The same thresholds written out, with else. */
    REQUIRE_OK(she_label_map_new("lt1.5=L1, le2.0=L2, lt3.0=L3, else=L4", &lm, errstr,
                                 sizeof(errstr)));
    CHECK_OK(she_label_map_apply(lm, "7", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L4);
    CHECK_OK(she_label_map_apply(lm, "n/a", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L4); /* else takes anything */
    she_label_map_free(lm);
    REQUIRE_OK(she_label_map_new("gt2=L4,ge1=L3,eq0=L1", &lm, errstr, sizeof(errstr)));
    CHECK_OK(she_label_map_apply(lm, "1", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L3);
    CHECK_OK(she_label_map_apply(lm, "2.5", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L4);
    CHECK(she_label_map_apply(lm, "0.5", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_label_map_free(lm);
}

static void test_label_map_values(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_label_map_t *lm = NULL;
    she_grade_t g;
    REQUIRE_OK(she_label_map_new("0=L1,1=L2,2=L3,3=L4", &lm, errstr, sizeof(errstr)));
    CHECK_OK(she_label_map_apply(lm, "2", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L3);
    CHECK_OK(she_label_map_apply(lm, "2.0", &g, errstr, sizeof(errstr))); /* numbers as numbers */
    CHECK(g == SHE_GRADE_L3);
    CHECK_OK(she_label_map_apply(lm, " 0 ", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L1);
    CHECK(she_label_map_apply(lm, "4", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_label_map_free(lm);

    REQUIRE_OK(she_label_map_new("Exact=L4,Substitute=L3,Complement=L2,Irrelevant=L1", &lm,
                                 errstr, sizeof(errstr)));
    CHECK_OK(she_label_map_apply(lm, "Substitute", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L3);
    CHECK(she_label_map_apply(lm, "exact", &g, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_label_map_free(lm);

    REQUIRE_OK(she_label_map_new("grades", &lm, errstr, sizeof(errstr)));
    CHECK_OK(she_label_map_apply(lm, "L2", &g, errstr, sizeof(errstr)));
    CHECK(g == SHE_GRADE_L2);
    she_label_map_free(lm);

    static const char *const bad[] = {"", " , ", "lt1.5", "x=L5", "=L1", "a=L1,b", "a=l1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lm = (she_label_map_t *)1;
        CHECK_MSG(she_label_map_new(bad[i], &lm, errstr, sizeof(errstr)) == SHE_ERR_INVALID,
                  "'%s' accepted", bad[i]);
        CHECK(lm == NULL);
    }
}

/* ---- CSV ---- */

static void test_csv_good(void) {
    she_reader_stats_t st;
    she_dataset_t *ds = load(fixture("reader_good.csv"), "auto", NULL, NULL, &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_rows, 4);
    CHECK_EQ_INT(st.n_ok, 4);
    CHECK_EQ_INT(st.n_bad, 0);
    REQUIRE(ds->n == 4);
    const she_sample_t *s = ds->samples;
    CHECK_STR(s[0].sample_id, "s1"); /* the BOM did not stick to the first header name */
    CHECK_STR(s[0].item_title, "Wool Sweater, Red");
    CHECK(s[0].item_desc == NULL);
    CHECK_EQ_INT(s[0].n_item_attrs, 2);
    CHECK_STR(attr(s[0].item_attrs, s[0].n_item_attrs, "material"), "wool");
    CHECK(s[0].grade == SHE_GRADE_L4);
    CHECK(!s[0].has_steps);
    CHECK_STR(s[1].query, "12\" frying pan");
    CHECK_STR(s[1].item_title, "Lodge 12\" Skillet");
    CHECK_STR(s[1].item_desc, "Cast iron.\r\nPre-seasoned, ready to use.");
    CHECK(s[1].grade == SHE_GRADE_L3);
    CHECK_STR(s[2].item_title, "Dome Tent");
    CHECK(s[2].grade == SHE_GRADE_L2);
    CHECK_STR(s[3].query, "h\xc3\xa9llo w\xc3\xb6rld"); /* last line has no newline */
    CHECK(s[3].item_id == NULL);
    CHECK(s[3].grade == SHE_GRADE_L1);
    she_dataset_free(ds);
}

static void test_csv_bad_rows(void) {
    she_reader_stats_t st;
    she_dataset_t *ds = load(fixture("reader_bad.csv"), "csv", "id=id,query=q,title=t,label=score",
                             "0=L1,1=L2,2=L3,3=L4", &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_rows, 10);
    CHECK_EQ_INT(st.n_ok, 4);
    CHECK_EQ_INT(st.n_bad, 6);
    CHECK_EQ_INT(st.n_messages, 6);
    REQUIRE(ds->n == 4);
    /* Every good row survived, including the ones right after the stray quote. */
    CHECK_STR(ds->samples[0].sample_id, "1");
    CHECK_STR(ds->samples[1].sample_id, "3");
    CHECK_STR(ds->samples[2].sample_id, "8");
    CHECK_STR(ds->samples[2].query, "quoted \"ok\"");
    CHECK_STR(ds->samples[3].sample_id, "10");
    CHECK(ds->samples[3].grade == SHE_GRADE_L2); /* "1.0" against the value "1" */
    /* file:line:col: reason */
    CHECK(has_message(&st, "reader_bad.csv:", "opened at 3:3"));
    CHECK(has_message(&st, "reader_bad.csv:5:", "expected 4 fields as in the header, got 5"));
    CHECK(has_message(&st, "reader_bad.csv:6: column 4 'score'", "label '7' matches no rule"));
    CHECK(has_message(&st, "reader_bad.csv:7:3: invalid UTF-8", "0xff"));
    CHECK(has_message(&st, "reader_bad.csv:8: query is missing or empty", "column 2 'q'"));
    CHECK(has_message(&st, "reader_bad.csv:10:6: text after the closing quote", NULL));
    she_dataset_free(ds);
}

static void test_csv_missing_column(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_reader_stats_t st;
    she_dataset_t *ds = she_dataset_new();
    she_reader_opts_t o = {"csv", "query=search_term,title=product_title,label=relevance", NULL};
    she_err_t err =
        she_dataset_load(ds, fixture("reader_bad.csv"), &o, &st, errstr, sizeof(errstr));
    CHECK(err == SHE_ERR_FORMAT);
    CHECK_MSG(strstr(errstr, "reader_bad.csv:1: missing column 'search_term' (for query)") &&
                  strstr(errstr, "'score'"),
              "%s", errstr);
    CHECK(ds->n == 0);
    she_dataset_free(ds);

    /* The default mapping needs only query and item_title. */
    ds = she_dataset_new();
    o = (she_reader_opts_t){"csv", NULL, NULL};
    CHECK(she_dataset_load(ds, fixture("reader_homedepot.csv"), &o, &st, errstr,
                           sizeof(errstr)) == SHE_ERR_FORMAT);
    CHECK(strstr(errstr, "missing column 'query'") != NULL);
    she_dataset_free(ds);

    /* Bad mappings are refused before reading. */
    static const char *const bad[] = {"query=q", "query=q,title", "querry=q,title=t",
                                      "query=,title=t"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        she_reader_t *rd = NULL;
        o = (she_reader_opts_t){"csv", bad[i], NULL};
        CHECK_MSG(she_reader_new("x", &o, &rd, errstr, sizeof(errstr)) == SHE_ERR_INVALID,
                  "'%s' accepted", bad[i]);
        CHECK(rd == NULL);
    }
}

/* Feeds text in pieces of `step` bytes and returns the samples' ids joined by '|'. */
static void feed_and_collect(const char *format, const char *text, size_t len, size_t step,
                             char *ids, size_t n_ids, she_reader_stats_t *st_out) {
    char errstr[SHE_ERRSTR_SIZE];
    she_reader_opts_t o = {format, NULL, NULL};
    she_reader_t *rd = NULL;
    ids[0] = '\0';
    REQUIRE_OK(she_reader_new("mem", &o, &rd, errstr, sizeof(errstr)));
    for (size_t off = 0;; off += step) {
        if (off < len)
            she_reader_feed(rd, text + off, off + step <= len ? step : len - off);
        else
            she_reader_finish(rd);
        for (;;) {
            she_sample_t s = {0};
            int got = 0;
            CHECK_OK(she_reader_next(rd, &s, &got, errstr, sizeof(errstr)));
            if (!got)
                break;
            snprintf(ids + strlen(ids), n_ids - strlen(ids), "%s|", s.sample_id);
            she_sample_clear(&s);
        }
        if (off >= len)
            break;
    }
    *st_out = *she_reader_stats(rd);
    she_reader_free(rd);
}

static void test_streaming_chunks(void) {
    /* Splitting the input anywhere -- inside a BOM, a CRLF, a "" escape -- changes nothing. */
    static const char csv[] =
        "\xef\xbb\xbfsample_id,query,item_title,grade\r\n"
        "a,\"q, one\",\"t \"\"1\"\"\",L1\r\n"
        "b,q2,\"multi\nline\",L2\r\n"
        "c,\"q3\",t3,L3\r\n"
        "d,q4,t4,L4";
    static const char jsonl[] = "{\"sample_id\":\"a\",\"query\":\"q\",\"item_title\":\"t\"}\r\n"
                                "\n"
                                "{\"sample_id\":\"b\",\"query\":\"q\",\"item_title\":\"t\"}\n"
                                "{\"sample_id\":\"c\",\"query\":\"q\",\"item_title\":\"t\"}";
    char ids[256];
    she_reader_stats_t st;
    for (size_t step = 1; step <= sizeof(csv); step++) {
        feed_and_collect("csv", csv, sizeof(csv) - 1, step, ids, sizeof(ids), &st);
        CHECK_MSG(strcmp(ids, "a|b|c|d|") == 0 && st.n_bad == 0, "step %zu: '%s'", step, ids);
    }
    for (size_t step = 1; step <= sizeof(jsonl); step++) {
        feed_and_collect("jsonl", jsonl, sizeof(jsonl) - 1, step, ids, sizeof(ids), &st);
        CHECK_MSG(strcmp(ids, "a|b|c|") == 0 && st.n_bad == 0, "step %zu: '%s'", step, ids);
    }
}

static void test_follow_partial_line(void) {
    /* As `tail -f` sees a file: a half-written line waits, it is not an error. */
    char errstr[SHE_ERRSTR_SIZE];
    she_reader_opts_t o = {"jsonl", NULL, NULL};
    she_reader_t *rd = NULL;
    REQUIRE_OK(she_reader_new("follow", &o, &rd, errstr, sizeof(errstr)));
    she_sample_t s = {0};
    int got = 1;
    const char *part1 = "{\"query\":\"q\",\"item_t";
    she_reader_feed(rd, part1, strlen(part1));
    CHECK_OK(she_reader_next(rd, &s, &got, errstr, sizeof(errstr)));
    CHECK(got == 0);
    const char *part2 = "itle\":\"t\"}\n{\"query\":";
    she_reader_feed(rd, part2, strlen(part2));
    CHECK_OK(she_reader_next(rd, &s, &got, errstr, sizeof(errstr)));
    CHECK(got == 1);
    CHECK_STR(s.item_title, "t");
    CHECK(s.sample_id && s.sample_id[0] == 'h' && strlen(s.sample_id) == 17); /* derived */
    she_sample_clear(&s);
    CHECK_OK(she_reader_next(rd, &s, &got, errstr, sizeof(errstr)));
    CHECK(got == 0);
    CHECK_EQ_INT(she_reader_stats(rd)->n_bad, 0);
    she_reader_finish(rd); /* the writer died mid-line: now it is a bad row */
    CHECK_OK(she_reader_next(rd, &s, &got, errstr, sizeof(errstr)));
    CHECK(got == 0);
    CHECK_EQ_INT(she_reader_stats(rd)->n_bad, 1);
    she_reader_free(rd);
}

static void test_csv_unterminated_at_eof(void) {
    static const char csv[] = "query,item_title\n\"open,t1\nq2,t2\nq3,t3\n";
    char ids[256];
    she_reader_stats_t st;
    feed_and_collect("csv", csv, sizeof(csv) - 1, sizeof(csv), ids, sizeof(ids), &st);
    CHECK_EQ_INT(st.n_ok, 2); /* the rows after the stray quote are kept */
    CHECK_EQ_INT(st.n_bad, 1);
    CHECK(has_message(&st, "mem:2:1: unterminated quoted field", NULL));
    dump_messages(&st);
}

static void test_derived_ids_stable(void) {
    she_reader_stats_t st;
    she_dataset_t *a = load(fixture("reader_good.jsonl"), "auto", NULL, NULL, &st);
    she_dataset_t *b = load(fixture("reader_good.jsonl"), "jsonl", NULL, NULL, &st);
    REQUIRE(a && b && a->n == 3 && b->n == 3);
    CHECK_STR(a->samples[1].sample_id, b->samples[1].sample_id);
    CHECK(a->samples[1].sample_id[0] == 'h');
    she_dataset_free(a);
    she_dataset_free(b);
}

/* ---- JSON Lines ---- */

static void test_jsonl_good(void) {
    she_reader_stats_t st;
    she_dataset_t *ds = load(fixture("reader_good.jsonl"), "auto", NULL, NULL, &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_rows, 3);
    CHECK_EQ_INT(st.n_bad, 0);
    REQUIRE(ds->n == 3);
    const she_sample_t *s = ds->samples;
    CHECK_STR(s[0].sample_id, "j1");
    CHECK_EQ_INT(s[0].n_item_attrs, 2);
    CHECK_STR(s[0].item_attrs[0].key, "color"); /* object order kept */
    CHECK_STR(s[0].item_attrs[1].value, "wool");
    CHECK(s[0].grade == SHE_GRADE_L4);
    CHECK_STR(s[1].item_id, "P9");
    CHECK(s[1].grade == SHE_GRADE_L2);
    CHECK_EQ_INT(s[2].n_item_attrs, 2); /* "color:blue; size:M" */
    CHECK_STR(attr(s[2].item_attrs, s[2].n_item_attrs, "size"), "M");
    CHECK(s[2].has_steps);
    CHECK_STR(s[2].query_category, "sweater");
    CHECK(s[2].cat_match == SHE_CAT_MATCH_EXACT);
    CHECK(s[2].attr_match == SHE_ATTR_MATCH_NONE);
    she_dataset_free(ds);
}

static void test_jsonl_bad_rows(void) {
    she_reader_stats_t st;
    she_dataset_t *ds = load(fixture("reader_bad.jsonl"), "jsonl", NULL, NULL, &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_rows, 9);
    CHECK_EQ_INT(st.n_ok, 2);
    CHECK_EQ_INT(st.n_bad, 7);
    REQUIRE(ds->n == 2);
    CHECK_STR(ds->samples[0].query, "ok");
    CHECK_STR(ds->samples[1].query, "ok2");
    CHECK(has_message(&st, "reader_bad.jsonl:2:", "invalid JSON"));
    CHECK(has_message(&st, "reader_bad.jsonl:3:1: not a JSON object", NULL));
    CHECK(has_message(&st, "reader_bad.jsonl:4: field 'grade'", "'L9' matches no rule"));
    CHECK(has_message(&st, "reader_bad.jsonl:5:11: invalid UTF-8", NULL));
    CHECK(has_message(&st, "reader_bad.jsonl:6: query is missing", NULL));
    CHECK(has_message(&st, "reader_bad.jsonl:7: field 'cat_match'", "'maybe'"));
    CHECK(has_message(&st, "reader_bad.jsonl:8: field 'item_title'", "expected a string"));
    she_dataset_free(ds);
}

static void test_messages_capped(void) {
    /* 25 bad rows: all counted, the first SHE_READER_MAX_MESSAGES kept. */
    char text[2048] = "";
    for (int i = 0; i < 25; i++)
        strcat(text, "{not json}\n");
    strcat(text, "{\"query\":\"q\",\"item_title\":\"t\"}\n");
    char ids[64];
    she_reader_stats_t st;
    feed_and_collect("jsonl", text, strlen(text), 100, ids, sizeof(ids), &st);
    CHECK_EQ_INT(st.n_bad, 25);
    CHECK_EQ_INT(st.n_ok, 1);
    CHECK_EQ_INT(st.n_messages, SHE_READER_MAX_MESSAGES);
    CHECK(strstr(st.messages[0], "mem:1:") != NULL);
    CHECK(strstr(st.messages[SHE_READER_MAX_MESSAGES - 1], "mem:10:") != NULL);
}

static void test_utf8_validator(void) {
    static const struct {
        const char *s;
        size_t ok;
    } cases[] = {
        {"plain", 5},           {"\xc3\xa9t\xc3\xa9", 5},  {"a\xc0\xaf", 1}, /* overlong */
        {"ab\xed\xa0\x80", 2},  /* surrogate */            {"\xf4\x90\x80\x80", 0},
        {"\xe2\x82", 0},        /* truncated */            {"\xf0\x9f\x98\x80!", 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_EQ_INT(she_utf8_valid_prefix(cases[i].s, strlen(cases[i].s)), cases[i].ok);
    CHECK_EQ_INT(she_utf8_valid_prefix("a\0b", 3), 1); /* NUL */
}

/* ---- Home Depot preset ---- */

static void test_homedepot_fixture(void) {
    she_reader_stats_t st;
    she_dataset_t *ds = load(fixture("reader_homedepot.csv"), "homedepot", NULL, NULL, &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_bad, 0);
    REQUIRE(ds->n == 8);
    static const she_grade_t want[8] = {SHE_GRADE_L4, SHE_GRADE_L1, SHE_GRADE_L3, SHE_GRADE_L2,
                                        SHE_GRADE_L2, SHE_GRADE_L3, SHE_GRADE_L1, SHE_GRADE_L3};
    for (int i = 0; i < 8; i++)
        CHECK_MSG(ds->samples[i].grade == want[i], "row %d: %s", i + 1,
                  she_grade_name(ds->samples[i].grade));
    CHECK_STR(ds->samples[0].sample_id, "1");
    CHECK_STR(ds->samples[0].item_id, "200001");
    CHECK_STR(ds->samples[0].query, "claw hammer");
    CHECK_STR(ds->samples[0].item_title, "Acme 16 oz. Claw Hammer, Fiberglass Handle");
    CHECK_STR(ds->samples[7].item_title, "Acme 2 in. x 4 in. x 8 ft. \"Premium\" Stud");
    she_dataset_free(ds);

    /* The preset is only a mapping: the same file read with explicit options agrees. */
    she_dataset_t *ex = load(fixture("reader_homedepot.csv"), "csv",
                             "id=id,item_id=product_uid,title=product_title,query=search_term,"
                             "label=relevance",
                             "lt1.5=L1,le2=L2,lt3=L3,eq3=L4", &st);
    REQUIRE(ex && ex->n == 8);
    for (int i = 0; i < 8; i++)
        CHECK(ex->samples[i].grade == want[i]);
    she_dataset_free(ex);
}

static void check_query_split(const she_dataset_t *ds, double frac, uint64_t seed, double tol) {
    she_dataset_t *train = she_dataset_new(), *val = she_dataset_new();
    she_dataset_split_by_query(ds, frac, seed, train, val);
    CHECK_EQ_INT(train->n + val->n, ds->n);
    /* Distinct normalised queries on each side; none on both. */
    size_t n_q = 0, n_val_q = 0, shared = 0;
    char **seen = calloc(ds->n, sizeof(char *));
    int *side = calloc(ds->n, sizeof(int));
    for (int k = 0; k < 2; k++) {
        const she_dataset_t *part = k ? val : train;
        for (size_t i = 0; i < part->n; i++) {
            char *norm = she_query_normalize(part->samples[i].query);
            size_t j = 0;
            /* Linear probing on a hash table sized to the rows. */
            size_t h = she_hash64(norm, strlen(norm)) % ds->n;
            for (j = h; seen[j] && strcmp(seen[j], norm) != 0; j = (j + 1) % ds->n)
                ;
            if (!seen[j]) {
                seen[j] = norm;
                side[j] = k;
                n_q++;
                n_val_q += k;
            } else {
                shared += side[j] != k;
                free(norm);
            }
        }
    }
    CHECK_EQ_INT(shared, 0);
    double f = (double)n_val_q / (double)n_q;
    CHECK_MSG(f > frac - tol && f < frac + tol, "validation has %.4f of %zu queries, want %.2f",
              f, n_q, frac);
    fprintf(stderr, "   split: %zu queries, %.4f in validation, %zu/%zu rows\n", n_q, f, val->n,
            ds->n);
    for (size_t i = 0; i < ds->n; i++)
        free(seen[i]);
    free(seen);
    free(side);
    she_dataset_free(train);
    she_dataset_free(val);
}

static void test_homedepot_real(void) {
    const char *root = getenv("SHE_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/../shared/data/homedepot/train.csv", root ? root : ".");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "   skipped: %s not found\n", path);
        return;
    }
    she_reader_stats_t st;
    she_dataset_t *ds = load(path, "homedepot", NULL, NULL, &st);
    REQUIRE(ds != NULL);
    dump_messages(&st);
    CHECK_EQ_INT(st.n_rows, 59775);
    CHECK_EQ_INT(st.n_bad, 0);
    REQUIRE(ds->n == 59775);
    long long counts[5] = {0};
    for (size_t i = 0; i < ds->n; i++)
        counts[ds->samples[i].grade]++;
    CHECK_EQ_INT(counts[SHE_GRADE_L1], 4228);
    CHECK_EQ_INT(counts[SHE_GRADE_L2], 14951);
    CHECK_EQ_INT(counts[SHE_GRADE_L3], 25218);
    CHECK_EQ_INT(counts[SHE_GRADE_L4], 15378);
    check_query_split(ds, 0.15, 42, 0.02);
    she_dataset_free(ds);
}

/* ---- split, round trip ---- */

static she_err_t take(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    she_dataset_take(opaque, s);
    return SHE_OK;
}

static she_dataset_t *generate(long long n, uint64_t seed, double noise) {
    char errstr[SHE_ERRSTR_SIZE];
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = n;
    o.seed = seed;
    o.noise = noise;
    she_dataset_t *ds = she_dataset_new();
    if (she_gendata_run(&o, take, ds, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "gendata: %s\n", errstr);
        she_dataset_free(ds);
        return NULL;
    }
    return ds;
}

static void test_split_by_query(void) {
    she_dataset_t *ds = generate(20000, 11, 0.0);
    REQUIRE(ds != NULL);
    check_query_split(ds, 0.15, 1, 0.03);
    check_query_split(ds, 0.5, 2, 0.04);
    /* The split ignores case and spacing, and depends on the seed. */
    CHECK(she_split_is_validation("Red  Sweater ", 0.3, 9) ==
          she_split_is_validation("red sweater", 0.3, 9));
    char *norm = she_query_normalize("  Red \t Sweater  ");
    CHECK_STR(norm, "red sweater");
    free(norm);
    int differ = 0;
    for (uint64_t seed = 0; seed < 64; seed++)
        differ += she_split_is_validation("red sweater", 0.5, seed) !=
                  she_split_is_validation("red sweater", 0.5, 0);
    CHECK(differ > 0);
    CHECK(!she_split_is_validation("anything", 0.0, 3));
    CHECK(she_split_is_validation("anything", 1.0, 3));
    she_dataset_free(ds);
}

static int kv_equal(const she_kv_t *a, int na, const she_kv_t *b, int nb) {
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i].key, b[i].key) != 0 || strcmp(a[i].value, b[i].value) != 0)
            return 0;
    return 1;
}

static int str_equal(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int sample_equal(const she_sample_t *a, const she_sample_t *b) {
    return str_equal(a->sample_id, b->sample_id) && str_equal(a->query, b->query) &&
           str_equal(a->item_id, b->item_id) && str_equal(a->item_title, b->item_title) &&
           str_equal(a->item_desc, b->item_desc) &&
           kv_equal(a->item_attrs, a->n_item_attrs, b->item_attrs, b->n_item_attrs) &&
           str_equal(a->query_type, b->query_type) && str_equal(a->domain, b->domain) &&
           a->grade == b->grade && a->has_steps == b->has_steps &&
           str_equal(a->query_category, b->query_category) &&
           kv_equal(a->query_attrs, a->n_query_attrs, b->query_attrs, b->n_query_attrs) &&
           str_equal(a->item_category, b->item_category) &&
           kv_equal(a->item_gt_attrs, a->n_item_gt_attrs, b->item_gt_attrs, b->n_item_gt_attrs) &&
           a->cat_match == b->cat_match && a->attr_match == b->attr_match;
}

static void test_jsonl_round_trip(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_dataset_t *ds = generate(3000, 5, 0.1);
    REQUIRE(ds != NULL);
    /* Plus samples with what the generator never makes: no steps, unknown grade, quotes. */
    she_sample_t extra = {0};
    extra.sample_id = strdup("x1");
    extra.query = strdup("12\" pan \\ \"quoted\"\t\xc3\xa9");
    extra.item_title = strdup("t\nnewline");
    she_dataset_take(ds, &extra);
    const char *tmp = getenv("SHE_TEST_TMP");
    char path[4096], path2[4096];
    snprintf(path, sizeof(path), "%s/reader_roundtrip.jsonl", tmp ? tmp : "/tmp");
    snprintf(path2, sizeof(path2), "%s/reader_roundtrip2.jsonl", tmp ? tmp : "/tmp");
    REQUIRE_OK(she_dataset_save_jsonl(ds, path, errstr, sizeof(errstr)));
    she_reader_stats_t st;
    she_dataset_t *back = load(path, "auto", NULL, NULL, &st);
    REQUIRE(back != NULL);
    CHECK_EQ_INT(st.n_bad, 0);
    REQUIRE(back->n == ds->n);
    size_t diff = 0;
    for (size_t i = 0; i < ds->n; i++)
        diff += !sample_equal(&ds->samples[i], &back->samples[i]);
    CHECK_EQ_INT(diff, 0);
    /* Written again, the file is byte-identical. */
    REQUIRE_OK(she_dataset_save_jsonl(back, path2, errstr, sizeof(errstr)));
    FILE *a = fopen(path, "rb"), *b = fopen(path2, "rb");
    REQUIRE(a && b);
    int same = 1, ca, cb;
    do {
        ca = fgetc(a);
        cb = fgetc(b);
        same &= ca == cb;
    } while (ca != EOF && cb != EOF);
    CHECK(same);
    fclose(a);
    fclose(b);
    remove(path);
    remove(path2);

    /* A string that is not UTF-8 is refused and leaves no file. */
    she_sample_t bad = {0};
    bad.query = strdup("\xff");
    bad.item_title = strdup("t");
    she_dataset_t *one = she_dataset_new();
    she_dataset_take(one, &bad);
    CHECK(she_dataset_save_jsonl(one, path, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    struct stat sb;
    CHECK(stat(path, &sb) != 0);
    she_dataset_free(one);
    she_dataset_free(ds);
    she_dataset_free(back);
}

static void test_shuffle(void) {
    she_rng_t r1, r2;
    she_rng_seed(&r1, 5);
    she_rng_seed(&r2, 5);
    int a[100], b[100], sum = 0;
    for (int i = 0; i < 100; i++)
        a[i] = b[i] = i;
    she_shuffle_ints(a, 100, &r1);
    she_shuffle_ints(b, 100, &r2);
    int moved = 0;
    for (int i = 0; i < 100; i++) {
        CHECK(a[i] == b[i]);
        moved += a[i] != i;
        sum += a[i];
    }
    CHECK(moved > 50);
    CHECK_EQ_INT(sum, 4950);
    /* she_rng_below stays in range and hits every value. */
    int hits[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint32_t v = she_rng_below(&r1, 7);
        REQUIRE(v < 7);
        hits[v]++;
    }
    for (int i = 0; i < 7; i++)
        CHECK(hits[i] > 800 && hits[i] < 1200);
    she_dataset_t *ds = generate(200, 3, 0);
    REQUIRE(ds != NULL);
    she_rng_seed(&r1, 8);
    she_dataset_shuffle(ds, &r1);
    she_dataset_t *again = generate(200, 3, 0);
    she_rng_seed(&r2, 8);
    she_dataset_shuffle(again, &r2);
    for (size_t i = 0; i < ds->n; i++)
        CHECK(sample_equal(&ds->samples[i], &again->samples[i]));
    she_dataset_free(ds);
    she_dataset_free(again);
}

int main(void) {
    RUN(test_label_map_thresholds);
    RUN(test_label_map_values);
    RUN(test_csv_good);
    RUN(test_csv_bad_rows);
    RUN(test_csv_missing_column);
    RUN(test_streaming_chunks);
    RUN(test_follow_partial_line);
    RUN(test_csv_unterminated_at_eof);
    RUN(test_derived_ids_stable);
    RUN(test_jsonl_good);
    RUN(test_jsonl_bad_rows);
    RUN(test_messages_capped);
    RUN(test_utf8_validator);
    RUN(test_homedepot_fixture);
    RUN(test_homedepot_real);
    RUN(test_split_by_query);
    RUN(test_jsonl_round_trip);
    RUN(test_shuffle);
    TEST_DONE();
}
