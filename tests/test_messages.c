/* test_messages.c -- every message type round-trips through its Avro encoding (all fields
 * set, optionals absent), the sample schema mirrors she_sample_t, a sample written with the
 * older schema decodes with the default, malformed and inconsistent messages are refused
 * with a reason, and the speed of a 16 x 100-token rollout group.
 *
 * Hidden modes for tests/test_avro_interop.sh and the fuzz corpus:
 *   test_messages --interop-write DIR   write DIR/<case>.she.avro, expected.json, fingerprints.json
 *   test_messages --interop-read DIR    decode DIR/<case>.py.avro (written by fastavro), compare
 *   test_messages --write-corpus DIR    write the fuzz seed corpus */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "messages.h"
#include "test.h"

static char schema_dir[1024];

static she_avro_codec_t *open_codec(void) {
    char errstr[512];
    she_avro_codec_t *ac = NULL;
    if (she_msg_codec_open(schema_dir, &ac, errstr, sizeof(errstr)) != SHE_OK)
        fprintf(stderr, "she_msg_codec_open: %s\n", errstr);
    return ac;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    SHE_ASSERT(d);
    return d;
}

/* ---- reference messages ---- */

static void build_sample(she_sample_t *s, int full) {
    memset(s, 0, sizeof(*s));
    s->sample_id = xstrdup("s-0001");
    s->query = xstrdup("\xe7\xba\xa2\xe8\x89\xb2 red dress \"quoted\" \\ tab\t");
    s->item_id = xstrdup("item-42");
    s->item_title = xstrdup("Robe rouge \xe2\x80\x94 caf\xc3\xa9");
    s->grade = full ? SHE_GRADE_L3 : SHE_GRADE_UNKNOWN;
    if (!full)
        return;
    s->item_desc = xstrdup("A long red dress.");
    she_kv_append(&s->item_attrs, &s->n_item_attrs, "color", "red");
    she_kv_append(&s->item_attrs, &s->n_item_attrs, "size", "");
    s->query_type = xstrdup("plain");
    s->domain = xstrdup("apparel");
    s->has_steps = 1;
    s->query_category = xstrdup("dress");
    she_kv_append(&s->query_attrs, &s->n_query_attrs, "color", "red");
    s->item_category = xstrdup("dress");
    she_kv_append(&s->item_gt_attrs, &s->n_item_gt_attrs, "color", "red");
    she_kv_append(&s->item_gt_attrs, &s->n_item_gt_attrs, "length", "long");
    s->cat_match = SHE_CAT_MATCH_EXACT;
    s->attr_match = SHE_ATTR_MATCH_PARTIAL;
}

/* G responses of about T tokens; response 1 is empty when G > 1 (generation can stop at
 * once), the last is truncated. */
static void build_rollout(she_rollout_group_t *g, int G, int T) {
    memset(g, 0, sizeof(*g));
    g->group_id = xstrdup("s-0001/v7/0");
    g->sample_id = xstrdup("s-0001");
    g->policy_version = 7;
    g->created_ms = 1700000000123LL;
    build_sample(&g->sample, 1);
    g->n_prompt_tokens = 50;
    g->prompt_tokens = malloc(50 * sizeof(int32_t));
    for (int i = 0; i < 50; i++)
        g->prompt_tokens[i] = i == 0 ? 151643 : i * 37 % 5000;
    g->n_responses = G;
    g->responses = calloc((size_t)G, sizeof(*g->responses));
    for (int r = 0; r < G; r++) {
        she_response_t *x = &g->responses[r];
        x->n_tokens = (G > 1 && r == 1) ? 0 : T + r % 3;
        x->tokens = malloc(((size_t)x->n_tokens + 1) * sizeof(int32_t));
        x->logprobs = malloc(((size_t)x->n_tokens + 1) * sizeof(float));
        for (int t = 0; t < x->n_tokens; t++) {
            x->tokens[t] = (r * 7919 + t * 104729) % 151936;
            x->logprobs[t] = -0.001f * (float)((t * 13 + r) % 4000) - 1e-7f;
        }
        x->n_spans = x->n_tokens >= 5 ? SHE_MSG_STEPS : 0;
        x->spans = calloc(SHE_MSG_STEPS, sizeof(*x->spans));
        for (int k = 0; k < x->n_spans; k++)
            x->spans[k] = (she_step_span_t){k + 1, k * x->n_tokens / 5, (k + 1) * x->n_tokens / 5};
        x->truncated = r == G - 1;
    }
}

static void build_rewarded(she_rewarded_group_t *g, int G, int T) {
    memset(g, 0, sizeof(*g));
    build_rollout(&g->rollout, G, T);
    g->n_rewards = G;
    g->rewards = calloc((size_t)G, sizeof(*g->rewards));
    for (int r = 0; r < G; r++) {
        for (int k = 0; k < SHE_MSG_STEPS; k++)
            g->rewards[r].step_rewards[k] = (float)((r + k) % 3) * 0.5f - 0.25f;
        g->rewards[r].total = 0.1f * (float)r - 0.3f;
        g->rewards[r].pass = r % 2;
    }
    g->pass_rate = 0.5f;
    g->created_ms = 1700000000999LL;
}

static void add_metric(she_msg_metric_t **m, int *n, const char *name, double v) {
    *m = realloc(*m, (size_t)(*n + 1) * sizeof(**m));
    (*m)[*n].name = xstrdup(name);
    (*m)[(*n)++].value = v;
}

static void build_checkpoint(she_checkpoint_announcement_t *c, int full) {
    memset(c, 0, sizeof(*c));
    c->version = full ? 7 : 0;
    c->uri = xstrdup("file:///var/lib/she/ckpt/v7");
    c->sha256 = xstrdup("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    c->parent_version = full ? 6 : -1;
    c->created_ms = 1700000001000LL;
    if (full) {
        add_metric(&c->metrics, &c->n_metrics, "loss", 0.4375);
        add_metric(&c->metrics, &c->n_metrics, "step", 700);
    }
}

static void build_control(she_control_state_t *c) {
    memset(c, 0, sizeof(*c));
    c->seq = 3;
    c->difficulty_lo = 0.05f;
    c->difficulty_hi = 0.85f;
    c->curriculum_stage = 2;
    add_metric(&c->quotas, &c->n_quotas, "negation", 0.2);
    add_metric(&c->quotas, &c->n_quotas, "qa", 0.3);
    c->reason = xstrdup("pass rate 0.91 > 0.85 for 500 samples: raise difficulty");
    c->updated_ms = 1700000002000LL;
}

static void build_pass_rate(she_pass_rate_t *p) {
    memset(p, 0, sizeof(*p));
    p->sample_id = xstrdup("s-0001");
    p->pass_rate = 0.75f;
    p->count = 8;
    p->policy_version = 7;
    p->updated_ms = 1700000003000LL;
}

static void build_dead_letter(she_dead_letter_t *d, int full) {
    static const uint8_t raw[] = {0xc3, 0x01, 0x00, 0xff, 0x10, 0x80, 'x'};
    memset(d, 0, sizeof(*d));
    d->source_topic = xstrdup("she.samples");
    d->partition = 3;
    d->offset = 123456789012LL;
    if (full) {
        d->key = malloc(6);
        memcpy(d->key, "s-0001", 6);
        d->key_len = 6;
        d->raw = malloc(sizeof(raw));
        memcpy(d->raw, raw, sizeof(raw));
        d->raw_len = sizeof(raw);
    }
    d->error = xstrdup("she.v1.Sample: at byte 12 of 7: varint runs past the end of the message");
    d->component = xstrdup("rollout");
    d->created_ms = 1700000004000LL;
}

static void build_deployment(she_deployment_event_t *e, int full) {
    memset(e, 0, sizeof(*e));
    e->action = full ? SHE_DEPLOY_ACTION_PROMOTE : SHE_DEPLOY_ACTION_ABORT;
    e->stable_version = 7;
    e->canary_version = full ? 8 : -1;
    e->canary_share = full ? 0.1f : 0.0f;
    e->reason = xstrdup(full ? "canary agreement 0.93 >= 0.90" : "operator abort");
    if (full)
        add_metric(&e->metrics, &e->n_metrics, "agreement", 0.93);
    e->created_ms = 1700000005000LL;
}

static void build_evaluation(she_evaluation_record_t *e) {
    memset(e, 0, sizeof(*e));
    e->policy_version = 8;
    e->checkpoint_uri = xstrdup("/var/lib/she/ckpt/v8");
    e->sha256 = xstrdup("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    e->dataset = xstrdup("heldout.jsonl (val split by query, fraction 0.15, seed 1; 200 rows)");
    e->rows = 200;
    e->macro_f1 = 0.5125;
    e->good_f1 = 0.75;
    e->accuracy = 0.6;
    e->format_failure_rate = 0.015;
    add_metric(&e->per_class_f1, &e->n_per_class_f1, "L1", 0.25);
    add_metric(&e->per_class_f1, &e->n_per_class_f1, "L2", 0.3);
    add_metric(&e->per_class_f1, &e->n_per_class_f1, "L3", 0.7);
    add_metric(&e->per_class_f1, &e->n_per_class_f1, "L4", 0.8);
    e->created_ms = 1700000006000LL;
}

/* ---- one message of any type ---- */

typedef enum kind {
    K_SAMPLE,
    K_ROLLOUT,
    K_REWARDED,
    K_CHECKPOINT,
    K_CONTROL,
    K_PASS_RATE,
    K_DEAD_LETTER,
    K_DEPLOYMENT,
    K_EVALUATION,
} kind_t;

static const char *const kind_record[] = {
    SHE_MSG_SAMPLE,        SHE_MSG_ROLLOUT_GROUP, SHE_MSG_REWARDED_GROUP, SHE_MSG_CHECKPOINT,
    SHE_MSG_CONTROL_STATE, SHE_MSG_PASS_RATE,     SHE_MSG_DEAD_LETTER,    SHE_MSG_DEPLOYMENT_EVENT,
    SHE_MSG_EVALUATION,
};

typedef struct msg {
    kind_t kind;
    union {
        she_sample_t sample;
        she_rollout_group_t rollout;
        she_rewarded_group_t rewarded;
        she_checkpoint_announcement_t checkpoint;
        she_control_state_t control;
        she_pass_rate_t pass_rate;
        she_dead_letter_t dead_letter;
        she_deployment_event_t deployment;
        she_evaluation_record_t evaluation;
    } u;
} msg_t;

static const struct {
    const char *name;
    kind_t kind;
    int full;
} cases[] = {
    {"sample_full", K_SAMPLE, 1},         {"sample_min", K_SAMPLE, 0},
    {"rollout", K_ROLLOUT, 1},            {"rewarded", K_REWARDED, 1},
    {"checkpoint_full", K_CHECKPOINT, 1}, {"checkpoint_min", K_CHECKPOINT, 0},
    {"control_state", K_CONTROL, 1},      {"pass_rate", K_PASS_RATE, 1},
    {"dead_letter_full", K_DEAD_LETTER, 1}, {"dead_letter_min", K_DEAD_LETTER, 0},
    {"deployment_full", K_DEPLOYMENT, 1}, {"deployment_min", K_DEPLOYMENT, 0},
    {"evaluation", K_EVALUATION, 1},
};
#define N_CASES ((int)(sizeof(cases) / sizeof(cases[0])))

static void build_case(int i, msg_t *m) {
    memset(m, 0, sizeof(*m));
    m->kind = cases[i].kind;
    int full = cases[i].full;
    switch (m->kind) {
    case K_SAMPLE: build_sample(&m->u.sample, full); break;
    case K_ROLLOUT: build_rollout(&m->u.rollout, 4, 12); break;
    case K_REWARDED: build_rewarded(&m->u.rewarded, 3, 9); break;
    case K_CHECKPOINT: build_checkpoint(&m->u.checkpoint, full); break;
    case K_CONTROL: build_control(&m->u.control); break;
    case K_PASS_RATE: build_pass_rate(&m->u.pass_rate); break;
    case K_DEAD_LETTER: build_dead_letter(&m->u.dead_letter, full); break;
    case K_DEPLOYMENT: build_deployment(&m->u.deployment, full); break;
    case K_EVALUATION: build_evaluation(&m->u.evaluation); break;
    }
}

static she_err_t encode_msg(she_avro_codec_t *ac, const msg_t *m, const uint8_t **buf,
                            size_t *len, char *errstr, size_t n) {
    switch (m->kind) {
    case K_SAMPLE: return she_msg_encode_sample(ac, &m->u.sample, buf, len, errstr, n);
    case K_ROLLOUT: return she_msg_encode_rollout_group(ac, &m->u.rollout, buf, len, errstr, n);
    case K_REWARDED: return she_msg_encode_rewarded_group(ac, &m->u.rewarded, buf, len, errstr, n);
    case K_CHECKPOINT: return she_msg_encode_checkpoint(ac, &m->u.checkpoint, buf, len, errstr, n);
    case K_CONTROL: return she_msg_encode_control_state(ac, &m->u.control, buf, len, errstr, n);
    case K_PASS_RATE: return she_msg_encode_pass_rate(ac, &m->u.pass_rate, buf, len, errstr, n);
    case K_DEAD_LETTER: return she_msg_encode_dead_letter(ac, &m->u.dead_letter, buf, len, errstr, n);
    case K_DEPLOYMENT:
        return she_msg_encode_deployment_event(ac, &m->u.deployment, buf, len, errstr, n);
    case K_EVALUATION: return she_msg_encode_evaluation(ac, &m->u.evaluation, buf, len, errstr, n);
    }
    return SHE_ERR_INVALID;
}

/* Decodes into m (kind set by the caller; m zeroed or from an earlier decode). */
static she_err_t decode_msg(she_avro_codec_t *ac, msg_t *m, const uint8_t *buf, size_t len,
                            char *errstr, size_t n) {
    switch (m->kind) {
    case K_SAMPLE: return she_msg_decode_sample(ac, buf, len, &m->u.sample, errstr, n);
    case K_ROLLOUT: return she_msg_decode_rollout_group(ac, buf, len, &m->u.rollout, errstr, n);
    case K_REWARDED: return she_msg_decode_rewarded_group(ac, buf, len, &m->u.rewarded, errstr, n);
    case K_CHECKPOINT: return she_msg_decode_checkpoint(ac, buf, len, &m->u.checkpoint, errstr, n);
    case K_CONTROL: return she_msg_decode_control_state(ac, buf, len, &m->u.control, errstr, n);
    case K_PASS_RATE: return she_msg_decode_pass_rate(ac, buf, len, &m->u.pass_rate, errstr, n);
    case K_DEAD_LETTER: return she_msg_decode_dead_letter(ac, buf, len, &m->u.dead_letter, errstr, n);
    case K_DEPLOYMENT:
        return she_msg_decode_deployment_event(ac, buf, len, &m->u.deployment, errstr, n);
    case K_EVALUATION: return she_msg_decode_evaluation(ac, buf, len, &m->u.evaluation, errstr, n);
    }
    return SHE_ERR_INVALID;
}

static void clear_msg(msg_t *m) {
    switch (m->kind) {
    case K_SAMPLE: she_sample_clear(&m->u.sample); break;
    case K_ROLLOUT: she_msg_clear_rollout_group(&m->u.rollout); break;
    case K_REWARDED: she_msg_clear_rewarded_group(&m->u.rewarded); break;
    case K_CHECKPOINT: she_msg_clear_checkpoint(&m->u.checkpoint); break;
    case K_CONTROL: she_msg_clear_control_state(&m->u.control); break;
    case K_PASS_RATE: she_msg_clear_pass_rate(&m->u.pass_rate); break;
    case K_DEAD_LETTER: she_msg_clear_dead_letter(&m->u.dead_letter); break;
    case K_DEPLOYMENT: she_msg_clear_deployment_event(&m->u.deployment); break;
    case K_EVALUATION: she_msg_clear_evaluation(&m->u.evaluation); break;
    }
}

/* ---- equality, reporting the first difference ---- */

static int differ(const char *what) {
    fprintf(stderr, "  differs: %s\n", what);
    return 0;
}
#define SAME(cond, what) ((cond) ? 1 : differ(what))

static int eq_str(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int eq_kvs(const she_kv_t *a, int na, const she_kv_t *b, int nb) {
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (!eq_str(a[i].key, b[i].key) || !eq_str(a[i].value, b[i].value))
            return 0;
    return 1;
}

static int eq_metrics(const she_msg_metric_t *a, int na, const she_msg_metric_t *b, int nb) {
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (!eq_str(a[i].name, b[i].name) || a[i].value != b[i].value)
            return 0;
    return 1;
}

static int eq_bytes(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    return (!a && !b) || (a && b && na == nb && (na == 0 || memcmp(a, b, na) == 0));
}

static int eq_sample(const she_sample_t *a, const she_sample_t *b) {
    return SAME(eq_str(a->sample_id, b->sample_id), "sample_id") &&
           SAME(eq_str(a->query, b->query), "query") &&
           SAME(eq_str(a->item_id, b->item_id), "item_id") &&
           SAME(eq_str(a->item_title, b->item_title), "item_title") &&
           SAME(eq_str(a->item_desc, b->item_desc), "item_desc") &&
           SAME(eq_kvs(a->item_attrs, a->n_item_attrs, b->item_attrs, b->n_item_attrs),
                "item_attrs") &&
           SAME(eq_str(a->query_type, b->query_type), "query_type") &&
           SAME(eq_str(a->domain, b->domain), "domain") && SAME(a->grade == b->grade, "grade") &&
           SAME(a->has_steps == b->has_steps, "has_steps") &&
           SAME(eq_str(a->query_category, b->query_category), "query_category") &&
           SAME(eq_kvs(a->query_attrs, a->n_query_attrs, b->query_attrs, b->n_query_attrs),
                "query_attrs") &&
           SAME(eq_str(a->item_category, b->item_category), "item_category") &&
           SAME(eq_kvs(a->item_gt_attrs, a->n_item_gt_attrs, b->item_gt_attrs,
                       b->n_item_gt_attrs),
                "item_gt_attrs") &&
           SAME(a->cat_match == b->cat_match, "cat_match") &&
           SAME(a->attr_match == b->attr_match, "attr_match");
}

static int eq_response(const she_response_t *a, const she_response_t *b) {
    if (a->n_tokens != b->n_tokens || a->n_spans != b->n_spans || a->truncated != b->truncated)
        return 0;
    for (int t = 0; t < a->n_tokens; t++)
        if (a->tokens[t] != b->tokens[t] || a->logprobs[t] != b->logprobs[t])
            return 0;
    for (int k = 0; k < a->n_spans; k++)
        if (a->spans[k].step != b->spans[k].step || a->spans[k].start != b->spans[k].start ||
            a->spans[k].end != b->spans[k].end)
            return 0;
    return 1;
}

static int eq_rollout(const she_rollout_group_t *a, const she_rollout_group_t *b) {
    if (!SAME(eq_str(a->group_id, b->group_id), "group_id") ||
        !SAME(eq_str(a->sample_id, b->sample_id), "sample_id") ||
        !SAME(a->policy_version == b->policy_version, "policy_version") ||
        !SAME(a->created_ms == b->created_ms, "created_ms") || !eq_sample(&a->sample, &b->sample) ||
        !SAME(a->n_prompt_tokens == b->n_prompt_tokens, "n_prompt_tokens") ||
        !SAME(a->n_responses == b->n_responses, "n_responses"))
        return 0;
    for (int i = 0; i < a->n_prompt_tokens; i++)
        if (a->prompt_tokens[i] != b->prompt_tokens[i])
            return differ("prompt_tokens");
    for (int r = 0; r < a->n_responses; r++)
        if (!eq_response(&a->responses[r], &b->responses[r]))
            return differ("responses");
    return 1;
}

static int eq_rewarded(const she_rewarded_group_t *a, const she_rewarded_group_t *b) {
    if (!eq_rollout(&a->rollout, &b->rollout) || !SAME(a->n_rewards == b->n_rewards, "n_rewards") ||
        !SAME(a->pass_rate == b->pass_rate, "pass_rate") ||
        !SAME(a->created_ms == b->created_ms, "created_ms"))
        return 0;
    for (int r = 0; r < a->n_rewards; r++) {
        if (a->rewards[r].total != b->rewards[r].total || a->rewards[r].pass != b->rewards[r].pass)
            return differ("rewards");
        for (int k = 0; k < SHE_MSG_STEPS; k++)
            if (a->rewards[r].step_rewards[k] != b->rewards[r].step_rewards[k])
                return differ("step_rewards");
    }
    return 1;
}

static int eq_msg(const msg_t *a, const msg_t *b) {
    const she_checkpoint_announcement_t *ca = &a->u.checkpoint, *cb = &b->u.checkpoint;
    const she_control_state_t *sa = &a->u.control, *sb = &b->u.control;
    const she_pass_rate_t *pa = &a->u.pass_rate, *pb = &b->u.pass_rate;
    const she_dead_letter_t *da = &a->u.dead_letter, *db = &b->u.dead_letter;
    const she_deployment_event_t *ea = &a->u.deployment, *eb = &b->u.deployment;
    const she_evaluation_record_t *va = &a->u.evaluation, *vb = &b->u.evaluation;
    if (a->kind != b->kind)
        return differ("kind");
    switch (a->kind) {
    case K_SAMPLE: return eq_sample(&a->u.sample, &b->u.sample);
    case K_ROLLOUT: return eq_rollout(&a->u.rollout, &b->u.rollout);
    case K_REWARDED: return eq_rewarded(&a->u.rewarded, &b->u.rewarded);
    case K_CHECKPOINT:
        return SAME(ca->version == cb->version, "version") && SAME(eq_str(ca->uri, cb->uri), "uri") &&
               SAME(eq_str(ca->sha256, cb->sha256), "sha256") &&
               SAME(ca->parent_version == cb->parent_version, "parent_version") &&
               SAME(ca->created_ms == cb->created_ms, "created_ms") &&
               SAME(eq_metrics(ca->metrics, ca->n_metrics, cb->metrics, cb->n_metrics), "metrics");
    case K_CONTROL:
        return SAME(sa->seq == sb->seq, "seq") && SAME(sa->difficulty_lo == sb->difficulty_lo, "lo") &&
               SAME(sa->difficulty_hi == sb->difficulty_hi, "hi") &&
               SAME(sa->curriculum_stage == sb->curriculum_stage, "stage") &&
               SAME(eq_metrics(sa->quotas, sa->n_quotas, sb->quotas, sb->n_quotas), "quotas") &&
               SAME(eq_str(sa->reason, sb->reason), "reason") &&
               SAME(sa->updated_ms == sb->updated_ms, "updated_ms");
    case K_PASS_RATE:
        return SAME(eq_str(pa->sample_id, pb->sample_id), "sample_id") &&
               SAME(pa->pass_rate == pb->pass_rate, "pass_rate") && SAME(pa->count == pb->count, "count") &&
               SAME(pa->policy_version == pb->policy_version, "policy_version") &&
               SAME(pa->updated_ms == pb->updated_ms, "updated_ms");
    case K_DEAD_LETTER:
        return SAME(eq_str(da->source_topic, db->source_topic), "source_topic") &&
               SAME(da->partition == db->partition, "partition") &&
               SAME(da->offset == db->offset, "offset") &&
               SAME(eq_bytes(da->key, da->key_len, db->key, db->key_len), "key") &&
               SAME(eq_bytes(da->raw ? da->raw : (const uint8_t *)"", da->raw_len,
                             db->raw ? db->raw : (const uint8_t *)"", db->raw_len), "raw") &&
               SAME(eq_str(da->error, db->error), "error") &&
               SAME(eq_str(da->component, db->component), "component") &&
               SAME(da->created_ms == db->created_ms, "created_ms");
    case K_DEPLOYMENT:
        return SAME(ea->action == eb->action, "action") &&
               SAME(ea->stable_version == eb->stable_version, "stable_version") &&
               SAME(ea->canary_version == eb->canary_version, "canary_version") &&
               SAME(ea->canary_share == eb->canary_share, "canary_share") &&
               SAME(eq_str(ea->reason, eb->reason), "reason") &&
               SAME(eq_metrics(ea->metrics, ea->n_metrics, eb->metrics, eb->n_metrics), "metrics") &&
               SAME(ea->created_ms == eb->created_ms, "created_ms");
    case K_EVALUATION:
        return SAME(va->policy_version == vb->policy_version, "policy_version") &&
               SAME(eq_str(va->checkpoint_uri, vb->checkpoint_uri), "checkpoint_uri") &&
               SAME(eq_str(va->sha256, vb->sha256), "sha256") &&
               SAME(eq_str(va->dataset, vb->dataset), "dataset") &&
               SAME(va->rows == vb->rows, "rows") &&
               SAME(va->macro_f1 == vb->macro_f1, "macro_f1") &&
               SAME(va->good_f1 == vb->good_f1, "good_f1") &&
               SAME(va->accuracy == vb->accuracy, "accuracy") &&
               SAME(va->format_failure_rate == vb->format_failure_rate, "format_failure_rate") &&
               SAME(eq_metrics(va->per_class_f1, va->n_per_class_f1, vb->per_class_f1,
                               vb->n_per_class_f1), "per_class_f1") &&
               SAME(va->created_ms == vb->created_ms, "created_ms");
    }
    return 0;
}

/* ---- tests ---- */

static uint8_t *copy_of(const uint8_t *buf, size_t len) {
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, buf, len);
    return c;
}

static void test_roundtrip_every_message(void) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    REQUIRE(ac != NULL);
    for (int i = 0; i < N_CASES; i++) {
        msg_t m, out;
        build_case(i, &m);
        memset(&out, 0, sizeof(out));
        out.kind = m.kind;
        const uint8_t *buf;
        size_t len;
        CHECK_OK(encode_msg(ac, &m, &buf, &len, errstr, sizeof(errstr)));
        uint8_t *bytes = copy_of(buf, len);
        CHECK_OK(decode_msg(ac, &out, bytes, len, errstr, sizeof(errstr)));
        CHECK_MSG(eq_msg(&m, &out), "case %s", cases[i].name);
        /* Decoding into a struct that holds a message replaces it (ASan: no leak). */
        CHECK_OK(decode_msg(ac, &out, bytes, len, errstr, sizeof(errstr)));
        CHECK_MSG(eq_msg(&m, &out), "case %s, second decode", cases[i].name);
        /* Re-encoding the decoded message gives the same bytes. */
        CHECK_OK(encode_msg(ac, &out, &buf, &len, errstr, sizeof(errstr)));
        CHECK_MSG(memcmp(buf, bytes, len) == 0, "case %s re-encoded", cases[i].name);
        free(bytes);
        clear_msg(&out);
        clear_msg(&m);
    }
    she_avro_codec_free(ac);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = malloc((size_t)n + 1);
    size_t got = fread(t, 1, (size_t)n, f);
    t[got] = '\0';
    fclose(f);
    return t;
}

static int in_list(const char *const *list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

/* Every field of she_sample_t (read from core/sample.h) has its schema field and every schema
 * field has its struct field: n_X counts are the length of array X, has_steps is whether
 * "steps" is null, the step ground truth lives in the StepTruth record. */
static void test_sample_schema_mirrors_struct(void) {
    char path[1200];
    const char *src = getenv("SHE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/core/sample.h", src ? src : ".");
    char *h = read_text(path);
    REQUIRE_MSG(h != NULL, "cannot read %s", path);
    char *begin = strstr(h, "typedef struct she_sample {");
    char *end = begin ? strstr(begin, "} she_sample_t;") : NULL;
    REQUIRE(begin && end);
    *end = '\0';
    begin = strchr(begin, '{') + 1;
    /* Blank out comments, then take the identifier before each ';'. */
    for (char *c = strstr(begin, "/*"); c; c = strstr(c, "/*")) {
        char *e = strstr(c, "*/");
        REQUIRE(e != NULL);
        memset(c, ' ', (size_t)(e + 2 - c));
    }
    const char *fields[64];
    int n_fields = 0;
    for (char *semi = strchr(begin, ';'); semi && n_fields < 64; semi = strchr(semi + 1, ';')) {
        char *e = semi;
        while (e > begin && (e[-1] == ' ' || e[-1] == '\n'))
            e--;
        char *s = e;
        while (s > begin && (s[-1] == '_' || (s[-1] >= 'a' && s[-1] <= 'z') ||
                             (s[-1] >= '0' && s[-1] <= '9')))
            s--;
        *e = '\0';
        fields[n_fields++] = s;
    }
    CHECK_MSG(n_fields >= 19, "only %d fields parsed from sample.h", n_fields);

    snprintf(path, sizeof(path), "%s/sample.avsc", schema_dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    REQUIRE_MSG(j != NULL, "%s: %s", path, jerr.text);
    const char *top[64], *steps[64];
    int n_top = 0, n_steps = 0, used_top[64] = {0}, used_steps[64] = {0};
    const json_t *fs = json_object_get(j, "fields"), *fd;
    size_t i;
    json_array_foreach(fs, i, fd) {
        top[n_top++] = json_string_value(json_object_get(fd, "name"));
        if (!strcmp(top[n_top - 1], "steps")) {
            const json_t *rec = json_array_get(json_object_get(fd, "type"), 1), *sf;
            size_t k;
            json_array_foreach(json_object_get(rec, "fields"), k, sf)
                steps[n_steps++] = json_string_value(json_object_get(sf, "name"));
        }
    }
    used_top[in_list(top, n_top, "schema_version")] = 1;
    for (int f = 0; f < n_fields; f++) {
        const char *name = fields[f];
        int k;
        if (!strncmp(name, "n_", 2) && in_list(fields, n_fields, name + 2) >= 0)
            continue; /* the length of the array field name + 2 */
        if (!strcmp(name, "has_steps"))
            name = "steps";
        if ((k = in_list(top, n_top, name)) >= 0)
            used_top[k] = 1;
        else if ((k = in_list(steps, n_steps, name)) >= 0)
            used_steps[k] = 1;
        else
            CHECK_MSG(0, "she_sample_t.%s has no field in sample.avsc", name);
    }
    for (int k = 0; k < n_top; k++)
        CHECK_MSG(used_top[k], "sample.avsc field %s is not in she_sample_t", top[k]);
    for (int k = 0; k < n_steps; k++)
        CHECK_MSG(used_steps[k], "sample.avsc field steps.%s is not in she_sample_t", steps[k]);
    json_decref(j);
    free(h);
}

/* Writes m with the older sample schema (sample.v1.avsc, without domain): the fields of the
 * current encoding that v1 has, copied into a v1 value of a codec where v1 is current. */
static she_err_t encode_sample_v1(she_avro_codec_t *ac, const she_sample_t *m, uint8_t **out,
                                  size_t *out_len, char *errstr, size_t n) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/sample.v1.avsc", schema_dir);
    char *text = read_text(path);
    if (!text)
        return she_errf(SHE_ERR_IO, errstr, n, "cannot read %s", path);
    she_avro_codec_t *v1 = she_avro_codec_new();
    const uint8_t *buf;
    size_t len;
    avro_value_t *cur, *old, f_cur, f_old;
    she_err_t rc = she_avro_codec_add(v1, text, strlen(text), 1, "sample.v1.avsc", errstr, n);
    free(text);
    if (rc == SHE_OK)
        rc = she_msg_encode_sample(ac, m, &buf, &len, errstr, n);
    if (rc == SHE_OK)
        rc = she_avro_codec_decode(ac, SHE_MSG_SAMPLE, buf, len, &cur, NULL, errstr, n);
    if (rc == SHE_OK) {
        old = she_avro_codec_value(v1, SHE_MSG_SAMPLE);
        size_t count = 0;
        avro_value_get_size(old, &count);
        for (size_t i = 0; i < count && rc == SHE_OK; i++) {
            const char *name = NULL;
            avro_value_get_by_index(old, i, &f_old, &name);
            if (strcmp(name, "schema_version") == 0)
                continue;
            if (avro_value_get_by_name(cur, name, &f_cur, NULL) != 0 ||
                avro_value_copy_fast(&f_old, &f_cur) != 0)
                rc = she_errf(SHE_ERR_AVRO, errstr, n, "copy %s: %s", name, avro_strerror());
        }
    }
    if (rc == SHE_OK)
        rc = she_avro_codec_encode(v1, old, &buf, &len, errstr, n);
    if (rc == SHE_OK) {
        *out = copy_of(buf, len);
        *out_len = len;
    }
    she_avro_codec_free(v1);
    return rc;
}

static void test_sample_evolution(void) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    REQUIRE(ac != NULL);
    she_sample_t s, out = {0};
    build_sample(&s, 1);
    uint8_t *v1 = NULL;
    size_t len = 0;
    REQUIRE_OK(encode_sample_v1(ac, &s, &v1, &len, errstr, sizeof(errstr)));
    uint64_t fp = 0;
    int version = 0;
    CHECK_OK(she_avro_peek(v1, len, &fp, errstr, sizeof(errstr)));
    CHECK(fp != she_avro_codec_fingerprint(ac, SHE_MSG_SAMPLE));
    CHECK_STR(she_avro_codec_lookup(ac, fp, &version), SHE_MSG_SAMPLE);
    CHECK_EQ_INT(version, 1);
    REQUIRE_OK(she_msg_decode_sample(ac, v1, len, &out, errstr, sizeof(errstr)));
    CHECK(out.domain == NULL); /* the default of the field v1 lacks */
    free(s.domain);
    s.domain = NULL;
    CHECK(eq_sample(&s, &out));
    /* The older schema never makes a current encoding. */
    const uint8_t *buf;
    CHECK_OK(she_msg_encode_sample(ac, &out, &buf, &len, errstr, sizeof(errstr)));
    CHECK(she_avro_peek(buf, len, &fp, errstr, sizeof(errstr)) == SHE_OK &&
          fp == she_avro_codec_fingerprint(ac, SHE_MSG_SAMPLE));
    free(v1);
    she_sample_clear(&s);
    she_sample_clear(&out);
    she_avro_codec_free(ac);
}

/* Decoding must fail with `code` and `needle` in the reason, and leave the struct cleared. */
static void expect_decode_fail(she_avro_codec_t *ac, kind_t kind, const uint8_t *buf, size_t len,
                               she_err_t code, const char *needle, int line) {
    char errstr[512] = "";
    msg_t out;
    memset(&out, 0, sizeof(out));
    out.kind = kind;
    she_err_t rc = decode_msg(ac, &out, buf, len, errstr, sizeof(errstr));
    msg_t zero;
    memset(&zero, 0, sizeof(zero));
    zero.kind = kind;
    CHECK_MSG(rc == code && strstr(errstr, needle) && memcmp(&out, &zero, sizeof(out)) == 0,
              "line %d: rc %d \"%s\", wanted %d \"%s\"", line, rc, errstr, code, needle);
}
#define EXPECT_DECODE_FAIL(ac, kind, buf, len, code, needle) \
    expect_decode_fail(ac, kind, buf, len, code, needle, __LINE__)

static void test_malformed_messages(void) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    REQUIRE(ac != NULL);
    for (int i = 0; i < N_CASES; i++) {
        msg_t m;
        build_case(i, &m);
        const uint8_t *buf;
        size_t len;
        REQUIRE_OK(encode_msg(ac, &m, &buf, &len, errstr, sizeof(errstr)));
        uint8_t *bytes = copy_of(buf, len);
        EXPECT_DECODE_FAIL(ac, m.kind, bytes, len - 1, SHE_ERR_FORMAT, "at byte");
        EXPECT_DECODE_FAIL(ac, m.kind, bytes, 3, SHE_ERR_FORMAT, "shorter than");
        kind_t other = m.kind == K_PASS_RATE ? K_SAMPLE : K_PASS_RATE;
        EXPECT_DECODE_FAIL(ac, other, bytes, len, SHE_ERR_INVALID, "expected a");
        bytes[0] = '{';
        EXPECT_DECODE_FAIL(ac, m.kind, bytes, len, SHE_ERR_FORMAT, "bad marker at byte 0");
        free(bytes);
        clear_msg(&m);
    }

    /* A rollout group whose nested sample is damaged: the reason names the nesting. */
    she_rollout_group_t g;
    build_rollout(&g, 2, 6);
    const uint8_t *buf;
    size_t len;
    REQUIRE_OK(she_msg_encode_rollout_group(ac, &g, &buf, &len, errstr, sizeof(errstr)));
    uint8_t *bytes = copy_of(buf, len);
    /* The body starts with schema_version, group_id, sample_id, two longs, then the sample's
     * length and its marker: find the marker and break its fingerprint. */
    uint8_t *marker = NULL;
    for (size_t k = 12; k + 1 < len && !marker; k++)
        if (bytes[k] == 0xc3 && bytes[k + 1] == 0x01)
            marker = bytes + k;
    REQUIRE(marker != NULL);
    marker[5] ^= 0x55;
    EXPECT_DECODE_FAIL(ac, K_ROLLOUT, bytes, len, SHE_ERR_NOT_FOUND,
                       "she.v1.RolloutGroup.sample: unknown schema fingerprint");
    free(bytes);
    she_msg_clear_rollout_group(&g);

    /* Well-formed Avro, inconsistent content: log-probs not one per token, a span past the
     * tokens, step rewards not five.  Written through the raw value API. */
    avro_value_t *v = she_avro_codec_value(ac, SHE_MSG_ROLLOUT_GROUP), f, e, a, x;
    const uint8_t *sample;
    size_t sample_len;
    she_sample_t s;
    build_sample(&s, 0);
    REQUIRE_OK(she_msg_encode_sample(ac, &s, &sample, &sample_len, errstr, sizeof(errstr)));
    for (int variant = 0; variant < 2; variant++) {
        v = she_avro_codec_value(ac, SHE_MSG_ROLLOUT_GROUP);
        avro_value_get_by_name(v, "group_id", &f, NULL), avro_value_set_string(&f, "g");
        avro_value_get_by_name(v, "sample_id", &f, NULL), avro_value_set_string(&f, "s");
        avro_value_get_by_name(v, "sample", &f, NULL);
        avro_value_set_bytes(&f, (void *)sample, sample_len);
        avro_value_get_by_name(v, "responses", &f, NULL);
        avro_value_append(&f, &e, NULL);
        avro_value_get_by_name(&e, "tokens", &a, NULL);
        avro_value_append(&a, &x, NULL), avro_value_set_int(&x, 5);
        avro_value_append(&a, &x, NULL), avro_value_set_int(&x, 6);
        avro_value_get_by_name(&e, "logprobs", &a, NULL);
        avro_value_append(&a, &x, NULL), avro_value_set_float(&x, -1.0f);
        if (variant == 1) {
            avro_value_append(&a, &x, NULL), avro_value_set_float(&x, -1.0f);
            avro_value_get_by_name(&e, "spans", &a, NULL);
            avro_value_append(&a, &x, NULL);
            avro_value_t y;
            avro_value_get_by_name(&x, "step", &y, NULL), avro_value_set_int(&y, 1);
            avro_value_get_by_name(&x, "start", &y, NULL), avro_value_set_int(&y, 1);
            avro_value_get_by_name(&x, "end", &y, NULL), avro_value_set_int(&y, 3);
        }
        REQUIRE_OK(she_avro_codec_encode(ac, v, &buf, &len, errstr, sizeof(errstr)));
        bytes = copy_of(buf, len);
        EXPECT_DECODE_FAIL(ac, K_ROLLOUT, bytes, len, SHE_ERR_FORMAT,
                           variant == 0 ? "logprobs and tokens differ in length"
                                        : "span outside the response's tokens");
        free(bytes);
    }
    she_rollout_group_t empty = {0};
    empty.group_id = "g", empty.sample_id = "s";
    empty.sample = s;
    REQUIRE_OK(she_msg_encode_rollout_group(ac, &empty, &buf, &len, errstr, sizeof(errstr)));
    v = she_avro_codec_value(ac, SHE_MSG_REWARDED_GROUP);
    avro_value_get_by_name(v, "rollout", &f, NULL), avro_value_set_bytes(&f, (void *)buf, len);
    avro_value_get_by_name(v, "rewards", &f, NULL);
    avro_value_append(&f, &e, NULL);
    avro_value_get_by_name(&e, "step_rewards", &a, NULL);
    avro_value_append(&a, &x, NULL), avro_value_set_float(&x, 1.0f);
    REQUIRE_OK(she_avro_codec_encode(ac, v, &buf, &len, errstr, sizeof(errstr)));
    bytes = copy_of(buf, len);
    EXPECT_DECODE_FAIL(ac, K_REWARDED, bytes, len, SHE_ERR_FORMAT, "step_rewards not one per");
    free(bytes);

    /* an evaluation record with a macro F1 above 1 */
    v = she_avro_codec_value(ac, SHE_MSG_EVALUATION);
    avro_value_get_by_name(v, "checkpoint_uri", &f, NULL), avro_value_set_string(&f, "/c");
    avro_value_get_by_name(v, "sha256", &f, NULL), avro_value_set_string(&f, "00");
    avro_value_get_by_name(v, "dataset", &f, NULL), avro_value_set_string(&f, "d");
    avro_value_get_by_name(v, "macro_f1", &f, NULL), avro_value_set_double(&f, 1.25);
    REQUIRE_OK(she_avro_codec_encode(ac, v, &buf, &len, errstr, sizeof(errstr)));
    bytes = copy_of(buf, len);
    EXPECT_DECODE_FAIL(ac, K_EVALUATION, bytes, len, SHE_ERR_FORMAT,
                       "she.v1.EvaluationRecord.macro_f1: outside its range");
    free(bytes);
    she_sample_clear(&s);
    she_avro_codec_free(ac);
}

static void test_encode_refuses_invalid(void) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    REQUIRE(ac != NULL);
    const uint8_t *buf;
    size_t len;
    she_sample_t s;
    build_sample(&s, 1);
    char *id = s.sample_id;
    s.sample_id = NULL;
    CHECK(she_msg_encode_sample(ac, &s, &buf, &len, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(strstr(errstr, "she.v1.Sample.sample_id: required but NULL") != NULL);
    s.sample_id = id;
    s.grade = (she_grade_t)9;
    CHECK(she_msg_encode_sample(ac, &s, &buf, &len, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(strstr(errstr, "grade: enum value out of range") != NULL);
    she_sample_clear(&s);

    she_rewarded_group_t g;
    build_rewarded(&g, 3, 8);
    g.rollout.responses[2].spans[4].end = 99;
    CHECK(she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(strstr(errstr, "span outside") != NULL);
    g.rollout.responses[2].spans[4].end = 8;
    g.n_rewards = 2;
    CHECK(she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(strstr(errstr, "not one per response") != NULL);
    g.n_rewards = 3;
    CHECK_OK(she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr, sizeof(errstr)));
    she_msg_clear_rewarded_group(&g);

    /* evaluation numbers outside [0, 1] (NaN included) or a negative row count */
    she_evaluation_record_t ev;
    build_evaluation(&ev);
    ev.format_failure_rate = NAN;
    CHECK(she_msg_encode_evaluation(ac, &ev, &buf, &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(strstr(errstr, "format_failure_rate: outside its range") != NULL);
    ev.format_failure_rate = 0;
    ev.per_class_f1[2].value = 1.5;
    CHECK(she_msg_encode_evaluation(ac, &ev, &buf, &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(strstr(errstr, "per_class_f1") != NULL);
    ev.per_class_f1[2].value = 1;
    ev.rows = -1;
    CHECK(she_msg_encode_evaluation(ac, &ev, &buf, &len, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    ev.rows = 1;
    CHECK_OK(she_msg_encode_evaluation(ac, &ev, &buf, &len, errstr, sizeof(errstr)));
    she_msg_clear_evaluation(&ev);
    she_avro_codec_free(ac);

    CHECK(she_msg_codec_open("/nonexistent", &ac, errstr, sizeof(errstr)) == SHE_ERR_NOT_FOUND);
    CHECK(ac == NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The learner's share of Kafka + Avro must stay under 5% of a step: report what one rollout
 * group of 16 responses x 100 tokens costs to encode and to decode. */
static void test_rollout_speed(void) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    REQUIRE(ac != NULL);
    she_rewarded_group_t g, out = {0};
    build_rewarded(&g, 16, 100);
    for (int r = 0; r < 16; r++) {
        free(g.rollout.responses[r].tokens), free(g.rollout.responses[r].logprobs);
        g.rollout.responses[r].tokens = malloc(100 * sizeof(int32_t));
        g.rollout.responses[r].logprobs = malloc(100 * sizeof(float));
        for (int t = 0; t < 100; t++) {
            g.rollout.responses[r].tokens[t] = (r * 7919 + t * 104729) % 151936;
            g.rollout.responses[r].logprobs[t] = -0.01f * (float)t;
        }
        g.rollout.responses[r].n_tokens = 100;
        g.rollout.responses[r].n_spans = SHE_MSG_STEPS;
        for (int k = 0; k < SHE_MSG_STEPS; k++)
            g.rollout.responses[r].spans[k] = (she_step_span_t){k + 1, 20 * k, 20 * k + 20};
    }
    /* The rollout group (what rollout consumers write and the reward consumer reads), then
     * the rewarded group around it (what the learner reads). */
    she_rollout_group_t rout = {0};
    double total_us[2];
    for (int which = 0; which < 2; which++) {
        const uint8_t *buf;
        size_t len = 0;
        const int iters = 300;
        CHECK_OK(she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr, sizeof(errstr)));
        double t0 = now_s(); /* after one warm-up encode */
        for (int i = 0; i < iters; i++)
            CHECK_OK(which == 0 ? she_msg_encode_rollout_group(ac, &g.rollout, &buf, &len, errstr,
                                                               sizeof(errstr))
                                : she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr,
                                                                sizeof(errstr)));
        double t1 = now_s();
        uint8_t *bytes = copy_of(buf, len);
        for (int i = 0; i < iters; i++)
            CHECK_OK(which == 0 ? she_msg_decode_rollout_group(ac, bytes, len, &rout, errstr,
                                                               sizeof(errstr))
                                : she_msg_decode_rewarded_group(ac, bytes, len, &out, errstr,
                                                                sizeof(errstr)));
        double t2 = now_s();
        total_us[which] = 1e6 * (t2 - t0) / iters;
        printf("%s group, 16 responses x 100 tokens: %zu bytes; encode %.1f us, decode %.1f us, "
               "encode+decode %.1f us per message\n",
               which == 0 ? "rollout" : "rewarded", len, 1e6 * (t1 - t0) / iters,
               1e6 * (t2 - t1) / iters, total_us[which]);
        free(bytes);
    }
    CHECK(eq_rollout(&g.rollout, &rout));
    CHECK(eq_rewarded(&g, &out));
    /* A bound far above what the 2-core CI machine measures (~0.4 ms), so only a
     * pathological slowdown (re-parsing schemas per message, say) fails it. */
    CHECK(total_us[0] < 20000 && total_us[1] < 20000);
    she_msg_clear_rollout_group(&rout);
    she_msg_clear_rewarded_group(&out);
    she_msg_clear_rewarded_group(&g);
    she_avro_codec_free(ac);
}

/* ---- interop and corpus modes ---- */

static const char *const grade_sym[] = {"UNKNOWN", "L1", "L2", "L3", "L4"};
static const char *const cat_sym[] = {"UNKNOWN", "EXACT", "PARTIAL", "NONE"};
static const char *const attr_sym[] = {"UNKNOWN", "MATCH", "PARTIAL", "CONFLICT", "NONE"};
static const char *const action_sym[] = {"UNKNOWN", "START", "PROMOTE", "ROLLBACK", "ABORT"};

static json_t *jstr(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *jkvs(const she_kv_t *kv, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s,s:s}", "key", kv[i].key, "value", kv[i].value));
    return a;
}

static json_t *jmetrics(const she_msg_metric_t *m, int n) {
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(o, m[i].name, json_real(m[i].value));
    return o;
}

static json_t *jhex(const uint8_t *p, size_t n) {
    if (!p)
        return json_null();
    char *h = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        sprintf(h + 2 * i, "%02x", p[i]);
    h[2 * n] = '\0';
    json_t *s = json_string(h);
    free(h);
    return s;
}

static int current_version(she_avro_codec_t *ac, const char *record) {
    int v = 0;
    she_avro_codec_lookup(ac, she_avro_codec_fingerprint(ac, record), &v);
    return v;
}

/* The message as a JSON object shaped like its Avro record (nested messages as objects,
 * bytes as hex, enums as symbols): what fastavro must decode from she's bytes. */
static json_t *json_sample(she_avro_codec_t *ac, const she_sample_t *s) {
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:s}", "schema_version",
                          current_version(ac, SHE_MSG_SAMPLE), "sample_id", s->sample_id, "query",
                          s->query, "item_id", s->item_id, "item_title", s->item_title,
                          "item_desc", jstr(s->item_desc), "item_attrs",
                          jkvs(s->item_attrs, s->n_item_attrs), "query_type", jstr(s->query_type),
                          "domain", jstr(s->domain), "grade", grade_sym[s->grade]);
    json_object_set_new(
        o, "steps",
        s->has_steps
            ? json_pack("{s:o,s:o,s:o,s:o,s:s,s:s}", "query_category", jstr(s->query_category),
                        "query_attrs", jkvs(s->query_attrs, s->n_query_attrs), "item_category",
                        jstr(s->item_category), "item_gt_attrs",
                        jkvs(s->item_gt_attrs, s->n_item_gt_attrs), "cat_match",
                        cat_sym[s->cat_match], "attr_match", attr_sym[s->attr_match])
            : json_null());
    return o;
}

static json_t *json_rollout(she_avro_codec_t *ac, const she_rollout_group_t *g) {
    json_t *prompt = json_array(), *responses = json_array();
    for (int i = 0; i < g->n_prompt_tokens; i++)
        json_array_append_new(prompt, json_integer(g->prompt_tokens[i]));
    for (int r = 0; r < g->n_responses; r++) {
        const she_response_t *x = &g->responses[r];
        json_t *tok = json_array(), *lp = json_array(), *spans = json_array();
        for (int t = 0; t < x->n_tokens; t++) {
            json_array_append_new(tok, json_integer(x->tokens[t]));
            json_array_append_new(lp, json_real(x->logprobs[t]));
        }
        for (int k = 0; k < x->n_spans; k++)
            json_array_append_new(spans, json_pack("{s:i,s:i,s:i}", "step", x->spans[k].step,
                                                   "start", x->spans[k].start, "end",
                                                   x->spans[k].end));
        json_array_append_new(responses, json_pack("{s:o,s:o,s:o,s:b}", "tokens", tok, "logprobs",
                                                   lp, "spans", spans, "truncated",
                                                   x->truncated));
    }
    return json_pack("{s:i,s:s,s:s,s:I,s:I,s:o,s:o,s:o}", "schema_version",
                     current_version(ac, SHE_MSG_ROLLOUT_GROUP), "group_id", g->group_id,
                     "sample_id", g->sample_id, "policy_version", (json_int_t)g->policy_version,
                     "created_ms", (json_int_t)g->created_ms, "sample", json_sample(ac, &g->sample),
                     "prompt_tokens", prompt, "responses", responses);
}

static json_t *json_msg(she_avro_codec_t *ac, const msg_t *m) {
    const she_rewarded_group_t *rw = &m->u.rewarded;
    const she_checkpoint_announcement_t *c = &m->u.checkpoint;
    const she_control_state_t *cs = &m->u.control;
    const she_pass_rate_t *p = &m->u.pass_rate;
    const she_dead_letter_t *d = &m->u.dead_letter;
    const she_deployment_event_t *e = &m->u.deployment;
    const she_evaluation_record_t *ev = &m->u.evaluation;
    int v = current_version(ac, kind_record[m->kind]);
    switch (m->kind) {
    case K_SAMPLE: return json_sample(ac, &m->u.sample);
    case K_ROLLOUT: return json_rollout(ac, &m->u.rollout);
    case K_REWARDED: {
        json_t *rewards = json_array();
        for (int r = 0; r < rw->n_rewards; r++) {
            json_t *sr = json_array();
            for (int k = 0; k < SHE_MSG_STEPS; k++)
                json_array_append_new(sr, json_real(rw->rewards[r].step_rewards[k]));
            json_array_append_new(rewards, json_pack("{s:o,s:f,s:b}", "step_rewards", sr, "total",
                                                     (double)rw->rewards[r].total, "pass",
                                                     rw->rewards[r].pass));
        }
        return json_pack("{s:i,s:o,s:o,s:f,s:I}", "schema_version", v, "rollout",
                         json_rollout(ac, &rw->rollout), "rewards", rewards, "pass_rate",
                         (double)rw->pass_rate, "created_ms", (json_int_t)rw->created_ms);
    }
    case K_CHECKPOINT:
        return json_pack("{s:i,s:I,s:s,s:s,s:o,s:I,s:o}", "schema_version", v, "version",
                         (json_int_t)c->version, "uri", c->uri, "sha256", c->sha256,
                         "parent_version",
                         c->parent_version >= 0 ? json_integer(c->parent_version) : json_null(),
                         "created_ms", (json_int_t)c->created_ms, "metrics",
                         jmetrics(c->metrics, c->n_metrics));
    case K_CONTROL:
        return json_pack("{s:i,s:I,s:f,s:f,s:i,s:o,s:s,s:I}", "schema_version", v, "seq",
                         (json_int_t)cs->seq, "difficulty_lo", (double)cs->difficulty_lo,
                         "difficulty_hi", (double)cs->difficulty_hi, "curriculum_stage",
                         cs->curriculum_stage, "quotas", jmetrics(cs->quotas, cs->n_quotas),
                         "reason", cs->reason, "updated_ms", (json_int_t)cs->updated_ms);
    case K_PASS_RATE:
        return json_pack("{s:i,s:s,s:f,s:i,s:I,s:I}", "schema_version", v, "sample_id",
                         p->sample_id, "pass_rate", (double)p->pass_rate, "count", p->count,
                         "policy_version", (json_int_t)p->policy_version, "updated_ms",
                         (json_int_t)p->updated_ms);
    case K_DEAD_LETTER:
        return json_pack("{s:i,s:s,s:i,s:I,s:o,s:o,s:s,s:s,s:I}", "schema_version", v,
                         "source_topic", d->source_topic, "partition", d->partition, "offset",
                         (json_int_t)d->offset, "key", jhex(d->key, d->key_len), "raw",
                         jhex(d->raw ? d->raw : (const uint8_t *)"", d->raw_len), "error",
                         d->error, "component", d->component, "created_ms",
                         (json_int_t)d->created_ms);
    case K_DEPLOYMENT:
        return json_pack("{s:i,s:s,s:I,s:o,s:f,s:s,s:o,s:I}", "schema_version", v, "action",
                         action_sym[e->action], "stable_version", (json_int_t)e->stable_version,
                         "canary_version",
                         e->canary_version >= 0 ? json_integer(e->canary_version) : json_null(),
                         "canary_share", (double)e->canary_share, "reason", e->reason, "metrics",
                         jmetrics(e->metrics, e->n_metrics), "created_ms",
                         (json_int_t)e->created_ms);
    case K_EVALUATION:
        return json_pack("{s:i,s:I,s:s,s:s,s:s,s:I,s:f,s:f,s:f,s:f,s:o,s:I}", "schema_version", v,
                         "policy_version", (json_int_t)ev->policy_version, "checkpoint_uri",
                         ev->checkpoint_uri, "sha256", ev->sha256, "dataset", ev->dataset, "rows",
                         (json_int_t)ev->rows, "macro_f1", ev->macro_f1, "good_f1", ev->good_f1,
                         "accuracy", ev->accuracy, "format_failure_rate", ev->format_failure_rate,
                         "per_class_f1", jmetrics(ev->per_class_f1, ev->n_per_class_f1),
                         "created_ms", (json_int_t)ev->created_ms);
    }
    return json_null();
}

static int write_file(const char *dir, const char *name, const uint8_t *buf, size_t len) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f)
        ok &= fclose(f) == 0;
    if (!ok)
        fprintf(stderr, "cannot write %s\n", path);
    return ok;
}

static uint8_t *read_file(const char *dir, const char *name, size_t *len) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static int interop_write(const char *dir) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    if (!ac)
        return 1;
    json_t *expected = json_object(), *fps = json_object();
    int ok = 1;
    for (int i = 0; i < N_CASES && ok; i++) {
        msg_t m;
        build_case(i, &m);
        const uint8_t *buf;
        size_t len;
        char name[256];
        if (encode_msg(ac, &m, &buf, &len, errstr, sizeof(errstr)) != SHE_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].name, errstr);
            ok = 0;
        }
        snprintf(name, sizeof(name), "%s.she.avro", cases[i].name);
        ok = ok && write_file(dir, name, buf, len);
        json_object_set_new(expected, cases[i].name,
                            json_pack("{s:s,s:o}", "record", kind_record[m.kind], "value",
                                      json_msg(ac, &m)));
        clear_msg(&m);
    }
    /* Canonical forms and fingerprints of every schema file, as she computes them. */
    DIR *d = opendir(schema_dir);
    struct dirent *de;
    while (ok && d && (de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".avsc") != 0)
            continue;
        char path[1200], *pcf = NULL, hex[17];
        snprintf(path, sizeof(path), "%s/%s", schema_dir, de->d_name);
        char *text = read_text(path);
        if (!text || she_avro_canonical_form(text, strlen(text), &pcf, errstr, sizeof(errstr))) {
            fprintf(stderr, "%s: %s\n", path, text ? errstr : "cannot read");
            ok = 0;
        } else {
            uint64_t fp = she_avro_fingerprint64(pcf, strlen(pcf));
            for (int b = 0; b < 8; b++) /* fastavro's form: the 8 bytes as written */
                sprintf(hex + 2 * b, "%02x", (unsigned)(fp >> (8 * b)) & 0xff);
            json_object_set_new(fps, de->d_name, json_pack("{s:s,s:s}", "pcf", pcf,
                                                           "fingerprint", hex));
        }
        free(pcf);
        free(text);
    }
    if (d)
        closedir(d);
    char path[1200];
    snprintf(path, sizeof(path), "%s/expected.json", dir);
    ok = ok && json_dump_file(expected, path, JSON_INDENT(1) | JSON_SORT_KEYS) == 0;
    snprintf(path, sizeof(path), "%s/fingerprints.json", dir);
    ok = ok && json_dump_file(fps, path, JSON_INDENT(1) | JSON_SORT_KEYS) == 0;
    json_decref(expected);
    json_decref(fps);
    she_avro_codec_free(ac);
    printf("interop-write: %d cases to %s: %s\n", N_CASES, dir, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

/* Decodes what fastavro wrote for each case (and a sample fastavro wrote with the older
 * schema) and compares it with the reference message. */
static int interop_read(const char *dir) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    if (!ac)
        return 1;
    int failed = 0;
    for (int i = 0; i <= N_CASES; i++) {
        int v1 = i == N_CASES; /* sample_v1: sample_full written with sample.v1.avsc */
        msg_t ref, out;
        build_case(v1 ? 0 : i, &ref);
        if (v1) {
            free(ref.u.sample.domain);
            ref.u.sample.domain = NULL;
        }
        memset(&out, 0, sizeof(out));
        out.kind = ref.kind;
        char name[256];
        snprintf(name, sizeof(name), "%s.py.avro", v1 ? "sample_v1" : cases[i].name);
        size_t len = 0;
        uint8_t *buf = read_file(dir, name, &len);
        if (!buf) {
            fprintf(stderr, "%s: missing\n", name);
            failed++;
        } else if (decode_msg(ac, &out, buf, len, errstr, sizeof(errstr)) != SHE_OK) {
            fprintf(stderr, "%s: %s\n", name, errstr);
            failed++;
        } else if (!eq_msg(&ref, &out)) {
            fprintf(stderr, "%s: decoded message differs from the reference\n", name);
            failed++;
        } else {
            printf("ok %s\n", name);
        }
        free(buf);
        clear_msg(&out);
        clear_msg(&ref);
    }
    she_avro_codec_free(ac);
    printf("interop-read: %d failed\n", failed);
    return failed ? 1 : 0;
}

/* Seeds for fuzz_avro: each reference message, an older-schema sample, and a few broken
 * ones (the fuzzer mutates from there). */
static int write_corpus(const char *dir) {
    char errstr[512];
    she_avro_codec_t *ac = open_codec();
    if (!ac)
        return 1;
    int ok = 1;
    for (int i = 0; i < N_CASES && ok; i++) {
        msg_t m;
        build_case(i, &m);
        if (m.kind == K_ROLLOUT || m.kind == K_REWARDED) { /* small seeds mutate faster */
            clear_msg(&m);
            if (m.kind == K_ROLLOUT)
                build_rollout(&m.u.rollout, 2, 6);
            else
                build_rewarded(&m.u.rewarded, 2, 6);
        }
        const uint8_t *buf;
        size_t len;
        char name[256];
        ok = encode_msg(ac, &m, &buf, &len, errstr, sizeof(errstr)) == SHE_OK;
        snprintf(name, sizeof(name), "%s.avro", cases[i].name);
        ok = ok && write_file(dir, name, buf, len);
        if (ok && i == 0) {
            snprintf(name, sizeof(name), "%s_truncated.avro", cases[i].name);
            ok = write_file(dir, name, buf, len / 2);
            uint8_t *bad = copy_of(buf, len);
            bad[1] = 0x02;
            ok = ok && write_file(dir, "bad_marker.avro", bad, len);
            free(bad);
        }
        clear_msg(&m);
    }
    she_sample_t s;
    build_sample(&s, 1);
    uint8_t *v1 = NULL;
    size_t len;
    ok = ok && encode_sample_v1(ac, &s, &v1, &len, errstr, sizeof(errstr)) == SHE_OK &&
         write_file(dir, "sample_v1.avro", v1, len);
    free(v1);
    she_sample_clear(&s);
    she_avro_codec_free(ac);
    if (!ok)
        fprintf(stderr, "write-corpus: %s\n", errstr);
    return ok ? 0 : 1;
}

/* The schemas compiled into the binary are the files in schemas/, byte for byte in meaning:
 * the same records with the same fingerprints. */
static void test_embedded_schemas_match_the_directory(void) {
    char errstr[512];
    she_avro_codec_t *from_dir = NULL, *embedded = NULL;
    const char *dir = getenv("SHE_SOURCE_DIR");
    char schema_dir[1024];
    snprintf(schema_dir, sizeof(schema_dir), "%s/schemas", dir ? dir : ".");
    REQUIRE_OK(she_msg_codec_open(schema_dir, &from_dir, errstr, sizeof(errstr)));
    REQUIRE_OK(she_msg_codec_open(NULL, &embedded, errstr, sizeof(errstr)));
    const char *records[] = {SHE_MSG_SAMPLE, SHE_MSG_ROLLOUT_GROUP, SHE_MSG_REWARDED_GROUP,
                             SHE_MSG_CHECKPOINT, SHE_MSG_CONTROL_STATE, SHE_MSG_PASS_RATE,
                             SHE_MSG_DEAD_LETTER, SHE_MSG_DEPLOYMENT_EVENT, SHE_MSG_EVALUATION};
    for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
        uint64_t a = she_avro_codec_fingerprint(from_dir, records[i]);
        uint64_t b = she_avro_codec_fingerprint(embedded, records[i]);
        CHECK_MSG(a != 0 && a == b, "%s: %016llx vs %016llx", records[i], (unsigned long long)a,
                  (unsigned long long)b);
    }
    she_avro_codec_free(from_dir);
    she_avro_codec_free(embedded);
}

int main(int argc, char **argv) {
    const char *src = getenv("SHE_SOURCE_DIR");
    snprintf(schema_dir, sizeof(schema_dir), "%s/schemas", src ? src : ".");
    if (argc == 3 && strcmp(argv[1], "--interop-write") == 0)
        return interop_write(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--interop-read") == 0)
        return interop_read(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    RUN(test_roundtrip_every_message);
    RUN(test_embedded_schemas_match_the_directory);
    RUN(test_sample_schema_mirrors_struct);
    RUN(test_sample_evolution);
    RUN(test_malformed_messages);
    RUN(test_encode_refuses_invalid);
    RUN(test_rollout_speed);
    TEST_DONE();
}
