/* config.h -- librdkafka-style `key=value` configuration with typed, validated keys.
 *
 * A she_conf_t holds the keys a command accepts (its "defs"), each with a type, a default,
 * a range or choice list and a one-line doc.  Values are layered, later wins:
 *   defaults < properties file (--config FILE) < environment (SHE_LOG_LEVEL for log.level)
 *            < command line (--set key=value, or a def's own --flag)
 * Every value is validated when it is set; errors name the source and position
 * ("conf/x.properties:12: unknown key 'foo'") and return SHE_ERR_CONFIG.  Keys under an
 * allowed pass-through prefix (e.g. "kafka.") are kept as text and handed to the library
 * that owns them (librdkafka validates them when the client is built).
 * Properties syntax: one `key=value` per line, `#` or `!` starts a comment line, blank
 * lines ignored, whitespace around key and value trimmed, no continuation lines. */
#ifndef SHE_CONFIG_H
#define SHE_CONFIG_H

#include <stdio.h>

#include "error.h"

typedef enum she_conf_type {
    SHE_CONF_STR = 0,
    SHE_CONF_INT,
    SHE_CONF_DOUBLE,
    SHE_CONF_BOOL, /* true/false, 1/0, yes/no, on/off */
    SHE_CONF_ENUM, /* one of `choices`, a '|'-separated list */
} she_conf_type_t;

typedef struct she_conf_def {
    const char *name;    /* dotted key, e.g. "broker.count" */
    she_conf_type_t type;
    const char *dflt;    /* default as text; NULL = unset */
    const char *doc;     /* one line for --help */
    double min, max;     /* INT/DOUBLE range, checked when min < max */
    const char *choices; /* ENUM: "a|b|c" */
    const char *flag;    /* optional command-line flag without dashes, e.g. "port" */
} she_conf_def_t;

typedef struct she_conf_s she_conf_t;

/* Creates an empty configuration. Free with she_conf_free(). Never returns NULL. */
she_conf_t *she_conf_new(void);
void she_conf_free(she_conf_t *conf);

/* Adds definitions (array terminated by an entry with name == NULL) and their defaults.
 * The array must outlive conf.  Returns SHE_ERR_CONFIG on a duplicate key or bad default. */
she_err_t she_conf_add_defs(she_conf_t *conf, const she_conf_def_t *defs, char *errstr,
                            size_t errstr_size);
/* Accepts any key starting with `prefix` (copied) without validation. */
void she_conf_allow_prefix(she_conf_t *conf, const char *prefix);

/* Sets one value; `source` names where it came from for error messages. */
she_err_t she_conf_set(she_conf_t *conf, const char *key, const char *value, const char *source,
                       char *errstr, size_t errstr_size);
/* Parses a properties file; stops at the first error (file:line in the message). */
she_err_t she_conf_load_file(she_conf_t *conf, const char *path, char *errstr,
                             size_t errstr_size);
/* Applies SHE_* variables from envp (NULL-terminated, e.g. environ) that name a known key
 * or the pass-through prefix (SHE_KAFKA_SOCKET_TIMEOUT_MS -> kafka.socket.timeout.ms);
 * other SHE_* variables are ignored because build and test tools use that prefix too. */
she_err_t she_conf_load_env(she_conf_t *conf, char **envp, char *errstr, size_t errstr_size);

/* Parses a command's arguments (argv[0] is the command name): --config FILE, --set k=v,
 * --<flag> value / --<flag>=value (a BOOL flag takes no value), --help / -h.  Applies the
 * layers in the documented order.  Non-option arguments are returned through positional
 * (pointers into argv, at most max_positional, count in *n_positional).  *want_help is set
 * to 1 when --help was given (nothing else is checked then). */
she_err_t she_conf_parse_args(she_conf_t *conf, int argc, char **argv, char **envp,
                              char **positional, int max_positional, int *n_positional,
                              int *want_help, char *errstr, size_t errstr_size);

/* Prints the options and keys with defaults and docs (for `she <command> --help`). */
void she_conf_print_help(const she_conf_t *conf, FILE *out);
/* Prints every set value as `key=value  # source`. */
void she_conf_dump(const she_conf_t *conf, FILE *out);

/* Typed getters. A key that was never defined is a bug (asserts); an unset key returns
 * NULL / 0. Values were validated on set, so these cannot fail. */
const char *she_conf_get(const she_conf_t *conf, const char *key);
long long she_conf_get_int(const she_conf_t *conf, const char *key);
double she_conf_get_double(const she_conf_t *conf, const char *key);
int she_conf_get_bool(const she_conf_t *conf, const char *key);
/* Where the current value of key came from ("default", "f.properties:3", ...); NULL if unset. */
const char *she_conf_source(const she_conf_t *conf, const char *key);

/* Calls fn for every set key starting with prefix, with the prefix stripped from the key.
 * Stops and returns the first non-SHE_OK result of fn. */
typedef she_err_t (*she_conf_visit_fn)(const char *key, const char *value, const char *source,
                                       void *opaque, char *errstr, size_t errstr_size);
she_err_t she_conf_foreach_prefix(const she_conf_t *conf, const char *prefix,
                                  she_conf_visit_fn fn, void *opaque, char *errstr,
                                  size_t errstr_size);

#endif
