/* pipeline_cmd.c -- `she pipeline`: the whole streaming loop on one machine, for a bounded
 * number of learner steps, with a live status line; `make demo` runs it.
 *
 * Steps, each a child `she` process (logs in OUT/logs/):
 *   1. data: `she gen-data` (OUT/data.jsonl) unless --data FILE; the training side of the split
 *      by query (the one `she train-sft` uses) goes to OUT/train.jsonl for the stream, the
 *      validation side is kept for the final evaluation;
 *   2. starting policy: a short `she train-sft` on the data unless --policy DIR;
 *      reward model: a short `she train-rm` from it when the reward mode needs one and --rm DIR
 *      is not given;
 *   3. the embedded broker (`she broker --port 0`), then `she control`, `she reward`,
 *      `she rollout`, `she learn --max-steps N` and `she produce OUT/train.jsonl`, each serving
 *      /metrics on a free port of 127.0.0.1, listed while it runs in OUT/metrics_targets.json
 *      (Prometheus file_sd format; monitoring/prometheus.yml reads it);
 *   4. every second the children's /metrics are read and one status line shows the learner
 *      step, the policy versions (learner / rollouts), the mean reward per step, the pass rate,
 *      the difficulty band and curriculum stage, the throughput and the consumer lag;
 *   5. when the learner has taken its steps: SIGTERM to the others (the broker last), then
 *      `she evaluate --compare` of the last checkpoint against the first (v000000) on the
 *      validation side.
 * A child that dies before the learner is done stops the pipeline (exit status 1).  Extra
 * options reach a child through pipeline.args.<child> (e.g. --set pipeline.args.rollout=
 * "--set rollout.batch=8"); kafka.* keys are passed to every Kafka client.
 *
 * Not here: restarting crashed children (a supervisor's job: Kubernetes in production). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "commands.h"
#include "dataset.h"
#include "engine.h"
#include "signals.h"

static const she_conf_def_t pipeline_defs[] = {
    {"pipeline.out", SHE_CONF_STR, "pipeline-out", "working directory (data, checkpoints, logs)",
     0, 0, NULL, "out"},
    {"pipeline.data", SHE_CONF_STR, NULL, "labelled log to stream (default: she gen-data)", 0, 0,
     NULL, "data"},
    {"pipeline.format", SHE_CONF_ENUM, "auto", "reader format of --data", 0, 0,
     "auto|csv|jsonl|homedepot", "format"},
    {"pipeline.columns", SHE_CONF_STR, "", "column mapping of --data", 0, 0, NULL, "columns"},
    {"pipeline.label.map", SHE_CONF_STR, "", "label map of --data", 0, 0, NULL, "label-map"},
    {"pipeline.samples", SHE_CONF_INT, "3000", "rows she gen-data writes", 1, 1e9, NULL,
     "samples"},
    {"pipeline.seed", SHE_CONF_INT, "1", "seed of the generated data", 0, 1e15, NULL, "seed"},
    {"pipeline.policy", SHE_CONF_STR, NULL, "starting policy (default: a short she train-sft)", 0,
     0, NULL, "policy"},
    {"pipeline.sft.model", SHE_CONF_STR, "c1", "preset of the SFT policy (c1, c2, small, base)",
     0, 0, NULL, "model"},
    {"pipeline.sft.steps", SHE_CONF_INT, "300", "SFT steps", 1, 1e9, NULL, "sft-steps"},
    {"pipeline.rm", SHE_CONF_STR, NULL, "reward model (default: a short she train-rm when the "
     "mode needs one)", 0, 0, NULL, "rm"},
    {"pipeline.rm.steps", SHE_CONF_INT, "100", "reward-model SFT steps", 1, 1e9, NULL,
     "rm-steps"},
    {"pipeline.reward.mode", SHE_CONF_ENUM, "hybrid", "step rewards", 0, 0,
     "outcome|sum|rm|hybrid", "reward"},
    {"pipeline.lexicons", SHE_CONF_STR, "", "brand/material lexicons for every step ('' = none)",
     0, 0, NULL, "lexicons"},
    {"pipeline.steps", SHE_CONF_INT, "20", "learner steps", 1, 1e12, NULL, "steps"},
    {"pipeline.batch", SHE_CONF_INT, "8", "prompts per learner step", 1, 65536, NULL, "batch"},
    {"pipeline.group", SHE_CONF_INT, "8", "G: responses per prompt", 1, 1024, NULL, "group"},
    {"pipeline.max.new", SHE_CONF_INT, "96", "response tokens", 8, 4096, NULL, "max-new"},
    {"pipeline.checkpoint.every", SHE_CONF_INT, "5", "learner steps between checkpoints", 1,
     1e12, NULL, "checkpoint-every"},
    {"pipeline.max.backlog", SHE_CONF_INT, "-1",
     "rollout.max.backlog of the rollout consumer: -1 = 2 x batch x checkpoint.every, 0 = no "
     "bound", -1, 1e12, NULL, "max-backlog"},
    {"pipeline.lr", SHE_CONF_DOUBLE, "5e-5", "learner learning rate", 0, 10, NULL, "lr"},
    {"pipeline.threads", SHE_CONF_INT, "1", "OpenMP threads per child", 1, 1024, NULL,
     "threads"},
    {"pipeline.device", SHE_CONF_STR, "cpu",
     "where every stage's model runs (train-sft, train-rm, rollout, reward, learn, evaluate): "
     "cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs", 0, 0, NULL, "device"},
    {"pipeline.eval.rows", SHE_CONF_INT, "300", "validation rows in the final evaluation (0 = "
     "all)", 0, 1e12, NULL, "eval-rows"},
    {"pipeline.timeout.s", SHE_CONF_INT, "3600", "give up after this long", 10, 1e9, NULL,
     "timeout"},
    {"pipeline.args.sft", SHE_CONF_STR, "", "extra arguments of she train-sft", 0, 0, NULL, NULL},
    {"pipeline.args.rm", SHE_CONF_STR, "", "extra arguments of she train-rm", 0, 0, NULL, NULL},
    {"pipeline.args.rollout", SHE_CONF_STR, "", "extra arguments of she rollout", 0, 0, NULL,
     NULL},
    {"pipeline.args.reward", SHE_CONF_STR, "", "extra arguments of she reward", 0, 0, NULL, NULL},
    {"pipeline.args.learn", SHE_CONF_STR, "", "extra arguments of she learn", 0, 0, NULL, NULL},
    {"pipeline.args.control", SHE_CONF_STR, "", "extra arguments of she control", 0, 0, NULL,
     NULL},
    {"pipeline.args.produce", SHE_CONF_STR, "", "extra arguments of she produce (e.g. --follow)",
     0, 0, NULL, NULL},
    {"pipeline.args.eval", SHE_CONF_STR, "", "extra arguments of she evaluate", 0, 0, NULL, NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

#define MAX_ARGS 160
#define PATH_CAP 2048

typedef struct argv_buf {
    char *v[MAX_ARGS + 1];
    int n;
} argv_buf_t;

static void arg(argv_buf_t *a, const char *s) {
    SHE_ASSERT(a->n < MAX_ARGS);
    a->v[a->n] = strdup(s);
    SHE_CHECK_ALLOC(a->v[a->n]);
    a->v[++a->n] = NULL;
}

static void argf(argv_buf_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void argf(argv_buf_t *a, const char *fmt, ...) {
    char buf[PATH_CAP * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    arg(a, buf);
}

/* Appends whitespace-separated words of extra (no quoting: values with spaces go in a file). */
static void args_split(argv_buf_t *a, const char *extra) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", extra ? extra : "");
    for (char *save = NULL, *t = strtok_r(buf, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
        arg(a, t);
}

static void args_free(argv_buf_t *a) {
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

typedef struct child {
    const char *name;
    double peak; /* MiB, the highest VmHWM seen while it ran */
    pid_t pid;
    int port; /* /metrics, 0 = none */
    int status, done;
} child_t;

typedef struct pipeline {
    she_conf_t *conf;
    she_log_t *lg;
    char self[PATH_CAP];
    char out[PATH_CAP / 2]; /* so that every path built from it fits in PATH_CAP */
    char bootstrap[256];
    int threads;
} pipeline_t;

/* --device for a stage that runs a model: the same device for all of them. */
static void device_arg(const pipeline_t *p, argv_buf_t *a) {
    arg(a, "--device");
    arg(a, she_conf_get(p->conf, "pipeline.device"));
}

/* kafka.* keys the user gave, for every Kafka client. */
static she_err_t add_kafka(const char *key, const char *value, const char *source, void *opaque,
                           char *errstr, size_t errstr_size) {
    (void)source, (void)errstr, (void)errstr_size;
    argv_buf_t *a = opaque;
    arg(a, "--set");
    argf(a, "kafka.%s=%s", key, value);
    return SHE_OK;
}

/* Starts `she <args>` with stdout and stderr to OUT/logs/<name>.log, in its own process group
 * (a Ctrl-C reaches the pipeline only; it stops the children in order).  threads > 0 sets its
 * OpenMP threads (the streaming children share the cores); 0 leaves the environment's. */
static pid_t spawn(pipeline_t *p, const char *name, argv_buf_t *a, int threads) {
    char log[PATH_CAP + 64];
    snprintf(log, sizeof(log), "%s/logs/%s.log", p->out, name);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        if (threads > 0) {
            char n[16];
            snprintf(n, sizeof(n), "%d", threads);
            setenv("OMP_NUM_THREADS", n, 1);
        }
        execv(p->self, a->v);
        fprintf(stderr, "exec %s: %s\n", p->self, strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        she_log_error(p->lg, "fork: %s", strerror(errno));
    return pid;
}

/* Echoes the last line of a preparation step's log (its progress bar) when it changed. */
static void show_progress(const char *name, const char *log, char *shown, size_t cap) {
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char tail[1024];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof(tail) - 1 ? size - (long)sizeof(tail) + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(tail, 1, sizeof(tail) - 1, f);
    fclose(f);
    tail[n] = '\0';
    while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
        tail[--n] = '\0';
    char *line = tail;
    for (char *c = tail; *c; c++)
        if (*c == '\n' || *c == '\r')
            line = c + 1;
    if (*line && strncmp(line, shown, cap) != 0) {
        fprintf(stderr, "  %s: %s\n", name, line);
        snprintf(shown, cap, "%s", line);
    }
}

/* Runs a preparation step to its end; SHE_ERR_INVALID when it fails (its log is named). */
static she_err_t run_step(pipeline_t *p, const char *name, argv_buf_t *a, char *errstr,
                          size_t errstr_size) {
    double t0 = she_now_s();
    she_log_info(p->lg, "%s ... (log: %s/logs/%s.log)", name, p->out, name);
    pid_t pid = spawn(p, name, a, 0);
    int status = 0;
    char log[PATH_CAP + 64], shown[1024] = "";
    snprintf(log, sizeof(log), "%s/logs/%s.log", p->out, name);
    for (int tick = 1; pid > 0 && waitpid(pid, &status, WNOHANG) == 0; tick++) {
        if (she_signals_stop_requested()) {
            kill(pid, SIGTERM);
            waitpid(pid, &status, 0);
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "stopped during %s", name);
        }
        she_signals_sleep_ms(200);
        if (tick % 50 == 0)
            show_progress(name, log, shown, sizeof(shown));
    }
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s failed (status %d): see %s/logs/%s.log",
                        name, status, p->out, name);
    she_log_info(p->lg, "%s done in %.0f s", name, she_now_s() - t0);
    return SHE_OK;
}

/* A free TCP port on 127.0.0.1 (bound, read, released: a small window for a race). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* GET /metrics from 127.0.0.1:port into buf (NUL-terminated); 0 on failure. */
static int scrape(int port, char *buf, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    size_t n = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        const char *req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
            ssize_t r;
            while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
                n += (size_t)r;
        }
    }
    close(fd);
    buf[n] = '\0';
    return n > 0;
}

/* Sum of the samples of metric `name` whose label text contains `label` (NULL: any); NAN when
 * there is none. */
static double metric(const char *text, const char *name, const char *label) {
    double sum = NAN;
    size_t nl = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) != 0 || (line[nl] != ' ' && line[nl] != '{'))
            continue;
        const char *end = strchr(line, '\n');
        const char *sp = line + nl;
        if (*sp == '{') {
            const char *close = strchr(sp, '}');
            if (!close || (end && close > end))
                continue;
            if (label) {
                char want[128];
                snprintf(want, sizeof(want), "%s", label);
                const char *hit = strstr(sp, want);
                if (!hit || hit > close)
                    continue;
            }
            sp = close + 1;
        } else if (label) {
            continue;
        }
        double v = strtod(sp, NULL);
        sum = isnan(sum) ? v : sum + v;
    }
    return sum;
}

enum { C_BROKER = 0, C_CONTROL, C_REWARD, C_ROLLOUT, C_LEARN, C_PRODUCE, N_CHILDREN };

static void status_line(child_t *ch, double t_start, int tty, int64_t steps) {
    /* The last good scrape of each child stays, so a child that has just exited (the learner
     * at its last step) still shows its final numbers. */
    static char buf[N_CHILDREN][1 << 17], tmp[1 << 17];
    for (int i = C_CONTROL; i < N_CHILDREN; i++)
        if (ch[i].port && !ch[i].done && scrape(ch[i].port, tmp, sizeof(tmp)) &&
            strstr(tmp, "\r\n\r\n"))
            memcpy(buf[i], tmp, sizeof(tmp));
    const char *ln = buf[C_LEARN], *ro = buf[C_ROLLOUT], *co = buf[C_CONTROL], *rw = buf[C_REWARD];
    double step = metric(ln, "she_learner_steps_total", NULL);
    double trained = metric(ln, "she_learner_groups_total", "outcome=\"trained\"");
    double lag = 0;
    for (int i = C_REWARD; i <= C_LEARN; i++) {
        double l = metric(buf[i], "she_consumer_lag_messages", NULL);
        if (!isnan(l))
            lag += l;
    }
    char rewards[64] = "-";
    double r[5];
    int have = 1;
    for (int j = 0; j < 5; j++) {
        char lab[32];
        snprintf(lab, sizeof(lab), "step=\"%d\"", j + 1);
        r[j] = metric(ln, "she_reward_mean", lab);
        have = have && !isnan(r[j]);
    }
    if (have)
        snprintf(rewards, sizeof(rewards), "%.2f/%.2f/%.2f/%.2f/%.2f", r[0], r[1], r[2], r[3],
                 r[4]);
    double el = she_now_s() - t_start;
    double rollouts = metric(ro, "she_rollouts_total", NULL);
    (void)rw;
    fprintf(stderr,
            "%s[%4.0fs] step %.0f/%" PRId64 "  policy v%.0f (rollout v%.0f)  reward/step %s  "
            "pass %.2f  band [%.2f,%.2f] stage %.0f  %.2f samples/s trained, %.2f rollouts/s  "
            "lag %.0f%s",
            tty ? "\r" : "", el, isnan(step) ? 0 : step, steps,
            metric(ln, "she_policy_version", NULL), metric(ro, "she_policy_version", NULL),
            rewards, metric(ln, "she_learner_pass_ratio", NULL),
            metric(co, "she_difficulty_threshold", "bound=\"low\""),
            metric(co, "she_difficulty_threshold", "bound=\"high\""),
            metric(co, "she_curriculum_stage", NULL), isnan(trained) ? 0 : trained / el,
            isnan(rollouts) ? 0 : rollouts / el, lag, tty ? "   " : "\n");
    fflush(stderr);
}

/* waitpid() for one child. */
static pid_t reap(child_t *c, int options) {
    return waitpid(c->pid, &c->status, options);
}

static void stop_child(pipeline_t *p, child_t *c, int timeout_s) {
    if (c->pid <= 0 || c->done)
        return;
    double m = she_cmd_peak_memory_mib((int)c->pid);
    she_log_info(p->lg, "stopping %s (peak memory %.0f MiB)", c->name, m > c->peak ? m : c->peak);
    kill(c->pid, SIGTERM);
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s;) {
        if (reap(c, WNOHANG) == c->pid) {
            c->done = 1;
            return;
        }
        usleep(100000);
    }
    she_log_warn(p->lg, "%s did not stop within %d s: killing it", c->name, timeout_s);
    kill(c->pid, SIGKILL);
    reap(c, 0);
    c->done = 1;
}

/* Data: generated or given; the training side of the split goes to OUT/train.jsonl. */
static she_err_t prepare_data(pipeline_t *p, char *data, size_t cap, char *errstr,
                              size_t errstr_size) {
    she_conf_t *c = p->conf;
    const char *given = she_conf_get(c, "pipeline.data");
    argv_buf_t a = {0};
    if (given) {
        snprintf(data, cap, "%s", given);
    } else {
        snprintf(data, cap, "%s/data.jsonl", p->out);
        arg(&a, "she");
        arg(&a, "gen-data");
        arg(&a, "--n");
        argf(&a, "%lld", she_conf_get_int(c, "pipeline.samples"));
        arg(&a, "--seed");
        argf(&a, "%lld", she_conf_get_int(c, "pipeline.seed"));
        arg(&a, "--out");
        arg(&a, data);
        she_err_t err = run_step(p, "gen-data", &a, errstr, errstr_size);
        args_free(&a);
        SHE_TRY(err);
    }
    she_reader_opts_t ro = {.format = she_conf_get(c, "pipeline.format"),
                            .columns = she_conf_get(c, "pipeline.columns"),
                            .label_map = she_conf_get(c, "pipeline.label.map")};
    she_dataset_t *all = she_dataset_new(), *train = she_dataset_new();
    she_err_t err = she_dataset_load(all, data, &ro, NULL, errstr, errstr_size);
    char path[PATH_CAP + 32];
    snprintf(path, sizeof(path), "%s/train.jsonl", p->out);
    if (err == SHE_OK) {
        /* The split `she train-sft` and `she evaluate --split` use by default. */
        she_dataset_split_by_query(all, 0.15, 1, train, NULL);
        err = she_dataset_save_jsonl(train, path, errstr, errstr_size);
        she_log_info(p->lg, "data: %zu samples, %zu on the training side (streamed), the rest "
                     "held out for evaluation", all->n, train->n);
    }
    she_dataset_free(all);
    she_dataset_free(train);
    return err;
}

static void data_args(pipeline_t *p, argv_buf_t *a, const char *data) {
    she_conf_t *c = p->conf;
    arg(a, "--data");
    arg(a, data);
    arg(a, "--format");
    arg(a, she_conf_get(c, "pipeline.format"));
    arg(a, "--columns");
    arg(a, she_conf_get(c, "pipeline.columns"));
    arg(a, "--label-map");
    arg(a, she_conf_get(c, "pipeline.label.map"));
    arg(a, "--lexicons");
    arg(a, she_conf_get(c, "pipeline.lexicons"));
}

/* The starting policy and, when the reward mode needs one, the reward model. */
static she_err_t prepare_models(pipeline_t *p, const char *data, char *policy, char *rm,
                                size_t cap, char *errstr, size_t errstr_size) {
    she_conf_t *c = p->conf;
    argv_buf_t a = {0};
    she_err_t err = SHE_OK;
    if (she_conf_get(c, "pipeline.policy")) {
        snprintf(policy, cap, "%s", she_conf_get(c, "pipeline.policy"));
    } else {
        snprintf(policy, cap, "%s/sft/last", p->out);
        arg(&a, "she");
        arg(&a, "train-sft");
        data_args(p, &a, data);
        arg(&a, "--out");
        argf(&a, "%s/sft", p->out);
        arg(&a, "--model");
        arg(&a, she_conf_get(c, "pipeline.sft.model"));
        arg(&a, "--max-steps");
        argf(&a, "%lld", she_conf_get_int(c, "pipeline.sft.steps"));
        device_arg(p, &a);
        args_split(&a, she_conf_get(c, "pipeline.args.sft"));
        err = run_step(p, "train-sft", &a, errstr, errstr_size);
        args_free(&a);
        SHE_TRY(err);
    }
    const char *mode = she_conf_get(c, "pipeline.reward.mode");
    rm[0] = '\0';
    if (strcmp(mode, "hybrid") != 0 && strcmp(mode, "rm") != 0)
        return SHE_OK;
    if (she_conf_get(c, "pipeline.rm")) {
        snprintf(rm, cap, "%s", she_conf_get(c, "pipeline.rm"));
        return SHE_OK;
    }
    snprintf(rm, cap, "%s/rm/last", p->out);
    arg(&a, "she");
    arg(&a, "train-rm");
    data_args(p, &a, data);
    arg(&a, "--init");
    arg(&a, policy);
    arg(&a, "--out");
    argf(&a, "%s/rm", p->out);
    arg(&a, "--steps");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.rm.steps"));
    device_arg(p, &a);
    args_split(&a, she_conf_get(c, "pipeline.args.rm"));
    err = run_step(p, "train-rm", &a, errstr, errstr_size);
    args_free(&a);
    return err;
}

/* Common arguments of a streaming child. */
static void stream_args(pipeline_t *p, argv_buf_t *a, const char *cmd, child_t *ch) {
    arg(a, "she");
    arg(a, cmd);
    arg(a, "--bootstrap");
    arg(a, p->bootstrap);
    ch->port = free_port();
    arg(a, "--metrics");
    argf(a, "127.0.0.1:%d", ch->port);
    she_conf_foreach_prefix(p->conf, "kafka.", add_kafka, a, NULL, 0);
}

static she_err_t start_broker(pipeline_t *p, child_t *b, char *errstr, size_t errstr_size) {
    char file[PATH_CAP + 32];
    snprintf(file, sizeof(file), "%s/bootstrap", p->out);
    unlink(file);
    argv_buf_t a = {0};
    arg(&a, "she");
    arg(&a, "broker");
    arg(&a, "--port");
    arg(&a, "0");
    arg(&a, "--bootstrap-file");
    arg(&a, file);
    b->pid = spawn(p, "broker", &a, 1);
    args_free(&a);
    for (double t0 = she_now_s(); she_now_s() - t0 < 30 && b->pid > 0;) {
        FILE *f = fopen(file, "r");
        if (f) {
            int ok = fgets(p->bootstrap, sizeof(p->bootstrap), f) != NULL;
            fclose(f);
            if (ok) {
                p->bootstrap[strcspn(p->bootstrap, "\n")] = '\0';
                she_log_info(p->lg, "embedded broker at %s (pid %d)", p->bootstrap, (int)b->pid);
                return SHE_OK;
            }
        }
        if (waitpid(b->pid, &b->status, WNOHANG) == b->pid)
            break;
        usleep(100000);
    }
    return she_errf(SHE_ERR_IO, errstr, errstr_size, "the broker did not start: see %s/logs/broker.log",
                    p->out);
}

static she_err_t start_children(pipeline_t *p, child_t *ch, const char *policy, const char *rm,
                                char *errstr, size_t errstr_size) {
    she_conf_t *c = p->conf;
    argv_buf_t a = {0};
    char dec[PATH_CAP + 32];
    snprintf(dec, sizeof(dec), "%s/decisions.jsonl", p->out);

    stream_args(p, &a, "control", &ch[C_CONTROL]);
    argf(&a, "--set=control.step.groups=%lld", she_conf_get_int(c, "pipeline.batch"));
    args_split(&a, she_conf_get(c, "pipeline.args.control"));
    ch[C_CONTROL].pid = spawn(p, "control", &a, p->threads);
    args_free(&a);

    stream_args(p, &a, "reward", &ch[C_REWARD]);
    arg(&a, "--policy");
    arg(&a, policy);
    arg(&a, "--mode");
    arg(&a, she_conf_get(c, "pipeline.reward.mode"));
    if (rm[0]) {
        arg(&a, "--rm");
        arg(&a, rm);
    }
    arg(&a, "--lexicons");
    arg(&a, she_conf_get(c, "pipeline.lexicons"));
    device_arg(p, &a);
    args_split(&a, she_conf_get(c, "pipeline.args.reward"));
    ch[C_REWARD].pid = spawn(p, "reward", &a, p->threads);
    args_free(&a);

    stream_args(p, &a, "rollout", &ch[C_ROLLOUT]);
    arg(&a, "--policy");
    arg(&a, policy);
    arg(&a, "--group");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.group"));
    arg(&a, "--max-new");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.max.new"));
    arg(&a, "--decisions-file");
    arg(&a, dec);
    int64_t backlog = she_conf_get_int(c, "pipeline.max.backlog");
    if (backlog < 0) /* two checkpoints' worth: the learner mirrors its offsets at each */
        backlog = 2 * she_conf_get_int(c, "pipeline.batch") *
                  she_conf_get_int(c, "pipeline.checkpoint.every");
    argf(&a, "--set=rollout.max.backlog=%lld", (long long)backlog);
    device_arg(p, &a);
    args_split(&a, she_conf_get(c, "pipeline.args.rollout"));
    ch[C_ROLLOUT].pid = spawn(p, "rollout", &a, p->threads);
    args_free(&a);

    stream_args(p, &a, "learn", &ch[C_LEARN]);
    arg(&a, "--init");
    arg(&a, policy);
    arg(&a, "--dir");
    argf(&a, "%s/learn", p->out);
    arg(&a, "--batch");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.batch"));
    arg(&a, "--max-steps");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.steps"));
    arg(&a, "--checkpoint-every");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.checkpoint.every"));
    arg(&a, "--lr");
    arg(&a, she_conf_get(c, "pipeline.lr"));
    argf(&a, "--set=learn.max.seq=%lld", 128 + she_conf_get_int(c, "pipeline.max.new"));
    device_arg(p, &a);
    args_split(&a, she_conf_get(c, "pipeline.args.learn"));
    ch[C_LEARN].pid = spawn(p, "learn", &a, p->threads);
    args_free(&a);

    stream_args(p, &a, "produce", &ch[C_PRODUCE]);
    args_split(&a, she_conf_get(c, "pipeline.args.produce"));
    argf(&a, "%s/train.jsonl", p->out);
    ch[C_PRODUCE].pid = spawn(p, "produce", &a, p->threads);
    args_free(&a);
    for (int i = C_CONTROL; i < N_CHILDREN; i++)
        if (ch[i].pid <= 0)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot start %s", ch[i].name);
    return SHE_OK;
}

/* OUT/metrics_targets.json: the running children's /metrics addresses, labelled with their
 * component, as Prometheus' file_sd_configs read them (replaced atomically: Prometheus watches
 * the file).  Rewritten when a child ends, so one that is done is not reported down. */
static void write_targets(const pipeline_t *p, const child_t *ch) {
    char path[PATH_CAP + 32], tmp[PATH_CAP + 48];
    snprintf(path, sizeof(path), "%s/metrics_targets.json", p->out);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        she_log_warn(p->lg, "%s: %s", tmp, strerror(errno));
        return;
    }
    fputs("[", f);
    for (int i = 0, n = 0; i < N_CHILDREN; i++)
        if (ch[i].port && ch[i].pid > 0 && !ch[i].done)
            fprintf(f, "%s\n  {\"targets\": [\"127.0.0.1:%d\"], \"labels\": {\"component\": "
                    "\"%s\"}}", n++ ? "," : "", ch[i].port, ch[i].name);
    fputs("\n]\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        she_log_warn(p->lg, "%s: %s", path, strerror(errno));
}

/* The newest checkpoint after v000000 in OUT/learn into last (PATH_CAP); its version, or 0. */
static long long last_checkpoint(const pipeline_t *p, char *last) {
    last[0] = '\0';
    DIR *d = NULL;
    char learn[PATH_CAP / 2 + 16];
    snprintf(learn, sizeof(learn), "%s/learn", p->out);
    long long best = 0;
    struct dirent *de;
    if ((d = opendir(learn)) != NULL) {
        while ((de = readdir(d)) != NULL) {
            char *end;
            long long v = de->d_name[0] == 'v' ? strtoll(de->d_name + 1, &end, 10) : 0;
            if (v > best && *end == '\0')
                best = v;
        }
        closedir(d);
    }
    if (best > 0)
        snprintf(last, PATH_CAP, "%s/v%06lld", learn, best);
    return best;
}

/* Waits for the learner to take its steps, printing the status line.  Returns SHE_OK when it
 * did, else the reason. */
static she_err_t monitor(pipeline_t *p, child_t *ch, char *errstr, size_t errstr_size) {
    int64_t steps = she_conf_get_int(p->conf, "pipeline.steps");
    double timeout = (double)she_conf_get_int(p->conf, "pipeline.timeout.s");
    int tty = isatty(STDERR_FILENO);
    double t0 = she_now_s(), last_line = 0;
    for (;;) {
        for (int i = 0; i < N_CHILDREN; i++) {
            child_t *c = &ch[i];
            double m = c->pid > 0 && !c->done ? she_cmd_peak_memory_mib((int)c->pid) : -1;
            if (m > c->peak)
                c->peak = m;
            if (c->pid <= 0 || c->done || reap(c, WNOHANG) != c->pid)
                continue;
            c->done = 1;
            int ok = WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0;
            if (i == C_LEARN && ok) {
                status_line(ch, t0, tty, steps);
                if (tty)
                    fputc('\n', stderr);
                char last[PATH_CAP];
                long long v = last_checkpoint(p, last);
                she_log_info(p->lg, "learner done: %" PRId64 " steps in %.0f s, last checkpoint "
                             "v%lld (peak memory %.0f MiB)", steps, she_now_s() - t0, v, c->peak);
                return SHE_OK;
            }
            if (i == C_PRODUCE && ok) {
                write_targets(p, ch);
                she_log_info(p->lg, "every sample of %s/train.jsonl is on she.samples "
                             "(produce exited; its peak memory is in logs/produce.log)", p->out);
                continue;
            }
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s exited (status %d) before the learner was done: see %s/logs/%s.log",
                            c->name, c->status, p->out, c->name);
        }
        if (she_signals_stop_requested())
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "stopped (SIGTERM)");
        if (she_now_s() - t0 > timeout)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "the learner did not reach step %" PRId64 " in %.0f s", steps, timeout);
        if (tty || she_now_s() - last_line >= 10) {
            status_line(ch, t0, tty, steps);
            last_line = she_now_s();
        }
        she_signals_sleep_ms(1000);
    }
}

static she_err_t evaluate(pipeline_t *p, const char *data, char *errstr, size_t errstr_size) {
    char learn[PATH_CAP + 16], first[PATH_CAP + 32], last[PATH_CAP];
    snprintf(learn, sizeof(learn), "%s/learn", p->out);
    snprintf(first, sizeof(first), "%s/v000000", learn);
    last_checkpoint(p, last);
    if (!last[0])
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "no checkpoint after v000000 in %s",
                        learn);
    she_conf_t *c = p->conf;
    argv_buf_t a = {0};
    arg(&a, "she");
    arg(&a, "evaluate");
    arg(&a, "--compare");
    arg(&a, first);
    arg(&a, last);
    data_args(p, &a, data);
    arg(&a, "--split");
    arg(&a, "val");
    arg(&a, "--limit");
    argf(&a, "%lld", she_conf_get_int(c, "pipeline.eval.rows"));
    arg(&a, "--out");
    argf(&a, "%s/eval", p->out);
    device_arg(p, &a);
    args_split(&a, she_conf_get(c, "pipeline.args.eval"));
    she_err_t err = run_step(p, "evaluate", &a, errstr, errstr_size);
    args_free(&a);
    SHE_TRY(err);
    char md[PATH_CAP + 32];
    snprintf(md, sizeof(md), "%s/eval.md", p->out);
    FILE *f = fopen(md, "r");
    if (f) {
        char line[1024];
        printf("\n== evaluation: %s (first) vs %s (last), validation queries\n", first, last);
        /* The summary and per-step tables; the rest is in the file. */
        while (fgets(line, sizeof(line), f) && strncmp(line, "## Ranking", 10) != 0)
            fputs(line, stdout);
        printf("(full report: %s)\n", md);
        fclose(f);
    }
    return SHE_OK;
}

int she_cmd_pipeline(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp,
                          "she pipeline [--data FILE [--columns MAP --label-map MAP]] "
                          "[--policy DIR] [--rm DIR] [--steps N] [--out DIR] [options]",
                          "Runs the streaming loop on this machine: the embedded broker, she\n"
                          "produce, control, rollout, reward and learn as child processes, on she\n"
                          "gen-data data by default (or --data FILE) from a short SFT policy (or\n"
                          "--policy DIR), for --steps learner steps, with a live status line;\n"
                          "then evaluates the last checkpoint against the first on held-out\n"
                          "queries. Logs and checkpoints go to --out.",
                          pipeline_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_signals_install();
    char errstr[SHE_ERRSTR_SIZE];
    pipeline_t p = {.conf = env.conf, .lg = env.lg};
    p.threads = (int)she_conf_get_int(env.conf, "pipeline.threads");
    she_device_t dev; /* checked here, so a bad device fails before any stage starts */
    if (she_device_select(she_conf_get(env.conf, "pipeline.device"), &dev, errstr,
                          sizeof(errstr)) != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    ssize_t n = readlink("/proc/self/exe", p.self, sizeof(p.self) - 1);
    if (n <= 0) {
        she_log_error(env.lg, "cannot find the she binary: %s", strerror(errno));
        she_cmd_fini(&env);
        return SHE_EXIT_FAILURE;
    }
    p.self[n] = '\0';
    const char *out = she_conf_get(env.conf, "pipeline.out");
    if (strlen(out) >= sizeof(p.out) - 1) {
        she_log_error(env.lg, "--out: a path shorter than %zu bytes, please", sizeof(p.out) - 1);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    snprintf(p.out, sizeof(p.out), "%s", out);
    char logs[PATH_CAP + 16];
    snprintf(logs, sizeof(logs), "%s/logs", p.out);
    mkdir(p.out, 0777);
    mkdir(logs, 0777);
    static const char *const names[N_CHILDREN] = {"broker", "control", "reward",
                                                  "rollout", "learn", "produce"};
    child_t ch[N_CHILDREN];
    memset(ch, 0, sizeof(ch));
    for (int i = 0; i < N_CHILDREN; i++)
        ch[i].name = names[i];
    char data[PATH_CAP], policy[PATH_CAP], rm[PATH_CAP];
    double t0 = she_now_s();
    she_err_t err = prepare_data(&p, data, sizeof(data), errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = prepare_models(&p, data, policy, rm, sizeof(policy), errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = start_broker(&p, &ch[C_BROKER], errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = start_children(&p, ch, policy, rm, errstr, sizeof(errstr));
    if (err == SHE_OK) {
        write_targets(&p, ch);
        she_log_info(env.lg, "streaming: %lld learner steps of %lld prompts x %lld responses "
                     "(status every second; logs in %s)",
                     she_conf_get_int(env.conf, "pipeline.steps"),
                     she_conf_get_int(env.conf, "pipeline.batch"),
                     she_conf_get_int(env.conf, "pipeline.group"), logs);
        err = monitor(&p, ch, errstr, sizeof(errstr));
    }
    /* Producers first, the broker last: every component can still flush and commit. */
    int order[] = {C_PRODUCE, C_ROLLOUT, C_REWARD, C_LEARN, C_CONTROL, C_BROKER};
    for (int i = 0; i < N_CHILDREN; i++)
        stop_child(&p, &ch[order[i]], 30);
    write_targets(&p, ch);
    if (err == SHE_OK)
        err = evaluate(&p, data, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        rc = SHE_EXIT_FAILURE;
    } else {
        she_log_info(env.lg, "pipeline done in %.0f s; checkpoints in %s/learn, report %s/eval.md",
                     she_now_s() - t0, p.out, p.out);
        rc = SHE_EXIT_OK;
    }
    she_cmd_fini(&env);
    return rc;
}
