/* train_rl_cmd.c -- `she train-rl`: the offline GRPO / SRPO trainer (paper Algorithm 1).
 *
 * From an SFT (or DPO) checkpoint: split the log by query as SFT did and keep the training
 * part; optionally measure every prompt of the pool under the initial policy (G rollouts each:
 * offline rejection sampling drops the all-right and all-wrong ones, curriculum stages read
 * the pass rates, and with --rm-select the reward model scores the chains for the paper's
 * §5.5 selection); then per step: offer prompts in a seeded per-epoch order to the selector
 * (curriculum, quotas, dynamic difficulty: trainer/selection.h) until --prompts are admitted,
 * roll out G responses each (trainer/rollout.h), reward them (trainer/reward.h), tell the
 * selector how they fared, and update the policy (trainer/learner.h).  Every step's metrics go
 * to OUT/train_log.jsonl; OUT/last is a resumable checkpoint (policy, AdamW, tokenizer and
 * trainer_state.json with the step, the data cursor, the offline pass rates and the selector's
 * state), written atomically (core/ckptdir.h).
 *
 * Exact resume: rollout seeds and the data order are pure functions of (seed, step) and
 * (seed, epoch); the selector's state is saved whole; the reference policy is the init
 * checkpoint; the engine is deterministic for a thread count.  So N steps in one run equal
 * N/2 + N/2 across a restart (tests/test_train_rl_cli.sh checks it).
 *
 * --device cuda[:N] generates the rollouts on that device (trainer/rollout.h copies the policy
 * there after each update); the updates (trainer/learner.h) and the reward model stay on the CPU.
 *
 * Not here: evaluation (`she evaluate --split val` on OUT/last with the same split options),
 * the algorithm (trainer/). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "ckptdir.h"
#include "cmd.h"
#include "commands.h"
#include "dataset.h"
#include "engine.h"
#include "signals.h"
#include "trainer/learner.h"
#include "trainer/reward.h"
#include "trainer/rm.h"
#include "trainer/rollout.h"
#include "trainer/selection.h"
#include "trainer/sft.h"

static const she_conf_def_t rl_defs[] = {
    {"rl.init", SHE_CONF_STR, NULL, "SFT or DPO checkpoint: the initial and the reference policy",
     0, 0, NULL, "init"},
    {"rl.rm", SHE_CONF_STR, "", "reward-model checkpoint (she train-rm; needed by rm, hybrid)", 0,
     0, NULL, "rm"},
    {"rl.data", SHE_CONF_STR, NULL, "labelled training log (CSV or JSON Lines)", 0, 0, NULL,
     "data"},
    {"rl.format", SHE_CONF_ENUM, "auto", "reader format", 0, 0, "auto|csv|jsonl|homedepot",
     "format"},
    {"rl.columns", SHE_CONF_STR, "", "column mapping", 0, 0, NULL, "columns"},
    {"rl.label.map", SHE_CONF_STR, "", "label map (rules or preset)", 0, 0, NULL, "label-map"},
    {"rl.val.fraction", SHE_CONF_DOUBLE, "0.15",
     "share of queries held out (as in SFT: never trained on)", 0, 0.9, NULL, "val-fraction"},
    {"rl.split.seed", SHE_CONF_INT, "1", "seed of the split by query", 0, 9007199254740991.0,
     NULL, "split-seed"},
    {"rl.pool", SHE_CONF_INT, "0", "training prompts used, a seeded subset (0 = all)", 0, 1e9,
     NULL, "pool"},
    {"rl.out", SHE_CONF_STR, NULL, "output directory (last/, train_log.jsonl)", 0, 0, NULL, "out"},
    {"rl.lexicons", SHE_CONF_STR, "../shared/data/homedepot/lexicons",
     "brand/material lexicons for teacher chains, as in SFT ('' = none)", 0, 0, NULL,
     "lexicons"},
    {"rl.lexicon.min.count", SHE_CONF_INT, "0", "keep lexicon rows with cnt_attribute >= this", 0,
     1e9, NULL, NULL},
    {"rl.algo", SHE_CONF_ENUM, "srpo", "advantages: sequence-level (Eq. 4) or step-level (Eq. 6)",
     0, 0, "grpo|srpo", "algo"},
    {"rl.reward", SHE_CONF_ENUM, "hybrid", "step rewards: outcome (S5), sum (GRPO*), rm, hybrid",
     0, 0, "outcome|sum|rm|hybrid", "reward"},
    {"rl.norm", SHE_CONF_ENUM, "group", "reward normalisation before advantages", 0, 0,
     "none|group|batch", "norm"},
    {"rl.gamma", SHE_CONF_DOUBLE, "1", "SRPO step discount", 0, 1, NULL, "gamma"},
    {"rl.adv.clip", SHE_CONF_DOUBLE, "2", "|advantage| clip (0 = off)", 0, 1e6, NULL, "adv-clip"},
    {"rl.weights", SHE_CONF_STR, "0.2,0.2,0.2,0.2,1.0", "reward of a correct step 1..5", 0, 0,
     NULL, "weights"},
    {"rl.format.penalty", SHE_CONF_DOUBLE, "0",
     "subtracted from step 5's reward of a response with a step that does not parse", 0, 100,
     NULL, "format-penalty"},
    {"rl.steps", SHE_CONF_INT, "100", "training steps in all", 0, 1e12, NULL, "steps"},
    {"rl.stop.after", SHE_CONF_INT, "0", "stop this run after so many steps (0 = run to the end)",
     0, 1e12, NULL, "stop-after"},
    {"rl.prompts", SHE_CONF_INT, "8", "prompts per step (rollout batch = prompts x group)", 1,
     4096, NULL, "prompts"},
    {"rl.group", SHE_CONF_INT, "16", "G: responses per prompt", 1, 1024, NULL, "group"},
    {"rl.temperature", SHE_CONF_DOUBLE, "0.99", "rollout temperature", 0.01, 10, NULL,
     "temperature"},
    {"rl.top.k", SHE_CONF_INT, "100", "rollout top-k (0 = off)", 0, 1e9, NULL, "top-k"},
    {"rl.max.prompt", SHE_CONF_INT, "128", "prompt tokens (the item text is cut to fit)", 2, 4096,
     NULL, NULL},
    {"rl.max.new", SHE_CONF_INT, "96", "response tokens", 1, 4096, NULL, "max-new"},
    {"rl.lr", SHE_CONF_DOUBLE, "2e-5", "learning rate", 0, 10, NULL, "lr"},
    {"rl.warmup", SHE_CONF_INT, "0", "linear warm-up steps", 0, 1e9, NULL, NULL},
    {"rl.kl.beta", SHE_CONF_DOUBLE, "0.04", "KL penalty to the reference (0 = none)", 0, 100,
     NULL, "kl-beta"},
    {"rl.clip.eps", SHE_CONF_DOUBLE, "0.2", "PPO ratio clip", 0, 10, NULL, "clip-eps"},
    {"rl.grad.clip", SHE_CONF_DOUBLE, "1.0", "global gradient-norm clip (0 = off)", 0, 1e6, NULL,
     NULL},
    {"rl.weight.decay", SHE_CONF_DOUBLE, "0", "AdamW weight decay on matrices", 0, 10, NULL,
     NULL},
    {"rl.beta2", SHE_CONF_DOUBLE, "0.95", "AdamW beta2", 0, 0.99999, NULL, NULL},
    {"rl.micro.batch", SHE_CONF_INT, "16", "rows per forward/backward", 1, 4096, NULL, NULL},
    {"rl.mini.batches", SHE_CONF_INT, "2", "optimizer steps per training step", 1, 4096, NULL,
     "mini-batches"},
    {"rl.epochs", SHE_CONF_INT, "1", "passes over each step's rollouts", 1, 64, NULL, NULL},
    {"rl.seed", SHE_CONF_INT, "1", "seed of the data order, rollouts and selector", 0,
     9007199254740991.0, NULL, "seed"},
    {"rl.reject", SHE_CONF_BOOL, "true",
     "offline rejection sampling: drop prompts the initial policy gets all right or all wrong",
     0, 0, NULL, "reject"},
    {"rl.offline.group", SHE_CONF_INT, "0", "rollouts per prompt when measuring the pool (0 = G)",
     0, 1024, NULL, NULL},
    {"rl.difficulty", SHE_CONF_BOOL, "true", "dynamic difficulty sampling", 0, 0, NULL,
     "difficulty"},
    {"rl.difficulty.lo", SHE_CONF_DOUBLE, "0.01", "lowest recent pass rate admitted at the widest",
     0, 1, NULL, NULL},
    {"rl.difficulty.hi", SHE_CONF_DOUBLE, "0.90", "highest recent pass rate admitted at the widest",
     0, 1, NULL, NULL},
    {"rl.diverse", SHE_CONF_STR, "",
     "diverse sampling: balance by these, e.g. domain+query_type+grade ('' = off)", 0, 0, NULL,
     "diverse"},
    {"rl.curriculum", SHE_CONF_STR, "",
     "stages NAME:LO-HI[:STEPS[:BALANCE]],... on the offline pass rate ('' = one stage, all)", 0,
     0, NULL, "curriculum"},
    {"rl.rm.select", SHE_CONF_BOOL, "false",
     "reward-model sample selection (paper 5.5): admit prompts whose initial chains the reward "
     "model scores inside [rm.lo, rm.hi] (needs --rm)", 0, 0, NULL, "rm-select"},
    {"rl.rm.lo", SHE_CONF_DOUBLE, "0", "lowest admitted score: mean P([Correct]) over steps 1-4 of "
     "the prompt's offline rollouts", 0, 1, NULL, NULL},
    {"rl.rm.hi", SHE_CONF_DOUBLE, "0.9", "highest admitted score (above it the reward model finds "
     "no process error to learn from)", 0, 1, NULL, NULL},
    {"rl.rm.batch", SHE_CONF_INT, "64", "reward-model questions generated together", 1, 4096,
     NULL, NULL},
    {"rl.save.every", SHE_CONF_INT, "25", "save OUT/last every N steps (and at the end)", 1, 1e12,
     NULL, "save-every"},
    {"rl.device", SHE_CONF_STR, "cpu",
     "where the rollouts are generated and the reward model judges: cpu, cuda or cuda:N, "
     "optionally /tf32 or /bf16 GEMMs (the updates stay on the CPU)", 0, 0, NULL, "device"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* Keys whose change alters what resumed steps compute (warned about on resume). */
static const char *const state_keys[] = {
    "rl.init", "rl.rm", "rl.data", "rl.val.fraction", "rl.split.seed", "rl.pool", "rl.algo",
    "rl.reward", "rl.norm", "rl.gamma", "rl.adv.clip", "rl.weights", "rl.format.penalty",
    "rl.steps", "rl.prompts",
    "rl.group", "rl.temperature", "rl.top.k", "rl.max.new", "rl.lr", "rl.kl.beta", "rl.clip.eps",
    "rl.mini.batches", "rl.epochs", "rl.seed", "rl.reject", "rl.difficulty", "rl.diverse",
    "rl.curriculum", "rl.rm.select", "rl.rm.lo", "rl.rm.hi", NULL};

typedef struct rl_run {
    she_conf_t *conf;
    she_log_t *lg;
    const char *out;
    char last_dir[4096], log_path[4096];
    she_lexicon_t *brands, *materials;
    she_dataset_t *train;
    int *pool;           /* (n_pool) indices into train */
    int n_pool;
    float *offline_pass; /* (n_pool) initial policy's pass rate, NAN unmeasured */
    float *rm_score;     /* (n_pool) reward-model score of its offline rollouts, NAN unscored */
    uint8_t *keep;       /* (n_pool) 1 unless offline rejection dropped it */
    int offline_done;
    she_sel_counts_t offline_counts;
    she_tokenizer_t *tok, *rm_tok;
    she_model_t *policy, *ref, *rm_model;
    she_adamw_t *opt;
    she_rm_t *rm;
    she_rewarder_t *rw;
    she_rollout_t *ro;
    she_learner_t *ln;
    she_selector_t *sel;
    she_learner_config_t lc;
    she_lr_schedule_t sched;
    int P, G;
    uint64_t seed;
    long long step, total_steps, epoch, cursor, offered_total, admitted_total;
    int *order;          /* (n_pool) pool positions of the current epoch */
    long long order_epoch;
    FILE *log;
} rl_run_t;

static uint64_t mix2(uint64_t a, uint64_t b) { return she_hash_mix(a ^ she_hash_mix(b)); }

/* ---- options ---- */

static she_err_t parse_balance(const char *s, unsigned *mask, char *errstr, size_t errstr_size) {
    *mask = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
        if (strcmp(t, "domain") == 0)
            *mask |= SHE_SEL_DIM_DOMAIN;
        else if (strcmp(t, "query_type") == 0)
            *mask |= SHE_SEL_DIM_QUERY_TYPE;
        else if (strcmp(t, "grade") == 0)
            *mask |= SHE_SEL_DIM_GRADE;
        else
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "balance '%s': expected domain, query_type or grade joined by +", t);
    }
    return SHE_OK;
}

/* "easy:0.5-1:40:grade,hard:0-0.5" -> stages. */
static she_err_t parse_curriculum(const char *spec, unsigned balance, she_selector_config_t *sc,
                                  char *errstr, size_t errstr_size) {
    if (!spec[0]) {
        sc->stages[0].balance = balance;
        return SHE_OK;
    }
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", spec);
    sc->n_stages = 0;
    for (char *s1 = NULL, *st = strtok_r(buf, ",", &s1); st; st = strtok_r(NULL, ",", &s1)) {
        if (sc->n_stages == SHE_SEL_MAX_STAGES)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "rl.curriculum: more than %d stages", SHE_SEL_MAX_STAGES);
        she_sel_stage_t *g = &sc->stages[sc->n_stages++];
        memset(g, 0, sizeof(*g));
        g->balance = balance;
        char *f[4] = {0};
        int nf = 0;
        for (char *p = st; nf < 4;) {
            f[nf++] = p;
            char *c = strchr(p, ':');
            if (!c)
                break;
            *c = '\0';
            p = c + 1;
        }
        float lo, hi;
        if (nf < 2 || !f[0][0] || sscanf(f[1], "%f-%f", &lo, &hi) != 2 || lo < 0 || hi > 1 ||
            lo > hi)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "rl.curriculum: stage '%s': expected NAME:LO-HI[:STEPS[:BALANCE]]",
                            f[0]);
        snprintf(g->name, sizeof(g->name), "%s", f[0]);
        g->offline_lo = lo;
        g->offline_hi = hi;
        if (nf >= 3 && f[2][0])
            g->max_steps = atoll(f[2]);
        if (nf >= 4 && f[3][0])
            SHE_TRY(parse_balance(f[3], &g->balance, errstr, errstr_size));
    }
    return SHE_OK;
}

static int curriculum_reads_offline(const she_selector_config_t *sc) {
    for (int i = 0; i < sc->n_stages; i++)
        if (sc->stages[i].offline_lo > 0 || sc->stages[i].offline_hi < 1)
            return 1;
    return 0;
}

/* ---- state ---- */

static json_t *float_array(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, isnan(v[i]) ? json_null() : json_real(v[i]));
    return a;
}

static she_err_t write_state(const rl_run_t *r, const char *dir, char *errstr,
                             size_t errstr_size) {
    json_t *st = json_object();
    json_object_set_new(st, "step", json_integer(r->step));
    json_object_set_new(st, "total_steps", json_integer(r->total_steps));
    json_object_set_new(st, "epoch", json_integer(r->epoch));
    json_object_set_new(st, "cursor", json_integer(r->cursor));
    json_object_set_new(st, "offered", json_integer(r->offered_total));
    json_object_set_new(st, "admitted", json_integer(r->admitted_total));
    json_object_set_new(st, "n_pool", json_integer(r->n_pool));
    json_object_set_new(st, "offline_done", json_boolean(r->offline_done));
    json_object_set_new(st, "offline_pass", float_array(r->offline_pass, r->n_pool));
    json_object_set_new(st, "rm_score", float_array(r->rm_score, r->n_pool));
    json_t *keep = json_array();
    for (int i = 0; i < r->n_pool; i++)
        json_array_append_new(keep, json_integer(r->keep[i]));
    json_object_set_new(st, "keep", keep);
    json_t *oc = json_object();
    for (int k = 0; k < SHE_SEL_REASON__COUNT; k++)
        if (r->offline_counts.n[k])
            json_object_set_new(oc, she_sel_reason_name(k), json_integer(r->offline_counts.n[k]));
    json_object_set_new(st, "offline_counts", oc);
    json_t *ss = she_selector_state_json(r->sel);
    SHE_CHECK_ALLOC(ss);
    json_object_set_new(st, "selector", ss);
    json_t *cf = json_object();
    for (int i = 0; state_keys[i]; i++) {
        const char *v = she_conf_get(r->conf, state_keys[i]);
        json_object_set_new(cf, state_keys[i], json_string(v ? v : ""));
    }
    json_object_set_new(st, "config", cf);
    char path[4300];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    int rc = json_dump_file(st, path, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(st);
    if (rc != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", path);
    return SHE_OK;
}

static she_err_t save_last(const rl_run_t *r, char *errstr, size_t errstr_size) {
    char tmp[4200], path[4300];
    SHE_TRY(she_ckptdir_begin(r->last_dir, tmp, sizeof(tmp), errstr, errstr_size));
    she_err_t err = she_model_write_files(r->policy, r->opt, tmp, errstr, errstr_size);
    snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
    if (err == SHE_OK)
        err = she_tokenizer_save(r->tok, path, errstr, errstr_size);
    if (err == SHE_OK)
        err = write_state(r, tmp, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, r->last_dir, errstr, errstr_size);
    if (err != SHE_OK)
        she_ckptdir_abort(tmp);
    return err;
}

static she_err_t read_state(rl_run_t *r, char *errstr, size_t errstr_size) {
    char path[4200];
    snprintf(path, sizeof(path), "%s/trainer_state.json", r->last_dir);
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    if (!st)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s:%d: %s", path, je.line, je.text);
    she_err_t err = SHE_OK;
    json_t *op = json_object_get(st, "offline_pass"), *kp = json_object_get(st, "keep");
    json_t *sel = json_object_get(st, "selector");
    if (!json_is_integer(json_object_get(st, "step")) ||
        !json_is_integer(json_object_get(st, "epoch")) ||
        !json_is_integer(json_object_get(st, "cursor")) || !json_is_array(op) ||
        !json_is_array(kp) || !json_is_object(sel)) {
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                       "%s: step, epoch, cursor, offline_pass, keep and selector are required",
                       path);
    } else if ((int)json_array_size(op) != r->n_pool || (int)json_array_size(kp) != r->n_pool) {
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                       "%s: a pool of %zu prompts, this run has %d (other data or --pool?)", path,
                       json_array_size(op), r->n_pool);
    } else {
        r->step = json_integer_value(json_object_get(st, "step"));
        r->epoch = json_integer_value(json_object_get(st, "epoch"));
        r->cursor = json_integer_value(json_object_get(st, "cursor"));
        r->offered_total = json_integer_value(json_object_get(st, "offered"));
        r->admitted_total = json_integer_value(json_object_get(st, "admitted"));
        r->offline_done = json_is_true(json_object_get(st, "offline_done"));
        json_t *rs = json_object_get(st, "rm_score");
        for (int i = 0; i < r->n_pool; i++) {
            json_t *v = json_array_get(op, i), *w = json_array_get(rs, i);
            r->offline_pass[i] = json_is_number(v) ? (float)json_number_value(v) : NAN;
            r->rm_score[i] = json_is_number(w) ? (float)json_number_value(w) : NAN;
            r->keep[i] = (uint8_t)json_integer_value(json_array_get(kp, i));
        }
        json_t *oc = json_object_get(st, "offline_counts");
        for (int k = 0; k < SHE_SEL_REASON__COUNT; k++)
            r->offline_counts.n[k] =
                json_integer_value(json_object_get(oc, she_sel_reason_name(k)));
        err = she_selector_load_state(r->sel, sel, errstr, errstr_size);
        json_t *cf = json_object_get(st, "config");
        const char *key;
        json_t *v;
        json_object_foreach(cf, key, v) {
            const char *now = she_conf_get(r->conf, key);
            if (json_is_string(v) && strcmp(json_string_value(v), now ? now : "") != 0)
                she_log_warn(r->lg, "resuming with %s=%s, the checkpoint was trained with %s",
                             key, now ? now : "", json_string_value(v));
        }
    }
    json_decref(st);
    return err;
}

/* ---- set-up ---- */

static she_err_t load_data(rl_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    she_reader_opts_t ro = {.format = she_conf_get(c, "rl.format"),
                            .columns = she_conf_get(c, "rl.columns"),
                            .label_map = she_conf_get(c, "rl.label.map")};
    const char *path = she_conf_get(c, "rl.data");
    she_dataset_t *all = she_dataset_new();
    she_reader_stats_t st;
    she_err_t err = she_dataset_load(all, path, &ro, &st, errstr, errstr_size);
    if (err == SHE_OK) {
        she_log_info(r->lg, "%s: %lld rows, %lld read, %lld bad", path, st.n_rows, st.n_ok,
                     st.n_bad);
        r->train = she_dataset_new();
        she_dataset_split_by_query(all, she_conf_get_double(c, "rl.val.fraction"),
                                   (uint64_t)she_conf_get_int(c, "rl.split.seed"), r->train,
                                   NULL);
    }
    she_dataset_free(all);
    SHE_TRY(err);
    /* the pool: labelled training rows, a seeded subset when --pool is given */
    int n = 0;
    r->pool = malloc(sizeof(int) * (r->train->n ? r->train->n : 1));
    SHE_CHECK_ALLOC(r->pool);
    for (size_t i = 0; i < r->train->n; i++)
        if (r->train->samples[i].grade != SHE_GRADE_UNKNOWN)
            r->pool[n++] = (int)i;
    long long cap = she_conf_get_int(c, "rl.pool");
    if (cap > 0 && cap < n) {
        she_rng_t rng;
        she_rng_seed(&rng, mix2(r->seed, 0x9001u));
        she_shuffle_ints(r->pool, (size_t)n, &rng);
        n = (int)cap;
        /* back in file order, so the pool does not depend on how it was drawn */
        for (int i = 1; i < n; i++)
            for (int k = i; k > 0 && r->pool[k - 1] > r->pool[k]; k--) {
                int t = r->pool[k];
                r->pool[k] = r->pool[k - 1];
                r->pool[k - 1] = t;
            }
    }
    if (n == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: no labelled training rows",
                        path);
    r->n_pool = n;
    r->offline_pass = malloc(sizeof(float) * n);
    r->rm_score = malloc(sizeof(float) * n);
    r->keep = malloc((size_t)n);
    r->order = malloc(sizeof(int) * n);
    SHE_CHECK_ALLOC(r->offline_pass);
    SHE_CHECK_ALLOC(r->rm_score);
    SHE_CHECK_ALLOC(r->keep);
    SHE_CHECK_ALLOC(r->order);
    for (int i = 0; i < n; i++) {
        r->offline_pass[i] = NAN;
        r->rm_score[i] = NAN;
        r->keep[i] = 1;
    }
    r->order_epoch = -1;
    return SHE_OK;
}

static she_err_t load_models(rl_run_t *r, int resume, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    const char *init = she_conf_get(c, "rl.init");
    int max_seq = (int)she_conf_get_int(c, "rl.max.prompt") + (int)she_conf_get_int(c, "rl.max.new");
    int mb = r->lc.micro_batch;
    char path[4200];
    const char *src = resume ? r->last_dir : init;
    snprintf(path, sizeof(path), "%s/tokenizer.json", src);
    SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
    SHE_TRY(she_model_load(src, mb, max_seq, &r->policy, resume ? &r->opt : NULL, errstr,
                           errstr_size));
    if (!r->opt)
        r->opt = she_adamw_new(r->policy->n_params);
    if (r->lc.loss.kl_beta > 0)
        SHE_TRY(she_model_load(init, mb, max_seq, &r->ref, NULL, errstr, errstr_size));
    she_reward_mode_t mode = (she_reward_mode_t)she_reward_mode_parse(she_conf_get(c, "rl.reward"));
    if (mode == SHE_REWARD_MODE_RM || mode == SHE_REWARD_MODE_HYBRID ||
        she_conf_get_bool(c, "rl.rm.select")) {
        const char *rmdir = she_conf_get(c, "rl.rm");
        if (!rmdir[0] && (mode == SHE_REWARD_MODE_RM || mode == SHE_REWARD_MODE_HYBRID))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "--reward %s needs --rm (a she train-rm checkpoint)",
                            she_reward_mode_name(mode));
        if (!rmdir[0])
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "--rm-select needs --rm (a she train-rm checkpoint)");
        SHE_TRY(she_ckptdir_verify(rmdir, errstr, errstr_size));
        snprintf(path, sizeof(path), "%s/tokenizer.json", rmdir);
        SHE_TRY(she_tokenizer_load(path, &r->rm_tok, errstr, errstr_size));
        she_rm_config_t rc = she_rm_defaults();
        int rb = (int)she_conf_get_int(c, "rl.rm.batch");
        SHE_TRY(she_model_load(rmdir, rb, she_rm_max_seq(&rc), &r->rm_model, NULL, errstr,
                               errstr_size));
        she_device_t dev;
        SHE_TRY(she_device_select(she_conf_get(c, "rl.device"), &dev, errstr, errstr_size));
        SHE_TRY(she_rm_new(r->rm_model, r->rm_tok, &rc, rb, &dev, &r->rm, errstr, errstr_size));
    }
    she_reward_config_t rcfg = she_reward_defaults();
    rcfg.mode = mode;
    SHE_TRY(she_reward_weights_parse("rl.weights", she_conf_get(c, "rl.weights"), rcfg.weight,
                                     errstr, errstr_size));
    rcfg.format_penalty = (float)she_conf_get_double(c, "rl.format.penalty");
    SHE_TRY(she_rewarder_new(&rcfg, r->tok, r->rm, r->brands, r->materials, &r->rw, errstr,
                             errstr_size));
    she_rollout_config_t ro = she_rollout_defaults();
    ro.group_size = r->G;
    ro.temperature = (float)she_conf_get_double(c, "rl.temperature");
    ro.top_k = (int)she_conf_get_int(c, "rl.top.k");
    ro.max_new_tokens = (int)she_conf_get_int(c, "rl.max.new");
    ro.max_prompt_tokens = (int)she_conf_get_int(c, "rl.max.prompt");
    ro.device = she_conf_get(c, "rl.device");
    SHE_TRY(she_rollout_new(r->policy, r->tok, &ro, r->P, &r->ro, errstr, errstr_size));
    SHE_TRY(she_learner_new(r->policy, r->opt, r->ref, &r->lc, &r->ln, errstr, errstr_size));
    return SHE_OK;
}

static she_sel_item_t item_of(const rl_run_t *r, int p) {
    const she_sample_t *s = &r->train->samples[r->pool[p]];
    return (she_sel_item_t){.id = s->sample_id, .domain = s->domain, .query_type = s->query_type,
                            .grade = s->grade, .offline_pass = r->offline_pass[p],
                            .rm_score = r->rm_score[p]};
}

/* Pass flags of a rewarded-or-not group: the parsed grade equals the label. */
static int group_passes(const rl_run_t *r, const she_rollout_group_t *g, uint8_t *pass) {
    int n = 0;
    she_sft_special_t sp;
    char e[SHE_ERRSTR_SIZE];
    SHE_ASSERT(she_sft_special_ids(r->tok, &sp, e, sizeof(e)) == SHE_OK);
    for (int k = 0; k < g->n_responses; k++) {
        she_cot_parsed_t parsed;
        pass[k] = she_response_parse(r->tok, sp.eos, &g->responses[k], &parsed, NULL, NULL, e,
                                     sizeof(e)) == SHE_OK &&
                  parsed.ok[SHE_COT_STEP_GRADE - 1] && parsed.cot.grade == g->sample.grade;
        n += pass[k];
    }
    return n;
}

/* Offline measurement of the pool under the initial policy (rejection sampling, curriculum). */
static she_err_t measure_pool(rl_run_t *r, int G_off, int reject, int rm_select, char *errstr,
                              size_t errstr_size) {
    double t0 = she_now_s();
    she_rollout_t *ro = NULL;
    she_rewarder_t *judge = NULL; /* the reward model on steps 1-4, for --rm-select */
    if (rm_select) {
        she_reward_config_t jc = she_reward_defaults();
        jc.mode = SHE_REWARD_MODE_RM;
        SHE_TRY(she_rewarder_new(&jc, r->tok, r->rm, r->brands, r->materials, &judge, errstr,
                                 errstr_size));
    }
    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = G_off;
    rc.temperature = (float)she_conf_get_double(r->conf, "rl.temperature");
    rc.top_k = (int)she_conf_get_int(r->conf, "rl.top.k");
    rc.max_new_tokens = (int)she_conf_get_int(r->conf, "rl.max.new");
    rc.max_prompt_tokens = (int)she_conf_get_int(r->conf, "rl.max.prompt");
    rc.device = she_conf_get(r->conf, "rl.device");
    int per = r->P * r->G / G_off > 0 ? r->P * r->G / G_off : 1;
    SHE_TRY(she_rollout_new(r->policy, r->tok, &rc, per, &ro, errstr, errstr_size));
    uint8_t *pass = malloc((size_t)r->n_pool * G_off);
    she_rollout_group_t *groups = calloc(per, sizeof(*groups));
    const she_sample_t **batch = malloc(sizeof(*batch) * per);
    she_step_verdict_t *v = malloc(sizeof(*v) * (size_t)per * G_off);
    SHE_CHECK_ALLOC(v);
    SHE_CHECK_ALLOC(pass);
    SHE_CHECK_ALLOC(groups);
    SHE_CHECK_ALLOC(batch);
    she_err_t err = SHE_OK;
    for (int p0 = 0; p0 < r->n_pool && err == SHE_OK; p0 += per) {
        int n = r->n_pool - p0 < per ? r->n_pool - p0 : per;
        for (int i = 0; i < n; i++)
            batch[i] = &r->train->samples[r->pool[p0 + i]];
        err = she_rollout_generate(ro, batch, n, 0, mix2(r->seed, 0x0ff1u + (uint64_t)p0), groups,
                                   errstr, errstr_size);
        if (err == SHE_OK && judge)
            err = she_reward_verdicts(judge, groups, n, v, errstr, errstr_size);
        for (int i = 0; i < n && judge && err == SHE_OK; i++) {
            /* mean P([Correct]) over the judged steps; an unparsable step counts 0 */
            double sum = 0;
            for (int k = 0; k < G_off; k++)
                for (int j = 0; j < SHE_RM_N_STEPS; j++)
                    sum += v[i * G_off + k].rm[j] >= 0 ? v[i * G_off + k].rm[j] : 0.0;
            r->rm_score[p0 + i] = (float)(sum / (G_off * SHE_RM_N_STEPS));
        }
        for (int i = 0; i < n && err == SHE_OK; i++) {
            group_passes(r, &groups[i], pass + (size_t)(p0 + i) * G_off);
            she_msg_clear_rollout_group(&groups[i]);
        }
        if (isatty(2))
            fprintf(stderr, "\rmeasuring the pool under the initial policy: %d/%d", p0 + n,
                    r->n_pool);
    }
    if (isatty(2))
        fputc('\n', stderr);
    if (err == SHE_OK) {
        int kept = she_sel_reject(pass, r->n_pool, G_off, r->keep, r->offline_pass,
                                  &r->offline_counts);
        if (!reject)
            memset(r->keep, 1, (size_t)r->n_pool);
        else if (kept == 0)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "offline rejection sampling kept no prompt of %d", r->n_pool);
        she_log_info(r->lg, "pool of %d prompts measured in %.1f s (%d rollouts each): %lld mixed, "
                     "%lld all right, %lld all wrong; %s",
                     r->n_pool, she_now_s() - t0, G_off, (long long)r->offline_counts.n[SHE_SEL_KEEP_MIXED],
                     (long long)r->offline_counts.n[SHE_SEL_DROP_ALL_CORRECT],
                     (long long)r->offline_counts.n[SHE_SEL_DROP_ALL_WRONG],
                     reject ? "keeping the mixed ones" : "rejection off, keeping all");
        r->offline_done = 1;
    }
    free(pass);
    free(groups);
    free(batch);
    free(v);
    she_rollout_free(ro);
    she_rewarder_free(judge);
    return err;
}

static she_err_t setup(rl_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    snprintf(r->last_dir, sizeof(r->last_dir), "%s/last", r->out);
    snprintf(r->log_path, sizeof(r->log_path), "%s/train_log.jsonl", r->out);
    if (mkdir(r->out, 0777) != 0 && errno != EEXIST)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "mkdir %s: %s", r->out, strerror(errno));
    const char *lex = she_conf_get(c, "rl.lexicons");
    if (lex[0]) {
        if (she_is_dir(lex))
            SHE_TRY(she_sft_load_lexicons(lex, (int)she_conf_get_int(c, "rl.lexicon.min.count"),
                                          &r->brands, &r->materials, errstr, errstr_size));
        else if (strcmp(she_conf_source(c, "rl.lexicons"), "default") == 0)
            she_log_warn(r->lg, "no lexicon directory %s: teacher chains read no brands or "
                         "materials", lex);
        else
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no lexicon directory %s",
                            lex);
    }
    SHE_TRY(load_data(r, errstr, errstr_size));

    she_selector_config_t sc = she_selector_defaults();
    sc.seed = mix2(r->seed, 0x5e1u);
    sc.difficulty = she_conf_get_bool(c, "rl.difficulty");
    sc.rm_select = she_conf_get_bool(c, "rl.rm.select");
    sc.rm_lo = (float)she_conf_get_double(c, "rl.rm.lo");
    sc.rm_hi = (float)she_conf_get_double(c, "rl.rm.hi");
    sc.lo_min = (float)she_conf_get_double(c, "rl.difficulty.lo");
    sc.hi_max = (float)she_conf_get_double(c, "rl.difficulty.hi");
    if (sc.lo0 < sc.lo_min)
        sc.lo0 = sc.lo_min;
    if (sc.hi0 > sc.hi_max)
        sc.hi0 = sc.hi_max;
    unsigned balance;
    SHE_TRY(parse_balance(she_conf_get(c, "rl.diverse"), &balance, errstr, errstr_size));
    SHE_TRY(parse_curriculum(she_conf_get(c, "rl.curriculum"), balance, &sc, errstr,
                             errstr_size));
    r->sel = she_selector_new(&sc, errstr, errstr_size);
    if (!r->sel)
        return SHE_ERR_CONFIG;

    int resume = she_is_dir(r->last_dir);
    if (resume) {
        SHE_TRY(she_ckptdir_verify(r->last_dir, errstr, errstr_size));
        she_log_info(r->lg, "resuming from %s", r->last_dir);
    } else {
        SHE_TRY(she_ckptdir_verify(she_conf_get(c, "rl.init"), errstr, errstr_size));
    }
    SHE_TRY(load_models(r, resume, errstr, errstr_size));
    if (resume)
        SHE_TRY(read_state(r, errstr, errstr_size));
    she_log_info(r->lg, "policy: %d layers, hidden %d, vocab %d, %.2fM parameters; %s with %s "
                 "rewards, %s normalisation; %d prompts x %d rollouts per step; pool %d prompts",
                 r->policy->cfg.n_layers, r->policy->cfg.hidden_size, r->policy->cfg.vocab_size,
                 (double)r->policy->n_params / 1e6, she_conf_get(c, "rl.algo"),
                 she_conf_get(c, "rl.reward"), she_conf_get(c, "rl.norm"), r->P, r->G, r->n_pool);

    int reject = she_conf_get_bool(c, "rl.reject");
    if (!r->offline_done && r->total_steps > 0 &&
        (reject || sc.rm_select || curriculum_reads_offline(&sc))) {
        int G_off = (int)she_conf_get_int(c, "rl.offline.group");
        SHE_TRY(measure_pool(r, G_off > 0 ? G_off : r->G, reject, sc.rm_select, errstr,
                             errstr_size));
    }
    r->log = fopen(r->log_path, "a");
    if (!r->log)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot open %s: %s", r->log_path,
                        strerror(errno));
    return SHE_OK;
}

static void run_free(rl_run_t *r) {
    she_lexicon_free(r->brands);
    she_lexicon_free(r->materials);
    she_dataset_free(r->train);
    free(r->pool);
    free(r->offline_pass);
    free(r->rm_score);
    free(r->keep);
    free(r->order);
    she_learner_free(r->ln);
    she_rollout_free(r->ro);
    she_rewarder_free(r->rw);
    she_rm_free(r->rm);
    she_selector_free(r->sel);
    she_model_free(r->policy);
    she_model_free(r->ref);
    she_model_free(r->rm_model);
    she_adamw_free(r->opt);
    she_tokenizer_free(r->tok);
    she_tokenizer_free(r->rm_tok);
    if (r->log)
        fclose(r->log);
}

/* ---- one step ---- */

/* The kept pool positions of an epoch in a seeded order; returns how many. */
static int epoch_order(rl_run_t *r, long long epoch) {
    int n = 0;
    for (int i = 0; i < r->n_pool; i++)
        if (r->keep[i])
            r->order[n++] = i;
    she_rng_t rng;
    she_rng_seed(&rng, mix2(r->seed, 0xe90c0000u + (uint64_t)epoch));
    she_shuffle_ints(r->order, (size_t)n, &rng);
    r->order_epoch = epoch;
    return n;
}

typedef struct pick {
    int *pos;     /* (P) pool positions admitted */
    int n;
    long offered;
    int done;     /* the curriculum has ended */
} pick_t;

/* Offers prompts in the epoch order until P are admitted or retry_after + 1 epochs' worth was
 * offered in this step: a prompt the difficulty band skips is admitted again after retry_after
 * skips, so when the only prompts the curriculum stage lets through have just been measured
 * out of the band (an "easier" stage after its few easy prompts were used), admissions resume
 * within that many passes instead of the run failing after one. */
static void pick_prompts(rl_run_t *r, pick_t *pk) {
    pk->n = 0;
    pk->offered = 0;
    pk->done = 0;
    int n_kept = epoch_order(r, r->epoch);
    she_selector_config_t sc;
    she_selector_get_config(r->sel, &sc);
    long budget = (long)n_kept * (sc.retry_after + 1);
    while (pk->n < r->P && pk->offered < budget) {
        if (r->cursor >= n_kept) {
            r->epoch++;
            r->cursor = 0;
            n_kept = epoch_order(r, r->epoch);
        }
        int p = r->order[r->cursor++];
        she_sel_item_t it = item_of(r, p);
        she_sel_reason_t why = she_selector_decide(r->sel, &it);
        pk->offered++;
        if (why == SHE_SEL_SKIP_CURRICULUM_DONE) {
            pk->done = 1;
            return;
        }
        if (she_sel_admitted(why))
            pk->pos[pk->n++] = p;
    }
}

static void progress(const rl_run_t *r, int tty, double reward, double pass, double eta) {
    long t = eta > 0 && eta < 1e9 ? (long)(eta + 0.5) : 0;
    int w = 20, fill = r->total_steps ? (int)(w * r->step / r->total_steps) : w;
    char bar[32];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    fprintf(stderr, "%s[%s] step %lld/%lld  reward %.3f  pass %.3f  ETA %ldm%02lds%s",
            tty ? "\r" : "", bar, r->step, r->total_steps, reward, pass, t / 60, t % 60,
            tty ? "  " : "\n");
    fflush(stderr);
}

/* Fraction of judged steps 1..4 where the reward model's verdict (P >= 0.5) agrees with the
 * step ground truth; per step. */
static void rm_agreement(const she_step_verdict_t *v, int n, double acc[4], long cnt[4]) {
    long right[4] = {0};
    for (int j = 0; j < 4; j++)
        cnt[j] = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 4; j++)
            if (v[i].rm[j] >= 0 && v[i].gt[j] >= 0) {
                cnt[j]++;
                right[j] += (v[i].rm[j] >= 0.5f) == (v[i].gt[j] == 1);
            }
    for (int j = 0; j < 4; j++)
        acc[j] = cnt[j] ? (double)right[j] / cnt[j] : NAN;
}

static void jnum(json_t *o, const char *k, double v) {
    json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null());
}

static she_err_t train(rl_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    long long stop_after = she_conf_get_int(c, "rl.stop.after");
    long long save_every = she_conf_get_int(c, "rl.save.every");
    long long end = r->total_steps;
    if (stop_after > 0 && r->step + stop_after < end)
        end = r->step + stop_after;
    int tty = isatty(2);
    pick_t pk = {.pos = malloc(sizeof(int) * r->P)};
    const she_sample_t **batch = malloc(sizeof(*batch) * r->P);
    she_rollout_group_t *groups = calloc(r->P, sizeof(*groups));
    she_rewarded_group_t *rewarded = calloc(r->P, sizeof(*rewarded));
    she_step_verdict_t *verdicts = malloc(sizeof(*verdicts) * r->P * r->G);
    SHE_CHECK_ALLOC(pk.pos);
    SHE_CHECK_ALLOC(batch);
    SHE_CHECK_ALLOC(groups);
    SHE_CHECK_ALLOC(rewarded);
    SHE_CHECK_ALLOC(verdicts);
    double t_start = she_now_s(), step_s_sum = 0;
    long long run_steps = 0;
    she_err_t err = SHE_OK;
    while (r->step < end && err == SHE_OK) {
        if (she_signals_stop_requested()) {
            she_log_warn(r->lg, "stop requested at step %lld: saving %s", r->step, r->last_dir);
            break;
        }
        double t0 = she_now_s();
        pick_prompts(r, &pk);
        if (pk.done) {
            she_log_info(r->lg, "the curriculum's last stage has ended at step %lld", r->step);
            r->total_steps = r->step;
            break;
        }
        if (pk.n == 0) {
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "step %lld: no prompt admitted after %ld offers", r->step, pk.offered);
            break;
        }
        r->offered_total += pk.offered;
        r->admitted_total += pk.n;
        for (int i = 0; i < pk.n; i++)
            batch[i] = &r->train->samples[r->pool[pk.pos[i]]];
        err = she_rollout_generate(r->ro, batch, pk.n, r->step, mix2(r->seed, (uint64_t)r->step),
                                   groups, errstr, errstr_size);
        if (err != SHE_OK)
            break;
        double t1 = she_now_s();
        err = she_reward_groups(r->rw, groups, pk.n, rewarded, verdicts, errstr, errstr_size);
        if (err != SHE_OK) {
            for (int i = 0; i < pk.n; i++)
                she_msg_clear_rollout_group(&groups[i]);
            break;
        }
        double t2 = she_now_s();
        for (int i = 0; i < pk.n; i++) {
            int n_pass = 0;
            for (int k = 0; k < rewarded[i].n_rewards; k++)
                n_pass += rewarded[i].rewards[k].pass != 0;
            she_selector_observe(r->sel, rewarded[i].rollout.sample_id, n_pass, r->G);
        }
        float lr = she_lr_at(&r->sched, r->step);
        she_learner_stats_t ls;
        err = she_learner_step(r->ln, rewarded, pk.n, lr, &ls, errstr, errstr_size);
        double t3 = she_now_s();
        /* what the step measured, before the groups go */
        long n_resp = (long)pk.n * r->G, len_sum = 0, trunc = 0, parsed[SHE_RL_N_STEPS] = {0};
        for (int i = 0; i < pk.n; i++)
            for (int k = 0; k < r->G; k++) {
                len_sum += rewarded[i].rollout.responses[k].n_tokens;
                trunc += rewarded[i].rollout.responses[k].truncated != 0;
            }
        for (long i = 0; i < n_resp; i++)
            for (int j = 0; j < SHE_RL_N_STEPS; j++)
                parsed[j] += verdicts[i].parsed[j];
        double rm_acc[4];
        long rm_cnt[4];
        rm_agreement(verdicts, (int)n_resp, rm_acc, rm_cnt);
        for (int i = 0; i < pk.n; i++)
            she_msg_clear_rewarded_group(&rewarded[i]);
        if (err != SHE_OK)
            break;
        /* the band and stage this step's prompts were chosen under, before the step ends */
        she_selector_status_t ss;
        she_selector_status(r->sel, &ss);
        char stage_name[SHE_SEL_STAGE_NAME];
        snprintf(stage_name, sizeof(stage_name), "%s", ss.stage_name);
        she_selector_end_step(r->sel, ls.reward.pass_rate);
        r->step++;
        run_steps++;
        step_s_sum += t3 - t0;

        json_t *o = json_object();
        json_object_set_new(o, "step", json_integer(r->step));
        json_object_set_new(o, "epoch", json_integer(r->epoch));
        jnum(o, "lr", lr);
        json_object_set_new(o, "prompts", json_integer(pk.n));
        json_object_set_new(o, "offered", json_integer(pk.offered));
        jnum(o, "admitted_frac", (double)pk.n / (double)pk.offered);
        jnum(o, "band_lo", ss.lo);
        jnum(o, "band_hi", ss.hi);
        json_object_set_new(o, "stage", json_integer(ss.stage));
        json_object_set_new(o, "stage_name", json_string(stage_name));
        for (int j = 0; j < SHE_RL_N_STEPS; j++) {
            char k[32];
            snprintf(k, sizeof(k), "reward_s%d", j + 1);
            jnum(o, k, ls.reward.step_mean[j]);
            snprintf(k, sizeof(k), "parsed_s%d", j + 1);
            jnum(o, k, (double)parsed[j] / (double)n_resp);
        }
        for (int j = 0; j < 4; j++) {
            char k[32];
            snprintf(k, sizeof(k), "rm_acc_s%d", j + 1);
            jnum(o, k, rm_acc[j]);
        }
        jnum(o, "reward_total", ls.reward.total_mean);
        jnum(o, "pass_rate", ls.reward.pass_rate);
        json_object_set_new(o, "groups_all_pass", json_integer(ls.reward.n_all_pass));
        json_object_set_new(o, "groups_all_fail", json_integer(ls.reward.n_all_fail));
        jnum(o, "adv_mean", ls.adv.mean);
        jnum(o, "adv_std", ls.adv.std);
        jnum(o, "adv_clipped_frac",
             ls.adv.n_tokens ? (double)ls.adv.n_clipped / (double)ls.adv.n_tokens : 0);
        jnum(o, "loss", ls.loss.loss);
        jnum(o, "pg_loss", ls.loss.pg_loss);
        jnum(o, "kl_loss", ls.loss.kl_loss);
        jnum(o, "kl", ls.loss.kl_mean);
        jnum(o, "entropy", ls.loss.entropy_mean);
        jnum(o, "clip_frac", ls.loss.clip_frac);
        jnum(o, "clip_frac_low", ls.loss.clip_frac_low);
        jnum(o, "clip_frac_high", ls.loss.clip_frac_high);
        jnum(o, "ratio_mean", ls.loss.ratio_mean);
        jnum(o, "ratio_min", ls.loss.ratio_min);
        jnum(o, "ratio_max", ls.loss.ratio_max);
        jnum(o, "grad_norm", ls.grad_norm);
        jnum(o, "logp_gap_mean", ls.logp_gap_mean);
        jnum(o, "logp_gap_max", ls.logp_gap_max);
        jnum(o, "response_len", (double)len_sum / (double)n_resp);
        jnum(o, "truncated_frac", (double)trunc / (double)n_resp);
        json_object_set_new(o, "tokens", json_integer(ls.n_tokens));
        jnum(o, "rollout_s", t1 - t0);
        jnum(o, "reward_s", t2 - t1);
        jnum(o, "learn_s", t3 - t2);
        jnum(o, "elapsed_s", she_now_s() - t_start);
        json_t *cnt = json_object();
        for (int k = 0; k < SHE_SEL_REASON__COUNT; k++)
            if (ss.counts.n[k])
                json_object_set_new(cnt, she_sel_reason_name(k), json_integer(ss.counts.n[k]));
        json_object_set_new(o, "selector", cnt);
        char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        json_decref(o);
        SHE_CHECK_ALLOC(line);
        fprintf(r->log, "%s\n", line);
        fflush(r->log);
        free(line);
        progress(r, tty, ls.reward.total_mean, ls.reward.pass_rate,
                 step_s_sum / (double)run_steps * (double)(r->total_steps - r->step));
        if (r->step % save_every == 0 && r->step < end)
            err = save_last(r, errstr, errstr_size);
    }
    if (tty)
        fputc('\n', stderr);
    free(pk.pos);
    free(batch);
    free(groups);
    free(rewarded);
    free(verdicts);
    SHE_TRY(err);
    SHE_TRY(save_last(r, errstr, errstr_size));
    she_log_info(r->lg, "step %lld of %lld in %.1f s; %lld prompts admitted of %lld offered; "
                 "checkpoint %s",
                 r->step, r->total_steps, she_now_s() - t_start, r->admitted_total, r->offered_total,
                 r->last_dir);
    return SHE_OK;
}

int she_cmd_train_rl(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp,
        "she train-rl --init DIR --data FILE --out DIR [--algo grpo|srpo] "
        "[--reward outcome|sum|rm|hybrid] [--norm none|group|batch] [--rm DIR] [options]",
        "Reinforcement learning of the relevance policy from an SFT/DPO checkpoint: GRPO\n"
        "(sequence-level advantages) or SRPO (step-level, paper Eq. 6) with outcome, summed,\n"
        "reward-model or hybrid step rewards, PPO clip and a KL penalty to the initial policy.\n"
        "Offline rejection sampling, dynamic difficulty sampling, diverse sampling quotas and\n"
        "curriculum stages choose the prompts.  Logs every step to OUT/train_log.jsonl, saves\n"
        "OUT/last every --save-every steps and resumes from it.  Evaluate OUT/last with\n"
        "`she evaluate --split val` and the same split options.",
        rl_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *c = env.conf;
    char errstr[SHE_ERRSTR_SIZE];
    rl_run_t r = {.conf = c, .lg = env.lg};
    r.out = she_conf_get(c, "rl.out");
    if (env.n_positional > 0) {
        fprintf(stderr, "she train-rl: unexpected argument '%s' (a boolean flag takes no value: "
                "--flag=false)\n", env.positional[0]);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (!she_conf_get(c, "rl.init") || !she_conf_get(c, "rl.data") || !r.out || !r.out[0]) {
        fprintf(stderr, "she train-rl: --init DIR, --data FILE and --out DIR are required\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    r.P = (int)she_conf_get_int(c, "rl.prompts");
    r.G = (int)she_conf_get_int(c, "rl.group");
    r.seed = (uint64_t)she_conf_get_int(c, "rl.seed");
    r.total_steps = she_conf_get_int(c, "rl.steps");
    r.lc = she_learner_defaults();
    r.lc.adv.algo = (she_adv_algo_t)she_adv_algo_parse(she_conf_get(c, "rl.algo"));
    r.lc.adv.norm = (she_adv_norm_t)she_adv_norm_parse(she_conf_get(c, "rl.norm"));
    r.lc.adv.gamma = (float)she_conf_get_double(c, "rl.gamma");
    r.lc.adv.clip = (float)she_conf_get_double(c, "rl.adv.clip");
    r.lc.loss.kl_beta = (float)she_conf_get_double(c, "rl.kl.beta");
    r.lc.loss.clip_eps = (float)she_conf_get_double(c, "rl.clip.eps");
    r.lc.adamw.beta2 = (float)she_conf_get_double(c, "rl.beta2");
    r.lc.adamw.weight_decay = (float)she_conf_get_double(c, "rl.weight.decay");
    r.lc.temperature = (float)she_conf_get_double(c, "rl.temperature");
    r.lc.max_grad_norm = (float)she_conf_get_double(c, "rl.grad.clip");
    r.lc.micro_batch = (int)she_conf_get_int(c, "rl.micro.batch");
    r.lc.mini_batches = (int)she_conf_get_int(c, "rl.mini.batches");
    r.lc.epochs = (int)she_conf_get_int(c, "rl.epochs");
    float lr = (float)she_conf_get_double(c, "rl.lr");
    r.sched = (she_lr_schedule_t){.kind = SHE_LR_CONSTANT, .max_lr = lr, .min_lr = lr,
                                  .warmup_steps = she_conf_get_int(c, "rl.warmup"),
                                  .total_steps = r.total_steps};
    she_signals_install();
    /* the device first: a wrong --device fails before the data is read */
    she_device_t dev;
    she_err_t err = she_device_select(she_conf_get(c, "rl.device"), &dev, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = setup(&r, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = train(&r, errstr, sizeof(errstr));
    run_free(&r);
    if (err != SHE_OK)
        she_log_error(env.lg, "%s", errstr);
    rc = she_cmd_exit_status(err);
    she_cmd_fini(&env);
    return rc;
}
