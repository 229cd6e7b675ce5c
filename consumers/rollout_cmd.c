/* rollout_cmd.c -- `she rollout`: samples -> data selection -> G responses from the current
 * policy -> she.rollouts.  A consumer group: start more processes to scale out.
 *
 * Per sample (she.samples, group rollout.group.id): decode (else dead letter); check it makes a
 * prompt (else dead letter: no query / title, or a query longer than the prompt budget); offer
 * it to the selector (trainer/selection.h) -- its dynamic-difficulty pass rates come from
 * she.passrate and its band and curriculum stage from she.control, both read whole by every
 * process; admitted samples are rolled out rollout.batch at a time (trainer/rollout.h) and each
 * group is published keyed by sample id.  Then the producer is flushed and the offsets
 * committed (stream.h: at-least-once; the learner skips a sample it has trained on).
 *
 * The policy follows she.checkpoints (core/policy_watch.h): a verified new version is swapped
 * in between two batches.  Staleness bound: while the live policy is more than
 * rollout.staleness versions behind the newest announcement (a refused or still-loading
 * checkpoint), consumption pauses, so no work the learner would reject is made.  With
 * rollout.max.backlog it also pauses while more groups than that wait downstream (not yet
 * consumed by the reward consumers, or rewarded and not yet trained on): made faster than the
 * slowest stage takes them, they would only wait until they are stale, and take the CPU that
 * stage needs (core/backlog.h).
 *
 * Every selection decision can be appended to rollout.decisions.file as a JSON line
 * (sample_id, reason, partition, offset, policy_version): an audit trail that survives a kill,
 * which the end-to-end accounting test reads. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backlog.h"
#include "cmd.h"
#include "commands.h"
#include "consumers/selection_conf.h"
#include "dataset.h"
#include "engine.h"
#include "messages.h"
#include "policy_watch.h"
#include "signals.h"
#include "stream.h"
#include "trainer/rollout.h"
#include "trainer/sft.h"

static const she_conf_def_t rollout_defs[] = {
    {"rollout.policy", SHE_CONF_STR, NULL,
     "initial policy checkpoint (else the newest announced one)", 0, 0, NULL, "policy"},
    {"rollout.policy.version", SHE_CONF_INT, "0", "version of rollout.policy", 0, 1e15, NULL,
     NULL},
    {"rollout.group", SHE_CONF_INT, "16", "G: responses per prompt", 1, 1024, NULL, "group"},
    {"rollout.batch", SHE_CONF_INT, "4", "prompts generated together", 1, 4096, NULL, "batch"},
    {"rollout.batch.wait.ms", SHE_CONF_INT, "200", "longest wait to fill a batch", 0, 600000, NULL,
     NULL},
    {"rollout.temperature", SHE_CONF_DOUBLE, "0.99", "sampling temperature", 0.01, 10, NULL,
     "temperature"},
    {"rollout.top.k", SHE_CONF_INT, "100", "top-k (0 = off)", 0, 1e9, NULL, NULL},
    {"rollout.max.prompt", SHE_CONF_INT, "128", "prompt tokens (the item text is cut to fit)", 2,
     4096, NULL, NULL},
    {"rollout.max.new", SHE_CONF_INT, "96", "response tokens", 1, 4096, NULL, "max-new"},
    {"rollout.device", SHE_CONF_STR, "cpu",
     "where responses are generated: cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs", 0, 0,
     NULL, "device"},
    {"rollout.staleness", SHE_CONF_INT, "2",
     "K: pause while the policy is more than K versions behind the newest announced", 0, 1e9,
     NULL, "staleness"},
    {"rollout.max.backlog", SHE_CONF_INT, "0",
     "pause while more groups than this are made but not yet consumed downstream (she.rollouts "
     "by rollout.backlog.groups' first group, she.rewarded by its second); 0 = no bound.  The "
     "learner mirrors its offsets at checkpoints, so keep it above learn.batch x "
     "learn.checkpoint.every (2x that is a good value)", 0, 1e12, NULL, "max-backlog"},
    {"rollout.backlog.groups", SHE_CONF_STR, "she-reward,she-learn",
     "consumer groups of she.rollouts and she.rewarded whose backlog rollout.max.backlog bounds",
     0, 0, NULL, NULL},
    {"rollout.backlog.stall.s", SHE_CONF_DOUBLE, "60",
     "over the bound, roll out anyway once the learner has committed nothing for this long (it "
     "may be waiting for groups it will train on); keep it above the time between two "
     "checkpoints", 1, 1e9, NULL, NULL},
    {"rollout.seed", SHE_CONF_INT, "1", "seed of the sampling draws", 0, 1e15, NULL, NULL},
    {"rollout.group.id", SHE_CONF_STR, "she-rollout", "consumer group", 0, 0, NULL, NULL},
    {"rollout.decisions.file", SHE_CONF_STR, NULL, "append every selection decision here (JSONL)",
     0, 0, NULL, "decisions-file"},
    {"rollout.wait.policy.ms", SHE_CONF_INT, "600000",
     "how long to wait for a first policy announcement", 0, 1e12, NULL, NULL},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9465", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* One admitted sample waiting in the batch, with where it came from. */
typedef struct pending {
    she_sample_t s;
    rd_kafka_message_t *rkm;
} pending_t;

typedef struct roller {
    she_conf_t *conf;
    she_log_t *lg;
    she_stream_t *st;   /* samples in, rollouts out, dead letters */
    she_stream_t *bc;   /* pass rates and control states, read whole */
    she_policy_watch_t *pw;
    she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_rollout_t *ro;
    she_selector_t *sel;
    int batch, max_prompt, decisions_fd;
    int64_t staleness;
    uint64_t seed;
    int32_t *prompt_ids;
    pending_t *pend;
    int n_pend;
    she_rollout_group_t *groups;
    she_metric_t *m_rejected, *m_tokens;
    she_metric_series_t *s_admitted, *s_rollouts, *s_tok_gen, *s_tok_prompt, *s_lo, *s_hi,
        *s_stage, *s_backlog;
    she_backlog_t *backlog[2]; /* she.rollouts and she.rewarded, of the groups downstream */
    int64_t max_backlog, last_backlog, backlog_read_ms;
    int64_t made_since_read; /* groups published since the backlog was last read */
    int64_t backlog_learned;  /* the learner group's committed offsets, summed, at the last read */
    int64_t backlog_moved_ms; /* when the learner last committed, or the backlog went over */
    int64_t backlog_stall_ms;              /* rollout.backlog.stall.s */
    int backlog_over;    /* the last read was over rollout.max.backlog */
    int backlog_stalled; /* over it, but rolling out: see backlog_full */
    int paused, stale, full;
} roller_t;

static void set_band_metrics(roller_t *r) {
    she_selector_status_t ss;
    she_selector_status(r->sel, &ss);
    she_metrics_set(r->s_lo, ss.lo);
    she_metrics_set(r->s_hi, ss.hi);
    she_metrics_set(r->s_stage, ss.stage);
}

/* Pass rates and control states that arrived since the last call. */
static void read_broadcast(roller_t *r) {
    char errstr[SHE_ERRSTR_SIZE];
    rd_kafka_message_t *rkm;
    const char *passrate = she_stream_topic_name("passrate");
    while ((rkm = she_stream_poll(r->bc, 0)) != NULL) {
        if (strcmp(rd_kafka_topic_name(rkm->rkt), passrate) == 0) {
            she_pass_rate_t pr = {0};
            if (she_msg_decode_pass_rate(she_stream_codec(r->bc), rkm->payload, rkm->len, &pr,
                                         errstr, sizeof(errstr)) != SHE_OK)
                she_stream_dead_letter(r->bc, rkm, errstr);
            else if (pr.count > 0 && pr.pass_rate >= 0 && pr.pass_rate <= 1)
                she_selector_observe(r->sel, pr.sample_id,
                                     (int)lrintf(pr.pass_rate * (float)pr.count), pr.count);
            she_msg_clear_pass_rate(&pr);
        } else {
            she_control_state_t cs = {0};
            if (she_msg_decode_control_state(she_stream_codec(r->bc), rkm->payload, rkm->len,
                                             &cs, errstr, sizeof(errstr)) != SHE_OK) {
                she_stream_dead_letter(r->bc, rkm, errstr);
            } else if (she_selection_apply_control(r->sel, &cs, errstr, sizeof(errstr)) !=
                       SHE_OK) {
                /* well-formed Avro, impossible controls: the old ones stay in force */
                she_log_error(r->lg, "control state ignored: %s", errstr);
                she_stream_dead_letter(r->bc, rkm, errstr);
            } else {
                she_log_info(r->lg,
                             "control state %" PRId64 ": band [%.2f, %.2f], stage %d, %d "
                             "query-type caps (%s)",
                             cs.seq, cs.difficulty_lo, cs.difficulty_hi,
                             (int)cs.curriculum_stage, cs.n_quotas, cs.reason);
                set_band_metrics(r);
            }
            she_msg_clear_control_state(&cs);
        }
        rd_kafka_message_destroy(rkm);
    }
}

static void record_decision(roller_t *r, const rd_kafka_message_t *rkm, const char *sample_id,
                            const char *reason) {
    if (r->decisions_fd < 0)
        return;
    json_t *j = json_pack("{s:s, s:s, s:i, s:I, s:I}", "sample_id", sample_id, "reason", reason,
                          "partition", (int)rkm->partition, "offset", (json_int_t)rkm->offset,
                          "policy_version", (json_int_t)she_policy_watch_version(r->pw));
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* one write per line: O_APPEND keeps lines whole across processes */
    if (write(r->decisions_fd, line, n + 1) != (ssize_t)(n + 1))
        she_log_warn(r->lg, "decisions file: %s", strerror(errno));
    free(line);
}

/* Decodes and admits (or not) one sample message; admitted ones join the batch and keep the
 * message (its offset is done only once its group is published). */
static void offer(roller_t *r, rd_kafka_message_t *rkm) {
    char errstr[SHE_ERRSTR_SIZE];
    pending_t *p = &r->pend[r->n_pend];
    memset(&p->s, 0, sizeof(p->s));
    if (she_msg_decode_sample(she_stream_codec(r->st), rkm->payload, rkm->len, &p->s, errstr,
                              sizeof(errstr)) != SHE_OK) {
        she_stream_dead_letter(r->st, rkm, errstr);
        goto done;
    }
    int n_ids = 0;
    if (she_sft_encode_prompt(r->tok, &r->sp, &p->s, r->max_prompt, r->prompt_ids, &n_ids, NULL,
                              errstr, sizeof(errstr)) != SHE_OK) {
        char why[SHE_ERRSTR_SIZE + 32];
        snprintf(why, sizeof(why), "no prompt: %s", errstr);
        she_stream_dead_letter(r->st, rkm, why);
        goto done;
    }
    she_sel_item_t item = {.id = p->s.sample_id, .domain = p->s.domain,
                           .query_type = p->s.query_type, .grade = (int)p->s.grade,
                           .offline_pass = NAN, .rm_score = NAN};
    she_sel_reason_t why = she_selector_decide(r->sel, &item);
    record_decision(r, rkm, p->s.sample_id, she_sel_reason_name(why));
    if (!she_sel_admitted(why)) {
        const char *lv[] = {she_sel_reason_name(why)};
        she_metrics_inc(she_metrics_series(r->m_rejected, lv));
        goto done;
    }
    she_metrics_inc(r->s_admitted);
    p->rkm = rkm;
    r->n_pend++;
    return;
done:
    she_sample_clear(&p->s);
    she_stream_done(r->st, rkm);
    rd_kafka_message_destroy(rkm);
}

/* Rolls the batch out and publishes it.  On a generation failure each sample is dead-lettered
 * with the reason (the engine refuses only what is wrong with the input). */
static void roll_out(roller_t *r) {
    if (r->n_pend == 0)
        return;
    char errstr[SHE_ERRSTR_SIZE];
    const she_sample_t *samples[r->n_pend];
    for (int i = 0; i < r->n_pend; i++)
        samples[i] = &r->pend[i].s;
    const rd_kafka_message_t *first = r->pend[0].rkm;
    uint64_t seed = she_hash_mix(r->seed ^ she_hash_mix(((uint64_t)first->partition << 48) ^
                                                        (uint64_t)first->offset));
    int64_t version = she_policy_watch_version(r->pw);
    she_err_t err = she_rollout_generate(r->ro, samples, r->n_pend, version, seed, r->groups,
                                         errstr, sizeof(errstr));
    int64_t now = she_stream_now_ms();
    for (int i = 0; i < r->n_pend; i++) {
        pending_t *p = &r->pend[i];
        if (err != SHE_OK) {
            she_stream_dead_letter(r->st, p->rkm, errstr);
        } else {
            she_rollout_group_t *g = &r->groups[i];
            g->created_ms = now;
            const uint8_t *buf;
            size_t len;
            char perr[SHE_ERRSTR_SIZE];
            she_err_t e = she_msg_encode_rollout_group(she_stream_codec(r->st), g, &buf, &len,
                                                       perr, sizeof(perr));
            if (e == SHE_OK)
                e = she_stream_produce(r->st, "rollouts", g->sample_id, strlen(g->sample_id),
                                       buf, len, perr, sizeof(perr));
            if (e != SHE_OK) {
                she_stream_dead_letter(r->st, p->rkm, perr);
            } else {
                she_metrics_inc(r->s_rollouts);
                r->made_since_read++;
                she_metrics_add(r->s_tok_prompt, g->n_prompt_tokens);
                for (int k = 0; k < g->n_responses; k++)
                    she_metrics_add(r->s_tok_gen, g->responses[k].n_tokens);
            }
            she_msg_clear_rollout_group(g);
        }
        she_stream_done(r->st, p->rkm);
        rd_kafka_message_destroy(p->rkm);
        she_sample_clear(&p->s);
    }
    r->n_pend = 0;
}

/* The backlog downstream as far as this consumer knows: the last read and what it published
 * since. */
static int64_t backlog_now(const roller_t *r) { return r->last_backlog + r->made_since_read; }

/* Whether the groups downstream have more than rollout.max.backlog groups to go.  The topics
 * are read at most once a second; in between, the groups published since the last read are
 * added to it (a small policy makes tens a second).  A failed read does not pause: the bound is
 * an economy, not a guarantee.
 *
 * Nor may it stop the loop.  Only the learner frees the backlog (the reward consumers move
 * groups from one topic to the other), and it commits only at checkpoints, after learn.batch x
 * learn.checkpoint.every groups it trained on: a window filled by groups it does not train on
 * (stale or duplicate ones), or a group name in rollout.backlog.groups that never commits,
 * would keep the backlog over the bound while the learner waits for groups.  So when the
 * learner's group has not committed anything new for rollout.backlog.stall.s while over the
 * bound, rolling out goes on (with a warning) until it does. */
static int backlog_full(roller_t *r) {
    if (r->max_backlog <= 0)
        return 0;
    int64_t now = she_stream_now_ms();
    if (now - r->backlog_read_ms < 1000)
        return !r->backlog_stalled && backlog_now(r) > r->max_backlog;
    r->backlog_read_ms = now;
    char errstr[SHE_ERRSTR_SIZE];
    int64_t sum = 0, learned = 0;
    for (int i = 0; i < 2; i++) {
        int64_t n = 0, committed = 0;
        if (she_backlog_read(r->backlog[i], 2000, &n, &committed, errstr, sizeof(errstr)) !=
            SHE_OK) {
            she_log_warn(r->lg, "%s: not bounding the backlog until the next read", errstr);
            r->last_backlog = r->made_since_read = 0; /* unknown: no pause */
            r->backlog_over = 0;
            return 0;
        }
        sum += n;
        if (i == 1) /* she.rewarded's group: the learner */
            learned = committed;
    }
    r->last_backlog = sum;
    r->made_since_read = 0;
    she_metrics_set(r->s_backlog, (double)sum);
    int over = sum > r->max_backlog;
    int learner_moved = learned > r->backlog_learned;
    r->backlog_learned = learned;
    if (!over || !r->backlog_over || learner_moved) { /* under, newly over, or progress */
        if (r->backlog_stalled)
            she_log_info(r->lg, "the learner committed again (backlog %" PRId64 " groups): "
                         "bounding the backlog again", sum);
        r->backlog_stalled = 0;
        r->backlog_moved_ms = now;
    } else if (!r->backlog_stalled && now - r->backlog_moved_ms > r->backlog_stall_ms) {
        she_log_warn(r->lg, "over the backlog bound (%" PRId64 " groups) and the learner has "
                     "committed nothing in %.0f s: rolling out anyway (it may be waiting for "
                     "groups it will train on; is rollout.backlog.groups right?)", sum,
                     r->backlog_stall_ms / 1000.0);
        r->backlog_stalled = 1;
    }
    r->backlog_over = over;
    return over && !r->backlog_stalled;
}

/* Pauses or resumes the sample partitions: paused while the policy is more than
 * rollout.staleness versions behind the newest announcement (its work would be refused) or
 * the backlog downstream is over rollout.max.backlog (its work would wait until it is stale).
 * While paused the pause is applied again at every check: partitions assigned after it (the
 * group's first join comes after start-up, a rebalance hands over more) would otherwise be
 * consumed. */
static void check_pause(roller_t *r) {
    int stale = she_policy_watch_lag(r->pw) > r->staleness;
    int full = backlog_full(r);
    int pause = stale || full;
    if (!pause && !r->paused)
        return;
    rd_kafka_t *rk = she_stream_consumer(r->st);
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause)
        rd_kafka_pause_partitions(rk, parts);
    else
        rd_kafka_resume_partitions(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (stale && !r->stale)
        she_log_warn(r->lg, "policy v%" PRId64 " is %" PRId64 " versions behind the newest "
                     "announcement (bound %" PRId64 "): pausing until a newer one loads",
                     she_policy_watch_version(r->pw), she_policy_watch_lag(r->pw), r->staleness);
    else if (!stale && r->stale)
        she_log_info(r->lg, "policy v%" PRId64 " is current again%s",
                     she_policy_watch_version(r->pw), full ? "" : ": resuming");
    if (full && !r->full)
        she_log_info(r->lg, "%" PRId64 " groups made and not yet consumed downstream (bound %"
                     PRId64 "): pausing", backlog_now(r), r->max_backlog);
    else if (!full && r->full && !r->backlog_stalled) /* (a stall said why itself) */
        she_log_info(r->lg, "backlog down to %" PRId64 " groups%s", backlog_now(r),
                     stale ? "" : ": resuming");
    r->paused = pause;
    r->stale = stale;
    r->full = full;
}

/* A sample that arrives while paused (assigned between two checks) is handed back, to be
 * read again on resume: no decision, no rollout by the stale policy. */
static void hold(roller_t *r, rd_kafka_message_t *rkm) {
    char errstr[SHE_ERRSTR_SIZE];
    if (she_stream_hold(r->st, rkm, errstr, sizeof(errstr)) != SHE_OK) {
        /* cannot put it back: roll it out later rather than lose it */
        she_log_warn(r->lg, "%s; taking it now", errstr);
        offer(r, rkm);
        return;
    }
    rd_kafka_message_destroy(rkm);
}

static she_err_t setup(roller_t *r, she_metrics_t *reg, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    she_device_t dev; /* a wrong --device fails before anything connects (exit 2) */
    if (she_device_select(she_conf_get(c, "rollout.device"), &dev, errstr, errstr_size) != SHE_OK)
        return SHE_ERR_CONFIG;
    she_selector_config_t sc;
    SHE_TRY(she_selection_config_from_conf(c, &sc, errstr, errstr_size));
    r->sel = she_selector_new(&sc, errstr, errstr_size);
    if (!r->sel)
        return SHE_ERR_CONFIG;
    r->batch = (int)she_conf_get_int(c, "rollout.batch");
    r->max_prompt = (int)she_conf_get_int(c, "rollout.max.prompt");
    r->staleness = she_conf_get_int(c, "rollout.staleness");
    r->max_backlog = she_conf_get_int(c, "rollout.max.backlog");
    r->backlog_stall_ms = (int64_t)(she_conf_get_double(c, "rollout.backlog.stall.s") * 1000.0);
    if (r->max_backlog > 0) {
        char groups[512];
        snprintf(groups, sizeof(groups), "%s", she_conf_get(c, "rollout.backlog.groups"));
        char *comma = strchr(groups, ',');
        if (!comma || !comma[1] || comma == groups || strchr(comma + 1, ','))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "rollout.backlog.groups: '%s' is not GROUP,GROUP (the consumers of "
                            "she.rollouts and of she.rewarded)", groups);
        *comma = '\0';
        SHE_TRY(she_backlog_new(c, r->lg, groups, "rollouts", &r->backlog[0], errstr,
                                errstr_size));
        SHE_TRY(she_backlog_new(c, r->lg, comma + 1, "rewarded", &r->backlog[1], errstr,
                                errstr_size));
    }
    r->seed = (uint64_t)she_conf_get_int(c, "rollout.seed");
    const char *dec = she_conf_get(c, "rollout.decisions.file");
    r->decisions_fd = -1;
    if (dec) {
        r->decisions_fd = open(dec, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (r->decisions_fd < 0)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", dec, strerror(errno));
    }
    she_stream_opts_t so = {.component = "rollout", .consumer = 1, .producer = 1,
                            .group_id = she_conf_get(c, "rollout.group.id"), .report_lag = 1};
    SHE_TRY(she_stream_new(c, r->lg, reg, &so, &r->st, errstr, errstr_size));
    she_stream_opts_t bo = {.component = "rollout", .consumer = 1, .dead_letter_via = r->st};
    SHE_TRY(she_stream_new(c, r->lg, NULL, &bo, &r->bc, errstr, errstr_size));
    const char *bc_topics[] = {"passrate", "control"};
    SHE_TRY(she_stream_assign(r->bc, bc_topics, 2, NULL, 30000, errstr, errstr_size));
    SHE_TRY(she_policy_watch_new(c, r->lg, reg, r->st, &r->pw, errstr, errstr_size));

    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = (int)she_conf_get_int(c, "rollout.group");
    rc.temperature = (float)she_conf_get_double(c, "rollout.temperature");
    rc.top_k = (int)she_conf_get_int(c, "rollout.top.k");
    rc.max_new_tokens = (int)she_conf_get_int(c, "rollout.max.new");
    rc.max_prompt_tokens = r->max_prompt;
    rc.device = she_conf_get(c, "rollout.device");
    SHE_TRY(she_policy_watch_start(r->pw, she_conf_get(c, "rollout.policy"),
                                   she_conf_get_int(c, "rollout.policy.version"), 1,
                                   rc.max_prompt_tokens + rc.max_new_tokens,
                                   (int)she_conf_get_int(c, "rollout.wait.policy.ms"), errstr,
                                   errstr_size));
    char path[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", she_policy_watch_dir(r->pw));
    SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
    SHE_TRY(she_sft_special_ids(r->tok, &r->sp, errstr, errstr_size));
    SHE_TRY(she_rollout_new(she_policy_watch_model(r->pw), r->tok, &rc, r->batch, &r->ro, errstr,
                            errstr_size));
    r->prompt_ids = malloc(sizeof(int32_t) * (size_t)r->max_prompt);
    r->pend = calloc((size_t)r->batch, sizeof(*r->pend));
    r->groups = calloc((size_t)r->batch, sizeof(*r->groups));
    SHE_CHECK_ALLOC(r->prompt_ids);
    SHE_CHECK_ALLOC(r->pend);
    SHE_CHECK_ALLOC(r->groups);

    she_metric_t *m_adm, *m_roll, *m_thr, *m_stage, *m_backlog;
    SHE_TRY(she_metrics_counter(reg, "she_samples_admitted_total",
                                "Samples data selection admitted.", NULL, &m_adm, errstr,
                                errstr_size));
    SHE_TRY(she_metrics_counter(reg, "she_samples_rejected_total",
                                "Samples data selection skipped, by reason.", "reason",
                                &r->m_rejected, errstr, errstr_size));
    SHE_TRY(she_metrics_counter(reg, "she_rollouts_total", "Rollout groups published.", NULL,
                                &m_roll, errstr, errstr_size));
    SHE_TRY(she_metrics_counter(reg, "she_tokens_total", "Tokens, by kind (prompt, generated).",
                                "kind", &r->m_tokens, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_difficulty_threshold",
                              "Bounds of the admitted pass-rate band.", "bound", &m_thr, errstr,
                              errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_curriculum_stage", "Index of the curriculum stage.", NULL,
                              &m_stage, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_rollout_backlog_groups",
                              "Groups made and not yet consumed downstream (read when "
                              "rollout.max.backlog bounds it).", NULL, &m_backlog, errstr,
                              errstr_size));
    const char *gen[] = {"generated"}, *prm[] = {"prompt"}, *lo[] = {"low"}, *hi[] = {"high"};
    r->s_admitted = she_metrics_series(m_adm, NULL);
    r->s_rollouts = she_metrics_series(m_roll, NULL);
    r->s_tok_gen = she_metrics_series(r->m_tokens, gen);
    r->s_tok_prompt = she_metrics_series(r->m_tokens, prm);
    r->s_lo = she_metrics_series(m_thr, lo);
    r->s_hi = she_metrics_series(m_thr, hi);
    r->s_stage = she_metrics_series(m_stage, NULL);
    r->s_backlog = she_metrics_series(m_backlog, NULL);
    set_band_metrics(r);
    const char *topics[] = {"samples"};
    return she_stream_subscribe(r->st, topics, 1, errstr, errstr_size);
}

int she_cmd_rollout(int argc, char **argv, char **envp) {
    she_conf_def_t *defs = she_selection_defs_with(rollout_defs);
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she rollout [--policy DIR] [options]",
                          "Consumes she.samples in a consumer group, admits samples through data\n"
                          "selection (pass rates from she.passrate, band and curriculum stage\n"
                          "from she.control), generates G responses per prompt with the current\n"
                          "policy and publishes rollout groups to she.rollouts. Follows\n"
                          "she.checkpoints and swaps in each verified new policy between batches.\n"
                          "Stops cleanly on SIGTERM.",
                          defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        free(defs);
        return rc;
    }
    she_signals_install();
    char errstr[SHE_ERRSTR_SIZE];
    roller_t r = {.conf = env.conf, .lg = env.lg, .decisions_fd = -1};
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_err_t err = setup(&r, reg, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_serve_metrics(she_conf_get(env.conf, "metrics.listen"), reg, env.lg,
                                       &httpd, errstr, sizeof(errstr));
    int status = SHE_EXIT_OK;
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        status = she_cmd_exit_status(err);
    } else {
        she_log_info(env.lg, "rolling out with policy v%" PRId64 " (%s), G=%d, batch %d",
                     she_policy_watch_version(r.pw), she_policy_watch_dir(r.pw),
                     (int)she_conf_get_int(env.conf, "rollout.group"), r.batch);
        int wait_ms = (int)she_conf_get_int(env.conf, "rollout.batch.wait.ms");
        while (!she_signals_stop_requested()) {
            read_broadcast(&r);
            if (she_policy_watch_poll(r.pw))
                she_log_info(env.lg, "now rolling out with policy v%" PRId64,
                             she_policy_watch_version(r.pw));
            check_pause(&r);
            int64_t deadline = she_stream_now_ms() + wait_ms;
            while (r.n_pend < r.batch && !she_signals_stop_requested()) {
                int64_t left = deadline - she_stream_now_ms();
                rd_kafka_message_t *rkm = she_stream_poll(r.st, left > 0 ? (int)left : 0);
                if (rkm && r.paused)
                    hold(&r, rkm);
                else if (rkm)
                    offer(&r, rkm);
                else if (left <= 0)
                    break;
            }
            if (she_signals_stop_requested())
                break;
            roll_out(&r);
            if (she_stream_commit(r.st, 1000, errstr, sizeof(errstr)) != SHE_OK)
                she_log_warn(env.lg, "commit deferred: %s", errstr);
        }
        /* Finish the admitted samples: the offsets of later ones may already be done. */
        roll_out(&r);
        she_log_info(env.lg, "stopping (SIGTERM)");
    }
    she_httpd_free(httpd);
    she_rollout_free(r.ro);
    she_policy_watch_free(r.pw);
    she_backlog_free(r.backlog[0]);
    she_backlog_free(r.backlog[1]);
    she_stream_free(r.bc);
    she_stream_free(r.st);
    she_tokenizer_free(r.tok);
    she_selector_free(r.sel);
    free(r.prompt_ids);
    free(r.pend);
    free(r.groups);
    if (r.decisions_fd >= 0)
        close(r.decisions_fd);
    she_metrics_free(reg);
    she_cmd_fini(&env);
    free(defs);
    return status;
}
