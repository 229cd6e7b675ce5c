/* backlog.h -- how far a consumer group is behind on a topic: the topic's high watermarks
 * minus the group's committed offsets, summed over its partitions.
 *
 * `she rollout` reads it for the groups downstream of it (the reward consumers on she.rollouts,
 * the learner's offset mirror on she.rewarded): groups made faster than they are trained on
 * only wait in the topics until they are too stale to train on, and on a small machine the
 * rollouts take the CPU the slower stage needs.  The group's offsets are read with a client of
 * that group.id that never joins it (OffsetFetch only), so reading disturbs no one. */
#ifndef SHE_BACKLOG_H
#define SHE_BACKLOG_H

#include <stdint.h>

#include "config.h"
#include "error.h"
#include "log.h"

typedef struct she_backlog she_backlog_t;

/* A reader of group_id's backlog on the topic with logical id topic_id (topics.h), connected
 * as conf says (bootstrap.servers + kafka.*). */
she_err_t she_backlog_new(const she_conf_t *conf, she_log_t *lg, const char *group_id,
                          const char *topic_id, she_backlog_t **out, char *errstr,
                          size_t errstr_size);
void she_backlog_free(she_backlog_t *b);

/* Messages on the topic the group has not committed yet (a partition it never committed
 * counts from its low watermark) into *backlog, and the sum of its committed offsets (how far
 * it has come: it only grows while the group makes progress) into *committed.  SHE_ERR_KAFKA
 * when the cluster did not answer within timeout_ms, or answered for a partition with an
 * error; *backlog and *committed are then untouched. */
she_err_t she_backlog_read(she_backlog_t *b, int timeout_ms, int64_t *backlog,
                           int64_t *committed, char *errstr, size_t errstr_size);

#endif
