/* test_stream_pipeline.c -- the streaming pipeline's reliability, end to end, with `she broker`,
 * `she produce`, `she control`, `she rollout`, `she reward` and `she learn` as separate
 * processes on a tiny random policy (one case per run, chosen by argv[1]):
 *
 *   accounting  60 samples (and 2 bad rows, which `she produce` reports) through the whole loop;
 *               a malformed message on every input topic; the rollout and then the reward
 *               consumer SIGKILLed mid-stream and restarted.  At the end every produced sample
 *               is trained on exactly once (the learner's checkpoint holds the trained ids, and
 *               as many groups were trained as there are ids), or its last selection decision
 *               is a rejection (counted by reason), or it is on the dead-letter topic -- nothing
 *               else; every malformed message is on the dead-letter topic with its source.
 *   outage      the same loop with every broker taken down for 10 s mid-stream through
 *               `she broker`'s fault control (SIGUSR1 / SIGUSR2), half of the samples produced
 *               while it is down: the same accounting holds and no component reports data
 *               loss.
 *   resume      24 rewarded groups on one partition; `she learn` to step 6 without
 *               interruption, and again SIGKILLed after its step-2 checkpoint and restarted:
 *               both end with bit-identical weights and AdamW state, and the same trained ids.
 *   staleness   `she rollout` (rollout.staleness = 2) sees v1..v3 announced and v3, the newest,
 *               refused (its SHA-256 does not match): its live v0 is 3 versions behind, so it pauses and
 *               rolls nothing out of the samples produced meanwhile; a good v4 is announced,
 *               loaded, and every sample is rolled out by v4 and no other version.
 *   curriculum  `she control` and `she rollout` with two stages, "easy" (recent pass rate in
 *               [0.5, 1], 2 steps) and "all": pass-rate records (one control step each 8)
 *               place 4 samples as easy and 4 as hard; produced in stage easy, the hard ones
 *               are skipped (skip_curriculum) and the easy ones admitted; 8 more records make
 *               the second step, control moves to stage all and says why, the rollout consumer
 *               follows, and the hard samples produced again are admitted.
 *   backlog     `she rollout --max-backlog 8` with nothing downstream: it makes a few batches of
 *               groups and pauses (not all 160 samples); once the reward group has committed
 *               past them (the test commits for it) it resumes and pauses again; when the
 *               learner's group commits nothing for rollout.backlog.stall.s (15 s) while
 *               she.rewarded holds more than the bound, it rolls out the rest anyway, and
 *               bounds the backlog again once the learner's group commits.
 *   lostrank    (N = 2 ranks) `she learn` with a 4 s collective deadline: the last rank is
 *               stopped (SIGSTOP: hung) after the first checkpoint, and the others end the job
 *               with a failure status within the deadline, naming it; then rank 0 is SIGKILLed
 *               and the others end the job at once; the checkpoint before stays whole.
 * An optional argv[2] = N runs `she learn` as N data-parallel ranks (the TCP star on
 * 127.0.0.1; rank r reads the partitions p with p % N == r): accounting then also SIGKILLs
 * every rank after a few steps and restarts them all, and checks that the checkpoint holds
 * every rank's partitions' offsets; resume spreads the groups over partitions 0..N-1 and kills
 * and restarts every rank.
 *
 * Tiny models keep it fast: the policy is a random 2-layer, 32-wide model over a 320-id
 * tokenizer trained on the generated samples, so rewards are mostly 0 (accounting does not
 * care); the resume case uses synthetic groups with random rewards, so its steps do move the
 * weights. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckptdir.h"
#include "dataset.h"
#include "gendata.h"
#include "messages.h"
#include "policy_watch.h"
#include "stream.h"
#include "proc.h"
#include "samples.h"
#include "topic.h"
#include "sha256.h"
#include "test.h"
#include "trainer/sft.h"

static const char *she_bin;
static char dir[1024];      /* this case's scratch directory */
static int ranks = 1;       /* of `she learn` (argv[2]) */
static char bootstrap[256];
static pid_t broker_pid = -1;

/* ---- processes ---- */

/* A port nobody listens on right now (the learner ranks' rendezvous). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    SHE_ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
               getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Lines of dir/<name> containing needle. */
static int log_lines(const char *name, const char *needle) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return tp_count_lines(path, needle);
}

/* log_lines once it reaches at_least, or after timeout_s. */
static int wait_log_lines(const char *name, const char *needle, int at_least, double timeout_s) {
    int n = log_lines(name, needle);
    for (double t0 = she_now_s(); n < at_least && she_now_s() - t0 < timeout_s; usleep(200000))
        n = log_lines(name, needle);
    return n;
}

/* Every collective's deadline in the learner ranks (lostrank shortens it). */
static const char *dist_timeout = "dist.timeout.s=60";

/* Starts `she learn ARGS...` as `ranks` processes into pids[0, ranks): rank 0 logs to
 * <log>.log, rank r > 0 to <log><r>.log. */
static void spawn_learners(const char *log, const char *const *args, pid_t *pids) {
    char world[64], rank[64], port[64], name[64];
    snprintf(world, sizeof(world), "dist.world.size=%d", ranks);
    snprintf(port, sizeof(port), "dist.master.port=%d", free_port());
    for (int r = 0; r < ranks; r++) {
        const char *a[64];
        int n = 0;
        for (int i = 0; args[i] && n < 50; i++)
            a[n++] = args[i];
        snprintf(rank, sizeof(rank), "dist.rank=%d", r);
        const char *dist[] = {"--set", world, "--set", rank, "--set", port, "--set",
                              "dist.master.addr=127.0.0.1", "--set", dist_timeout};
        for (int i = 0; ranks > 1 && i < 10; i++)
            a[n++] = dist[i];
        a[n] = NULL;
        snprintf(name, sizeof(name), r ? "%s%d" : "%s", log, r);
        pids[r] = tp_spawn(she_bin, dir, name, a);
    }
}

/* ---- a tiny policy: trained tokenizer, random weights ---- */

static int make_policy(const char *out, const samples_t *ss) {
    char errstr[SHE_ERRSTR_SIZE], tmp[1300], path[1400];
    she_tokenizer_t *tok = NULL;
    if (she_sft_train_tokenizer(ss->v, ss->n, NULL, NULL, 320, &tok, errstr, sizeof(errstr))) {
        fprintf(stderr, "tokenizer: %s\n", errstr);
        return -1;
    }
    she_model_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    cfg.vocab_size = she_tokenizer_vocab_size(tok);
    cfg.hidden_size = 32;
    cfg.intermediate_size = 64;
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    cfg.max_position_embeddings = 512;
    cfg.rope_theta = 10000;
    cfg.rms_norm_eps = 1e-5;
    cfg.tie_word_embeddings = 1;
    she_model_t *m = NULL;
    she_err_t err = she_model_new(&cfg, 1, 8, &m, errstr, sizeof(errstr));
    if (err == SHE_OK) {
        she_model_init_weights(m, 7, 0.02f);
        err = she_ckptdir_begin(out, tmp, sizeof(tmp), errstr, sizeof(errstr));
    }
    if (err == SHE_OK) {
        err = she_model_write_files(m, NULL, tmp, errstr, sizeof(errstr));
        snprintf(path, sizeof(path), "%s/tokenizer.json", tmp);
        if (err == SHE_OK)
            err = she_tokenizer_save(tok, path, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = she_ckptdir_commit(tmp, out, errstr, sizeof(errstr));
    }
    if (err != SHE_OK)
        fprintf(stderr, "policy: %s\n", errstr);
    she_model_free(m);
    she_tokenizer_free(tok);
    return err == SHE_OK ? 0 : -1;
}

/* A tiny policy in dir/policy (its path into policy; a second copy in also, when given) and
 * the embedded broker: 0, or -1 when either could not be made. */
static int start_with_policy(char *policy, size_t cap, const char *also) {
    samples_t pool = {0};
    snprintf(policy, cap, "%s/policy", dir);
    gen_samples(&pool, 200, 3);
    int rc = make_policy(policy, &pool) == 0 && (!also || make_policy(also, &pool) == 0) ? 0 : -1;
    free_samples(&pool);
    if (rc == 0)
        broker_pid = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap));
    return rc == 0 && broker_pid > 0 ? 0 : -1;
}

/* ---- raw Kafka ---- */

static rd_kafka_t *producer(void) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
}

static void produce_raw(rd_kafka_t *rk, const char *topic, int partition, const char *key,
                        const void *val, size_t len) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA
                                                                         : partition),
        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)val, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    CHECK(e == RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Every dead letter so far: keys (as strings) and source topics, parallel arrays. */
typedef struct dead_letters {
    char **key, **topic;
    int n;
} dead_letters_t;

static void take_dead_letter(const rd_kafka_message_t *m, she_avro_codec_t *ac, void *opaque) {
    dead_letters_t *dl = opaque;
    char err[512];
    she_dead_letter_t d = {0};
    if (she_msg_decode_dead_letter(ac, m->payload, m->len, &d, err, sizeof(err)) == SHE_OK) {
        dl->key = realloc(dl->key, sizeof(char *) * (dl->n + 1));
        dl->topic = realloc(dl->topic, sizeof(char *) * (dl->n + 1));
        dl->key[dl->n] = strndup(d.key ? (char *)d.key : "", d.key ? d.key_len : 0);
        dl->topic[dl->n] = strdup(d.source_topic);
        dl->n++;
    }
    she_msg_clear_dead_letter(&d);
}

static void read_dead_letters(dead_letters_t *dl) {
    tp_read_topic(bootstrap, "she.deadletter", 2, take_dead_letter, dl);
}

static int dead_lettered(const dead_letters_t *dl, const char *key, const char *topic) {
    for (int i = 0; i < dl->n; i++)
        if (strcmp(dl->key[i], key) == 0 && (!topic || strcmp(dl->topic[i], topic) == 0))
            return 1;
    return 0;
}

static void free_dead_letters(dead_letters_t *dl) {
    for (int i = 0; i < dl->n; i++) {
        free(dl->key[i]);
        free(dl->topic[i]);
    }
    free(dl->key);
    free(dl->topic);
}

/* ---- the whole loop ---- */

typedef struct loop {
    pid_t control, rollout, reward, learn[8]; /* learn[0, ranks) */
    char policy[1200];
} loop_t;

#define KAFKA_FAST "--set", "kafka.session.timeout.ms=6000", "--set", \
                   "kafka.heartbeat.interval.ms=1000", "--metrics", "0"

static pid_t start_rollout(const loop_t *lp) {
    char dec[1200];
    snprintf(dec, sizeof(dec), "%s/decisions.jsonl", dir);
    const char *a[] = {"rollout", "--bootstrap", bootstrap, KAFKA_FAST, "--policy", lp->policy,
                       "--group", "2", "--max-new", "8", "--batch", "4", "--decisions-file", dec,
                       "--log-level", "warn", NULL};
    return tp_spawn(she_bin, dir, "rollout", a);
}

static pid_t start_reward(const loop_t *lp) {
    const char *a[] = {"reward", "--bootstrap", bootstrap, KAFKA_FAST, "--policy", lp->policy,
                       "--mode", "sum", "--log-level", "warn", NULL};
    return tp_spawn(she_bin, dir, "reward", a);
}

static void start_learners(loop_t *lp) {
    char ckpt[1200];
    snprintf(ckpt, sizeof(ckpt), "%s/learn", dir);
    const char *la[] = {"learn", "--bootstrap", bootstrap, KAFKA_FAST, "--init", lp->policy,
                        "--dir", ckpt, "--batch", "4", "--checkpoint-every", "2",
                        "--set", "learn.batch.timeout.ms=2000", "--set", "learn.max.seq=200",
                        "--set", "learn.micro.batch=8", NULL};
    spawn_learners("learn", la, lp->learn);
}

static void start_loop(loop_t *lp) {
    /* a tight cap on plain queries: the rollout consumers get it through the control state, and
     * the quota skips it causes are rejections the accounting has to count */
    const char *ca[] = {"control", "--bootstrap", bootstrap, KAFKA_FAST,
                        "--set", "control.step.groups=4", "--set", "selection.quota.caps=plain=0.05",
                        "--log-level", "warn", NULL};
    lp->control = tp_spawn(she_bin, dir, "control", ca);
    lp->rollout = start_rollout(lp);
    lp->reward = start_reward(lp);
    start_learners(lp);
}

/* SIGTERM to every learner rank: 0 when all stop cleanly. */
static int stop_learners(const loop_t *lp) {
    int rc = 0;
    for (int r = 0; r < ranks; r++)
        rc |= tp_stop(lp->learn[r]);
    return rc;
}

/* The newest checkpoint holds every rank's offsets: partitions of each rank, none beyond the
 * partition's end. */
static void check_rank_offsets(json_t *st) {
    json_t *offs = json_object_get(json_object_get(st, "offsets"), "she.rewarded");
    int per_rank[8] = {0};
    const char *p;
    json_t *v;
    rd_kafka_t *rk = producer();
    json_object_foreach(offs, p, v) {
        int64_t lo = 0, hi = -1;
        CHECK(rd_kafka_query_watermark_offsets(rk, "she.rewarded", atoi(p), &lo, &hi, 10000) ==
              RD_KAFKA_RESP_ERR_NO_ERROR);
        CHECK_MSG(json_integer_value(v) > 0 && json_integer_value(v) <= hi,
                  "partition %s: offset %lld, end %lld", p, (long long)json_integer_value(v),
                  (long long)hi);
        per_rank[atoi(p) % ranks]++;
    }
    rd_kafka_destroy(rk);
    for (int r = 0; r < ranks; r++)
        CHECK_MSG(per_rank[r] > 0, "the checkpoint holds no offset of rank %d's partitions", r);
    CHECK_EQ_INT(json_integer_value(json_object_get(st, "world_size")), ranks);
}

/* Writes samples [from, to) of ss to dir/name (with two bad rows after the first ten when bad). */
static void write_samples(const char *name, const samples_t *ss, int from, int to, int bad,
                          char *path, size_t cap) {
    char errstr[SHE_ERRSTR_SIZE];
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    SHE_ASSERT(f != NULL);
    for (int i = from; i < to; i++) {
        SHE_ASSERT(she_sample_write_jsonl(f, &ss->v[i], errstr, sizeof(errstr)) == SHE_OK);
        if (bad && i == from + 10)
            fputs("{\"query\": \"no title\"}\n{not json\n", f);
    }
    fclose(f);
}

static pid_t start_produce(const char *path) {
    const char *a[] = {"produce", "--bootstrap", bootstrap, "--metrics", "0", path, NULL};
    return tp_spawn(she_bin, dir, "produce", a);
}

/* Produces samples [from, to) of ss (with two bad rows) and checks `she produce`'s report. */
static int produce_samples(const samples_t *ss, int from, int to) {
    char path[1200], want[128];
    write_samples("data.jsonl", ss, from, to, 1, path, sizeof(path));
    int rc = tp_wait_exit(start_produce(path), 60);
    CHECK_EQ_INT(rc, 0);
    snprintf(want, sizeof(want), "\"produced\": %d, \"delivered\": %d, \"bad_rows\": 2",
             to - from, to - from);
    CHECK_EQ_INT(log_lines("produce.log", want), 1);
    CHECK_EQ_INT(log_lines("produce.log", "bad row skipped: "), 2);
    return rc;
}

/* Waits until nothing new happens for quiet_s (decisions, learner log), up to timeout_s. */
static void wait_quiet(double quiet_s, double timeout_s) {
    int last_dec = -1, last_steps = -1;
    double since = she_now_s();
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s; sleep(1)) {
        int dec = log_lines("decisions.jsonl", "reason");
        int steps = log_lines("learn.log", " groups, loss ");
        if (dec != last_dec || steps != last_steps) {
            last_dec = dec;
            last_steps = steps;
            since = she_now_s();
        } else if (she_now_s() - since >= quiet_s) {
            return;
        }
    }
    fprintf(stderr, "no quiet period within %.0f s\n", timeout_s);
}

/* The newest checkpoint's trainer_state.json. */
static json_t *learner_state(void) {
    char path[1300];
    for (int v = 999; v >= 0; v--) {
        snprintf(path, sizeof(path), "%s/learn/v%06d/trainer_state.json", dir, v);
        if (access(path, R_OK) == 0)
            return json_load_file(path, 0, NULL);
    }
    return NULL;
}

/* Every produced sample: trained once, rejected, or dead-lettered. */
static void check_accounting(const samples_t *ss) {
    json_t *st = learner_state();
    REQUIRE(st != NULL);
    json_t *ids = json_object_get(st, "trained_ids");
    long long n_trained = json_integer_value(json_object_get(st, "n_trained"));
    CHECK_EQ_INT(n_trained, json_array_size(ids)); /* no sample trained twice */
    /* last decision per sample */
    char path[1200], line[4096];
    snprintf(path, sizeof(path), "%s/decisions.jsonl", dir);
    json_t *last = json_object();
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        json_t *d = json_loads(line, 0, NULL);
        if (d)
            json_object_set(last, json_string_value(json_object_get(d, "sample_id")),
                            json_object_get(d, "reason"));
        json_decref(d);
    }
    if (f)
        fclose(f);
    dead_letters_t dl = {0};
    read_dead_letters(&dl);
    int trained = 0, rejected = 0, dead = 0, lost = 0;
    json_t *by_reason = json_object();
    for (int i = 0; i < ss->n; i++) {
        const char *id = ss->v[i].sample_id;
        int in_trained = 0;
        size_t k;
        json_t *v;
        json_array_foreach(ids, k, v) in_trained |= strcmp(json_string_value(v), id) == 0;
        const char *reason = json_string_value(json_object_get(last, id));
        if (in_trained) {
            trained++;
        } else if (reason && strncmp(reason, "skip_", 5) == 0) {
            rejected++;
            json_t *c = json_object_get(by_reason, reason);
            json_object_set_new(by_reason, reason, json_integer(c ? json_integer_value(c) + 1 : 1));
        } else if (dead_lettered(&dl, id, NULL)) {
            dead++;
        } else {
            lost++;
            fprintf(stderr, "sample %s: neither trained, rejected nor dead-lettered (last "
                    "decision %s)\n", id, reason ? reason : "none");
        }
    }
    char *r = json_dumps(by_reason, JSON_COMPACT);
    fprintf(stderr, "accounting of %d samples: %d trained, %d rejected %s, %d dead-lettered, %d "
            "lost; learner: %lld duplicates skipped, %lld stale re-queued\n",
            ss->n, trained, rejected, r, dead, lost,
            (long long)json_integer_value(json_object_get(st, "n_duplicates")),
            (long long)json_integer_value(json_object_get(st, "n_requeued")));
    free(r);
    CHECK_EQ_INT(lost, 0);
    CHECK_EQ_INT(trained + rejected + dead, ss->n);
    CHECK_MSG(json_object_get(by_reason, "skip_quota") != NULL,
              "no sample was held back by the control state's cap on plain queries");
    CHECK(trained > 0);
    json_decref(by_reason);
    json_decref(last);
    json_decref(st);
    free_dead_letters(&dl);
}

static void test_accounting(void) {
    samples_t ss = {0}, pool = {0};
    loop_t lp = {0};
    snprintf(lp.policy, sizeof(lp.policy), "%s/policy", dir);
    gen_samples(&pool, 200, 3);
    REQUIRE(make_policy(lp.policy, &pool) == 0);
    free_samples(&pool);
    REQUIRE((broker_pid = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap))) > 0);
    start_loop(&lp);
    gen_samples(&ss, 60, 11);
    REQUIRE(produce_samples(&ss, 0, 60) == 0);

    /* a malformed message on every input topic */
    static const char *const topics[] = {"she.samples", "she.rollouts", "she.rewarded",
                                         "she.passrate", "she.control", "she.checkpoints"};
    rd_kafka_t *rk = producer();
    for (int i = 0; i < 6; i++) {
        char key[64];
        snprintf(key, sizeof(key), "malformed-%d", i);
        produce_raw(rk, topics[i], -1, key, "\xc3\x01not an avro body", 18);
    }
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);

    /* SIGKILL the rollout consumer mid-stream, then the reward consumer, and restart them */
    for (double t0 = she_now_s(); log_lines("decisions.jsonl", "reason") < 12 && she_now_s() - t0 < 60;)
        usleep(100000);
    kill(lp.rollout, SIGKILL);
    waitpid(lp.rollout, NULL, 0);
    fprintf(stderr, "rollout killed after %d decisions\n", log_lines("decisions.jsonl", "reason"));
    lp.rollout = start_rollout(&lp);
    for (double t0 = she_now_s(); log_lines("learn.log", " groups, loss ") < 2 && she_now_s() - t0 < 60;)
        usleep(100000);
    kill(lp.reward, SIGKILL);
    waitpid(lp.reward, NULL, 0);
    fprintf(stderr, "reward killed after %d learner steps\n", log_lines("learn.log", " groups, loss "));
    lp.reward = start_reward(&lp);
    if (ranks > 1) { /* every learner rank SIGKILLed after its step-4 checkpoint, restarted */
        for (double t0 = she_now_s(); log_lines("learn.log", " groups, loss ") < 4 &&
                                  she_now_s() - t0 < 60;)
            usleep(100000);
        for (int r = 0; r < ranks; r++) {
            kill(lp.learn[r], SIGKILL);
            waitpid(lp.learn[r], NULL, 0);
        }
        fprintf(stderr, "%d learner ranks killed after %d steps\n", ranks,
                log_lines("learn.log", " groups, loss "));
        start_learners(&lp);
    }

    wait_quiet(15, 90);
    CHECK_EQ_INT(stop_learners(&lp), 0);
    CHECK_EQ_INT(tp_stop(lp.rollout), 0);
    CHECK_EQ_INT(tp_stop(lp.reward), 0);
    CHECK_EQ_INT(tp_stop(lp.control), 0);
    check_accounting(&ss);
    if (ranks > 1) {
        json_t *st = learner_state();
        REQUIRE(st != NULL);
        check_rank_offsets(st);
        json_decref(st);
        CHECK_EQ_INT(log_lines("learn.log", "resuming from"), 1);
        CHECK_EQ_INT(log_lines("learn1.log", "starting from rank 0's v"), 2);
    }
    dead_letters_t dl = {0};
    read_dead_letters(&dl);
    for (int i = 0; i < 6; i++) {
        char key[64];
        snprintf(key, sizeof(key), "malformed-%d", i);
        CHECK_MSG(dead_lettered(&dl, key, topics[i]), "malformed message on %s not dead-lettered",
                  topics[i]);
    }
    free_dead_letters(&dl);
    free_samples(&ss);
}

static void test_outage(void) {
    samples_t ss = {0}, pool = {0};
    loop_t lp = {0};
    snprintf(lp.policy, sizeof(lp.policy), "%s/policy", dir);
    gen_samples(&pool, 200, 3);
    REQUIRE(make_policy(lp.policy, &pool) == 0);
    free_samples(&pool);
    REQUIRE((broker_pid = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap))) > 0);
    start_loop(&lp);
    gen_samples(&ss, 60, 11);
    REQUIRE(produce_samples(&ss, 0, 30) == 0);
    for (double t0 = she_now_s(); log_lines("decisions.jsonl", "reason") < 12 && she_now_s() - t0 < 60;)
        usleep(100000);
    fprintf(stderr, "brokers down after %d decisions\n", log_lines("decisions.jsonl", "reason"));
    kill(broker_pid, SIGUSR1);
    /* the second half is produced while the brokers are down */
    char path[1200];
    write_samples("data2.jsonl", &ss, 30, 60, 0, path, sizeof(path));
    pid_t prod = start_produce(path);
    sleep(10);
    kill(broker_pid, SIGUSR2);
    fprintf(stderr, "brokers up again\n");
    CHECK_EQ_INT(tp_wait_exit(prod, 60), 0);
    CHECK_EQ_INT(log_lines("produce.log", "\"produced\": 30, \"delivered\": 30"), 2);
    wait_quiet(15, 90);
    CHECK_EQ_INT(stop_learners(&lp), 0);
    CHECK_EQ_INT(tp_stop(lp.rollout), 0);
    CHECK_EQ_INT(tp_stop(lp.reward), 0);
    CHECK_EQ_INT(tp_stop(lp.control), 0);
    check_accounting(&ss);
    const char *logs[] = {"rollout.log", "reward.log", "learn.log", "control.log"};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(log_lines(logs[i], "DATA LOSS") == 0, "%s reports data loss", logs[i]);
    free_samples(&ss);
}

/* ---- learner resume ---- */

/* Synthetic rewarded groups s<first>..s<first+n-1> of G responses with random tokens and
 * rewards, made by policy `version`; group i to partition i % ranks (each rank reads its groups
 * in a fixed order). */
static void produce_groups(int first, int n, int G, int vocab, int64_t version) {
    char errstr[SHE_ERRSTR_SIZE];
    she_avro_codec_t *ac = NULL;
    SHE_ASSERT(she_msg_codec_open(NULL, &ac, errstr, sizeof(errstr)) == SHE_OK);
    rd_kafka_t *rk = producer();
    she_rng_t rng;
    she_rng_seed(&rng, 42);
    for (int i = first; i < first + n; i++) {
        char id[32], gid[64];
        snprintf(id, sizeof(id), "s%03d", i);
        snprintf(gid, sizeof(gid), "%s@%lld/1", id, (long long)version);
        she_rewarded_group_t g = {0};
        she_rollout_group_t *ro = &g.rollout;
        ro->group_id = gid;
        ro->policy_version = version;
        ro->sample_id = id;
        ro->sample.sample_id = id;
        ro->sample.query = "red sweater";
        ro->sample.item_title = "Red Wool Sweater";
        ro->sample.item_id = "item-1";
        ro->sample.grade = SHE_GRADE_L4;
        int32_t prompt[12];
        for (int t = 0; t < 12; t++)
            prompt[t] = (int32_t)she_rng_below(&rng, (uint32_t)vocab);
        ro->prompt_tokens = prompt;
        ro->n_prompt_tokens = 12;
        she_response_t resp[8];
        int32_t tok[8][10];
        float lp[8][10];
        she_step_span_t span[8][5];
        she_response_reward_t rw[8];
        int n_pass = 0;
        for (int k = 0; k < G; k++) {
            for (int t = 0; t < 10; t++) {
                tok[k][t] = (int32_t)she_rng_below(&rng, (uint32_t)vocab);
                lp[k][t] = -5.0f - (float)she_rng_uniform(&rng);
            }
            for (int j = 0; j < 5; j++)
                span[k][j] = (she_step_span_t){j + 1, 2 * j, 2 * j + 2};
            resp[k] = (she_response_t){tok[k], lp[k], 10, span[k], 5, 0};
            memset(&rw[k], 0, sizeof(rw[k]));
            for (int j = 0; j < 5; j++) {
                rw[k].step_rewards[j] = she_rng_uniform(&rng) < 0.5 ? 0.2f : 0.0f;
                rw[k].total += rw[k].step_rewards[j];
            }
            rw[k].pass = rw[k].step_rewards[4] > 0;
            n_pass += rw[k].pass;
        }
        ro->responses = resp;
        ro->n_responses = G;
        g.rewards = rw;
        g.n_rewards = G;
        g.pass_rate = (float)n_pass / (float)G;
        const uint8_t *buf;
        size_t len;
        she_err_t e = she_msg_encode_rewarded_group(ac, &g, &buf, &len, errstr, sizeof(errstr));
        REQUIRE_MSG(e == SHE_OK, "encode: %s", errstr);
        produce_raw(rk, "she.rewarded", i % ranks, id, buf, len);
    }
    CHECK(rd_kafka_flush(rk, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
    she_avro_codec_free(ac);
}

/* Runs the learner (every rank) into dir/name; 0 when every rank exited 0 within timeout_s,
 * or, with kill_after_step > 0, SIGKILLs every rank once rank 0 logs that step after its
 * first checkpoint. */
/* Starts the learner (every rank, batches of 4, a checkpoint every 2 steps) into dir/name. */
static void start_job(const char *policy, const char *name, const char *max_steps,
                      const char *staleness, pid_t *pids) {
    char ckpt[1200];
    snprintf(ckpt, sizeof(ckpt), "%s/%s", dir, name);
    const char *a[] = {"learn", "--bootstrap", bootstrap, "--metrics", "0", "--init", policy,
                       "--dir", ckpt, "--batch", "4", "--checkpoint-every", "2",
                       "--max-steps", max_steps, "--lr", "1e-3", "--set", "learn.micro.batch=8",
                       "--set", "learn.max.seq=64", "--set", staleness, NULL};
    spawn_learners(name, a, pids);
}

/* Waits up to 60 s for the learner in dir/name to write its first checkpoint (step 2). */
static int wait_first_checkpoint(const char *name) {
    char ck[1300];
    snprintf(ck, sizeof(ck), "%s/%s/v000001/trainer_state.json", dir, name);
    for (double t0 = she_now_s(); she_now_s() - t0 < 60; usleep(20000))
        if (access(ck, R_OK) == 0)
            return 0;
    return -1;
}

static int run_learner_for(const char *policy, const char *name, const char *max_steps,
                           const char *staleness, int kill_after_step, double timeout_s) {
    pid_t pids[8];
    start_job(policy, name, max_steps, staleness, pids);
    int rc = 0;
    if (kill_after_step > 0) {
        char log[128], line[32];
        snprintf(log, sizeof(log), "%s.log", name);
        snprintf(line, sizeof(line), "step %d:", kill_after_step);
        wait_first_checkpoint(name);
        for (double t0 = she_now_s(); log_lines(log, line) == 0 && she_now_s() - t0 < 30;)
            usleep(20000);
        for (int r = 0; r < ranks; r++)
            kill(pids[r], SIGKILL);
    }
    for (int r = 0; r < ranks; r++) /* a killed job's exit statuses say nothing */
        rc |= tp_wait_exit(pids[r], timeout_s) != 0 && kill_after_step == 0;
    return rc;
}

static int run_learner(const char *policy, const char *name, int kill_after_step,
                       double timeout_s) {
    return run_learner_for(policy, name, "6", "learn.staleness=1000", kill_after_step, timeout_s);
}

static void file_sha(const char *rel, char hex[65]) {
    char path[1300], errstr[SHE_ERRSTR_SIZE];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    if (she_sha256_file(path, hex, errstr, sizeof(errstr)) != SHE_OK)
        snprintf(hex, 65, "missing: %s", rel);
}

static void test_resume(void) {
    char policy[1200];
    REQUIRE(start_with_policy(policy, sizeof(policy), NULL) == 0);
    produce_groups(0, 24, 4, 300, 0);

    CHECK_EQ_INT(run_learner(policy, "a", 0, 90), 0);
    CHECK_EQ_INT(run_learner(policy, "b", 3, 10), 0);
    fprintf(stderr, "learner killed at step %s\n", log_lines("b.log", "step 4:") ? ">= 4" : "3");
    CHECK_EQ_INT(log_lines("b.log", "resuming from"), 0);
    CHECK_EQ_INT(run_learner(policy, "b", 0, 90), 0);
    CHECK_EQ_INT(log_lines("b.log", "resuming from"), 1);
    for (int r = 1; r < ranks; r++) {
        char log[32];
        snprintf(log, sizeof(log), "b%d.log", r);
        CHECK_EQ_INT(log_lines(log, "starting from rank 0's v0:"), 1);
        CHECK_EQ_INT(log_lines(log, "starting from rank 0's v"), 2);
    }
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        char ra[128], rb[128], ha[65], hb[65];
        snprintf(ra, sizeof(ra), "a/v000003/%s", files[i]);
        snprintf(rb, sizeof(rb), "b/v000003/%s", files[i]);
        file_sha(ra, ha);
        file_sha(rb, hb);
        CHECK_MSG(strcmp(ha, hb) == 0, "%s differs after a restart: %s vs %s", files[i], ha, hb);
    }
    char pa[1300], pb[1300];
    snprintf(pa, sizeof(pa), "%s/a/v000003/trainer_state.json", dir);
    snprintf(pb, sizeof(pb), "%s/b/v000003/trainer_state.json", dir);
    json_t *sa = json_load_file(pa, 0, NULL), *sb = json_load_file(pb, 0, NULL);
    REQUIRE(sa && sb);
    CHECK(json_equal(json_object_get(sa, "trained_ids"), json_object_get(sb, "trained_ids")));
    CHECK(json_equal(json_object_get(sa, "offsets"), json_object_get(sb, "offsets")));
    CHECK_EQ_INT(json_integer_value(json_object_get(sb, "step")), 6);
    CHECK_EQ_INT(json_array_size(json_object_get(sb, "trained_ids")), 24);
    /* every rank's partition, consumed to the end (24 / ranks groups each) */
    json_t *offs = json_object_get(json_object_get(sb, "offsets"), "she.rewarded");
    for (int p = 0; p < ranks; p++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", p);
        CHECK_EQ_INT(json_integer_value(json_object_get(offs, key)), 24 / ranks);
    }
    /* the weights did move: v3 is not v0 */
    char h0[65], h3[65];
    file_sha("a/v000000/model.safetensors", h0);
    file_sha("a/v000003/model.safetensors", h3);
    CHECK(strcmp(h0, h3) != 0);
    json_decref(sa);
    json_decref(sb);
}

/* ---- a lost learner rank ---- */

/* One learner job whose rank `victim` gets `sig` after the first checkpoint: every other rank
 * must end the job on its own, with a failure status, within the collectives' deadline (plus
 * slack for a loaded machine), naming the lost rank; the checkpoint written before stays
 * whole. */
static void lose_rank(const char *policy, const char *name, int victim, int sig,
                      const char *const *why) {
    pid_t pids[8];
    start_job(policy, name, "1000", "learn.staleness=1000", pids);
    REQUIRE_MSG(wait_first_checkpoint(name) == 0, "%s: no checkpoint within 60 s", name);
    kill(pids[victim], sig);
    double t0 = she_now_s();
    for (int r = 0; r < ranks; r++) {
        if (r == victim)
            continue;
        int rc = tp_wait_exit(pids[r], 30);
        double took = she_now_s() - t0;
        fprintf(stderr, "%s: rank %d exited %d %.1f s after rank %d got signal %d\n", name, r,
                rc, took, victim, sig);
        CHECK_MSG(rc > 0 && rc < 128, "%s: rank %d exited %d (-1: still running after 30 s)",
                  name, r, rc);
        CHECK_MSG(took < 4 + 15, "%s: rank %d took %.1f s to give up on rank %d", name, r, took,
                  victim);
        char log[64], needle[64];
        snprintf(log, sizeof(log), r ? "%s%d.log" : "%s.log", name, r);
        int named = 0;
        for (int k = 0; why[k]; k++) {
            snprintf(needle, sizeof(needle), "rank %d%s", victim, why[k]);
            named += log_lines(log, needle);
        }
        CHECK_MSG(named >= 1, "%s: %s does not say what became of rank %d", name, log, victim);
        CHECK(log_lines(log, "ending the job") >= 1);
    }
    kill(pids[victim], SIGKILL); /* a stopped rank is still there */
    tp_wait_exit(pids[victim], 10);
    char ck[1300], errstr[SHE_ERRSTR_SIZE];
    snprintf(ck, sizeof(ck), "%s/%s/v000001", dir, name);
    CHECK_MSG(she_ckptdir_verify(ck, errstr, sizeof(errstr)) == SHE_OK, "%s", errstr);
}

static void test_lostrank(void) {
    /* with more, the ranks beside rank 0 see rank 0 close, not the victim */
    REQUIRE_MSG(ranks == 2, "lostrank needs 2 learner ranks (argv[2])");
    char policy[1200];
    REQUIRE(start_with_policy(policy, sizeof(policy), NULL) == 0);
    produce_groups(0, 24, 4, 300, 0);
    dist_timeout = "dist.timeout.s=4";
    /* hangs: only the deadline finds it */
    const char *hung[] = {" did not", NULL};
    lose_rank(policy, "hung", ranks - 1, SIGSTOP, hung);
    /* dies: its sockets close at once (seen on a read, or on a write) */
    const char *crashed[] = {" closed the connection", ": Broken pipe", ": Connection reset",
                             NULL};
    lose_rank(policy, "crashed", 0, SIGKILL, crashed);
}

/* ---- duplicates and stale groups ---- */

/* At-least-once delivery upstream and slow consumers: a group the learner already trained on
 * comes again, and groups made by a policy more than learn.staleness versions old arrive.  The
 * first are skipped, the second go back to she.samples; neither is trained on, and the counts
 * survive in the checkpoint. */
static void test_dedup(void) {
    char policy[1200];
    REQUIRE(start_with_policy(policy, sizeof(policy), NULL) == 0);
    /* 2 steps of 4 groups by v0, then the v1 checkpoint */
    produce_groups(0, 8, 4, 300, 0);
    CHECK_EQ_INT(run_learner_for(policy, "d", "2", "learn.staleness=0", 0, 90), 0);
    /* learner at v1, bound 0: v0 groups are stale, s000..s003 again are duplicates (the
     * duplicate check comes first), v1 groups are trained on */
    produce_groups(16, 4, 4, 300, 0);
    produce_groups(0, 4, 4, 300, 0);
    produce_groups(8, 8, 4, 300, 1);
    CHECK_EQ_INT(run_learner_for(policy, "d", "4", "learn.staleness=0", 0, 90), 0);
    CHECK_EQ_INT(log_lines("d.log", "resuming from"), 1);
    CHECK_EQ_INT(log_lines("d.log", "is stale (learner at v1): sample re-queued"), 4);
    char path[1300];
    snprintf(path, sizeof(path), "%s/d/v000002/trainer_state.json", dir);
    json_t *st = json_load_file(path, 0, NULL);
    REQUIRE_MSG(st != NULL, "no checkpoint v2 at %s", path);
    CHECK_EQ_INT(json_integer_value(json_object_get(st, "step")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(st, "n_duplicates")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(st, "n_requeued")), 4);
    json_t *ids = json_object_get(st, "trained_ids");
    CHECK_EQ_INT(json_array_size(ids), 16);
    int stale_trained = 0;
    size_t k;
    json_t *v;
    json_array_foreach(ids, k, v) {
        const char *id = json_string_value(v);
        stale_trained += id && strcmp(id, "s016") >= 0 && strcmp(id, "s019") <= 0;
    }
    CHECK_EQ_INT(stale_trained, 0);
    /* every group was consumed: 8 + 4 + 4 + 8 on partition 0 */
    json_t *offs = json_object_get(json_object_get(st, "offsets"), "she.rewarded");
    CHECK_EQ_INT(json_integer_value(json_object_get(offs, "0")), 24);
    json_decref(st);
}

/* Announces dir as checkpoint `version` on she.checkpoints; sha256 NULL: the true one. */
static void announce_checkpoint(rd_kafka_t *rk, she_avro_codec_t *ac, int64_t version,
                                const char *ckpt, const char *sha256) {
    char errstr[SHE_ERRSTR_SIZE], real[65], key[24];
    if (!sha256 && she_policy_manifest_sha256(ckpt, "model.safetensors", real, errstr,
                                              sizeof(errstr)) == SHE_OK)
        sha256 = real;
    she_checkpoint_announcement_t a = {.version = version, .uri = (char *)ckpt,
                                       .sha256 = (char *)(sha256 ? sha256 : ""),
                                       .parent_version = version - 1,
                                       .created_ms = she_stream_now_ms()};
    const uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(she_msg_encode_checkpoint(ac, &a, &buf, &len, errstr, sizeof(errstr)) == SHE_OK);
    snprintf(key, sizeof(key), "v%lld", (long long)version);
    produce_raw(rk, "she.checkpoints", 0, key, buf, len);
    rd_kafka_flush(rk, 10000);
}

/* Decision lines in decisions.jsonl, and how many of them name policy version v. */
static int decisions_by(int64_t v, int *n_all) {
    char path[1200], line[4096];
    snprintf(path, sizeof(path), "%s/decisions.jsonl", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    *n_all = 0;
    while (f && fgets(line, sizeof(line), f)) {
        json_t *d = json_loads(line, 0, NULL);
        (*n_all)++;
        n += d && json_integer_value(json_object_get(d, "policy_version")) == v;
        json_decref(d);
    }
    if (f)
        fclose(f);
    return n;
}

static void test_staleness(void) {
    samples_t ss = {0};
    char policy[1200], v4[1200], dec[1200], errstr[SHE_ERRSTR_SIZE];
    snprintf(v4, sizeof(v4), "%s/v4", dir);
    snprintf(dec, sizeof(dec), "%s/decisions.jsonl", dir);
    REQUIRE(start_with_policy(policy, sizeof(policy), v4) == 0);
    const char *a[] = {"rollout", "--bootstrap", bootstrap, KAFKA_FAST, "--policy", policy,
                       "--group", "2", "--max-new", "8", "--batch", "4", "--decisions-file",
                       dec, "--staleness", "2", NULL};
    pid_t ro = tp_spawn(she_bin, dir, "rollout", a);
    rd_kafka_t *rk = producer();
    she_avro_codec_t *ac = NULL;
    REQUIRE(she_msg_codec_open(NULL, &ac, errstr, sizeof(errstr)) == SHE_OK);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    for (int v = 1; v <= 3; v++)
        announce_checkpoint(rk, ac, v, v4, wrong);
    wait_log_lines("rollout.log", "pausing until a newer one loads", 1, 30);
    /* only the newest announcement is tried: v3 */
    CHECK_EQ_INT(log_lines("rollout.log", "refused checkpoint v3 "), 1);
    CHECK_EQ_INT(log_lines("rollout.log", "policy v0 is 3 versions behind"), 1);
    gen_samples(&ss, 8, 21);
    char path[1200];
    write_samples("data.jsonl", &ss, 0, 8, 0, path, sizeof(path));
    CHECK_EQ_INT(tp_wait_exit(start_produce(path), 60), 0);
    sleep(5); /* time to roll out, were it not paused */
    int n_all = 0;
    decisions_by(0, &n_all);
    CHECK_EQ_INT(n_all, 0);
    announce_checkpoint(rk, ac, 4, v4, NULL);
    int n_v4 = 0;
    for (double t0 = she_now_s(); she_now_s() - t0 < 40; usleep(200000))
        if ((n_v4 = decisions_by(4, &n_all)) >= 8)
            break;
    CHECK_EQ_INT(log_lines("rollout.log", "policy v4 is current again: resuming"), 1);
    CHECK_EQ_INT(n_v4, 8);
    CHECK_EQ_INT(n_all, 8); /* every decision by v4: none by the stale v0 */
    she_avro_codec_free(ac);
    rd_kafka_destroy(rk);
    CHECK_EQ_INT(tp_stop(ro), 0);
    free_samples(&ss);
}

/* Pass-rate records for samples [from, to) of ss, all at rate. */
static void produce_pass_rates(rd_kafka_t *rk, she_avro_codec_t *ac, const samples_t *ss,
                               int from, int to, float rate) {
    char errstr[SHE_ERRSTR_SIZE];
    for (int i = from; i < to; i++) {
        she_pass_rate_t pr = {.sample_id = ss->v[i].sample_id, .pass_rate = rate, .count = 8,
                              .policy_version = 0, .updated_ms = she_stream_now_ms()};
        const uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(she_msg_encode_pass_rate(ac, &pr, &buf, &len, errstr, sizeof(errstr)) == SHE_OK);
        produce_raw(rk, "she.passrate", -1, pr.sample_id, buf, len);
    }
    rd_kafka_flush(rk, 10000);
}

/* The reasons of the decisions about sample id, in order, joined by ','. */
static void reasons_of(const char *id, char *out, size_t cap) {
    char path[1200], line[4096];
    snprintf(path, sizeof(path), "%s/decisions.jsonl", dir);
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    while (f && fgets(line, sizeof(line), f)) {
        json_t *d = json_loads(line, 0, NULL);
        const char *sid = json_string_value(json_object_get(d, "sample_id"));
        if (sid && strcmp(sid, id) == 0)
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? "," : "",
                     json_string_value(json_object_get(d, "reason")));
        json_decref(d);
    }
    if (f)
        fclose(f);
}

static int wait_decisions(int n, double timeout_s) {
    int n_all = 0;
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s; usleep(200000))
        if (decisions_by(0, &n_all), n_all >= n)
            break;
    return n_all;
}

static void test_curriculum(void) {
    samples_t ss = {0};
    char policy[1200], dec[1200], path[1200], errstr[SHE_ERRSTR_SIZE], got[512];
    snprintf(dec, sizeof(dec), "%s/decisions.jsonl", dir);
    REQUIRE(start_with_policy(policy, sizeof(policy), NULL) == 0);
    const char *stages = "selection.stages=easy:0.5-1:none:2,all:0-1:none:0";
    const char *ca[] = {"control", "--bootstrap", bootstrap, KAFKA_FAST, "--set",
                        "control.step.groups=8", "--set", stages, NULL};
    pid_t co = tp_spawn(she_bin, dir, "control", ca);
    const char *ra[] = {"rollout", "--bootstrap", bootstrap, KAFKA_FAST, "--policy", policy,
                        "--group", "2", "--max-new", "8", "--batch", "4", "--decisions-file",
                        dec, "--set", stages, NULL};
    pid_t ro = tp_spawn(she_bin, dir, "rollout", ra);
    rd_kafka_t *rk = producer();
    she_avro_codec_t *ac = NULL;
    REQUIRE(she_msg_codec_open(NULL, &ac, errstr, sizeof(errstr)) == SHE_OK);
    gen_samples(&ss, 16, 31);
    /* step 1: samples 0-3 easy, 4-7 hard */
    produce_pass_rates(rk, ac, &ss, 0, 4, 0.75f);
    produce_pass_rates(rk, ac, &ss, 4, 8, 0.25f);
    sleep(2); /* the rollout consumer reads she.passrate as it comes */
    write_samples("a.jsonl", &ss, 0, 8, 0, path, sizeof(path));
    CHECK_EQ_INT(tp_wait_exit(start_produce(path), 60), 0);
    CHECK_EQ_INT(wait_decisions(8, 30), 8);
    for (int i = 0; i < 8; i++) {
        reasons_of(ss.v[i].sample_id, got, sizeof(got));
        CHECK_MSG(i < 4 ? strncmp(got, "admit_", 6) == 0 : strcmp(got, "skip_curriculum") == 0,
                  "%s (pass rate %.2f) in stage easy: %s", ss.v[i].sample_id,
                  i < 4 ? 0.75 : 0.25, got);
    }
    /* step 2: stage easy ends */
    produce_pass_rates(rk, ac, &ss, 8, 16, 0.5f);
    wait_log_lines("rollout.log", "stage 1,", 1, 30);
    CHECK_EQ_INT(log_lines("control.log", "curriculum stage easy -> all after 2 steps"), 1);
    CHECK_EQ_INT(log_lines("rollout.log", "stage 1,"), 1);
    write_samples("b.jsonl", &ss, 4, 8, 0, path, sizeof(path));
    CHECK_EQ_INT(tp_wait_exit(start_produce(path), 60), 0);
    CHECK_EQ_INT(wait_decisions(12, 30), 12);
    for (int i = 4; i < 8; i++) {
        reasons_of(ss.v[i].sample_id, got, sizeof(got));
        CHECK_MSG(strncmp(got, "skip_curriculum,admit_", 22) == 0,
                  "%s, hard, in stage easy then all: %s", ss.v[i].sample_id, got);
    }
    she_avro_codec_free(ac);
    rd_kafka_destroy(rk);
    CHECK_EQ_INT(tp_stop(ro), 0);
    CHECK_EQ_INT(tp_stop(co), 0);
    free_samples(&ss);
}

static void count_message(const rd_kafka_message_t *m, she_avro_codec_t *ac, void *opaque) {
    (void)m, (void)ac;
    (*(int *)opaque)++;
}

static int rollouts_on_topic(void) {
    int n = 0;
    tp_read_topic(bootstrap, "she.rollouts", 8, count_message, &n);
    return n;
}

/* Commits the high watermarks of topic for group, as a consumer that has taken every message
 * would. */
static void commit_as(const char *group, const char *topic) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    REQUIRE(rk != NULL);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < 8; p++) {
        int64_t lo = 0, hi = 0;
        CHECK(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) ==
              RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = hi;
    }
    CHECK(rd_kafka_commit(rk, l, 0) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

static void test_backlog(void) {
    enum { N = 160 }; /* samples: the tiny policy rolls out tens of groups a second */
    samples_t ss = {0};
    char policy[1200], path[1200];
    REQUIRE(start_with_policy(policy, sizeof(policy), NULL) == 0);
    const char *a[] = {"rollout", "--bootstrap", bootstrap, KAFKA_FAST, "--policy", policy,
                       "--group", "2", "--max-new", "8", "--batch", "4", "--max-backlog", "8",
                       "--set", "rollout.backlog.stall.s=15", NULL};
    pid_t ro = tp_spawn(she_bin, dir, "rollout", a);
    gen_samples(&ss, N, 41);
    write_samples("data.jsonl", &ss, 0, N, 0, path, sizeof(path));
    CHECK_EQ_INT(tp_wait_exit(start_produce(path), 60), 0);
    CHECK(wait_log_lines("rollout.log", "not yet consumed downstream (bound 8): pausing", 1,
                         30) == 1);
    sleep(2); /* it would go on here, were it not paused */
    int made = rollouts_on_topic();
    fprintf(stderr, "%d groups made before the pause\n", made);
    /* over the bound by a batch, two if a read came before the last batch was acknowledged */
    CHECK_MSG(made > 8 && made <= 16, "%d of %d groups made against a backlog bound of 8", made,
              N);
    /* the reward group takes them: it resumes, and pauses again */
    commit_as("she-reward", "she.rollouts");
    CHECK_EQ_INT(wait_log_lines("rollout.log", ": pausing", 2, 20), 2);
    CHECK(log_lines("rollout.log", "groups: resuming") >= 1);
    sleep(1);
    int again = rollouts_on_topic();
    CHECK(again > made && again <= made + 16);
    /* the reward group takes these too, but the learner commits nothing: the backlog stays
     * over the bound (in she.rewarded), and after rollout.backlog.stall.s it rolls out anyway */
    rd_kafka_t *rk = producer();
    for (int i = 0; i < 12; i++)
        produce_raw(rk, "she.rewarded", i % 8, "k", "x", 1);
    CHECK(rd_kafka_flush(rk, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    commit_as("she-reward", "she.rollouts");
    CHECK(wait_log_lines("rollout.log", "committed nothing in 15 s: rolling out anyway", 1, 30) ==
          1);
    int after = again;
    for (double t0 = she_now_s(); after < N && she_now_s() - t0 < 40; usleep(500000))
        after = rollouts_on_topic();
    fprintf(stderr, "%d groups after the first pause, %d after the second, %d in all\n", made,
            again, after);
    CHECK_EQ_INT(after, N);
    /* the learner commits: the bound holds again (and, the backlog being over it, pauses) */
    commit_as("she-learn", "she.rewarded");
    CHECK(wait_log_lines("rollout.log", "bounding the backlog again", 1, 10) == 1);
    CHECK_EQ_INT(tp_stop(ro), 0);
    rd_kafka_destroy(rk);
    free_samples(&ss);
}

int main(int argc, char **argv) {
    she_bin = getenv("SHE_BIN");
    const char *tmp = getenv("SHE_TEST_TMP");
    if (argc > 2)
        ranks = atoi(argv[2]);
    if (!she_bin || !tmp || argc < 2 || ranks < 1 || ranks > 8) {
        fprintf(stderr, "usage: SHE_BIN=... SHE_TEST_TMP=... %s accounting|outage|resume|dedup|"
                "staleness|curriculum|backlog|lostrank [learner ranks, 1..8]\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/stream_%s%s%.0d", tmp, argv[1], ranks > 1 ? "_ranks" : "",
             ranks > 1 ? ranks : 0);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0 || mkdir(dir, 0777) != 0) {
        fprintf(stderr, "cannot make %s\n", dir);
        return 1;
    }
    if (strcmp(argv[1], "accounting") == 0)
        RUN(test_accounting);
    else if (strcmp(argv[1], "outage") == 0)
        RUN(test_outage);
    else if (strcmp(argv[1], "resume") == 0)
        RUN(test_resume);
    else if (strcmp(argv[1], "dedup") == 0)
        RUN(test_dedup);
    else if (strcmp(argv[1], "staleness") == 0)
        RUN(test_staleness);
    else if (strcmp(argv[1], "curriculum") == 0)
        RUN(test_curriculum);
    else if (strcmp(argv[1], "backlog") == 0)
        RUN(test_backlog);
    else if (strcmp(argv[1], "lostrank") == 0)
        RUN(test_lostrank);
    else
        return 2;
    if (broker_pid > 0)
        CHECK_EQ_INT(tp_stop(broker_pid), 0);
    TEST_DONE();
}
