/* sft_cmd.c -- `she train-sft`: supervised fine-tuning of the relevance policy on a labelled
 * log, split by query into train / validation, with a tokenizer trained on the training
 * prompts and teacher chains (or reused), greedy validation every N steps, the best checkpoint
 * by validation macro F1 in OUT/best, the latest in OUT/last, and exact resume from OUT/last.
 *
 * Exact resume: the data order of an epoch is a pure function of (seed, epoch); OUT/last holds
 * the parameters, AdamW's moments and step, the tokenizer and trainer_state.json (step, best so
 * far); the engine has no other random state.  So N steps in one run and N/2 + N/2 across a
 * restart give bit-identical parameters (tests/test_sft.c checks it), given the same data,
 * options and thread count.
 *
 * --device cuda[:N] runs the steps, the validation loss and the judging on that device
 * (core/engine.h); the host copy of the model and AdamW's state is refreshed from the device
 * before every checkpoint, so checkpoints and resume are the same on either device. */
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
#include "bench.h"
#include "ckptdir.h"
#include "cmd.h"
#include "commands.h"
#include "dataset.h"
#include "engine.h"
#include "signals.h"
#include "trainer/eval.h"
#include "trainer/judge.h"
#include "trainer/sft.h"

static const she_conf_def_t sft_defs[] = {
    {"sft.data", SHE_CONF_STR, NULL, "labelled training log (CSV or JSON Lines)", 0, 0, NULL,
     "data"},
    {"sft.format", SHE_CONF_ENUM, "auto", "reader format", 0, 0, "auto|csv|jsonl|homedepot",
     "format"},
    {"sft.columns", SHE_CONF_STR, "", "column mapping, e.g. query=search_term,title=...", 0, 0,
     NULL, "columns"},
    {"sft.label.map", SHE_CONF_STR, "", "label map (rules or preset: grades, homedepot)", 0, 0,
     NULL, "label-map"},
    {"sft.out", SHE_CONF_STR, NULL, "output directory (best/, last/, train_log.jsonl)", 0, 0,
     NULL, "out"},
    {"sft.tokenizer", SHE_CONF_STR, "", "reuse this tokenizer.json instead of training one", 0, 0,
     NULL, "tokenizer"},
    {"sft.vocab", SHE_CONF_INT, "4096", "vocabulary size of a trained tokenizer", 260, 1 << 20,
     NULL, "vocab"},
    {"sft.model", SHE_CONF_STR, "small", "policy preset (c1, c2, small, base)", 0, 0, NULL,
     "model"},
    {"sft.model.config", SHE_CONF_STR, "",
     "a Hugging Face config.json instead of the preset (vocab_size follows the tokenizer)", 0, 0,
     NULL, "model-config"},
    {"sft.init", SHE_CONF_STR, "", "start from this checkpoint directory (and its tokenizer)", 0,
     0, NULL, "init"},
    {"sft.init.std", SHE_CONF_DOUBLE, "0.02", "std of the random initialisation", 0, 1, NULL,
     NULL},
    {"sft.lexicons", SHE_CONF_STR, "../shared/data/homedepot/lexicons",
     "directory of brand/material lexicons for teacher chains ('' = none)", 0, 0, NULL,
     "lexicons"},
    {"sft.lexicon.min.count", SHE_CONF_INT, "0", "keep lexicon rows with cnt_attribute >= this",
     0, 1e9, NULL, NULL},
    {"sft.val.fraction", SHE_CONF_DOUBLE, "0.15", "share of queries held out for validation", 0,
     0.9, NULL, "val-fraction"},
    {"sft.split.seed", SHE_CONF_INT, "1", "seed of the split by query", 0, 9007199254740991.0,
     NULL, "split-seed"},
    {"sft.seed", SHE_CONF_INT, "1", "seed of the initialisation and the data order", 0,
     9007199254740991.0, NULL, "seed"},
    {"sft.lr", SHE_CONF_DOUBLE, "1e-3", "peak learning rate", 1e-9, 10, NULL, "lr"},
    {"sft.lr.min.ratio", SHE_CONF_DOUBLE, "0.1", "cosine floor as a share of the peak", 0, 1,
     NULL, NULL},
    {"sft.schedule", SHE_CONF_ENUM, "cosine", "learning-rate schedule after warm-up", 0, 0,
     "cosine|constant", "schedule"},
    {"sft.warmup", SHE_CONF_INT, "100", "warm-up steps", 0, 1e9, NULL, "warmup"},
    {"sft.batch", SHE_CONF_INT, "32", "sequences per step", 1, 4096, NULL, "batch"},
    {"sft.seq", SHE_CONF_INT, "192", "max tokens per sequence (the item text is cut to fit)", 16,
     2048, NULL, "seq"},
    {"sft.epochs", SHE_CONF_DOUBLE, "1", "passes over the training part (when max-steps is 0)",
     0.001, 1e6, NULL, "epochs"},
    {"sft.max.steps", SHE_CONF_INT, "0", "optimizer steps in all (0 = from epochs)", 0, 1e12,
     NULL, "max-steps"},
    {"sft.stop.after", SHE_CONF_INT, "0",
     "stop this run after so many steps, keeping the schedule (0 = run to the end)", 0, 1e12,
     NULL, "stop-after"},
    {"sft.weight.decay", SHE_CONF_DOUBLE, "0.1", "AdamW weight decay on matrices", 0, 10, NULL,
     "weight-decay"},
    {"sft.beta2", SHE_CONF_DOUBLE, "0.95", "AdamW beta2", 0, 0.99999, NULL, NULL},
    {"sft.class.weight", SHE_CONF_DOUBLE, "0",
     "class balance of the loss: each sequence weighs (1/share of its grade)^this (0 = plain "
     "mean over answer tokens, 1 = every grade weighs the same)", 0, 2, NULL, "class-weight"},
    {"sft.step.weights", SHE_CONF_STR, "1,1,1,1,1",
     "loss weight of answer tokens of chain steps 1..5 (e.g. 1,1,4,4,4 stresses the decisions "
     "over the text read back in steps 1-2)", 0, 0, NULL, "step-weights"},
    {"sft.clip", SHE_CONF_DOUBLE, "1.0", "global gradient-norm clip (0 = off)", 0, 1e6, NULL,
     "clip"},
    {"sft.eval.every", SHE_CONF_INT, "500", "validate every N steps (and at the end; 0 = only "
     "at the end)", 0, 1e12, NULL, "eval-every"},
    {"sft.eval.rows", SHE_CONF_INT, "512", "validation rows judged per validation (0 = all)", 0,
     1e9, NULL, "eval-rows"},
    {"sft.eval.batch", SHE_CONF_INT, "64", "rows generated together when validating", 1, 1024,
     NULL, NULL},
    {"sft.eval.max.prompt", SHE_CONF_INT, "128", "prompt tokens when judging", 2, 4096, NULL,
     NULL},
    {"sft.eval.max.new", SHE_CONF_INT, "128", "answer tokens when judging", 1, 4096, NULL, NULL},
    {"sft.device", SHE_CONF_STR, "cpu",
     "where training and validation run: cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs "
     "(checkpoints are the same)", 0, 0, NULL, "device"},
    {"sft.log.every", SHE_CONF_INT, "20", "steps between log lines (train_log.jsonl, and the "
     "progress line when stderr is not a terminal)", 1, 1e9, NULL, "log-every"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* Everything one run holds. */
typedef struct run {
    she_conf_t *conf;
    she_log_t *lg;
    const char *out;
    char last_dir[4096], best_dir[4096], log_path[4096];
    she_lexicon_t *brands, *materials;
    she_dataset_t *train, *val;      /* split by query */
    she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_model_t *m;                  /* the host copy: checkpoints are written from it */
    she_adamw_t *opt;
    she_device_t dev;
    she_engine_t *eng;               /* m and opt on dev: every step and validation */
    she_adamw_config_t hp;
    she_lr_schedule_t sched;
    float clip;
    she_sft_set_t *train_set;
    she_dataset_t *eval_ds;          /* the validation rows judged at each validation */
    she_sft_set_t *eval_set;         /* their sequences, for the validation loss */
    she_judge_t *judge;
    she_judge_result_t *eval_res;
    she_eval_row_t *eval_rows;
    she_sft_batch_t *batch;
    int B, seq;
    uint64_t seed;
    long long step, total_steps, steps_per_epoch;
    double best_f1;
    long long best_step;
    FILE *log;
} run_t;

/* The order of epoch e: a seeded shuffle, then, within windows of 32 batches, sequences sorted
 * by length and the window's batches shuffled again, so a batch pads little (the batch's T is
 * its longest row) while every sequence still comes once per epoch.  A pure function of
 * (seed, epoch). */
static void epoch_order(const she_sft_set_t *set, uint64_t seed, long long epoch, int B,
                        int *order) {
    she_rng_t rng;
    she_rng_seed(&rng, she_hash_mix(seed ^ she_hash_mix((uint64_t)epoch + 0x5f7u)));
    for (int i = 0; i < set->n; i++)
        order[i] = i;
    she_shuffle_ints(order, (size_t)set->n, &rng);
    int win = 32 * B;
    int *tmp = malloc((size_t)win * sizeof(int));
    int *bidx = malloc(32 * sizeof(int));
    SHE_CHECK_ALLOC(tmp);
    SHE_CHECK_ALLOC(bidx);
    for (int w0 = 0; w0 + win <= set->n; w0 += win) {
        int *o = order + w0;
        /* stable insertion sort by length (windows are small) */
        for (int i = 1; i < win; i++) {
            int v = o[i], k = i;
            while (k > 0 && set->len[o[k - 1]] > set->len[v]) {
                o[k] = o[k - 1];
                k--;
            }
            o[k] = v;
        }
        for (int b = 0; b < 32; b++)
            bidx[b] = b;
        she_shuffle_ints(bidx, 32, &rng);
        for (int b = 0; b < 32; b++)
            memcpy(tmp + b * B, o + bidx[b] * B, (size_t)B * sizeof(int));
        memcpy(o, tmp, (size_t)win * sizeof(int));
    }
    free(tmp);
    free(bidx);
}

/* ---- checkpoints and state ---- */

static she_err_t write_state(const run_t *r, const char *dir, char *errstr, size_t errstr_size) {
    json_t *st = json_object();
    json_object_set_new(st, "step", json_integer(r->step));
    json_object_set_new(st, "total_steps", json_integer(r->total_steps));
    json_object_set_new(st, "steps_per_epoch", json_integer(r->steps_per_epoch));
    json_object_set_new(st, "epoch", json_integer(r->step / r->steps_per_epoch));
    json_object_set_new(st, "seed", json_integer((json_int_t)r->seed));
    json_object_set_new(st, "best_macro_f1", json_real(r->best_f1));
    json_object_set_new(st, "best_step", json_integer(r->best_step));
    json_object_set_new(st, "n_train", json_integer(r->train_set->n));
    json_object_set_new(st, "n_val", json_integer((json_int_t)r->val->n));
    json_t *cf = json_object();
    static const char *keys[] = {"sft.data", "sft.format", "sft.columns", "sft.label.map",
                                 "sft.val.fraction", "sft.split.seed", "sft.seed", "sft.lr",
                                 "sft.schedule", "sft.warmup", "sft.batch", "sft.seq",
                                 "sft.epochs", "sft.max.steps", "sft.weight.decay", "sft.clip", "sft.class.weight", "sft.step.weights",
                                 "sft.lexicons", NULL};
    for (int i = 0; keys[i]; i++) {
        const char *v = she_conf_get(r->conf, keys[i]);
        json_object_set_new(cf, keys[i], json_string(v ? v : ""));
    }
    json_object_set_new(st, "config", cf);
    char path[4400];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    int rc = json_dump_file(st, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(st);
    if (rc != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", path);
    return SHE_OK;
}

/* Atomically writes a checkpoint: model (+ optimizer), tokenizer, trainer state. */
static she_err_t save_ckpt(const run_t *r, const char *final_dir, int with_opt, char *errstr,
                           size_t errstr_size) {
    char tmp[4200], path[4300];
    SHE_TRY(she_engine_download(r->eng, errstr, errstr_size));
    SHE_TRY(she_ckptdir_begin(final_dir, tmp, sizeof(tmp), errstr, errstr_size));
    she_err_t err = she_model_write_files(r->m, with_opt ? r->opt : NULL, tmp, errstr,
                                          errstr_size);
    snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
    if (err == SHE_OK)
        err = she_tokenizer_save(r->tok, path, errstr, errstr_size);
    if (err == SHE_OK)
        err = write_state(r, tmp, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, final_dir, errstr, errstr_size);
    if (err != SHE_OK)
        she_ckptdir_abort(tmp);
    return err;
}

static she_err_t read_state(run_t *r, const char *dir, char *errstr, size_t errstr_size) {
    char path[4400];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    if (!st)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s:%d: %s", path, je.line, je.text);
    json_t *step = json_object_get(st, "step"), *best = json_object_get(st, "best_macro_f1");
    json_t *bstep = json_object_get(st, "best_step");
    she_err_t err = SHE_OK;
    if (!json_is_integer(step) || !json_is_number(best) || !json_is_integer(bstep)) {
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                       "%s: step, best_macro_f1 and best_step are required", path);
    } else {
        r->step = json_integer_value(step);
        r->best_f1 = json_number_value(best);
        r->best_step = json_integer_value(bstep);
        /* options that change what the resumed steps compute: warn, the user may mean it */
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

/* ---- validation ---- */

typedef struct val_result {
    double loss, seconds;
    she_eval_class_t cls;
} val_result_t;

static she_err_t validate(run_t *r, val_result_t *vr, char *errstr, size_t errstr_size) {
    double t0 = she_now_s();
    int n = (int)r->eval_ds->n;
    SHE_TRY(she_judge_run(r->judge, r->eval_ds->samples, n, r->eval_res, NULL, NULL, errstr,
                          errstr_size));
    she_judge_eval_rows(r->eval_ds->samples, r->eval_res, n, NULL, NULL, NULL, r->eval_rows,
                        NULL);
    she_eval_class_compute(r->eval_rows, n, &vr->cls);
    /* teacher-forced loss on the same rows, weighted by answer tokens */
    double sum = 0;
    long cnt = 0;
    int idx[4096];
    for (int i = 0; i < r->eval_set->n; i += r->B) {
        int b = r->eval_set->n - i < r->B ? r->eval_set->n - i : r->B;
        for (int k = 0; k < b; k++)
            idx[k] = i + k;
        she_sft_batch_fill(r->batch, r->eval_set, idx, b, r->sp.pad);
        double l;
        SHE_TRY(she_sft_eval_loss(r->eng, r->batch, &l, errstr, errstr_size));
        sum += l * (double)r->batch->n_targets;
        cnt += r->batch->n_targets;
    }
    vr->loss = cnt ? sum / (double)cnt : 0;
    vr->seconds = she_now_s() - t0;
    return SHE_OK;
}

/* ---- set-up ---- */

/* "w1,w2,w3,w4,w5", each > 0. */
static she_err_t parse_step_weights(const char *text, float w[SHE_COT_N_STEPS], char *errstr,
                                    size_t errstr_size) {
    const char *p = text;
    for (int j = 0; j < SHE_COT_N_STEPS; j++) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0 && v < 1e6) || *end != (j < SHE_COT_N_STEPS - 1 ? ',' : '\0'))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "sft.step.weights: want five positive numbers 'w1,w2,w3,w4,w5', got "
                            "'%s'", text);
        w[j] = (float)v;
        p = end + 1;
    }
    return SHE_OK;
}

static she_err_t load_data(run_t *r, char *errstr, size_t errstr_size) {
    she_reader_opts_t ro = {.format = she_conf_get(r->conf, "sft.format"),
                            .columns = she_conf_get(r->conf, "sft.columns"),
                            .label_map = she_conf_get(r->conf, "sft.label.map")};
    const char *path = she_conf_get(r->conf, "sft.data");
    she_dataset_t *all = she_dataset_new();
    she_reader_stats_t st;
    she_err_t err = she_dataset_load(all, path, &ro, &st, errstr, errstr_size);
    if (err == SHE_OK) {
        she_log_info(r->lg, "%s: %lld rows, %lld read, %lld bad", path, st.n_rows, st.n_ok,
                     st.n_bad);
        for (int i = 0; i < st.n_messages; i++)
            she_log_warn(r->lg, "%s", st.messages[i]);
        r->train = she_dataset_new();
        r->val = she_dataset_new();
        she_dataset_split_by_query(all, she_conf_get_double(r->conf, "sft.val.fraction"),
                                   (uint64_t)she_conf_get_int(r->conf, "sft.split.seed"),
                                   r->train, r->val);
        if (r->train->n == 0)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: no training rows", path);
    }
    she_dataset_free(all);
    return err;
}

static she_err_t make_model(run_t *r, int resume, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    const char *init = she_conf_get(c, "sft.init");
    const char *tok_path = she_conf_get(c, "sft.tokenizer");
    char path[4200];
    if (resume) {
        snprintf(path, sizeof(path), "%s/tokenizer.json", r->last_dir);
        SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
        SHE_TRY(she_model_load(r->last_dir, r->B, r->seq, &r->m, &r->opt, errstr, errstr_size));
        return read_state(r, r->last_dir, errstr, errstr_size);
    }
    if (tok_path[0]) {
        SHE_TRY(she_tokenizer_load(tok_path, &r->tok, errstr, errstr_size));
    } else if (init[0]) {
        snprintf(path, sizeof(path), "%s/tokenizer.json", init);
        SHE_TRY(she_tokenizer_load(path, &r->tok, errstr, errstr_size));
    } else {
        double t0 = she_now_s();
        SHE_TRY(she_sft_train_tokenizer(r->train->samples, (int)r->train->n, r->brands,
                                        r->materials, (int)she_conf_get_int(c, "sft.vocab"),
                                        &r->tok, errstr, errstr_size));
        she_log_info(r->lg, "trained a tokenizer of %d ids on %zu training rows in %.1f s",
                     she_tokenizer_vocab_size(r->tok), r->train->n, she_now_s() - t0);
    }
    if (init[0]) {
        SHE_TRY(she_model_load(init, r->B, r->seq, &r->m, NULL, errstr, errstr_size));
    } else {
        she_model_config_t cfg;
        const char *mc = she_conf_get(c, "sft.model.config");
        if (mc[0])
            SHE_TRY(she_model_config_load(mc, &cfg, errstr, errstr_size));
        else
            SHE_TRY(she_model_preset(she_conf_get(c, "sft.model"), &cfg, NULL, NULL, errstr,
                                     errstr_size));
        cfg.vocab_size = she_tokenizer_vocab_size(r->tok);
        SHE_TRY(she_model_new(&cfg, r->B, r->seq, &r->m, errstr, errstr_size));
        she_model_init_weights(r->m, r->seed, (float)she_conf_get_double(c, "sft.init.std"));
    }
    if (she_tokenizer_vocab_size(r->tok) > r->m->cfg.vocab_size)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "the tokenizer has %d ids but the model only %d",
                        she_tokenizer_vocab_size(r->tok), r->m->cfg.vocab_size);
    r->opt = she_adamw_new(r->m->n_params);
    return SHE_OK;
}

/* Picks the validation rows judged at each validation: a seeded sample of eval.rows. */
static void pick_eval_rows(run_t *r) {
    long long cap = she_conf_get_int(r->conf, "sft.eval.rows");
    int n = (int)r->val->n;
    int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    SHE_CHECK_ALLOC(idx);
    for (int i = 0; i < n; i++)
        idx[i] = i;
    she_rng_t rng;
    she_rng_seed(&rng, she_hash_mix(r->seed + 0x7e11u));
    she_shuffle_ints(idx, (size_t)n, &rng);
    int k = cap > 0 && cap < n ? (int)cap : n;
    r->eval_ds = she_dataset_new();
    for (int i = 0; i < k; i++)
        she_dataset_append_copy(r->eval_ds, &r->val->samples[idx[i]]);
    free(idx);
}

/* ---- the progress line ---- */

static void fmt_duration(double s, char *buf, size_t size) {
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
}

static void progress(const run_t *r, int tty, double loss, float lr, double tok_s, double eta) {
    char e[32];
    fmt_duration(eta, e, sizeof(e));
    int w = 20, fill = r->total_steps ? (int)(w * r->step / r->total_steps) : w;
    char bar[32];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    fprintf(stderr, "%s[%s] step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s%s",
            tty ? "\r" : "", bar, r->step, r->total_steps, loss, lr, tok_s, e, tty ? "  " : "\n");
    fflush(stderr);
}

/* ---- the command ---- */

static void run_free(run_t *r) {
    she_lexicon_free(r->brands);
    she_lexicon_free(r->materials);
    she_dataset_free(r->train);
    she_dataset_free(r->val);
    she_dataset_free(r->eval_ds);
    she_tokenizer_free(r->tok);
    she_judge_free(r->judge);
    she_engine_free(r->eng);
    she_model_free(r->m);
    she_adamw_free(r->opt);
    she_sft_set_free(r->train_set);
    she_sft_set_free(r->eval_set);
    she_sft_batch_free(r->batch);
    free(r->eval_res);
    free(r->eval_rows);
    if (r->log)
        fclose(r->log);
}

static she_err_t setup(run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    snprintf(r->last_dir, sizeof(r->last_dir), "%s/last", r->out);
    snprintf(r->best_dir, sizeof(r->best_dir), "%s/best", r->out);
    snprintf(r->log_path, sizeof(r->log_path), "%s/train_log.jsonl", r->out);
    if (mkdir(r->out, 0777) != 0 && errno != EEXIST)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "mkdir %s: %s", r->out, strerror(errno));
    const char *lex = she_conf_get(c, "sft.lexicons");
    if (lex[0]) {
        if (she_is_dir(lex)) {
            SHE_TRY(she_sft_load_lexicons(lex, (int)she_conf_get_int(c, "sft.lexicon.min.count"),
                                          &r->brands, &r->materials, errstr, errstr_size));
        } else if (strcmp(she_conf_source(c, "sft.lexicons"), "default") == 0) {
            she_log_warn(r->lg, "no lexicon directory %s: teacher chains read no brands or "
                         "materials", lex);
        } else {
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no lexicon directory %s",
                            lex);
        }
    }
    SHE_TRY(load_data(r, errstr, errstr_size));
    she_log_info(r->lg, "split by query (val fraction %g, seed %lld): %zu training rows, %zu "
                 "validation rows",
                 she_conf_get_double(c, "sft.val.fraction"), she_conf_get_int(c, "sft.split.seed"),
                 r->train->n, r->val->n);

    int resume = she_is_dir(r->last_dir);
    if (resume) {
        SHE_TRY(she_ckptdir_verify(r->last_dir, errstr, errstr_size));
        she_log_info(r->lg, "resuming from %s", r->last_dir);
    }
    SHE_TRY(make_model(r, resume, errstr, errstr_size));
    SHE_TRY(she_sft_special_ids(r->tok, &r->sp, errstr, errstr_size));
    SHE_TRY(she_engine_new(r->m, r->opt, &r->dev, &r->eng, errstr, errstr_size));
    char dev_name[SHE_DEVICE_NAME_MAX];
    she_device_name(&r->dev, dev_name, sizeof(dev_name));
    she_log_info(r->lg, "policy: %s, %d layers, hidden %d, vocab %d, %.2fM parameters, on %s",
                 r->m->cfg.model_type, r->m->cfg.n_layers, r->m->cfg.hidden_size,
                 r->m->cfg.vocab_size, (double)r->m->n_params / 1e6, dev_name);

    double t0 = she_now_s();
    r->train_set = she_sft_set_build(r->tok, r->train->samples, (int)r->train->n, r->brands,
                                     r->materials, r->seq, errstr, errstr_size);
    if (r->train_set->n_skipped)
        she_log_warn(r->lg, "%ld training rows skipped; the first: %s", r->train_set->n_skipped,
                     errstr);
    if (r->train_set->n < r->B)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%d training sequences, fewer than one batch of %d", r->train_set->n,
                        r->B);
    she_log_info(r->lg, "%d training sequences in %.1f s: %zu tokens (%ld answer), mean %.1f, "
                 "longest %d, %ld with the item text cut to fit %d",
                 r->train_set->n, she_now_s() - t0, r->train_set->n_tokens,
                 r->train_set->n_answer_tokens,
                 (double)r->train_set->n_tokens / r->train_set->n, r->train_set->max_len,
                 r->train_set->n_truncated, r->seq);

    she_sft_set_weight_by_grade(r->train_set, r->train->samples,
                                she_conf_get_double(c, "sft.class.weight"));
    SHE_TRY(parse_step_weights(she_conf_get(c, "sft.step.weights"), r->train_set->step_weight,
                               errstr, errstr_size));
    r->steps_per_epoch = r->train_set->n / r->B;
    long long max_steps = she_conf_get_int(c, "sft.max.steps");
    r->total_steps = max_steps > 0 ? max_steps
                                   : (long long)ceil(she_conf_get_double(c, "sft.epochs") *
                                                     (double)r->steps_per_epoch);
    if (r->total_steps < 1)
        r->total_steps = 1;
    double lr = she_conf_get_double(c, "sft.lr");
    r->sched = (she_lr_schedule_t){
        .kind = strcmp(she_conf_get(c, "sft.schedule"), "cosine") == 0 ? SHE_LR_COSINE
                                                                        : SHE_LR_CONSTANT,
        .max_lr = (float)lr,
        .min_lr = (float)(lr * she_conf_get_double(c, "sft.lr.min.ratio")),
        .warmup_steps = she_conf_get_int(c, "sft.warmup"),
        .total_steps = r->total_steps};
    r->hp = she_adamw_defaults();
    r->hp.beta2 = (float)she_conf_get_double(c, "sft.beta2");
    r->hp.weight_decay = (float)she_conf_get_double(c, "sft.weight.decay");
    r->clip = (float)she_conf_get_double(c, "sft.clip");
    r->batch = she_sft_batch_new(r->B, r->seq);

    if (r->val->n > 0) {
        pick_eval_rows(r);
        r->eval_set = she_sft_set_build(r->tok, r->eval_ds->samples, (int)r->eval_ds->n,
                                        r->brands, r->materials, r->seq, errstr, errstr_size);
        she_judge_opts_t jo;
        she_judge_opts_default(&jo);
        jo.max_batch = (int)she_conf_get_int(c, "sft.eval.batch");
        jo.max_prompt = (int)she_conf_get_int(c, "sft.eval.max.prompt");
        jo.max_new_tokens = (int)she_conf_get_int(c, "sft.eval.max.new");
        SHE_TRY(she_judge_new_engine(r->eng, r->tok, &jo, &r->judge, errstr, errstr_size));
        r->eval_res = calloc(r->eval_ds->n, sizeof(she_judge_result_t));
        r->eval_rows = calloc(r->eval_ds->n, sizeof(she_eval_row_t));
        SHE_CHECK_ALLOC(r->eval_res);
        SHE_CHECK_ALLOC(r->eval_rows);
    } else {
        she_log_warn(r->lg, "no validation rows: OUT/best is the last checkpoint");
    }
    r->log = fopen(r->log_path, "a");
    if (!r->log)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot open %s: %s", r->log_path,
                        strerror(errno));
    return SHE_OK;
}

/* Validates, logs, keeps the best and saves the last. */
static she_err_t checkpoint(run_t *r, int final, char *errstr, size_t errstr_size) {
    if (r->judge) {
        val_result_t vr;
        SHE_TRY(validate(r, &vr, errstr, errstr_size));
        int better = vr.cls.macro_f1 > r->best_f1 || r->best_step < 0;
        if (better) {
            r->best_f1 = vr.cls.macro_f1;
            r->best_step = r->step;
        }
        she_log_info(r->lg, "step %lld: val loss %.4f, macro F1 %.2f, Good F1 %.2f, accuracy "
                     "%.2f, format failures %.2f%% (%d rows, %.1f s)%s",
                     r->step, vr.loss, 100 * vr.cls.macro_f1, 100 * vr.cls.good_f1,
                     100 * vr.cls.accuracy, 100 * vr.cls.fail_rate, (int)vr.cls.n, vr.seconds,
                     better ? " -- best so far" : "");
        fprintf(r->log,
                "{\"step\": %lld, \"val_loss\": %.6f, \"val_macro_f1\": %.6f, \"val_good_f1\": "
                "%.6f, \"val_accuracy\": %.6f, \"val_fail_rate\": %.6f, \"val_rows\": %ld, "
                "\"val_s\": %.3f}\n",
                r->step, vr.loss, vr.cls.macro_f1, vr.cls.good_f1, vr.cls.accuracy,
                vr.cls.fail_rate, vr.cls.n, vr.seconds);
        fflush(r->log);
        if (better)
            SHE_TRY(save_ckpt(r, r->best_dir, 0, errstr, errstr_size));
    } else if (final) {
        r->best_step = r->step;
        SHE_TRY(save_ckpt(r, r->best_dir, 0, errstr, errstr_size));
    }
    return save_ckpt(r, r->last_dir, 1, errstr, errstr_size);
}

static she_err_t train(run_t *r, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    long long eval_every = she_conf_get_int(c, "sft.eval.every");
    long long log_every = she_conf_get_int(c, "sft.log.every");
    long long stop_after = she_conf_get_int(c, "sft.stop.after");
    long long end = r->total_steps;
    if (stop_after > 0 && r->step + stop_after < end)
        end = r->step + stop_after;
    int tty = isatty(2);
    int *order = malloc((size_t)r->train_set->n * sizeof(int));
    SHE_CHECK_ALLOC(order);
    long long order_epoch = -1;
    double t_start = she_now_s(), t_win = t_start, train_s = 0, last_eval_s = 0;
    long long win_steps = 0, run_steps = 0;
    double win_loss = 0, win_tok = 0, win_real = 0, win_gn = 0;
    she_err_t err = SHE_OK;
    if (r->step >= r->total_steps)
        she_log_info(r->lg, "already at step %lld of %lld", r->step, r->total_steps);
    while (r->step < end) {
        if (she_signals_stop_requested()) {
            she_log_warn(r->lg, "stop requested at step %lld: saving %s", r->step, r->last_dir);
            break;
        }
        long long epoch = r->step / r->steps_per_epoch;
        if (epoch != order_epoch) {
            epoch_order(r->train_set, r->seed, epoch, r->B, order);
            order_epoch = epoch;
        }
        const int *idx = order + (r->step % r->steps_per_epoch) * r->B;
        she_sft_batch_fill(r->batch, r->train_set, idx, r->B, r->sp.pad);
        float lr = she_lr_at(&r->sched, r->step);
        double loss, t0 = she_now_s();
        float gn;
        err = she_sft_train_step(r->eng, &r->hp, lr, r->clip, r->batch, &loss, &gn, errstr,
                                 errstr_size);
        if (err != SHE_OK)
            break;
        train_s += she_now_s() - t0;
        r->step++;
        run_steps++;
        win_steps++;
        win_loss += loss;
        win_gn += gn;
        win_tok += (double)r->batch->B * r->batch->T;
        for (int i = 0; i < r->batch->B * r->batch->T; i++)
            win_real += r->batch->mask[i];
        int eval_now = eval_every > 0 && r->step % eval_every == 0 && r->step < r->total_steps;
        if (r->step % log_every == 0 || r->step == end || (tty && win_steps > 0)) {
            double dt = she_now_s() - t_win;
            double tok_s = dt > 0 ? win_tok / dt : 0;
            /* ETA: remaining steps at this run's mean step time, plus the validations left */
            double per_step = train_s / (double)run_steps;
            long long evals_left = eval_every > 0 ? (r->total_steps - r->step) / eval_every : 0;
            double eta = per_step * (double)(r->total_steps - r->step) +
                         (double)(evals_left + 1) * last_eval_s;
            if (tty || r->step % log_every == 0 || r->step == end)
                progress(r, tty, win_loss / win_steps, lr, tok_s, eta);
            if (r->step % log_every == 0 || r->step == end) {
                fprintf(r->log,
                        "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6g, "
                        "\"grad_norm\": %.4f, \"tokens_per_s\": %.1f, \"real_tokens_per_s\": "
                        "%.1f, \"elapsed_s\": %.2f}\n",
                        r->step, (double)r->step / r->steps_per_epoch, win_loss / win_steps, lr,
                        win_gn / win_steps, tok_s, dt > 0 ? win_real / dt : 0,
                        she_now_s() - t_start);
                fflush(r->log);
                win_steps = 0;
                win_loss = win_tok = win_real = win_gn = 0;
                t_win = she_now_s();
            }
        }
        if (eval_now) {
            if (tty)
                fputc('\n', stderr);
            double te = she_now_s();
            err = checkpoint(r, 0, errstr, errstr_size);
            if (err != SHE_OK)
                break;
            last_eval_s = she_now_s() - te;
            t_win = she_now_s();
            win_steps = 0;
            win_loss = win_tok = win_real = win_gn = 0;
        }
    }
    free(order);
    if (tty)
        fputc('\n', stderr);
    if (err != SHE_OK)
        return err;
    if (r->step < r->total_steps) {
        /* stopped early (a signal or --stop-after): keep the state, validate later */
        SHE_TRY(save_ckpt(r, r->last_dir, 1, errstr, errstr_size));
        she_log_info(r->lg, "stopped at step %lld of %lld; resume by running the same command",
                     r->step, r->total_steps);
        return SHE_OK;
    }
    SHE_TRY(checkpoint(r, 1, errstr, errstr_size));
    she_log_info(r->lg, "step %lld of %lld in %.1f s; best validation macro F1 %.2f at step %lld "
                 "(%s), last in %s",
                 r->step, r->total_steps, she_now_s() - t_start, 100 * r->best_f1, r->best_step,
                 r->best_dir, r->last_dir);
    return SHE_OK;
}

int she_cmd_train_sft(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she train-sft --data FILE --out DIR [options]",
        "Supervised fine-tuning of the relevance policy: prompt -> five-step chain of thought\n"
        "(teacher chains from step ground truth or label decomposition, trainer/COT_FORMAT.md),\n"
        "prompt masked out of the loss.  Splits the data by query into train/validation,\n"
        "trains a byte-level BPE tokenizer (or reuses --tokenizer), validates with greedy\n"
        "decoding every --eval-every steps, keeps OUT/best (best validation macro F1) and\n"
        "OUT/last, logs OUT/train_log.jsonl, and resumes from OUT/last when it exists.",
        sft_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    char errstr[SHE_ERRSTR_SIZE];
    run_t r = {.conf = env.conf, .lg = env.lg, .best_f1 = -1, .best_step = -1};
    r.out = she_conf_get(env.conf, "sft.out");
    if (!she_conf_get(env.conf, "sft.data") || !r.out || !r.out[0]) {
        fprintf(stderr, "she train-sft: --data FILE and --out DIR are required\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    r.B = (int)she_conf_get_int(env.conf, "sft.batch");
    r.seq = (int)she_conf_get_int(env.conf, "sft.seq");
    r.seed = (uint64_t)she_conf_get_int(env.conf, "sft.seed");
    she_signals_install();
    /* the device first: a wrong --device fails before the data is read */
    she_err_t err = she_device_select(she_conf_get(env.conf, "sft.device"), &r.dev, errstr,
                                      sizeof(errstr));
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
