/* evaluate_cmd.c -- `she evaluate`: greedy judging of a labelled log (or its validation split)
 * with one checkpoint, or two side by side (--compare A B), next to the majority-class and
 * lexical baselines fitted on the training side of the same split (or --train FILE); every
 * metric of trainer/eval.h, written as JSON and Markdown.
 *
 * `she evaluate --follow` is the streaming evaluator: it follows the checkpoint announcements
 * on she.checkpoints through a policy watch (core/policy_watch.h: every policy is verified
 * before it is loaded; malformed announcements go to the dead-letter topic), judges the same
 * held-out rows with each new policy, and publishes an evaluation record (schemas/
 * evaluation.avsc) on she.evaluations keyed by the version, the she_eval_* gauges on /metrics
 * and a log line.  Like the watch, it takes the newest announced version when several arrive
 * during one evaluation (the ones between are not evaluated), and it evaluates only policies
 * of the architecture and tokenizer of the first one it loaded.  Stops on SIGTERM, between
 * two batches of rows (an evaluation cut short publishes nothing). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"
#include "cmd.h"
#include "commands.h"
#include "dataset.h"
#include "messages.h"
#include "policy_watch.h"
#include "signals.h"
#include "stream.h"
#include "trainer/baselines.h"
#include "trainer/eval.h"
#include "trainer/judge.h"
#include "trainer/sft.h"

static const she_conf_def_t eval_defs[] = {
    {"eval.model", SHE_CONF_STR, "", "checkpoint directory (model + tokenizer.json)", 0, 0, NULL,
     "model"},
    {"eval.compare", SHE_CONF_STR, "",
     "--compare A B: checkpoints A and B side by side on the same rows", 0, 0, NULL, "compare"},
    {"eval.data", SHE_CONF_STR, NULL, "labelled log to evaluate (CSV or JSON Lines)", 0, 0, NULL,
     "data"},
    {"eval.format", SHE_CONF_ENUM, "auto", "reader format", 0, 0, "auto|csv|jsonl|homedepot",
     "format"},
    {"eval.columns", SHE_CONF_STR, "", "column mapping", 0, 0, NULL, "columns"},
    {"eval.label.map", SHE_CONF_STR, "", "label map (rules or preset)", 0, 0, NULL, "label-map"},
    {"eval.split", SHE_CONF_ENUM, "all", "rows to evaluate: the whole file, or one side of the "
     "split by query (as `she train-sft` computes it)", 0, 0, "all|val|train", "split"},
    {"eval.val.fraction", SHE_CONF_DOUBLE, "0.15", "validation share of queries (--split)", 0,
     0.9, NULL, "val-fraction"},
    {"eval.split.seed", SHE_CONF_INT, "1", "seed of the split by query", 0, 9007199254740991.0,
     NULL, "split-seed"},
    {"eval.train", SHE_CONF_STR, "",
     "labelled file to fit the baselines on (default: the training side of the split; with "
     "--split all, the evaluated rows themselves)", 0, 0, NULL, "train"},
    {"eval.out", SHE_CONF_STR, "", "write PREFIX.json and PREFIX.md ('' = Markdown on stdout)",
     0, 0, NULL, "out"},
    {"eval.limit", SHE_CONF_INT, "0", "evaluate only the first N rows (0 = all)", 0, 1e12, NULL,
     "limit"},
    {"eval.batch", SHE_CONF_INT, "64", "rows generated together", 1, 1024, NULL, "batch"},
    {"eval.max.prompt", SHE_CONF_INT, "128", "prompt tokens (the item text is cut to fit)", 2,
     4096, NULL, NULL},
    {"eval.max.new", SHE_CONF_INT, "128", "answer tokens", 1, 4096, NULL, NULL},
    {"eval.device", SHE_CONF_STR, "cpu",
     "where judging runs: cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs", 0, 0, NULL,
     "device"},
    {"eval.lexicons", SHE_CONF_STR, "../shared/data/homedepot/lexicons",
     "brand/material lexicons for the teacher step reference ('' = none)", 0, 0, NULL,
     "lexicons"},
    {"eval.lexicon.min.count", SHE_CONF_INT, "0", "keep lexicon rows with cnt_attribute >= this",
     0, 1e9, NULL, NULL},
    {"eval.title", SHE_CONF_STR, "", "report title (default: names the data and the split)", 0,
     0, NULL, "title"},
    {"eval.follow", SHE_CONF_BOOL, "false",
     "evaluate every policy announced on she.checkpoints, publish on she.evaluations", 0, 0,
     NULL, "follow"},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9471", "/metrics address with --follow (0 = off)",
     0, 0, NULL, "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* One judged checkpoint. */
typedef struct system {
    const char *dir;
    char name[256];
    she_judge_result_t *res;
    she_eval_row_t *rows;
    she_cot_t *teacher; /* step reference for rows without step truth */
    she_eval_metrics_t *m;
    int n_teacher;
    long n_tokens;
    double seconds;
} system_t;

typedef struct prog {
    she_log_t *lg;
    const char *name;
    double t0;
    int next_pct;
} prog_t;

static void on_progress(int done, int total, void *opaque) {
    prog_t *p = opaque;
    int pct = (int)(100.0 * done / total);
    if (pct >= p->next_pct || done == total) {
        double dt = she_now_s() - p->t0;
        she_log_info(p->lg, "%s: %d/%d rows judged (%.0f s, ETA %.0f s)", p->name, done, total, dt,
                     done ? dt * (total - done) / done : 0.0);
        p->next_pct = pct + 10;
    }
}

static void judge_opts(const she_conf_t *conf, she_judge_opts_t *jo) {
    she_judge_opts_default(jo);
    jo->max_batch = (int)she_conf_get_int(conf, "eval.batch");
    jo->max_prompt = (int)she_conf_get_int(conf, "eval.max.prompt");
    jo->max_new_tokens = (int)she_conf_get_int(conf, "eval.max.new");
    jo->device = she_conf_get(conf, "eval.device");
}

/* Judges ds with j and computes sy's metrics.  With stoppable set, a stop request (SIGTERM)
 * between two batches ends it early with SHE_ERR_TIMEOUT and no metrics. */
static she_err_t measure(system_t *sy, she_judge_t *j, int max_batch, const she_dataset_t *ds,
                         const she_lexicon_t *brands, const she_lexicon_t *materials,
                         int stoppable, she_log_t *lg, char *errstr, size_t errstr_size) {
    int n = (int)ds->n;
    if (!sy->res) {
        sy->res = calloc((size_t)n, sizeof(*sy->res));
        sy->rows = calloc((size_t)n, sizeof(*sy->rows));
        sy->teacher = calloc((size_t)n, sizeof(*sy->teacher));
        SHE_CHECK_ALLOC(sy->res);
        SHE_CHECK_ALLOC(sy->rows);
        SHE_CHECK_ALLOC(sy->teacher);
    }
    she_eval_free(sy->m);
    sy->m = NULL;
    sy->n_tokens = 0;
    she_log_info(lg, "%s: judging %d rows (greedy, batch %d)", sy->dir, n, max_batch);
    prog_t p = {.lg = lg, .name = sy->name, .t0 = she_now_s(), .next_pct = 10};
    she_err_t err = SHE_OK;
    /* batch by batch, so a stop request is seen between two */
    for (int off = 0; off < n && err == SHE_OK; off += max_batch) {
        if (stoppable && she_signals_stop_requested())
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "%s: stopped after %d of %d rows", sy->dir, off, n);
        int cnt = n - off < max_batch ? n - off : max_batch;
        err = she_judge_run(j, ds->samples + off, cnt, sy->res + off, NULL, NULL, errstr,
                            errstr_size);
        on_progress(off + cnt, n, &p);
    }
    sy->seconds = she_now_s() - p.t0;
    if (err != SHE_OK)
        return err;
    for (int i = 0; i < n; i++)
        sy->n_tokens += sy->res[i].n_tokens;
    she_judge_eval_rows(ds->samples, sy->res, n, brands, materials, sy->teacher, sy->rows,
                        &sy->n_teacher);
    return she_eval_compute(sy->rows, n, 1, &sy->m, errstr, errstr_size);
}

static she_err_t judge_system(system_t *sy, const she_dataset_t *ds, const she_conf_t *conf,
                              const she_lexicon_t *brands, const she_lexicon_t *materials,
                              she_log_t *lg, char *errstr, size_t errstr_size) {
    char path[4200];
    she_tokenizer_t *tok = NULL;
    she_model_t *m = NULL;
    she_judge_t *j = NULL;
    snprintf(path, sizeof(path), "%s/tokenizer.json", sy->dir);
    she_err_t err = she_tokenizer_load(path, &tok, errstr, errstr_size);
    /* the judge only samples: the training activations need not be larger than one row */
    if (err == SHE_OK)
        err = she_model_load(sy->dir, 1, 16, &m, NULL, errstr, errstr_size);
    she_judge_opts_t jo;
    judge_opts(conf, &jo);
    if (err == SHE_OK)
        err = she_judge_new(m, tok, &jo, &j, errstr, errstr_size);
    if (err == SHE_OK)
        err = measure(sy, j, jo.max_batch, ds, brands, materials, 0, lg, errstr, errstr_size);
    she_judge_free(j);
    she_model_free(m);
    she_tokenizer_free(tok);
    return err;
}

static void system_free(system_t *sy) {
    free(sy->res);
    free(sy->rows);
    free(sy->teacher);
    she_eval_free(sy->m);
}

static she_err_t load(const she_conf_t *conf, const char *path, she_dataset_t *ds, she_log_t *lg,
                      char *errstr, size_t errstr_size) {
    she_reader_opts_t ro = {.format = she_conf_get(conf, "eval.format"),
                            .columns = she_conf_get(conf, "eval.columns"),
                            .label_map = she_conf_get(conf, "eval.label.map")};
    she_reader_stats_t st;
    SHE_TRY(she_dataset_load(ds, path, &ro, &st, errstr, errstr_size));
    she_log_info(lg, "%s: %lld rows, %lld read, %lld bad", path, st.n_rows, st.n_ok, st.n_bad);
    for (int i = 0; i < st.n_messages; i++)
        she_log_warn(lg, "%s", st.messages[i]);
    return SHE_OK;
}

/* Adds run facts to the writer's JSON document. */
static she_err_t write_json(const char *path, const she_eval_report_t *rep, json_t *meta,
                            char *errstr, size_t errstr_size) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    if (!mf)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "open_memstream failed");
    she_err_t err = she_eval_write_json(mf, rep, errstr, errstr_size);
    fclose(mf);
    json_t *doc = NULL;
    if (err == SHE_OK) {
        json_error_t je;
        doc = json_loadb(buf, len, 0, &je);
        if (!doc)
            err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "report JSON: %s", je.text);
    }
    free(buf);
    if (err != SHE_OK)
        return err;
    json_object_set(doc, "meta", meta);
    she_outfile_t of;
    err = she_outfile_open(&of, path, errstr, errstr_size);
    if (err == SHE_OK) {
        int rc = json_dumpf(doc, of.f, JSON_INDENT(2));
        fputc('\n', of.f);
        err = she_outfile_close(&of, rc == 0, errstr, errstr_size);
        if (err == SHE_OK && rc != 0)
            err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", path);
    }
    json_decref(doc);
    return err;
}

static she_err_t write_markdown(FILE *f, const she_eval_report_t *rep, const char *notes,
                                char *errstr, size_t errstr_size) {
    SHE_TRY(she_eval_write_markdown(f, rep, errstr, errstr_size));
    if (fprintf(f, "\n## Notes\n\n%s", notes) < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "write failed");
    return SHE_OK;
}

/* The rows to evaluate (ev) and, when fit is not NULL, the other side of the split, on which
 * the baselines are fitted. */
static void select_rows(const she_conf_t *conf, const she_dataset_t *all, she_dataset_t *ev,
                        she_dataset_t *fit) {
    const char *split = she_conf_get(conf, "eval.split");
    if (strcmp(split, "all") == 0) {
        for (size_t i = 0; i < all->n; i++)
            she_dataset_append_copy(ev, &all->samples[i]);
        return;
    }
    she_dataset_t *other = she_dataset_new();
    int val = strcmp(split, "val") == 0;
    she_dataset_split_by_query(all, she_conf_get_double(conf, "eval.val.fraction"),
                               (uint64_t)she_conf_get_int(conf, "eval.split.seed"),
                               val ? other : ev, val ? ev : other);
    for (size_t i = 0; fit && i < other->n; i++)
        she_dataset_append_copy(fit, &other->samples[i]);
    she_dataset_free(other);
}

/* Keeps the first eval.limit rows; SHE_ERR_INVALID when none are left. */
static she_err_t limit_rows(const she_conf_t *conf, const char *data, she_dataset_t *ev,
                            char *errstr, size_t errstr_size) {
    long long limit = she_conf_get_int(conf, "eval.limit");
    while (limit > 0 && (long long)ev->n > limit)
        she_sample_clear(&ev->samples[--ev->n]);
    if (ev->n == 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: no rows to evaluate", data);
    return SHE_OK;
}

/* ---- --follow ---- */

typedef struct follower {
    she_log_t *lg;
    she_stream_t *st;
    she_policy_watch_t *pw;
    she_judge_t *j;
    int max_batch;
    const she_dataset_t *ev;
    char dataset[1024]; /* what the records name as the held-out set */
    const she_lexicon_t *brands, *materials;
    system_t sy;
    she_metric_t *m_macro, *m_good, *m_acc, *m_fail;
    she_metric_series_t *s_version, *s_total;
} follower_t;

static she_err_t follower_metrics(follower_t *f, she_metrics_t *reg, char *errstr,
                                  size_t errstr_size) {
    she_metric_t *m_version, *m_total;
    SHE_TRY(she_metrics_gauge(reg, "she_eval_macro_f1",
                              "Macro F1 over L1..L4 on the held-out set, per policy version.",
                              "version", &f->m_macro, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_eval_good_f1",
                              "Good (L3+L4) F1 on the held-out set, per policy version.",
                              "version", &f->m_good, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_eval_accuracy",
                              "Grade accuracy on the held-out set, per policy version.",
                              "version", &f->m_acc, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_eval_format_failure_ratio",
                              "Share of held-out answers that did not parse, per policy version.",
                              "version", &f->m_fail, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_eval_policy_version",
                              "Version of the policy evaluated last.", NULL, &m_version, errstr,
                              errstr_size));
    SHE_TRY(she_metrics_counter(reg, "she_evaluations_total",
                                "Evaluations published on she.evaluations.", NULL, &m_total,
                                errstr, errstr_size));
    f->s_version = she_metrics_series(m_version, NULL);
    f->s_total = she_metrics_series(m_total, NULL);
    return SHE_OK;
}

/* Evaluates the watch's live policy and publishes the record; a failure is logged (the
 * follower goes on with the next policy). */
static void evaluate_live(follower_t *f) {
    char errstr[SHE_ERRSTR_SIZE], sha[65], key[32];
    int64_t version = she_policy_watch_version(f->pw);
    const char *dir = she_policy_watch_dir(f->pw);
    f->sy.dir = dir;
    snprintf(f->sy.name, sizeof(f->sy.name), "v%" PRId64, version);
    she_err_t err = she_judge_sync(f->j, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = measure(&f->sy, f->j, f->max_batch, f->ev, f->brands, f->materials, 1, f->lg,
                      errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_policy_manifest_sha256(dir, "model.safetensors", sha, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(f->lg, "v%" PRId64 " not evaluated: %s", version, errstr);
        return;
    }
    const she_eval_class_t *c = &f->sy.m->all;
    she_msg_metric_t per_class[SHE_N_GRADES];
    for (int g = 0; g < SHE_N_GRADES; g++)
        per_class[g] = (she_msg_metric_t){(char *)she_grade_name((she_grade_t)(g + 1)), c->f1[g]};
    she_evaluation_record_t rec = {.policy_version = version,
                                   .checkpoint_uri = (char *)dir,
                                   .sha256 = sha,
                                   .dataset = f->dataset,
                                   .rows = c->n,
                                   .macro_f1 = c->macro_f1,
                                   .good_f1 = c->good_f1,
                                   .accuracy = c->accuracy,
                                   .format_failure_rate = c->fail_rate,
                                   .per_class_f1 = per_class,
                                   .n_per_class_f1 = SHE_N_GRADES,
                                   .created_ms = she_stream_now_ms()};
    const uint8_t *buf;
    size_t len;
    snprintf(key, sizeof(key), "%" PRId64, version);
    err = she_msg_encode_evaluation(she_stream_codec(f->st), &rec, &buf, &len, errstr,
                                    sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_produce(f->st, "evaluations", key, strlen(key), buf, len, errstr,
                                 sizeof(errstr));
    if (err == SHE_OK) /* delivered before it is reported as published */
        err = she_stream_commit(f->st, 30000, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(f->lg, "evaluation of v%" PRId64 " not published: %s", version, errstr);
        return;
    }
    const char *label[] = {key};
    she_metrics_set(she_metrics_series(f->m_macro, label), c->macro_f1);
    she_metrics_set(she_metrics_series(f->m_good, label), c->good_f1);
    she_metrics_set(she_metrics_series(f->m_acc, label), c->accuracy);
    she_metrics_set(she_metrics_series(f->m_fail, label), c->fail_rate);
    she_metrics_set(f->s_version, (double)version);
    she_metrics_inc(f->s_total);
    she_log_info(f->lg, "evaluated v%" PRId64 " (%s): macro F1 %.4f, Good F1 %.4f, accuracy "
                 "%.4f, format failures %.4f on %ld rows in %.1f s (%.0f tokens/s); published "
                 "on %s",
                 version, dir, c->macro_f1, c->good_f1, c->accuracy, c->fail_rate, c->n,
                 f->sy.seconds, f->sy.seconds > 0 ? f->sy.n_tokens / f->sy.seconds : 0.0,
                 she_stream_topic_name("evaluations"));
}

/* The --follow loop: waits for the first usable policy, evaluates it and every newer one
 * until SIGTERM. */
static she_err_t follow_checkpoints(const she_conf_t *conf, she_log_t *lg, const she_dataset_t *ev,
                                    const char *data, const she_lexicon_t *brands,
                                    const she_lexicon_t *materials, char *errstr,
                                    size_t errstr_size) {
    she_signals_install();
    follower_t f = {.lg = lg, .ev = ev, .brands = brands, .materials = materials};
    const char *split = she_conf_get(conf, "eval.split");
    const char *first = she_conf_get_int(conf, "eval.limit") > 0 ? "first " : "";
    if (strcmp(split, "all") == 0)
        snprintf(f.dataset, sizeof(f.dataset), "%s (all rows; %s%zu rows)", data, first, ev->n);
    else
        snprintf(f.dataset, sizeof(f.dataset), "%s (%s split by query, fraction %g, seed %lld; "
                 "%s%zu rows)", data, split, she_conf_get_double(conf, "eval.val.fraction"),
                 she_conf_get_int(conf, "eval.split.seed"), first, ev->n);
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_tokenizer_t *tok = NULL;
    she_stream_opts_t so = {.component = "evaluate", .producer = 1};
    she_err_t err = she_stream_new(conf, lg, reg, &so, &f.st, errstr, errstr_size);
    if (err == SHE_OK)
        err = follower_metrics(&f, reg, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_stream_serve_metrics(she_conf_get(conf, "metrics.listen"), reg, lg, &httpd,
                                       errstr, errstr_size);
    if (err == SHE_OK)
        err = she_policy_watch_new(conf, lg, reg, f.st, &f.pw, errstr, errstr_size);
    if (err == SHE_OK)
        she_log_info(lg, "following %s; held-out set %s", she_stream_topic_name("checkpoints"),
                     f.dataset);
    /* the judge only samples: the training activations need not be larger than one row */
    while (err == SHE_OK && !she_signals_stop_requested()) {
        err = she_policy_watch_start(f.pw, NULL, -1, 1, 16, 5000, errstr, errstr_size);
        if (err == SHE_OK)
            break;
        if (err == SHE_ERR_TIMEOUT) /* nothing usable announced yet: keep waiting */
            err = SHE_OK;
        she_stream_service(f.st);
    }
    if (err == SHE_OK && !she_signals_stop_requested()) {
        char path[4200];
        she_judge_opts_t jo;
        judge_opts(conf, &jo);
        f.max_batch = jo.max_batch;
        snprintf(path, sizeof(path), "%s/tokenizer.json", she_policy_watch_dir(f.pw));
        err = she_tokenizer_load(path, &tok, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_judge_new(she_policy_watch_model(f.pw), tok, &jo, &f.j, errstr,
                                errstr_size);
    }
    if (err == SHE_OK && !she_signals_stop_requested()) {
        evaluate_live(&f);
        while (!she_signals_stop_requested()) {
            if (she_policy_watch_poll(f.pw))
                evaluate_live(&f);
            else
                she_signals_sleep_ms(200);
            she_stream_service(f.st);
        }
        she_log_info(lg, "stopping (SIGTERM); policy in use v%" PRId64,
                     she_policy_watch_version(f.pw));
    }
    she_judge_free(f.j);
    she_tokenizer_free(tok);
    she_policy_watch_free(f.pw);
    she_httpd_free(httpd);
    she_stream_free(f.st);
    system_free(&f.sy);
    she_metrics_free(reg);
    return err;
}

int she_cmd_evaluate(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp,
        "she evaluate (--model DIR | --compare A B | --follow) --data FILE [--split val] "
        "[--out PREFIX]",
        "Greedy judging of a labelled log with a checkpoint: per-class F1 (L1..L4), Good F1,\n"
        "accuracy, macro F1, format failures, per-step accuracy, breakdowns by query type and\n"
        "domain, confusion matrix and the ranking view, next to the majority-class and\n"
        "lexical baselines, as PREFIX.json and PREFIX.md.  --split val evaluates the\n"
        "validation queries of the same split `she train-sft` makes (same --val-fraction and\n"
        "--split-seed).  Rows without step ground truth get the teacher's label\n"
        "decomposition as step reference (the report says so).  --follow evaluates every\n"
        "policy announced on she.checkpoints on the same rows and publishes the results on\n"
        "she.evaluations and /metrics, until SIGTERM.",
        eval_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *conf = env.conf;
    she_log_t *lg = env.lg;
    char errstr[SHE_ERRSTR_SIZE];
    const char *data = she_conf_get(conf, "eval.data");
    const char *model = she_conf_get(conf, "eval.model");
    const char *cmp = she_conf_get(conf, "eval.compare");
    const char *split = she_conf_get(conf, "eval.split");
    int n_sys = cmp[0] ? 2 : 1;
    int follow = she_conf_get_bool(conf, "eval.follow");
    if (follow && (!data || model[0] || cmp[0] || env.n_positional != 0 ||
                   she_conf_get(conf, "eval.out")[0])) {
        fprintf(stderr, "she evaluate --follow: needs --data FILE and takes no --model, "
                        "--compare or --out (policies come from she.checkpoints)\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (!follow && (!data || (!cmp[0] && !model[0]) ||
                    (cmp[0] && (model[0] || env.n_positional != 1)) ||
                    (!cmp[0] && env.n_positional != 0))) {
        fprintf(stderr, "she evaluate: need --data FILE and either --model DIR or --compare A B\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    system_t sys[2];
    memset(sys, 0, sizeof(sys));
    sys[0].dir = cmp[0] ? cmp : model;
    sys[1].dir = cmp[0] ? env.positional[0] : NULL;
    for (int i = 0; i < n_sys && !follow; i++) {
        struct stat st;
        if (stat(sys[i].dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "she evaluate: no checkpoint directory %s\n", sys[i].dir);
            she_cmd_fini(&env);
            return SHE_EXIT_USAGE;
        }
        snprintf(sys[i].name, sizeof(sys[i].name), "%s%s", n_sys == 2 ? (i ? "B: " : "A: ") : "",
                 sys[i].dir);
    }

    she_err_t err = SHE_OK;
    she_lexicon_t *brands = NULL, *materials = NULL;
    she_dataset_t *all = she_dataset_new(), *ev = she_dataset_new(), *fit = she_dataset_new();
    she_eval_metrics_t *m_major = NULL, *m_lex = NULL;
    she_eval_row_t *brow = NULL;
    json_t *meta = json_object();
    char notes[2048] = "", title[1024];
    double val_fraction = she_conf_get_double(conf, "eval.val.fraction");
    uint64_t split_seed = (uint64_t)she_conf_get_int(conf, "eval.split.seed");
    const char *train_path = she_conf_get(conf, "eval.train");
    const char *fit_desc;

    const char *lex = she_conf_get(conf, "eval.lexicons");
    if (lex[0]) {
        struct stat st;
        if (stat(lex, &st) == 0 && S_ISDIR(st.st_mode))
            err = she_sft_load_lexicons(lex, (int)she_conf_get_int(conf, "eval.lexicon.min.count"),
                                        &brands, &materials, errstr, sizeof(errstr));
        else if (strcmp(she_conf_source(conf, "eval.lexicons"), "default") != 0)
            err = she_errf(SHE_ERR_NOT_FOUND, errstr, sizeof(errstr), "no lexicon directory %s",
                           lex);
    }
    if (err == SHE_OK)
        err = load(conf, data, all, lg, errstr, sizeof(errstr));
    if (err != SHE_OK)
        goto done;
    select_rows(conf, all, ev, train_path[0] ? NULL : fit);
    if (follow) {
        err = limit_rows(conf, data, ev, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = follow_checkpoints(conf, lg, ev, data, brands, materials, errstr,
                                     sizeof(errstr));
        goto done;
    }
    if (train_path[0]) {
        err = load(conf, train_path, fit, lg, errstr, sizeof(errstr));
        if (err != SHE_OK)
            goto done;
        fit_desc = train_path;
    } else if (strcmp(split, "all") == 0) {
        for (size_t i = 0; i < ev->n; i++)
            she_dataset_append_copy(fit, &ev->samples[i]);
        fit_desc = "the evaluated rows themselves (no --train, --split all)";
        she_log_warn(lg, "baselines are fitted on the evaluated rows: pass --train or --split");
    } else {
        fit_desc = strcmp(split, "val") == 0 ? "the training side of the split"
                                             : "the validation side of the split";
    }
    err = limit_rows(conf, data, ev, errstr, sizeof(errstr));
    if (err != SHE_OK)
        goto done;
    int n = (int)ev->n;
    she_log_info(lg, "evaluating %d rows (%s); baselines fitted on %zu rows", n, split, fit->n);

    /* baselines */
    she_grade_t major;
    she_lexical_t lx;
    err = she_majority_fit(fit->samples, (int)fit->n, &major, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_lexical_fit(fit->samples, (int)fit->n, &lx, errstr, sizeof(errstr));
    if (err != SHE_OK)
        goto done;
    brow = calloc((size_t)n, sizeof(*brow));
    SHE_CHECK_ALLOC(brow);
    she_judge_eval_rows(ev->samples, NULL, n, NULL, NULL, NULL, brow, NULL);
    for (int i = 0; i < n; i++)
        brow[i].pred = major;
    err = she_eval_compute(brow, n, 0, &m_major, errstr, sizeof(errstr));
    for (int i = 0; i < n && err == SHE_OK; i++)
        brow[i].pred = she_lexical_predict(&lx, ev->samples[i].query, ev->samples[i].item_title);
    if (err == SHE_OK)
        err = she_eval_compute(brow, n, 0, &m_lex, errstr, sizeof(errstr));
    if (err != SHE_OK)
        goto done;

    for (int i = 0; i < n_sys && err == SHE_OK; i++)
        err = judge_system(&sys[i], ev, conf, brands, materials, lg, errstr, sizeof(errstr));
    if (err != SHE_OK)
        goto done;

    /* the report */
    she_eval_report_entry_t entries[4];
    int ne = 0;
    for (int i = 0; i < n_sys; i++)
        entries[ne++] = (she_eval_report_entry_t){sys[i].name, sys[i].m};
    char major_name[64], lex_name[96];
    snprintf(major_name, sizeof(major_name), "majority class (%s)", she_grade_name(major));
    snprintf(lex_name, sizeof(lex_name), "lexical rule (t = %d/%d/%d)", lx.t[0], lx.t[1], lx.t[2]);
    entries[ne++] = (she_eval_report_entry_t){major_name, m_major};
    entries[ne++] = (she_eval_report_entry_t){lex_name, m_lex};
    she_eval_compare_t cmpr = {0};
    if (n_sys == 2) {
        cmpr.name_a = sys[0].name;
        cmpr.name_b = sys[1].name;
        err = she_eval_compare(sys[0].rows, sys[1].rows, n, &cmpr, errstr, sizeof(errstr));
    } else {
        cmpr.name_a = sys[0].name;
        cmpr.name_b = "lexical rule";
        for (int i = 0; i < n; i++)
            brow[i].pred = she_lexical_predict(&lx, ev->samples[i].query,
                                               ev->samples[i].item_title);
        err = she_eval_compare(sys[0].rows, brow, n, &cmpr, errstr, sizeof(errstr));
    }
    if (err != SHE_OK)
        goto done;
    if (strcmp(split, "all") == 0)
        snprintf(title, sizeof(title), "%s: %s, all %d rows", she_conf_get(conf, "eval.title")[0]
                 ? she_conf_get(conf, "eval.title") : "Evaluation", data, n);
    else
        snprintf(title, sizeof(title), "%s: %s, %s split by query (fraction %g, seed %llu), %d "
                 "rows", she_conf_get(conf, "eval.title")[0] ? she_conf_get(conf, "eval.title")
                 : "Evaluation", data, split, val_fraction, (unsigned long long)split_seed, n);
    size_t nl = 0;
    nl += (size_t)snprintf(notes + nl, sizeof(notes) - nl,
                           "- Greedy decoding; a row whose answer does not parse is a format "
                           "failure and counts as wrong.\n"
                           "- Baselines fitted on %s (%zu rows): majority class %s; lexical "
                           "overlap thresholds %d/%d/%d (training macro F1 %.2f).\n",
                           fit_desc, fit->n, she_grade_name(major), lx.t[0], lx.t[1], lx.t[2],
                           100 * lx.train_macro_f1);
    if (sys[0].n_teacher > 0)
        nl += (size_t)snprintf(
            notes + nl, sizeof(notes) - nl,
            "- Step reference: %d of %d rows have no step ground truth; for them the per-step "
            "accuracy is measured against the TEACHER's label decomposition (steps 1-2 read "
            "from the text by the lexicon reader, steps 3-4 derived from the gold grade; "
            "trainer/COT_FORMAT.md), not against annotation.\n",
            sys[0].n_teacher, n);
    for (int i = 0; i < n_sys; i++)
        nl += (size_t)snprintf(notes + nl, sizeof(notes) - nl,
                               "- %s: %ld tokens generated in %.1f s (%.0f tokens/s).\n",
                               sys[i].name, sys[i].n_tokens, sys[i].seconds,
                               sys[i].seconds > 0 ? sys[i].n_tokens / sys[i].seconds : 0.0);
    she_eval_report_t rep = {.title = title, .entries = entries, .n_entries = ne,
                             .compare = &cmpr};

    json_object_set_new(meta, "data", json_string(data));
    json_object_set_new(meta, "split", json_string(split));
    json_object_set_new(meta, "val_fraction", json_real(val_fraction));
    json_object_set_new(meta, "split_seed", json_integer((json_int_t)split_seed));
    json_object_set_new(meta, "rows", json_integer(n));
    json_object_set_new(meta, "baseline_fit", json_string(fit_desc));
    json_object_set_new(meta, "baseline_fit_rows", json_integer((json_int_t)fit->n));
    json_object_set_new(meta, "majority_grade", json_string(she_grade_name(major)));
    json_t *t = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(t, json_integer(lx.t[i]));
    json_object_set_new(meta, "lexical_thresholds", t);
    json_object_set_new(meta, "step_reference",
                        json_string(sys[0].n_teacher > 0 ? "teacher label decomposition "
                                                           "(no step ground truth)"
                                                         : "step ground truth"));
    json_object_set_new(meta, "teacher_reference_rows", json_integer(sys[0].n_teacher));
    json_t *ck = json_array();
    for (int i = 0; i < n_sys; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "dir", json_string(sys[i].dir));
        json_object_set_new(o, "generated_tokens", json_integer(sys[i].n_tokens));
        json_object_set_new(o, "seconds", json_real(sys[i].seconds));
        json_object_set_new(o, "tokens_per_s",
                            json_real(sys[i].seconds > 0 ? sys[i].n_tokens / sys[i].seconds : 0));
        json_array_append_new(ck, o);
    }
    json_object_set_new(meta, "checkpoints", ck);
    json_object_set_new(meta, "notes", json_string(notes));

    const char *out = she_conf_get(conf, "eval.out");
    if (out[0]) {
        char path[4200];
        snprintf(path, sizeof(path), "%s.json", out);
        err = write_json(path, &rep, meta, errstr, sizeof(errstr));
        if (err == SHE_OK) {
            snprintf(path, sizeof(path), "%s.md", out);
            she_outfile_t of;
            err = she_outfile_open(&of, path, errstr, sizeof(errstr));
            if (err == SHE_OK) {
                err = write_markdown(of.f, &rep, notes, errstr, sizeof(errstr));
                she_err_t cerr = she_outfile_close(&of, err == SHE_OK, errstr, sizeof(errstr));
                if (err == SHE_OK)
                    err = cerr;
            }
        }
        if (err == SHE_OK)
            she_log_info(lg, "wrote %s.json and %s.md", out, out);
    } else {
        err = write_markdown(stdout, &rep, notes, errstr, sizeof(errstr));
    }
    for (int i = 0; i < n_sys && err == SHE_OK; i++)
        she_log_info(lg, "%s: macro F1 %.2f, Good F1 %.2f, accuracy %.2f, format failures %.2f%%",
                     sys[i].name, 100 * sys[i].m->all.macro_f1, 100 * sys[i].m->all.good_f1,
                     100 * sys[i].m->all.accuracy, 100 * sys[i].m->all.fail_rate);
    if (err == SHE_OK)
        she_log_info(lg, "lexical baseline macro F1 %.2f, majority %.2f",
                     100 * m_lex->all.macro_f1, 100 * m_major->all.macro_f1);

done:
    if (err != SHE_OK)
        she_log_error(lg, "%s", errstr);
    for (int i = 0; i < 2; i++)
        system_free(&sys[i]);
    she_eval_free(m_major);
    she_eval_free(m_lex);
    free(brow);
    json_decref(meta);
    she_dataset_free(all);
    she_dataset_free(ev);
    she_dataset_free(fit);
    she_lexicon_free(brands);
    she_lexicon_free(materials);
    she_cmd_fini(&env);
    if (err == SHE_OK)
        return SHE_EXIT_OK;
    return she_cmd_exit_status(err);
}
