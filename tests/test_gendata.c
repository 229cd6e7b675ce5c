/* test_gendata.c -- the synthetic query log (core/gendata.h): taxonomy size, determinism,
 * grade <=> step 3-4 consistency on every sample, query types, label noise, readable ground
 * truth, speed, and `she gen-data` writing the same bytes as the library. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "dataset.h"
#include "gendata.h"
#include "reader.h"
#include "test.h"

static she_err_t take(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    she_dataset_take(opaque, s);
    return SHE_OK;
}

static she_dataset_t *generate(const she_gendata_opts_t *o) {
    char errstr[SHE_ERRSTR_SIZE];
    she_dataset_t *ds = she_dataset_new();
    if (she_gendata_run(o, take, ds, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "gendata: %s\n", errstr);
        she_dataset_free(ds);
        return NULL;
    }
    return ds;
}

static she_err_t write_line(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    return she_sample_write_jsonl(opaque, s, errstr, errstr_size);
}

/* The generator's JSON Lines in a malloc'd buffer. */
static char *generate_text(const she_gendata_opts_t *o, size_t *len) {
    char errstr[SHE_ERRSTR_SIZE];
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    SHE_ASSERT(f);
    she_err_t err = she_gendata_run(o, write_line, f, errstr, sizeof(errstr));
    fclose(f);
    if (err != SHE_OK) {
        fprintf(stderr, "gendata: %s\n", errstr);
        free(buf);
        return NULL;
    }
    return buf;
}

static void test_taxonomy(void) {
    CHECK(she_gendata_n_leaves() >= 40);
    CHECK(she_gendata_n_domains() >= 6);
    fprintf(stderr, "   %d leaves, %d parents, %d domains\n", she_gendata_n_leaves(),
            she_gendata_n_parents(), she_gendata_n_domains());
    /* Every leaf has a sibling, so a partial category match exists for every query. */
    for (int a = 0; a < she_gendata_n_leaves(); a++) {
        int siblings = 0;
        for (int b = 0; b < she_gendata_n_leaves(); b++) {
            she_cat_match_t m =
                she_gendata_cat_match(she_gendata_leaf_name(a), she_gendata_leaf_name(b));
            CHECK(m == (a == b ? SHE_CAT_MATCH_EXACT
                        : strcmp(she_gendata_leaf_parent(a), she_gendata_leaf_parent(b)) == 0
                            ? SHE_CAT_MATCH_PARTIAL
                            : SHE_CAT_MATCH_NONE));
            siblings += m == SHE_CAT_MATCH_PARTIAL;
            if (b > a)
                CHECK(strcmp(she_gendata_leaf_name(a), she_gendata_leaf_name(b)) != 0);
        }
        CHECK_MSG(siblings > 0, "%s has no sibling", she_gendata_leaf_name(a));
    }
    CHECK(she_gendata_cat_match("sweater", "no such leaf") == SHE_CAT_MATCH_NONE);
}

static void test_rules(void) {
    /* The grade table of gendata.h, cell by cell. */
    const she_cat_match_t cats[] = {SHE_CAT_MATCH_EXACT, SHE_CAT_MATCH_PARTIAL,
                                    SHE_CAT_MATCH_NONE};
    const she_attr_match_t attrs[] = {SHE_ATTR_MATCH_MATCH, SHE_ATTR_MATCH_PARTIAL,
                                      SHE_ATTR_MATCH_CONFLICT, SHE_ATTR_MATCH_NONE};
    const she_grade_t want[3][4] = {
        {SHE_GRADE_L4, SHE_GRADE_L3, SHE_GRADE_L2, SHE_GRADE_L4},
        {SHE_GRADE_L3, SHE_GRADE_L3, SHE_GRADE_L2, SHE_GRADE_L3},
        {SHE_GRADE_L1, SHE_GRADE_L1, SHE_GRADE_L1, SHE_GRADE_L1},
    };
    for (int c = 0; c < 3; c++)
        for (int a = 0; a < 4; a++)
            CHECK(she_gendata_grade(cats[c], attrs[a]) == want[c][a]);

    she_kv_t q[] = {{"color", "red"}, {"style", "not turtleneck"}};
    she_kv_t met[] = {{"brand", "Gap"}, {"color", "red"}, {"style", "crew neck"}};
    she_kv_t part[] = {{"color", "red"}};
    she_kv_t neg_hit[] = {{"color", "red"}, {"style", "turtleneck"}};
    she_kv_t other[] = {{"color", "blue"}};
    CHECK(she_gendata_attr_match(q, 2, met, 3) == SHE_ATTR_MATCH_MATCH);
    CHECK(she_gendata_attr_match(q, 2, part, 1) == SHE_ATTR_MATCH_PARTIAL);
    CHECK(she_gendata_attr_match(q, 2, neg_hit, 2) == SHE_ATTR_MATCH_CONFLICT);
    CHECK(she_gendata_attr_match(q, 2, other, 1) == SHE_ATTR_MATCH_CONFLICT);
    CHECK(she_gendata_attr_match(q, 2, NULL, 0) == SHE_ATTR_MATCH_PARTIAL);
    CHECK(she_gendata_attr_match(NULL, 0, met, 3) == SHE_ATTR_MATCH_NONE);
}

static void test_determinism(void) {
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 3000;
    o.seed = 17;
    o.noise = 0.1;
    size_t la, lb, lc;
    char *a = generate_text(&o, &la), *b = generate_text(&o, &lb);
    o.seed = 18;
    char *c = generate_text(&o, &lc);
    REQUIRE(a && b && c);
    CHECK(la == lb && memcmp(a, b, la) == 0);
    CHECK(la != lc || memcmp(a, c, la) != 0);
    free(a);
    free(b);
    free(c);
}

static void test_consistency(void) {
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 20000;
    o.seed = 4;
    she_dataset_t *ds = generate(&o);
    REQUIRE(ds != NULL);
    REQUIRE(ds->n == 20000);
    long long grades[5] = {0}, types[SHE_QTYPE__COUNT] = {0}, cats[4] = {0}, attrs[5] = {0};
    size_t bad = 0;
    for (size_t i = 0; i < ds->n; i++) {
        const she_sample_t *s = &ds->samples[i];
        int ok = s->has_steps && s->sample_id && s->query && s->item_id && s->item_title &&
                 s->item_desc && s->query_category && s->item_category && s->domain;
        she_cat_match_t cat = she_gendata_cat_match(s->query_category, s->item_category);
        she_attr_match_t attr =
            cat == SHE_CAT_MATCH_NONE
                ? SHE_ATTR_MATCH_NONE
                : she_gendata_attr_match(s->query_attrs, s->n_query_attrs, s->item_gt_attrs,
                                         s->n_item_gt_attrs);
        ok = ok && cat == s->cat_match && attr == s->attr_match &&
             s->grade == she_gendata_grade(s->cat_match, s->attr_match);
        /* The label decomposition read backwards: L1 <=> none, L2 <=> conflict, L4 => exact. */
        ok = ok && (s->grade == SHE_GRADE_L1) == (s->cat_match == SHE_CAT_MATCH_NONE);
        ok = ok && (s->grade == SHE_GRADE_L2) == (s->attr_match == SHE_ATTR_MATCH_CONFLICT);
        ok = ok && (s->grade != SHE_GRADE_L4 || s->cat_match == SHE_CAT_MATCH_EXACT);
        if (!ok && bad++ < 5)
            fprintf(stderr, "   inconsistent: %s '%s' / '%s' %s %s %s\n", s->sample_id,
                    s->query, s->item_title, she_cat_match_name(s->cat_match),
                    she_attr_match_name(s->attr_match), she_grade_name(s->grade));
        grades[s->grade]++;
        cats[s->cat_match]++;
        attrs[s->attr_match]++;
        for (int t = 0; t < SHE_QTYPE__COUNT; t++)
            types[t] += strcmp(s->query_type, she_qtype_name((she_qtype_t)t)) == 0;
    }
    CHECK_EQ_INT(bad, 0);
    for (int t = 0; t < SHE_QTYPE__COUNT; t++)
        CHECK_MSG(types[t] > 500, "%s: %lld", she_qtype_name((she_qtype_t)t), types[t]);
    for (int c = 1; c <= 3; c++)
        CHECK(cats[c] > 0);
    for (int a = 1; a <= 4; a++)
        CHECK(attrs[a] > 0);
    /* Roughly realistic balance: every grade present, none dominant, L3 the largest. */
    for (int g = 1; g <= 4; g++) {
        double share = (double)grades[g] / (double)ds->n;
        fprintf(stderr, "   %s %.3f\n", she_grade_name((she_grade_t)g), share);
        CHECK(share > 0.05 && share < 0.5);
    }
    CHECK(grades[3] > grades[1] && grades[3] > grades[2] && grades[3] > grades[4]);
    she_dataset_free(ds);
}

static int cmp_by_query(const void *a, const void *b) {
    const she_sample_t *x = a, *y = b;
    return strcmp(x->query, y->query);
}

static void kv_text(const she_kv_t *kv, int n, char *out, size_t size) {
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s=%s;", kv[i].key, kv[i].value);
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return 0;
}

static void test_queries_and_items(void) {
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 10000;
    o.seed = 9;
    o.items_per_query = 5;
    she_dataset_t *ds = generate(&o);
    REQUIRE(ds && ds->n == 10000);
    size_t unreadable = 0;
    for (size_t i = 0; i < ds->n; i++) {
        const she_sample_t *s = &ds->samples[i];
        /* Rows come in blocks of items_per_query per query, with distinct items. */
        const she_sample_t *first = &ds->samples[i - i % 5];
        CHECK(strcmp(s->query, first->query) == 0);
        for (size_t j = i - i % 5; j < i; j++)
            CHECK(strcmp(ds->samples[j].item_id, s->item_id) != 0);
        /* Step 2 can be read from the item's text: every attribute is in the title or the
         * description. */
        for (int k = 0; k < s->n_item_gt_attrs; k++)
            if (!contains_ci(s->item_title, s->item_gt_attrs[k].value) &&
                !contains_ci(s->item_desc, s->item_gt_attrs[k].value) && unreadable++ < 5)
                fprintf(stderr, "   '%s' not in '%s' / '%s'\n", s->item_gt_attrs[k].value,
                        s->item_title, s->item_desc);
    }
    CHECK_EQ_INT(unreadable, 0);

    /* One text, one interpretation: equal queries have equal step-1 ground truth. */
    qsort(ds->samples, ds->n, sizeof(she_sample_t), cmp_by_query);
    size_t ambiguous = 0, distinct = 1;
    for (size_t i = 1; i < ds->n; i++) {
        const she_sample_t *a = &ds->samples[i - 1], *b = &ds->samples[i];
        if (strcmp(a->query, b->query) != 0) {
            distinct++;
            continue;
        }
        char ta[512], tb[512];
        kv_text(a->query_attrs, a->n_query_attrs, ta, sizeof(ta));
        kv_text(b->query_attrs, b->n_query_attrs, tb, sizeof(tb));
        if ((strcmp(a->query_category, b->query_category) != 0 || strcmp(ta, tb) != 0) &&
            ambiguous++ < 5)
            fprintf(stderr, "   '%s': %s {%s} vs %s {%s}\n", a->query, a->query_category, ta,
                    b->query_category, tb);
    }
    CHECK_EQ_INT(ambiguous, 0);
    CHECK(distinct > 500);

    /* The paper's examples are among the query texts it can produce. */
    int seen_neg = 0, seen_alt = 0;
    for (size_t i = 0; i < ds->n; i++) {
        const char *q = ds->samples[i].query;
        seen_neg |=
            strncmp(q, "non-", 4) == 0 && strcmp(ds->samples[i].query_type, "negation") == 0;
        seen_alt |= strstr(q, "alternative") != NULL;
    }
    CHECK(seen_neg && seen_alt);
    she_dataset_free(ds);
}

static void test_noise(void) {
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 20000;
    o.seed = 21;
    she_dataset_t *clean = generate(&o);
    o.noise = 0.3;
    she_dataset_t *noisy = generate(&o);
    REQUIRE(clean && noisy && clean->n == noisy->n);
    size_t changed = 0, adjacent = 0, other_diff = 0;
    for (size_t i = 0; i < clean->n; i++) {
        she_sample_t *c = &clean->samples[i], *n = &noisy->samples[i];
        int hit = n->grade != c->grade;
        changed += hit;
        adjacent += hit && abs((int)n->grade - (int)c->grade) == 1;
        /* Noise is visible as grade != rule(steps), the documented way to find it. */
        CHECK(hit == (n->grade != she_gendata_grade(n->cat_match, n->attr_match)));
        she_grade_t keep = n->grade;
        n->grade = c->grade;
        char a[8192] = "", b[8192] = "";
        FILE *fa = fmemopen(a, sizeof(a) - 1, "w"), *fb = fmemopen(b, sizeof(b) - 1, "w");
        char errstr[SHE_ERRSTR_SIZE];
        CHECK_OK(she_sample_write_jsonl(fa, c, errstr, sizeof(errstr)));
        CHECK_OK(she_sample_write_jsonl(fb, n, errstr, sizeof(errstr)));
        fclose(fa);
        fclose(fb);
        other_diff += strcmp(a, b) != 0;
        n->grade = keep;
    }
    double rate = (double)changed / (double)clean->n;
    fprintf(stderr, "   noise 0.3: %.4f of grades replaced, %.3f of them adjacent\n", rate,
            (double)adjacent / (double)changed);
    CHECK(rate > 0.28 && rate < 0.32);
    CHECK((double)adjacent / (double)changed > 0.75);
    CHECK_EQ_INT(other_diff, 0); /* everything but the grade is the clean file */
    she_dataset_free(clean);
    she_dataset_free(noisy);
}

static void test_options(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    CHECK_OK(she_gendata_parse_type_mix(&o, "negation=1", errstr, sizeof(errstr)));
    o.n_samples = 300;
    she_dataset_t *ds = generate(&o);
    REQUIRE(ds && ds->n == 300);
    for (size_t i = 0; i < ds->n; i++)
        CHECK_STR(ds->samples[i].query_type, "negation");
    she_dataset_free(ds);
    CHECK_OK(she_gendata_parse_grade_mix(&o, "L1=1,L4=1", errstr, sizeof(errstr)));
    ds = generate(&o);
    REQUIRE(ds != NULL);
    for (size_t i = 0; i < ds->n; i++)
        CHECK(ds->samples[i].grade == SHE_GRADE_L1 || ds->samples[i].grade == SHE_GRADE_L4);
    she_dataset_free(ds);
    static const char *const bad[] = {"", "plain", "plain=-1", "plain=x", "nosuch=1", "plain=0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(she_gendata_parse_type_mix(&o, bad[i], errstr, sizeof(errstr)) ==
                      SHE_ERR_INVALID,
                  "'%s' accepted", bad[i]);
    CHECK(she_gendata_parse_grade_mix(&o, "L5=1", errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_gendata_opts_default(&o);
    o.items_per_query = 0;
    CHECK(she_gendata_run(&o, take, NULL, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
}

static void test_speed(void) {
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 50000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t len;
    char *text = generate_text(&o, &len);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    REQUIRE(text != NULL);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "   50k samples as JSON Lines (%.1f MB) in %.2f s\n", (double)len / 1e6, s);
    CHECK(s < 20); /* a few seconds in a release build; generous for sanitizer builds */
    free(text);
}

/* `she gen-data` writes what the library writes. */
static void test_command(void) {
    const char *bin = getenv("SHE_BIN"), *tmp = getenv("SHE_TEST_TMP");
    if (!bin || !tmp) {
        fprintf(stderr, "   skipped: SHE_BIN / SHE_TEST_TMP not set\n");
        return;
    }
    char path[4096], cmd[8400];
    snprintf(path, sizeof(path), "%s/gendata_cmd.jsonl", tmp);
    snprintf(cmd, sizeof(cmd),
             "'%s' gen-data --n 777 --seed 12 --noise 0.05 --items-per-query 6 --out '%s' "
             "--log-level warn",
             bin, path);
    REQUIRE(system(cmd) == 0);
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = 777;
    o.seed = 12;
    o.noise = 0.05;
    o.items_per_query = 6;
    size_t len;
    char *want = generate_text(&o, &len);
    REQUIRE(want != NULL);
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    char *got = malloc(len + 1);
    size_t n = fread(got, 1, len + 1, f);
    fclose(f);
    CHECK(n == len && memcmp(got, want, len) == 0);
    free(got);
    free(want);
    remove(path);
    snprintf(cmd, sizeof(cmd), "'%s' gen-data --noise 2 --out /dev/null 2>/dev/null", bin);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

int main(void) {
    RUN(test_taxonomy);
    RUN(test_rules);
    RUN(test_determinism);
    RUN(test_consistency);
    RUN(test_queries_and_items);
    RUN(test_noise);
    RUN(test_options);
    RUN(test_speed);
    RUN(test_command);
    TEST_DONE();
}
