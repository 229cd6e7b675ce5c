/* stream.c -- consumer/producer plumbing shared by the streaming components (see stream.h). */
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka.h"
#include "messages.h"
#include "signals.h"
#include "topics.h"

#define SERIES_CACHE 64

typedef struct series_entry {
    she_metric_t *m;
    char topic[SHE_TOPIC_NAME_MAX];
    char what[32]; /* direction or reason */
    she_metric_series_t *s;
} series_entry_t;

struct she_stream_s {
    char component[32];
    she_log_t *lg;
    she_metrics_t *reg;
    rd_kafka_t *consumer, *producer;
    int has_group;
    she_stream_t *dl_via;
    she_avro_codec_t *ac;
    she_offsets_t done;
    she_offsets_t expected; /* next offset per partition, for gap detection */
    she_stream_stats_t stats;
    int64_t failed_since_commit;
    she_metric_t *m_msgs, *m_failed, *m_dead;
    series_entry_t cache[SERIES_CACHE];
    int n_cache;
};

/* ---- offsets ---- */

she_err_t she_offsets_set(she_offsets_t *o, const char *topic, int32_t partition, int64_t offset) {
    for (int i = 0; i < o->n; i++)
        if (o->v[i].partition == partition && strcmp(o->v[i].topic, topic) == 0) {
            o->v[i].offset = offset;
            return SHE_OK;
        }
    if (o->n == SHE_OFFSETS_MAX || strlen(topic) >= SHE_TOPIC_NAME_MAX)
        return SHE_ERR_INVALID;
    she_offset_t *e = &o->v[o->n++];
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = partition;
    e->offset = offset;
    return SHE_OK;
}

int64_t she_offsets_get(const she_offsets_t *o, const char *topic, int32_t partition) {
    for (int i = 0; i < o->n; i++)
        if (o->v[i].partition == partition && strcmp(o->v[i].topic, topic) == 0)
            return o->v[i].offset;
    return -1;
}

json_t *she_offsets_to_json(const she_offsets_t *o) {
    json_t *j = json_object();
    if (!j)
        return NULL;
    for (int i = 0; i < o->n; i++) {
        json_t *t = json_object_get(j, o->v[i].topic);
        if (!t) {
            t = json_object();
            if (!t || json_object_set_new(j, o->v[i].topic, t) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        char p[16];
        snprintf(p, sizeof(p), "%d", (int)o->v[i].partition);
        if (json_object_set_new(t, p, json_integer(o->v[i].offset)) < 0) {
            json_decref(j);
            return NULL;
        }
    }
    return j;
}

she_err_t she_offsets_from_json(she_offsets_t *o, const json_t *j, char *errstr,
                                size_t errstr_size) {
    memset(o, 0, sizeof(*o));
    if (!json_is_object(j))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "offsets: not an object");
    const char *topic, *part;
    json_t *t, *v;
    json_object_foreach((json_t *)j, topic, t) {
        if (!json_is_object(t))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "offsets: '%s' is not an object", topic);
        json_object_foreach(t, part, v) {
            char *end;
            long p = strtol(part, &end, 10);
            if (*end || p < 0 || p > INT32_MAX || !json_is_integer(v) ||
                json_integer_value(v) < 0)
                return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                                "offsets: bad entry '%s'/'%s'", topic, part);
            if (she_offsets_set(o, topic, (int32_t)p, (int64_t)json_integer_value(v)) != SHE_OK)
                return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                                "offsets: more than %d partitions or topic name too long",
                                SHE_OFFSETS_MAX);
        }
    }
    return SHE_OK;
}

/* ---- helpers ---- */

const char *she_stream_topic_name(const char *topic_id) {
    const she_topic_def_t *t = she_topic_find(topic_id);
    return t ? t->name : NULL;
}

int64_t she_stream_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

she_err_t she_stream_serve_metrics(const char *listen, she_metrics_t *reg, she_log_t *lg,
                                   she_httpd_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (!listen || !listen[0] || strcmp(listen, "0") == 0)
        return SHE_OK;
    she_httpd_opts_t o = {0};
    o.metrics = reg;
    o.log = lg;
    o.threads = 1;
    she_httpd_t *h = NULL;
    SHE_TRY(she_httpd_new(listen, &o, &h, errstr, errstr_size));
    she_err_t err = she_httpd_start(h, errstr, errstr_size);
    if (err != SHE_OK) {
        she_httpd_free(h);
        return err;
    }
    she_log_info(lg, "serving /metrics on port %d", she_httpd_port(h));
    *out = h;
    return SHE_OK;
}

/* The series of metric m for (topic, what), looked up once per pair; what is the direction or
 * reason label, "" for she_messages_dead_lettered_total, which has only the topic. */
static she_metric_series_t *series(she_stream_t *st, she_metric_t *m, const char *topic,
                                   const char *what) {
    if (!m)
        return NULL;
    for (int i = 0; i < st->n_cache; i++) {
        series_entry_t *e = &st->cache[i];
        if (e->m == m && strcmp(e->topic, topic) == 0 && strcmp(e->what, what) == 0)
            return e->s;
    }
    const char *labels[2] = {topic, what};
    she_metric_series_t *s = she_metrics_series(m, labels);
    if (st->n_cache < SERIES_CACHE) {
        series_entry_t *e = &st->cache[st->n_cache++];
        e->m = m;
        snprintf(e->topic, sizeof(e->topic), "%s", topic);
        snprintf(e->what, sizeof(e->what), "%s", what);
        e->s = s;
    }
    return s;
}

static void count(she_stream_t *st, she_metric_t *m, const char *topic, const char *what,
                  double v) {
    she_metric_series_t *s = series(st, m, topic, what);
    if (s)
        she_metrics_add(s, v);
}

void she_stream_count_failed(she_stream_t *st, const char *topic, const char *reason) {
    count(st, st->m_failed, topic, reason, 1);
}

/* The user's kafka.<key>, if set, wins over she's default. */
typedef struct find_key {
    const char *key;
    int found;
} find_key_t;

static she_err_t find_key_cb(const char *key, const char *value, const char *source,
                             void *opaque, char *errstr, size_t errstr_size) {
    (void)value, (void)source, (void)errstr, (void)errstr_size;
    find_key_t *f = opaque;
    if (strcmp(key, f->key) == 0)
        f->found = 1;
    return SHE_OK;
}

static she_err_t set_default(const she_conf_t *conf, rd_kafka_conf_t *kconf, const char *key,
                             const char *value, char *errstr, size_t errstr_size) {
    find_key_t f = {key, 0};
    she_conf_foreach_prefix(conf, "kafka.", find_key_cb, &f, NULL, 0);
    return f.found ? SHE_OK : she_kafka_conf_set(kconf, key, value, errstr, errstr_size);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk, (void)opaque;
    she_stream_t *st = rkm->_private;
    if (!st)
        return;
    if (rkm->err) {
        st->stats.delivery_failed++;
        st->failed_since_commit++;
        count(st, st->m_failed, rd_kafka_topic_name(rkm->rkt), "delivery", 1);
        she_log_error(st->lg, "DATA LOSS: delivery to %s failed permanently: %s",
                      rd_kafka_topic_name(rkm->rkt), rd_kafka_err2str(rkm->err));
    } else {
        st->stats.delivered++;
    }
}

/* Lag of every assigned partition: high watermark (cached by fetches) - position. */
static void lag_collect(void *ud, she_metrics_scrape_t *sc) {
    she_stream_t *st = ud;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(st->consumer, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    rd_kafka_position(st->consumer, parts);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(st->consumer, p->topic, p->partition, &lo, &hi) ||
            hi < 0)
            continue;
        int64_t pos = p->offset >= 0 ? p->offset : lo;
        char part[16];
        snprintf(part, sizeof(part), "%d", (int)p->partition);
        const char *labels[2] = {p->topic, part};
        she_metrics_emit(sc, labels, (double)(hi > pos ? hi - pos : 0));
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static she_err_t register_metrics(she_stream_t *st, int report_lag, char *errstr,
                                  size_t errstr_size) {
    if (!st->reg)
        return SHE_OK;
    SHE_TRY(she_metrics_counter(st->reg, "she_messages_total",
                                "Kafka messages consumed (in) and produced (out).",
                                "topic,direction", &st->m_msgs, errstr, errstr_size));
    SHE_TRY(she_metrics_counter(st->reg, "she_messages_failed_total",
                                "Messages that failed: decode, validation, processing, "
                                "delivery, data_loss (offsets lost before they were read).",
                                "topic,reason", &st->m_failed, errstr, errstr_size));
    SHE_TRY(she_metrics_counter(st->reg, "she_messages_dead_lettered_total",
                                "Messages sent to the dead-letter topic, by source topic.",
                                "topic", &st->m_dead, errstr, errstr_size));
    if (report_lag && st->consumer)
        SHE_TRY(she_metrics_callback(st->reg, SHE_METRIC_GAUGE, "she_consumer_lag_messages",
                                     "Messages between the consumer's position and the end of "
                                     "each assigned partition.",
                                     "topic,partition", lag_collect, st, errstr, errstr_size));
    return SHE_OK;
}

static she_err_t new_client(const she_conf_t *conf, she_stream_t *st, const she_stream_opts_t *o,
                            rd_kafka_type_t type, rd_kafka_t **out, char *errstr,
                            size_t errstr_size) {
    rd_kafka_conf_t *kconf = NULL;
    SHE_TRY(she_kafka_conf_new(conf, st->lg, &kconf, errstr, errstr_size));
    char client_id[64];
    snprintf(client_id, sizeof(client_id), "she-%s", st->component);
    she_err_t err = set_default(conf, kconf, "client.id", client_id, errstr, errstr_size);
    if (type == RD_KAFKA_PRODUCER) {
        /* Retry until delivered: an outage of any length loses nothing, and a stuck message
         * holds back the commit of what caused it rather than vanishing. */
        if (err == SHE_OK)
            err = set_default(conf, kconf, "enable.idempotence", "true", errstr, errstr_size);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "message.timeout.ms", "0", errstr, errstr_size);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "linger.ms", "5", errstr, errstr_size);
        if (err == SHE_OK)
            rd_kafka_conf_set_dr_msg_cb(kconf, dr_cb);
    } else {
        /* librdkafka wants a group id even for assign(); a reader never joins nor commits. */
        char reader_group[64];
        snprintf(reader_group, sizeof(reader_group), "she-%s-reader", st->component);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "group.id", o->group_id ? o->group_id : reader_group,
                              errstr, errstr_size);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "enable.auto.commit", "false", errstr, errstr_size);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "enable.auto.offset.store", "false", errstr,
                              errstr_size);
        /* From the oldest message when there is no position (a new group), or when the
         * position is gone: she_stream_poll reports the jump as data loss. */
        if (err == SHE_OK)
            err = set_default(conf, kconf, "auto.offset.reset", "earliest", errstr, errstr_size);
        if (err == SHE_OK)
            err = set_default(conf, kconf, "enable.partition.eof", "false", errstr, errstr_size);
    }
    if (err != SHE_OK) {
        rd_kafka_conf_destroy(kconf);
        return err;
    }
    char rderr[512];
    rd_kafka_t *rk = rd_kafka_new(type, kconf, rderr, sizeof(rderr));
    if (!rk) {
        rd_kafka_conf_destroy(kconf);
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "rd_kafka_new (%s): %s",
                        type == RD_KAFKA_PRODUCER ? "producer" : "consumer", rderr);
    }
    if (type == RD_KAFKA_CONSUMER)
        rd_kafka_poll_set_consumer(rk);
    *out = rk;
    return SHE_OK;
}

she_err_t she_stream_new(const she_conf_t *conf, she_log_t *lg, she_metrics_t *reg,
                         const she_stream_opts_t *o, she_stream_t **out, char *errstr,
                         size_t errstr_size) {
    *out = NULL;
    she_stream_t *st = calloc(1, sizeof(*st));
    SHE_CHECK_ALLOC(st);
    snprintf(st->component, sizeof(st->component), "%s", o->component ? o->component : "she");
    st->lg = lg;
    st->reg = reg;
    st->has_group = o->group_id != NULL;
    st->dl_via = o->dead_letter_via;
    she_err_t err = she_msg_codec_open(NULL, &st->ac, errstr, errstr_size);
    if (err == SHE_OK && o->producer)
        err = new_client(conf, st, o, RD_KAFKA_PRODUCER, &st->producer, errstr, errstr_size);
    if (err == SHE_OK && o->consumer)
        err = new_client(conf, st, o, RD_KAFKA_CONSUMER, &st->consumer, errstr, errstr_size);
    if (err == SHE_OK)
        err = register_metrics(st, o->report_lag, errstr, errstr_size);
    if (err != SHE_OK) {
        she_stream_free(st);
        return err;
    }
    *out = st;
    return SHE_OK;
}

void she_stream_free(she_stream_t *st) {
    if (!st)
        return;
    if (st->consumer) {
        char errstr[SHE_ERRSTR_SIZE];
        if (st->has_group && st->done.n &&
            she_stream_commit(st, 10000, errstr, sizeof(errstr)) != SHE_OK)
            she_log_warn(st->lg, "final commit: %s", errstr);
        rd_kafka_consumer_close(st->consumer);
        rd_kafka_destroy(st->consumer);
    }
    if (st->producer) {
        if (rd_kafka_flush(st->producer, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            she_log_warn(st->lg,
                         "%d message(s) not delivered at exit; their sources were not "
                         "committed and will be processed again",
                         rd_kafka_outq_len(st->producer));
        rd_kafka_destroy(st->producer);
    }
    she_avro_codec_free(st->ac);
    free(st);
}

she_avro_codec_t *she_stream_codec(she_stream_t *st) { return st->ac; }
rd_kafka_t *she_stream_consumer(she_stream_t *st) { return st->consumer; }
rd_kafka_t *she_stream_producer(she_stream_t *st) { return st->producer; }
void she_stream_stats(const she_stream_t *st, she_stream_stats_t *out) { *out = st->stats; }
const she_offsets_t *she_stream_done_offsets(const she_stream_t *st) { return &st->done; }
void she_stream_set_done(she_stream_t *st, const she_offsets_t *o) { st->done = *o; }

/* ---- consuming ---- */

she_err_t she_stream_subscribe(she_stream_t *st, const char *const *topic_ids, int n_topics,
                               char *errstr, size_t errstr_size) {
    if (!st->consumer || !st->has_group)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "subscribe needs a consumer with a group id");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_topics);
    for (int i = 0; i < n_topics; i++) {
        const char *name = she_stream_topic_name(topic_ids[i]);
        if (!name) {
            rd_kafka_topic_partition_list_destroy(l);
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "unknown topic id '%s'",
                            topic_ids[i]);
        }
        rd_kafka_topic_partition_list_add(l, name, RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t e = rd_kafka_subscribe(st->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(e));
    return SHE_OK;
}

/* Partition count of a topic from the cluster, retrying until timeout_ms (the broker may still
 * be starting, or down for a while). */
static she_err_t partition_count(she_stream_t *st, const char *name, int timeout_ms, int *n,
                                 char *errstr, size_t errstr_size) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(st->consumer, name, NULL);
    int64_t deadline = she_stream_now_ms() + timeout_ms;
    she_err_t err = SHE_ERR_TIMEOUT;
    snprintf(errstr, errstr_size, "no metadata for topic %s within %d ms", name, timeout_ms);
    while (she_stream_now_ms() < deadline && !she_signals_stop_requested()) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(st->consumer, 0, rkt, &md, 2000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
            rd_kafka_resp_err_t te = md->topics[0].err;
            int cnt = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
            if (te == RD_KAFKA_RESP_ERR_NO_ERROR && cnt > 0) {
                *n = cnt;
                err = SHE_OK;
                break;
            }
            if (te == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                err = she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                               "topic %s does not exist on the cluster", name);
                break;
            }
        } else if (md) {
            rd_kafka_metadata_destroy(md);
        }
        she_signals_sleep_ms(200);
    }
    rd_kafka_topic_destroy(rkt);
    return err;
}

she_err_t she_stream_assign(she_stream_t *st, const char *const *topic_ids, int n_topics,
                            const she_offsets_t *start, int timeout_ms, char *errstr,
                            size_t errstr_size) {
    if (!st->consumer)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "assign needs a consumer");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    she_err_t err = SHE_OK;
    for (int i = 0; i < n_topics && err == SHE_OK; i++) {
        const char *name = she_stream_topic_name(topic_ids[i]);
        int n = 0;
        if (!name)
            err = she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "unknown topic id '%s'",
                           topic_ids[i]);
        else
            err = partition_count(st, name, timeout_ms, &n, errstr, errstr_size);
        for (int p = 0; p < n && err == SHE_OK; p++) {
            int64_t off = start ? she_offsets_get(start, name, p) : -1;
            rd_kafka_topic_partition_list_add(l, name, p)->offset =
                off >= 0 ? off : RD_KAFKA_OFFSET_BEGINNING;
            if (off >= 0)
                she_offsets_set(&st->expected, name, p, off);
        }
    }
    if (err == SHE_OK) {
        rd_kafka_resp_err_t e = rd_kafka_assign(st->consumer, l);
        if (e)
            err = she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "assign: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

static int compacted(const char *topic) {
    for (const she_topic_def_t *t = she_topics(); t->id; t++)
        if (strcmp(t->name, topic) == 0)
            return t->compacted;
    return 0;
}

/* The group's committed offset of one partition, or -1 (none, or no answer). */
static int64_t committed(she_stream_t *st, const char *topic, int32_t partition) {
    if (!st->has_group)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    int64_t off = -1;
    if (rd_kafka_committed(st->consumer, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && l->elems[0].offset >= 0)
        off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

/* An offset beyond the next one expected means the messages between are gone (librdkafka
 * moved to the oldest message still there).  The group's committed offset is asked first: a
 * rebalance may have handed the partition back after another member moved it on. */
static void check_gap(she_stream_t *st, const rd_kafka_message_t *rkm) {
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    if (compacted(topic))
        return;
    int64_t from = she_offsets_get(&st->expected, topic, rkm->partition);
    if (from < 0 || rkm->offset > from) {
        int64_t c = committed(st, topic, rkm->partition);
        if (c > from)
            from = c;
        if (from >= 0 && rkm->offset > from) {
            int64_t lost = rkm->offset - from;
            st->stats.data_loss += lost;
            count(st, st->m_failed, topic, "data_loss", (double)lost);
            she_log_error(st->lg,
                          "DATA LOSS: %s [%d]: offsets %" PRId64 "..%" PRId64
                          " are gone from the broker (%" PRId64 " messages never read; the "
                          "embedded broker keeps about 5 MiB per partition, Kafka its "
                          "retention); resuming at %" PRId64,
                          topic, (int)rkm->partition, from, rkm->offset - 1, lost, rkm->offset);
        }
    }
    she_offsets_set(&st->expected, topic, rkm->partition, rkm->offset + 1);
}

rd_kafka_message_t *she_stream_poll(she_stream_t *st, int timeout_ms) {
    if (st->producer)
        rd_kafka_poll(st->producer, 0);
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(st->consumer, timeout_ms);
    if (!rkm)
        return NULL;
    if (!rkm->err) {
        check_gap(st, rkm);
        st->stats.consumed++;
        count(st, st->m_msgs, rd_kafka_topic_name(rkm->rkt), "in", 1);
        return rkm;
    }
    if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        she_log_warn(st->lg, "consumer: %s%s%s", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "",
                     rkm->rkt ? ": " : "", rd_kafka_message_errstr(rkm));
    rd_kafka_message_destroy(rkm);
    return NULL;
}

she_err_t she_stream_hold(she_stream_t *st, const rd_kafka_message_t *rkm, char *errstr,
                          size_t errstr_size) {
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, rkm->partition)->offset = rkm->offset;
    /* pause first: it purges what was prefetched, the seek then sets where fetching resumes */
    rd_kafka_resp_err_t e = rd_kafka_pause_partitions(st->consumer, l);
    rd_kafka_error_t *se = e ? NULL : rd_kafka_seek_partitions(st->consumer, l, 5000);
    if (!e && !se)
        e = l->elems[0].err;
    char why[512];
    snprintf(why, sizeof(why), "%s", se ? rd_kafka_error_string(se) : rd_kafka_err2str(e));
    if (se)
        rd_kafka_error_destroy(se);
    rd_kafka_topic_partition_list_destroy(l);
    if (se || e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "%s [%d]: cannot hold offset %" PRId64
                        ": %s", topic, (int)rkm->partition, rkm->offset, why);
    st->stats.consumed--; /* it will be returned again */
    she_offsets_set(&st->expected, topic, rkm->partition, rkm->offset);
    return SHE_OK;
}

void she_stream_done(she_stream_t *st, const rd_kafka_message_t *rkm) {
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    /* Messages of a batch may be finished out of order; the partition's position only grows. */
    if (she_offsets_get(&st->done, topic, rkm->partition) > rkm->offset)
        return;
    if (she_offsets_set(&st->done, topic, rkm->partition, rkm->offset + 1) != SHE_OK)
        she_log_error(st->lg, "more than %d partitions: offsets of %s [%d] are not tracked",
                      SHE_OFFSETS_MAX, rd_kafka_topic_name(rkm->rkt), (int)rkm->partition);
}

she_err_t she_stream_commit(she_stream_t *st, int timeout_ms, char *errstr, size_t errstr_size) {
    if (st->producer) {
        rd_kafka_resp_err_t e = rd_kafka_flush(st->producer, timeout_ms);
        if (e == RD_KAFKA_RESP_ERR__TIMED_OUT)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "%d message(s) not yet delivered", rd_kafka_outq_len(st->producer));
    }
    if (st->failed_since_commit)
        she_log_error(st->lg, "DATA LOSS: %" PRId64 " message(s) failed delivery since the last "
                      "commit (see above); committing past their sources",
                      st->failed_since_commit);
    st->failed_since_commit = 0;
    if (!st->consumer || !st->has_group || st->done.n == 0)
        return SHE_OK;
    /* Only partitions still ours: after a rebalance another member owns the rest. */
    rd_kafka_topic_partition_list_t *mine = NULL;
    if (rd_kafka_assignment(st->consumer, &mine) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "cannot read the assignment");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(st->done.n);
    for (int i = 0; i < st->done.n; i++)
        if (rd_kafka_topic_partition_list_find(mine, st->done.v[i].topic,
                                               st->done.v[i].partition))
            rd_kafka_topic_partition_list_add(l, st->done.v[i].topic, st->done.v[i].partition)
                ->offset = st->done.v[i].offset;
    rd_kafka_topic_partition_list_destroy(mine);
    rd_kafka_resp_err_t e = l->cnt ? rd_kafka_commit(st->consumer, l, 0) : 0;
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "commit: %s", rd_kafka_err2str(e));
    return SHE_OK;
}

/* ---- producing ---- */

static she_err_t produce_on(she_stream_t *st, rd_kafka_t *rk, const char *name, const void *key,
                            size_t key_len, const void *value, size_t len, char *errstr,
                            size_t errstr_size) {
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(name), RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(st), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "produce to %s: %s", name,
                            rd_kafka_err2str(e));
        rd_kafka_poll(rk, 50); /* the queue drains as deliveries complete */
    }
    st->stats.produced++;
    count(st, st->m_msgs, name, "out", 1);
    rd_kafka_poll(rk, 0);
    return SHE_OK;
}

she_err_t she_stream_produce(she_stream_t *st, const char *topic_id, const void *key,
                             size_t key_len, const void *value, size_t len, char *errstr,
                             size_t errstr_size) {
    const char *name = she_stream_topic_name(topic_id);
    if (!name)
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "unknown topic id '%s'",
                        topic_id);
    if (!st->producer)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "stream has no producer");
    return produce_on(st, st->producer, name, key, key_len, value, len, errstr, errstr_size);
}

void she_stream_service(she_stream_t *st) {
    if (st->producer)
        rd_kafka_poll(st->producer, 0);
}

void she_stream_dead_letter(she_stream_t *st, const rd_kafka_message_t *rkm, const char *reason) {
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    st->stats.dead_lettered++;
    count(st, st->m_dead, topic, "", 1);
    she_log_warn(st->lg, "dead letter: %s [%d] offset %" PRId64 ": %s", topic,
                 (int)rkm->partition, rkm->offset, reason);
    she_stream_t *via = st->producer ? st : st->dl_via;
    if (!via || !via->producer) {
        she_log_error(st->lg, "no producer for dead letters: the message above is only logged");
        return;
    }
    she_dead_letter_t dl = {0};
    dl.source_topic = (char *)topic;
    dl.partition = rkm->partition;
    dl.offset = rkm->offset;
    dl.key = rkm->key;
    dl.key_len = rkm->key_len;
    dl.raw = rkm->payload ? rkm->payload : (void *)"";
    dl.raw_len = rkm->len;
    dl.error = (char *)reason;
    dl.component = st->component;
    dl.created_ms = she_stream_now_ms();
    const uint8_t *buf;
    size_t len;
    char errstr[SHE_ERRSTR_SIZE];
    she_err_t err = she_msg_encode_dead_letter(st->ac, &dl, &buf, &len, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = produce_on(via, via->producer, she_stream_topic_name("deadletter"), rkm->key,
                         rkm->key_len, buf, len, errstr, sizeof(errstr));
    if (err != SHE_OK)
        she_log_error(st->lg, "dead letter not sent: %s", errstr);
}
