/* test_teacher.c -- lexicons (load, normal form, bad files), the head-noun / attribute reader on
 * crafted titles and queries, and teacher chains: one per grade by label decomposition, and
 * from explicit step ground truth (with per-field fallback). */
#include <unistd.h>

#include "test.h"
#include "trainer/cot.h"
#include "trainer/lexicon.h"
#include "trainer/teacher.h"

static she_lexicon_t *brands, *materials;

static void make_lexicons(void) {
    brands = she_lexicon_new();
    materials = she_lexicon_new();
    const char *b[] = {"Nike", "Delta", "BEHR", "Simpson Strong-Tie", "3M"};
    const char *m[] = {"steel", "wood", "concrete", "chrome", "leather", "stainless steel",
                       "water"};
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++)
        she_lexicon_add(brands, b[i]);
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        she_lexicon_add(materials, m[i]);
}

/* Formats an interpretation as "category | k=v, k=v" for compact comparisons. */
static const char *show(const she_cot_interp_t *in) {
    static char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s |", in->category);
    for (int i = 0; i < in->n_attrs; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s %s=%s", i ? "," : "",
                              in->attrs[i].key, in->attrs[i].value);
    return buf;
}

static void check_read(const char *text, const char *want) {
    she_cot_interp_t in;
    she_lexicon_interpret(brands, materials, text, &in);
    CHECK_MSG(strcmp(show(&in), want) == 0, "read '%s':\n  got  '%s'\n  want '%s'", text,
              show(&in), want);
}

static void test_lexicon_set(void) {
    CHECK_EQ_INT(she_lexicon_size(brands), 5);
    CHECK(she_lexicon_contains(brands, "simpson strong tie"));
    CHECK(she_lexicon_contains(brands, "SIMPSON  Strong-Tie."));
    CHECK(she_lexicon_contains(brands, "3m"));
    CHECK(!she_lexicon_contains(brands, "simpson"));
    CHECK(!she_lexicon_contains(brands, ""));
    she_lexicon_add(brands, "nike"); /* duplicate after normalisation */
    she_lexicon_add(brands, " -- ");  /* empty after normalisation */
    CHECK_EQ_INT(she_lexicon_size(brands), 5);
    /* growth keeps every phrase */
    she_lexicon_t *big = she_lexicon_new();
    char w[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(w, sizeof(w), "brand %d", i);
        she_lexicon_add(big, w);
    }
    CHECK_EQ_INT(she_lexicon_size(big), 5000);
    int all = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(w, sizeof(w), "Brand-%d", i);
        all &= she_lexicon_contains(big, w);
    }
    CHECK(all);
    she_lexicon_free(big);
    she_lexicon_free(NULL);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
}

static void test_lexicon_load(void) {
    char errstr[512], path[1024];
    const char *tmp = getenv("SHE_TEST_TMP");
    if (!tmp)
        tmp = "/tmp";
    she_lexicon_t *lex = NULL;

    snprintf(path, sizeof(path), "%s/cot_lex_good.csv", tmp);
    write_file(path, ",cnt_attribute,cnt_query,name,nwords\n"
                     "0,12,3,Simpson Strong-Tie,3\n"
                     "1,1,0,rare brand,2\n"
                     "\n"
                     "2,5,1,behr,1\n");
    REQUIRE_OK(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_lexicon_size(lex), 3);
    CHECK(she_lexicon_contains(lex, "simpson strong tie"));
    she_lexicon_free(lex);
    REQUIRE_OK(she_lexicon_load(path, 5, &lex, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_lexicon_size(lex), 2);
    CHECK(!she_lexicon_contains(lex, "rare brand"));
    she_lexicon_free(lex);

    snprintf(path, sizeof(path), "%s/cot_lex_bad.csv", tmp);
    write_file(path, ",cnt_attribute,cnt_query,name,nwords\n0,12,3,ok,1\n1,2,3,too,many,1\n");
    CHECK_EQ_INT(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)), SHE_ERR_FORMAT);
    CHECK(lex == NULL);
    CHECK_MSG(strstr(errstr, "cot_lex_bad.csv:3") != NULL, "%s", errstr);
    write_file(path, "id,cnt_attribute,title\n0,1,x\n");
    CHECK_EQ_INT(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)), SHE_ERR_FORMAT);
    CHECK(strstr(errstr, "'name'") != NULL);
    write_file(path, "id,name\n0,x\n");
    CHECK_EQ_INT(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)), SHE_OK);
    she_lexicon_free(lex);
    CHECK_EQ_INT(she_lexicon_load(path, 2, &lex, errstr, sizeof(errstr)), SHE_ERR_FORMAT);
    CHECK(strstr(errstr, "cnt_attribute") != NULL);
    write_file(path, "name,cnt_attribute\nx,many\n");
    CHECK_EQ_INT(she_lexicon_load(path, 2, &lex, errstr, sizeof(errstr)), SHE_ERR_FORMAT);
    CHECK(strstr(errstr, ":2:") != NULL);
    snprintf(path, sizeof(path), "%s/no_such_lexicon.csv", tmp);
    CHECK_EQ_INT(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)), SHE_ERR_IO);

    /* the shared Home Depot lexicons, when this checkout sits beside ../shared */
    const char *src = getenv("SHE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/../shared/data/homedepot/lexicons/brand_statistics.csv",
             src ? src : ".");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  (no %s: shared lexicon part skipped)\n", path);
        return;
    }
    REQUIRE_OK(she_lexicon_load(path, 0, &lex, errstr, sizeof(errstr)));
    /* 4,122 rows; a few names coincide once normalised ("3M" / "3m") */
    CHECK(she_lexicon_size(lex) > 4000 && she_lexicon_size(lex) <= 4122);
    CHECK(she_lexicon_contains(lex, "Simpson Strong-Tie"));
    CHECK(she_lexicon_contains(lex, "behr"));
    she_lexicon_free(lex);
}

static void test_reader(void) {
    check_read("red nike running shoes", "running shoes | brand=nike, color=red");
    check_read("Nike Air Zoom Running Shoe in Red",
               "running shoe | brand=nike, color=red, type=air zoom");
    /* parentheses dropped, "1" without a unit dropped, "in ..." is a trailing phrase */
    check_read("Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)",
               "trim kit | brand=delta, material=chrome, type=vero handle shower only faucet");
    /* multi-word brand across a hyphen; number + unit is a size */
    check_read("Simpson Strong-Tie 12-Gauge Angle",
               "angle | brand=simpson strong tie, size=12 gauge");
    /* model number dropped; two material runs; the head does not take a material word */
    check_read("BEHR Premium Textured DeckOver 1-gal. #SC-141 Tugboat Wood and Concrete Coating",
               "coating | brand=behr, material=wood, material=concrete, size=1 gal, "
               "type=premium textured deckover tugboat");
    /* sizes with "x", "with ..." is a feature, "for ..." a use; longest material wins */
    check_read("10 ft. x 12 ft. Stainless Steel Shed with Floor Kit for Backyard",
               "shed | material=stainless steel, size=10 ft x 12 ft, feature=floor kit, "
               "use=backyard");
    /* "in" right after a number is a unit; mixed digit words are sizes */
    check_read("3/4 in. 2x4 Lumber", "lumber | size=3/4 in, size=2x4");
    /* the head does not cut a hyphen compound; Home Depot's "-DISCONTINUED" is noise */
    check_read("FlowerHouse 5 ft. x 5 ft. Pop-Up Greenhouse",
               "greenhouse | size=5 ft x 5 ft, type=flowerhouse pop up");
    check_read("KOHLER Polished-Chrome Shower System-DISCONTINUED",
               "shower system | material=chrome, type=kohler polished");
    check_read("1,000-Watt Heater", "heater | size=1000 watt");
    check_read("Kitchen Faucet W/ Sprayer", "kitchen faucet | feature=sprayer");
    check_read("for kitchen sink", "kitchen sink |"); /* a leading "for" opens no phrase */
    /* a word longer than the reader keeps (47 bytes) is cut before a split UTF-8 character:
     * 23 two-byte letters */
    check_read("ÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖÜäöüß", "ÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖ |");
    /* vague lexicon materials ("water") are not attributes */
    check_read("water heater", "water heater |");
    /* nothing but a brand: the brand is the category */
    check_read("behr", "behr |");
    check_read("3M", "3m |");
    check_read("", "unknown |");
    check_read("  ,;()  ", "unknown |");
    /* without lexicons the brand is just a word */
    she_cot_interp_t in;
    she_lexicon_interpret(NULL, NULL, "red nike running shoes", &in);
    CHECK_STR(show(&in), "running shoes | color=red, type=nike");
}

static she_sample_t make_sample(const char *query, const char *title, she_grade_t g) {
    she_sample_t s;
    memset(&s, 0, sizeof(s));
    s.sample_id = "t";
    s.query = (char *)query;
    s.item_title = (char *)title;
    s.grade = g;
    return s;
}

static void check_chain(const she_sample_t *s, const char *want) {
    char errstr[512], buf[SHE_COT_MAX_CHAIN];
    she_cot_t c;
    REQUIRE_OK(she_teacher_chain(s, brands, materials, &c, errstr, sizeof(errstr)));
    REQUIRE_OK(she_cot_format(&c, buf, sizeof(buf), NULL, errstr, sizeof(errstr)));
    CHECK_MSG(strcmp(buf, want) == 0, "chain for '%s' / '%s':\n%s--- want:\n%s", s->query,
              s->item_title, buf, want);
}

static void test_decomposition(void) {
    she_sample_t s = make_sample("red nike running shoes", "Nike Running Shoes in Red",
                                 SHE_GRADE_L4);
    check_chain(&s, "1. Query: category=running shoes; brand=nike, color=red\n"
                    "2. Item: category=running shoes; brand=nike, color=red\n"
                    "3. Category: exact\n4. Attributes: match\n5. Grade: L4\n");
    /* L3: the item's category ends with the query's -> exact; attributes partial */
    s = make_sample("running shoes", "Nike Trail Running Shoe", SHE_GRADE_L3);
    check_chain(&s, "1. Query: category=running shoes\n"
                    "2. Item: category=running shoe; brand=nike, type=trail\n"
                    "3. Category: exact\n4. Attributes: partial\n5. Grade: L3\n");
    /* L3 with a different category -> partial */
    s = make_sample("red nike running shoes", "Nike Leather Sandal", SHE_GRADE_L3);
    check_chain(&s, "1. Query: category=running shoes; brand=nike, color=red\n"
                    "2. Item: category=sandal; brand=nike, material=leather\n"
                    "3. Category: partial\n4. Attributes: partial\n5. Grade: L3\n");
    /* L2: conflict */
    s = make_sample("red nike running shoes", "Adidas Running Shoes in Blue", SHE_GRADE_L2);
    check_chain(&s, "1. Query: category=running shoes; brand=nike, color=red\n"
                    "2. Item: category=running shoes; color=blue, type=adidas\n"
                    "3. Category: exact\n4. Attributes: conflict\n5. Grade: L2\n");
    /* L1: none / none */
    s = make_sample("red nike running shoes", "Steel Shed", SHE_GRADE_L1);
    check_chain(&s, "1. Query: category=running shoes; brand=nike, color=red\n"
                    "2. Item: category=shed; material=steel\n"
                    "3. Category: none\n4. Attributes: none\n5. Grade: L1\n");
    /* L4 for a query that asks for no attribute: attributes none */
    s = make_sample("running shoes", "Nike Running Shoes", SHE_GRADE_L4);
    check_chain(&s, "1. Query: category=running shoes\n"
                    "2. Item: category=running shoes; brand=nike\n"
                    "3. Category: exact\n4. Attributes: none\n5. Grade: L4\n");
    /* catalogue attributes join step 2 (keys cleaned to the key alphabet) */
    she_kv_t attrs[2] = {{"Color Family", "Red"}, {"brand", "nike"}};
    s = make_sample("running shoes", "Nike Running Shoes", SHE_GRADE_L4);
    s.item_attrs = attrs;
    s.n_item_attrs = 2;
    check_chain(&s, "1. Query: category=running shoes\n"
                    "2. Item: category=running shoes; brand=nike, color_family=Red\n"
                    "3. Category: exact\n4. Attributes: none\n5. Grade: L4\n");

    CHECK(she_teacher_category_match("shoes", "running shoe") == SHE_CAT_MATCH_EXACT);
    CHECK(she_teacher_category_match("Running Shoes", "running-shoe") == SHE_CAT_MATCH_EXACT);
    CHECK(she_teacher_category_match("running shoe", "shoe") == SHE_CAT_MATCH_PARTIAL);
    CHECK(she_teacher_category_match("hoe", "shoe") == SHE_CAT_MATCH_PARTIAL);
}

static void test_explicit_steps(void) {
    she_sample_t s = make_sample("non-turtleneck sweater", "Wool Turtleneck Sweater, Grey",
                                 SHE_GRADE_L2);
    she_kv_t qa[1] = {{"Neck", "not turtleneck"}};
    she_kv_t ia[2] = {{"neck", "turtleneck"}, {"material", "wool; merino"}};
    s.has_steps = 1;
    s.query_category = "apparel > sweaters";
    s.query_attrs = qa;
    s.n_query_attrs = 1;
    s.item_category = "apparel > sweaters";
    s.item_gt_attrs = ia;
    s.n_item_gt_attrs = 2;
    s.cat_match = SHE_CAT_MATCH_EXACT;
    s.attr_match = SHE_ATTR_MATCH_CONFLICT;
    check_chain(&s, "1. Query: category=apparel > sweaters; neck=not turtleneck\n"
                    "2. Item: category=apparel > sweaters; neck=turtleneck, material=wool merino\n"
                    "3. Category: exact\n4. Attributes: conflict\n5. Grade: L2\n");
    /* explicit steps win over what decomposition would say */
    s.cat_match = SHE_CAT_MATCH_PARTIAL;
    s.attr_match = SHE_ATTR_MATCH_PARTIAL;
    check_chain(&s, "1. Query: category=apparel > sweaters; neck=not turtleneck\n"
                    "2. Item: category=apparel > sweaters; neck=turtleneck, material=wool merino\n"
                    "3. Category: partial\n4. Attributes: partial\n5. Grade: L2\n");
    /* absent fields fall back: step 4 by decomposition, step 1 read from the query */
    s.attr_match = SHE_ATTR_MATCH_UNKNOWN;
    s.query_category = NULL;
    check_chain(&s, "1. Query: category=sweater; type=non turtleneck\n"
                    "2. Item: category=apparel > sweaters; neck=turtleneck, material=wool merino\n"
                    "3. Category: partial\n4. Attributes: conflict\n5. Grade: L2\n");

    char errstr[512];
    she_cot_t c;
    s.grade = SHE_GRADE_UNKNOWN;
    CHECK_EQ_INT(she_teacher_chain(&s, brands, materials, &c, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(strstr(errstr, "no grade") != NULL);
    s.grade = SHE_GRADE_L3;
    s.item_title = NULL;
    CHECK_EQ_INT(she_teacher_chain(&s, brands, materials, &c, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
}

/* Every teacher chain formats and parses back to itself, whatever the text. */
static void test_chains_always_format(void) {
    static const char *const texts[] = {
        "", "   ", "(((", "#123-456", "1,000-Watt 120-Volt Heater w/ Thermostat",
        "ÜBER-lange Bezeichnung ÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖÜäöüßÄÖÜäöüß",
        "a;b=c,d|e - f – g (h) [i] \"j\" k!", "for with in without", "x x x 10 x"};
    int n = (int)(sizeof(texts) / sizeof(texts[0]));
    char errstr[512], buf[SHE_COT_MAX_CHAIN];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            for (int g = 1; g <= 4; g++) {
                she_sample_t s = make_sample(texts[i], texts[j], (she_grade_t)g);
                she_cot_t c;
                she_cot_parsed_t p;
                size_t len;
                REQUIRE_OK(she_teacher_chain(&s, brands, materials, &c, errstr, sizeof(errstr)));
                REQUIRE_OK(she_cot_format(&c, buf, sizeof(buf), &len, errstr, sizeof(errstr)));
                REQUIRE_OK(she_cot_parse(buf, len, &p, errstr, sizeof(errstr)));
            }
}

int main(void) {
    make_lexicons();
    RUN(test_lexicon_set);
    RUN(test_lexicon_load);
    RUN(test_reader);
    RUN(test_decomposition);
    RUN(test_explicit_steps);
    RUN(test_chains_always_format);
    she_lexicon_free(brands);
    she_lexicon_free(materials);
    TEST_DONE();
}
