/* metrics.c -- the Prometheus registry and its text exposition (see metrics.h).
 *
 * Locking: reg->mu guards the list of metrics (registration, render); m->mu guards a
 * metric's list of series (lookup, render).  Values are atomics outside both locks.  A
 * double lives in an _Atomic uint64_t holding its bits, updated with a compare-exchange
 * loop, because C11 has no atomic fetch-add for floating point. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct she_metric_series_s {
    she_metric_t *m;
    char **values;            /* (n_labels) valid UTF-8 */
    _Atomic uint64_t value;   /* counter/gauge value, or histogram sum: double bits */
    _Atomic uint64_t *counts; /* histogram: (n_bounds + 1) per bucket, not cumulative */
    struct she_metric_series_s *next;
};

struct she_metric_s {
    char *name, *help;
    she_metric_type_t type;
    char **labels; /* (n_labels) */
    int n_labels;
    double *bounds; /* (n_bounds) histogram upper bounds, +Inf implicit */
    int n_bounds;
    she_metrics_collect_fn collect; /* non-NULL: samples come from the callback */
    void *ud;
    pthread_mutex_t mu;
    she_metric_series_t *head, **tail;
    struct she_metric_s *next;
};

struct she_metrics_s {
    pthread_mutex_t mu;
    she_metric_t *head, **tail;
};

/* Growable output buffer; after an allocation failure it stays failed and drops output. */
typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

struct she_metrics_scrape_s {
    buf_t *b;
    const she_metric_t *m;
};

static uint64_t dbits(double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double bitsd(uint64_t u) {
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- registry ---- */

she_metrics_t *she_metrics_new(void) {
    she_metrics_t *reg = calloc(1, sizeof(*reg));
    SHE_CHECK_ALLOC(reg);
    pthread_mutex_init(&reg->mu, NULL);
    reg->tail = &reg->head;
    return reg;
}

static void free_strv(char **v, int n) {
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void metric_free(she_metric_t *m) {
    she_metric_series_t *s = m->head;
    while (s) {
        she_metric_series_t *next = s->next;
        free_strv(s->values, m->n_labels);
        free(s->counts);
        free(s);
        s = next;
    }
    free_strv(m->labels, m->n_labels);
    free(m->bounds);
    free(m->name);
    free(m->help);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void she_metrics_free(she_metrics_t *reg) {
    if (!reg)
        return;
    she_metric_t *m = reg->head;
    while (m) {
        she_metric_t *next = m->next;
        metric_free(m);
        m = next;
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 if the bytes there are not one. */
static int utf8_seq(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    int n;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0)
        n = 2, min = 0x80, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        n = 3, min = 0x800, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        n = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = utf8_seq(p);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* Copy of s with each invalid byte replaced by U+FFFD. */
static char *utf8_sanitize(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    SHE_CHECK_ALLOC(out);
    while (*p) {
        int n = utf8_seq(p);
        if (n) {
            memcpy(o, p, (size_t)n);
            o += n;
            p += n;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    *o = '\0';
    return out;
}

/* ---- name rules ---- */

static int is_name_char(char c, int first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static int valid_ident(const char *s) {
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++)
        if (!is_name_char(*p, p == s))
            return 0;
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Returns the first '_'-separated word of name that names a non-base unit, or NULL. */
static const char *non_base_unit(const char *name) {
    static const char *const words[] = {
        "ms", "msec", "msecs", "millis", "millisecond", "milliseconds", "us", "usec", "usecs",
        "micros", "microsecond", "microseconds", "ns", "nsec", "nanos", "nanosecond",
        "nanoseconds", "sec", "secs", "min", "mins", "minute", "minutes", "hour", "hours",
        "day", "days", "kb", "kib", "mb", "mib", "gb", "gib", "kilobytes", "megabytes",
        "gigabytes", "percent", NULL};
    const char *p = name;
    while (*p) {
        size_t n = strcspn(p, "_");
        for (int i = 0; words[i]; i++)
            if (strlen(words[i]) == n && strncmp(p, words[i], n) == 0)
                return words[i];
        p += n;
        if (*p == '_')
            p++;
    }
    return NULL;
}

/* Splits "a,b,c" into a fresh array of validated label names. */
static she_err_t parse_labels(const char *labels, char ***out, int *n_out, char *errstr,
                              size_t errstr_size) {
    *out = NULL;
    *n_out = 0;
    if (!labels || !*labels)
        return SHE_OK;
    int n = 1;
    for (const char *p = labels; *p; p++)
        n += *p == ',';
    char **v = calloc((size_t)n, sizeof(*v));
    SHE_CHECK_ALLOC(v);
    const char *p = labels;
    for (int i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        v[i] = strndup(p, len);
        SHE_CHECK_ALLOC(v[i]);
        p += len + (p[len] == ',');
        const char *bad = NULL;
        if (!valid_ident(v[i]))
            bad = "must match [a-zA-Z_][a-zA-Z0-9_]*";
        else if (strncmp(v[i], "__", 2) == 0)
            bad = "names starting with __ are reserved";
        else if (strcmp(v[i], "le") == 0 || strcmp(v[i], "quantile") == 0)
            bad = "is reserved for histograms and summaries";
        for (int j = 0; j < i && !bad; j++)
            if (strcmp(v[i], v[j]) == 0)
                bad = "is repeated";
        if (bad) {
            she_err_t err = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "label name '%s' %s",
                                     v[i], bad);
            free_strv(v, n);
            return err;
        }
    }
    *out = v;
    *n_out = n;
    return SHE_OK;
}

static she_err_t check_name(const char *name, she_metric_type_t type, const char *help,
                            char *errstr, size_t errstr_size) {
    if (!name || strncmp(name, "she_", 4) != 0 || !valid_ident(name))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "metric name '%s' must match she_[a-zA-Z0-9_]*", name ? name : "(null)");
    if (type == SHE_METRIC_COUNTER && !ends_with(name, "_total"))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "counter '%s' must end in _total", name);
    if (type != SHE_METRIC_COUNTER && ends_with(name, "_total"))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "'%s': only counters end in _total", name);
    const char *unit = non_base_unit(name);
    if (unit)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "'%s': unit '%s' is not a base unit (use _seconds, _bytes, _ratio)",
                        name, unit);
    if (!help || !*help || !utf8_valid(help))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "'%s': help must be non-empty UTF-8", name);
    return SHE_OK;
}

/* True if s is base followed by suffix. */
static int is_suffixed(const char *s, const char *base, const char *suffix) {
    size_t n = strlen(base);
    return strncmp(s, base, n) == 0 && strcmp(s + n, suffix) == 0;
}

/* True if metric a and a new metric named b of type b_type would print samples of the
 * same name (a histogram prints name_bucket, name_sum and name_count). */
static int names_clash(const she_metric_t *a, const char *b, she_metric_type_t b_type) {
    static const char *const suffixes[] = {"", "_bucket", "_sum", "_count"};
    for (int i = 0; i < 4; i++) {
        if ((i == 0 || a->type == SHE_METRIC_HISTOGRAM) && is_suffixed(b, a->name, suffixes[i]))
            return 1;
        if (b_type == SHE_METRIC_HISTOGRAM && is_suffixed(a->name, b, suffixes[i]))
            return 1;
    }
    return 0;
}

static int same_schema(const she_metric_t *m, she_metric_type_t type, char **labels,
                       int n_labels, const double *bounds, int n_bounds) {
    if (m->collect || m->type != type || m->n_labels != n_labels || m->n_bounds != n_bounds)
        return 0;
    for (int i = 0; i < n_labels; i++)
        if (strcmp(m->labels[i], labels[i]) != 0)
            return 0;
    for (int i = 0; i < n_bounds; i++)
        if (m->bounds[i] != bounds[i])
            return 0;
    return 1;
}

static she_metric_series_t *series_new(she_metric_t *m, char **values) {
    she_metric_series_t *s = calloc(1, sizeof(*s));
    SHE_CHECK_ALLOC(s);
    s->m = m;
    s->values = values;
    atomic_init(&s->value, dbits(0.0));
    if (m->type == SHE_METRIC_HISTOGRAM) {
        s->counts = calloc((size_t)m->n_bounds + 1, sizeof(*s->counts));
        SHE_CHECK_ALLOC(s->counts);
        for (int i = 0; i <= m->n_bounds; i++)
            atomic_init(&s->counts[i], 0);
    }
    *m->tail = s;
    m->tail = &s->next;
    return s;
}

/* The common path of every registration. */
static she_err_t metric_add(she_metrics_t *reg, she_metric_type_t type, const char *name,
                            const char *help, const char *labels, const double *bounds,
                            int n_bounds, she_metrics_collect_fn collect, void *ud,
                            she_metric_t **out, char *errstr, size_t errstr_size) {
    static const double default_bounds[] = SHE_METRICS_DEFAULT_BUCKETS;
    if (out)
        *out = NULL;
    SHE_TRY(check_name(name, type, help, errstr, errstr_size));
    if (type == SHE_METRIC_HISTOGRAM) {
        if (!bounds || n_bounds <= 0) {
            bounds = default_bounds;
            n_bounds = SHE_METRICS_DEFAULT_N_BUCKETS;
        }
        for (int i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "histogram '%s': bucket bounds must be finite and strictly "
                                "increasing (bound %d is %g)", name, i, bounds[i]);
    } else {
        n_bounds = 0;
    }
    char **lv;
    int n_labels;
    SHE_TRY(parse_labels(labels, &lv, &n_labels, errstr, errstr_size));

    she_err_t err = SHE_OK;
    pthread_mutex_lock(&reg->mu);
    for (she_metric_t *m = reg->head; m; m = m->next) {
        if (!names_clash(m, name, type))
            continue;
        if (!collect && strcmp(m->name, name) == 0 &&
            same_schema(m, type, lv, n_labels, bounds, n_bounds)) {
            if (out)
                *out = m;
        } else {
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "metric '%s' clashes with the registered metric '%s'", name, m->name);
        }
        pthread_mutex_unlock(&reg->mu);
        free_strv(lv, n_labels);
        return err;
    }
    she_metric_t *m = calloc(1, sizeof(*m));
    SHE_CHECK_ALLOC(m);
    m->name = strdup(name);
    m->help = strdup(help);
    SHE_CHECK_ALLOC(m->name);
    SHE_CHECK_ALLOC(m->help);
    m->type = type;
    m->labels = lv;
    m->n_labels = n_labels;
    if (n_bounds) {
        m->bounds = malloc((size_t)n_bounds * sizeof(*m->bounds));
        SHE_CHECK_ALLOC(m->bounds);
        memcpy(m->bounds, bounds, (size_t)n_bounds * sizeof(*m->bounds));
    }
    m->n_bounds = n_bounds;
    m->collect = collect;
    m->ud = ud;
    pthread_mutex_init(&m->mu, NULL);
    m->tail = &m->head;
    /* Without labels there is exactly one series: create it so it shows as 0 at once. */
    if (n_labels == 0 && !collect)
        series_new(m, NULL);
    *reg->tail = m;
    reg->tail = &m->next;
    pthread_mutex_unlock(&reg->mu);
    if (out)
        *out = m;
    return SHE_OK;
}

she_err_t she_metrics_counter(she_metrics_t *reg, const char *name, const char *help,
                              const char *labels, she_metric_t **out, char *errstr,
                              size_t errstr_size) {
    return metric_add(reg, SHE_METRIC_COUNTER, name, help, labels, NULL, 0, NULL, NULL, out,
                      errstr, errstr_size);
}

she_err_t she_metrics_gauge(she_metrics_t *reg, const char *name, const char *help,
                            const char *labels, she_metric_t **out, char *errstr,
                            size_t errstr_size) {
    return metric_add(reg, SHE_METRIC_GAUGE, name, help, labels, NULL, 0, NULL, NULL, out,
                      errstr, errstr_size);
}

she_err_t she_metrics_histogram(she_metrics_t *reg, const char *name, const char *help,
                                const char *labels, const double *bounds, int n_bounds,
                                she_metric_t **out, char *errstr, size_t errstr_size) {
    return metric_add(reg, SHE_METRIC_HISTOGRAM, name, help, labels, bounds, n_bounds, NULL,
                      NULL, out, errstr, errstr_size);
}

she_err_t she_metrics_callback(she_metrics_t *reg, she_metric_type_t type, const char *name,
                               const char *help, const char *labels,
                               she_metrics_collect_fn collect, void *ud, char *errstr,
                               size_t errstr_size) {
    if (type == SHE_METRIC_HISTOGRAM || !collect)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "callback metric '%s' must be a counter or gauge with a function",
                        name ? name : "(null)");
    return metric_add(reg, type, name, help, labels, NULL, 0, collect, ud, NULL, errstr,
                      errstr_size);
}

/* ---- series and updates ---- */

she_metric_series_t *she_metrics_series(she_metric_t *m, const char *const *label_values) {
    SHE_ASSERT(m && !m->collect);
    if (m->n_labels == 0)
        return m->head; /* created at registration, never changes */
    SHE_ASSERT(label_values);
    /* Look up by the sanitized values so that the lookup key is what gets printed. */
    const char *key[m->n_labels];
    char *fixed[m->n_labels];
    for (int i = 0; i < m->n_labels; i++) {
        SHE_ASSERT(label_values[i]);
        fixed[i] = utf8_valid(label_values[i]) ? NULL : utf8_sanitize(label_values[i]);
        key[i] = fixed[i] ? fixed[i] : label_values[i];
    }
    pthread_mutex_lock(&m->mu);
    she_metric_series_t *s;
    for (s = m->head; s; s = s->next) {
        int i = 0;
        while (i < m->n_labels && strcmp(s->values[i], key[i]) == 0)
            i++;
        if (i == m->n_labels)
            break;
    }
    if (!s) {
        char **values = calloc((size_t)m->n_labels, sizeof(*values));
        SHE_CHECK_ALLOC(values);
        for (int i = 0; i < m->n_labels; i++) {
            values[i] = fixed[i] ? fixed[i] : strdup(key[i]);
            SHE_CHECK_ALLOC(values[i]);
            fixed[i] = NULL;
        }
        s = series_new(m, values);
    }
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < m->n_labels; i++)
        free(fixed[i]);
    return s;
}

void she_metrics_inc(she_metric_series_t *s) { she_metrics_add(s, 1.0); }

void she_metrics_add(she_metric_series_t *s, double v) {
    SHE_ASSERT(s->m->type == SHE_METRIC_GAUGE || (s->m->type == SHE_METRIC_COUNTER && v >= 0));
    atomic_add_double(&s->value, v);
}

void she_metrics_set(she_metric_series_t *s, double v) {
    SHE_ASSERT(s->m->type == SHE_METRIC_GAUGE);
    atomic_store_explicit(&s->value, dbits(v), memory_order_relaxed);
}

void she_metrics_observe(she_metric_series_t *s, double v) {
    const she_metric_t *m = s->m;
    SHE_ASSERT(m->type == SHE_METRIC_HISTOGRAM);
    /* First bound >= v (Prometheus buckets are "le"); NaN compares false and lands in +Inf. */
    int lo = 0, hi = m->n_bounds;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v <= m->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (isnan(v))
        lo = m->n_bounds;
    atomic_fetch_add_explicit(&s->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&s->value, v);
}

double she_metrics_get(const she_metric_series_t *s) {
    SHE_ASSERT(s->m->type != SHE_METRIC_HISTOGRAM);
    return bitsd(atomic_load_explicit(&((she_metric_series_t *)s)->value, memory_order_relaxed));
}

int she_metrics_bounds(const she_metric_t *m, const double **bounds) {
    if (bounds)
        *bounds = m->bounds;
    return m->n_bounds;
}

void she_metrics_hist_read(const she_metric_series_t *s, uint64_t *cumulative, double *sum) {
    const she_metric_t *m = s->m;
    SHE_ASSERT(m->type == SHE_METRIC_HISTOGRAM);
    uint64_t acc = 0;
    for (int i = 0; i <= m->n_bounds; i++) {
        acc += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        cumulative[i] = acc;
    }
    if (sum)
        *sum = bitsd(atomic_load_explicit(&((she_metric_series_t *)s)->value,
                                          memory_order_relaxed));
}

double she_metrics_hist_quantile(const she_metric_series_t *s, double q) {
    const she_metric_t *m = s->m;
    SHE_ASSERT(q >= 0 && q <= 1);
    uint64_t cum[m->n_bounds + 1];
    memset(cum, 0, sizeof(cum)); /* (gcc cannot see that hist_read fills it) */
    she_metrics_hist_read(s, cum, NULL);
    uint64_t count = cum[m->n_bounds];
    if (count == 0)
        return NAN;
    double rank = q * (double)count;
    int b = 0;
    while (b < m->n_bounds && (double)cum[b] < rank)
        b++;
    if (b == m->n_bounds) /* rank in the +Inf bucket */
        return m->bounds[m->n_bounds - 1];
    double upper = m->bounds[b];
    if (b == 0 && upper <= 0)
        return upper;
    double lower = b == 0 ? 0.0 : m->bounds[b - 1];
    double below = b == 0 ? 0.0 : (double)cum[b - 1];
    double in_bucket = (double)cum[b] - below;
    return lower + (upper - lower) * (rank - below) / in_bucket;
}

void she_metrics_buckets_linear(double start, double width, int n, double *out) {
    for (int i = 0; i < n; i++)
        out[i] = start + width * i;
}

void she_metrics_buckets_exp(double start, double factor, int n, double *out) {
    SHE_ASSERT(start > 0 && factor > 1);
    for (int i = 0; i < n; i++)
        out[i] = i == 0 ? start : out[i - 1] * factor;
}

/* ---- exposition ---- */

static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

/* Shortest "%g" text that reads back as the same double; Prometheus spells the
 * non-finite values +Inf, -Inf and NaN. */
static void fmt_double(char out[32], double v) {
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* HELP escapes backslash and newline; label values also escape the double quote.  Invalid
 * UTF-8 (possible only in callback label values) becomes U+FFFD. */
static void put_escaped(buf_t *b, const char *s, int quote) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = utf8_seq(p);
        if (n == 0) {
            buf_put(b, "\xef\xbf\xbd", 3);
            p++;
        } else if (*p == '\\') {
            buf_put(b, "\\\\", 2);
            p++;
        } else if (*p == '\n') {
            buf_put(b, "\\n", 2);
            p++;
        } else if (*p == '"' && quote) {
            buf_put(b, "\\\"", 2);
            p++;
        } else {
            buf_put(b, (const char *)p, (size_t)n);
            p += n;
        }
    }
}

/* name[suffix]{l1="v1",...[,le="x"]} value\n */
static void put_sample(buf_t *b, const she_metric_t *m, const char *suffix,
                       const char *const *values, const char *le, double v) {
    char num[32];
    buf_puts(b, m->name);
    buf_puts(b, suffix);
    if (m->n_labels || le) {
        buf_put(b, "{", 1);
        for (int i = 0; i < m->n_labels; i++) {
            if (i)
                buf_put(b, ",", 1);
            buf_puts(b, m->labels[i]);
            buf_put(b, "=\"", 2);
            put_escaped(b, values[i], 1);
            buf_put(b, "\"", 1);
        }
        if (le) {
            buf_puts(b, m->n_labels ? ",le=\"" : "le=\"");
            buf_puts(b, le);
            buf_put(b, "\"", 1);
        }
        buf_put(b, "}", 1);
    }
    buf_put(b, " ", 1);
    fmt_double(num, v);
    buf_puts(b, num);
    buf_put(b, "\n", 1);
}

static void put_header(buf_t *b, const she_metric_t *m) {
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    buf_puts(b, "# HELP ");
    buf_puts(b, m->name);
    buf_put(b, " ", 1);
    put_escaped(b, m->help, 0);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, m->name);
    buf_put(b, " ", 1);
    buf_puts(b, type_names[m->type]);
    buf_put(b, "\n", 1);
}

static void put_histogram(buf_t *b, const she_metric_series_t *s) {
    const she_metric_t *m = s->m;
    uint64_t cum[m->n_bounds + 1];
    double sum;
    char le[32];
    she_metrics_hist_read(s, cum, &sum);
    const char *const *values = (const char *const *)s->values;
    for (int i = 0; i <= m->n_bounds; i++) {
        if (i < m->n_bounds)
            fmt_double(le, m->bounds[i]);
        else
            strcpy(le, "+Inf");
        put_sample(b, m, "_bucket", values, le, (double)cum[i]);
    }
    put_sample(b, m, "_sum", values, NULL, sum);
    put_sample(b, m, "_count", values, NULL, (double)cum[m->n_bounds]);
}

void she_metrics_emit(she_metrics_scrape_t *sc, const char *const *label_values, double v) {
    SHE_ASSERT(sc->m->n_labels == 0 || label_values);
    for (int i = 0; i < sc->m->n_labels; i++)
        SHE_ASSERT(label_values[i]);
    put_sample(sc->b, sc->m, "", label_values, NULL, v);
}

char *she_metrics_render(she_metrics_t *reg, size_t *len) {
    buf_t b = {0};
    buf_put(&b, "", 0); /* an empty registry renders as "" rather than NULL */
    pthread_mutex_lock(&reg->mu);
    for (she_metric_t *m = reg->head; m; m = m->next) {
        if (m->collect) {
            /* Samples go to their own buffer first: no header for a callback that emits
             * nothing, as for a labelled metric without series. */
            buf_t samples = {0};
            she_metrics_scrape_t sc = {&samples, m};
            m->collect(m->ud, &sc);
            if (samples.len) {
                put_header(&b, m);
                buf_put(&b, samples.p, samples.len);
            }
            b.oom |= samples.oom;
            free(samples.p);
            continue;
        }
        pthread_mutex_lock(&m->mu);
        if (m->head)
            put_header(&b, m);
        for (const she_metric_series_t *s = m->head; s; s = s->next) {
            if (m->type == SHE_METRIC_HISTOGRAM)
                put_histogram(&b, s);
            else
                put_sample(&b, m, "", (const char *const *)s->values, NULL, she_metrics_get(s));
        }
        pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&reg->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
