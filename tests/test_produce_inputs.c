/* test_produce_inputs.c -- `she produce` as a process against `she broker`, on the inputs the
 * streaming issue names besides a plain file:
 *
 *   stdin   JSON Lines piped into `she produce -`, with a bad row on line 6 (not JSON) and one
 *           on line 13 (no title): both are reported as "<stdin>:LINE:", counted, and every
 *           good row is on she.samples exactly once, decoding to the row that was written.
 *   follow  `she produce --follow DIR`: rows appended to a file already read (the last one in
 *           two writes half a second apart, so a half-written line is waited for, not called
 *           bad), a bad row among them reported with its line number in that file, and a new
 *           file renamed into the directory, are all produced while it runs; SIGTERM ends it
 *           with exit 0 and a summary that counts them. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gendata.h"
#include "messages.h"
#include "proc.h"
#include "samples.h"
#include "topic.h"
#include "test.h"

static const char *she_bin;
static char dir[1024];
static char bootstrap[256];

static samples_t rows; /* the generated samples the cases write */

/* Appends samples [from, to) of ss to path as JSON Lines. */
static void append_rows(const char *path, const samples_t *ss, int from, int to) {
    char errstr[SHE_ERRSTR_SIZE];
    FILE *f = fopen(path, "a");
    SHE_ASSERT(f != NULL);
    for (int i = from; i < to; i++)
        SHE_ASSERT(she_sample_write_jsonl(f, &ss->v[i], errstr, sizeof(errstr)) == SHE_OK);
    fclose(f);
}

static void append_text(const char *path, const char *text) {
    FILE *f = fopen(path, "a");
    SHE_ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
}

typedef struct tally {
    const samples_t *ss;
    int from, to, *count, wrong;
} tally_t;

/* Counts a sample message against the rows written: one that does not decode, or decodes to
 * something else than the row written under its key, is wrong. */
static void tally_sample(const rd_kafka_message_t *m, she_avro_codec_t *ac, void *opaque) {
    tally_t *t = opaque;
    char err[512];
    she_sample_t s = {0};
    int found = 0;
    if (she_msg_decode_sample(ac, m->payload, m->len, &s, err, sizeof(err)) == SHE_OK)
        for (int i = t->from; i < t->to; i++) {
            const she_sample_t *w = &t->ss->v[i];
            if (strcmp(s.sample_id, w->sample_id) == 0 && strcmp(s.query, w->query) == 0 &&
                strcmp(s.item_title, w->item_title) == 0 && m->key_len == strlen(s.sample_id) &&
                memcmp(m->key, s.sample_id, m->key_len) == 0) {
                t->count[i - t->from]++;
                found = 1;
            }
        }
    t->wrong += !found;
    she_sample_clear(&s);
}

/* How many times each of samples [from, to) is on she.samples, into count[i - from]; other
 * messages count in *wrong. */
static void read_samples(const samples_t *ss, int from, int to, int *count, int *wrong) {
    memset(count, 0, sizeof(int) * (size_t)(to - from));
    tally_t t = {.ss = ss, .from = from, .to = to, .count = count};
    tp_read_topic(bootstrap, "she.samples", 8 /* core/topics.c */, tally_sample, &t);
    *wrong = t.wrong;
}

/* Samples [from, to) each once on she.samples (and nothing else there besides rows before
 * `from`), waiting up to timeout_s for them to arrive. */
static int all_once(const samples_t *ss, int from, int to, double timeout_s) {
    int count[64], wrong = 0, missing = 0, twice = 0;
    SHE_ASSERT(to - from <= 64);
    for (double t0 = she_now_s();; usleep(300000)) {
        read_samples(ss, 0, to, count, &wrong);
        missing = twice = 0;
        for (int i = from; i < to; i++) {
            missing += count[i] == 0;
            twice += count[i] > 1;
        }
        if (missing == 0 || she_now_s() - t0 > timeout_s)
            break;
    }
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(twice, 0);
    CHECK_EQ_INT(wrong, 0);
    return missing == 0 && twice == 0 && wrong == 0;
}

static int log_lines(const char *name, const char *needle) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return tp_count_lines(path, needle);
}

static void test_stdin(void) {
    const samples_t *ss = &rows;
    char file[1100], cmd[4000];
    snprintf(file, sizeof(file), "%s/piped.jsonl", dir);
    append_rows(file, ss, 0, 5);
    append_text(file, "{not json\n");               /* line 6 */
    append_rows(file, ss, 5, 11);                    /* lines 7-12 */
    append_text(file, "{\"query\": \"no title\"}\n"); /* line 13 */
    append_rows(file, ss, 11, 20);
    /* a pipe, not a redirected file: read until the writer closes it */
    snprintf(cmd, sizeof(cmd), "cat '%s' | exec '%s' produce --bootstrap %s --metrics 0 -", file,
             she_bin, bootstrap);
    const char *a[] = {"-c", cmd, NULL};
    CHECK_EQ_INT(tp_wait_exit(tp_spawn("/bin/sh", dir, "stdin", a), 60), 0);
    CHECK_EQ_INT(log_lines("stdin.log", "\"produced\": 20, \"delivered\": 20, \"bad_rows\": 2"), 1);
    CHECK_EQ_INT(log_lines("stdin.log", "bad row skipped: <stdin>:6:"), 1);
    CHECK_EQ_INT(log_lines("stdin.log", "bad row skipped: <stdin>:13:"), 1);
    CHECK_EQ_INT(log_lines("stdin.log", "bad row skipped: "), 2);
    all_once(ss, 0, 20, 10);
}

static void test_follow(void) {
    const samples_t *ss = &rows;
    char in[1100], a_path[1200], tmp[1200], b_path[1200], row[8192];
    snprintf(in, sizeof(in), "%s/in", dir);
    REQUIRE(mkdir(in, 0777) == 0);
    snprintf(a_path, sizeof(a_path), "%s/a.jsonl", in);
    append_rows(a_path, ss, 20, 25); /* lines 1-5 */
    const char *a[] = {"produce", "--bootstrap", bootstrap, "--metrics", "0", "--follow",
                       "--set", "produce.follow.interval.ms=50", in, NULL};
    pid_t pid = tp_spawn(she_bin, dir, "follow", a);
    REQUIRE(all_once(ss, 20, 25, 20));

    append_rows(a_path, ss, 25, 27);                 /* lines 6-7 */
    append_text(a_path, "{\"query\": \"no title\"}\n"); /* line 8 */
    /* line 9 in two writes: the first half must not be taken for a bad row */
    char errstr[SHE_ERRSTR_SIZE];
    FILE *mem = fmemopen(row, sizeof(row), "w");
    SHE_ASSERT(mem && she_sample_write_jsonl(mem, &ss->v[27], errstr, sizeof(errstr)) == SHE_OK);
    fclose(mem);
    size_t half = strlen(row) / 2;
    char first[8192];
    memcpy(first, row, half);
    first[half] = '\0';
    append_text(a_path, first);
    usleep(500000);
    append_text(a_path, row + half);
    /* a new file, renamed in whole (as log shippers do) */
    snprintf(tmp, sizeof(tmp), "%s/b.part", in);
    snprintf(b_path, sizeof(b_path), "%s/b.jsonl", in);
    append_rows(tmp, ss, 28, 33);
    REQUIRE(rename(tmp, b_path) == 0);
    all_once(ss, 20, 33, 20);
    CHECK_EQ_INT(tp_stop(pid), 0);
    CHECK_EQ_INT(log_lines("follow.log", "\"produced\": 13, \"delivered\": 13, \"bad_rows\": 1"),
                 1);
    CHECK_EQ_INT(log_lines("follow.log", "bad row skipped: "), 1);
    char want[1300];
    snprintf(want, sizeof(want), "bad row skipped: %s:8:", a_path);
    CHECK_EQ_INT(log_lines("follow.log", want), 1);
    CHECK_EQ_INT(log_lines("follow.log", "b.part"), 0);
}

int main(void) {
    she_bin = getenv("SHE_BIN");
    const char *t = getenv("SHE_TEST_TMP");
    if (!she_bin || !t) {
        fprintf(stderr, "usage: SHE_BIN=... SHE_TEST_TMP=... test_produce_inputs\n");
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/produce_inputs", t);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0 || mkdir(dir, 0777) != 0) {
        fprintf(stderr, "cannot make %s\n", dir);
        return 1;
    }
    gen_samples(&rows, 40, 5);
    pid_t broker = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap));
    if (broker <= 0) {
        fprintf(stderr, "the broker did not come up: see %s/broker.log\n", dir);
        return 1;
    }
    RUN(test_stdin);
    RUN(test_follow);
    CHECK_EQ_INT(tp_stop(broker), 0);
    free_samples(&rows);
    TEST_DONE();
}
