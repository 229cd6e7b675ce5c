/* gendata.c -- the synthetic catalogue and query log (see gendata.h for the rules).
 *
 * Layout: the taxonomy and phrase tables first, then the rules (grade, matches), then the
 * generator: pick a query, then for each of its rows a target grade, then an item of the
 * catalogue (or a new one) whose relation to the query gives exactly that grade. */
#include "gendata.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"

/* ---- the taxonomy ---- */

enum { K_BRAND, K_COLOR, K_MATERIAL, K_SIZE, K_STYLE, K_FEATURE, N_KEYS };
static const char *const key_names[N_KEYS] = {"brand", "color",  "material",
                                              "size",  "style",  "feature"};

typedef struct parent_def {
    const char *name, *domain;
    const char *attrs[N_KEYS]; /* '|'-separated values; NULL = the key does not apply */
    int size_suffix;           /* sizes read "sweater size M", not "12 inch frying pan" */
    const char *blurb;         /* closes item descriptions */
} parent_def_t;

typedef struct leaf_def {
    const char *name;
    int parent;
    const char *synonyms;      /* '|'-separated */
    const char *attrs[N_KEYS]; /* overrides; NULL = the parent's, "" = the key does not apply */
} leaf_def_t;

/* Within one leaf no value appears under two keys and no value is a leaf name or synonym, so
 * every query text has one interpretation (test_gendata checks it on generated data). */
static const parent_def_t parents[] = {
    {"tops", "apparel",
     {"Uniqlo|Patagonia|Levi's|Gap|Ralph Lauren|J.Crew", "black|white|navy|grey|red|green|beige",
      "cotton|wool|cashmere|polyester|linen", "XS|S|M|L|XL", NULL, NULL},
     1, "An everyday layer that works on its own or under a jacket."},
    {"outerwear", "apparel",
     {"Arc'teryx|Patagonia|The North Face|Columbia|Canada Goose|Marmot",
      "black|navy|olive|red|yellow|orange|grey", "gore-tex|nylon|polyester|softshell",
      "XS|S|M|L|XL", "hooded|packable|longline|cropped",
      "waterproof|windproof|insulated|breathable"},
     1, "Built for changing weather."},
    {"bottoms", "apparel",
     {"Levi's|Wrangler|Patagonia|Columbia|Gap|Uniqlo", "blue|black|khaki|grey|olive|white",
      "denim|cotton|nylon|polyester|linen", "28W|30W|32W|34W|36W",
      "slim|straight leg|relaxed|bootcut", "stretch|water-resistant|zip-off legs|quick-dry"},
     1, "Comfortable from morning to evening."},
    {"boots", "footwear",
     {"Timberland|Merrell|Salomon|Hunter|Dr. Martens|Red Wing|Keen", "brown|black|tan|olive|grey",
      "leather|suede|rubber|synthetic", "7|8|9|10|11|12", "lace-up|slip-on|mid-cut|ankle",
      "waterproof|steel toe|insulated|lightweight"},
     1, "Made to take a beating."},
    {"shoes", "footwear",
     {"Nike|Adidas|Asics|Brooks|New Balance|Birkenstock|Teva|Vans",
      "white|black|blue|red|grey|pink", "mesh|leather|canvas|suede|cork", "7|8|9|10|11|12",
      "low-top|high-top|slip-on|strappy", "cushioned|lightweight|wide fit|arch support"},
     1, "A comfortable fit for all-day wear."},
    {"camping gear", "outdoor",
     {"Coleman|REI|MSR|Big Agnes|Snow Peak|Kelty", "green|orange|blue|grey|red",
      "nylon|polyester|ripstop", NULL, NULL, NULL},
     0, "Ready for the backcountry or the campground."},
    {"climbing gear", "outdoor",
     {"Black Diamond|Petzl|Mammut|Edelrid|Wild Country", "orange|blue|black|red|green", NULL,
      NULL, NULL, NULL},
     1, "Certified for climbing use."},
    {"cookware", "kitchen",
     {"Le Creuset|Lodge|T-fal|All-Clad|Calphalon|Cuisinart", "black|red|blue|silver|cream",
      "cast iron|stainless steel|aluminum|copper|ceramic", NULL, NULL,
      "nonstick|dishwasher safe|oven safe|induction compatible"},
     0, "Heats evenly on every stovetop."},
    {"cleaning supplies", "kitchen",
     {"Dawn|Mr. Clean|Method|Seventh Generation|Scotch-Brite|Lysol", NULL, NULL,
      "16 oz|32 oz|1 gallon", "spray|refill|concentrate",
      "citrus scent|unscented|plant-based|antibacterial"},
     0, "Cuts through everyday kitchen mess."},
    {"kitchen appliances", "kitchen",
     {"KitchenAid|Vitamix|Ninja|Breville|Cuisinart|Hamilton Beach", "black|white|red|silver|teal",
      "stainless steel|plastic|glass", NULL, "countertop|compact|retro", NULL},
     0, "A countertop helper for daily use."},
    {"audio", "electronics",
     {"Bose|Sony|Sennheiser|JBL|Apple|Anker", "black|white|silver|blue|red", NULL, NULL, NULL,
      "noise cancelling|wireless|waterproof|long battery life"},
     0, "Rich sound with deep bass."},
    {"computer accessories", "electronics",
     {"Logitech|Razer|Dell|Microsoft|Corsair|Samsung", "black|white|grey|pink", NULL, NULL, NULL,
      NULL},
     0, "Plug and play on Windows and macOS."},
    {"skincare", "beauty",
     {"CeraVe|Neutrogena|La Roche-Posay|Cetaphil|Olay|The Ordinary", NULL, NULL,
      "1 oz|1.7 oz|8 oz|16 oz", NULL, "fragrance-free|oil-free|for sensitive skin|spf 30"},
     0, "Dermatologist tested."},
    {"haircare", "beauty",
     {"Dyson|Olaplex|Pantene|Redken|Revlon|Shark", NULL, NULL, "8 oz|12 oz|33 oz",
      "volumizing|moisturizing|clarifying",
      "sulfate-free|for curly hair|for color-treated hair"},
     0, "Salon results at home."},
    {"power tools", "tools",
     {"DeWalt|Makita|Milwaukee|Ryobi|Bosch|Black+Decker", "yellow|red|teal|green|blue", NULL,
      "12V|18V|20V", "brushless|brushed", "cordless|corded|kit with battery|tool only"},
     0, "Backed by a three-year limited warranty."},
    {"hand tools", "tools",
     {"Stanley|Craftsman|Klein Tools|Estwing|Husky|Irwin", "red|black|yellow|blue",
      "steel|fiberglass|wood|chrome vanadium", NULL, NULL, "anti-vibration|magnetic|rubber grip"},
     0, "Forged for a lifetime of use."},
    {"paint supplies", "tools",
     {"Behr|Sherwin-Williams|Benjamin Moore|Valspar|Rust-Oleum|Wooster",
      "white|grey|blue|beige|green|black", NULL, "1 quart|1 gallon|5 gallon", NULL, NULL},
     0, "For interior and exterior projects."},
};
#define N_PARENTS ((int)(sizeof(parents) / sizeof(parents[0])))

/* Parent indices, in the order of parents[]. */
enum {
    P_TOPS, P_OUTERWEAR, P_BOTTOMS, P_BOOTS, P_SHOES, P_CAMPING, P_CLIMBING, P_COOKWARE,
    P_CLEANING, P_APPLIANCES, P_AUDIO, P_COMPUTER, P_SKINCARE, P_HAIRCARE, P_POWER, P_HAND,
    P_PAINT
};

static const leaf_def_t leaves[] = {
    {"sweater", P_TOPS, "jumper|pullover",
     {NULL, NULL, NULL, NULL, "turtleneck|crew neck|v-neck|cable knit",
      "oversized|cropped|slim fit"}},
    {"t-shirt", P_TOPS, "tee|tshirt",
     {NULL, NULL, NULL, NULL, "crew neck|v-neck|henley|pocket",
      "slim fit|oversized|moisture-wicking"}},
    {"hoodie", P_TOPS, "hooded sweatshirt|hoody",
     {NULL, NULL, NULL, NULL, "zip-up|half-zip|cropped", "fleece-lined|oversized|relaxed fit"}},
    {"rain jacket", P_OUTERWEAR, "raincoat|rain shell", {NULL}},
    {"down jacket", P_OUTERWEAR, "puffer jacket|down coat",
     {NULL, NULL, "goose down|duck down|synthetic fill", NULL, NULL, NULL}},
    {"hardshell jacket", P_OUTERWEAR, "shell jacket|hard shell jacket", {NULL}},
    {"jeans", P_BOTTOMS, "denim jeans|denim pants", {NULL}},
    {"hiking pants", P_BOTTOMS, "trekking pants|trail pants", {NULL}},
    {"shorts", P_BOTTOMS, "short pants|summer shorts",
     {NULL, NULL, NULL, NULL, "cargo|chino|athletic", NULL}},
    {"hiking boots", P_BOOTS, "trekking boots|trail boots", {NULL}},
    {"rain boots", P_BOOTS, "wellies|rubber boots|wellington boots",
     {NULL, NULL, "pvc|neoprene|natural rubber", NULL, NULL, NULL}},
    {"work boots", P_BOOTS, "safety boots|construction boots", {NULL}},
    {"running shoes", P_SHOES, "runners|jogging shoes",
     {NULL, NULL, NULL, NULL, "neutral|stability|trail", NULL}},
    {"sneakers", P_SHOES, "trainers|casual shoes", {NULL}},
    {"sandals", P_SHOES, "summer sandals|open-toe shoes",
     {NULL, NULL, NULL, NULL, "strappy|slide|flip-flop|sport", NULL}},
    {"tent", P_CAMPING, "camping tent|shelter tent",
     {NULL, NULL, NULL, "1-person|2-person|4-person|6-person", "dome|tunnel|cabin",
      "waterproof|ultralight|freestanding"}},
    {"sleeping bag", P_CAMPING, "sleep sack|camping sleeping bag",
     {NULL, NULL, NULL, "regular|long|kids", "mummy|rectangular|double",
      "0-degree|20-degree|40-degree|ultralight"}},
    {"camping stove", P_CAMPING, "camp stove|backpacking stove",
     {NULL, NULL, "titanium|steel|aluminum", "1-burner|2-burner",
      "canister|liquid fuel|wood burning",
      "piezo ignition|windproof|ultralight"}},
    {"climbing harness", P_CLIMBING, "harness|rock climbing harness",
     {NULL, NULL, "nylon|polyester", "XS|S|M|L|XL", "sport|alpine|trad",
      "adjustable leg loops|lightweight|gear loops"}},
    {"carabiner", P_CLIMBING, "biner|climbing clip",
     {NULL, NULL, "aluminum|steel", "", "screwgate|auto-locking|wire gate",
      "keylock nose|lightweight"}},
    {"climbing helmet", P_CLIMBING, "mountaineering helmet|rock helmet",
     {NULL, NULL, "foam|polycarbonate", "S/M|M/L", "hybrid|in-mold|low-profile",
      "ventilated|headlamp clips|lightweight"}},
    {"frying pan", P_COOKWARE, "skillet|fry pan",
     {NULL, NULL, NULL, "8 inch|10 inch|12 inch", "deep|shallow|square", NULL}},
    {"saucepan", P_COOKWARE, "sauce pan|saucepot",
     {NULL, NULL, NULL, "1 quart|2 quart|3 quart", "deep|tall|shallow", NULL}},
    {"stock pot", P_COOKWARE, "stockpot|soup pot",
     {NULL, NULL, NULL, "8 quart|12 quart|16 quart", "tall|wide", NULL}},
    {"degreaser", P_CLEANING, "grease remover|kitchen degreaser", {NULL}},
    {"dish soap", P_CLEANING, "dishwashing liquid|dish detergent",
     {NULL, NULL, NULL, NULL, "liquid|gel|concentrate", NULL}},
    {"sponge", P_CLEANING, "scrub sponge|scrubber",
     {NULL, "yellow|green|blue|pink", "cellulose|polyurethane|microfiber", "3-pack|6-pack|12-pack",
      "scratch-free|heavy duty|dual-sided", "antibacterial|odor-resistant"}},
    {"blender", P_APPLIANCES, "smoothie blender|liquidizer",
     {NULL, NULL, NULL, "32 oz|48 oz|64 oz", NULL,
      "variable speed|self-cleaning|ice crushing|personal cups"}},
    {"toaster", P_APPLIANCES, "bread toaster|pop-up toaster",
     {NULL, NULL, NULL, "2-slice|4-slice", NULL, "bagel setting|wide slots|defrost"}},
    {"kettle", P_APPLIANCES, "electric kettle|tea kettle",
     {NULL, NULL, NULL, "1 liter|1.7 liter", NULL, "temperature control|keep warm|cordless"}},
    {"headphones", P_AUDIO, "headset|cans",
     {NULL, NULL, NULL, NULL, "over-ear|on-ear|open-back", NULL}},
    {"earbuds", P_AUDIO, "earphones|in-ear headphones",
     {NULL, NULL, NULL, NULL, "true wireless|neckband|wired", NULL}},
    {"bluetooth speaker", P_AUDIO, "wireless speaker|portable speaker",
     {NULL, NULL, NULL, NULL, "mini|party|outdoor", "waterproof|long battery life|stereo pairing"}},
    {"keyboard", P_COMPUTER, "computer keyboard|typing keyboard",
     {NULL, NULL, NULL, "full-size|tenkeyless|60%", "mechanical|membrane|ergonomic",
      "wireless|backlit|rgb lighting"}},
    {"mouse", P_COMPUTER, "computer mouse|pc mouse",
     {NULL, NULL, NULL, "small|medium|large", "ergonomic|vertical|ambidextrous",
      "wireless|rechargeable|silent clicks"}},
    {"monitor", P_COMPUTER, "computer monitor|display screen",
     {NULL, NULL, NULL, "24 inch|27 inch|32 inch", "curved|flat|ultrawide",
      "4k|144hz|usb-c|height adjustable"}},
    {"moisturizer", P_SKINCARE, "face cream|moisturiser",
     {NULL, NULL, NULL, NULL, "cream|gel|lotion", NULL}},
    {"sunscreen", P_SKINCARE, "sunblock|sun cream",
     {NULL, NULL, NULL, NULL, "spray|lotion|stick", "spf 30|spf 50|water-resistant|mineral"}},
    {"cleanser", P_SKINCARE, "face wash|facial cleanser",
     {NULL, NULL, NULL, NULL, "foam|gel|cream", NULL}},
    {"shampoo", P_HAIRCARE, "hair shampoo|hair wash", {NULL}},
    {"conditioner", P_HAIRCARE, "hair conditioner|conditioning rinse",
     {NULL, NULL, NULL, NULL, "leave-in|rinse-out|deep", NULL}},
    {"hair dryer", P_HAIRCARE, "blow dryer|hairdryer",
     {NULL, "black|pink|silver|purple", "ceramic|tourmaline|titanium", "travel|full-size", "",
      "ionic|diffuser included|cool shot|cordless"}},
    {"cordless drill", P_POWER, "drill driver|power drill",
     {NULL, NULL, NULL, NULL, NULL, "kit with battery|tool only|hammer function"}},
    {"circular saw", P_POWER, "circ saw|skill saw",
     {NULL, NULL, NULL, "6-1/2 inch|7-1/4 inch", NULL, "cordless|corded|laser guide"}},
    {"impact driver", P_POWER, "impact gun|hex driver", {NULL}},
    {"hammer", P_HAND, "nail hammer|carpenter hammer",
     {NULL, NULL, NULL, "16 oz|20 oz|22 oz", "claw|framing|ball peen", NULL}},
    {"screwdriver set", P_HAND, "screwdriver kit|screwdrivers",
     {NULL, NULL, NULL, "6-piece|10-piece|32-piece", "precision|ratcheting|insulated",
      "magnetic|rubber grip|with case"}},
    {"wrench", P_HAND, "spanner|adjustable spanner",
     {NULL, NULL, NULL, "8 inch|10 inch|12 inch", "adjustable|combination|pipe", NULL}},
    {"interior paint", P_PAINT, "wall paint|room paint",
     {NULL, NULL, NULL, NULL, "matte|eggshell|satin|semi-gloss",
      "low-voc|one coat|paint and primer|mildew resistant"}},
    {"deck stain", P_PAINT, "wood stain|deck sealer",
     {NULL, "cedar|redwood|grey|brown|clear", NULL, NULL, "transparent|semi-transparent|solid",
      "waterproofing|uv protection|mildew resistant"}},
    {"paint roller", P_PAINT, "roller cover|roller brush",
     {NULL, "", "microfiber|woven|foam", "4 inch|9 inch|18 inch",
      "3/8 inch nap|1/2 inch nap|3/4 inch nap", "lint-free|reusable"}},
};
#define N_LEAVES ((int)(sizeof(leaves) / sizeof(leaves[0])))

/* A phrase whose answer is a leaf, with the attributes it implies ("key=value;..."). */
typedef struct phrase_def {
    const char *text, *leaf, *attrs;
} phrase_def_t;

static const phrase_def_t qa_phrases[] = {
    {"what to wear for mountaineering", "hardshell jacket", ""},
    {"what to wear hiking in the rain", "rain jacket", "feature=waterproof"},
    {"what to wear to stay warm in the city in winter", "down jacket", ""},
    {"what shoes to wear for a marathon", "running shoes", "feature=cushioned"},
    {"what to wear on a construction site", "work boots", "feature=steel toe"},
    {"what to wear at a muddy festival", "rain boots", ""},
    {"what to wear for a summer hike", "shorts", "feature=quick-dry"},
    {"what to sleep in when camping", "sleeping bag", ""},
    {"what do i need to cook at a campsite", "camping stove", ""},
    {"what do i need to start rock climbing", "climbing harness", ""},
    {"what to cook pancakes in", "frying pan", "feature=nonstick"},
    {"what do i need to make smoothies", "blender", ""},
    {"what do i need to boil pasta for ten people", "stock pot", ""},
    {"what to listen to music with on a plane", "headphones", "feature=noise cancelling"},
    {"what to put on before a day at the beach", "sunscreen", "feature=water-resistant"},
    {"what to wash my face with if i have sensitive skin", "cleanser",
     "feature=for sensitive skin"},
    {"what to use to dry hair quickly", "hair dryer", ""},
    {"what do i need to hang a picture frame", "hammer", ""},
    {"what to use to fix a loose cabinet hinge", "screwdriver set", ""},
    {"what do i need to repaint a bedroom", "interior paint", ""},
    {"what to use to build a bookshelf from plywood", "circular saw", ""},
};

static const phrase_def_t knowledge_phrases[] = {
    {"grease-removing products for the kitchen", "degreaser", ""},
    {"something to protect skin from uv rays", "sunscreen", ""},
    {"gear that keeps you dry in a downpour", "rain jacket", "feature=waterproof"},
    {"tool for driving long screws into hardwood", "impact driver", ""},
    {"product to keep a wooden deck from rotting", "deck stain", ""},
    {"footwear that protects toes from falling objects", "work boots", "feature=steel toe"},
    {"appliance for crushing ice for frozen drinks", "blender", "feature=ice crushing"},
    {"insulated layer filled with goose feathers", "down jacket", "material=goose down"},
    {"shelter for sleeping outdoors", "tent", ""},
    {"tool to cut straight lines in plywood sheets", "circular saw", ""},
    {"product that removes makeup and dirt from the face", "cleanser", ""},
    {"hydrating cream for dry skin", "moisturizer", "style=cream"},
    {"tool that loosens rusted bolts", "wrench", ""},
    {"cookware for searing steak at very high heat", "frying pan", "material=cast iron"},
    {"clip that links a rope to a harness", "carabiner", ""},
    {"gadget that boils water for tea in minutes", "kettle", ""},
    {"protection for the head against falling rock", "climbing helmet", ""},
    {"hair care that repairs bleached hair", "conditioner", ""},
    {"display for editing photos in high resolution", "monitor", "feature=4k"},
    {"gear to keep feet dry in puddles", "rain boots", ""},
};

/* Brands whose name alone stands for a category ("Arc'teryx alternative"). */
static const phrase_def_t flagship_brands[] = {
    {"Arc'teryx", "hardshell jacket", ""}, {"Canada Goose", "down jacket", ""},
    {"Levi's", "jeans", ""},               {"Hunter", "rain boots", ""},
    {"Red Wing", "work boots", ""},        {"Birkenstock", "sandals", ""},
    {"Brooks", "running shoes", ""},       {"Snow Peak", "camping stove", ""},
    {"Black Diamond", "climbing harness", ""}, {"Le Creuset", "stock pot", ""},
    {"Vitamix", "blender", ""},            {"Bose", "headphones", ""},
    {"Logitech", "mouse", ""},             {"CeraVe", "moisturizer", ""},
    {"Dyson", "hair dryer", ""},           {"DeWalt", "cordless drill", ""},
    {"Estwing", "hammer", ""},             {"Benjamin Moore", "interior paint", ""},
};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const qtype_names[SHE_QTYPE__COUNT] = {"plain", "qa", "alternative",
                                                          "negation", "knowledge"};

const char *she_qtype_name(she_qtype_t t) {
    return (unsigned)t < SHE_QTYPE__COUNT ? qtype_names[t] : "unknown";
}

/* ---- taxonomy accessors ---- */

int she_gendata_n_leaves(void) { return N_LEAVES; }
int she_gendata_n_parents(void) { return N_PARENTS; }
int she_gendata_n_domains(void) {
    int n = 0;
    for (int p = 0; p < N_PARENTS; p++) {
        int seen = 0;
        for (int q = 0; q < p; q++)
            seen |= strcmp(parents[q].domain, parents[p].domain) == 0;
        n += !seen;
    }
    return n;
}
const char *she_gendata_leaf_name(int leaf) {
    SHE_ASSERT(leaf >= 0 && leaf < N_LEAVES);
    return leaves[leaf].name;
}
const char *she_gendata_leaf_parent(int leaf) {
    SHE_ASSERT(leaf >= 0 && leaf < N_LEAVES);
    return parents[leaves[leaf].parent].name;
}
const char *she_gendata_leaf_domain(int leaf) {
    SHE_ASSERT(leaf >= 0 && leaf < N_LEAVES);
    return parents[leaves[leaf].parent].domain;
}

static int leaf_index(const char *name) {
    for (int i = 0; i < N_LEAVES; i++)
        if (strcmp(leaves[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- the rules ---- */

she_grade_t she_gendata_grade(she_cat_match_t cat, she_attr_match_t attr) {
    SHE_ASSERT(cat != SHE_CAT_MATCH_UNKNOWN && attr != SHE_ATTR_MATCH_UNKNOWN);
    if (cat == SHE_CAT_MATCH_NONE)
        return SHE_GRADE_L1;
    if (attr == SHE_ATTR_MATCH_CONFLICT)
        return SHE_GRADE_L2;
    if (cat == SHE_CAT_MATCH_PARTIAL || attr == SHE_ATTR_MATCH_PARTIAL)
        return SHE_GRADE_L3;
    return SHE_GRADE_L4;
}

she_cat_match_t she_gendata_cat_match(const char *query_category, const char *item_category) {
    int a = leaf_index(query_category), b = leaf_index(item_category);
    if (a < 0 || b < 0)
        return SHE_CAT_MATCH_NONE;
    if (a == b)
        return SHE_CAT_MATCH_EXACT;
    return leaves[a].parent == leaves[b].parent ? SHE_CAT_MATCH_PARTIAL : SHE_CAT_MATCH_NONE;
}

she_attr_match_t she_gendata_attr_match(const she_kv_t *query_attrs, int n_query_attrs,
                                        const she_kv_t *item_attrs, int n_item_attrs) {
    int met = 0;
    for (int i = 0; i < n_query_attrs; i++) {
        const char *want = query_attrs[i].value;
        int negated = strncmp(want, "not ", 4) == 0;
        if (negated)
            want += 4;
        for (int j = 0; j < n_item_attrs; j++) {
            if (strcmp(item_attrs[j].key, query_attrs[i].key) != 0)
                continue;
            int same = strcmp(item_attrs[j].value, want) == 0;
            if (same == negated)
                return SHE_ATTR_MATCH_CONFLICT;
            met++;
            break;
        }
    }
    if (n_query_attrs == 0)
        return SHE_ATTR_MATCH_NONE;
    return met == n_query_attrs ? SHE_ATTR_MATCH_MATCH : SHE_ATTR_MATCH_PARTIAL;
}

/* ---- options ---- */

void she_gendata_opts_default(she_gendata_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->n_samples = 1000;
    o->seed = 1;
    o->items_per_query = 8;
    const double types[SHE_QTYPE__COUNT] = {0.5, 0.12, 0.12, 0.13, 0.13};
    memcpy(o->type_mix, types, sizeof(types));
    const double grades[4] = {0.10, 0.30, 0.36, 0.24};
    memcpy(o->grade_mix, grades, sizeof(grades));
}

static she_err_t parse_mix(const char *spec, const char *const *names, int n, double *w,
                           char *errstr, size_t errstr_size) {
    for (int i = 0; i < n; i++)
        w[i] = 0;
    double total = 0;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char part[64];
        if (len >= sizeof(part))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "mix entry '%.*s' too long",
                            (int)len, p);
        memcpy(part, p, len);
        part[len] = '\0';
        char *eq = strchr(part, '='), *end = NULL;
        int k = -1;
        if (eq) {
            *eq = '\0';
            for (int i = 0; i < n; i++)
                if (strcmp(part, names[i]) == 0)
                    k = i;
        }
        double v = eq ? strtod(eq + 1, &end) : -1;
        if (k < 0 || end == eq + 1 || *end || !(v >= 0 && v <= 1e9))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "mix entry '%.*s' is not NAME=WEIGHT with a known name and a "
                            "weight >= 0",
                            (int)len, p);
        w[k] = v;
        total += v;
        p = e ? e + 1 : p + len;
    }
    if (!(total > 0))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "mix '%s' has no positive weight",
                        spec);
    return SHE_OK;
}

she_err_t she_gendata_parse_type_mix(she_gendata_opts_t *o, const char *spec, char *errstr,
                                     size_t errstr_size) {
    return parse_mix(spec, qtype_names, SHE_QTYPE__COUNT, o->type_mix, errstr, errstr_size);
}

she_err_t she_gendata_parse_grade_mix(she_gendata_opts_t *o, const char *spec, char *errstr,
                                      size_t errstr_size) {
    static const char *const names[4] = {"L1", "L2", "L3", "L4"};
    return parse_mix(spec, names, 4, o->grade_mix, errstr, errstr_size);
}

/* ---- the generator ---- */

#define SBUF_SIZE 512 /* longest query, title or description */

typedef struct vlist {
    const char **v; /* (n) values, pointing into store */
    int n;
    char *store;
} vlist_t;

typedef struct item {
    int leaf;
    signed char val[N_KEYS]; /* index into the leaf's value list, -1 = not stated */
    char *id, *title, *desc;
    int show_attrs;          /* also listed as catalogue attributes */
} item_t;

typedef struct query {
    she_qtype_t type;
    int leaf;
    signed char val[N_KEYS]; /* asked value (index in the leaf's list), -1 = not asked */
    unsigned char neg[N_KEYS];
    she_kv_t kv[N_KEYS];     /* the same as step-1 ground truth, owned */
    int n_kv;
    char text[SBUF_SIZE];
} query_t;

typedef struct gen {
    she_rng_t rng, noise_rng;
    vlist_t vals[N_LEAVES][N_KEYS];
    vlist_t surfaces[N_LEAVES]; /* name, then synonyms */
    item_t *items;
    int n_items, cap_items;
    int *by_leaf[N_LEAVES]; /* item indices per leaf */
    int n_by_leaf[N_LEAVES], cap_by_leaf[N_LEAVES];
} gen_t;

static void vlist_split(vlist_t *vl, const char *a, const char *b) {
    memset(vl, 0, sizeof(*vl));
    size_t na = a ? strlen(a) : 0, nb = b ? strlen(b) : 0;
    if (!na && !nb)
        return;
    vl->store = malloc(na + nb + 2);
    SHE_CHECK_ALLOC(vl->store);
    snprintf(vl->store, na + nb + 2, "%s%s%s", a ? a : "", na && nb ? "|" : "", b ? b : "");
    int n = 1;
    for (char *p = vl->store; *p; p++)
        n += *p == '|';
    vl->v = malloc((size_t)n * sizeof(*vl->v));
    SHE_CHECK_ALLOC(vl->v);
    char *save = NULL;
    for (char *t = strtok_r(vl->store, "|", &save); t; t = strtok_r(NULL, "|", &save))
        vl->v[vl->n++] = t;
}

static void vlist_free(vlist_t *vl) {
    free(vl->v);
    free(vl->store);
}

static int vlist_find(const vlist_t *vl, const char *s) {
    for (int i = 0; i < vl->n; i++)
        if (strcmp(vl->v[i], s) == 0)
            return i;
    return -1;
}

static void gen_init(gen_t *g, uint64_t seed) {
    memset(g, 0, sizeof(*g));
    she_rng_seed(&g->rng, seed);
    /* Its own stream, so noise changes grades only (see gendata.h). */
    she_rng_seed(&g->noise_rng, she_hash_mix(seed ^ 0x6e6f697365ull));
    for (int l = 0; l < N_LEAVES; l++) {
        for (int k = 0; k < N_KEYS; k++) {
            const char *v = leaves[l].attrs[k];
            if (!v)
                v = parents[leaves[l].parent].attrs[k];
            vlist_split(&g->vals[l][k], v, NULL);
        }
        vlist_split(&g->surfaces[l], leaves[l].name, leaves[l].synonyms);
    }
}

static void gen_fini(gen_t *g) {
    for (int l = 0; l < N_LEAVES; l++) {
        for (int k = 0; k < N_KEYS; k++)
            vlist_free(&g->vals[l][k]);
        vlist_free(&g->surfaces[l]);
        free(g->by_leaf[l]);
    }
    for (int i = 0; i < g->n_items; i++) {
        free(g->items[i].id);
        free(g->items[i].title);
        free(g->items[i].desc);
    }
    free(g->items);
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    SHE_CHECK_ALLOC(d);
    return d;
}

static int pick(gen_t *g, int n) { return (int)she_rng_below(&g->rng, (uint32_t)n); }
static int chance(gen_t *g, double p) { return she_rng_uniform(&g->rng) < p; }

static int pick_weighted(she_rng_t *rng, const double *w, int n) {
    double total = 0;
    for (int i = 0; i < n; i++)
        total += w[i];
    double u = she_rng_uniform(rng) * total;
    for (int i = 0; i < n; i++) {
        if (u < w[i])
            return i;
        u -= w[i];
    }
    for (int i = n - 1; i >= 0; i--)
        if (w[i] > 0)
            return i;
    return 0;
}

/* ---- text helpers ---- */

typedef struct sbuf {
    char s[SBUF_SIZE];
    size_t n;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *text) {
    size_t len = strlen(text);
    if (b->n + len >= sizeof(b->s))
        len = sizeof(b->s) - 1 - b->n;
    memcpy(b->s + b->n, text, len);
    b->n += len;
    b->s[b->n] = '\0';
}

/* Appends `sep` (when the buffer is not empty) and text. */
static void sb_word(sbuf_t *b, const char *sep, const char *text) {
    if (b->n)
        sb_put(b, sep);
    sb_put(b, text);
}

/* Title case: upper case after a start, a space or a hyphen ("V-Neck", "Gore-Tex"). */
static void title_case(const char *in, char *out, size_t n) {
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (i == 0 || in[i - 1] == ' ' || in[i - 1] == '-')
                     ? (char)toupper((unsigned char)in[i])
                     : in[i];
    out[i] = '\0';
}

static void lower_case(char *s) {
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static const char *qval(const gen_t *g, const query_t *q, int k) {
    return g->vals[q->leaf][k].v[q->val[k]];
}
static const char *ival(const gen_t *g, const item_t *it, int k) {
    return g->vals[it->leaf][k].v[it->val[k]];
}

/* ---- queries ---- */

static void query_set(gen_t *g, query_t *q, int k, int idx, int neg) {
    SHE_ASSERT(idx >= 0 && idx < g->vals[q->leaf][k].n);
    q->val[k] = (signed char)idx;
    q->neg[k] = (unsigned char)neg;
}

/* "feature=waterproof;material=wool" of a phrase table, resolved against the leaf. */
static void query_set_phrase_attrs(gen_t *g, query_t *q, const char *attrs) {
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s", attrs);
    char *save = NULL;
    for (char *t = strtok_r(tmp, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(t, '=');
        SHE_ASSERT(eq);
        *eq = '\0';
        int k = -1;
        for (int i = 0; i < N_KEYS; i++)
            if (strcmp(key_names[i], t) == 0)
                k = i;
        SHE_ASSERT(k >= 0);
        query_set(g, q, k, vlist_find(&g->vals[q->leaf][k], eq + 1), 0);
    }
}

static const char *surface(gen_t *g, int leaf) {
    const vlist_t *s = &g->surfaces[leaf];
    return chance(g, 0.6) ? s->v[0] : s->v[1 + pick(g, s->n - 1)];
}

/* Values like "for curly hair" or "with case" follow the noun. */
static int is_postfix(const char *v) {
    return strncmp(v, "for ", 4) == 0 || strncmp(v, "with ", 5) == 0;
}

/* Noun phrase of a query: the asked (not negated) attributes around the leaf surface. */
static void noun_phrase(gen_t *g, const query_t *q, sbuf_t *b, const char *noun) {
    static const int order[] = {K_BRAND, K_SIZE, K_FEATURE, K_COLOR, K_MATERIAL, K_STYLE};
    int suffix_size = parents[leaves[q->leaf].parent].size_suffix;
    int color_after = q->val[K_COLOR] >= 0 && !q->neg[K_COLOR] && chance(g, 0.3);
    int feature_after = q->val[K_FEATURE] >= 0 && !q->neg[K_FEATURE] &&
                        is_postfix(qval(g, q, K_FEATURE));
    for (int i = 0; i < N_KEYS; i++) {
        int k = order[i];
        if (q->val[k] < 0 || q->neg[k] || (k == K_SIZE && suffix_size) ||
            (k == K_COLOR && color_after) || (k == K_FEATURE && feature_after))
            continue;
        sb_word(b, " ", qval(g, q, k));
    }
    sb_word(b, " ", noun);
    if (feature_after) {
        sb_put(b, " ");
        sb_put(b, qval(g, q, K_FEATURE));
    }
    if (color_after) {
        sb_put(b, " in ");
        sb_put(b, qval(g, q, K_COLOR));
    }
    if (q->val[K_SIZE] >= 0 && !q->neg[K_SIZE] && suffix_size) {
        sb_put(b, " size ");
        sb_put(b, qval(g, q, K_SIZE));
    }
}

/* Keys with values for a leaf, among `allowed`. */
static int keys_with_values(const gen_t *g, int leaf, const int *allowed, int n_allowed,
                            int *out) {
    int n = 0;
    for (int i = 0; i < n_allowed; i++)
        if (g->vals[leaf][allowed[i]].n > 0)
            out[n++] = allowed[i];
    return n;
}

static void make_query(gen_t *g, const she_gendata_opts_t *o, query_t *q) {
    memset(q, 0, sizeof(*q));
    memset(q->val, -1, sizeof(q->val));
    q->type = (she_qtype_t)pick_weighted(&g->rng, o->type_mix, SHE_QTYPE__COUNT);
    sbuf_t b = {.n = 0};
    static const int all_keys[] = {K_BRAND, K_COLOR, K_MATERIAL, K_SIZE, K_STYLE, K_FEATURE};
    int keys[N_KEYS], nk;
    int lower = chance(g, 0.6); /* most people type in lower case */
    switch (q->type) {
    case SHE_QTYPE_PLAIN: {
        q->leaf = pick(g, N_LEAVES);
        static const double n_attr_w[] = {0.2, 0.45, 0.28, 0.07};
        int n_attr = pick_weighted(&g->rng, n_attr_w, 4);
        nk = keys_with_values(g, q->leaf, all_keys, N_KEYS, keys);
        she_shuffle_ints(keys, (size_t)nk, &g->rng);
        for (int i = 0; i < n_attr && i < nk; i++)
            query_set(g, q, keys[i], pick(g, g->vals[q->leaf][keys[i]].n), 0);
        noun_phrase(g, q, &b, surface(g, q->leaf));
        break;
    }
    case SHE_QTYPE_QA:
    case SHE_QTYPE_KNOWLEDGE: {
        const phrase_def_t *ph = q->type == SHE_QTYPE_QA
                                     ? &qa_phrases[pick(g, N_OF(qa_phrases))]
                                     : &knowledge_phrases[pick(g, N_OF(knowledge_phrases))];
        q->leaf = leaf_index(ph->leaf);
        SHE_ASSERT(q->leaf >= 0);
        query_set_phrase_attrs(g, q, ph->attrs);
        sb_put(&b, ph->text);
        if (q->type == SHE_QTYPE_QA && chance(g, 0.3))
            sb_put(&b, "?");
        lower = 0;
        break;
    }
    case SHE_QTYPE_ALTERNATIVE: {
        const char *brand;
        if (chance(g, 0.4)) {
            const phrase_def_t *fb = &flagship_brands[pick(g, N_OF(flagship_brands))];
            q->leaf = leaf_index(fb->leaf);
            SHE_ASSERT(q->leaf >= 0);
            brand = fb->text;
            static const char *const fmts[] = {"%s alternative", "cheaper alternative to %s",
                                               "brands like %s"};
            char text[256];
            snprintf(text, sizeof(text), fmts[pick(g, 3)], brand);
            sb_put(&b, text);
        } else {
            q->leaf = pick(g, N_LEAVES);
            const vlist_t *brands = &g->vals[q->leaf][K_BRAND];
            brand = brands->v[pick(g, brands->n)];
            const char *noun = surface(g, q->leaf);
            char text[256];
            switch (pick(g, 3)) {
            case 0: snprintf(text, sizeof(text), "%s %s alternative", brand, noun); break;
            case 1: snprintf(text, sizeof(text), "alternative to %s %s", brand, noun); break;
            default: snprintf(text, sizeof(text), "%s like %s but cheaper", noun, brand); break;
            }
            sb_put(&b, text);
        }
        query_set(g, q, K_BRAND, vlist_find(&g->vals[q->leaf][K_BRAND], brand), 1);
        break;
    }
    case SHE_QTYPE_NEGATION: {
        static const int negatable[] = {K_COLOR, K_MATERIAL, K_STYLE, K_FEATURE};
        do {
            q->leaf = pick(g, N_LEAVES);
            nk = keys_with_values(g, q->leaf, negatable, 4, keys);
        } while (nk == 0);
        she_shuffle_ints(keys, (size_t)nk, &g->rng);
        int kn = keys[0];
        query_set(g, q, kn, pick(g, g->vals[q->leaf][kn].n), 1);
        if (nk > 1 && chance(g, 0.3))
            query_set(g, q, keys[1], pick(g, g->vals[q->leaf][keys[1]].n), 0);
        sbuf_t np = {.n = 0};
        noun_phrase(g, q, &np, surface(g, q->leaf));
        int tpl = pick(g, 3);
        if (tpl == 0) {
            sb_put(&b, "non-");
            sb_put(&b, qval(g, q, kn));
            sb_put(&b, " ");
        }
        sb_put(&b, np.s);
        if (tpl > 0) {
            sb_put(&b, tpl == 1 ? " without " : " not ");
            sb_put(&b, qval(g, q, kn));
        }
        break;
    }
    default:
        SHE_ASSERT(0);
    }
    memcpy(q->text, b.s, b.n + 1);
    if (lower)
        lower_case(q->text);
    for (int k = 0; k < N_KEYS; k++) {
        if (q->val[k] < 0)
            continue;
        char v[128];
        snprintf(v, sizeof(v), "%s%s", q->neg[k] ? "not " : "", qval(g, q, k));
        q->kv[q->n_kv].key = xstrdup(key_names[k]);
        q->kv[q->n_kv].value = xstrdup(v);
        q->n_kv++;
    }
}

static void query_fini(query_t *q) {
    for (int i = 0; i < q->n_kv; i++) {
        free(q->kv[i].key);
        free(q->kv[i].value);
    }
}

/* ---- items ---- */

/* How often an item states each key its category has. */
static const double key_presence[N_KEYS] = {0.9, 0.7, 0.6, 0.6, 0.5, 0.5};

typedef enum rel {
    REL_RANDOM,   /* attributes at random (for cat none) */
    REL_SATISFY,  /* every asked key met where the leaf has the value, else not stated */
    REL_PARTIAL,  /* satisfied, then one asked key not stated */
    REL_CONFLICT, /* satisfied, then one asked key contradicted */
} rel_t;

/* Draws the item's attributes, then shapes the asked keys; 0 when the leaf cannot give rel. */
static int shape_attrs(gen_t *g, const query_t *q, item_t *it, rel_t rel) {
    for (int k = 0; k < N_KEYS; k++) {
        const vlist_t *vl = &g->vals[it->leaf][k];
        it->val[k] = (signed char)(vl->n && chance(g, key_presence[k]) ? pick(g, vl->n) : -1);
    }
    if (rel == REL_RANDOM)
        return 1;
    int asked[N_KEYS], same[N_KEYS], na = 0;
    for (int k = 0; k < N_KEYS; k++) {
        if (q->val[k] < 0)
            continue;
        const vlist_t *vl = &g->vals[it->leaf][k];
        int idx = vlist_find(vl, qval(g, q, k));
        asked[na] = k;
        same[na++] = idx;
        if (!q->neg[k]) {
            it->val[k] = (signed char)idx; /* -1 when this leaf lacks the value */
        } else if (vl->n == 0 || (vl->n == 1 && idx == 0)) {
            it->val[k] = -1;
        } else {
            int other;
            do
                other = pick(g, vl->n);
            while (other == idx);
            it->val[k] = (signed char)other;
        }
    }
    if (rel == REL_PARTIAL) {
        if (!na)
            return 0;
        it->val[asked[pick(g, na)]] = -1;
    }
    if (rel == REL_CONFLICT) {
        int start = na ? pick(g, na) : 0;
        for (int i = 0; i < na; i++) {
            int j = (start + i) % na, k = asked[j];
            const vlist_t *vl = &g->vals[it->leaf][k];
            if (q->neg[k] && same[j] >= 0) {
                it->val[k] = (signed char)same[j];
                return 1;
            }
            if (!q->neg[k] && same[j] >= 0 && vl->n >= 2) { /* same vocabulary only */
                int other;
                do
                    other = pick(g, vl->n);
                while (other == same[j]);
                it->val[k] = (signed char)other;
                return 1;
            }
        }
        return 0;
    }
    return 1;
}

/* "Size M" for sizes that follow the noun, the value itself otherwise. */
static void size_text(const item_t *it, const char *v, char *out, size_t n) {
    if (parents[leaves[it->leaf].parent].size_suffix)
        snprintf(out, n, "Size %s", v);
    else
        snprintf(out, n, "%s", v);
}

/* Title from one of five templates; whatever it leaves out goes into the description. */
static void render_item(gen_t *g, item_t *it) {
    char tv[N_KEYS][128], noun[128], sz[160] = "";
    int has[N_KEYS], in_title[N_KEYS] = {0};
    for (int k = 0; k < N_KEYS; k++) {
        has[k] = it->val[k] >= 0;
        if (!has[k])
            continue;
        if (k == K_BRAND || k == K_SIZE)
            snprintf(tv[k], sizeof(tv[k]), "%s", ival(g, it, k));
        else
            title_case(ival(g, it, k), tv[k], sizeof(tv[k]));
    }
    if (has[K_SIZE])
        size_text(it, tv[K_SIZE], sz, sizeof(sz));
    title_case(surface(g, it->leaf), noun, sizeof(noun));
    int suffix = parents[leaves[it->leaf].parent].size_suffix;
    sbuf_t t = {.n = 0};
#define USE(k) (has[k] && (in_title[k] = 1))
    switch (pick(g, 5)) {
    case 0: /* Brand [12 inch] Color Material Style Noun[, Size M] */
        if (USE(K_BRAND))
            sb_word(&t, " ", tv[K_BRAND]);
        if (!suffix && USE(K_SIZE))
            sb_word(&t, " ", sz);
        if (USE(K_COLOR))
            sb_word(&t, " ", tv[K_COLOR]);
        if (USE(K_MATERIAL))
            sb_word(&t, " ", tv[K_MATERIAL]);
        if (USE(K_STYLE))
            sb_word(&t, " ", tv[K_STYLE]);
        sb_word(&t, " ", noun);
        if (suffix && USE(K_SIZE))
            sb_word(&t, ", ", sz);
        break;
    case 1: /* Brand Style Noun in Color */
        if (USE(K_BRAND))
            sb_word(&t, " ", tv[K_BRAND]);
        if (USE(K_STYLE))
            sb_word(&t, " ", tv[K_STYLE]);
        sb_word(&t, " ", noun);
        if (USE(K_COLOR))
            sb_word(&t, " in ", tv[K_COLOR]);
        break;
    case 2: /* Brand Feature Noun - Material, Size ("Noun for Curly Hair" when postfix) */
        if (USE(K_BRAND))
            sb_word(&t, " ", tv[K_BRAND]);
        if (has[K_FEATURE] && !is_postfix(ival(g, it, K_FEATURE)) && USE(K_FEATURE))
            sb_word(&t, " ", tv[K_FEATURE]);
        sb_word(&t, " ", noun);
        if (has[K_FEATURE] && !in_title[K_FEATURE] && USE(K_FEATURE))
            sb_word(&t, " ", ival(g, it, K_FEATURE));
        if (USE(K_MATERIAL))
            sb_word(&t, " - ", tv[K_MATERIAL]);
        if (USE(K_SIZE))
            sb_word(&t, in_title[K_MATERIAL] ? ", " : " - ", sz);
        break;
    case 3: /* Color Material Noun by Brand */
        if (USE(K_COLOR))
            sb_word(&t, " ", tv[K_COLOR]);
        if (USE(K_MATERIAL))
            sb_word(&t, " ", tv[K_MATERIAL]);
        sb_word(&t, " ", noun);
        if (USE(K_BRAND))
            sb_word(&t, " by ", tv[K_BRAND]);
        break;
    default: /* Brand Noun (Size, Color) */
        if (USE(K_BRAND))
            sb_word(&t, " ", tv[K_BRAND]);
        sb_word(&t, " ", noun);
        if (has[K_SIZE] || has[K_COLOR]) {
            sb_put(&t, " (");
            if (USE(K_SIZE))
                sb_put(&t, sz);
            if (USE(K_COLOR)) {
                if (in_title[K_SIZE])
                    sb_put(&t, ", ");
                sb_put(&t, tv[K_COLOR]);
            }
            sb_put(&t, ")");
        }
        break;
    }
#undef USE
    static const char *const fmt[N_KEYS] = {"Brand: %s.", "Color: %s.", "Made of %s.",
                                            "Size: %s.",  "Style: %s.", "Feature: %s."};
    sbuf_t d = {.n = 0};
    for (int k = 0; k < N_KEYS; k++) {
        if (!has[k] || in_title[k])
            continue;
        char sentence[200];
        snprintf(sentence, sizeof(sentence), fmt[k], ival(g, it, k));
        sb_word(&d, " ", sentence);
    }
    sb_word(&d, " ", parents[leaves[it->leaf].parent].blurb);
    it->title = xstrdup(t.s);
    it->desc = xstrdup(d.s);
    it->show_attrs = chance(g, 0.35);
}

/* Adds an item of `leaf` shaped by rel; -1 (nothing added) when the leaf cannot give rel. */
static int new_item(gen_t *g, int leaf, const query_t *q, rel_t rel) {
    item_t it = {.leaf = leaf};
    if (!shape_attrs(g, q, &it, rel))
        return -1;
    render_item(g, &it);
    char id[32];
    snprintf(id, sizeof(id), "P%06d", g->n_items + 1);
    it.id = xstrdup(id);
    if (g->n_items == g->cap_items) {
        g->cap_items = g->cap_items ? 2 * g->cap_items : 1024;
        g->items = realloc(g->items, (size_t)g->cap_items * sizeof(*g->items));
        SHE_CHECK_ALLOC(g->items);
    }
    if (g->n_by_leaf[leaf] == g->cap_by_leaf[leaf]) {
        g->cap_by_leaf[leaf] = g->cap_by_leaf[leaf] ? 2 * g->cap_by_leaf[leaf] : 64;
        g->by_leaf[leaf] = realloc(g->by_leaf[leaf], (size_t)g->cap_by_leaf[leaf] * sizeof(int));
        SHE_CHECK_ALLOC(g->by_leaf[leaf]);
    }
    g->by_leaf[leaf][g->n_by_leaf[leaf]++] = g->n_items;
    g->items[g->n_items] = it;
    return g->n_items++;
}

/* The item's attributes as key/value pairs pointing into the tables (read-only). */
static int item_kvs(const gen_t *g, const item_t *it, she_kv_t *kv) {
    int n = 0;
    for (int k = 0; k < N_KEYS; k++)
        if (it->val[k] >= 0) {
            kv[n].key = (char *)key_names[k];
            kv[n].value = (char *)ival(g, it, k);
            n++;
        }
    return n;
}

static she_grade_t relate(const gen_t *g, const query_t *q, const item_t *it,
                          she_cat_match_t *cat, she_attr_match_t *attr) {
    *cat = she_gendata_cat_match(leaves[q->leaf].name, leaves[it->leaf].name);
    she_kv_t kv[N_KEYS];
    int n = item_kvs(g, it, kv);
    *attr = *cat == SHE_CAT_MATCH_NONE ? SHE_ATTR_MATCH_NONE
                                       : she_gendata_attr_match(q->kv, q->n_kv, kv, n);
    return she_gendata_grade(*cat, *attr);
}

/* A random leaf under the query's parent other than the query's leaf. */
static int sibling_leaf(gen_t *g, int leaf) {
    int cand[N_LEAVES], n = 0;
    for (int l = 0; l < N_LEAVES; l++)
        if (l != leaf && leaves[l].parent == leaves[leaf].parent)
            cand[n++] = l;
    SHE_ASSERT(n > 0);
    return cand[pick(g, n)];
}

/* A leaf under another parent; half the time from the same domain (harder negatives). */
static int unrelated_leaf(gen_t *g, int leaf) {
    int cand[N_LEAVES], n = 0, same_domain = chance(g, 0.5);
    const parent_def_t *qp = &parents[leaves[leaf].parent];
    for (int pass = 0; pass < 2 && n == 0; pass++)
        for (int l = 0; l < N_LEAVES; l++) {
            const parent_def_t *p = &parents[leaves[l].parent];
            if (p != qp && (pass || !same_domain || strcmp(p->domain, qp->domain) == 0))
                cand[n++] = l;
        }
    return cand[pick(g, n)];
}

/* An item whose grade against q is `want`, reusing the catalogue when one fits; -1 when
 * no item can have that grade for this query. */
static int choose_item(gen_t *g, const query_t *q, she_grade_t want, const int *used,
                       int n_used) {
    int leaf;
    rel_t rel;
    switch (want) {
    case SHE_GRADE_L1: leaf = unrelated_leaf(g, q->leaf); rel = REL_RANDOM; break;
    case SHE_GRADE_L2:
        leaf = chance(g, 0.75) ? q->leaf : sibling_leaf(g, q->leaf);
        rel = REL_CONFLICT;
        break;
    case SHE_GRADE_L3:
        if (q->n_kv && chance(g, 0.55)) {
            leaf = q->leaf;
            rel = REL_PARTIAL;
        } else {
            leaf = sibling_leaf(g, q->leaf);
            rel = REL_SATISFY;
        }
        break;
    default: leaf = q->leaf; rel = REL_SATISFY; break;
    }
    if (g->n_by_leaf[leaf] && chance(g, 0.6))
        for (int attempt = 0; attempt < 6; attempt++) {
            int idx = g->by_leaf[leaf][pick(g, g->n_by_leaf[leaf])], dup = 0;
            for (int i = 0; i < n_used; i++)
                dup |= used[i] == idx;
            she_cat_match_t cat;
            she_attr_match_t attr;
            if (!dup && relate(g, q, &g->items[idx], &cat, &attr) == want)
                return idx;
        }
    int idx = new_item(g, leaf, q, rel);
    if (idx < 0 && want == SHE_GRADE_L2 && leaf != q->leaf)
        idx = new_item(g, q->leaf, q, REL_CONFLICT);
    she_cat_match_t cat;
    she_attr_match_t attr;
    SHE_ASSERT(idx < 0 || relate(g, q, &g->items[idx], &cat, &attr) == want);
    return idx;
}

/* ---- samples ---- */

/* With probability p another grade, adjacent 80% of the time.  Always draws three numbers,
 * so the noise stream stays aligned whatever p is. */
static she_grade_t add_noise(she_rng_t *rng, double p, she_grade_t grade) {
    double u = she_rng_uniform(rng), v = she_rng_uniform(rng), w = she_rng_uniform(rng);
    if (u >= p)
        return grade;
    int adjacent[2], na = 0, far[3], nf = 0;
    for (int c = SHE_GRADE_L1; c <= SHE_GRADE_L4; c++) {
        if (c == (int)grade)
            continue;
        if (abs(c - (int)grade) == 1)
            adjacent[na++] = c;
        else
            far[nf++] = c;
    }
    if (v < 0.8 || nf == 0)
        return (she_grade_t)adjacent[(int)(w * na)];
    return (she_grade_t)far[(int)(w * nf)];
}

static void fill_sample(gen_t *g, const she_gendata_opts_t *o, const query_t *q,
                        const item_t *it, long long index, she_sample_t *s) {
    memset(s, 0, sizeof(*s));
    char id[64];
    snprintf(id, sizeof(id), "syn%llu-%07lld", (unsigned long long)o->seed, index);
    s->sample_id = xstrdup(id);
    s->query = xstrdup(q->text);
    s->item_id = xstrdup(it->id);
    s->item_title = xstrdup(it->title);
    s->item_desc = xstrdup(it->desc);
    s->query_type = xstrdup(qtype_names[q->type]);
    s->domain = xstrdup(parents[leaves[q->leaf].parent].domain);
    s->query_category = xstrdup(leaves[q->leaf].name);
    s->item_category = xstrdup(leaves[it->leaf].name);
    she_kv_t kv[N_KEYS];
    int n = item_kvs(g, it, kv);
    for (int i = 0; i < n; i++) {
        she_kv_append(&s->item_gt_attrs, &s->n_item_gt_attrs, kv[i].key, kv[i].value);
        if (it->show_attrs)
            she_kv_append(&s->item_attrs, &s->n_item_attrs, kv[i].key, kv[i].value);
    }
    for (int i = 0; i < q->n_kv; i++)
        she_kv_append(&s->query_attrs, &s->n_query_attrs, q->kv[i].key, q->kv[i].value);
    s->has_steps = 1;
    she_grade_t grade = relate(g, q, it, &s->cat_match, &s->attr_match);
    s->grade = add_noise(&g->noise_rng, o->noise, grade);
}

static she_err_t check_mix(const double *w, int n, const char *what, char *errstr,
                           size_t errstr_size) {
    double total = 0;
    for (int i = 0; i < n; i++) {
        if (!(w[i] >= 0))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s weights must be >= 0",
                            what);
        total += w[i];
    }
    if (!(total > 0))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s has no positive weight", what);
    return SHE_OK;
}

she_err_t she_gendata_run(const she_gendata_opts_t *o, she_sample_fn fn, void *opaque,
                          char *errstr, size_t errstr_size) {
    if (o->n_samples < 0 || o->items_per_query < 1 || !(o->noise >= 0 && o->noise <= 1))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "gen-data needs samples >= 0, items per query >= 1, noise in [0, 1]");
    SHE_TRY(check_mix(o->type_mix, SHE_QTYPE__COUNT, "the query type mix", errstr, errstr_size));
    SHE_TRY(check_mix(o->grade_mix, 4, "the grade mix", errstr, errstr_size));
    gen_t *g = malloc(sizeof(*g));
    SHE_CHECK_ALLOC(g);
    gen_init(g, o->seed);
    int *used = malloc((size_t)o->items_per_query * sizeof(int));
    SHE_CHECK_ALLOC(used);
    she_err_t err = SHE_OK;
    long long done = 0;
    while (done < o->n_samples && err == SHE_OK) {
        query_t q;
        make_query(g, o, &q);
        long long rows = o->n_samples - done < o->items_per_query ? o->n_samples - done
                                                                  : o->items_per_query;
        for (int i = 0; i < rows && err == SHE_OK; i++) {
            double w[4];
            memcpy(w, o->grade_mix, sizeof(w));
            if (q.n_kv == 0)
                w[SHE_GRADE_L2 - 1] = 0; /* nothing asked, nothing to contradict */
            int idx = -1;
            while (idx < 0) {
                she_grade_t want = (she_grade_t)(SHE_GRADE_L1 + pick_weighted(&g->rng, w, 4));
                idx = choose_item(g, &q, want, used, i);
                if (idx < 0)
                    w[want - 1] = 0; /* L1 and L4 are always possible, so this ends */
            }
            used[i] = idx;
            she_sample_t s;
            fill_sample(g, o, &q, &g->items[idx], done, &s);
            err = fn(&s, opaque, errstr, errstr_size);
            she_sample_clear(&s);
            done++;
        }
        query_fini(&q);
    }
    free(used);
    gen_fini(g);
    free(g);
    return err;
}
