/* policy_watch.c -- follow she.checkpoints, verify, load and swap policies (policy_watch.h). */
#include "policy_watch.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ckptdir.h"
#include "messages.h"
#include "signals.h"

#define PATH_CAP 4096

struct she_policy_watch_s {
    she_log_t *lg;
    she_stream_t *st;
    she_model_t *live;   /* the policy callers generate with */
    she_model_t *spare;  /* weights of a candidate load here first (1 x 1 activations) */
    int64_t version;
    int64_t created_ms;  /* of the live checkpoint; read by the metrics thread */
    char dir[PATH_CAP];
    char tok_sha[65];    /* manifest hash of the live tokenizer.json, "" if none */
    she_checkpoint_announcement_t pending; /* newest unread-for-load announcement */
    int has_pending;
    int64_t newest;      /* highest version announced (-1: none) */
    int64_t refused;
    she_metric_t *m_version;
    she_metric_series_t *s_version;
};

she_err_t she_policy_manifest_sha256(const char *dir, const char *file, char hex[65],
                                     char *errstr, size_t errstr_size) {
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: %s", path, jerr.text);
    const char *sha = json_string_value(
        json_object_get(json_object_get(json_object_get(j, "files"), file), "sha256"));
    she_err_t err = SHE_OK;
    if (!sha || strlen(sha) != 64)
        err = she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "%s does not list %s", path, file);
    else
        memcpy(hex, sha, 65);
    json_decref(j);
    return err;
}

static int same_config(const she_model_config_t *a, const she_model_config_t *b) {
    return strcmp(a->model_type, b->model_type) == 0 && a->vocab_size == b->vocab_size &&
           a->hidden_size == b->hidden_size && a->intermediate_size == b->intermediate_size &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads &&
           a->max_position_embeddings == b->max_position_embeddings &&
           a->rope_theta == b->rope_theta && a->rms_norm_eps == b->rms_norm_eps &&
           a->tie_word_embeddings == b->tie_word_embeddings &&
           a->attention_bias == b->attention_bias;
}

she_err_t she_policy_check_dir(const char *dir, const char *sha256,
                               const she_model_config_t *cfg, const char *tokenizer_sha256,
                               char *errstr, size_t errstr_size) {
    SHE_TRY(she_ckptdir_verify(dir, errstr, errstr_size));
    char hex[65];
    if (sha256) {
        SHE_TRY(she_policy_manifest_sha256(dir, "model.safetensors", hex, errstr, errstr_size));
        if (strcmp(hex, sha256) != 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: model.safetensors has sha256 %s, the announcement says %s", dir,
                            hex, sha256);
    }
    if (cfg) {
        char path[PATH_CAP];
        snprintf(path, sizeof(path), "%s/config.json", dir);
        she_model_config_t c;
        SHE_TRY(she_model_config_load(path, &c, errstr, errstr_size));
        if (!same_config(&c, cfg))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: architecture differs from the live policy (%s D=%d L=%d V=%d, "
                            "live %s D=%d L=%d V=%d)",
                            path, c.model_type, c.hidden_size, c.n_layers, c.vocab_size,
                            cfg->model_type, cfg->hidden_size, cfg->n_layers, cfg->vocab_size);
    }
    if (tokenizer_sha256) {
        hex[0] = '\0';
        she_err_t e = she_policy_manifest_sha256(dir, "tokenizer.json", hex, errstr, errstr_size);
        if (e != SHE_OK && e != SHE_ERR_NOT_FOUND)
            return e;
        if (strcmp(hex, tokenizer_sha256) != 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: tokenizer.json differs from the live policy's", dir);
    }
    return SHE_OK;
}

static const char *uri_path(const char *uri) {
    return strncmp(uri, "file://", 7) == 0 ? uri + 7 : uri;
}

static void age_collect(void *ud, she_metrics_scrape_t *sc) {
    she_policy_watch_t *pw = ud;
    int64_t created = __atomic_load_n(&pw->created_ms, __ATOMIC_RELAXED);
    if (created > 0)
        she_metrics_emit(sc, NULL, (double)(she_stream_now_ms() - created) / 1000.0);
}

she_err_t she_policy_watch_new(const she_conf_t *conf, she_log_t *lg, she_metrics_t *reg,
                               she_stream_t *dead_letters, she_policy_watch_t **out,
                               char *errstr, size_t errstr_size) {
    *out = NULL;
    she_policy_watch_t *pw = calloc(1, sizeof(*pw));
    SHE_CHECK_ALLOC(pw);
    pw->lg = lg;
    pw->newest = -1;
    pw->version = -1;
    she_stream_opts_t o = {.component = "policy-watch", .consumer = 1,
                           .dead_letter_via = dead_letters};
    /* The watch's stream keeps no metrics of its own: the component's stream counts messages,
     * and two streams in one registry would clash on nothing but add noise. */
    she_err_t err = she_stream_new(conf, lg, NULL, &o, &pw->st, errstr, errstr_size);
    if (err == SHE_OK && reg)
        err = she_metrics_gauge(reg, "she_policy_version",
                                "Checkpoint version of the policy this process uses.", NULL,
                                &pw->m_version, errstr, errstr_size);
    if (err == SHE_OK && reg)
        err = she_metrics_callback(reg, SHE_METRIC_GAUGE, "she_checkpoint_age_seconds",
                                   "Seconds since the live policy's checkpoint was created.",
                                   NULL, age_collect, pw, errstr, errstr_size);
    if (err == SHE_OK && pw->m_version)
        pw->s_version = she_metrics_series(pw->m_version, NULL);
    if (err == SHE_OK) {
        const char *topics[] = {"checkpoints"};
        err = she_stream_assign(pw->st, topics, 1, NULL, 30000, errstr, errstr_size);
    }
    if (err != SHE_OK) {
        she_policy_watch_free(pw);
        return err;
    }
    *out = pw;
    return SHE_OK;
}

void she_policy_watch_free(she_policy_watch_t *pw) {
    if (!pw)
        return;
    she_stream_free(pw->st);
    she_model_free(pw->live);
    she_model_free(pw->spare);
    she_msg_clear_checkpoint(&pw->pending);
    free(pw);
}

/* Reads what is waiting on the topic; keeps the newest announcement as the candidate. */
static void read_announcements(she_policy_watch_t *pw, int timeout_ms) {
    rd_kafka_message_t *rkm;
    while ((rkm = she_stream_poll(pw->st, timeout_ms)) != NULL) {
        timeout_ms = 0;
        she_checkpoint_announcement_t a = {0};
        char errstr[SHE_ERRSTR_SIZE];
        if (she_msg_decode_checkpoint(she_stream_codec(pw->st), rkm->payload, rkm->len, &a,
                                      errstr, sizeof(errstr)) != SHE_OK) {
            she_stream_dead_letter(pw->st, rkm, errstr);
        } else if (a.version > pw->newest) {
            pw->newest = a.version;
            she_msg_clear_checkpoint(&pw->pending);
            pw->pending = a;
            memset(&a, 0, sizeof(a));
            pw->has_pending = 1;
        }
        she_msg_clear_checkpoint(&a);
        rd_kafka_message_destroy(rkm);
    }
}

static void set_live_meta(she_policy_watch_t *pw, const char *dir, int64_t version,
                          int64_t created_ms) {
    snprintf(pw->dir, sizeof(pw->dir), "%s", dir);
    pw->version = version;
    __atomic_store_n(&pw->created_ms, created_ms, __ATOMIC_RELAXED);
    char errstr[SHE_ERRSTR_SIZE];
    if (she_policy_manifest_sha256(dir, "tokenizer.json", pw->tok_sha, errstr, sizeof(errstr)))
        pw->tok_sha[0] = '\0';
    if (pw->s_version)
        she_metrics_set(pw->s_version, (double)version);
}

static void refuse(she_policy_watch_t *pw, const she_checkpoint_announcement_t *a,
                   const char *why) {
    pw->refused++;
    she_stream_count_failed(pw->st, she_stream_topic_name("checkpoints"), "refused");
    she_log_error(pw->lg, "refused checkpoint v%" PRId64 " (%s): %s; keeping v%" PRId64,
                  a->version, a->uri, why, pw->version);
}

/* Loads the pending announcement into the spare and copies it over the live model. */
static int try_pending(she_policy_watch_t *pw) {
    she_checkpoint_announcement_t *a = &pw->pending;
    pw->has_pending = 0;
    if (a->version <= pw->version)
        return 0;
    char errstr[SHE_ERRSTR_SIZE], path[PATH_CAP];
    const char *dir = uri_path(a->uri);
    int64_t t0 = she_stream_now_ms();
    she_err_t err = she_policy_check_dir(dir, a->sha256, &pw->live->cfg, pw->tok_sha, errstr,
                                         sizeof(errstr));
    if (err == SHE_OK && !pw->spare)
        err = she_model_new(&pw->live->cfg, 1, 1, &pw->spare, errstr, sizeof(errstr));
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (err == SHE_OK)
        err = she_model_load_weights(pw->spare, path, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        refuse(pw, a, errstr);
        return 0;
    }
    SHE_ASSERT(pw->spare->n_params == pw->live->n_params);
    memcpy(pw->live->params, pw->spare->params, pw->live->n_params * sizeof(float));
    int64_t old = pw->version;
    set_live_meta(pw, dir, a->version, a->created_ms);
    she_log_info(pw->lg,
                 "policy v%" PRId64 " -> v%" PRId64 " (%s), verified and loaded in %" PRId64
                 " ms; %.1f s after it was announced",
                 old, a->version, dir, she_stream_now_ms() - t0,
                 (double)(she_stream_now_ms() - a->created_ms) / 1000.0);
    return 1;
}

she_err_t she_policy_watch_start(she_policy_watch_t *pw, const char *init_dir,
                                 int64_t init_version, int max_batch, int max_seq,
                                 int timeout_ms, char *errstr, size_t errstr_size) {
    /* Catch up with what is already announced: read until the high watermark. */
    int64_t lo = 0, hi = 0;
    rd_kafka_t *rk = she_stream_consumer(pw->st);
    int64_t deadline = she_stream_now_ms() + timeout_ms;
    while (rd_kafka_query_watermark_offsets(rk, she_stream_topic_name("checkpoints"), 0, &lo,
                                            &hi, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (she_stream_now_ms() > deadline || she_signals_stop_requested())
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "no answer from the cluster about she.checkpoints");
    }
    for (;;) {
        read_announcements(pw, 100);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, she_stream_topic_name("checkpoints"), 0);
        rd_kafka_position(rk, l);
        int64_t pos = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
        if (pos >= hi || hi == lo || she_stream_now_ms() > deadline ||
            she_signals_stop_requested())
            break;
    }
    for (;;) {
        if (pw->has_pending) {
            she_checkpoint_announcement_t *a = &pw->pending;
            pw->has_pending = 0;
            const char *dir = uri_path(a->uri);
            char why[SHE_ERRSTR_SIZE];
            she_err_t err = she_policy_check_dir(dir, a->sha256, NULL, NULL, why, sizeof(why));
            if (err == SHE_OK)
                err = she_model_load(dir, max_batch, max_seq, &pw->live, NULL, why, sizeof(why));
            if (err == SHE_OK) {
                set_live_meta(pw, dir, a->version, a->created_ms);
                she_log_info(pw->lg, "policy v%" PRId64 " from %s", a->version, dir);
                return SHE_OK;
            }
            refuse(pw, a, why);
        }
        if (init_dir) {
            SHE_TRY(she_model_load(init_dir, max_batch, max_seq, &pw->live, NULL, errstr,
                                   errstr_size));
            set_live_meta(pw, init_dir, init_version, she_stream_now_ms());
            she_log_info(pw->lg, "policy v%" PRId64 " from %s (initial)", init_version, init_dir);
            return SHE_OK;
        }
        if (she_stream_now_ms() > deadline || she_signals_stop_requested())
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "no usable checkpoint announced within %d ms", timeout_ms);
        read_announcements(pw, 500);
    }
}

int she_policy_watch_poll(she_policy_watch_t *pw) {
    read_announcements(pw, 0);
    return pw->has_pending ? try_pending(pw) : 0;
}

she_model_t *she_policy_watch_model(she_policy_watch_t *pw) { return pw->live; }
int64_t she_policy_watch_version(const she_policy_watch_t *pw) { return pw->version; }
const char *she_policy_watch_dir(const she_policy_watch_t *pw) { return pw->dir; }
int64_t she_policy_watch_lag(const she_policy_watch_t *pw) {
    return pw->newest > pw->version ? pw->newest - pw->version : 0;
}
int64_t she_policy_watch_refused(const she_policy_watch_t *pw) { return pw->refused; }
