/* topics.c -- the topic table.  Partition counts are sized for the embedded broker: the mock
 * cluster keeps roughly 5 MiB per partition, so high-volume topics get more partitions. */
#include "topics.h"

#include <string.h>

#define DAY_MS (24LL * 3600 * 1000)

static const she_topic_def_t topic_table[] = {
    {"samples", "she.samples", 8, 0, 7 * DAY_MS, "search-log samples, keyed by sample id"},
    {"rollouts", "she.rollouts", 8, 0, 2 * DAY_MS, "rollout groups: G responses per prompt"},
    {"rewarded", "she.rewarded", 8, 0, 2 * DAY_MS, "rewarded groups: rollouts + step rewards"},
    {"passrate", "she.passrate", 4, 1, -1, "latest pass rate per sample id (compacted)"},
    {"control", "she.control", 1, 1, -1, "difficulty thresholds and curriculum stage"},
    {"checkpoints", "she.checkpoints", 1, 0, 30 * DAY_MS, "checkpoint announcements"},
    {"evaluations", "she.evaluations", 1, 0, 30 * DAY_MS, "evaluation results per policy version"},
    {"deployments", "she.deployments", 1, 0, 30 * DAY_MS, "canary deployment events"},
    {"deadletter", "she.deadletter", 2, 0, 14 * DAY_MS, "malformed messages with the reason"},
    {NULL, NULL, 0, 0, 0, NULL},
};

const she_topic_def_t *she_topics(void) { return topic_table; }

const she_topic_def_t *she_topic_find(const char *id) {
    for (const she_topic_def_t *t = topic_table; t->id; t++)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}
