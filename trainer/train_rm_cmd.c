/* train_rm_cmd.c -- `she train-rm`: the generative stepwise reward model (paper §4.3.1, §5.1.6).
 *
 * From a policy checkpoint (the RM starts as a copy of it and shares its tokenizer): split the
 * log by query as SFT did; for a seeded subset of the training part build step-labelled
 * examples (trainer/rm.h: truth chains, corrupted steps, and chains the policy itself samples,
 * judged against the truth), the same for a subset of the validation part; SFT on them
 * (trainer/sft.h's batches and step); report per-step verdict accuracy on the validation
 * examples (the paper's Table 2); then optionally refine with GRPO on hard cases (training
 * examples the SFT model gets wrong or is unsure of: G sampled answers per question, reward 1
 * when the written verdict is right) and report again.
 *
 * OUT/last is the reward model (model, optimizer, tokenizer, trainer_state.json with the stage
 * and step), saved atomically and resumed from; OUT/train_log.jsonl logs the steps and
 * OUT/rm_eval.json the accuracies.  The examples are rebuilt on resume (pure functions of the
 * data, the seeds and the init checkpoint).
 *
 * --device cuda[:N] (core/engine.h) runs the SFT steps (the host copy refreshed before every
 * checkpoint and at the end of the stage) and all sampling on that device; the GRPO updates
 * (trainer/learner.h) and the verdict scoring (trainer/rm.h reads raw logits) stay on the CPU. */
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
#include "trainer/rm.h"
#include "trainer/rollout.h"
#include "trainer/sft.h"
#include "trainer/teacher.h"

static const she_conf_def_t rm_defs[] = {
    {"rm.init", SHE_CONF_STR, NULL, "policy checkpoint the reward model starts from", 0, 0, NULL,
     "init"},
    {"rm.data", SHE_CONF_STR, NULL, "labelled log (CSV or JSON Lines)", 0, 0, NULL, "data"},
    {"rm.format", SHE_CONF_ENUM, "auto", "reader format", 0, 0, "auto|csv|jsonl|homedepot",
     "format"},
    {"rm.columns", SHE_CONF_STR, "", "column mapping", 0, 0, NULL, "columns"},
    {"rm.label.map", SHE_CONF_STR, "", "label map (rules or preset)", 0, 0, NULL, "label-map"},
    {"rm.val.fraction", SHE_CONF_DOUBLE, "0.15", "share of queries held out (as in SFT)", 0, 0.9,
     NULL, "val-fraction"},
    {"rm.split.seed", SHE_CONF_INT, "1", "seed of the split by query", 0, 9007199254740991.0,
     NULL, "split-seed"},
    {"rm.out", SHE_CONF_STR, NULL, "output directory (last/, train_log.jsonl, rm_eval.json)", 0,
     0, NULL, "out"},
    {"rm.lexicons", SHE_CONF_STR, "../shared/data/homedepot/lexicons",
     "brand/material lexicons for teacher chains, as in SFT ('' = none)", 0, 0, NULL,
     "lexicons"},
    {"rm.samples", SHE_CONF_INT, "2000", "training samples turned into examples (0 = all)", 0,
     1e9, NULL, "samples"},
    {"rm.eval.samples", SHE_CONF_INT, "300", "validation samples turned into examples (0 = all)",
     0, 1e9, NULL, "eval-samples"},
    {"rm.policy.samples", SHE_CONF_INT, "2", "chains the policy samples per sample (judged by "
     "ground truth)", 0, 64, NULL, "policy-samples"},
    {"rm.policy.temperature", SHE_CONF_DOUBLE, "1.0", "temperature of those chains", 0.01, 10,
     NULL, NULL},
    {"rm.steps", SHE_CONF_INT, "600", "SFT steps", 0, 1e12, NULL, "steps"},
    {"rm.batch", SHE_CONF_INT, "32", "SFT sequences per step", 1, 4096, NULL, "batch"},
    {"rm.lr", SHE_CONF_DOUBLE, "5e-4", "SFT peak learning rate (cosine to a tenth)", 0, 10, NULL,
     "lr"},
    {"rm.warmup", SHE_CONF_INT, "30", "SFT warm-up steps", 0, 1e9, NULL, NULL},
    {"rm.grpo.steps", SHE_CONF_INT, "0", "GRPO refinement steps on hard cases (0 = none)", 0,
     1e12, NULL, "grpo-steps"},
    {"rm.grpo.prompts", SHE_CONF_INT, "8", "hard questions per GRPO step", 1, 4096, NULL, NULL},
    {"rm.grpo.group", SHE_CONF_INT, "8", "answers sampled per question", 2, 1024, NULL, NULL},
    {"rm.grpo.lr", SHE_CONF_DOUBLE, "2e-5", "GRPO learning rate", 0, 10, NULL, "grpo-lr"},
    {"rm.grpo.margin", SHE_CONF_DOUBLE, "0.3",
     "a question is hard when wrong or |P(correct) - 0.5| below this", 0, 0.5, NULL, NULL},
    {"rm.grpo.pool", SHE_CONF_INT, "2000", "training examples searched for hard cases", 1, 1e9,
     NULL, NULL},
    {"rm.judge.batch", SHE_CONF_INT, "64", "questions judged together", 1, 4096, NULL, NULL},
    {"rm.seed", SHE_CONF_INT, "1", "seed of the subsets, corruptions and data order", 0,
     9007199254740991.0, NULL, "seed"},
    {"rm.save.every", SHE_CONF_INT, "200", "save OUT/last every N steps", 1, 1e12, NULL, NULL},
    {"rm.device", SHE_CONF_STR, "cpu",
     "where the SFT steps, all sampling and the verdict scoring run: cpu, cuda or cuda:N, "
     "optionally /tf32 or /bf16 GEMMs (the GRPO updates stay on the CPU)", 0, 0, NULL,
     "device"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct rm_run {
    she_conf_t *conf;
    she_log_t *lg;
    const char *out;
    char last_dir[4096], log_path[4096], eval_path[4096];
    she_lexicon_t *brands, *materials;
    she_dataset_t *train, *val;  /* the subsets examples are built from */
    she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_model_t *m;          /* the host copy: checkpoints are written from it */
    she_adamw_t *opt;
    she_device_t dev;
    she_rm_config_t rc;
    she_rm_examples_t ex_train, ex_val;
    uint64_t seed;
    int stage;               /* 0 SFT, 1 GRPO, 2 done */
    long long step;          /* within the stage */
    json_t *evals;           /* {"sft": {...}, "grpo": {...}} */
    FILE *log;
} rm_run_t;

static uint64_t mix2(uint64_t a, uint64_t b) { return she_hash_mix(a ^ she_hash_mix(b)); }

/* ---- checkpoints ---- */

static she_err_t save_last(const rm_run_t *r, char *errstr, size_t errstr_size) {
    char tmp[4200], path[4300];
    SHE_TRY(she_ckptdir_begin(r->last_dir, tmp, sizeof(tmp), errstr, errstr_size));
    she_err_t err = she_model_write_files(r->m, r->opt, tmp, errstr, errstr_size);
    snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
    if (err == SHE_OK)
        err = she_tokenizer_save(r->tok, path, errstr, errstr_size);
    if (err == SHE_OK) {
        json_t *st = json_object();
        json_object_set_new(st, "stage", json_integer(r->stage));
        json_object_set_new(st, "step", json_integer(r->step));
        json_object_set_new(st, "evals", json_deep_copy(r->evals));
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

/* ---- data and examples ---- */

/* A seeded subset of n samples (0 = all) of src, in file order. */
static she_dataset_t *subset(const she_dataset_t *src, long long n, uint64_t seed) {
    she_dataset_t *out = she_dataset_new();
    int total = (int)src->n;
    int *idx = malloc(sizeof(int) * (total ? total : 1));
    SHE_CHECK_ALLOC(idx);
    int k = 0;
    for (int i = 0; i < total; i++)
        if (src->samples[i].grade != SHE_GRADE_UNKNOWN)
            idx[k++] = i;
    if (n > 0 && n < k) {
        she_rng_t rng;
        she_rng_seed(&rng, seed);
        she_shuffle_ints(idx, (size_t)k, &rng);
        k = (int)n;
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
                int t = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = t;
            }
    }
    for (int i = 0; i < k; i++)
        she_dataset_append_copy(out, &src->samples[idx[i]]);
    free(idx);
    return out;
}

/* Examples of every sample of ds: truth, corruptions and the policy's own chains. */
static she_err_t build_examples(rm_run_t *r, she_model_t *policy, const she_dataset_t *ds,
                                uint64_t seed, she_rm_examples_t *ex, char *errstr,
                                size_t errstr_size) {
    int n = (int)ds->n, K = (int)she_conf_get_int(r->conf, "rm.policy.samples");
    she_cot_t *truth = calloc(n ? n : 1, sizeof(*truth));
    uint8_t *ok = calloc(n ? n : 1, 1);
    SHE_CHECK_ALLOC(truth);
    SHE_CHECK_ALLOC(ok);
    for (int i = 0; i < n; i++) {
        char e[SHE_ERRSTR_SIZE];
        ok[i] = she_teacher_chain(&ds->samples[i], r->brands, r->materials, &truth[i], e,
                                  sizeof(e)) == SHE_OK;
    }
    /* the policy's chains, K per sample, in batches */
    char *chains = NULL;
    she_err_t err = SHE_OK;
    if (K > 0 && n > 0) {
        chains = calloc((size_t)n * K, SHE_RESPONSE_TEXT_MAX);
        SHE_CHECK_ALLOC(chains);
        she_rollout_config_t rc = she_rollout_defaults();
        rc.group_size = K;
        rc.temperature = (float)she_conf_get_double(r->conf, "rm.policy.temperature");
        rc.top_k = 0;
        rc.max_prompt_tokens = r->rc.max_prompt;
        rc.max_new_tokens = 96;
        rc.device = she_conf_get(r->conf, "rm.device");
        int per = 64 / K > 0 ? 64 / K : 1;
        she_rollout_t *ro = NULL;
        err = she_rollout_new(policy, r->tok, &rc, per, &ro, errstr, errstr_size);
        she_rollout_group_t *groups = calloc(per, sizeof(*groups));
        const she_sample_t **batch = malloc(sizeof(*batch) * per);
        SHE_CHECK_ALLOC(groups);
        SHE_CHECK_ALLOC(batch);
        for (int i0 = 0; i0 < n && err == SHE_OK; i0 += per) {
            int m = n - i0 < per ? n - i0 : per;
            for (int i = 0; i < m; i++)
                batch[i] = &ds->samples[i0 + i];
            err = she_rollout_generate(ro, batch, m, 0, mix2(seed, (uint64_t)i0), groups, errstr,
                                       errstr_size);
            for (int i = 0; i < m && err == SHE_OK; i++) {
                for (int k = 0; k < K; k++) {
                    she_cot_parsed_t parsed;
                    err = she_response_parse(r->tok, r->sp.eos, &groups[i].responses[k], &parsed,
                                             chains + ((size_t)(i0 + i) * K + k) *
                                                          SHE_RESPONSE_TEXT_MAX,
                                             NULL, errstr, errstr_size);
                    if (err != SHE_OK)
                        break;
                }
                she_msg_clear_rollout_group(&groups[i]);
            }
            if (isatty(2))
                fprintf(stderr, "\rsampling policy chains: %d/%d", i0 + m, n);
        }
        if (isatty(2))
            fputc('\n', stderr);
        free(groups);
        free(batch);
        she_rollout_free(ro);
    }
    she_rng_t rng;
    she_rng_seed(&rng, mix2(seed, 0xc0ffu));
    const char *pc[64];
    for (int i = 0; i < n && err == SHE_OK; i++) {
        if (!ok[i])
            continue;
        int d = (i + 1 + (int)she_rng_below(&rng, (uint32_t)(n > 1 ? n - 1 : 1))) % n;
        for (int k = 0; k < K; k++)
            pc[k] = chains + ((size_t)i * K + k) * SHE_RESPONSE_TEXT_MAX;
        err = she_rm_examples_add(ex, i, &truth[i], ok[d] && d != i ? &truth[d] : NULL, pc, K,
                                  &rng, errstr, errstr_size);
    }
    free(chains);
    free(truth);
    free(ok);
    return err;
}

/* ---- evaluation (Table 2) ---- */

/* Judges examples ex[0..n) of samples; p[i] = P(correct). */
static she_err_t judge_examples(rm_run_t *r, const she_dataset_t *ds, const she_rm_examples_t *ex,
                                int n, float *p, char *errstr, size_t errstr_size) {
    int jb = (int)she_conf_get_int(r->conf, "rm.judge.batch");
    she_rm_t *rm = NULL;
    SHE_TRY(she_rm_new(r->m, r->tok, &r->rc, jb, &r->dev, &rm, errstr, errstr_size));
    she_rm_query_t *q = malloc(sizeof(*q) * (n ? n : 1));
    SHE_CHECK_ALLOC(q);
    for (int i = 0; i < n; i++)
        q[i] = (she_rm_query_t){&ds->samples[ex->ex[i].sample], ex->ex[i].chain,
                                strlen(ex->ex[i].chain), ex->ex[i].step};
    she_err_t err = she_rm_judge(rm, q, n, p, NULL, errstr, errstr_size);
    free(q);
    she_rm_free(rm);
    return err;
}

static she_err_t evaluate(rm_run_t *r, const char *name, char *errstr, size_t errstr_size) {
    double t0 = she_now_s();
    int n = r->ex_val.n;
    float *p = malloc(sizeof(float) * (n ? n : 1));
    SHE_CHECK_ALLOC(p);
    she_err_t err = judge_examples(r, r->val, &r->ex_val, n, p, errstr, errstr_size);
    if (err != SHE_OK) {
        free(p);
        return err;
    }
    /* accuracy per step, over all examples and over the policy's own chains */
    long cnt[2][SHE_RM_N_STEPS] = {{0}}, right[2][SHE_RM_N_STEPS] = {{0}};
    for (int i = 0; i < n; i++) {
        if (p[i] < 0)
            continue;
        const she_rm_example_t *e = &r->ex_val.ex[i];
        int ok = (p[i] >= 0.5f) == (e->label == 1);
        for (int s = 0; s < 2; s++)
            if (s == 0 || e->source == SHE_RM_SRC_POLICY) {
                cnt[s][e->step - 1]++;
                right[s][e->step - 1] += ok;
            }
    }
    free(p);
    json_t *o = json_object();
    char line[512];
    int at = snprintf(line, sizeof(line), "%s: step accuracy", name);
    for (int s = 0; s < 2; s++) {
        json_t *acc = json_object(), *num = json_object();
        for (int j = 0; j < SHE_RM_N_STEPS; j++) {
            char k[16];
            snprintf(k, sizeof(k), "step%d", j + 1);
            double a = cnt[s][j] ? (double)right[s][j] / cnt[s][j] : NAN;
            json_object_set_new(acc, k, isfinite(a) ? json_real(a) : json_null());
            json_object_set_new(num, k, json_integer(cnt[s][j]));
            if (s == 0)
                at += snprintf(line + at, sizeof(line) - at, " %.1f%%", 100 * a);
        }
        json_object_set_new(o, s == 0 ? "accuracy" : "accuracy_policy_chains", acc);
        json_object_set_new(o, s == 0 ? "n" : "n_policy_chains", num);
    }
    json_object_set_new(o, "seconds", json_real(she_now_s() - t0));
    json_object_set_new(r->evals, name, o);
    she_log_info(r->lg, "%s (%d validation examples, %.1f s)", line, n, she_now_s() - t0);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", r->eval_path);
    if (json_dump_file(r->evals, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 ||
        rename(tmp, r->eval_path) != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", r->eval_path);
    return SHE_OK;
}

/* ---- SFT ---- */

static she_err_t train_sft(rm_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    long long total = she_conf_get_int(c, "rm.steps"), save_every = she_conf_get_int(c, "rm.save.every");
    int B = (int)she_conf_get_int(c, "rm.batch");
    she_sft_set_t *set = she_rm_sft_set(&r->rc, r->tok, &r->sp, r->train->samples, &r->ex_train);
    if (set->n < 1) {
        she_sft_set_free(set);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "no reward-model training sequence");
    }
    she_log_info(r->lg, "reward-model SFT: %d sequences (%ld skipped), %zu tokens, longest %d",
                 set->n, set->n_skipped, set->n_tokens, set->max_len);
    double lr = she_conf_get_double(c, "rm.lr");
    she_lr_schedule_t sched = {.kind = SHE_LR_COSINE, .max_lr = (float)lr,
                               .min_lr = (float)(lr / 10),
                               .warmup_steps = she_conf_get_int(c, "rm.warmup"),
                               .total_steps = total};
    she_adamw_config_t hp = she_adamw_defaults();
    hp.beta2 = 0.95f;
    hp.weight_decay = 0.1f;
    /* the stage's device copy: downloaded before each save and at the end of the stage */
    she_engine_t *eng = NULL;
    she_err_t err = she_engine_new(r->m, r->opt, &r->dev, &eng, errstr, errstr_size);
    if (err != SHE_OK) {
        she_sft_set_free(set);
        return err;
    }
    she_sft_batch_t *batch = she_sft_batch_new(B, she_rm_max_seq(&r->rc));
    int *order = malloc(sizeof(int) * set->n), *idx = malloc(sizeof(int) * B);
    SHE_CHECK_ALLOC(order);
    SHE_CHECK_ALLOC(idx);
    long long order_epoch = -1;
    int tty = isatty(2);
    double t0 = she_now_s(), loss_win = 0;
    int win = 0;
    while (r->step < total && !she_signals_stop_requested()) {
        /* sequence k of the run: position k % n of the epoch k / n's seeded order */
        for (int b = 0; b < B; b++) {
            long long k = r->step * B + b, e = k / set->n;
            if (e != order_epoch) {
                for (int i = 0; i < set->n; i++)
                    order[i] = i;
                she_rng_t rng;
                she_rng_seed(&rng, mix2(r->seed, 0x5f70000u + (uint64_t)e));
                she_shuffle_ints(order, (size_t)set->n, &rng);
                order_epoch = e;
            }
            idx[b] = order[k % set->n];
        }
        she_sft_batch_fill(batch, set, idx, B, r->sp.pad);
        double loss;
        float gn;
        float lr_now = she_lr_at(&sched, r->step);
        err = she_sft_train_step(eng, &hp, lr_now, 1.0f, batch, &loss, &gn, errstr,
                                 errstr_size);
        if (err != SHE_OK)
            break;
        r->step++;
        loss_win += loss;
        win++;
        if (r->step % 20 == 0 || r->step == total) {
            fprintf(r->log, "{\"stage\": \"sft\", \"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, "
                    "\"grad_norm\": %.4f, \"elapsed_s\": %.2f}\n",
                    r->step, loss_win / win, lr_now, gn, she_now_s() - t0);
            fflush(r->log);
            double eta = (she_now_s() - t0) / (double)r->step * (double)(total - r->step);
            fprintf(stderr, "%sreward-model SFT step %lld/%lld  loss %.4f  ETA %.0f s%s",
                    tty ? "\r" : "", r->step, total, loss_win / win, eta, tty ? "  " : "\n");
            loss_win = 0;
            win = 0;
        }
        if (r->step % save_every == 0 && r->step < total) {
            err = she_engine_download(eng, errstr, errstr_size);
            if (err == SHE_OK)
                err = save_last(r, errstr, errstr_size);
            if (err != SHE_OK)
                break;
        }
    }
    if (tty)
        fputc('\n', stderr);
    if (err == SHE_OK)
        err = she_engine_download(eng, errstr, errstr_size);
    free(order);
    free(idx);
    she_sft_batch_free(batch);
    she_sft_set_free(set);
    she_engine_free(eng);
    return err;
}

/* ---- GRPO refinement ---- */

static she_err_t train_grpo(rm_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    long long total = she_conf_get_int(c, "rm.grpo.steps");
    int P = (int)she_conf_get_int(c, "rm.grpo.prompts"), G = (int)she_conf_get_int(c, "rm.grpo.group");
    double margin = she_conf_get_double(c, "rm.grpo.margin");
    /* hard cases: training examples the SFT model gets wrong or is unsure of */
    int n_pool = (int)she_conf_get_int(c, "rm.grpo.pool");
    if (n_pool > r->ex_train.n)
        n_pool = r->ex_train.n;
    int *pool = malloc(sizeof(int) * (r->ex_train.n ? r->ex_train.n : 1));
    SHE_CHECK_ALLOC(pool);
    for (int i = 0; i < r->ex_train.n; i++)
        pool[i] = i;
    she_rng_t rng;
    she_rng_seed(&rng, mix2(r->seed, 0x6a0u));
    she_shuffle_ints(pool, (size_t)r->ex_train.n, &rng);
    she_rm_examples_t probe = {.ex = malloc(sizeof(she_rm_example_t) * (n_pool ? n_pool : 1)),
                               .n = n_pool};
    SHE_CHECK_ALLOC(probe.ex);
    for (int i = 0; i < n_pool; i++)
        probe.ex[i] = r->ex_train.ex[pool[i]]; /* shallow: the strings stay r->ex_train's */
    float *p = malloc(sizeof(float) * (n_pool ? n_pool : 1));
    SHE_CHECK_ALLOC(p);
    she_err_t err = judge_examples(r, r->train, &probe, n_pool, p, errstr, errstr_size);
    int n_hard = 0;
    for (int i = 0; i < n_pool && err == SHE_OK; i++)
        if (p[i] >= 0 && ((p[i] >= 0.5f) != (probe.ex[i].label == 1) || fabs(p[i] - 0.5) < margin))
            pool[n_hard++] = pool[i];
    free(p);
    free(probe.ex);
    if (err == SHE_OK && n_hard == 0) {
        she_log_info(r->lg, "no hard case among %d training examples: no GRPO refinement", n_pool);
        free(pool);
        return SHE_OK;
    }
    she_log_info(r->lg, "GRPO refinement on %d hard cases of %d training examples", n_hard,
                 n_pool);
    int max_q = r->rc.max_prompt + r->rc.max_chain, max_new = r->rc.max_justify + SHE_RM_VERDICT_MAX;
    /* sampling on the device; the learner updates the host copy, uploaded before each sampling */
    she_engine_t *eng = NULL;
    she_engine_sampler_t *smp = NULL;
    she_model_t *ref = NULL;
    she_learner_t *ln = NULL;
    if (err == SHE_OK)
        err = she_engine_new(r->m, NULL, &r->dev, &eng, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_engine_sampler_new(eng, P * G, max_q + max_new, &smp, errstr, errstr_size);
    she_learner_config_t lc = she_learner_defaults();
    lc.temperature = 1.0f;
    lc.loss.kl_beta = 0.0f; /* the reward keeps it honest; no second copy of the model */
    lc.micro_batch = r->m->max_batch;
    lc.mini_batches = 2;
    if (err == SHE_OK)
        err = she_learner_new(r->m, r->opt, ref, &lc, &ln, errstr, errstr_size);
    she_rewarded_group_t *groups = calloc(P, sizeof(*groups));
    int32_t *qids = malloc(sizeof(int32_t) * P * max_q), *out = malloc(sizeof(int32_t) * P * G * max_new);
    float *lp = malloc(sizeof(float) * P * G * max_new);
    int *qlen = malloc(sizeof(int) * P), *label = malloc(sizeof(int) * P), *rowlen = malloc(sizeof(int) * P * G),
        *olen = malloc(sizeof(int) * P * G);
    const int32_t **rows = malloc(sizeof(*rows) * P * G);
    SHE_CHECK_ALLOC(groups);
    SHE_CHECK_ALLOC(qids);
    SHE_CHECK_ALLOC(out);
    SHE_CHECK_ALLOC(lp);
    SHE_CHECK_ALLOC(qlen);
    SHE_CHECK_ALLOC(label);
    SHE_CHECK_ALLOC(rowlen);
    SHE_CHECK_ALLOC(olen);
    SHE_CHECK_ALLOC(rows);
    int32_t stop[1] = {r->sp.eos};
    she_sample_params_t sp = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f,
                              .max_new_tokens = max_new, .stop_ids = stop, .n_stop_ids = 1};
    float lr = (float)she_conf_get_double(c, "rm.grpo.lr");
    double t0 = she_now_s();
    while (err == SHE_OK && r->step < total && !she_signals_stop_requested()) {
        int n = 0;
        for (int k = 0; k < P; k++) {
            const she_rm_example_t *e = &r->ex_train.ex[pool[(r->step * P + k) % n_hard]];
            char es[SHE_ERRSTR_SIZE];
            if (she_rm_encode_query(&r->rc, r->tok, &r->sp, &r->train->samples[e->sample],
                                    e->chain, strlen(e->chain), e->step, qids + (size_t)n * max_q,
                                    &qlen[n], es, sizeof(es)) != SHE_OK)
                continue;
            for (int g = 0; g < G; g++) {
                rows[n * G + g] = qids + (size_t)n * max_q;
                rowlen[n * G + g] = qlen[n];
            }
            groups[n].rollout.n_prompt_tokens = qlen[n];
            groups[n].rollout.prompt_tokens = qids + (size_t)n * max_q;
            groups[n].rollout.n_responses = G;
            label[n++] = e->label;
        }
        if (n == 0)
            break;
        err = she_engine_upload(eng, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_engine_generate(smp, rows, rowlen, n * G, &sp,
                                      mix2(r->seed, 0x9e0000u + (uint64_t)r->step), out, lp, NULL,
                                      olen, NULL, errstr, errstr_size);
        if (err != SHE_OK)
            break;
        she_response_t *resp = calloc((size_t)n * G, sizeof(*resp));
        she_response_reward_t *rew = calloc((size_t)n * G, sizeof(*rew));
        SHE_CHECK_ALLOC(resp);
        SHE_CHECK_ALLOC(rew);
        double right = 0;
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                int b = i * G + g;
                resp[b].tokens = out + (size_t)b * max_new;
                resp[b].logprobs = lp + (size_t)b * max_new;
                resp[b].n_tokens = olen[b];
                char text[SHE_RM_JUSTIFY_TEXT];
                size_t len = 0;
                char es[SHE_ERRSTR_SIZE];
                if (she_tokenizer_decode(r->tok, resp[b].tokens, olen[b], 1, text, sizeof(text),
                                         &len, es, sizeof(es)) != SHE_OK)
                    len = 0;
                int v = she_rm_parse_verdict(text, len);
                int ok = v >= 0 && v == label[i];
                /* a verdict-only reward: the outcome step of the message */
                rew[b].step_rewards[SHE_MSG_STEPS - 1] = (float)ok;
                rew[b].total = (float)ok;
                rew[b].pass = ok;
                right += ok;
            }
            groups[i].rollout.responses = resp + (size_t)i * G;
            groups[i].rewards = rew + (size_t)i * G;
            groups[i].n_rewards = G;
        }
        she_learner_stats_t ls;
        err = she_learner_step(ln, groups, n, lr, &ls, errstr, errstr_size);
        free(resp);
        free(rew);
        if (err != SHE_OK)
            break;
        r->step++;
        fprintf(r->log, "{\"stage\": \"grpo\", \"step\": %lld, \"verdict_acc\": %.4f, \"loss\": "
                "%.6f, \"kl\": %.6f, \"clip_frac\": %.4f, \"grad_norm\": %.4f, \"elapsed_s\": "
                "%.2f}\n",
                r->step, right / (n * G), ls.loss.loss, ls.loss.kl_mean, ls.loss.clip_frac,
                ls.grad_norm, she_now_s() - t0);
        fflush(r->log);
        fprintf(stderr, "%sreward-model GRPO step %lld/%lld  sampled verdict accuracy %.3f%s",
                isatty(2) ? "\r" : "", r->step, total, right / (n * G), isatty(2) ? "  " : "\n");
    }
    if (isatty(2))
        fputc('\n', stderr);
    free(groups);
    free(qids);
    free(out);
    free(lp);
    free(qlen);
    free(label);
    free(rowlen);
    free(olen);
    free(rows);
    free(pool);
    she_learner_free(ln);
    she_engine_sampler_free(smp);
    she_engine_free(eng);
    return err;
}

/* ---- the command ---- */

static she_err_t setup(rm_run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    snprintf(r->last_dir, sizeof(r->last_dir), "%s/last", r->out);
    snprintf(r->log_path, sizeof(r->log_path), "%s/train_log.jsonl", r->out);
    snprintf(r->eval_path, sizeof(r->eval_path), "%s/rm_eval.json", r->out);
    if (mkdir(r->out, 0777) != 0 && errno != EEXIST)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "mkdir %s: %s", r->out, strerror(errno));
    const char *lex = she_conf_get(c, "rm.lexicons");
    if (lex[0] && she_is_dir(lex))
        SHE_TRY(she_sft_load_lexicons(lex, 0, &r->brands, &r->materials, errstr, errstr_size));
    else if (lex[0] && strcmp(she_conf_source(c, "rm.lexicons"), "default") != 0)
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no lexicon directory %s", lex);
    she_reader_opts_t ro = {.format = she_conf_get(c, "rm.format"),
                            .columns = she_conf_get(c, "rm.columns"),
                            .label_map = she_conf_get(c, "rm.label.map")};
    she_dataset_t *all = she_dataset_new(), *tr = she_dataset_new(), *va = she_dataset_new();
    she_err_t err = she_dataset_load(all, she_conf_get(c, "rm.data"), &ro, NULL, errstr,
                                     errstr_size);
    if (err == SHE_OK) {
        she_dataset_split_by_query(all, she_conf_get_double(c, "rm.val.fraction"),
                                   (uint64_t)she_conf_get_int(c, "rm.split.seed"), tr, va);
        r->train = subset(tr, she_conf_get_int(c, "rm.samples"), mix2(r->seed, 1));
        r->val = subset(va, she_conf_get_int(c, "rm.eval.samples"), mix2(r->seed, 2));
    }
    she_dataset_free(all);
    she_dataset_free(tr);
    she_dataset_free(va);
    SHE_TRY(err);
    if (r->train->n == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "no labelled training rows");

    const char *init = she_conf_get(c, "rm.init");
    int resume = she_is_dir(r->last_dir);
    const char *src = resume ? r->last_dir : init;
    SHE_TRY(she_ckptdir_verify(src, errstr, errstr_size));
    char path[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", src);
    SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
    SHE_TRY(she_sft_special_ids(r->tok, &r->sp, errstr, errstr_size));
    int B = (int)she_conf_get_int(c, "rm.batch"), jb = (int)she_conf_get_int(c, "rm.judge.batch");
    int rows = B > jb ? B : jb;
    int gr = (int)(she_conf_get_int(c, "rm.grpo.prompts") * she_conf_get_int(c, "rm.grpo.group"));
    rows = rows > gr ? rows : gr;
    SHE_TRY(she_model_load(src, rows, she_rm_max_seq(&r->rc), &r->m, resume ? &r->opt : NULL,
                           errstr, errstr_size));
    if (!r->opt)
        r->opt = she_adamw_new(r->m->n_params);
    r->evals = json_object();
    if (resume) {
        snprintf(path, sizeof(path), "%s/trainer_state.json", r->last_dir);
        json_error_t je;
        json_t *st = json_load_file(path, 0, &je);
        if (!st || !json_is_integer(json_object_get(st, "stage")) ||
            !json_is_integer(json_object_get(st, "step"))) {
            json_decref(st);
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: stage and step required",
                            path);
        }
        r->stage = (int)json_integer_value(json_object_get(st, "stage"));
        r->step = json_integer_value(json_object_get(st, "step"));
        json_t *ev = json_object_get(st, "evals");
        if (json_is_object(ev))
            json_object_update(r->evals, ev);
        json_decref(st);
        she_log_info(r->lg, "resuming from %s (stage %d, step %lld)", r->last_dir, r->stage,
                     r->step);
    }
    /* the policy that writes the judged chains is the init checkpoint, whatever the RM is now */
    she_model_t *policy = NULL;
    if (she_conf_get_int(c, "rm.policy.samples") > 0 && r->stage < 2)
        SHE_TRY(she_model_load(init, 1, r->rc.max_prompt + 96, &policy, NULL, errstr,
                               errstr_size));
    double t0 = she_now_s();
    if (r->stage < 2) {
        err = build_examples(r, policy, r->train, mix2(r->seed, 3), &r->ex_train, errstr,
                             errstr_size);
        if (err == SHE_OK)
            err = build_examples(r, policy, r->val, mix2(r->seed, 4), &r->ex_val, errstr,
                                 errstr_size);
    }
    she_model_free(policy);
    SHE_TRY(err);
    long pos[2] = {0};
    for (int i = 0; i < r->ex_train.n; i++)
        pos[r->ex_train.ex[i].label]++;
    she_log_info(r->lg, "%d training examples (%ld correct, %ld incorrect) from %zu samples, %d "
                 "validation examples from %zu, in %.1f s",
                 r->ex_train.n, pos[1], pos[0], r->train->n, r->ex_val.n, r->val->n,
                 she_now_s() - t0);
    r->log = fopen(r->log_path, "a");
    if (!r->log)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot open %s", r->log_path);
    return SHE_OK;
}

static she_err_t run(rm_run_t *r, char *errstr, size_t errstr_size) {
    if (r->stage == 0) {
        SHE_TRY(train_sft(r, errstr, errstr_size));
        if (she_signals_stop_requested())
            return save_last(r, errstr, errstr_size);
        SHE_TRY(evaluate(r, "sft", errstr, errstr_size));
        r->stage = 1;
        r->step = 0;
        SHE_TRY(save_last(r, errstr, errstr_size));
    }
    if (r->stage == 1) {
        if (she_conf_get_int(r->conf, "rm.grpo.steps") > 0) {
            SHE_TRY(train_grpo(r, errstr, errstr_size));
            if (she_signals_stop_requested())
                return save_last(r, errstr, errstr_size);
            SHE_TRY(evaluate(r, "grpo", errstr, errstr_size));
        }
        r->stage = 2;
        SHE_TRY(save_last(r, errstr, errstr_size));
    }
    she_log_info(r->lg, "reward model in %s, accuracies in %s", r->last_dir, r->eval_path);
    return SHE_OK;
}

int she_cmd_train_rm(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she train-rm --init POLICY_DIR --data FILE --out DIR [options]",
        "Trains the generative stepwise reward model: given the prompt, a chain of thought and\n"
        "a step 1..4, it writes what the step should say and [Correct] or [Incorrect].  SFT on\n"
        "truth chains, corrupted steps and the policy's own chains judged by ground truth\n"
        "(step truth where the data has it, label decomposition otherwise), then optional GRPO\n"
        "on hard cases.  Reports per-step verdict accuracy on held-out queries (rm_eval.json).",
        rm_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    char errstr[SHE_ERRSTR_SIZE];
    rm_run_t r = {.conf = env.conf, .lg = env.lg, .rc = she_rm_defaults()};
    r.out = she_conf_get(env.conf, "rm.out");
    if (env.n_positional > 0) {
        fprintf(stderr, "she train-rm: unexpected argument '%s' (a boolean flag takes no value: "
                "--flag=false)\n", env.positional[0]);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (!she_conf_get(env.conf, "rm.init") || !she_conf_get(env.conf, "rm.data") || !r.out ||
        !r.out[0]) {
        fprintf(stderr, "she train-rm: --init DIR, --data FILE and --out DIR are required\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    r.seed = (uint64_t)she_conf_get_int(env.conf, "rm.seed");
    she_signals_install();
    /* the device first: a wrong --device fails before the data is read */
    she_err_t err = she_device_select(she_conf_get(env.conf, "rm.device"), &r.dev, errstr,
                                      sizeof(errstr));
    if (err == SHE_OK)
        err = setup(&r, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = run(&r, errstr, sizeof(errstr));
    she_lexicon_free(r.brands);
    she_lexicon_free(r.materials);
    she_dataset_free(r.train);
    she_dataset_free(r.val);
    she_rm_examples_free(&r.ex_train);
    she_rm_examples_free(&r.ex_val);
    she_model_free(r.m);
    she_adamw_free(r.opt);
    she_tokenizer_free(r.tok);
    json_decref(r.evals);
    if (r.log)
        fclose(r.log);
    if (err != SHE_OK)
        she_log_error(env.lg, "%s", errstr);
    rc = she_cmd_exit_status(err);
    she_cmd_fini(&env);
    return rc;
}
