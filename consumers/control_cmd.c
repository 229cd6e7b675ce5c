/* control_cmd.c -- `she control`: the difficulty thresholds and curriculum stage of data
 * selection, steered by the stream of pass rates, published on she.control (compacted, key
 * "state") with the reason of every change.
 *
 * It runs a selector (trainer/selection.h) over the pass-rate records: each record is observed
 * (the prompt's recent pass rate) and offered, so the selector's band controller sees the same
 * in-band / too-hard / too-easy mix the rollouts see and moves the band inside
 * [selection.band.min, selection.band.max] (paper: 0.01 .. 0.90); every control.step.groups
 * records make one curriculum step whose pass rate is their mean, and the selector's stop
 * conditions advance the stage.  When band or stage change, the new state is published, then
 * the pass-rate offsets are committed (a restart replays at most what followed the last
 * commit).  On start the last published state is read back, so seq, band and stage continue.
 * A malformed pass-rate record goes to the dead-letter topic. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "commands.h"
#include "consumers/selection_conf.h"
#include "messages.h"
#include "signals.h"
#include "stream.h"

static const she_conf_def_t control_defs[] = {
    {"control.step.groups", SHE_CONF_INT, "64",
     "pass-rate records per curriculum step (a learner batch)", 1, 1000000, NULL, NULL},
    {"control.heartbeat.ms", SHE_CONF_INT, "30000",
     "republish an unchanged state this often (0 = only on change)", 0, 86400000, NULL, NULL},
    {"control.group.id", SHE_CONF_STR, "she-control", "consumer group of the pass-rate reader", 0,
     0, NULL, NULL},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9468", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct controller {
    she_log_t *lg;
    she_stream_t *st;
    she_selector_t *sel;
    she_selector_config_t cfg;
    int64_t seq;
    she_selector_status_t last; /* as last published */
    int64_t steps_in_stage;     /* steps the stage had taken with the latest one */
    int published;
    she_metric_series_t *s_lo, *s_hi, *s_stage;
} controller_t;

/* Reads the last published state back (she.control from the beginning to its end). */
static void restore(controller_t *c, const she_conf_t *conf) {
    char errstr[SHE_ERRSTR_SIZE];
    she_stream_t *rd = NULL;
    she_stream_opts_t o = {.component = "control", .consumer = 1};
    const char *topics[] = {"control"};
    if (she_stream_new(conf, c->lg, NULL, &o, &rd, errstr, sizeof(errstr)) != SHE_OK ||
        she_stream_assign(rd, topics, 1, NULL, 30000, errstr, sizeof(errstr)) != SHE_OK) {
        she_log_warn(c->lg, "cannot read the last control state (%s); starting afresh", errstr);
        she_stream_free(rd);
        return;
    }
    int64_t lo = 0, hi = 0;
    rd_kafka_query_watermark_offsets(she_stream_consumer(rd), she_stream_topic_name("control"), 0,
                                     &lo, &hi, 10000);
    she_control_state_t cs = {0}, last = {0};
    int have = 0;
    int64_t deadline = she_stream_now_ms() + 10000;
    int64_t next = lo;
    while (next < hi && she_stream_now_ms() < deadline && !she_signals_stop_requested()) {
        rd_kafka_message_t *rkm = she_stream_poll(rd, 200);
        if (!rkm)
            continue;
        next = rkm->offset + 1;
        if (she_msg_decode_control_state(she_stream_codec(rd), rkm->payload, rkm->len, &cs,
                                         errstr, sizeof(errstr)) == SHE_OK) {
            she_msg_clear_control_state(&last);
            last = cs;
            memset(&cs, 0, sizeof(cs));
            have = 1;
        }
        rd_kafka_message_destroy(rkm);
    }
    if (have) {
        if (she_selection_apply_control(c->sel, &last, errstr, sizeof(errstr)) == SHE_OK) {
            /* band and stage continue; the caps are this run's configuration, not the old
             * state's (the first state published says so) */
            SHE_ASSERT(she_selector_set_caps(c->sel, c->cfg.caps, c->cfg.n_caps, errstr,
                                             sizeof(errstr)) == SHE_OK);
            c->seq = last.seq;
            she_log_info(c->lg, "resuming from control state %" PRId64 ": band [%.2f, %.2f], "
                         "stage %d", last.seq, last.difficulty_lo, last.difficulty_hi,
                         (int)last.curriculum_stage);
        } else {
            she_log_warn(c->lg, "last control state not usable (%s); starting afresh", errstr);
        }
    }
    she_msg_clear_control_state(&last);
    she_msg_clear_control_state(&cs);
    she_stream_free(rd);
}

static const char *stage_name(const controller_t *c, int stage) {
    return stage < c->cfg.n_stages ? c->cfg.stages[stage].name : "(done)";
}

/* Publishes the selector's band and stage with the reason; returns 1 when it did. */
static int publish(controller_t *c, const char *reason) {
    she_selector_status_t now;
    she_selector_status(c->sel, &now);
    she_control_state_t cs = {0};
    cs.seq = ++c->seq;
    cs.difficulty_lo = (float)now.lo;
    cs.difficulty_hi = (float)now.hi;
    cs.curriculum_stage = now.stage;
    /* the query-type caps ride along with every state: a rollout consumer applies them, so one
     * `she control` steers the mix of every consumer without restarting them */
    she_msg_metric_t quotas[SHE_SEL_MAX_CAPS];
    for (int i = 0; i < c->cfg.n_caps; i++) {
        quotas[i].name = c->cfg.caps[i].query_type;
        quotas[i].value = c->cfg.caps[i].share;
    }
    cs.quotas = quotas;
    cs.n_quotas = c->cfg.n_caps;
    cs.reason = (char *)reason;
    cs.updated_ms = she_stream_now_ms();
    const uint8_t *buf;
    size_t len;
    char errstr[SHE_ERRSTR_SIZE];
    she_err_t err = she_msg_encode_control_state(she_stream_codec(c->st), &cs, &buf, &len, errstr,
                                                 sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_produce(c->st, "control", "state", 5, buf, len, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        c->seq--;
        she_log_error(c->lg, "control state not published: %s", errstr);
        return 0;
    }
    she_log_info(c->lg, "control state %" PRId64 ": band [%.2f, %.2f], stage %d (%s): %s",
                 cs.seq, now.lo, now.hi, now.stage, stage_name(c, now.stage), reason);
    if (c->s_lo) {
        she_metrics_set(c->s_lo, now.lo);
        she_metrics_set(c->s_hi, now.hi);
        she_metrics_set(c->s_stage, now.stage);
    }
    c->last = now;
    c->published = 1;
    return 1;
}

/* Publishes when the band or stage moved since the last state, naming why. */
static int publish_changes(controller_t *c) {
    she_selector_status_t now;
    she_selector_status(c->sel, &now);
    char reason[512];
    if (!c->published)
        snprintf(reason, sizeof(reason), "initial state");
    else if (now.stage != c->last.stage)
        snprintf(reason, sizeof(reason),
                 "curriculum stage %s -> %s after %" PRId64 " steps (pass-rate EMA %.3f)",
                 stage_name(c, c->last.stage), stage_name(c, now.stage), c->steps_in_stage,
                 now.pass_ema);
    else if (now.n_widen > c->last.n_widen)
        snprintf(reason, sizeof(reason),
                 "band widened [%.2f, %.2f] -> [%.2f, %.2f]: fewer than %.0f%% of the last %d "
                 "pass rates were inside it",
                 c->last.lo, c->last.hi, now.lo, now.hi, 100.0 * c->cfg.min_admit, c->cfg.window);
    else if (now.n_restore > c->last.n_restore)
        snprintf(reason, sizeof(reason),
                 "band narrowed toward the initial [%.2f, %.2f]: [%.2f, %.2f] -> [%.2f, %.2f], "
                 "more than %.0f%% of the last %d pass rates were inside it",
                 c->cfg.lo0, c->cfg.hi0, c->last.lo, c->last.hi, now.lo, now.hi,
                 100.0 * c->cfg.max_admit, c->cfg.window);
    else if (now.lo != c->last.lo || now.hi != c->last.hi)
        snprintf(reason, sizeof(reason), "band moved to [%.2f, %.2f]", now.lo, now.hi);
    else
        return 0;
    return publish(c, reason);
}

int she_cmd_control(int argc, char **argv, char **envp) {
    she_conf_def_t *defs = she_selection_defs_with(control_defs);
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she control [options]",
                          "Steers data selection from the pass-rate stream: moves the difficulty\n"
                          "band within [selection.band.min, selection.band.max], advances the\n"
                          "curriculum stages, and publishes the control state (with the reason\n"
                          "of each change) on she.control. Stops cleanly on SIGTERM.",
                          defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        free(defs);
        return rc;
    }
    she_signals_install();
    char errstr[SHE_ERRSTR_SIZE];
    controller_t c = {0};
    c.lg = env.lg;
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_metric_t *m_thr = NULL, *m_stage = NULL;
    she_err_t err = she_selection_config_from_conf(env.conf, &c.cfg, errstr, sizeof(errstr));
    int status = err == SHE_OK ? SHE_EXIT_OK : SHE_EXIT_USAGE;
    if (err == SHE_OK) {
        c.sel = she_selector_new(&c.cfg, errstr, sizeof(errstr));
        she_stream_opts_t o = {.component = "control", .consumer = 1, .producer = 1,
                               .group_id = she_conf_get(env.conf, "control.group.id"),
                               .report_lag = 1};
        err = she_stream_new(env.conf, env.lg, reg, &o, &c.st, errstr, sizeof(errstr));
    }
    if (err == SHE_OK)
        err = she_metrics_gauge(reg, "she_difficulty_threshold",
                                "Bounds of the admitted pass-rate band.", "bound", &m_thr, errstr,
                                sizeof(errstr));
    if (err == SHE_OK)
        err = she_metrics_gauge(reg, "she_curriculum_stage", "Index of the curriculum stage.",
                                NULL, &m_stage, errstr, sizeof(errstr));
    if (err == SHE_OK) {
        const char *lo[] = {"low"}, *hi[] = {"high"};
        c.s_lo = she_metrics_series(m_thr, lo);
        c.s_hi = she_metrics_series(m_thr, hi);
        c.s_stage = she_metrics_series(m_stage, NULL);
        err = she_stream_serve_metrics(she_conf_get(env.conf, "metrics.listen"), reg, env.lg,
                                       &httpd, errstr, sizeof(errstr));
    }
    const char *topics[] = {"passrate"};
    if (err == SHE_OK)
        err = she_stream_subscribe(c.st, topics, 1, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        if (status == SHE_EXIT_OK)
            status = she_cmd_exit_status(err);
    }
    if (err == SHE_OK) {
        restore(&c, env.conf);
        publish_changes(&c);
        int step_groups = (int)she_conf_get_int(env.conf, "control.step.groups");
        int64_t heartbeat = she_conf_get_int(env.conf, "control.heartbeat.ms");
        int64_t last_pub = she_stream_now_ms(), last_commit = last_pub;
        int in_step = 0;
        double step_sum = 0;
        int dirty = 0;
        she_pass_rate_t pr = {0};
        while (!she_signals_stop_requested()) {
            rd_kafka_message_t *rkm = she_stream_poll(c.st, 200);
            if (rkm) {
                if (she_msg_decode_pass_rate(she_stream_codec(c.st), rkm->payload, rkm->len, &pr,
                                             errstr, sizeof(errstr)) != SHE_OK) {
                    she_stream_dead_letter(c.st, rkm, errstr);
                } else if (pr.count > 0 && pr.pass_rate >= 0 && pr.pass_rate <= 1) {
                    int n_pass = (int)lrintf(pr.pass_rate * (float)pr.count);
                    she_selector_observe(c.sel, pr.sample_id, n_pass, pr.count);
                    she_sel_item_t item = {.id = pr.sample_id, .offline_pass = NAN,
                                           .rm_score = NAN};
                    she_selector_decide(c.sel, &item);
                    step_sum += pr.pass_rate;
                    if (++in_step == step_groups) {
                        she_selector_status_t before;
                        she_selector_status(c.sel, &before);
                        c.steps_in_stage = before.stage_steps + 1; /* a stage end resets it */
                        she_selector_end_step(c.sel, step_sum / in_step);
                        in_step = 0;
                        step_sum = 0;
                    }
                } else {
                    she_stream_dead_letter(c.st, rkm, "pass-rate record out of range "
                                                      "(count <= 0 or rate outside [0, 1])");
                }
                she_stream_done(c.st, rkm);
                rd_kafka_message_destroy(rkm);
                dirty = 1;
            }
            int64_t now = she_stream_now_ms();
            if (publish_changes(&c))
                last_pub = now;
            else if (heartbeat > 0 && now - last_pub >= heartbeat && publish(&c, "unchanged"))
                last_pub = now;
            if (dirty && (now - last_commit >= 1000 || !rkm)) {
                if (she_stream_commit(c.st, 5000, errstr, sizeof(errstr)) == SHE_OK)
                    dirty = 0;
                else
                    she_log_warn(env.lg, "commit deferred: %s", errstr);
                last_commit = now;
            }
        }
        she_msg_clear_pass_rate(&pr);
        she_log_info(env.lg, "stopping (SIGTERM); last control state %" PRId64, c.seq);
    }
    she_httpd_free(httpd);
    she_stream_free(c.st);
    she_selector_free(c.sel);
    she_metrics_free(reg);
    she_cmd_fini(&env);
    free(defs);
    return status;
}
