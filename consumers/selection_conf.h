/* selection_conf.h -- data selection (trainer/selection.h) as the streaming components configure
 * and steer it: the selection.* configuration keys that `she rollout` and `she control` share,
 * and the two directions between a selector and the control topic's state.
 *
 * `she control` runs a selector fed by the pass-rate stream: its difficulty band and curriculum
 * stage are what it publishes.  Every `she rollout` runs a selector that decides on samples; a
 * published control state sets its band and stage (its own band controller keeps adapting in
 * between, and the next published state overrides it).  Both read the same selection.* keys,
 * so stage indices mean the same stages on both sides.
 *
 * Not here: Kafka, the pass-rate and control messages' transport (the commands do that). */
#ifndef SHE_SELECTION_CONF_H
#define SHE_SELECTION_CONF_H

#include "config.h"
#include "error.h"
#include "messages.h"
#include "trainer/selection.h"

/* The selection.* keys (difficulty band and its controller, quotas, curriculum stages, seed). */
extern const she_conf_def_t she_selection_conf_defs[];

/* own followed by she_selection_conf_defs in one malloc'd array (free() it after the
 * configuration that uses it is freed). */
she_conf_def_t *she_selection_defs_with(const she_conf_def_t *own);

/* Reads the selection.* keys.  Stages: "NAME:LO-HI:BALANCE:MAX_STEPS[:PATIENCE:DELTA],..." with
 * BALANCE "none" or a '+'-joined subset of domain, type, grade, e.g.
 * "warmup:0-1:type:20,all:0-1:domain+type+grade:0".  SHE_ERR_CONFIG naming the bad part. */
she_err_t she_selection_config_from_conf(const she_conf_t *conf, she_selector_config_t *cfg,
                                         char *errstr, size_t errstr_size);

/* Parses selection.quota.caps ("TYPE=SHARE,...", shares in (0, 1]) into caps[0..*n_caps)
 * (SHE_SEL_MAX_CAPS entries).  SHE_ERR_CONFIG naming the bad part and its byte offset. */
she_err_t she_selection_parse_caps(const char *spec, she_sel_cap_t *caps, int *n_caps,
                                   char *errstr, size_t errstr_size);

/* Sets the selector's band, curriculum stage and query-type caps to a published control state's
 * (the rest of its state stays; the quotas map replaces the caps, an empty map removes them).
 * SHE_ERR_INVALID, selector unchanged, for a band, stage or cap the selector's configuration
 * cannot hold (a stage index beyond its stages, lo > hi, bounds outside [0, 1], a share outside
 * (0, 1], too many caps). */
she_err_t she_selection_apply_control(she_selector_t *sel, const she_control_state_t *cs,
                                      char *errstr, size_t errstr_size);

#endif
