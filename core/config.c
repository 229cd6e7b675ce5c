/* config.c -- validated key=value configuration (see config.h for the layering rules). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct conf_entry {
    const she_conf_def_t *def; /* NULL for pass-through keys */
    char *key;
    char *value;  /* NULL = unset */
    char *source;
} conf_entry_t;

struct she_conf_s {
    conf_entry_t *entries;
    int n, cap;
    char **prefixes;
    int n_prefixes;
};

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    SHE_CHECK_ALLOC(d);
    return d;
}

she_conf_t *she_conf_new(void) {
    she_conf_t *conf = calloc(1, sizeof(*conf));
    SHE_CHECK_ALLOC(conf);
    return conf;
}

void she_conf_free(she_conf_t *conf) {
    if (!conf)
        return;
    for (int i = 0; i < conf->n; i++) {
        free(conf->entries[i].key);
        free(conf->entries[i].value);
        free(conf->entries[i].source);
    }
    for (int i = 0; i < conf->n_prefixes; i++)
        free(conf->prefixes[i]);
    free(conf->prefixes);
    free(conf->entries);
    free(conf);
}

static conf_entry_t *find(const she_conf_t *conf, const char *key) {
    for (int i = 0; i < conf->n; i++)
        if (strcmp(conf->entries[i].key, key) == 0)
            return &conf->entries[i];
    return NULL;
}

static conf_entry_t *append(she_conf_t *conf, const she_conf_def_t *def, const char *key) {
    if (conf->n == conf->cap) {
        conf->cap = conf->cap ? conf->cap * 2 : 32;
        conf->entries = realloc(conf->entries, (size_t)conf->cap * sizeof(*conf->entries));
        SHE_CHECK_ALLOC(conf->entries);
    }
    conf_entry_t *e = &conf->entries[conf->n++];
    e->def = def;
    e->key = xstrdup(key);
    e->value = NULL;
    e->source = NULL;
    return e;
}

static const char *passthrough_prefix(const she_conf_t *conf, const char *key) {
    for (int i = 0; i < conf->n_prefixes; i++)
        if (strncmp(key, conf->prefixes[i], strlen(conf->prefixes[i])) == 0 &&
            key[strlen(conf->prefixes[i])] != '\0')
            return conf->prefixes[i];
    return NULL;
}

static int parse_bool(const char *v, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 1;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 1;
        }
    }
    return 0;
}

static int choice_ok(const char *choices, const char *v) {
    size_t vl = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vl && strncmp(p, v, len) == 0)
            return 1;
        p += len + (bar ? 1 : 0);
    }
    return 0;
}

/* Checks `value` against def; on failure fills errstr with "<source>: key 'k': reason". */
static she_err_t validate(const she_conf_def_t *def, const char *value, const char *source,
                          char *errstr, size_t errstr_size) {
    char *end = NULL;
    int has_range = def->min < def->max;
    switch (def->type) {
    case SHE_CONF_STR:
        return SHE_OK;
    case SHE_CONF_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0')
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': '%s' is not an integer", source, def->name, value);
        if (has_range && (v < def->min || v > def->max))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': %lld is outside [%.17g, %.17g]", source, def->name, v,
                            def->min, def->max);
        return SHE_OK;
    }
    case SHE_CONF_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !isfinite(v))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': '%s' is not a finite number", source, def->name, value);
        if (has_range && (v < def->min || v > def->max))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': %g is outside [%g, %g]", source, def->name, v,
                            def->min, def->max);
        return SHE_OK;
    }
    case SHE_CONF_BOOL: {
        int b;
        if (!parse_bool(value, &b))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': '%s' is not a boolean (true/false)", source,
                            def->name, value);
        return SHE_OK;
    }
    case SHE_CONF_ENUM:
        if (!choice_ok(def->choices, value))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: key '%s': '%s' is not one of %s", source, def->name, value,
                            def->choices);
        return SHE_OK;
    }
    return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s: key '%s': unknown type", source,
                    def->name);
}

she_err_t she_conf_add_defs(she_conf_t *conf, const she_conf_def_t *defs, char *errstr,
                            size_t errstr_size) {
    for (const she_conf_def_t *d = defs; d->name; d++) {
        if (find(conf, d->name))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "key '%s' defined twice",
                            d->name);
        conf_entry_t *e = append(conf, d, d->name);
        if (d->dflt) {
            SHE_TRY(validate(d, d->dflt, "default", errstr, errstr_size));
            e->value = xstrdup(d->dflt);
            e->source = xstrdup("default");
        }
    }
    return SHE_OK;
}

void she_conf_allow_prefix(she_conf_t *conf, const char *prefix) {
    conf->prefixes = realloc(conf->prefixes, (size_t)(conf->n_prefixes + 1) * sizeof(char *));
    SHE_CHECK_ALLOC(conf->prefixes);
    conf->prefixes[conf->n_prefixes++] = xstrdup(prefix);
}

she_err_t she_conf_set(she_conf_t *conf, const char *key, const char *value, const char *source,
                       char *errstr, size_t errstr_size) {
    conf_entry_t *e = find(conf, key);
    if (!e) {
        if (!passthrough_prefix(conf, key))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s: unknown key '%s'", source,
                            key);
        e = append(conf, NULL, key);
    }
    if (e->def)
        SHE_TRY(validate(e->def, value, source, errstr, errstr_size));
    free(e->value);
    free(e->source);
    e->value = xstrdup(value);
    e->source = xstrdup(source);
    return SHE_OK;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

she_err_t she_conf_load_file(she_conf_t *conf, const char *path, char *errstr,
                             size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "cannot open config file '%s': %s",
                        path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    she_err_t err = SHE_OK;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char where[512];
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if ((size_t)len != strlen(line)) {
            err = she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s: NUL byte in line", where);
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == '!')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            err = she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                           "%s: malformed line (expected key=value): '%.80s'", where, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (*key == '\0') {
            err = she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s: empty key before '='",
                           where);
            break;
        }
        if ((err = she_conf_set(conf, key, value, where, errstr, errstr_size)) != SHE_OK)
            break;
    }
    free(line);
    fclose(f);
    return err;
}

/* "log.level" -> "SHE_LOG_LEVEL" */
static void env_name(const char *key, char *out, size_t out_size) {
    size_t n = (size_t)snprintf(out, out_size, "SHE_");
    for (const char *p = key; *p && n + 1 < out_size; p++)
        out[n++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

she_err_t she_conf_load_env(she_conf_t *conf, char **envp, char *errstr, size_t errstr_size) {
    if (!envp)
        return SHE_OK;
    for (char **ev = envp; *ev; ev++) {
        if (strncmp(*ev, "SHE_", 4) != 0)
            continue;
        const char *eq = strchr(*ev, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - *ev);
        char name[256], source[300];
        if (nlen >= sizeof(name))
            continue;
        memcpy(name, *ev, nlen);
        name[nlen] = '\0';
        snprintf(source, sizeof(source), "environment %s", name);
        int matched = 0;
        for (int i = 0; i < conf->n && !matched; i++) {
            if (!conf->entries[i].def)
                continue;
            char want[256];
            env_name(conf->entries[i].key, want, sizeof(want));
            if (strcmp(want, name) == 0) {
                SHE_TRY(she_conf_set(conf, conf->entries[i].key, eq + 1, source, errstr,
                                     errstr_size));
                matched = 1;
            }
        }
        for (int i = 0; i < conf->n_prefixes && !matched; i++) {
            char want[256];
            env_name(conf->prefixes[i], want, sizeof(want)); /* "kafka." -> "SHE_KAFKA_" */
            size_t wl = strlen(want);
            if (strncmp(name, want, wl) == 0 && name[wl]) {
                char key[256];
                size_t n = (size_t)snprintf(key, sizeof(key), "%s", conf->prefixes[i]);
                for (const char *p = name + wl; *p && n + 1 < sizeof(key); p++)
                    key[n++] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
                key[n] = '\0';
                SHE_TRY(she_conf_set(conf, key, eq + 1, source, errstr, errstr_size));
                matched = 1;
            }
        }
    }
    return SHE_OK;
}

static const she_conf_def_t *find_flag(const she_conf_t *conf, const char *flag, size_t len) {
    for (int i = 0; i < conf->n; i++) {
        const she_conf_def_t *d = conf->entries[i].def;
        if (d && d->flag && strlen(d->flag) == len && strncmp(d->flag, flag, len) == 0)
            return d;
    }
    return NULL;
}

she_err_t she_conf_parse_args(she_conf_t *conf, int argc, char **argv, char **envp,
                              char **positional, int max_positional, int *n_positional,
                              int *want_help, char *errstr, size_t errstr_size) {
    *n_positional = 0;
    *want_help = 0;
    const char *config_file = NULL;
    /* First pass: find --help and --config, validate option names, collect positionals. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *want_help = 1;
            return SHE_OK;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (*n_positional >= max_positional)
                return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                                "argument %d: unexpected argument '%s'", i, a);
            positional[(*n_positional)++] = argv[i];
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int is_config = nlen == 6 && strncmp(name, "config", 6) == 0;
        int is_set = nlen == 3 && strncmp(name, "set", 3) == 0;
        const she_conf_def_t *d = (is_config || is_set) ? NULL : find_flag(conf, name, nlen);
        if (!is_config && !is_set && !d)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "argument %d: unknown option '--%.*s' (see --help)", i, (int)nlen,
                            name);
        int takes_value = !(d && d->type == SHE_CONF_BOOL);
        if (takes_value && !eq) {
            if (i + 1 >= argc)
                return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                                "argument %d: option '%s' needs a value", i, a);
            i++;
        }
        if (is_config) {
            if (config_file)
                return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                                "argument %d: --config given twice", i);
            config_file = eq ? eq + 1 : argv[i];
        }
    }
    /* Layers in order: file, environment, then command line in the order given. */
    if (config_file)
        SHE_TRY(she_conf_load_file(conf, config_file, errstr, errstr_size));
    SHE_TRY(she_conf_load_env(conf, envp, errstr, errstr_size));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            continue;
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        char source[64];
        snprintf(source, sizeof(source), "argument %d", i);
        if (nlen == 6 && strncmp(name, "config", 6) == 0) {
            i += eq ? 0 : 1;
            continue;
        }
        if (nlen == 3 && strncmp(name, "set", 3) == 0) {
            const char *kv = eq ? eq + 1 : argv[++i];
            const char *keq = strchr(kv, '=');
            if (!keq || keq == kv)
                return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                                "%s: --set expects key=value, got '%s'", source, kv);
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)(keq - kv), kv);
            SHE_TRY(she_conf_set(conf, key, keq + 1, source, errstr, errstr_size));
            continue;
        }
        const she_conf_def_t *d = find_flag(conf, name, nlen);
        const char *value = d->type == SHE_CONF_BOOL ? (eq ? eq + 1 : "true")
                                                     : (eq ? eq + 1 : argv[++i]);
        SHE_TRY(she_conf_set(conf, d->name, value, source, errstr, errstr_size));
    }
    return SHE_OK;
}

static const char *type_name(const she_conf_def_t *d) {
    static const char *const names[] = {"string", "int", "number", "bool", "enum"};
    return names[d->type];
}

void she_conf_print_help(const she_conf_t *conf, FILE *out) {
    fprintf(out, "Options:\n");
    fprintf(out, "  --config FILE         properties file (key=value lines)\n");
    fprintf(out, "  --set KEY=VALUE       override one key (repeatable)\n");
    for (int i = 0; i < conf->n; i++) {
        const she_conf_def_t *d = conf->entries[i].def;
        if (!d || !d->flag)
            continue;
        char lhs[64];
        snprintf(lhs, sizeof(lhs), "--%s%s", d->flag, d->type == SHE_CONF_BOOL ? "" : " VALUE");
        fprintf(out, "  %-21s %s (= %s)\n", lhs, d->doc, d->name);
    }
    fprintf(out, "\nConfiguration keys (file, --set, or environment SHE_<KEY> with . as _):\n");
    for (int i = 0; i < conf->n; i++) {
        const she_conf_def_t *d = conf->entries[i].def;
        if (!d)
            continue;
        fprintf(out, "  %-28s %s: %s", d->name, d->type == SHE_CONF_ENUM ? d->choices : type_name(d),
                d->doc);
        if (d->dflt)
            fprintf(out, " [default: %s]", d->dflt);
        fputc('\n', out);
    }
    for (int i = 0; i < conf->n_prefixes; i++)
        fprintf(out, "  %s*%*s passed through unchanged (e.g. librdkafka properties)\n",
                conf->prefixes[i], (int)(27 - strlen(conf->prefixes[i])), "");
}

void she_conf_dump(const she_conf_t *conf, FILE *out) {
    for (int i = 0; i < conf->n; i++)
        if (conf->entries[i].value)
            fprintf(out, "%s=%s  # %s\n", conf->entries[i].key, conf->entries[i].value,
                    conf->entries[i].source);
}

static const conf_entry_t *must_find(const she_conf_t *conf, const char *key) {
    const conf_entry_t *e = find(conf, key);
    if (!e) {
        fprintf(stderr, "she_conf: key '%s' was never defined\n", key);
        SHE_ASSERT(e != NULL);
    }
    return e;
}

const char *she_conf_get(const she_conf_t *conf, const char *key) {
    return must_find(conf, key)->value;
}

long long she_conf_get_int(const she_conf_t *conf, const char *key) {
    const char *v = she_conf_get(conf, key);
    return v ? strtoll(v, NULL, 10) : 0;
}

double she_conf_get_double(const she_conf_t *conf, const char *key) {
    const char *v = she_conf_get(conf, key);
    return v ? strtod(v, NULL) : 0.0;
}

int she_conf_get_bool(const she_conf_t *conf, const char *key) {
    const char *v = she_conf_get(conf, key);
    int b = 0;
    return v && parse_bool(v, &b) ? b : 0;
}

const char *she_conf_source(const she_conf_t *conf, const char *key) {
    const conf_entry_t *e = find(conf, key);
    return e ? e->source : NULL;
}

she_err_t she_conf_foreach_prefix(const she_conf_t *conf, const char *prefix,
                                  she_conf_visit_fn fn, void *opaque, char *errstr,
                                  size_t errstr_size) {
    size_t pl = strlen(prefix);
    for (int i = 0; i < conf->n; i++) {
        const conf_entry_t *e = &conf->entries[i];
        if (e->value && strncmp(e->key, prefix, pl) == 0)
            SHE_TRY(fn(e->key + pl, e->value, e->source, opaque, errstr, errstr_size));
    }
    return SHE_OK;
}
