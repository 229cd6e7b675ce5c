/* metrics.h -- a Prometheus metrics registry: counters, gauges and histograms with fixed
 * label schemas, rendered in the Prometheus text exposition format 0.0.4.
 *
 * main creates one she_metrics_t and hands it to every component it starts (there is no
 * process-wide registry); the HTTP server (httpd.h) serves it at GET /metrics.
 *
 * Model.  A metric (she_metric_t) is a named family with a type, a help text and a fixed
 * list of label names given at registration.  A series (she_metric_series_t) is one set of
 * label values of a metric; it is found or created by she_metrics_series() and lives as
 * long as the registry.  Updating a series is a few atomic instructions and takes no lock,
 * so a hot loop looks its series up once and updates it per message; looking a series up
 * takes the metric's mutex.  Label values must come from a bounded set (topics, policy
 * versions, reasons): every distinct value creates a series that is never removed.
 *
 * Naming rules, checked at registration (a bad name returns SHE_ERR_INVALID):
 *   - metric names match she_[a-zA-Z0-9_]* (the she_ prefix is required; ':' is left to
 *     recording rules); label names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__",
 *     are not "le" (histograms use it) or "quantile", and are not repeated;
 *   - counters end in "_total"; gauges and histograms do not;
 *   - base units only: durations in seconds ("_seconds"), sizes in bytes ("_bytes"), ratios
 *     0..1 as "_ratio"; a name with a non-base unit word ("ms", "milliseconds", "us",
 *     "minutes", "hours", "kb", "mb", ...) is rejected;
 *   - a name may not clash with another metric's name or a histogram's _bucket/_sum/_count.
 * Registering the same name again with the same type, labels and buckets returns the
 * existing metric (so two components in one process can share e.g. she_messages_total);
 * anything else under a taken name is an error.
 *
 * Standard names (components use these so dashboards and alerts agree; per-topic and
 * per-policy labels as shown; the scrape adds job/instance, so no "component" label):
 *   she_messages_total{topic,direction}         counter  direction = "in" | "out"
 *   she_messages_failed_total{topic,reason}     counter  decode/validate/process failures
 *   she_messages_dead_lettered_total{topic}     counter
 *   she_consumer_lag_messages{topic,partition}  gauge    (callback: computed on scrape)
 *   she_rollouts_total / she_tokens_total{kind} counter  rollouts/s, tokens/s via rate()
 *   she_reward_mean{step}                       gauge    step = "1".."5" | "all"
 *   she_group_pass_rate                         histogram buckets linear 0..1
 *   she_samples_admitted_total                  counter  admitted fraction = ratio of rates
 *   she_samples_rejected_total{reason}          counter
 *   she_difficulty_threshold{bound}             gauge    bound = "low" | "high"
 *   she_curriculum_stage                        gauge
 *   she_learner_loss / _kl / _entropy           gauge
 *   she_learner_clip_ratio                      gauge    fraction of clipped tokens
 *   she_learner_grad_norm / _learning_rate      gauge
 *   she_learner_step_seconds                    histogram (default buckets)
 *   she_learner_steps_total                     counter
 *   she_policy_version                          gauge    version in use by this process
 *   she_checkpoint_age_seconds                  gauge    (callback)
 *   she_logprob_gap                             gauge    mean |rollout - learner log-prob|
 *   she_logprob_gap_by_staleness{staleness}     gauge    the same per learner - rollout version
 *   she_reward_responses_total / she_reward_format_failures_total   counter
 *   she_reward_model_score_mean{step}, she_reward_model_checks_total{step,result}
 *   she_eval_macro_f1{version} / she_eval_good_f1{version} / she_eval_accuracy{version} /
 *   she_eval_format_failure_ratio{version}      gauge    (`she evaluate --follow`)
 *   she_serve_requests_total{role,version,code} counter  role = "stable" | "canary"
 *   she_serve_request_duration_seconds{role,version}  histogram
 *   she_serve_judge_failures_total{role,version}, she_serve_shadow_comparisons_total{result},
 *   she_serve_rejected_requests_total{reason}   counter
 *   she_serve_canary_share, she_serve_policy_version{role}   gauge
 *   she_canary_decisions_total{action}, she_canary_active, she_canary_version,
 *   she_stable_version, she_canary_soak_seconds (`she canary`)
 *   (monitoring/README.md lists every series the dashboards and alerts use)
 *   she_http_requests_total{route,code}, she_http_request_duration_seconds{route}
 *                                               (registered by httpd.c for every server)
 *
 * Not provided: summaries, exemplars, OpenMetrics, series removal, timestamps. */
#ifndef SHE_METRICS_H
#define SHE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum she_metric_type {
    SHE_METRIC_COUNTER = 0,
    SHE_METRIC_GAUGE,
    SHE_METRIC_HISTOGRAM,
} she_metric_type_t;

typedef struct she_metrics_s she_metrics_t;              /* the registry */
typedef struct she_metric_s she_metric_t;                /* one named family */
typedef struct she_metric_series_s she_metric_series_t;  /* one label-value set of it */
typedef struct she_metrics_scrape_s she_metrics_scrape_t; /* handed to collect callbacks */

/* Prometheus client defaults extended to a minute (an LLM judge call can take seconds). */
#define SHE_METRICS_DEFAULT_BUCKETS \
    {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
#define SHE_METRICS_DEFAULT_N_BUCKETS 13

/* Creates an empty registry. Free with she_metrics_free() (NULL allowed), after every
 * component using it has stopped: series pointers die with it. Never returns NULL. */
she_metrics_t *she_metrics_new(void);
void she_metrics_free(she_metrics_t *reg);

/* Register a metric.  `labels` is a comma-separated list of label names without spaces
 * ("topic,direction"), or NULL / "" for none.  `help` is a non-empty UTF-8 line (newlines
 * are escaped on output).  On success *out points at the metric (owned by reg).  Returns
 * SHE_ERR_INVALID naming the rule broken (see above) and leaves *out NULL. */
she_err_t she_metrics_counter(she_metrics_t *reg, const char *name, const char *help,
                              const char *labels, she_metric_t **out, char *errstr,
                              size_t errstr_size);
she_err_t she_metrics_gauge(she_metrics_t *reg, const char *name, const char *help,
                            const char *labels, she_metric_t **out, char *errstr,
                            size_t errstr_size);
/* `bounds`: n_bounds finite, strictly increasing bucket upper bounds (copied; the +Inf
 * bucket is implicit), or NULL / 0 for SHE_METRICS_DEFAULT_BUCKETS. */
she_err_t she_metrics_histogram(she_metrics_t *reg, const char *name, const char *help,
                                const char *labels, const double *bounds, int n_bounds,
                                she_metric_t **out, char *errstr, size_t errstr_size);

/* A counter or gauge whose samples are computed on each scrape (consumer lag, checkpoint
 * age): collect(ud, sc) calls she_metrics_emit() once per label-value set.  It runs on the
 * scraping thread with the registry locked, so it must be quick, thread-safe with respect
 * to its component, must not call other she_metrics_* functions but she_metrics_emit, and
 * must emit each label-value set at most once.  ud must outlive reg.  Re-registering a
 * callback metric is an error. */
typedef void (*she_metrics_collect_fn)(void *ud, she_metrics_scrape_t *sc);
she_err_t she_metrics_callback(she_metrics_t *reg, she_metric_type_t type, const char *name,
                               const char *help, const char *labels,
                               she_metrics_collect_fn collect, void *ud, char *errstr,
                               size_t errstr_size);
/* label_values: one string per label name of the metric (NULL when it has none). */
void she_metrics_emit(she_metrics_scrape_t *sc, const char *const *label_values, double v);

/* Finds or creates the series with these label values (one per label name, in
 * registration order; NULL for a metric without labels).  Values are copied; each byte
 * that is not part of valid UTF-8 is replaced by U+FFFD.  Never returns NULL (aborts on
 * out-of-memory).  Takes the metric's mutex: look up once, then update the series as
 * often as needed. */
she_metric_series_t *she_metrics_series(she_metric_t *m, const char *const *label_values);

/* Updates, lock-free and safe from any number of threads.  Using the wrong one for the
 * metric's type, or a negative or NaN counter increment, is a bug (asserted). */
void she_metrics_inc(she_metric_series_t *s);              /* counter, gauge: += 1 */
void she_metrics_add(she_metric_series_t *s, double v);    /* counter (v >= 0), gauge */
void she_metrics_set(she_metric_series_t *s, double v);    /* gauge */
void she_metrics_observe(she_metric_series_t *s, double v); /* histogram; NaN goes to +Inf */

/* Current value of a counter or gauge series. */
double she_metrics_get(const she_metric_series_t *s);
/* A histogram series' state: cumulative[i] = observations <= bound i for i < n_bounds and
 * cumulative[n_bounds] = all observations (+Inf); pass an array of n_bounds + 1 entries
 * (she_metrics_bounds tells n_bounds).  *sum gets the sum of observations.  Concurrent
 * observations may land between the reads, as in a scrape. */
int she_metrics_bounds(const she_metric_t *m, const double **bounds);
void she_metrics_hist_read(const she_metric_series_t *s, uint64_t *cumulative, double *sum);
/* The q-quantile (0 <= q <= 1) estimated as Prometheus' histogram_quantile does: linear
 * interpolation inside the bucket holding rank q*count, the first bucket starting at 0,
 * the upper bound of the last finite bucket when the rank falls in +Inf.  NaN when empty. */
double she_metrics_hist_quantile(const she_metric_series_t *s, double q);

/* Renders every metric with at least one series (registration order, series in creation
 * order) as text format 0.0.4: "# HELP", "# TYPE", then one line per sample.  Returns a
 * malloc'd NUL-terminated string (free with free()) and its length in *len (may be NULL),
 * or NULL if out of memory. */
char *she_metrics_render(she_metrics_t *reg, size_t *len);

/* Fills out[0..n) with start, start+width, ...  (for ratio or score histograms). */
void she_metrics_buckets_linear(double start, double width, int n, double *out);
/* Fills out[0..n) with start, start*factor, ...  (start > 0, factor > 1). */
void she_metrics_buckets_exp(double start, double factor, int n, double *out);

/* The content type of she_metrics_render's output, for an HTTP response. */
#define SHE_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
