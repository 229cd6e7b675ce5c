/* reward_cmd.c -- `she reward`: rollout groups -> hybrid stepwise rewards -> she.rewarded, and
 * one pass-rate record per group -> she.passrate.  A consumer group: start more to scale out.
 *
 * Groups are rewarded reward.batch at a time (trainer/reward.h: the reward model judges steps
 * 1-2, ground truth steps 3-4, the label step 5 in hybrid mode).  A message that does not
 * decode, or a group the rewarder refuses (token ids outside the vocabulary, ...), goes to the
 * dead-letter topic with the reason; when a batch fails, its groups are retried one by one so
 * only the bad ones are dead-lettered.  Outputs are keyed by sample id; offsets are committed
 * after the outputs are delivered (stream.h).
 *
 * Besides the rewards, /metrics tells how the responses and the reward model behave: responses
 * whose final grade does not parse (a format failure, as `she evaluate` counts them; a rising
 * share is the first sign of reward hacking), the reward model's mean P([Correct]) per judged
 * step, and its verdicts against the step truth where the sample has one. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "commands.h"
#include "messages.h"
#include "signals.h"
#include "stream.h"
#include "trainer/reward.h"
#include "trainer/rm.h"
#include "trainer/sft.h"

static const she_conf_def_t reward_defs[] = {
    {"reward.policy", SHE_CONF_STR, NULL,
     "a policy checkpoint (its tokenizer.json decodes the responses)", 0, 0, NULL, "policy"},
    {"reward.rm", SHE_CONF_STR, "", "reward-model checkpoint (she train-rm; rm and hybrid modes)",
     0, 0, NULL, "rm"},
    {"reward.mode", SHE_CONF_ENUM, "hybrid", "step rewards: outcome (S5), sum (GRPO*), rm, hybrid",
     0, 0, "outcome|sum|rm|hybrid", "mode"},
    {"reward.weights", SHE_CONF_STR, "0.2,0.2,0.2,0.2,1.0", "reward of a correct step 1..5", 0, 0,
     NULL, NULL},
    {"reward.format.penalty", SHE_CONF_DOUBLE, "0",
     "subtracted from step 5's reward of a response with a step that does not parse", 0, 100,
     NULL, "format-penalty"},
    {"reward.lexicons", SHE_CONF_STR, "", "brand/material lexicons of the teacher chains (as SFT)",
     0, 0, NULL, "lexicons"},
    {"reward.lexicon.min.count", SHE_CONF_INT, "0", "keep lexicon rows with cnt_attribute >= this",
     0, 1e9, NULL, NULL},
    {"reward.batch", SHE_CONF_INT, "4", "groups rewarded together", 1, 4096, NULL, "batch"},
    {"reward.batch.wait.ms", SHE_CONF_INT, "200", "longest wait to fill a batch", 0, 600000,
     NULL, NULL},
    {"reward.rm.batch", SHE_CONF_INT, "64", "reward-model questions judged together", 1, 4096,
     NULL, NULL},
    {"reward.device", SHE_CONF_STR, "cpu",
     "where the reward model judges: cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs", 0, 0,
     NULL, "device"},
    {"reward.group.id", SHE_CONF_STR, "she-reward", "consumer group", 0, 0, NULL, NULL},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9466", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct rewarding {
    she_log_t *lg;
    she_stream_t *st;
    she_tokenizer_t *tok, *rm_tok;
    she_model_t *rm_model;
    she_rm_t *rm;
    she_device_t dev; /* where the reward model judges (reward.device) */
    she_lexicon_t *brands, *materials;
    she_rewarder_t *rw;
    int batch;
    rd_kafka_message_t **msgs;
    she_rollout_group_t *groups;
    she_rewarded_group_t *out;
    she_metric_series_t *s_reward[SHE_RL_N_STEPS + 1], *s_pass, *s_responses, *s_format;
    she_metric_t *m_rm_score, *m_rm_checks;
    she_step_verdict_t *verdicts; /* room for n_verdicts responses */
    int n_verdicts;
} rewarding_t;

static she_err_t setup(rewarding_t *w, const she_conf_t *c, she_metrics_t *reg, char *errstr,
                       size_t errstr_size) {
    /* first: a bad --device is a usage error before anything is read */
    SHE_TRY(she_device_select(she_conf_get(c, "reward.device"), &w->dev, errstr, errstr_size));
    const char *policy = she_conf_get(c, "reward.policy");
    if (!policy)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "--policy DIR is required (its tokenizer decodes the responses)");
    char path[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", policy);
    SHE_TRY(she_tokenizer_load(path, &w->tok, errstr, errstr_size));
    const char *lex = she_conf_get(c, "reward.lexicons");
    if (lex[0])
        SHE_TRY(she_sft_load_lexicons(lex, (int)she_conf_get_int(c, "reward.lexicon.min.count"),
                                      &w->brands, &w->materials, errstr, errstr_size));
    she_reward_config_t rc = she_reward_defaults();
    rc.mode = (she_reward_mode_t)she_reward_mode_parse(she_conf_get(c, "reward.mode"));
    SHE_TRY(she_reward_weights_parse("reward.weights", she_conf_get(c, "reward.weights"),
                                     rc.weight, errstr, errstr_size));
    rc.format_penalty = (float)she_conf_get_double(c, "reward.format.penalty");
    if (rc.mode == SHE_REWARD_MODE_RM || rc.mode == SHE_REWARD_MODE_HYBRID) {
        const char *rmdir = she_conf_get(c, "reward.rm");
        if (!rmdir[0])
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "reward.mode=%s needs --rm (a she train-rm checkpoint)",
                            she_reward_mode_name(rc.mode));
        snprintf(path, sizeof(path), "%s/tokenizer.json", rmdir);
        SHE_TRY(she_tokenizer_load(path, &w->rm_tok, errstr, errstr_size));
        she_rm_config_t rmc = she_rm_defaults();
        int rb = (int)she_conf_get_int(c, "reward.rm.batch");
        SHE_TRY(she_model_load(rmdir, rb, she_rm_max_seq(&rmc), &w->rm_model, NULL, errstr,
                               errstr_size));
        SHE_TRY(she_rm_new(w->rm_model, w->rm_tok, &rmc, rb, &w->dev, &w->rm, errstr,
                           errstr_size));
        she_log_info(w->lg, "reward model %s: %d layers, hidden %d", rmdir,
                     w->rm_model->cfg.n_layers, w->rm_model->cfg.hidden_size);
    }
    SHE_TRY(she_rewarder_new(&rc, w->tok, w->rm, w->brands, w->materials, &w->rw, errstr,
                             errstr_size));
    w->batch = (int)she_conf_get_int(c, "reward.batch");
    w->msgs = calloc((size_t)w->batch, sizeof(*w->msgs));
    w->groups = calloc((size_t)w->batch, sizeof(*w->groups));
    w->out = calloc((size_t)w->batch, sizeof(*w->out));
    SHE_CHECK_ALLOC(w->msgs);
    SHE_CHECK_ALLOC(w->groups);
    SHE_CHECK_ALLOC(w->out);

    she_stream_opts_t so = {.component = "reward", .consumer = 1, .producer = 1,
                            .group_id = she_conf_get(c, "reward.group.id"), .report_lag = 1};
    SHE_TRY(she_stream_new(c, w->lg, reg, &so, &w->st, errstr, errstr_size));
    she_metric_t *m_reward, *m_pass;
    SHE_TRY(she_metrics_gauge(reg, "she_reward_mean",
                              "Mean reward of the last batch, per step (1..5) and in all.",
                              "step", &m_reward, errstr, errstr_size));
    double bounds[10];
    she_metrics_buckets_linear(0.1, 0.1, 10, bounds);
    SHE_TRY(she_metrics_histogram(reg, "she_group_pass_rate",
                                  "Share of a group's responses whose grade is right.", NULL,
                                  bounds, 10, &m_pass, errstr, errstr_size));
    for (int j = 0; j <= SHE_RL_N_STEPS; j++) {
        char step[8];
        snprintf(step, sizeof(step), "%d", j + 1);
        const char *lv[] = {j < SHE_RL_N_STEPS ? step : "all"};
        w->s_reward[j] = she_metrics_series(m_reward, lv);
    }
    w->s_pass = she_metrics_series(m_pass, NULL);
    she_metric_t *m;
    SHE_TRY(she_metrics_counter(reg, "she_reward_responses_total", "Responses rewarded.", NULL, &m,
                                errstr, errstr_size));
    w->s_responses = she_metrics_series(m, NULL);
    SHE_TRY(she_metrics_counter(reg, "she_reward_format_failures_total",
                                "Responses whose final grade did not parse.", NULL, &m, errstr,
                                errstr_size));
    w->s_format = she_metrics_series(m, NULL);
    if (w->rm) {
        /* Series per step appear with the first verdict: the mode decides which steps the
         * reward model judges. */
        SHE_TRY(she_metrics_gauge(reg, "she_reward_model_score_mean",
                                  "Mean P([Correct]) the reward model gave a step, last batch.",
                                  "step", &w->m_rm_score, errstr, errstr_size));
        SHE_TRY(she_metrics_counter(reg, "she_reward_model_checks_total",
                                    "Reward-model verdicts (P >= 0.5) against the step truth, "
                                    "on samples that have it.",
                                    "step,result", &w->m_rm_checks, errstr, errstr_size));
    }
    const char *topics[] = {"rollouts"};
    return she_stream_subscribe(w->st, topics, 1, errstr, errstr_size);
}

/* Publishes a rewarded group and its pass-rate record.  Returns SHE_OK or the reason. */
static she_err_t publish(rewarding_t *w, const she_rewarded_group_t *g, char *errstr,
                         size_t errstr_size) {
    const uint8_t *buf;
    size_t len;
    const char *key = g->rollout.sample_id;
    SHE_TRY(she_msg_encode_rewarded_group(she_stream_codec(w->st), g, &buf, &len, errstr,
                                          errstr_size));
    SHE_TRY(she_stream_produce(w->st, "rewarded", key, strlen(key), buf, len, errstr,
                               errstr_size));
    she_pass_rate_t pr = {.sample_id = (char *)key, .pass_rate = g->pass_rate,
                          .count = g->n_rewards, .policy_version = g->rollout.policy_version,
                          .updated_ms = g->created_ms};
    SHE_TRY(she_msg_encode_pass_rate(she_stream_codec(w->st), &pr, &buf, &len, errstr,
                                     errstr_size));
    return she_stream_produce(w->st, "passrate", key, strlen(key), buf, len, errstr, errstr_size);
}

/* The reward model's side of a batch: v[0..n) are the verdicts of its responses. */
static void observe_rm(rewarding_t *w, const she_step_verdict_t *v, long n) {
    double score[SHE_RM_N_STEPS] = {0};
    long judged[SHE_RM_N_STEPS] = {0}, agree[SHE_RM_N_STEPS] = {0}, checked[SHE_RM_N_STEPS] = {0};
    for (long k = 0; k < n; k++)
        for (int j = 0; j < SHE_RM_N_STEPS; j++) {
            if (v[k].rm[j] < 0)
                continue;
            judged[j]++;
            score[j] += v[k].rm[j];
            if (v[k].gt[j] >= 0) {
                checked[j]++;
                agree[j] += (v[k].rm[j] >= 0.5f) == (v[k].gt[j] == 1);
            }
        }
    for (int j = 0; j < SHE_RM_N_STEPS; j++) {
        if (!judged[j])
            continue;
        char step[8];
        snprintf(step, sizeof(step), "%d", j + 1);
        const char *ls[] = {step}, *la[] = {step, "agree"}, *ld[] = {step, "disagree"};
        she_metrics_set(she_metrics_series(w->m_rm_score, ls), score[j] / (double)judged[j]);
        if (checked[j]) {
            she_metrics_add(she_metrics_series(w->m_rm_checks, la), (double)agree[j]);
            she_metrics_add(she_metrics_series(w->m_rm_checks, ld),
                            (double)(checked[j] - agree[j]));
        }
    }
}

/* Metrics of n rewarded groups; v holds the verdicts of their responses, in order. */
static void observe(rewarding_t *w, const she_rewarded_group_t *g, const she_step_verdict_t *v,
                    int n) {
    double sum[SHE_RL_N_STEPS + 1] = {0};
    long cnt = 0, format = 0;
    for (int i = 0; i < n; i++) {
        she_metrics_observe(w->s_pass, g[i].pass_rate);
        for (int k = 0; k < g[i].n_rewards; k++, cnt++) {
            for (int j = 0; j < SHE_RL_N_STEPS; j++)
                sum[j] += g[i].rewards[k].step_rewards[j];
            sum[SHE_RL_N_STEPS] += g[i].rewards[k].total;
            format += !v[cnt].parsed[SHE_RL_N_STEPS - 1];
        }
    }
    for (int j = 0; cnt && j <= SHE_RL_N_STEPS; j++)
        she_metrics_set(w->s_reward[j], sum[j] / (double)cnt);
    she_metrics_add(w->s_responses, (double)cnt);
    she_metrics_add(w->s_format, (double)format);
    if (w->rm)
        observe_rm(w, v, cnt);
}

/* Rewards groups[lo..lo+n) and publishes them; on failure returns the reason, nothing moved. */
static she_err_t reward_range(rewarding_t *w, int lo, int n, char *errstr, size_t errstr_size) {
    int responses = 0;
    for (int i = lo; i < lo + n; i++)
        responses += w->groups[i].n_responses;
    if (responses > w->n_verdicts) {
        she_step_verdict_t *v = realloc(w->verdicts, sizeof(*v) * (size_t)responses);
        SHE_CHECK_ALLOC(v);
        w->verdicts = v;
        w->n_verdicts = responses;
    }
    SHE_TRY(she_reward_groups(w->rw, w->groups + lo, n, w->out + lo, w->verdicts, errstr,
                              errstr_size));
    int64_t now = she_stream_now_ms();
    for (int i = lo; i < lo + n; i++) {
        w->out[i].created_ms = now;
        char perr[SHE_ERRSTR_SIZE];
        if (publish(w, &w->out[i], perr, sizeof(perr)) != SHE_OK)
            she_stream_dead_letter(w->st, w->msgs[i], perr);
    }
    observe(w, w->out + lo, w->verdicts, n);
    return SHE_OK;
}

static void process(rewarding_t *w, int n) {
    char errstr[SHE_ERRSTR_SIZE];
    if (n > 0 && reward_range(w, 0, n, errstr, sizeof(errstr)) != SHE_OK) {
        she_log_warn(w->lg, "batch of %d refused (%s): rewarding one by one", n, errstr);
        for (int i = 0; i < n; i++)
            if (reward_range(w, i, 1, errstr, sizeof(errstr)) != SHE_OK)
                she_stream_dead_letter(w->st, w->msgs[i], errstr);
    }
    for (int i = 0; i < n; i++) {
        she_msg_clear_rollout_group(&w->groups[i]);
        she_msg_clear_rewarded_group(&w->out[i]);
        she_stream_done(w->st, w->msgs[i]);
        rd_kafka_message_destroy(w->msgs[i]);
    }
}

int she_cmd_reward(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp,
                          "she reward --policy DIR [--rm DIR] [--mode hybrid] [options]",
                          "Consumes rollout groups from she.rollouts in a consumer group, gives\n"
                          "every response its step rewards (hybrid: the reward model judges\n"
                          "steps 1-2, ground truth steps 3-4, the label step 5) and publishes\n"
                          "the rewarded groups to she.rewarded and each group's pass rate to\n"
                          "she.passrate. Stops cleanly on SIGTERM.",
                          reward_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_signals_install();
    char errstr[SHE_ERRSTR_SIZE];
    rewarding_t w = {.lg = env.lg};
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_err_t err = setup(&w, env.conf, reg, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_serve_metrics(she_conf_get(env.conf, "metrics.listen"), reg, env.lg,
                                       &httpd, errstr, sizeof(errstr));
    int status = SHE_EXIT_OK;
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        status = she_cmd_exit_status(err);
    } else {
        she_log_info(env.lg, "rewarding in %s mode, batch %d", she_conf_get(env.conf, "reward.mode"),
                     w.batch);
        int wait_ms = (int)she_conf_get_int(env.conf, "reward.batch.wait.ms");
        while (!she_signals_stop_requested()) {
            int n = 0;
            int64_t deadline = she_stream_now_ms() + wait_ms;
            while (n < w.batch) {
                int64_t left = deadline - she_stream_now_ms();
                rd_kafka_message_t *rkm = she_stream_poll(w.st, left > 0 ? (int)left : 0);
                if (!rkm) {
                    if (left <= 0 || she_signals_stop_requested())
                        break;
                    continue;
                }
                memset(&w.groups[n], 0, sizeof(w.groups[n]));
                if (she_msg_decode_rollout_group(she_stream_codec(w.st), rkm->payload, rkm->len,
                                                 &w.groups[n], errstr, sizeof(errstr)) != SHE_OK) {
                    she_stream_dead_letter(w.st, rkm, errstr);
                    she_stream_done(w.st, rkm);
                    rd_kafka_message_destroy(rkm);
                    continue;
                }
                w.msgs[n++] = rkm;
            }
            /* Groups already taken are finished even on SIGTERM: later offsets may be done. */
            process(&w, n);
            if (she_stream_commit(w.st, 1000, errstr, sizeof(errstr)) != SHE_OK)
                she_log_warn(env.lg, "commit deferred: %s", errstr);
        }
        she_log_info(env.lg, "stopping (SIGTERM)");
    }
    she_httpd_free(httpd);
    she_stream_free(w.st);
    she_rewarder_free(w.rw);
    she_rm_free(w.rm);
    she_model_free(w.rm_model);
    she_tokenizer_free(w.tok);
    she_tokenizer_free(w.rm_tok);
    she_lexicon_free(w.brands);
    she_lexicon_free(w.materials);
    free(w.msgs);
    free(w.groups);
    free(w.out);
    free(w.verdicts);
    she_metrics_free(reg);
    she_cmd_fini(&env);
    return status;
}
