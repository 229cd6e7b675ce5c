/* learn_cmd.c -- `she learn`: the streaming SRPO learner.  Rewarded groups from she.rewarded ->
 * batches of learn.batch prompts -> one she_learner_step each (trainer/learner.h) -> every
 * learn.checkpoint.every steps an atomic checkpoint announced on she.checkpoints.
 *
 * Exactly once.  The learner reads she.rewarded by assignment, never by group membership: the
 * consumed offsets live in each checkpoint's trainer_state.json together with the weights, the
 * AdamW state, the step and the sample ids trained on (the last learn.dedup.capacity of them).
 * A restart loads the newest checkpoint that verifies and seeks to its offsets, so no group is
 * trained twice or skipped; offsets are committed to Kafka (group learn.group.id) only as a
 * mirror for lag dashboards.  Upstream delivers at least once, so a group whose sample id was
 * trained on (or is in the batch) is skipped as a duplicate.  A group made by a policy more
 * than learn.staleness versions older than the newest checkpoint is not trained on: its sample
 * goes back to she.samples, to be rolled out again by a current policy.  A group that cannot be
 * trained on (malformed, token ids outside the vocabulary, longer than learn.max.seq, another
 * group size than the batch's) goes to the dead-letter topic.  A batch's messages count as
 * consumed once the batch is trained, so a stop (SIGTERM: a checkpoint of the last step is
 * written) or a crash re-reads the unfinished batch.
 *
 * Versions: v0 is the initial policy (learn.init, copied into learn.dir/v000000 and announced
 * at the first start; it is also the KL reference), v1, v2, ... the checkpoints after it.  The
 * rollout-vs-learner log-prob gap of each batch is logged per behaviour-policy version, with
 * its staleness (learner version - that version): near 0 for groups of the learner's own
 * latest weights, growing with staleness (a large gap on fresh groups means rollouts use other
 * weights than announced); she_logprob_gap_by_staleness{staleness} holds the last value of each.
 *
 * Data parallel (core/dist.h): world_size ranks, started by mpirun, or as a TCP star from
 * dist.* keys or SHE_WORLD_SIZE / SHE_RANK (else the StatefulSet ordinal) / SHE_MASTER_ADDR.
 * Rank r reads the she.rewarded partitions p with p % world_size == r (a static assignment,
 * so the offsets can live in the checkpoint) and fills its share of each batch (learn.batch /
 * world_size prompts); every step is one she_learner_step over the ranks' shares (gradients
 * summed, identical AdamW steps; trainer/learner.h), then the ranks exchange the trained
 * sample ids, so every rank holds the same duplicate filter.  Between steps the ranks agree,
 * with a small all-reduce about every 200 ms, on whether to step (every share full, or each
 * quiet for learn.batch.timeout.ms), to stop (SIGTERM or max steps on any rank) or to fail
 * (an error on any rank); every collective has the dist.timeout.s deadline, so a lost rank
 * fails the job loudly instead of hanging it.  Every dist.check.every steps the ranks compare
 * a checksum of their parameters and end the job if they differ.  Rank 0 alone loads the
 * checkpoint at start and sends it to the others, and alone writes checkpoints -- holding
 * every rank's offsets and counters, gathered -- and announces them; a restart (with any
 * world size) resumes each partition from its offset.  Every rank serves /metrics, rank r on
 * metrics.listen's port + r (metrics.rank.offset). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
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
#include "dist.h"
#include "engine.h"
#include "messages.h"
#include "policy_watch.h"
#include "signals.h"
#include "stream.h"
#include "trainer/learner.h"

static const she_conf_def_t learn_defs[] = {
    {"learn.init", SHE_CONF_STR, NULL, "initial policy checkpoint (first start only)", 0, 0, NULL,
     "init"},
    {"learn.dir", SHE_CONF_STR, NULL, "checkpoint directory (v000000, v000001, ...)", 0, 0, NULL,
     "dir"},
    {"learn.batch", SHE_CONF_INT, "64", "prompts (groups) per step", 1, 65536, NULL, "batch"},
    {"learn.batch.timeout.ms", SHE_CONF_INT, "0",
     "train a partial batch after this long without a new group (0 = wait for a full one)", 0,
     1e12, NULL, NULL},
    {"learn.checkpoint.every", SHE_CONF_INT, "10", "steps between checkpoints", 1, 1e12, NULL,
     "checkpoint-every"},
    {"learn.max.steps", SHE_CONF_INT, "0", "stop after this many steps in all (0 = run on)", 0,
     1e15, NULL, "max-steps"},
    {"learn.staleness", SHE_CONF_INT, "2",
     "K: groups from a policy more than K versions older than the newest are re-queued", 0, 1e9,
     NULL, "staleness"},
    {"learn.keep", SHE_CONF_INT, "3", "checkpoints kept besides v000000", 1, 1e9, NULL, NULL},
    {"learn.dedup.capacity", SHE_CONF_INT, "1000000", "trained sample ids remembered", 1, 1e9,
     NULL, NULL},
    {"learn.group.id", SHE_CONF_STR, "she-learn", "consumer group the offsets are mirrored to", 0,
     0, NULL, NULL},
    {"learn.max.seq", SHE_CONF_INT, "224", "longest prompt + response trained on", 8, 65536, NULL,
     NULL},
    {"learn.algo", SHE_CONF_ENUM, "srpo", "advantages: sequence (grpo) or step level (srpo)", 0,
     0, "grpo|srpo", "algo"},
    {"learn.norm", SHE_CONF_ENUM, "group", "reward normalisation before advantages", 0, 0,
     "none|group|batch", "norm"},
    {"learn.gamma", SHE_CONF_DOUBLE, "1", "SRPO step discount", 0, 1, NULL, NULL},
    {"learn.adv.clip", SHE_CONF_DOUBLE, "2", "|advantage| clip (0 = off)", 0, 1e6, NULL, NULL},
    {"learn.lr", SHE_CONF_DOUBLE, "2e-5", "learning rate", 0, 10, NULL, "lr"},
    {"learn.warmup", SHE_CONF_INT, "0", "linear warm-up steps", 0, 1e9, NULL, NULL},
    {"learn.kl.beta", SHE_CONF_DOUBLE, "0.04", "KL penalty to v000000 (0 = none)", 0, 100, NULL,
     NULL},
    {"learn.clip.eps", SHE_CONF_DOUBLE, "0.2", "PPO ratio clip", 0, 10, NULL, NULL},
    {"learn.grad.clip", SHE_CONF_DOUBLE, "1.0", "global gradient-norm clip (0 = off)", 0, 1e6,
     NULL, NULL},
    {"learn.weight.decay", SHE_CONF_DOUBLE, "0", "AdamW weight decay on matrices", 0, 10, NULL,
     NULL},
    {"learn.beta2", SHE_CONF_DOUBLE, "0.95", "AdamW beta2", 0, 0.99999, NULL, NULL},
    {"learn.micro.batch", SHE_CONF_INT, "16", "rows per forward/backward", 1, 4096, NULL, NULL},
    {"learn.mini.batches", SHE_CONF_INT, "2", "optimizer steps per training step", 1, 4096, NULL,
     NULL},
    {"learn.epochs", SHE_CONF_INT, "1", "passes over each batch", 1, 64, NULL, NULL},
    {"learn.temperature", SHE_CONF_DOUBLE, "0.99", "the rollouts' temperature", 0.01, 10, NULL,
     NULL},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9467", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {"learn.device", SHE_CONF_STR, "cpu",
     "where the steps run: cpu, cuda (with several ranks: cuda:<local rank>) or cuda:N, "
     "optionally /tf32 or /bf16 GEMMs", 0, 0, NULL, "device"},
    {"metrics.rank.offset", SHE_CONF_BOOL, "true",
     "with several ranks, rank r serves /metrics on metrics.listen's port + r", 0, 0, NULL, NULL},
    {"dist.backend", SHE_CONF_ENUM, "auto",
     "collectives between ranks (auto: mpi under mpirun, else tcp)", 0, 0,
     "auto|single|mpi|tcp|nccl", NULL},
    {"dist.world.size", SHE_CONF_INT, "0",
     "learner ranks (0 = from mpirun or SHE_WORLD_SIZE, else 1)", 0, 1 << 20, NULL, NULL},
    {"dist.rank", SHE_CONF_INT, "-1",
     "this rank (-1 = from mpirun, SHE_RANK or the StatefulSet ordinal)", -1, 1 << 20, NULL,
     NULL},
    {"dist.master.addr", SHE_CONF_STR, NULL,
     "rank 0's address for the TCP rendezvous (default SHE_MASTER_ADDR)", 0, 0, NULL, NULL},
    {"dist.master.port", SHE_CONF_INT, "0",
     "rank 0's rendezvous port (0 = SHE_MASTER_PORT, else 29500)", 0, 65535, NULL, NULL},
    {"dist.timeout.s", SHE_CONF_DOUBLE, "600",
     "deadline of every collective: longer than the slowest honest wait (a checkpoint)", 1, 1e6,
     NULL, NULL},
    {"dist.check.every", SHE_CONF_INT, "10",
     "steps between checks that every rank holds the same parameters (0 = never)", 0, 1e12,
     NULL, NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* Path buffers sized so that every name built from learn.dir fits (the compiler checks). */
#define DIR_CAP 3000   /* learn.dir */
#define CKPT_CAP 3100  /* learn.dir/vNNNNNN */
#define TMP_CAP 3200   /* its temporary twin (ckptdir.h) */
#define FILE_CAP 3500  /* a file in either */
#define STATE_FORMAT "she-learner"

/* ---- the trained sample ids: a hash set with first-in, first-out eviction ---- */

typedef struct id_set {
    char **slot;   /* (cap) open addressing, NULL = empty */
    size_t cap;
    char **order;  /* (n) ids in the order they were added (owned) */
    size_t n, n_alloc, capacity;
} id_set_t;

static size_t id_probe(const id_set_t *s, const char *id) {
    size_t i = she_hash64(id, strlen(id)) & (s->cap - 1);
    while (s->slot[i] && strcmp(s->slot[i], id) != 0)
        i = (i + 1) & (s->cap - 1);
    return i;
}

static int id_has(const id_set_t *s, const char *id) {
    return s->cap && s->slot[id_probe(s, id)] != NULL;
}

static void id_rehash(id_set_t *s, size_t want) {
    free(s->slot);
    s->cap = 64;
    while (s->cap < want * 2)
        s->cap *= 2;
    s->slot = calloc(s->cap, sizeof(char *));
    SHE_CHECK_ALLOC(s->slot);
    for (size_t k = 0; k < s->n; k++)
        s->slot[id_probe(s, s->order[k])] = s->order[k];
}

static void id_add(id_set_t *s, const char *id) {
    if (id_has(s, id))
        return;
    if (s->n == s->capacity) { /* forget the older half */
        size_t drop = s->n / 2 > 0 ? s->n / 2 : 1;
        for (size_t k = 0; k < drop; k++)
            free(s->order[k]);
        memmove(s->order, s->order + drop, (s->n - drop) * sizeof(char *));
        s->n -= drop;
        id_rehash(s, s->n + 1);
    }
    if (s->n == s->n_alloc) {
        s->n_alloc = s->n_alloc ? s->n_alloc * 2 : 1024;
        s->order = realloc(s->order, s->n_alloc * sizeof(char *));
        SHE_CHECK_ALLOC(s->order);
    }
    char *copy = strdup(id);
    SHE_CHECK_ALLOC(copy);
    s->order[s->n++] = copy;
    if (s->n * 2 > s->cap)
        id_rehash(s, s->n);
    else
        s->slot[id_probe(s, copy)] = copy;
}

static void id_free(id_set_t *s) {
    for (size_t k = 0; k < s->n; k++)
        free(s->order[k]);
    free(s->order);
    free(s->slot);
    memset(s, 0, sizeof(*s));
}

/* ---- the learner ---- */

typedef struct msg_pos {
    rd_kafka_message_t *rkm; /* kept until its batch is trained (then marked done) */
} msg_pos_t;

typedef struct learner_run {
    she_conf_t *conf;
    she_log_t *lg;
    she_stream_t *st;
    char dir[DIR_CAP];
    char tok_path[FILE_CAP]; /* tokenizer.json copied into every checkpoint */
    she_model_t *policy, *ref;
    she_adamw_t *opt;
    she_learner_t *ln;
    she_learner_config_t lc;
    she_lr_schedule_t sched;
    int64_t version, step, ckpt_step;
    int64_t n_trained;                    /* over every rank */
    int64_t n_duplicates, n_requeued, n_dead; /* this rank's (rank 0: plus those of the
                                                 checkpoint it resumed from) */
    she_dist_t *dist;
    she_device_t dev;             /* where the steps run (learn.device) */
    int rank, world;
    int share;                    /* this rank's prompts per batch */
    char *ids, *ids_all;          /* (ids_cap), (world * ids_cap): trained ids being exchanged */
    size_t ids_cap;
    /* Where the time goes (seconds): Kafka + Avro (polls that returned a group, decoding,
     * announcing, committing) against the SRPO steps; idle waits for data count in neither. */
    double t_kafka, t_train;
    id_set_t trained;
    int batch, max_seq, G;
    int64_t staleness;
    she_rewarded_group_t *groups; /* (share) */
    int n_groups;
    msg_pos_t *msgs;              /* consumed since the last step */
    int n_msgs, cap_msgs;
    she_learner_stats_t last;     /* of the last step */
    she_metric_series_t *s_loss, *s_kl, *s_entropy, *s_clip, *s_gnorm, *s_lr, *s_steps,
        *s_step_s, *s_gap, *s_version, *s_pass, *s_reward[SHE_RL_N_STEPS + 1], *s_trained,
        *s_dup, *s_stale, *s_rank, *s_world;
    she_metric_t *m_gap_staleness; /* she_logprob_gap_by_staleness{staleness} */
    int64_t gap_series;            /* its series: staleness 0 .. gap_series - 1 (the last
                                      one pools the rest when learn.staleness is larger) */
} learner_run_t;

static she_err_t copy_file(const char *from, const char *to, char *errstr, size_t errstr_size) {
    FILE *in = fopen(from, "rb");
    if (!in)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ok = ok && fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    ok = fclose(out) == 0 && ok;
    return ok ? SHE_OK : she_errf(SHE_ERR_IO, errstr, errstr_size, "copying %s to %s", from, to);
}

static void ckpt_path(const learner_run_t *r, int64_t version, char *out, size_t cap) {
    snprintf(out, cap, "%s/v%06" PRId64, r->dir, version);
}

/* What a checkpoint holds besides the model, over every rank: where consumption stands on
 * every partition, and the counters. */
typedef struct ckpt_state {
    she_offsets_t offsets;
    int64_t n_duplicates, n_requeued, n_dead;
} ckpt_state_t;

/* trainer_state.json's content; NULL only when out of memory. */
static json_t *state_json(const learner_run_t *r, const ckpt_state_t *cs) {
    json_t *ids = json_array();
    SHE_CHECK_ALLOC(ids);
    for (size_t k = 0; k < r->trained.n; k++)
        json_array_append_new(ids, json_string(r->trained.order[k]));
    json_t *offsets = she_offsets_to_json(&cs->offsets);
    SHE_CHECK_ALLOC(offsets);
    json_t *st = json_pack("{s:s, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:o}", "format",
                           STATE_FORMAT, "version", (json_int_t)r->version, "parent",
                           (json_int_t)(r->version - 1), "step", (json_int_t)r->step,
                           "world_size", (json_int_t)r->world, "offsets", offsets, "n_trained",
                           (json_int_t)r->n_trained, "n_duplicates",
                           (json_int_t)cs->n_duplicates, "n_requeued", (json_int_t)cs->n_requeued,
                           "n_dead_lettered", (json_int_t)cs->n_dead, "trained_ids", ids);
    SHE_CHECK_ALLOC(st);
    return st;
}

static she_err_t write_state(const learner_run_t *r, const char *dir, const ckpt_state_t *cs,
                             char *errstr, size_t errstr_size) {
    json_t *st = state_json(r, cs);
    char path[FILE_CAP];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    int rc = json_dump_file(st, path, JSON_INDENT(1));
    json_decref(st);
    return rc == 0 ? SHE_OK : she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s", path);
}

/* Takes a trainer state (from `where`, for messages) into r and *offsets. */
static she_err_t state_from_json(learner_run_t *r, json_t *st, const char *where,
                                 she_offsets_t *offsets, char *errstr, size_t errstr_size) {
    const char *fmt = json_string_value(json_object_get(st, "format"));
    json_t *ids = json_object_get(st, "trained_ids");
    if (!fmt || strcmp(fmt, STATE_FORMAT) != 0 || !json_is_integer(json_object_get(st, "step")) ||
        !json_is_integer(json_object_get(st, "version")) || !json_is_array(ids))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "%s: not a learner state (format, version, step, trained_ids)", where);
    SHE_TRY(she_offsets_from_json(offsets, json_object_get(st, "offsets"), errstr, errstr_size));
    r->version = json_integer_value(json_object_get(st, "version"));
    r->step = r->ckpt_step = json_integer_value(json_object_get(st, "step"));
    r->n_trained = json_integer_value(json_object_get(st, "n_trained"));
    r->n_duplicates = json_integer_value(json_object_get(st, "n_duplicates"));
    r->n_requeued = json_integer_value(json_object_get(st, "n_requeued"));
    r->n_dead = json_integer_value(json_object_get(st, "n_dead_lettered"));
    size_t k;
    json_t *v;
    json_array_foreach(ids, k, v) if (json_is_string(v)) id_add(&r->trained, json_string_value(v));
    return SHE_OK;
}

static she_err_t read_state(learner_run_t *r, const char *dir, she_offsets_t *offsets,
                            char *errstr, size_t errstr_size) {
    char path[FILE_CAP];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    if (!st)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s:%d: %s", path, je.line, je.text);
    she_err_t err = state_from_json(r, st, path, offsets, errstr, errstr_size);
    json_decref(st);
    return err;
}

/* Removes a flat checkpoint directory (files only, as ckptdir makes them). */
static void remove_ckpt(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char path[FILE_CAP];
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* Versions of the checkpoints in r->dir (vNNNNNN), ascending; returns how many (<= cap). */
static int list_versions(const learner_run_t *r, int64_t *v, int cap) {
    DIR *d = opendir(r->dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < cap) {
        char *end;
        if (de->d_name[0] != 'v' || strlen(de->d_name) != 7)
            continue;
        long long x = strtoll(de->d_name + 1, &end, 10);
        if (*end == '\0' && x >= 0)
            v[n++] = x;
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && v[k - 1] > v[k]; k--) {
            int64_t t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    return n;
}

static she_err_t announce(learner_run_t *r, const char *dir, char *errstr, size_t errstr_size) {
    char abs[PATH_MAX], sha[65];
    if (!realpath(dir, abs))
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: %s", dir, strerror(errno));
    SHE_TRY(she_policy_manifest_sha256(dir, "model.safetensors", sha, errstr, errstr_size));
    she_msg_metric_t m[6] = {
        {"step", (double)r->step},
        {"loss", r->last.loss.loss},
        {"reward_mean", r->last.reward.total_mean},
        {"pass_rate", r->last.reward.pass_rate},
        {"logprob_gap", r->last.logp_gap_mean},
        {"kl", r->last.loss.kl_mean},
    };
    for (int i = 0; i < 6; i++)
        if (!isfinite(m[i].value))
            m[i].value = 0;
    she_checkpoint_announcement_t a = {.version = r->version, .uri = abs, .sha256 = sha,
                                       .parent_version = r->version - 1,
                                       .created_ms = she_stream_now_ms(), .metrics = m,
                                       .n_metrics = r->step > 0 ? 6 : 1};
    const uint8_t *buf;
    size_t len;
    SHE_TRY(she_msg_encode_checkpoint(she_stream_codec(r->st), &a, &buf, &len, errstr,
                                      errstr_size));
    char key[32];
    snprintf(key, sizeof(key), "v%06" PRId64, r->version);
    SHE_TRY(she_stream_produce(r->st, "checkpoints", key, strlen(key), buf, len, errstr,
                               errstr_size));
    she_log_info(r->lg, "announced v%" PRId64 " (step %" PRId64 ", sha256 %.12s...)", r->version,
                 r->step, sha);
    return SHE_OK;
}

/* Rank 0: writes checkpoint v(version + 1) (or v0 when version < 0) with cs atomically,
 * announces it and prunes old checkpoints. */
static she_err_t write_checkpoint(learner_run_t *r, const ckpt_state_t *cs, char *errstr,
                                  size_t errstr_size) {
    r->version++;
    char final[CKPT_CAP], tmp[TMP_CAP], path[FILE_CAP];
    ckpt_path(r, r->version, final, sizeof(final));
    she_err_t err = she_ckptdir_begin(final, tmp, sizeof(tmp), errstr, errstr_size);
    if (err == SHE_OK) {
        err = she_model_write_files(r->policy, r->opt, tmp, errstr, errstr_size);
        snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
        if (err == SHE_OK)
            err = copy_file(r->tok_path, path, errstr, errstr_size);
        if (err == SHE_OK)
            err = write_state(r, tmp, cs, errstr, errstr_size);
        if (err == SHE_OK)
            err = she_ckptdir_commit(tmp, final, errstr, errstr_size);
        if (err != SHE_OK)
            she_ckptdir_abort(tmp);
    }
    if (err != SHE_OK) {
        r->version--;
        return err;
    }
    r->ckpt_step = r->step;
    snprintf(r->tok_path, sizeof(r->tok_path), "%s/tokenizer.json", final);
    if (r->s_version)
        she_metrics_set(r->s_version, (double)r->version);
    double t0 = she_now_s();
    SHE_TRY(announce(r, final, errstr, errstr_size));
    r->t_kafka += she_now_s() - t0;
    int64_t v[4096];
    int n = list_versions(r, v, 4096);
    int64_t keep = she_conf_get_int(r->conf, "learn.keep");
    for (int i = 0; i < n; i++)
        if (v[i] != 0 && v[i] <= r->version - keep) {
            char old[CKPT_CAP];
            ckpt_path(r, v[i], old, sizeof(old));
            remove_ckpt(old);
        }
    return SHE_OK;
}

/* Partitions of she.rewarded are dealt to the ranks by number. */
static int owns(const learner_run_t *r, int32_t partition) {
    return partition % r->world == r->rank;
}

/* Entries of the offsets exchange: 3 counters, a count, then (partition, offset) pairs. */
#define CKPT_EXCHANGE (4 + 2 * SHE_OFFSETS_MAX)

/* Every rank's offsets (of the partitions it owns) and counters, gathered into *cs. */
static she_err_t gather_state(learner_run_t *r, ckpt_state_t *cs, char *errstr,
                              size_t errstr_size) {
    memset(cs, 0, sizeof(*cs));
    const she_offsets_t *done = she_stream_done_offsets(r->st);
    if (r->world == 1) {
        cs->offsets = *done;
        cs->n_duplicates = r->n_duplicates, cs->n_requeued = r->n_requeued, cs->n_dead = r->n_dead;
        return SHE_OK;
    }
    int64_t mine[CKPT_EXCHANGE] = {r->n_duplicates, r->n_requeued, r->n_dead, 0};
    for (int i = 0; i < done->n; i++)
        if (owns(r, done->v[i].partition)) {
            mine[4 + 2 * mine[3]] = done->v[i].partition;
            mine[4 + 2 * mine[3] + 1] = done->v[i].offset;
            mine[3]++;
        }
    int64_t *all = malloc(sizeof(int64_t) * CKPT_EXCHANGE * (size_t)r->world);
    SHE_CHECK_ALLOC(all);
    she_err_t err = she_dist_allgather_i64(r->dist, mine, CKPT_EXCHANGE, all, errstr,
                                           errstr_size);
    const char *topic = she_stream_topic_name("rewarded");
    for (int k = 0; k < r->world && err == SHE_OK; k++) {
        const int64_t *p = all + (size_t)k * CKPT_EXCHANGE;
        cs->n_duplicates += p[0], cs->n_requeued += p[1], cs->n_dead += p[2];
        for (int64_t i = 0; i < p[3] && err == SHE_OK; i++)
            if (she_offsets_set(&cs->offsets, topic, (int32_t)p[4 + 2 * i], p[5 + 2 * i]) !=
                SHE_OK)
                err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                               "more than %d partitions' offsets", SHE_OFFSETS_MAX);
    }
    free(all);
    return err;
}

/* Every rank: the next checkpoint, written by rank 0 with every rank's offsets; the others
 * follow its version.  Each rank mirrors its own offsets to Kafka. */
static she_err_t checkpoint(learner_run_t *r, char *errstr, size_t errstr_size) {
    ckpt_state_t *cs = malloc(sizeof(*cs));
    SHE_CHECK_ALLOC(cs);
    she_err_t err = gather_state(r, cs, errstr, errstr_size);
    if (err == SHE_OK && r->rank == 0)
        err = she_learner_sync_host(r->ln, errstr, errstr_size);
    if (err == SHE_OK && r->rank == 0)
        err = write_checkpoint(r, cs, errstr, errstr_size);
    free(cs);
    SHE_TRY(err);
    if (r->rank != 0) {
        r->version++;
        r->ckpt_step = r->step;
        she_metrics_set(r->s_version, (double)r->version);
    }
    double t0 = she_now_s();
    char cerr[SHE_ERRSTR_SIZE];
    if (she_stream_commit(r->st, 10000, cerr, sizeof(cerr)) != SHE_OK)
        she_log_warn(r->lg, "offsets not mirrored to Kafka yet: %s", cerr);
    r->t_kafka += she_now_s() - t0;
    return SHE_OK;
}

/* Loads the newest checkpoint of r->dir that verifies, or starts from learn.init as v0. */
static she_err_t load_start(learner_run_t *r, she_offsets_t *offsets, char *errstr,
                            size_t errstr_size) {
    she_conf_t *c = r->conf;
    int mb = r->lc.micro_batch;
    int64_t v[4096];
    int n = list_versions(r, v, 4096);
    char dir[CKPT_CAP];
    for (int i = n - 1; i >= 0; i--) {
        ckpt_path(r, v[i], dir, sizeof(dir));
        char why[SHE_ERRSTR_SIZE];
        she_err_t err = she_ckptdir_verify(dir, why, sizeof(why));
        if (err == SHE_OK)
            err = she_model_load(dir, mb, r->max_seq, &r->policy, &r->opt, why, sizeof(why));
        if (err == SHE_OK)
            err = read_state(r, dir, offsets, why, sizeof(why));
        if (err == SHE_OK) {
            snprintf(r->tok_path, sizeof(r->tok_path), "%s/tokenizer.json", dir);
            she_log_info(r->lg, "resuming from %s: v%" PRId64 ", step %" PRId64 ", %d partitions'"
                         " offsets, %zu trained sample ids", dir, r->version, r->step, offsets->n,
                         r->trained.n);
            break;
        }
        she_log_warn(r->lg, "skipping checkpoint %s: %s", dir, why);
        she_model_free(r->policy);
        she_adamw_free(r->opt);
        r->policy = NULL;
        r->opt = NULL;
        id_free(&r->trained);
        r->trained.capacity = (size_t)she_conf_get_int(c, "learn.dedup.capacity");
    }
    if (!r->policy) {
        const char *init = she_conf_get(c, "learn.init");
        if (!init)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "no checkpoint in %s to resume from: --init DIR is required", r->dir);
        SHE_TRY(she_model_load(init, mb, r->max_seq, &r->policy, NULL, errstr, errstr_size));
        r->opt = she_adamw_new(r->policy->n_params);
        snprintf(r->tok_path, sizeof(r->tok_path), "%s/tokenizer.json", init);
        r->version = -1;
        r->step = 0;
        /* v0: the starting point and KL reference */
        ckpt_state_t *cs = calloc(1, sizeof(*cs));
        SHE_CHECK_ALLOC(cs);
        she_err_t err = write_checkpoint(r, cs, errstr, errstr_size);
        free(cs);
        SHE_TRY(err);
        she_log_info(r->lg, "started from %s as v0", init);
    } else {
        /* The announcement may have been lost in a crash after the commit: say it again. */
        ckpt_path(r, r->version, dir, sizeof(dir));
        SHE_TRY(announce(r, dir, errstr, errstr_size));
    }
    if (r->lc.loss.kl_beta > 0) {
        ckpt_path(r, 0, dir, sizeof(dir));
        SHE_TRY(she_model_load(dir, mb, r->max_seq, &r->ref, NULL, errstr, errstr_size));
    }
    return SHE_OK;
}

/* ---- intake ---- */

static void keep_msg(learner_run_t *r, rd_kafka_message_t *rkm) {
    if (r->n_msgs == r->cap_msgs) {
        r->cap_msgs = r->cap_msgs ? r->cap_msgs * 2 : 256;
        r->msgs = realloc(r->msgs, (size_t)r->cap_msgs * sizeof(*r->msgs));
        SHE_CHECK_ALLOC(r->msgs);
    }
    r->msgs[r->n_msgs++].rkm = rkm;
}

/* Why a decoded group cannot be trained on, or NULL. */
static const char *unusable(const learner_run_t *r, const she_rewarded_group_t *g, char *why,
                            size_t cap) {
    if (she_learner_check_group(r->ln, g, why, cap) != SHE_OK)
        return why;
    if (r->n_groups > 0 && g->rollout.n_responses != r->G) {
        snprintf(why, cap, "group of %d responses in a batch of groups of %d",
                 g->rollout.n_responses, r->G);
        return why;
    }
    return NULL;
}

static int in_batch(const learner_run_t *r, const char *sample_id) {
    for (int i = 0; i < r->n_groups; i++)
        if (strcmp(r->groups[i].rollout.sample_id, sample_id) == 0)
            return 1;
    return 0;
}

/* Puts a stale group's sample back on she.samples; returns 1 when queued. */
static int requeue(learner_run_t *r, const she_rewarded_group_t *g) {
    const uint8_t *buf;
    size_t len;
    char errstr[SHE_ERRSTR_SIZE];
    const char *id = g->rollout.sample_id;
    she_err_t err = she_msg_encode_sample(she_stream_codec(r->st), &g->rollout.sample, &buf, &len,
                                          errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_produce(r->st, "samples", id, strlen(id), buf, len, errstr,
                                 sizeof(errstr));
    if (err != SHE_OK)
        she_log_error(r->lg, "stale group of %s not re-queued: %s", id, errstr);
    return err == SHE_OK;
}

static void intake(learner_run_t *r, rd_kafka_message_t *rkm) {
    char errstr[SHE_ERRSTR_SIZE], why[256];
    keep_msg(r, rkm);
    she_rewarded_group_t *g = &r->groups[r->n_groups];
    memset(g, 0, sizeof(*g));
    if (she_msg_decode_rewarded_group(she_stream_codec(r->st), rkm->payload, rkm->len, g, errstr,
                                      sizeof(errstr)) != SHE_OK) {
        she_stream_dead_letter(r->st, rkm, errstr);
        r->n_dead++;
        return;
    }
    const char *bad = unusable(r, g, why, sizeof(why));
    if (bad) {
        she_stream_dead_letter(r->st, rkm, bad);
        r->n_dead++;
    } else if (id_has(&r->trained, g->rollout.sample_id) || in_batch(r, g->rollout.sample_id)) {
        r->n_duplicates++;
        she_metrics_inc(r->s_dup);
        she_log_debug(r->lg, "duplicate group %s skipped", g->rollout.group_id);
    } else if (g->rollout.policy_version < r->version - r->staleness) {
        if (requeue(r, g)) {
            r->n_requeued++;
            she_metrics_inc(r->s_stale);
            she_log_info(r->lg, "group %s from v%" PRId64 " is stale (learner at v%" PRId64
                         "): sample re-queued", g->rollout.group_id, g->rollout.policy_version,
                         r->version);
        }
    } else {
        if (r->n_groups == 0)
            r->G = g->rollout.n_responses;
        r->n_groups++;
        return;
    }
    she_msg_clear_rewarded_group(g);
}

/* Policy versions of the batch's groups, e.g. "v3x40 v2x24" (from the step's statistics, so
 * over every rank's share). */
static void version_mix(const she_learner_stats_t *ls, char *out, size_t cap) {
    out[0] = '\0';
    size_t len = 0;
    for (int k = 0; k < ls->n_gap && len < cap; k++)
        len += (size_t)snprintf(out + len, cap - len, "%sv%" PRId64 "x%d", k ? " " : "",
                                ls->gap[k].version, ls->gap[k].n_groups);
    if (ls->gap_older.n_groups > 0 && len < cap)
        snprintf(out + len, cap - len, " v<=%" PRId64 "x%d", ls->gap_older.version,
                 ls->gap_older.n_groups);
}

/* One line per behaviour-policy version of the batch, and the gauge of its staleness. */
static void report_gap(learner_run_t *r, const she_learner_stats_t *ls) {
    for (int k = 0; k <= ls->n_gap; k++) {
        const she_learner_gap_t *g = k < ls->n_gap ? &ls->gap[k] : &ls->gap_older;
        if (g->n_groups == 0)
            continue;
        int64_t staleness = r->version - g->version;
        if (r->rank == 0 && g->tokens == 0)
            she_log_info(r->lg, "step %" PRId64 ": log-prob gap of %s v%" PRId64 " (staleness %"
                         PRId64 "%s): not measured, its %d groups came after the step's first "
                         "update (learner.h)", r->step, k < ls->n_gap ? "policy" : "policies up to",
                         g->version, staleness, k < ls->n_gap ? "" : "+", g->n_groups);
        else if (r->rank == 0)
            she_log_info(r->lg, "step %" PRId64 ": log-prob gap of %s v%" PRId64 " (staleness %"
                         PRId64 "%s): mean %.4f, max %.3f over %ld tokens of %d groups",
                         r->step, k < ls->n_gap ? "policy" : "policies up to", g->version,
                         staleness, k < ls->n_gap ? "" : "+", g->mean, g->max, g->tokens,
                         g->n_groups);
        if (staleness < 0 || g->tokens == 0)
            continue; /* newer than the learner's checkpoint (it restarted from an older one) */
        char label[24];
        int64_t i = staleness < r->gap_series - 1 ? staleness : r->gap_series - 1;
        if (i == r->gap_series - 1 && r->staleness >= r->gap_series)
            snprintf(label, sizeof(label), "%" PRId64 "+", i);
        else
            snprintf(label, sizeof(label), "%" PRId64, i);
        const char *lv[] = {label};
        she_metrics_set(she_metrics_series(r->m_gap_staleness, lv), g->mean);
    }
}

/* Every rank adds every rank's trained sample ids of the step, in rank order, to its
 * duplicate filter: the ranks' filters stay equal, and rank 0's checkpoint holds them all. */
static she_err_t share_trained_ids(learner_run_t *r, char *errstr, size_t errstr_size) {
    if (r->world == 1) {
        for (int i = 0; i < r->n_groups; i++)
            id_add(&r->trained, r->groups[i].rollout.sample_id);
        return SHE_OK;
    }
    size_t len = 0;
    for (int i = 0; i < r->n_groups; i++)
        len += strlen(r->groups[i].rollout.sample_id) + 1;
    int64_t mine = (int64_t)len, *lens = calloc((size_t)r->world, sizeof(int64_t));
    SHE_CHECK_ALLOC(lens);
    she_err_t err = she_dist_allgather_i64(r->dist, &mine, 1, lens, errstr, errstr_size);
    size_t most = 1;
    for (int k = 0; k < r->world; k++)
        most = (size_t)lens[k] > most ? (size_t)lens[k] : most;
    if (most > r->ids_cap) {
        r->ids_cap = most;
        r->ids = realloc(r->ids, most);
        r->ids_all = realloc(r->ids_all, most * (size_t)r->world);
        SHE_CHECK_ALLOC(r->ids);
        SHE_CHECK_ALLOC(r->ids_all);
    }
    memset(r->ids, 0, most);
    for (int i = 0, at = 0; i < r->n_groups; i++) {
        size_t n = strlen(r->groups[i].rollout.sample_id) + 1;
        memcpy(r->ids + at, r->groups[i].rollout.sample_id, n);
        at += (int)n;
    }
    if (err == SHE_OK)
        err = she_dist_allgather(r->dist, r->ids, most, r->ids_all, errstr, errstr_size);
    for (int k = 0; k < r->world && err == SHE_OK; k++)
        for (size_t at = 0; at < (size_t)lens[k];) {
            const char *id = r->ids_all + (size_t)k * most + at;
            id_add(&r->trained, id);
            at += strlen(id) + 1;
        }
    free(lens);
    return err;
}

/* One SRPO step on the batch (data parallel: on every rank's share); its messages become
 * consumed.  A batch the learner refuses is dead-lettered whole (intake checks make that a
 * bug; data parallel, every rank dead-letters its share).  Returns an error only when the
 * step could not be taken at all (a collective or the device failed): the job must end. */
static she_err_t train(learner_run_t *r, char *errstr, size_t errstr_size) {
    char mix[256];
    float lr = she_lr_at(&r->sched, r->step);
    double t0 = she_now_s();
    she_learner_stats_t ls;
    she_err_t err = she_learner_step(r->ln, r->groups, r->n_groups, lr, &ls, errstr,
                                     errstr_size);
    if (err == SHE_OK)
        err = share_trained_ids(r, errstr, errstr_size);
    double dt = she_now_s() - t0;
    r->t_train += dt;
    if (err != SHE_OK && (err != SHE_ERR_INVALID || (r->dist && she_dist_failed(r->dist))))
        return err;
    if (err != SHE_OK) {
        she_log_error(r->lg, "step refused (%s): dead-lettering its %d groups", errstr,
                      r->n_groups);
        for (int m = 0; m < r->n_msgs; m++)
            she_stream_dead_letter(r->st, r->msgs[m].rkm, errstr);
        r->n_dead += r->n_groups;
    } else {
        version_mix(&ls, mix, sizeof(mix));
        r->n_trained += ls.n_groups;
        r->step++;
        r->last = ls;
        she_metrics_add(r->s_trained, r->n_groups);
        she_metrics_inc(r->s_steps);
        she_metrics_observe(r->s_step_s, dt);
        she_metrics_set(r->s_loss, ls.loss.loss);
        she_metrics_set(r->s_kl, ls.loss.kl_mean);
        she_metrics_set(r->s_entropy, isfinite(ls.loss.entropy_mean) ? ls.loss.entropy_mean : 0);
        she_metrics_set(r->s_clip, ls.loss.clip_frac);
        she_metrics_set(r->s_gnorm, ls.grad_norm);
        she_metrics_set(r->s_lr, lr);
        she_metrics_set(r->s_gap, ls.logp_gap_mean);
        she_metrics_set(r->s_pass, ls.reward.pass_rate);
        for (int j = 0; j < SHE_RL_N_STEPS; j++)
            she_metrics_set(r->s_reward[j], ls.reward.step_mean[j]);
        she_metrics_set(r->s_reward[SHE_RL_N_STEPS], ls.reward.total_mean);
        char here[64] = "";
        if (r->world > 1)
            snprintf(here, sizeof(here), " (%d of the groups on rank %d/%d)", r->n_groups,
                     r->rank, r->world);
        she_log_info(r->lg,
                     "step %" PRId64 ": %d groups, loss %.4f, reward %.3f (steps %.2f %.2f %.2f "
                     "%.2f %.2f), pass %.3f, kl %.4f, clip %.3f, %.1f s; log-prob gap %.4f "
                     "(max %.3f) on groups from %s, learner at v%" PRId64 " + %" PRId64
                     " steps%s",
                     r->step, ls.n_groups, ls.loss.loss, ls.reward.total_mean,
                     ls.reward.step_mean[0], ls.reward.step_mean[1], ls.reward.step_mean[2],
                     ls.reward.step_mean[3], ls.reward.step_mean[4], ls.reward.pass_rate,
                     ls.loss.kl_mean, ls.loss.clip_frac, dt, ls.logp_gap_mean, ls.logp_gap_max,
                     mix, r->version, r->step - 1 - r->ckpt_step, here);
        report_gap(r, &ls);
    }
    for (int i = 0; i < r->n_groups; i++)
        she_msg_clear_rewarded_group(&r->groups[i]);
    r->n_groups = 0;
    for (int m = 0; m < r->n_msgs; m++) {
        she_stream_done(r->st, r->msgs[m].rkm);
        rd_kafka_message_destroy(r->msgs[m].rkm);
    }
    r->n_msgs = 0;
    return SHE_OK;
}

static she_err_t setup_metrics(learner_run_t *r, she_metrics_t *reg, char *errstr,
                               size_t errstr_size) {
    struct {
        const char *name, *help;
        she_metric_series_t **s;
    } gauges[] = {
        {"she_learner_loss", "Loss of the last step.", &r->s_loss},
        {"she_learner_kl", "KL to the reference policy, last step.", &r->s_kl},
        {"she_learner_entropy", "Mean token entropy, last step.", &r->s_entropy},
        {"she_learner_clip_ratio", "Fraction of clipped tokens, last step.", &r->s_clip},
        {"she_learner_grad_norm", "Gradient norm before clipping, last step.", &r->s_gnorm},
        {"she_learner_learning_rate", "Learning rate of the last step.", &r->s_lr},
        {"she_logprob_gap", "Mean |rollout - learner| log-prob of the last batch.", &r->s_gap},
        {"she_policy_version", "Version of the newest checkpoint.", &r->s_version},
        {"she_learner_pass_ratio", "Pass rate of the last batch's responses.", &r->s_pass},
        {"she_learner_rank", "This learner's rank (0 writes the checkpoints).", &r->s_rank},
        {"she_learner_world_size", "Ranks of the data-parallel learner.", &r->s_world},
    };
    for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++) {
        she_metric_t *m;
        SHE_TRY(she_metrics_gauge(reg, gauges[i].name, gauges[i].help, NULL, &m, errstr,
                                  errstr_size));
        *gauges[i].s = she_metrics_series(m, NULL);
    }
    she_metric_t *m;
    SHE_TRY(she_metrics_gauge(reg, "she_reward_mean",
                              "Mean reward of the last batch, per step (1..5) and in all.",
                              "step", &m, errstr, errstr_size));
    for (int j = 0; j <= SHE_RL_N_STEPS; j++) {
        char step[8];
        snprintf(step, sizeof(step), "%d", j + 1);
        const char *lv[] = {j < SHE_RL_N_STEPS ? step : "all"};
        r->s_reward[j] = she_metrics_series(m, lv);
    }
    SHE_TRY(she_metrics_counter(reg, "she_learner_steps_total", "Learner steps taken.", NULL, &m,
                                errstr, errstr_size));
    r->s_steps = she_metrics_series(m, NULL);
    SHE_TRY(she_metrics_histogram(reg, "she_learner_step_seconds", "Time of one learner step.",
                                  NULL, NULL, 0, &m, errstr, errstr_size));
    r->s_step_s = she_metrics_series(m, NULL);
    SHE_TRY(she_metrics_counter(reg, "she_learner_groups_total",
                                "Rewarded groups by outcome: trained, duplicate, stale "
                                "(re-queued).",
                                "outcome", &m, errstr, errstr_size));
    const char *tr[] = {"trained"}, *du[] = {"duplicate"}, *sl[] = {"stale"};
    r->s_trained = she_metrics_series(m, tr);
    r->s_dup = she_metrics_series(m, du);
    r->s_stale = she_metrics_series(m, sl);
    /* staleness 0..K, at most 9 series: the last pools the rest of a larger bound */
    r->gap_series = r->staleness < 8 ? r->staleness + 1 : 9;
    SHE_TRY(she_metrics_gauge(reg, "she_logprob_gap_by_staleness",
                              "Mean |rollout - learner| log-prob of the groups of the last batch "
                              "that had any from a policy this many checkpoints older than the "
                              "learner's.",
                              "staleness", &r->m_gap_staleness, errstr, errstr_size));
    she_metrics_set(r->s_rank, r->rank);
    she_metrics_set(r->s_world, r->world);
    return SHE_OK;
}

/* The dist configuration: the launcher's environment (dist.h), then the dist.* keys over it. */
static she_err_t dist_config(const she_conf_t *c, she_dist_config_t *dc, char *errstr,
                             size_t errstr_size) {
    SHE_TRY(she_dist_config_from_env(dc, errstr, errstr_size));
    int mpirun = dc->launcher == SHE_DIST_LAUNCHER_MPIRUN;
    int world = (int)she_conf_get_int(c, "dist.world.size");
    int rank = (int)she_conf_get_int(c, "dist.rank");
    if (mpirun && ((world > 0 && world != dc->world_size) || (rank >= 0 && rank != dc->rank)))
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "dist.world.size / dist.rank (%d / %d) contradict mpirun's rank %d of %d",
                        world, rank, dc->rank, dc->world_size);
    if (world > 0 && dc->launcher == SHE_DIST_LAUNCHER_NONE) {
        if (world > 1 && rank < 0)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "dist.world.size=%d needs dist.rank (or SHE_WORLD_SIZE and SHE_RANK)",
                            world);
        dc->launcher = SHE_DIST_LAUNCHER_ENV;
    }
    if (world > 0)
        dc->world_size = world;
    if (rank >= 0)
        dc->rank = rank;
    if (dc->rank >= dc->world_size)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "rank %d of %d ranks", dc->rank,
                        dc->world_size);
    const char *addr = she_conf_get(c, "dist.master.addr");
    if (addr && strlen(addr) >= sizeof(dc->master_addr))
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "dist.master.addr is too long");
    if (addr)
        snprintf(dc->master_addr, sizeof(dc->master_addr), "%s", addr);
    if (she_conf_get_int(c, "dist.master.port") > 0)
        dc->master_port = (int)she_conf_get_int(c, "dist.master.port");
    const char *backend = she_conf_get(c, "dist.backend");
    for (int b = SHE_DIST_AUTO; b <= SHE_DIST_NCCL; b++)
        if (strcmp(backend, she_dist_backend_name((she_dist_backend_t)b)) == 0)
            dc->backend = (she_dist_backend_t)b;
    dc->timeout_s = she_conf_get_double(c, "dist.timeout.s");
    if (dc->world_size > 1 && !mpirun && !dc->master_addr[0])
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "%d ranks without mpirun need rank 0's address: dist.master.addr or "
                        "SHE_MASTER_ADDR",
                        dc->world_size);
    return SHE_OK;
}

/* learn.device, where "cuda" (or "cuda/MATH") with several ranks means each rank's own GPU
 * (cuda:<local rank>).  On GPUs the gradients live on the devices, so several ranks sum them with
 * NCCL (the dist.backend auto picks; another backend is refused). */
static she_err_t learn_device(const she_conf_t *c, she_dist_config_t *dc, she_device_t *dev,
                              char *errstr, size_t errstr_size) {
    const char *spec = she_conf_get(c, "learn.device");
    char own[64];
    if (dc->world_size > 1 && spec && strncmp(spec, "cuda", 4) == 0 &&
        (spec[4] == '\0' || spec[4] == '/')) {
        snprintf(own, sizeof(own), "cuda:%d%.40s", dc->local_rank, spec + 4);
        spec = own;
    }
    SHE_TRY(she_device_select(spec, dev, errstr, errstr_size));
    if (dev->kind != SHE_DEVICE_CUDA)
        return SHE_OK;
    dc->cuda_device = dev->index;
    if (dc->world_size > 1 && dc->backend == SHE_DIST_AUTO)
        dc->backend = SHE_DIST_NCCL;
    if (dc->world_size > 1 && dc->backend != SHE_DIST_NCCL)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "learn.device=%s with %d ranks needs dist.backend=nccl (the gradients "
                        "live on the GPUs), not %s",
                        spec, dc->world_size, she_dist_backend_name(dc->backend));
    return SHE_OK;
}

/* What rank 0 sends ahead of its start state. */
typedef struct start_header {
    she_model_config_t cfg;
    int64_t n_params, opt_step, state_bytes;
    int32_t has_ref;
} start_header_t;

/* Rank 0's start -- the checkpoint it resumed from, or v0 -- to every rank: the weights,
 * AdamW's state, the KL reference and the trainer state (offsets of every partition, trained
 * ids, step, version), so that all ranks start bit-identical without reading learn.dir.
 * *offsets: rank 0's in, everyone's out. */
static she_err_t share_start(learner_run_t *r, she_offsets_t *offsets, char *errstr,
                             size_t errstr_size) {
    start_header_t h;
    memset(&h, 0, sizeof(h));
    char *text = NULL;
    if (r->rank == 0) {
        ckpt_state_t *cs = calloc(1, sizeof(*cs));
        SHE_CHECK_ALLOC(cs);
        cs->offsets = *offsets;
        json_t *st = state_json(r, cs);
        text = json_dumps(st, JSON_COMPACT);
        SHE_CHECK_ALLOC(text);
        json_decref(st);
        free(cs);
        h.cfg = r->policy->cfg;
        h.n_params = (int64_t)r->policy->n_params;
        h.opt_step = r->opt->step;
        h.state_bytes = (int64_t)strlen(text) + 1;
        h.has_ref = r->ref != NULL;
    }
    she_err_t err = she_dist_broadcast(r->dist, &h, sizeof(h), 0, errstr, errstr_size);
    if (err == SHE_OK && r->rank != 0) {
        err = she_model_new(&h.cfg, r->lc.micro_batch, r->max_seq, &r->policy, errstr,
                            errstr_size);
        if (err == SHE_OK && h.has_ref)
            err = she_model_new(&h.cfg, r->lc.micro_batch, r->max_seq, &r->ref, errstr,
                                errstr_size);
        if (err == SHE_OK && (int64_t)r->policy->n_params != h.n_params)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "rank 0's model has %" PRId64 " parameters, this rank's %zu",
                           h.n_params, r->policy->n_params);
        if (err == SHE_OK) {
            r->opt = she_adamw_new(r->policy->n_params);
            r->opt->step = h.opt_step;
            text = malloc((size_t)h.state_bytes);
            SHE_CHECK_ALLOC(text);
        }
    }
    size_t bytes = sizeof(float) * (size_t)h.n_params;
    float *blocks[4] = {NULL, NULL, NULL, NULL};
    if (err == SHE_OK) {
        blocks[0] = r->policy->params, blocks[1] = r->opt->m, blocks[2] = r->opt->v;
        blocks[3] = h.has_ref ? r->ref->params : NULL;
    }
    for (int k = 0; k < 4 && err == SHE_OK; k++)
        if (blocks[k])
            err = she_dist_broadcast(r->dist, blocks[k], bytes, 0, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_dist_broadcast(r->dist, text, (size_t)h.state_bytes, 0, errstr, errstr_size);
    if (err == SHE_OK && r->rank != 0) {
        json_error_t je;
        json_t *st = json_loads(text, 0, &je);
        if (!st)
            err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "rank 0's state: %s", je.text);
        else
            err = state_from_json(r, st, "rank 0's state", offsets, errstr, errstr_size);
        json_decref(st);
        /* the counters of the checkpoint are rank 0's to carry on */
        r->n_duplicates = r->n_requeued = r->n_dead = 0;
        if (err == SHE_OK)
            she_log_info(r->lg, "starting from rank 0's v%" PRId64 ": step %" PRId64 ", %d "
                         "partitions' offsets, %zu trained sample ids", r->version, r->step,
                         offsets->n, r->trained.n);
    }
    free(text);
    return err;
}

/* Assigns this rank's partitions of she.rewarded (all of them for one rank), each from its
 * offset in offsets. */
static she_err_t assign_partitions(learner_run_t *r, const she_offsets_t *offsets, char *errstr,
                                   size_t errstr_size) {
    const char *topics[] = {"rewarded"};
    SHE_TRY(she_stream_assign(r->st, topics, 1, offsets, 60000, errstr, errstr_size));
    if (r->world == 1)
        return SHE_OK;
    /* she_stream_assign took every partition (before any fetch): keep this rank's */
    rd_kafka_t *rk = she_stream_consumer(r->st);
    rd_kafka_topic_partition_list_t *all = NULL;
    rd_kafka_resp_err_t e = rd_kafka_assignment(rk, &all);
    if (e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "assignment: %s",
                        rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_t *mine = rd_kafka_topic_partition_list_new(all->cnt);
    char list[256] = "";
    for (int i = 0, len = 0; i < all->cnt; i++)
        if (owns(r, all->elems[i].partition)) {
            rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_add(
                mine, all->elems[i].topic, all->elems[i].partition);
            p->offset = all->elems[i].offset;
            if (len < 200)
                len += snprintf(list + len, sizeof(list) - (size_t)len, " %d", (int)p->partition);
        }
    e = rd_kafka_assign(rk, mine);
    she_log_info(r->lg, "rank %d/%d reads she.rewarded partitions%s", r->rank, r->world,
                 mine->cnt ? list : " (none: more ranks than partitions)");
    rd_kafka_topic_partition_list_destroy(all);
    rd_kafka_topic_partition_list_destroy(mine);
    if (e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "assign: %s", rd_kafka_err2str(e));
    return SHE_OK;
}

static she_err_t setup(learner_run_t *r, she_metrics_t *reg, char *errstr, size_t errstr_size) {
    she_conf_t *c = r->conf;
    const char *dir = she_conf_get(c, "learn.dir");
    if (!dir || !dir[0] || strlen(dir) >= DIR_CAP)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "--dir DIR is required (shorter than %d bytes)", DIR_CAP);
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    if (mkdir(r->dir, 0777) != 0 && errno != EEXIST)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "mkdir %s: %s", r->dir, strerror(errno));
    r->batch = (int)she_conf_get_int(c, "learn.batch");
    r->max_seq = (int)she_conf_get_int(c, "learn.max.seq");
    r->staleness = she_conf_get_int(c, "learn.staleness");
    r->trained.capacity = (size_t)she_conf_get_int(c, "learn.dedup.capacity");
    r->lc = she_learner_defaults();
    r->lc.adv.algo = (she_adv_algo_t)she_adv_algo_parse(she_conf_get(c, "learn.algo"));
    r->lc.adv.norm = (she_adv_norm_t)she_adv_norm_parse(she_conf_get(c, "learn.norm"));
    r->lc.adv.gamma = (float)she_conf_get_double(c, "learn.gamma");
    r->lc.adv.clip = (float)she_conf_get_double(c, "learn.adv.clip");
    r->lc.loss.kl_beta = (float)she_conf_get_double(c, "learn.kl.beta");
    r->lc.loss.clip_eps = (float)she_conf_get_double(c, "learn.clip.eps");
    r->lc.adamw.beta2 = (float)she_conf_get_double(c, "learn.beta2");
    r->lc.adamw.weight_decay = (float)she_conf_get_double(c, "learn.weight.decay");
    r->lc.temperature = (float)she_conf_get_double(c, "learn.temperature");
    r->lc.max_grad_norm = (float)she_conf_get_double(c, "learn.grad.clip");
    r->lc.micro_batch = (int)she_conf_get_int(c, "learn.micro.batch");
    r->lc.mini_batches = (int)she_conf_get_int(c, "learn.mini.batches");
    r->lc.epochs = (int)she_conf_get_int(c, "learn.epochs");
    float lr = (float)she_conf_get_double(c, "learn.lr");
    r->sched = (she_lr_schedule_t){.kind = SHE_LR_CONSTANT, .max_lr = lr, .min_lr = lr,
                                   .warmup_steps = she_conf_get_int(c, "learn.warmup")};
    if (r->world > 1 && r->lc.adv.norm == SHE_ADV_NORM_BATCH)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "learn.norm=batch needs the whole batch on one rank, not %d: use group "
                        "or none", r->world);
    if (r->batch < r->world)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "learn.batch %d is smaller than the %d ranks", r->batch, r->world);
    /* rank r's share of a batch: the remainder goes to the first ranks */
    r->share = r->batch / r->world + (r->rank < r->batch % r->world);
    r->groups = calloc((size_t)r->share, sizeof(*r->groups));
    SHE_CHECK_ALLOC(r->groups);

    she_stream_opts_t so = {.component = "learn", .consumer = 1, .producer = 1,
                            .group_id = she_conf_get(c, "learn.group.id"), .report_lag = 1};
    SHE_TRY(she_stream_new(c, r->lg, reg, &so, &r->st, errstr, errstr_size));
    SHE_TRY(setup_metrics(r, reg, errstr, errstr_size));
    she_offsets_t *offsets = calloc(1, sizeof(*offsets));
    SHE_CHECK_ALLOC(offsets);
    she_err_t err = SHE_OK;
    if (r->rank == 0)
        err = load_start(r, offsets, errstr, errstr_size);
    if (err == SHE_OK && r->world > 1)
        err = share_start(r, offsets, errstr, errstr_size);
    if (err == SHE_OK) {
        she_metrics_set(r->s_version, (double)r->version);
        err = she_learner_new(r->policy, r->opt, r->ref, &r->lc, &r->ln, errstr, errstr_size);
    }
    if (err == SHE_OK && r->world > 1)
        err = she_learner_set_dist(r->ln, r->dist, errstr, errstr_size);
    if (err == SHE_OK && r->dev.kind != SHE_DEVICE_CPU)
        err = she_learner_set_device(r->ln, &r->dev, errstr, errstr_size);
    if (err == SHE_OK)
        err = assign_partitions(r, offsets, errstr, errstr_size);
    /* The checkpoint's offsets are where consumption stands, so the next checkpoint carries
     * every partition even when no group came from it since. */
    if (err == SHE_OK)
        she_stream_set_done(r->st, offsets);
    free(offsets);
    return err;
}

/* Rank r's /metrics address: metrics.listen with r added to its port (metrics.rank.offset). */
static void metrics_addr(const learner_run_t *r, char *out, size_t cap) {
    const char *listen = she_conf_get(r->conf, "metrics.listen");
    snprintf(out, cap, "%s", listen ? listen : "");
    char *colon = strrchr(out, ':'), *end;
    if (r->world == 1 || !colon || !she_conf_get_bool(r->conf, "metrics.rank.offset"))
        return;
    long port = strtol(colon + 1, &end, 10);
    if (*end == '\0' && port > 0)
        snprintf(colon + 1, cap - (size_t)(colon + 1 - out), "%ld", port + r->rank);
}

/* A collective failed: the ranks no longer agree on where they are, so the job ends here (on
 * every rank: dist.h). */
static void fail_job(learner_run_t *r, const char *what, const char *errstr) {
    she_log_error(r->lg, "%s: %s; ending the job", what, errstr);
    she_dist_abort(r->dist, SHE_EXIT_FAILURE);
}

/* Between steps the ranks sum this vector (dist.h's deadline makes it the heartbeat too). */
enum { CTL_FULL, CTL_READY, CTL_STOP, CTL_ERROR, CTL_GROUPS, CTL_N };
#define ROUND_MS 200

int she_cmd_learn(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she learn --dir DIR [--init DIR] [options]",
                          "The streaming SRPO learner: trains on rewarded groups from she.rewarded\n"
                          "in batches of learn.batch prompts, writes a checkpoint with the\n"
                          "consumed offsets inside every learn.checkpoint.every steps and\n"
                          "announces it on she.checkpoints. Resumes from the newest checkpoint in\n"
                          "--dir (exactly once: no group trained twice or skipped). SIGTERM\n"
                          "writes a checkpoint of the last step and stops. Data parallel under\n"
                          "mpirun, or with dist.world.size / dist.rank / dist.master.addr (or\n"
                          "SHE_WORLD_SIZE, SHE_RANK, SHE_MASTER_ADDR): rank r reads the\n"
                          "partitions p with p % world == r, rank 0 writes the checkpoints.",
                          learn_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_signals_install();
    char errstr[SHE_ERRSTR_SIZE];
    learner_run_t r = {.conf = env.conf, .lg = env.lg, .world = 1};
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    she_dist_config_t dc;
    /* configuration and device first: a wrong --device fails before anything is joined */
    she_err_t err = dist_config(env.conf, &dc, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = learn_device(env.conf, &dc, &r.dev, errstr, sizeof(errstr));
    if (err == SHE_OK && dc.world_size > 1) {
        err = she_dist_init(&dc, &r.dist, errstr, sizeof(errstr));
        if (err == SHE_OK) {
            char desc[160];
            she_dist_describe(r.dist, desc, sizeof(desc));
            r.rank = she_dist_rank(r.dist);
            r.world = she_dist_world(r.dist);
            she_log_info(env.lg, "joined the learner job: %s", desc);
        }
    }
    if (err == SHE_OK)
        err = setup(&r, reg, errstr, sizeof(errstr));
    if (err == SHE_OK) {
        char addr[512];
        metrics_addr(&r, addr, sizeof(addr));
        err = she_stream_serve_metrics(addr, reg, env.lg, &httpd, errstr, sizeof(errstr));
    }
    if (err != SHE_OK && r.dist) { /* the other ranks wait for this one: take them down too */
        she_log_error(env.lg, "%s", errstr);
        she_dist_abort(r.dist, she_cmd_exit_status(err));
    }
    if (err == SHE_OK) {
        int64_t every = she_conf_get_int(env.conf, "learn.checkpoint.every");
        int64_t max_steps = she_conf_get_int(env.conf, "learn.max.steps");
        int64_t batch_timeout = she_conf_get_int(env.conf, "learn.batch.timeout.ms");
        int64_t check_every = she_conf_get_int(env.conf, "dist.check.every");
        char devname[SHE_DEVICE_NAME_MAX];
        she_device_name(&r.dev, devname, sizeof(devname));
        she_log_info(env.lg, "learning from she.rewarded: batch %d (%d on rank %d of %d), "
                     "checkpoint every %lld steps, policy %.2fM parameters, %s on %s",
                     r.batch, r.share, r.rank, r.world, (long long)every,
                     (double)r.policy->n_params / 1e6, she_conf_get(env.conf, "learn.algo"),
                     devname);
        int64_t last_group = she_stream_now_ms();
        const char *why_stop = "done";
        for (;;) {
            /* take groups in until this rank's share is full or the round is over */
            int stop = max_steps > 0 && r.step >= max_steps;
            int64_t round_end = she_stream_now_ms() + ROUND_MS;
            while (!stop && err == SHE_OK && r.n_groups < r.share &&
                   !she_signals_stop_requested() && she_stream_now_ms() < round_end) {
                /* A poll that finds a group waiting is Kafka work; one that has to wait for
                 * the upstream is idle time, counted nowhere. */
                double t0 = she_now_s();
                rd_kafka_message_t *rkm = she_stream_poll(r.st, 0);
                if (!rkm) {
                    int64_t left = round_end - she_stream_now_ms();
                    rkm = she_stream_poll(r.st, left > 0 ? (int)left : 0);
                    t0 = she_now_s();
                }
                if (rkm) {
                    int before = r.n_groups;
                    intake(&r, rkm);
                    r.t_kafka += she_now_s() - t0;
                    if (r.n_groups > before)
                        last_group = she_stream_now_ms();
                } else {
                    she_stream_service(r.st);
                }
            }
            /* ...then decide together: fail, stop, step, or take more in */
            int full = r.n_groups >= r.share;
            int quiet = batch_timeout > 0 && she_stream_now_ms() - last_group >= batch_timeout;
            float ctl[CTL_N] = {(float)full, (float)(full || quiet),
                                (float)(stop || she_signals_stop_requested()),
                                (float)(err != SHE_OK), (float)r.n_groups};
            if (r.world > 1) {
                char derr[SHE_ERRSTR_SIZE];
                if (she_dist_allreduce(r.dist, ctl, CTL_N, SHE_DIST_SUM, derr, sizeof(derr)) !=
                    SHE_OK)
                    fail_job(&r, "agreeing on the next step", derr);
            }
            if (ctl[CTL_ERROR] > 0) {
                if (err == SHE_OK)
                    err = she_errf(SHE_ERR_IO, errstr, sizeof(errstr),
                                   "another rank failed (see its log): stopping without a "
                                   "checkpoint");
                break;
            }
            if (ctl[CTL_STOP] > 0) {
                why_stop = she_signals_stop_requested() ? "stopped (SIGTERM)"
                           : stop                       ? "done"
                                                        : "stopped (SIGTERM on another rank)";
                break;
            }
            int all_full = (int)ctl[CTL_FULL] == r.world;
            int all_ready = batch_timeout > 0 && (int)ctl[CTL_READY] == r.world &&
                            ctl[CTL_GROUPS] > 0;
            if (!all_full && !all_ready)
                continue;
            err = train(&r, errstr, sizeof(errstr));
            if (err != SHE_OK && r.dist)
                fail_job(&r, "step", errstr);
            if (err != SHE_OK)
                break;
            if (r.step - r.ckpt_step >= every) {
                err = checkpoint(&r, errstr, sizeof(errstr));
                if (err != SHE_OK && r.dist && she_dist_failed(r.dist))
                    fail_job(&r, "checkpoint", errstr);
            }
            if (r.world > 1 && check_every > 0 && r.step % check_every == 0 &&
                (she_learner_sync_host(r.ln, errstr, sizeof(errstr)) != SHE_OK ||
                 she_dist_check_identical(r.dist, r.policy->params,
                                          sizeof(float) * r.policy->n_params, "parameters",
                                          errstr, sizeof(errstr)) != SHE_OK))
                fail_job(&r, "checking that the ranks agree", errstr);
            if (r.step % every == 0)
                she_log_info(env.lg, "time: %.1f s in SRPO steps, %.2f s in Kafka + Avro "
                             "(%.2f%% of step time)", r.t_train, r.t_kafka,
                             100.0 * r.t_kafka / (r.t_kafka + r.t_train + 1e-9));
        }
        if (err == SHE_OK && r.step != r.ckpt_step) {
            err = checkpoint(&r, errstr, sizeof(errstr));
            if (err != SHE_OK && r.dist && she_dist_failed(r.dist))
                fail_job(&r, "final checkpoint", errstr);
        }
        she_log_info(env.lg, "%s at step %" PRId64 " (v%" PRId64 "): %" PRId64 " groups trained, "
                     "%" PRId64 " duplicates skipped, %" PRId64 " stale re-queued, %" PRId64
                     " dead-lettered; %.1f s in SRPO steps, %.2f s in Kafka + Avro (%.2f%% of "
                     "step time)",
                     why_stop, r.step,
                     r.version, r.n_trained, r.n_duplicates, r.n_requeued, r.n_dead, r.t_train,
                     r.t_kafka, 100.0 * r.t_kafka / (r.t_kafka + r.t_train + 1e-9));
    }
    int status = she_cmd_exit_status(err);
    if (err != SHE_OK)
        she_log_error(env.lg, "%s", errstr);
    /* Messages of an unfinished batch stay unconsumed: a restart reads them again. */
    for (int i = 0; i < r.n_groups; i++)
        she_msg_clear_rewarded_group(&r.groups[i]);
    for (int m = 0; m < r.n_msgs; m++)
        rd_kafka_message_destroy(r.msgs[m].rkm);
    she_httpd_free(httpd);
    she_stream_free(r.st);
    she_learner_free(r.ln);
    she_model_free(r.policy);
    she_model_free(r.ref);
    she_adamw_free(r.opt);
    id_free(&r.trained);
    free(r.groups);
    free(r.msgs);
    free(r.ids);
    free(r.ids_all);
    she_dist_free(r.dist);
    she_metrics_free(reg);
    she_cmd_fini(&env);
    return status;
}
