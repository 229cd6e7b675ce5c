/* policy_watch.h -- the policy a streaming component generates with, kept current by following
 * the checkpoint announcements on she.checkpoints.
 *
 * A watch owns the live model.  It reads every announcement (from the beginning of the topic,
 * without a consumer group: every process sees every announcement) and, when asked between two
 * batches of work (she_policy_watch_poll), takes the newest announced version above the live one
 * through these checks, in order:
 *   1. the checkpoint directory (URI: a path or file:// URI) verifies against its manifest
 *      (every file's size and SHA-256, no extra file: ckptdir.h);
 *   2. the announcement's SHA-256 is the manifest's for model.safetensors;
 *   3. config.json describes the live architecture, and tokenizer.json (when either side has
 *      one) is byte for byte the live tokenizer (same manifest hash);
 *   4. the weights load (safetensors, tensor table) into a spare model.
 * Then the spare's parameters are copied over the live ones in one memcpy, so work already
 * generated stays as it is and the next batch uses the new policy.  A refused announcement is
 * logged at error level with the reason, counted in she_messages_failed_total{topic=
 * "she.checkpoints", reason="refused"} and never tried again; the live policy stays.  A
 * malformed announcement goes to the dead-letter topic.
 *
 * Staleness: she_policy_watch_lag() says how many versions the live policy is behind the
 * newest announcement that looked valid when read (one that is later refused still counts),
 * so a caller can stop producing work that the learner will not train on.
 *
 * Metrics: she_policy_version (the live version), she_checkpoint_age_seconds (since the live
 * checkpoint was created), one watch per registry.
 *
 * Not here: deciding when to poll (callers poll between batches), downloading remote URIs. */
#ifndef SHE_POLICY_WATCH_H
#define SHE_POLICY_WATCH_H

#include <stdint.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "stream.h"

typedef struct she_policy_watch_s she_policy_watch_t;

/* Opens the announcement reader (conf: bootstrap.servers and kafka.*; dead letters go through
 * dead_letters' producer, which may be NULL).  lg, reg (may be NULL) and dead_letters must
 * outlive the watch.  Nothing is loaded yet: call she_policy_watch_start.  Returns the stream
 * errors (stream.h); *out is NULL then.  Free with she_policy_watch_free. */
she_err_t she_policy_watch_new(const she_conf_t *conf, she_log_t *lg, she_metrics_t *reg,
                               she_stream_t *dead_letters, she_policy_watch_t **out,
                               char *errstr, size_t errstr_size);
void she_policy_watch_free(she_policy_watch_t *pw);

/* Loads the first live policy: reads the announcements already on the topic, then takes the
 * newest that passes the checks; when none does, init_dir (may be NULL) as version
 * init_version; when there is no init_dir either, waits for an announcement that passes.  The
 * live model is created for max_batch x max_seq (model.h).  Gives up after timeout_ms (or on
 * SIGTERM) with SHE_ERR_TIMEOUT; SHE_ERR_FORMAT / SHE_ERR_NOT_FOUND when init_dir cannot be
 * loaded. */
she_err_t she_policy_watch_start(she_policy_watch_t *pw, const char *init_dir,
                                 int64_t init_version, int max_batch, int max_seq,
                                 int timeout_ms, char *errstr, size_t errstr_size);

/* Reads new announcements without blocking and, if a newer version passes the checks, swaps
 * it in.  Returns 1 when the live policy changed, else 0.  Never fails: refusals are logged. */
int she_policy_watch_poll(she_policy_watch_t *pw);

she_model_t *she_policy_watch_model(she_policy_watch_t *pw);
int64_t she_policy_watch_version(const she_policy_watch_t *pw);
/* The directory the live policy came from (its tokenizer.json is the live tokenizer). */
const char *she_policy_watch_dir(const she_policy_watch_t *pw);
/* Versions between the live policy and the newest announcement read (0 when current). */
int64_t she_policy_watch_lag(const she_policy_watch_t *pw);
/* Announcements refused so far. */
int64_t she_policy_watch_refused(const she_policy_watch_t *pw);

/* The checks 1-3 above for directory dir against an expected weights hash (NULL: not checked)
 * and a reference config (NULL: not checked) and tokenizer hash (NULL or "": not checked).
 * SHE_ERR_FORMAT / SHE_ERR_NOT_FOUND / SHE_ERR_INVALID with the reason.  Exposed for the
 * learner, which checks its own checkpoints the same way before announcing them. */
she_err_t she_policy_check_dir(const char *dir, const char *sha256,
                               const she_model_config_t *cfg, const char *tokenizer_sha256,
                               char *errstr, size_t errstr_size);

/* SHA-256 of a file as the manifest of its checkpoint directory lists it (hex, 65 bytes);
 * SHE_ERR_NOT_FOUND when the manifest does not list it, SHE_ERR_FORMAT for a bad manifest. */
she_err_t she_policy_manifest_sha256(const char *dir, const char *file, char hex[65],
                                     char *errstr, size_t errstr_size);

#endif
