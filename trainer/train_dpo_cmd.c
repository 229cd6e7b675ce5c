/* train_dpo_cmd.c -- `she train-dpo`: the DPO stage between SFT and RL (the paper's
 * Tbstar-DPO).
 *
 * From an SFT checkpoint: split the log by query as SFT did; for a seeded subset of the training
 * part sample K chains per prompt from the SFT policy and pair the teacher chain (chosen) with
 * one the policy got wrong (rejected: a wrong grade first, else any step that disagrees with
 * the truth; prompts the policy gets entirely right give no pair); score both under the frozen
 * SFT policy; then train on the DPO loss (trainer/dpo.h).  OUT/last is resumable (model,
 * optimizer, tokenizer, trainer_state.json); OUT/train_log.jsonl logs each step.  The pairs are
 * rebuilt on resume (pure functions of the data, the seed and the SFT checkpoint).
 *
 * --device cuda[:N] (core/engine.h) samples, scores the reference and trains on that device;
 * the host copy of the policy and AdamW's state is refreshed before every checkpoint. */
#include <errno.h>
#include <jansson.h>
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
#include "trainer/dpo.h"
#include "trainer/rm.h"
#include "trainer/rollout.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

static const she_conf_def_t dpo_defs[] = {
    {"dpo.init", SHE_CONF_STR, NULL, "SFT checkpoint (the policy and the frozen reference)", 0, 0,
     NULL, "init"},
    {"dpo.data", SHE_CONF_STR, NULL, "labelled log (CSV or JSON Lines)", 0, 0, NULL, "data"},
    {"dpo.format", SHE_CONF_ENUM, "auto", "reader format", 0, 0, "auto|csv|jsonl|homedepot",
     "format"},
    {"dpo.columns", SHE_CONF_STR, "", "column mapping", 0, 0, NULL, "columns"},
    {"dpo.label.map", SHE_CONF_STR, "", "label map (rules or preset)", 0, 0, NULL, "label-map"},
    {"dpo.val.fraction", SHE_CONF_DOUBLE, "0.15", "share of queries held out (as in SFT)", 0,
     0.9, NULL, "val-fraction"},
    {"dpo.split.seed", SHE_CONF_INT, "1", "seed of the split by query", 0, 9007199254740991.0,
     NULL, "split-seed"},
    {"dpo.out", SHE_CONF_STR, NULL, "output directory (last/, train_log.jsonl)", 0, 0, NULL,
     "out"},
    {"dpo.lexicons", SHE_CONF_STR, "../shared/data/homedepot/lexicons",
     "brand/material lexicons for teacher chains, as in SFT ('' = none)", 0, 0, NULL,
     "lexicons"},
    {"dpo.samples", SHE_CONF_INT, "2000", "training prompts sampled for pairs (0 = all)", 0, 1e9,
     NULL, "samples"},
    {"dpo.group", SHE_CONF_INT, "4", "chains sampled per prompt to find a wrong one", 1, 256,
     NULL, "group"},
    {"dpo.temperature", SHE_CONF_DOUBLE, "1.0", "sampling temperature", 0.01, 10, NULL, NULL},
    {"dpo.max.prompt", SHE_CONF_INT, "128", "prompt tokens (the item text is cut to fit)", 2,
     4096, NULL, NULL},
    {"dpo.max.new", SHE_CONF_INT, "96", "answer tokens", 1, 4096, NULL, "max-new"},
    {"dpo.steps", SHE_CONF_INT, "100", "optimizer steps", 0, 1e12, NULL, "steps"},
    {"dpo.batch", SHE_CONF_INT, "16", "pairs per step", 1, 4096, NULL, "batch"},
    {"dpo.micro.batch", SHE_CONF_INT, "16", "rows (two per pair) per forward", 2, 4096, NULL,
     NULL},
    {"dpo.beta", SHE_CONF_DOUBLE, "0.1", "DPO beta", 1e-6, 100, NULL, "beta"},
    {"dpo.lr", SHE_CONF_DOUBLE, "1e-5", "learning rate (constant after warm-up)", 0, 10, NULL,
     "lr"},
    {"dpo.warmup", SHE_CONF_INT, "10", "warm-up steps", 0, 1e9, NULL, NULL},
    {"dpo.seed", SHE_CONF_INT, "1", "seed of the subset, the samples and the data order", 0,
     9007199254740991.0, NULL, "seed"},
    {"dpo.save.every", SHE_CONF_INT, "50", "save OUT/last every N steps", 1, 1e12, NULL, NULL},
    {"dpo.device", SHE_CONF_STR, "cpu",
     "where sampling, the reference and the steps run: cpu, cuda or cuda:N, optionally /tf32 "
     "or /bf16 GEMMs", 0, 0, NULL, "device"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

static uint64_t mix2(uint64_t a, uint64_t b) { return she_hash_mix(a ^ she_hash_mix(b)); }

typedef struct dpo_run {
    she_conf_t *conf;
    she_log_t *lg;
    const char *out;
    char last_dir[4096];
    she_lexicon_t *brands, *materials;
    she_dataset_t *train;
    she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_model_t *m, *ref;  /* host copies */
    she_adamw_t *opt;
    she_device_t dev;
    she_engine_t *eng, *ref_eng; /* m (with opt) and ref on dev */
    she_dpo_set_t pairs;
    long long step;
    uint64_t seed;
} dpo_run_t;

static she_err_t save_last(const dpo_run_t *r, char *errstr, size_t errstr_size) {
    char tmp[4200], path[4300];
    SHE_TRY(she_engine_download(r->eng, errstr, errstr_size));
    SHE_TRY(she_ckptdir_begin(r->last_dir, tmp, sizeof(tmp), errstr, errstr_size));
    she_err_t err = she_model_write_files(r->m, r->opt, tmp, errstr, errstr_size);
    snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
    if (err == SHE_OK)
        err = she_tokenizer_save(r->tok, path, errstr, errstr_size);
    if (err == SHE_OK) {
        json_t *st = json_object();
        json_object_set_new(st, "step", json_integer(r->step));
        json_object_set_new(st, "n_pairs", json_integer(r->pairs.n));
        json_object_set_new(st, "init", json_string(she_conf_get(r->conf, "dpo.init")));
        snprintf(path, sizeof(path), "%s/trainer_state.json", tmp);
        if (json_dump_file(st, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
            err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", path);
        json_decref(st);
    }
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, r->last_dir, errstr, errstr_size);
    if (err != SHE_OK)
        she_ckptdir_abort(tmp);
    return err;
}

/* Index of the response to reject, or -1: a wrong grade first, else any step off the truth. */
static int pick_rejected(const dpo_run_t *r, const she_rollout_group_t *g, const she_cot_t *truth) {
    int any_wrong = -1;
    for (int k = 0; k < g->n_responses; k++) {
        she_cot_parsed_t parsed;
        char e[SHE_ERRSTR_SIZE];
        if (she_response_parse(r->tok, r->sp.eos, &g->responses[k], &parsed, NULL, NULL, e,
                               sizeof(e)) != SHE_OK)
            continue;
        if (!she_rm_step_correct(truth, &parsed, SHE_COT_STEP_GRADE))
            return k;
        for (int s = 1; s <= SHE_COT_N_STEPS - 1 && any_wrong < 0; s++)
            if (!she_rm_step_correct(truth, &parsed, s))
                any_wrong = k;
    }
    return any_wrong;
}

static she_err_t build_pairs(dpo_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    int K = (int)she_conf_get_int(c, "dpo.group"), max_prompt = (int)she_conf_get_int(c, "dpo.max.prompt");
    int max_new = (int)she_conf_get_int(c, "dpo.max.new");
    /* the subset, in file order */
    int n = (int)r->train->n;
    int *idx = malloc(sizeof(int) * (n ? n : 1));
    SHE_CHECK_ALLOC(idx);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (r->train->samples[i].grade != SHE_GRADE_UNKNOWN)
            idx[k++] = i;
    long long cap = she_conf_get_int(c, "dpo.samples");
    if (cap > 0 && cap < k) {
        she_rng_t rng;
        she_rng_seed(&rng, mix2(r->seed, 1));
        she_shuffle_ints(idx, (size_t)k, &rng);
        k = (int)cap;
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
                int t = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = t;
            }
    }
    she_rollout_config_t rc = she_rollout_defaults();
    rc.group_size = K;
    rc.temperature = (float)she_conf_get_double(c, "dpo.temperature");
    rc.top_k = 0;
    rc.max_prompt_tokens = max_prompt;
    rc.max_new_tokens = max_new;
    rc.device = she_conf_get(c, "dpo.device");
    int per = 64 / K > 0 ? 64 / K : 1;
    she_rollout_t *ro = NULL;
    she_err_t err = she_rollout_new(r->ref, r->tok, &rc, per, &ro, errstr, errstr_size);
    she_rollout_group_t *groups = calloc(per, sizeof(*groups));
    const she_sample_t **batch = malloc(sizeof(*batch) * per);
    int32_t *chosen = malloc(sizeof(int32_t) * (max_new + 1)), *rej = malloc(sizeof(int32_t) * (max_new + 1));
    SHE_CHECK_ALLOC(groups);
    SHE_CHECK_ALLOC(batch);
    SHE_CHECK_ALLOC(chosen);
    SHE_CHECK_ALLOC(rej);
    long no_wrong = 0, no_chain = 0;
    for (int i0 = 0; i0 < k && err == SHE_OK; i0 += per) {
        int m = k - i0 < per ? k - i0 : per;
        for (int i = 0; i < m; i++)
            batch[i] = &r->train->samples[idx[i0 + i]];
        err = she_rollout_generate(ro, batch, m, 0, mix2(r->seed, 0xd90000u + (uint64_t)i0),
                                   groups, errstr, errstr_size);
        for (int i = 0; i < m && err == SHE_OK; i++) {
            she_rollout_group_t *g = &groups[i];
            she_cot_t truth;
            char text[SHE_COT_MAX_CHAIN], e[SHE_ERRSTR_SIZE];
            size_t len;
            int nc = 0;
            if (she_teacher_chain(batch[i], r->brands, r->materials, &truth, e, sizeof(e)) !=
                    SHE_OK ||
                she_cot_format(&truth, text, sizeof(text), &len, e, sizeof(e)) != SHE_OK ||
                she_tokenizer_encode(r->tok, text, len, 0, chosen, max_new, &nc, e, sizeof(e)) !=
                    SHE_OK) {
                no_chain++;
            } else {
                chosen[nc++] = r->sp.eos;
                int w = pick_rejected(r, g, &truth);
                if (w < 0) {
                    no_wrong++;
                } else {
                    const she_response_t *resp = &g->responses[w];
                    int nr = resp->n_tokens;
                    memcpy(rej, resp->tokens, sizeof(int32_t) * nr);
                    if (nr == 0 || rej[nr - 1] != r->sp.eos)
                        rej[nr++] = r->sp.eos; /* both answers end as the teacher's does */
                    she_dpo_set_add(&r->pairs, g->prompt_tokens, g->n_prompt_tokens, chosen, nc,
                                    rej, nr);
                }
            }
            she_msg_clear_rollout_group(g);
        }
        if (isatty(2))
            fprintf(stderr, "\rsampling DPO pairs: %d/%d prompts, %d pairs", i0 + m, k,
                    r->pairs.n);
    }
    if (isatty(2))
        fputc('\n', stderr);
    she_log_info(r->lg, "%d DPO pairs from %d prompts (%ld with no wrong chain among %d, %ld "
                 "without a teacher chain that fits)",
                 r->pairs.n, k, no_wrong, K, no_chain);
    free(idx);
    free(groups);
    free(batch);
    free(chosen);
    free(rej);
    she_rollout_free(ro);
    SHE_TRY(err);
    if (r->pairs.n == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "no DPO pair: no sampled chain was wrong, or no teacher chain fits "
                        "--max-new");
    return she_dpo_ref_logps(r->ref_eng, &r->pairs, (int)she_conf_get_int(c, "dpo.micro.batch"),
                             errstr, errstr_size);
}

static she_err_t train(dpo_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    long long total = she_conf_get_int(c, "dpo.steps"), save_every = she_conf_get_int(c, "dpo.save.every");
    int P = (int)she_conf_get_int(c, "dpo.batch");
    if (P > r->pairs.n)
        P = r->pairs.n;
    int mb = (int)she_conf_get_int(c, "dpo.micro.batch");
    float beta = (float)she_conf_get_double(c, "dpo.beta");
    float lr = (float)she_conf_get_double(c, "dpo.lr");
    she_lr_schedule_t sched = {.kind = SHE_LR_CONSTANT, .max_lr = lr, .min_lr = lr,
                               .warmup_steps = she_conf_get_int(c, "dpo.warmup"),
                               .total_steps = total};
    she_adamw_config_t hp = she_adamw_defaults();
    hp.beta2 = 0.95f;
    hp.weight_decay = 0.0f;
    char path[4200];
    snprintf(path, sizeof(path), "%s/train_log.jsonl", r->out);
    FILE *log = fopen(path, "a");
    if (!log)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot open %s", path);
    int *order = malloc(sizeof(int) * r->pairs.n), *idx = malloc(sizeof(int) * P);
    SHE_CHECK_ALLOC(order);
    SHE_CHECK_ALLOC(idx);
    long long order_epoch = -1;
    int tty = isatty(2);
    double t0 = she_now_s();
    she_err_t err = SHE_OK;
    while (r->step < total && !she_signals_stop_requested()) {
        for (int b = 0; b < P; b++) {
            long long k = r->step * P + b, e = k / r->pairs.n;
            if (e != order_epoch) {
                for (int i = 0; i < r->pairs.n; i++)
                    order[i] = i;
                she_rng_t rng;
                she_rng_seed(&rng, mix2(r->seed, 0xd0e0000u + (uint64_t)e));
                she_shuffle_ints(order, (size_t)r->pairs.n, &rng);
                order_epoch = e;
            }
            idx[b] = order[k % r->pairs.n];
        }
        she_dpo_stats_t st;
        float gn;
        float lr_now = she_lr_at(&sched, r->step);
        err = she_dpo_step(r->eng, &hp, lr_now, 1.0f, beta, &r->pairs, idx, P, mb, &st, &gn,
                           errstr, errstr_size);
        if (err != SHE_OK)
            break;
        r->step++;
        fprintf(log, "{\"step\": %lld, \"loss\": %.6f, \"reward_acc\": %.4f, \"margin\": %.6f, "
                "\"chosen_reward\": %.6f, \"rejected_reward\": %.6f, \"lr\": %.6g, \"grad_norm\": "
                "%.4f, \"elapsed_s\": %.2f}\n",
                r->step, st.loss, st.reward_acc, st.margin_mean, st.chosen_reward,
                st.rejected_reward, lr_now, gn, she_now_s() - t0);
        fflush(log);
        double eta = (she_now_s() - t0) / (double)r->step * (double)(total - r->step);
        fprintf(stderr, "%sDPO step %lld/%lld  loss %.4f  reward acc %.3f  margin %.3f  ETA %.0f s%s",
                tty ? "\r" : "", r->step, total, st.loss, st.reward_acc, st.margin_mean, eta,
                tty ? "  " : "\n");
        if (r->step % save_every == 0 && r->step < total) {
            err = save_last(r, errstr, errstr_size);
            if (err != SHE_OK)
                break;
        }
    }
    if (tty)
        fputc('\n', stderr);
    fclose(log);
    free(order);
    free(idx);
    SHE_TRY(err);
    return save_last(r, errstr, errstr_size);
}

static she_err_t setup(dpo_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    snprintf(r->last_dir, sizeof(r->last_dir), "%s/last", r->out);
    if (mkdir(r->out, 0777) != 0 && errno != EEXIST)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "mkdir %s: %s", r->out, strerror(errno));
    const char *lex = she_conf_get(c, "dpo.lexicons");
    if (lex[0] && she_is_dir(lex))
        SHE_TRY(she_sft_load_lexicons(lex, 0, &r->brands, &r->materials, errstr, errstr_size));
    else if (lex[0] && strcmp(she_conf_source(c, "dpo.lexicons"), "default") != 0)
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no lexicon directory %s", lex);
    she_reader_opts_t ro = {.format = she_conf_get(c, "dpo.format"),
                            .columns = she_conf_get(c, "dpo.columns"),
                            .label_map = she_conf_get(c, "dpo.label.map")};
    she_dataset_t *all = she_dataset_new();
    she_err_t err = she_dataset_load(all, she_conf_get(c, "dpo.data"), &ro, NULL, errstr,
                                     errstr_size);
    r->train = she_dataset_new();
    if (err == SHE_OK)
        she_dataset_split_by_query(all, she_conf_get_double(c, "dpo.val.fraction"),
                                   (uint64_t)she_conf_get_int(c, "dpo.split.seed"), r->train,
                                   NULL);
    she_dataset_free(all);
    SHE_TRY(err);
    const char *init = she_conf_get(c, "dpo.init");
    int resume = she_is_dir(r->last_dir);
    const char *src = resume ? r->last_dir : init;
    SHE_TRY(she_ckptdir_verify(src, errstr, errstr_size));
    char path[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", src);
    SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
    SHE_TRY(she_sft_special_ids(r->tok, &r->sp, errstr, errstr_size));
    int mb = (int)she_conf_get_int(c, "dpo.micro.batch");
    int seq = (int)(she_conf_get_int(c, "dpo.max.prompt") + she_conf_get_int(c, "dpo.max.new")) + 1;
    SHE_TRY(she_model_load(src, mb, seq, &r->m, resume ? &r->opt : NULL, errstr, errstr_size));
    if (!r->opt)
        r->opt = she_adamw_new(r->m->n_params);
    SHE_TRY(she_model_load(init, mb, seq, &r->ref, NULL, errstr, errstr_size));
    SHE_TRY(she_engine_new(r->m, r->opt, &r->dev, &r->eng, errstr, errstr_size));
    SHE_TRY(she_engine_new(r->ref, NULL, &r->dev, &r->ref_eng, errstr, errstr_size));
    if (resume) {
        snprintf(path, sizeof(path), "%s/trainer_state.json", r->last_dir);
        json_error_t je;
        json_t *st = json_load_file(path, 0, &je);
        if (!st || !json_is_integer(json_object_get(st, "step"))) {
            json_decref(st);
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: step required", path);
        }
        r->step = json_integer_value(json_object_get(st, "step"));
        json_decref(st);
        she_log_info(r->lg, "resuming from %s at step %lld", r->last_dir, r->step);
    }
    return build_pairs(r, errstr, errstr_size);
}

int she_cmd_train_dpo(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she train-dpo --init SFT_DIR --data FILE --out DIR [options]",
        "Direct preference optimisation of the SFT policy: for sampled training prompts the\n"
        "teacher chain is preferred over a chain the policy itself got wrong; the SFT policy is\n"
        "the frozen reference.  Saves OUT/last (resumable) and logs OUT/train_log.jsonl.",
        dpo_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    char errstr[SHE_ERRSTR_SIZE];
    dpo_run_t r = {.conf = env.conf, .lg = env.lg};
    r.out = she_conf_get(env.conf, "dpo.out");
    if (env.n_positional > 0) {
        fprintf(stderr, "she train-dpo: unexpected argument '%s' (a boolean flag takes no value: "
                "--flag=false)\n", env.positional[0]);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (!she_conf_get(env.conf, "dpo.init") || !she_conf_get(env.conf, "dpo.data") || !r.out ||
        !r.out[0]) {
        fprintf(stderr, "she train-dpo: --init DIR, --data FILE and --out DIR are required\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    r.seed = (uint64_t)she_conf_get_int(env.conf, "dpo.seed");
    she_signals_install();
    /* the device first: a wrong --device fails before the data is read */
    she_err_t err = she_device_select(she_conf_get(env.conf, "dpo.device"), &r.dev, errstr,
                                      sizeof(errstr));
    if (err == SHE_OK)
        err = setup(&r, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = train(&r, errstr, sizeof(errstr));
    she_lexicon_free(r.brands);
    she_lexicon_free(r.materials);
    she_dataset_free(r.train);
    she_engine_free(r.eng);
    she_engine_free(r.ref_eng);
    she_model_free(r.m);
    she_model_free(r.ref);
    she_adamw_free(r.opt);
    she_tokenizer_free(r.tok);
    she_dpo_set_free(&r.pairs);
    if (err != SHE_OK)
        she_log_error(env.lg, "%s", errstr);
    rc = she_cmd_exit_status(err);
    she_cmd_fini(&env);
    return rc;
}
