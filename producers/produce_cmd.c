/* produce_cmd.c -- `she produce`: search logs (CSV / JSON Lines; files, directories or stdin,
 * optionally followed like `tail -f`) -> she.samples, keyed by sample id, with an idempotent
 * producer.
 *
 * Bad rows are skipped, counted and reported with FILE:LINE (the reader's messages, the first
 * SHE_READER_MAX_MESSAGES of each file); good rows go on.  A file whose header makes every row
 * unreadable is reported and skipped; the exit status is then 1.  Following: a file is read to
 * its end and then watched for appended bytes; when it shrinks or is replaced (log rotation)
 * the rest of the old one is finished and the new one read from its start; a directory is
 * rescanned for new files; stdin is read until it closes.  Without --follow the command ends
 * when every input is read and every sample delivered; with it, on SIGTERM. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "commands.h"
#include "messages.h"
#include "reader.h"
#include "signals.h"
#include "stream.h"

static const she_conf_def_t produce_defs[] = {
    {"produce.format", SHE_CONF_ENUM, "auto", "input format (auto: by file extension)", 0, 0,
     "auto|csv|jsonl|homedepot", "format"},
    {"produce.columns", SHE_CONF_STR, NULL, "column mapping, e.g. query=search_term,title=name",
     0, 0, NULL, "columns"},
    {"produce.label.map", SHE_CONF_STR, NULL, "label map text or preset (grades, homedepot)", 0,
     0, NULL, "label-map"},
    {"produce.follow", SHE_CONF_BOOL, "false", "keep reading appended data like tail -f", 0, 0,
     NULL, "follow"},
    {"produce.follow.interval.ms", SHE_CONF_INT, "200", "how often followed inputs are checked",
     10, 60000, NULL, NULL},
    {"produce.flush.timeout.ms", SHE_CONF_INT, "0",
     "give up waiting for deliveries at the end after this long (0 = until SIGTERM)", 0, 86400000,
     NULL, NULL},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9469", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

#define READ_CHUNK 65536
#define MAX_INPUTS 1024

/* One input being read: a file, a file of a directory, or stdin. */
typedef struct input {
    char path[4096];
    int fd;             /* -1 when closed */
    ino_t ino;
    off_t offset;       /* bytes fed so far */
    she_reader_t *rd;
    int n_reported;     /* reader messages already logged */
    long long n_bad;    /* the reader's bad rows already counted */
    int done;           /* finished and closed */
    int failed;         /* fatal header error */
} input_t;

typedef struct producer {
    she_conf_t *conf;
    she_log_t *lg;
    she_stream_t *st;
    she_reader_opts_t opts;
    int follow;
    input_t *inputs[MAX_INPUTS];
    int n_inputs;
    char dirs[16][4096];
    int n_dirs;
    long long n_produced, n_bad, n_files, n_failed_files;
} producer_t;

static int has_input_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcmp(dot, ".csv") == 0 || strcmp(dot, ".jsonl") == 0 ||
                   strcmp(dot, ".ndjson") == 0 || strcmp(dot, ".json") == 0);
}

static she_err_t open_input(producer_t *p, input_t *in, char *errstr, size_t errstr_size) {
    const char *fmt;
    SHE_TRY(she_reader_resolve_format(p->opts.format, in->path, &fmt, errstr, errstr_size));
    she_reader_opts_t o = p->opts;
    o.format = fmt;
    she_reader_free(in->rd);
    in->rd = NULL;
    SHE_TRY(she_reader_new(strcmp(in->path, "-") == 0 ? "<stdin>" : in->path, &o, &in->rd, errstr,
                          errstr_size));
    if (strcmp(in->path, "-") == 0) {
        in->fd = STDIN_FILENO;
    } else {
        in->fd = open(in->path, O_RDONLY | O_CLOEXEC);
        if (in->fd < 0)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", in->path, strerror(errno));
        struct stat sb;
        if (fstat(in->fd, &sb) == 0)
            in->ino = sb.st_ino;
    }
    in->offset = 0;
    in->n_reported = 0;
    in->n_bad = 0;
    p->n_files++;
    she_log_info(p->lg, "reading %s (%s)", in->path, fmt);
    return SHE_OK;
}

static void add_input(producer_t *p, const char *path) {
    for (int i = 0; i < p->n_inputs; i++)
        if (strcmp(p->inputs[i]->path, path) == 0)
            return;
    if (p->n_inputs == MAX_INPUTS) {
        she_log_error(p->lg, "more than %d inputs: %s is not read", MAX_INPUTS, path);
        return;
    }
    input_t *in = calloc(1, sizeof(*in));
    SHE_CHECK_ALLOC(in);
    snprintf(in->path, sizeof(in->path), "%s", path);
    in->fd = -1;
    p->inputs[p->n_inputs++] = in;
    char errstr[SHE_ERRSTR_SIZE];
    if (open_input(p, in, errstr, sizeof(errstr)) != SHE_OK) {
        she_log_error(p->lg, "%s", errstr);
        in->done = in->failed = 1;
        p->n_failed_files++;
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the data files of a directory not yet known, in name order. */
static void scan_dir(producer_t *p, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        she_log_error(p->lg, "%s: %s", dir, strerror(errno));
        return;
    }
    char *names[MAX_INPUTS];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < MAX_INPUTS)
        if (de->d_name[0] != '.' && has_input_ext(de->d_name))
            names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            add_input(p, path);
        free(names[i]);
    }
}

/* Logs bad-row messages not yet reported and counts bad rows not yet counted, as they come
 * (a followed file may never end). */
static void report_bad(producer_t *p, input_t *in) {
    const she_reader_stats_t *rs = she_reader_stats(in->rd);
    for (; in->n_reported < rs->n_messages; in->n_reported++)
        she_log_warn(p->lg, "bad row skipped: %s", rs->messages[in->n_reported]);
    for (; in->n_bad < rs->n_bad; in->n_bad++) {
        p->n_bad++;
        she_stream_count_failed(p->st, "input", "bad_row");
    }
}

/* Produces every complete sample the reader holds (one the message schema refuses is a bad
 * row).  Returns SHE_ERR_FORMAT on a fatal header problem, SHE_ERR_KAFKA when the producer
 * refuses a message. */
static she_err_t drain(producer_t *p, input_t *in, char *errstr, size_t errstr_size) {
    for (;;) {
        she_sample_t s = {0};
        int got = 0;
        she_err_t err = she_reader_next(in->rd, &s, &got, errstr, errstr_size);
        if (err != SHE_OK || !got) {
            she_sample_clear(&s);
            report_bad(p, in);
            return err;
        }
        const uint8_t *buf;
        size_t len;
        err = she_msg_encode_sample(she_stream_codec(p->st), &s, &buf, &len, errstr, errstr_size);
        if (err != SHE_OK) {
            /* The reader took the row but the message schema cannot carry it: a bad row too. */
            she_stream_count_failed(p->st, "input", "encode");
            she_log_warn(p->lg, "bad row skipped: %s: sample %s cannot be encoded: %s", in->path,
                         s.sample_id, errstr);
            p->n_bad++;
            she_sample_clear(&s);
            continue;
        }
        err = she_stream_produce(p->st, "samples", s.sample_id, strlen(s.sample_id), buf, len,
                                 errstr, errstr_size);
        she_sample_clear(&s);
        if (err != SHE_OK)
            return err;
        p->n_produced++;
    }
}

static void finish_input(producer_t *p, input_t *in) {
    char errstr[SHE_ERRSTR_SIZE];
    she_reader_finish(in->rd);
    if (drain(p, in, errstr, sizeof(errstr)) != SHE_OK) {
        she_log_error(p->lg, "%s", errstr);
        in->failed = 1;
        p->n_failed_files++;
    }
    report_bad(p, in);
    const she_reader_stats_t *rs = she_reader_stats(in->rd);
    she_log_info(p->lg, "%s: %lld rows, %lld produced, %lld bad", in->path, rs->n_rows,
                 rs->n_ok, rs->n_bad);
    if (in->fd >= 0 && in->fd != STDIN_FILENO)
        close(in->fd);
    in->fd = -1;
}

/* Reads what is available from one input.  Returns 1 if bytes were read. */
static int step_input(producer_t *p, input_t *in) {
    char buf[READ_CHUNK], errstr[SHE_ERRSTR_SIZE];
    int progressed = 0;
    if (in->fd == STDIN_FILENO) {
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0)
            return 0;
    }
    ssize_t n = read(in->fd, buf, sizeof(buf));
    if (n > 0) {
        she_reader_feed(in->rd, buf, (size_t)n);
        in->offset += n;
        progressed = 1;
        if (drain(p, in, errstr, sizeof(errstr)) != SHE_OK) {
            she_log_error(p->lg, "%s", errstr);
            finish_input(p, in);
            in->done = 1;
        }
        return progressed;
    }
    if (n < 0 && errno == EINTR)
        return 0;
    if (n < 0)
        she_log_error(p->lg, "%s: %s", in->path, strerror(errno));
    /* End of the bytes there are now. */
    int is_stdin = in->fd == STDIN_FILENO;
    if (!p->follow || is_stdin || n < 0) {
        finish_input(p, in);
        in->done = 1;
        return 0;
    }
    struct stat sb;
    int gone = stat(in->path, &sb) != 0;
    if (gone || sb.st_ino != in->ino || sb.st_size < in->offset) {
        she_log_info(p->lg, "%s was %s; reading it anew", in->path,
                     gone || sb.st_ino != in->ino ? "replaced" : "truncated");
        finish_input(p, in);
        if (gone) {
            in->done = 1; /* a later directory scan picks a new file of that name up */
            return 0;
        }
        p->n_files--; /* the same input, opened again */
        if (open_input(p, in, errstr, sizeof(errstr)) != SHE_OK) {
            she_log_error(p->lg, "%s", errstr);
            in->done = 1;
        }
        return 1;
    }
    return 0;
}

/* Waits until every queued sample is delivered (or the timeout / SIGTERM). */
static int wait_delivered(producer_t *p, long long timeout_ms) {
    int64_t deadline = timeout_ms > 0 ? she_stream_now_ms() + timeout_ms : INT64_MAX;
    char errstr[SHE_ERRSTR_SIZE];
    while (she_stream_commit(p->st, 500, errstr, sizeof(errstr)) == SHE_ERR_TIMEOUT) {
        if (she_signals_stop_requested() || she_stream_now_ms() > deadline) {
            she_log_error(p->lg, "stopped before every sample was delivered: %s", errstr);
            return 0;
        }
        she_log_info(p->lg, "waiting for deliveries: %s", errstr);
    }
    return 1;
}

int she_cmd_produce(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she produce [options] FILE|DIR|- ...",
                          "Publishes search-log samples (CSV or JSON Lines: files, directories of\n"
                          "*.csv/*.jsonl files, or - for stdin) to she.samples, keyed by sample id,\n"
                          "with an idempotent producer. Bad rows are reported with their line\n"
                          "numbers and skipped. --follow keeps reading appended data like tail -f\n"
                          "until SIGTERM. Prints a JSON summary line on stdout at the end.",
                          produce_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    if (env.n_positional == 0) {
        fprintf(stderr, "she produce: no input (give files, directories or -)\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    she_signals_install();
    producer_t *p = calloc(1, sizeof(*p));
    SHE_CHECK_ALLOC(p);
    p->conf = env.conf;
    p->lg = env.lg;
    p->opts.format = she_conf_get(env.conf, "produce.format");
    p->opts.columns = she_conf_get(env.conf, "produce.columns");
    p->opts.label_map = she_conf_get(env.conf, "produce.label.map");
    p->follow = she_conf_get_bool(env.conf, "produce.follow");
    char errstr[SHE_ERRSTR_SIZE];
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_stream_opts_t so = {.component = "produce", .producer = 1};
    she_err_t err = she_stream_new(env.conf, env.lg, reg, &so, &p->st, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_serve_metrics(she_conf_get(env.conf, "metrics.listen"), reg, env.lg,
                                       &httpd, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        she_stream_free(p->st);
        she_metrics_free(reg);
        free(p);
        she_cmd_fini(&env);
        return she_cmd_exit_status(err);
    }

    for (int i = 0; i < env.n_positional; i++) {
        const char *path = env.positional[i];
        struct stat sb;
        if (strcmp(path, "-") != 0 && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (p->n_dirs < 16)
                snprintf(p->dirs[p->n_dirs++], sizeof(p->dirs[0]), "%s", path);
            scan_dir(p, path);
        } else {
            add_input(p, path);
        }
    }
    int interval = (int)she_conf_get_int(env.conf, "produce.follow.interval.ms");
    int64_t last_scan = she_stream_now_ms();
    while (!she_signals_stop_requested()) {
        int progressed = 0, open = 0;
        for (int i = 0; i < p->n_inputs; i++) {
            input_t *in = p->inputs[i];
            if (in->done)
                continue;
            /* Everything there is now, chunk by chunk. */
            while (!in->done && step_input(p, in) && !she_signals_stop_requested())
                progressed = 1;
            open += !in->done;
        }
        she_stream_service(p->st);
        if (!p->follow && open == 0)
            break;
        if (p->follow && she_stream_now_ms() - last_scan >= 1000) {
            for (int d = 0; d < p->n_dirs; d++)
                scan_dir(p, p->dirs[d]);
            last_scan = she_stream_now_ms();
        }
        if (!progressed)
            she_signals_sleep_ms(interval);
    }
    for (int i = 0; i < p->n_inputs; i++)
        if (!p->inputs[i]->done && !p->inputs[i]->failed)
            finish_input(p, p->inputs[i]);
    int delivered = wait_delivered(p, she_conf_get_int(env.conf, "produce.flush.timeout.ms"));
    she_stream_stats_t ss;
    she_stream_stats(p->st, &ss);
    printf("{\"produced\": %lld, \"delivered\": %" PRId64 ", \"bad_rows\": %lld, \"files\": %lld, "
           "\"failed_files\": %lld}\n",
           p->n_produced, ss.delivered, p->n_bad, p->n_files, p->n_failed_files);
    fflush(stdout);
    she_log_info(env.lg, "produced %lld samples (%" PRId64 " delivered), %lld bad rows, %lld files "
                 "(peak memory %.0f MiB)", p->n_produced, ss.delivered, p->n_bad, p->n_files,
                 she_cmd_peak_memory_mib(0));
    int status = delivered && p->n_failed_files == 0 && ss.delivery_failed == 0
                     ? SHE_EXIT_OK
                     : SHE_EXIT_FAILURE;
    for (int i = 0; i < p->n_inputs; i++) {
        she_reader_free(p->inputs[i]->rd);
        free(p->inputs[i]);
    }
    she_httpd_free(httpd);
    she_stream_free(p->st);
    she_metrics_free(reg);
    free(p);
    she_cmd_fini(&env);
    return status;
}
