/* avro_codec.c -- schema registry, canonical form and fingerprints, single-object encoding,
 * the bounds checks every body passes before Avro C reads it, and writer-to-reader schema
 * resolution with default values. */
#include "avro_codec.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting deeper than this is refused (she's schemas nest at most 6 levels); it bounds the
 * recursion of the checks, the resolution and the canonical form on hostile input. */
#define MAX_DEPTH 32
/* Array and map items that take no input bytes (nulls, empty records) cost nothing to
 * claim, so a block count alone could make Avro C loop and allocate for ever; a message may
 * hold at most this many. */
#define MAX_ZERO_WIDTH_ITEMS (1 << 20)
#define INITIAL_WRITE_CAPACITY 4096

/* ---- CRC-64-AVRO ---- */

#define CRC64_EMPTY 0xc15d213aa4d7a795ull

/* Bit-at-a-time form of the specification's table-driven loop: fingerprints are computed
 * only when a schema is registered, so no table (and no global state) is needed. */
uint64_t she_avro_fingerprint64(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t fp = CRC64_EMPTY;
    for (size_t i = 0; i < len; i++) {
        fp ^= p[i];
        for (int b = 0; b < 8; b++)
            fp = (fp >> 1) ^ (CRC64_EMPTY & (0 - (fp & 1)));
    }
    return fp;
}

/* ---- Parsing Canonical Form ---- */

static int is_primitive(const char *t) {
    static const char *const prims[] = {"null", "boolean", "int", "long",
                                        "float", "double", "bytes", "string"};
    for (size_t i = 0; i < sizeof(prims) / sizeof(prims[0]); i++)
        if (strcmp(t, prims[i]) == 0)
            return 1;
    return 0;
}

/* Full name of `name` given the namespace attribute ns_attr (may be NULL) and the enclosing
 * namespace: a dotted name is already full.  Writes into out (size n). */
static void full_name(const char *name, const char *ns_attr, const char *enclosing, char *out,
                      size_t n) {
    const char *ns = ns_attr ? ns_attr : enclosing;
    if (strchr(name, '.') || !ns || !ns[0])
        snprintf(out, n, "%s", name);
    else
        snprintf(out, n, "%s.%s", ns, name);
}

/* The namespace part of a full name, into out. */
static void name_space(const char *full, char *out, size_t n) {
    const char *dot = strrchr(full, '.');
    size_t k = dot ? (size_t)(dot - full) : 0;
    if (k >= n)
        k = n - 1;
    memcpy(out, full, k);
    out[k] = '\0';
}

/* A JSON string literal: raw UTF-8 ([STRINGS]) with only what JSON requires escaped. */
static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static she_err_t pcf_write(FILE *f, const json_t *j, const char *ns, int depth, char *errstr,
                           size_t errstr_size);

static const char *obj_string(const json_t *j, const char *key) {
    const json_t *v = json_object_get(j, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static she_err_t pcf_named_header(FILE *f, const json_t *j, const char *type, const char *ns,
                                  char *full, size_t full_size, char *errstr,
                                  size_t errstr_size) {
    const char *name = obj_string(j, "name");
    if (!name || !name[0])
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s schema without a name", type);
    full_name(name, obj_string(j, "namespace"), ns, full, full_size);
    fputs("{\"name\":", f);
    put_string(f, full);
    fprintf(f, ",\"type\":\"%s\"", type);
    return SHE_OK;
}

static she_err_t pcf_object(FILE *f, const json_t *j, const char *ns, int depth, char *errstr,
                            size_t errstr_size) {
    const json_t *jt = json_object_get(j, "type");
    if (!json_is_string(jt)) /* {"type": {...}} or {"type": [...]}: the inner schema */
        return jt ? pcf_write(f, jt, ns, depth + 1, errstr, errstr_size)
                  : she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "schema object without type");
    const char *t = json_string_value(jt);
    char full[512], inner_ns[512];
    if (is_primitive(t)) {
        fprintf(f, "\"%s\"", t);
    } else if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0) {
        SHE_TRY(pcf_named_header(f, j, t, ns, full, sizeof(full), errstr, errstr_size));
        name_space(full, inner_ns, sizeof(inner_ns));
        const json_t *fields = json_object_get(j, "fields");
        if (!json_is_array(fields))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "record %s without fields", full);
        fputs(",\"fields\":[", f);
        for (size_t i = 0; i < json_array_size(fields); i++) {
            const json_t *fd = json_array_get(fields, i);
            const char *fname = obj_string(fd, "name");
            const json_t *ftype = json_object_get(fd, "type");
            if (!fname || !ftype)
                return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                                "record %s: field %zu without name or type", full, i);
            fputs(i ? ",{\"name\":" : "{\"name\":", f);
            put_string(f, fname);
            fputs(",\"type\":", f);
            SHE_TRY(pcf_write(f, ftype, inner_ns, depth + 1, errstr, errstr_size));
            fputc('}', f);
        }
        fputs("]}", f);
    } else if (strcmp(t, "enum") == 0) {
        SHE_TRY(pcf_named_header(f, j, t, ns, full, sizeof(full), errstr, errstr_size));
        const json_t *syms = json_object_get(j, "symbols");
        if (!json_is_array(syms))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "enum %s without symbols", full);
        fputs(",\"symbols\":[", f);
        for (size_t i = 0; i < json_array_size(syms); i++) {
            const json_t *s = json_array_get(syms, i);
            if (!json_is_string(s))
                return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                                "enum %s: symbol %zu is not a string", full, i);
            if (i)
                fputc(',', f);
            put_string(f, json_string_value(s));
        }
        fputs("]}", f);
    } else if (strcmp(t, "fixed") == 0) {
        SHE_TRY(pcf_named_header(f, j, t, ns, full, sizeof(full), errstr, errstr_size));
        const json_t *size = json_object_get(j, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "fixed %s without a size", full);
        fprintf(f, ",\"size\":%" JSON_INTEGER_FORMAT "}", json_integer_value(size));
    } else if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
        const char *key = t[0] == 'a' ? "items" : "values";
        const json_t *inner = json_object_get(j, key);
        if (!inner)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s schema without %s", t, key);
        fprintf(f, "{\"type\":\"%s\",\"%s\":", t, key);
        SHE_TRY(pcf_write(f, inner, ns, depth + 1, errstr, errstr_size));
        fputc('}', f);
    } else { /* {"type": "SomeName"}: a reference to a named type */
        full_name(t, NULL, ns, full, sizeof(full));
        put_string(f, full);
    }
    return SHE_OK;
}

static she_err_t pcf_write(FILE *f, const json_t *j, const char *ns, int depth, char *errstr,
                           size_t errstr_size) {
    if (depth > MAX_DEPTH)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "schema nested deeper than %d",
                        MAX_DEPTH);
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char full[512];
        if (is_primitive(s)) {
            put_string(f, s);
        } else {
            full_name(s, NULL, ns, full, sizeof(full));
            put_string(f, full);
        }
        return SHE_OK;
    }
    if (json_is_array(j)) {
        fputc('[', f);
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                fputc(',', f);
            SHE_TRY(pcf_write(f, json_array_get(j, i), ns, depth + 1, errstr, errstr_size));
        }
        fputc(']', f);
        return SHE_OK;
    }
    if (json_is_object(j))
        return pcf_object(f, j, ns, depth, errstr, errstr_size);
    return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "a schema is a string, array or object");
}

static she_err_t canonical_form_json(const json_t *j, char **pcf, char *errstr,
                                     size_t errstr_size) {
    size_t size = 0;
    *pcf = NULL;
    FILE *f = open_memstream(pcf, &size);
    if (!f)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "open_memstream: %s",
                        strerror(errno));
    she_err_t err = pcf_write(f, j, "", 0, errstr, errstr_size);
    fclose(f);
    if (err != SHE_OK) {
        free(*pcf);
        *pcf = NULL;
    }
    return err;
}

static json_t *parse_json(const char *json, size_t len, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!j)
        she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "schema JSON, line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
    return j;
}

she_err_t she_avro_canonical_form(const char *json, size_t len, char **pcf, char *errstr,
                                  size_t errstr_size) {
    *pcf = NULL;
    json_t *j = parse_json(json, len, errstr, errstr_size);
    if (!j)
        return SHE_ERR_FORMAT;
    she_err_t err = canonical_form_json(j, pcf, errstr, errstr_size);
    json_decref(j);
    return err;
}

she_err_t she_avro_peek(const uint8_t *buf, size_t len, uint64_t *fingerprint, char *errstr,
                        size_t errstr_size) {
    if (len < SHE_AVRO_HEADER_SIZE)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "message of %zu bytes is shorter than the %d-byte single-object header",
                        len, SHE_AVRO_HEADER_SIZE);
    if (buf[0] != SHE_AVRO_MAGIC0 || buf[1] != SHE_AVRO_MAGIC1)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "bad marker at byte %d: %02x %02x, expected c3 01 (not an Avro "
                        "single-object message)",
                        buf[0] != SHE_AVRO_MAGIC0 ? 0 : 1, buf[0], buf[1]);
    uint64_t fp = 0;
    for (int i = 7; i >= 0; i--)
        fp = (fp << 8) | buf[2 + i];
    *fingerprint = fp;
    return SHE_OK;
}

/* ---- the registry ---- */

/* A named record or enum of a schema and its JSON definition, for defaults. */
typedef struct schema_json {
    avro_schema_t schema;
    const json_t *json;
} schema_json_t;

typedef struct entry {
    char *name;   /* full name of the top-level record */
    char *origin; /* file name, for messages */
    int version;  /* default of the schema_version field; 0 if none */
    int current;
    uint64_t fingerprint;
    avro_schema_t schema;
    json_t *json;
    avro_value_iface_t *iface;
    avro_value_t value;   /* decode target (for an older schema: the writer's data) */
    avro_value_t enc;     /* current only: what she_avro_codec_value hands out */
    struct entry *reader; /* the current entry of the same name */
    schema_json_t *named; /* every record and enum defined in the schema */
    int n_named;
} entry_t;

struct she_avro_codec {
    entry_t **entries;
    int n_entries;
    avro_reader_t reader;
    avro_writer_t writer;
    uint8_t *wbuf;
    size_t wcap;
};

static void entry_free(entry_t *e) {
    if (!e)
        return;
    if (e->value.iface)
        avro_value_decref(&e->value);
    if (e->enc.iface)
        avro_value_decref(&e->enc);
    if (e->iface)
        avro_value_iface_decref(e->iface);
    if (e->schema)
        avro_schema_decref(e->schema);
    json_decref(e->json);
    free(e->named);
    free(e->name);
    free(e->origin);
    free(e);
}

she_avro_codec_t *she_avro_codec_new(void) {
    she_avro_codec_t *ac = calloc(1, sizeof(*ac));
    SHE_CHECK_ALLOC(ac);
    ac->wcap = INITIAL_WRITE_CAPACITY;
    ac->wbuf = malloc(ac->wcap);
    SHE_CHECK_ALLOC(ac->wbuf);
    ac->reader = avro_reader_memory("", 0);
    ac->writer = avro_writer_memory((const char *)ac->wbuf, (int64_t)ac->wcap);
    SHE_CHECK_ALLOC(ac->reader);
    SHE_CHECK_ALLOC(ac->writer);
    return ac;
}

void she_avro_codec_free(she_avro_codec_t *ac) {
    if (!ac)
        return;
    for (int i = 0; i < ac->n_entries; i++)
        entry_free(ac->entries[i]);
    free(ac->entries);
    avro_reader_free(ac->reader);
    avro_writer_free(ac->writer);
    free(ac->wbuf);
    free(ac);
}

static avro_schema_t skip_links(avro_schema_t s) {
    while (is_avro_link(s))
        s = avro_schema_link_target(s);
    return s;
}

/* Walks the Avro C schema and its JSON side by side (Avro C parsed that JSON, so the shapes
 * agree) and records each record and enum definition. */
static void collect_named(entry_t *e, avro_schema_t s, const json_t *j, int depth) {
    if (depth > MAX_DEPTH || is_avro_link(s))
        return;
    if (json_is_array(j) && is_avro_union(s)) {
        for (size_t i = 0; i < json_array_size(j) && i < avro_schema_union_size(s); i++)
            collect_named(e, avro_schema_union_branch(s, (int)i), json_array_get(j, i), depth + 1);
        return;
    }
    if (!json_is_object(j))
        return;
    const json_t *jt = json_object_get(j, "type");
    if (!json_is_string(jt)) {
        collect_named(e, s, jt, depth + 1);
        return;
    }
    if (is_avro_record(s) || is_avro_enum(s)) {
        schema_json_t *grown = realloc(e->named, (size_t)(e->n_named + 1) * sizeof(*grown));
        SHE_CHECK_ALLOC(grown);
        e->named = grown;
        e->named[e->n_named++] = (schema_json_t){s, j};
    }
    if (is_avro_record(s)) {
        const json_t *fields = json_object_get(j, "fields");
        for (size_t i = 0; i < json_array_size(fields) && i < avro_schema_record_size(s); i++)
            collect_named(e, avro_schema_record_field_get_by_index(s, (int)i),
                          json_object_get(json_array_get(fields, i), "type"), depth + 1);
    } else if (is_avro_array(s)) {
        collect_named(e, avro_schema_array_items(s), json_object_get(j, "items"), depth + 1);
    } else if (is_avro_map(s)) {
        collect_named(e, avro_schema_map_values(s), json_object_get(j, "values"), depth + 1);
    }
}

static const json_t *named_json(const entry_t *e, avro_schema_t s) {
    s = skip_links(s);
    for (int i = 0; i < e->n_named; i++)
        if (e->named[i].schema == s)
            return e->named[i].json;
    return NULL;
}

static int schema_version_default(const json_t *j) {
    const json_t *fields = json_object_get(j, "fields");
    for (size_t i = 0; i < json_array_size(fields); i++) {
        const json_t *fd = json_array_get(fields, i);
        const char *n = obj_string(fd, "name");
        const json_t *def = json_object_get(fd, "default");
        if (n && strcmp(n, "schema_version") == 0 && json_is_integer(def))
            return (int)json_integer_value(def);
    }
    return 0;
}

static entry_t *find_current(const she_avro_codec_t *ac, const char *name) {
    for (int i = 0; i < ac->n_entries; i++)
        if (ac->entries[i]->current && strcmp(ac->entries[i]->name, name) == 0)
            return ac->entries[i];
    return NULL;
}

static entry_t *find_fingerprint(const she_avro_codec_t *ac, uint64_t fp) {
    for (int i = 0; i < ac->n_entries; i++)
        if (ac->entries[i]->fingerprint == fp)
            return ac->entries[i];
    return NULL;
}

she_err_t she_avro_codec_add(she_avro_codec_t *ac, const char *json, size_t len, int current,
                             const char *origin, char *errstr, size_t errstr_size) {
    char err[SHE_ERRSTR_SIZE];
    json_t *j = parse_json(json, len, err, sizeof(err));
    if (!j)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: %s", origin, err);
    const char *type = obj_string(j, "type"), *name = obj_string(j, "name");
    if (!type || strcmp(type, "record") != 0 || !name) {
        json_decref(j);
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "%s: a message schema is a named record", origin);
    }
    entry_t *e = calloc(1, sizeof(*e));
    SHE_CHECK_ALLOC(e);
    e->json = j;
    e->origin = strdup(origin);
    SHE_CHECK_ALLOC(e->origin);
    e->current = current;
    e->version = schema_version_default(j);
    char full[512], *pcf = NULL;
    full_name(name, obj_string(j, "namespace"), "", full, sizeof(full));
    e->name = strdup(full);
    SHE_CHECK_ALLOC(e->name);

    she_err_t rc = canonical_form_json(j, &pcf, err, sizeof(err));
    if (rc != SHE_OK) {
        rc = she_errf(rc, errstr, errstr_size, "%s: %s", origin, err);
        goto fail;
    }
    e->fingerprint = she_avro_fingerprint64(pcf, strlen(pcf));
    free(pcf);
    entry_t *same = find_fingerprint(ac, e->fingerprint);
    if (same) {
        rc = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                      "%s: same canonical form (fingerprint %016" PRIx64 ") as %s", origin,
                      e->fingerprint, same->origin);
        goto fail;
    }
    if (current && (same = find_current(ac, e->name)) != NULL) {
        rc = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                      "%s: %s already has a current schema (%s)", origin, e->name, same->origin);
        goto fail;
    }
    if (avro_schema_from_json_length(json, len, &e->schema) != 0) {
        e->schema = NULL;
        rc = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: Avro C: %s", origin,
                      avro_strerror());
        goto fail;
    }
    e->iface = avro_generic_class_from_schema(e->schema);
    if (!e->iface || avro_generic_value_new(e->iface, &e->value) != 0 ||
        (current && avro_generic_value_new(e->iface, &e->enc) != 0)) {
        rc = she_errf(SHE_ERR_AVRO, errstr, errstr_size, "%s: Avro C: %s", origin,
                      avro_strerror());
        goto fail;
    }
    collect_named(e, e->schema, j, 0);

    entry_t **grown = realloc(ac->entries, (size_t)(ac->n_entries + 1) * sizeof(*grown));
    SHE_CHECK_ALLOC(grown);
    ac->entries = grown;
    ac->entries[ac->n_entries++] = e;
    for (int i = 0; i < ac->n_entries; i++) {
        entry_t *o = ac->entries[i];
        if (strcmp(o->name, e->name) == 0 && (current || o == e))
            o->reader = find_current(ac, e->name);
    }
    return SHE_OK;
fail:
    entry_free(e);
    return rc;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NAME.vN.avsc is an older version; anything else ending in .avsc is current. */
static int is_older_version(const char *file) {
    size_t n = strlen(file) - strlen(".avsc");
    size_t i = n;
    while (i > 0 && file[i - 1] >= '0' && file[i - 1] <= '9')
        i--;
    return i < n && i >= 2 && file[i - 1] == 'v' && file[i - 2] == '.';
}

static she_err_t add_file(she_avro_codec_t *ac, const char *dir, const char *file, char *errstr,
                          size_t errstr_size) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4096 > cap) {
            cap = cap ? 2 * cap : 16384;
            text = realloc(text, cap);
            SHE_CHECK_ALLOC(text);
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    int bad = ferror(f);
    fclose(f);
    she_err_t rc = bad ? she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: read error", path)
                       : she_avro_codec_add(ac, text, len, !is_older_version(file), file, errstr,
                                            errstr_size);
    free(text);
    return rc;
}

/* Every record with older versions must have a current one too. */
static she_err_t check_current(const she_avro_codec_t *ac, const char *where, char *errstr,
                               size_t errstr_size) {
    for (int i = 0; i < ac->n_entries; i++)
        if (!ac->entries[i]->reader)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: %s has older versions but no current schema in %s",
                            ac->entries[i]->origin, ac->entries[i]->name, where);
    return SHE_OK;
}

she_err_t she_avro_codec_load_dir(she_avro_codec_t *ac, const char *dir, char *errstr,
                                  size_t errstr_size) {
    DIR *d = opendir(dir);
    if (!d)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "schema directory %s: %s", dir, strerror(errno));
    char **files = NULL;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".avsc") == 0) {
            char **grown = realloc(files, (size_t)(n + 1) * sizeof(*files));
            SHE_CHECK_ALLOC(grown);
            files = grown;
            files[n] = strdup(de->d_name);
            SHE_CHECK_ALLOC(files[n]);
            n++;
        }
    }
    closedir(d);
    qsort(files, (size_t)n, sizeof(*files), cmp_names);
    she_err_t rc = n ? SHE_OK
                     : she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                                "schema directory %s has no .avsc file", dir);
    for (int i = 0; i < n && rc == SHE_OK; i++)
        rc = add_file(ac, dir, files[i], errstr, errstr_size);
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    return rc == SHE_OK ? check_current(ac, dir, errstr, errstr_size) : rc;
}

she_err_t she_avro_codec_load_embedded(she_avro_codec_t *ac, const she_avro_embedded_t *files,
                                       int n, char *errstr, size_t errstr_size) {
    she_err_t rc = SHE_OK;
    for (int i = 0; i < n && rc == SHE_OK; i++)
        rc = she_avro_codec_add(ac, files[i].json, files[i].len, !is_older_version(files[i].file),
                                files[i].file, errstr, errstr_size);
    return rc == SHE_OK ? check_current(ac, "the built-in schemas", errstr, errstr_size) : rc;
}

avro_value_t *she_avro_codec_value(she_avro_codec_t *ac, const char *name) {
    entry_t *e = find_current(ac, name);
    if (!e)
        return NULL;
    avro_value_reset(&e->enc);
    avro_value_t v;
    if (avro_value_get_by_name(&e->enc, "schema_version", &v, NULL) == 0 &&
        avro_value_get_type(&v) == AVRO_INT32)
        avro_value_set_int(&v, e->version);
    return &e->enc;
}

uint64_t she_avro_codec_fingerprint(const she_avro_codec_t *ac, const char *name) {
    const entry_t *e = find_current(ac, name);
    return e ? e->fingerprint : 0;
}

const char *she_avro_codec_lookup(const she_avro_codec_t *ac, uint64_t fingerprint,
                                  int *version) {
    const entry_t *e = find_fingerprint(ac, fingerprint);
    if (version)
        *version = e ? e->version : 0;
    return e ? e->name : NULL;
}

/* ---- encoding ---- */

she_err_t she_avro_codec_encode(she_avro_codec_t *ac, avro_value_t *value, const uint8_t **buf,
                                size_t *len, char *errstr, size_t errstr_size) {
    entry_t *e = NULL;
    for (int i = 0; i < ac->n_entries && !e; i++)
        if (ac->entries[i]->current && ac->entries[i]->enc.self == value->self)
            e = ac->entries[i];
    if (!e)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "encode: the value was not obtained from she_avro_codec_value");
    for (;;) {
        avro_writer_memory_set_dest(ac->writer, (const char *)ac->wbuf + SHE_AVRO_HEADER_SIZE,
                                    (int64_t)(ac->wcap - SHE_AVRO_HEADER_SIZE));
        int rval = avro_value_write(ac->writer, value);
        if (rval == 0)
            break;
        if (rval != ENOSPC)
            return she_errf(SHE_ERR_AVRO, errstr, errstr_size, "encode %s: Avro C: %s", e->name,
                            avro_strerror());
        /* Grow and write again: sizing first would walk every value twice per message. */
        uint8_t *grown = realloc(ac->wbuf, 2 * ac->wcap);
        if (!grown)
            return she_errf(SHE_ERR_NOMEM, errstr, errstr_size,
                            "encode %s: cannot grow the write buffer to %zu bytes", e->name,
                            2 * ac->wcap);
        ac->wbuf = grown;
        ac->wcap *= 2;
    }
    ac->wbuf[0] = SHE_AVRO_MAGIC0;
    ac->wbuf[1] = SHE_AVRO_MAGIC1;
    for (int i = 0; i < 8; i++)
        ac->wbuf[2 + i] = (uint8_t)(e->fingerprint >> (8 * i));
    *buf = ac->wbuf;
    *len = SHE_AVRO_HEADER_SIZE + (size_t)avro_writer_tell(ac->writer);
    return SHE_OK;
}

/* ---- checking a body against the writer schema ---- */

typedef struct check {
    const uint8_t *buf; /* the whole message; offsets in messages count from its start */
    size_t len, pos;
    const char *record;
    int depth;
    int64_t zero_width_items; /* items so far that took no bytes */
    const char *seg_name[MAX_DEPTH + 1]; /* field path: a field name or NULL ... */
    int64_t seg_index[MAX_DEPTH + 1];    /* ... and an element index or -1 */
    char *errstr;
    size_t errstr_size;
} check_t;

static she_err_t check_fail(check_t *c, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static she_err_t check_fail(check_t *c, size_t at, const char *fmt, ...) {
    char path[256] = "", what[256];
    size_t n = 0;
    for (int i = 0; i < c->depth && n < sizeof(path); i++) {
        if (c->seg_name[i])
            n += (size_t)snprintf(path + n, sizeof(path) - n, "%s%s", n ? "." : "", c->seg_name[i]);
        if (c->seg_index[i] >= 0 && n < sizeof(path))
            n += (size_t)snprintf(path + n, sizeof(path) - n, "[%" PRId64 "]", c->seg_index[i]);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return she_errf(SHE_ERR_FORMAT, c->errstr, c->errstr_size, "%s: at byte %zu of %zu%s%s: %s",
                    c->record, at, c->len, path[0] ? " in " : "", path, what);
}

static she_err_t check_varint(check_t *c, int max_bytes, int64_t *out) {
    size_t start = c->pos;
    uint64_t u = 0;
    for (int i = 0;; i++) {
        if (c->pos >= c->len)
            return check_fail(c, start, "varint runs past the end of the message");
        if (i == max_bytes)
            return check_fail(c, start, "varint longer than %d bytes", max_bytes);
        uint8_t b = c->buf[c->pos++];
        u |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return SHE_OK;
}

static she_err_t check_int(check_t *c, int64_t *out) {
    size_t start = c->pos;
    SHE_TRY(check_varint(c, 5, out));
    if (*out < INT32_MIN || *out > INT32_MAX)
        return check_fail(c, start, "int %" PRId64 " out of range", *out);
    return SHE_OK;
}

static she_err_t check_bytes(check_t *c, size_t n, const char *what) {
    if (c->len - c->pos < n)
        return check_fail(c, c->pos, "%s of %zu bytes runs past the end (%zu bytes left)", what, n,
                          c->len - c->pos);
    c->pos += n;
    return SHE_OK;
}

/* Offset of the first byte that breaks UTF-8 (overlong forms, surrogates and code points
 * above U+10FFFF included), or n. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            k = 1, cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            k = 2, cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            k = 3, cp = b & 0x07;
        } else {
            return i;
        }
        if (n - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += k + 1;
    }
    return n;
}

/* A lower bound on the bytes a value of schema s takes, to refuse a block count the rest of
 * the message cannot hold before walking it.  Named references count 0 (a safe bound that
 * needs no recursion into possibly recursive types). */
static size_t min_width(avro_schema_t s, int depth) {
    if (depth > MAX_DEPTH)
        return 0;
    switch (avro_typeof(s)) {
    case AVRO_NULL:
    case AVRO_LINK:
        return 0;
    case AVRO_FLOAT:
        return 4;
    case AVRO_DOUBLE:
        return 8;
    case AVRO_FIXED:
        return (size_t)avro_schema_fixed_size(s);
    case AVRO_RECORD: {
        size_t w = 0;
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            w += min_width(avro_schema_record_field_get_by_index(s, (int)i), depth + 1);
        return w;
    }
    default:
        return 1;
    }
}

static she_err_t check_value(check_t *c, avro_schema_t s);

static she_err_t check_blocks(check_t *c, avro_schema_t items, int is_map) {
    size_t width = min_width(items, c->depth) + (is_map ? 1 : 0);
    int level = c->depth - 1;
    int64_t index = 0;
    for (;;) {
        size_t at = c->pos;
        int64_t count = 0, block_size = 0;
        c->seg_index[level] = -1;
        SHE_TRY(check_varint(c, 10, &count));
        if (count == 0)
            break;
        if (count < 0) {
            if (count == INT64_MIN)
                return check_fail(c, at, "block count out of range");
            count = -count;
            size_t size_at = c->pos;
            SHE_TRY(check_varint(c, 10, &block_size));
            if (block_size < 0 || (uint64_t)block_size > c->len - c->pos)
                return check_fail(c, size_at, "block size %" PRId64 " outside the message",
                                  block_size);
        }
        if (width > 0 && (uint64_t)count > (c->len - c->pos) / width)
            return check_fail(c, at, "block of %" PRId64 " items needs at least %zu bytes each, "
                              "%zu bytes left", count, width, c->len - c->pos);
        for (int64_t i = 0; i < count; i++, index++) {
            size_t item_at = c->pos;
            c->seg_index[level] = index;
            if (is_map) {
                int64_t klen = 0;
                size_t kat = c->pos;
                SHE_TRY(check_varint(c, 10, &klen));
                if (klen < 0)
                    return check_fail(c, kat, "negative map key length %" PRId64, klen);
                SHE_TRY(check_bytes(c, (size_t)klen, "map key"));
            }
            SHE_TRY(check_value(c, items));
            if (c->pos == item_at && ++c->zero_width_items > MAX_ZERO_WIDTH_ITEMS)
                return check_fail(c, at, "more than %d items that take no bytes",
                                  MAX_ZERO_WIDTH_ITEMS);
        }
    }
    return SHE_OK;
}

static she_err_t check_value(check_t *c, avro_schema_t s) {
    s = skip_links(s);
    int64_t v = 0;
    size_t at = c->pos;
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return SHE_OK;
    case AVRO_BOOLEAN:
        SHE_TRY(check_bytes(c, 1, "boolean"));
        if (c->buf[at] > 1)
            return check_fail(c, at, "boolean byte %02x is neither 00 nor 01", c->buf[at]);
        return SHE_OK;
    case AVRO_INT32:
        return check_int(c, &v);
    case AVRO_INT64:
        return check_varint(c, 10, &v);
    case AVRO_FLOAT:
        return check_bytes(c, 4, "float");
    case AVRO_DOUBLE:
        return check_bytes(c, 8, "double");
    case AVRO_FIXED:
        return check_bytes(c, (size_t)avro_schema_fixed_size(s), "fixed");
    case AVRO_STRING:
    case AVRO_BYTES: {
        int is_string = is_avro_string(s);
        SHE_TRY(check_varint(c, 10, &v));
        if (v < 0)
            return check_fail(c, at, "negative %s length %" PRId64,
                              is_string ? "string" : "bytes", v);
        size_t data = c->pos;
        SHE_TRY(check_bytes(c, (uint64_t)v, is_string ? "string" : "bytes"));
        size_t bad = is_string ? utf8_invalid_at(c->buf + data, (size_t)v) : (size_t)v;
        if (bad < (size_t)v)
            return check_fail(c, data + bad, "string is not valid UTF-8");
        return SHE_OK;
    }
    case AVRO_ENUM:
        SHE_TRY(check_int(c, &v));
        if (v < 0 || v >= avro_schema_enum_number_of_symbols(s))
            return check_fail(c, at, "enum index %" PRId64 " outside 0..%d", v,
                              avro_schema_enum_number_of_symbols(s) - 1);
        return SHE_OK;
    case AVRO_UNION:
        SHE_TRY(check_varint(c, 10, &v));
        if (v < 0 || (uint64_t)v >= avro_schema_union_size(s))
            return check_fail(c, at, "union branch %" PRId64 " outside 0..%zu", v,
                              avro_schema_union_size(s) - 1);
        return check_value(c, avro_schema_union_branch(s, (int)v));
    default:
        break;
    }
    /* Records, arrays and maps add a level to the path. */
    if (c->depth >= MAX_DEPTH)
        return check_fail(c, at, "nested deeper than %d", MAX_DEPTH);
    int level = c->depth++;
    c->seg_name[level] = NULL;
    c->seg_index[level] = -1;
    she_err_t rc = SHE_OK;
    if (is_avro_record(s)) {
        for (size_t i = 0; i < avro_schema_record_size(s) && rc == SHE_OK; i++) {
            c->seg_name[level] = avro_schema_record_field_name(s, (int)i);
            rc = check_value(c, avro_schema_record_field_get_by_index(s, (int)i));
        }
    } else if (is_avro_array(s)) {
        rc = check_blocks(c, avro_schema_array_items(s), 0);
    } else if (is_avro_map(s)) {
        rc = check_blocks(c, avro_schema_map_values(s), 1);
    } else {
        rc = check_fail(c, at, "schema type %s not supported", avro_schema_type_name(s));
    }
    c->depth--;
    return rc;
}

/* ---- resolving an older writer's data to the current schema ---- */

typedef struct resolve {
    const entry_t *reader;
    char *errstr;
    size_t errstr_size;
} resolve_t;

static she_err_t set_default(resolve_t *r, avro_value_t *dst, const json_t *def,
                             const char *field, int depth);

static she_err_t resolve_fail(resolve_t *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static she_err_t resolve_fail(resolve_t *r, const char *field, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return she_errf(SHE_ERR_INVALID, r->errstr, r->errstr_size,
                    "%s: cannot resolve the writer's data to the current schema at %s: %s",
                    r->reader->name, field, what);
}

#define AVRO_OK(r, field, call)                                                     \
    do {                                                                            \
        if ((call) != 0)                                                            \
            return resolve_fail(r, field, "%s: Avro C: %s", #call, avro_strerror()); \
    } while (0)

/* Whether data of writer type w can be read as reader type d (same type or promotion). */
static int promotable(avro_type_t w, avro_type_t d) {
    if (w == d)
        return 1;
    switch (d) {
    case AVRO_INT64:
        return w == AVRO_INT32;
    case AVRO_FLOAT:
        return w == AVRO_INT32 || w == AVRO_INT64;
    case AVRO_DOUBLE:
        return w == AVRO_INT32 || w == AVRO_INT64 || w == AVRO_FLOAT;
    case AVRO_STRING:
        return w == AVRO_BYTES;
    case AVRO_BYTES:
        return w == AVRO_STRING;
    default:
        return 0;
    }
}

static int same_name(avro_schema_t a, avro_schema_t b) {
    return strcmp(avro_schema_name(skip_links(a)), avro_schema_name(skip_links(b))) == 0;
}

/* The reader union branch a writer value of schema ws matches: the first with the same
 * type (and name, for named types), else the first it promotes to; -1 if none. */
static int union_branch_for(avro_schema_t reader_union, avro_schema_t ws) {
    ws = skip_links(ws);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < avro_schema_union_size(reader_union); i++) {
            avro_schema_t b = skip_links(avro_schema_union_branch(reader_union, (int)i));
            if (avro_typeof(b) == avro_typeof(ws) &&
                (!is_avro_named_type(b) || same_name(b, ws)))
                return (int)i;
            if (pass == 1 && promotable(avro_typeof(ws), avro_typeof(b)))
                return (int)i;
        }
    return -1;
}

static she_err_t resolve_value(resolve_t *r, avro_value_t *dst, avro_value_t *src,
                               const char *field, int depth) {
    if (depth > MAX_DEPTH)
        return resolve_fail(r, field, "nested deeper than %d", MAX_DEPTH);
    avro_type_t wt = avro_value_get_type(src), dt = avro_value_get_type(dst);
    if (wt == AVRO_UNION) { /* the writer's branch is what was written */
        avro_value_t branch;
        AVRO_OK(r, field, avro_value_get_current_branch(src, &branch));
        return resolve_value(r, dst, &branch, field, depth + 1);
    }
    if (dt == AVRO_UNION) {
        int b = union_branch_for(avro_value_get_schema(dst), avro_value_get_schema(src));
        if (b < 0)
            return resolve_fail(r, field, "no branch of the reader's union takes a %s",
                                avro_schema_type_name(avro_value_get_schema(src)));
        avro_value_t branch;
        AVRO_OK(r, field, avro_value_set_branch(dst, b, &branch));
        return resolve_value(r, &branch, src, field, depth + 1);
    }
    if (!promotable(wt, dt))
        return resolve_fail(r, field, "writer type %s cannot be read as %s",
                            avro_schema_type_name(avro_value_get_schema(src)),
                            avro_schema_type_name(avro_value_get_schema(dst)));
    switch (dt) {
    case AVRO_NULL:
        return avro_value_set_null(dst) == 0 ? SHE_OK : resolve_fail(r, field, "null");
    case AVRO_BOOLEAN: {
        int b = 0;
        AVRO_OK(r, field, avro_value_get_boolean(src, &b));
        AVRO_OK(r, field, avro_value_set_boolean(dst, b));
        return SHE_OK;
    }
    case AVRO_INT32: {
        int32_t i = 0;
        AVRO_OK(r, field, avro_value_get_int(src, &i));
        AVRO_OK(r, field, avro_value_set_int(dst, i));
        return SHE_OK;
    }
    case AVRO_INT64:
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        int64_t l = 0;
        int32_t i = 0;
        float f = 0;
        double d = 0;
        if (wt == AVRO_INT32) {
            AVRO_OK(r, field, avro_value_get_int(src, &i));
            d = i, l = i;
        } else if (wt == AVRO_INT64) {
            AVRO_OK(r, field, avro_value_get_long(src, &l));
            d = (double)l;
        } else if (wt == AVRO_FLOAT) {
            AVRO_OK(r, field, avro_value_get_float(src, &f));
            d = f;
        } else {
            AVRO_OK(r, field, avro_value_get_double(src, &d));
        }
        if (dt == AVRO_INT64)
            AVRO_OK(r, field, avro_value_set_long(dst, l));
        else if (dt == AVRO_FLOAT)
            AVRO_OK(r, field, avro_value_set_float(dst, wt == AVRO_FLOAT ? f : (float)d));
        else
            AVRO_OK(r, field, avro_value_set_double(dst, d));
        return SHE_OK;
    }
    case AVRO_STRING:
    case AVRO_BYTES: {
        const void *p = NULL;
        size_t n = 0;
        if (wt == AVRO_STRING) {
            const char *s = NULL;
            AVRO_OK(r, field, avro_value_get_string(src, &s, &n));
            p = s, n = n ? n - 1 : 0; /* Avro C counts the NUL */
        } else {
            AVRO_OK(r, field, avro_value_get_bytes(src, &p, &n));
        }
        if (dt == AVRO_BYTES) {
            AVRO_OK(r, field, avro_value_set_bytes(dst, (void *)p, n));
        } else {
            char *z = malloc(n + 1);
            SHE_CHECK_ALLOC(z);
            memcpy(z, p, n);
            z[n] = '\0';
            int rv = avro_value_set_string_len(dst, z, n + 1);
            free(z);
            AVRO_OK(r, field, rv);
        }
        return SHE_OK;
    }
    case AVRO_FIXED: {
        const void *p = NULL;
        size_t n = 0;
        AVRO_OK(r, field, avro_value_get_fixed(src, &p, &n));
        if ((int64_t)n != avro_schema_fixed_size(avro_value_get_schema(dst)))
            return resolve_fail(r, field, "fixed of %zu bytes read as fixed of %" PRId64, n,
                                avro_schema_fixed_size(avro_value_get_schema(dst)));
        AVRO_OK(r, field, avro_value_set_fixed(dst, (void *)p, n));
        return SHE_OK;
    }
    case AVRO_ENUM: {
        int i = 0;
        AVRO_OK(r, field, avro_value_get_enum(src, &i));
        avro_schema_t ds = avro_value_get_schema(dst);
        const char *sym = avro_schema_enum_get(avro_value_get_schema(src), i);
        int k = sym ? avro_schema_enum_get_by_name(ds, sym) : -1;
        if (k < 0) { /* a symbol the reader does not know: the enum's default */
            const char *def = obj_string(named_json(r->reader, ds), "default");
            k = def ? avro_schema_enum_get_by_name(ds, def) : -1;
            if (k < 0)
                return resolve_fail(r, field, "symbol %s unknown to the reader, no default",
                                    sym ? sym : "?");
        }
        AVRO_OK(r, field, avro_value_set_enum(dst, k));
        return SHE_OK;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        size_t n = 0;
        AVRO_OK(r, field, avro_value_get_size(src, &n));
        for (size_t i = 0; i < n; i++) {
            avro_value_t se, de;
            const char *key = NULL;
            AVRO_OK(r, field, avro_value_get_by_index(src, i, &se, &key));
            if (dt == AVRO_ARRAY)
                AVRO_OK(r, field, avro_value_append(dst, &de, NULL));
            else
                AVRO_OK(r, field, avro_value_add(dst, key, &de, NULL, NULL));
            SHE_TRY(resolve_value(r, &de, &se, field, depth + 1));
        }
        return SHE_OK;
    }
    case AVRO_RECORD: {
        avro_schema_t ds = avro_value_get_schema(dst);
        const json_t *fields = json_object_get(named_json(r->reader, ds), "fields");
        for (size_t i = 0; i < avro_schema_record_size(ds); i++) {
            const char *name = avro_schema_record_field_name(ds, (int)i);
            avro_value_t df, sf;
            AVRO_OK(r, name, avro_value_get_by_index(dst, i, &df, NULL));
            if (avro_schema_record_field_get_index(avro_value_get_schema(src), name) >= 0) {
                AVRO_OK(r, name, avro_value_get_by_name(src, name, &sf, NULL));
                SHE_TRY(resolve_value(r, &df, &sf, name, depth + 1));
            } else { /* a field the writer did not have */
                const json_t *def = json_object_get(json_array_get(fields, i), "default");
                if (!def)
                    return resolve_fail(r, name, "the writer has no such field and the reader "
                                        "no default");
                SHE_TRY(set_default(r, &df, def, name, depth + 1));
            }
        }
        return SHE_OK;
    }
    default:
        return resolve_fail(r, field, "type %s not supported", avro_schema_type_name(
                                                                   avro_value_get_schema(dst)));
    }
}

/* Sets dst to a schema default given in JSON, as the specification encodes defaults
 * (bytes and fixed as strings of code points 0-255, a union's default for its first branch). */
static she_err_t set_default(resolve_t *r, avro_value_t *dst, const json_t *def,
                             const char *field, int depth) {
    if (depth > MAX_DEPTH)
        return resolve_fail(r, field, "default nested deeper than %d", MAX_DEPTH);
    avro_schema_t ds = avro_value_get_schema(dst);
    switch (avro_value_get_type(dst)) {
    case AVRO_NULL:
        if (json_is_null(def))
            return avro_value_set_null(dst) == 0 ? SHE_OK : resolve_fail(r, field, "null");
        break;
    case AVRO_BOOLEAN:
        if (json_is_boolean(def)) {
            AVRO_OK(r, field, avro_value_set_boolean(dst, json_is_true(def)));
            return SHE_OK;
        }
        break;
    case AVRO_INT32:
        if (json_is_integer(def)) {
            AVRO_OK(r, field, avro_value_set_int(dst, (int32_t)json_integer_value(def)));
            return SHE_OK;
        }
        break;
    case AVRO_INT64:
        if (json_is_integer(def)) {
            AVRO_OK(r, field, avro_value_set_long(dst, (int64_t)json_integer_value(def)));
            return SHE_OK;
        }
        break;
    case AVRO_FLOAT:
        if (json_is_number(def)) {
            AVRO_OK(r, field, avro_value_set_float(dst, (float)json_number_value(def)));
            return SHE_OK;
        }
        break;
    case AVRO_DOUBLE:
        if (json_is_number(def)) {
            AVRO_OK(r, field, avro_value_set_double(dst, json_number_value(def)));
            return SHE_OK;
        }
        break;
    case AVRO_STRING:
        if (json_is_string(def)) {
            AVRO_OK(r, field, avro_value_set_string_len(dst, json_string_value(def),
                                                        json_string_length(def) + 1));
            return SHE_OK;
        }
        break;
    case AVRO_BYTES:
    case AVRO_FIXED:
        if (json_is_string(def)) {
            /* Code points 0-255 of the UTF-8 string, one byte each. */
            const uint8_t *s = (const uint8_t *)json_string_value(def);
            size_t n = json_string_length(def), k = 0;
            uint8_t *b = malloc(n + 1);
            SHE_CHECK_ALLOC(b);
            for (size_t i = 0; i < n; i++, k++) {
                if (s[i] >= 0xc4 || (s[i] >= 0x80 && i + 1 >= n)) {
                    free(b);
                    return resolve_fail(r, field, "bytes default has a code point above 255");
                }
                b[k] = s[i] < 0x80 ? s[i] : (uint8_t)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
                i += s[i] >= 0x80;
            }
            int rv = avro_value_get_type(dst) == AVRO_BYTES
                         ? avro_value_set_bytes(dst, b, k)
                         : ((int64_t)k == avro_schema_fixed_size(ds)
                                ? avro_value_set_fixed(dst, b, k)
                                : EINVAL);
            free(b);
            AVRO_OK(r, field, rv);
            return SHE_OK;
        }
        break;
    case AVRO_ENUM:
        if (json_is_string(def)) {
            int k = avro_schema_enum_get_by_name(ds, json_string_value(def));
            if (k < 0)
                return resolve_fail(r, field, "default symbol %s not in the enum",
                                    json_string_value(def));
            AVRO_OK(r, field, avro_value_set_enum(dst, k));
            return SHE_OK;
        }
        break;
    case AVRO_UNION: {
        avro_value_t branch;
        AVRO_OK(r, field, avro_value_set_branch(dst, 0, &branch));
        return set_default(r, &branch, def, field, depth + 1);
    }
    case AVRO_ARRAY:
        if (json_is_array(def)) {
            for (size_t i = 0; i < json_array_size(def); i++) {
                avro_value_t e;
                AVRO_OK(r, field, avro_value_append(dst, &e, NULL));
                SHE_TRY(set_default(r, &e, json_array_get(def, i), field, depth + 1));
            }
            return SHE_OK;
        }
        break;
    case AVRO_MAP:
        if (json_is_object(def)) {
            const char *key;
            const json_t *v;
            json_object_foreach((json_t *)def, key, v) {
                avro_value_t e;
                AVRO_OK(r, field, avro_value_add(dst, key, &e, NULL, NULL));
                SHE_TRY(set_default(r, &e, v, field, depth + 1));
            }
            return SHE_OK;
        }
        break;
    case AVRO_RECORD:
        if (json_is_object(def)) {
            const json_t *fields = json_object_get(named_json(r->reader, ds), "fields");
            for (size_t i = 0; i < avro_schema_record_size(ds); i++) {
                const char *name = avro_schema_record_field_name(ds, (int)i);
                const json_t *v = json_object_get(def, name);
                if (!v)
                    v = json_object_get(json_array_get(fields, i), "default");
                if (!v)
                    return resolve_fail(r, name, "record default without this field");
                avro_value_t f;
                AVRO_OK(r, name, avro_value_get_by_index(dst, i, &f, NULL));
                SHE_TRY(set_default(r, &f, v, name, depth + 1));
            }
            return SHE_OK;
        }
        break;
    default:
        break;
    }
    return resolve_fail(r, field, "default value does not fit type %s", avro_schema_type_name(ds));
}

/* ---- decoding ---- */

she_err_t she_avro_codec_decode(she_avro_codec_t *ac, const char *name, const uint8_t *buf,
                                size_t len, avro_value_t **value, int *writer_version,
                                char *errstr, size_t errstr_size) {
    *value = NULL;
    uint64_t fp = 0;
    SHE_TRY(she_avro_peek(buf, len, &fp, errstr, errstr_size));
    entry_t *w = find_fingerprint(ac, fp);
    if (!w)
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                        "unknown schema fingerprint %016" PRIx64 " (bytes 2-9)%s%s", fp,
                        name ? ", expected a " : "", name ? name : "");
    entry_t *r = w->reader;
    if (!r)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%s (%s) has no current schema to read it as", w->name, w->origin);
    if (name && strcmp(name, r->name) != 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "message is a %s (fingerprint %016" PRIx64 "), expected a %s", w->name,
                        fp, name);
    check_t c = {.buf = buf, .len = len, .pos = SHE_AVRO_HEADER_SIZE, .record = w->name,
                 .errstr = errstr, .errstr_size = errstr_size};
    SHE_TRY(check_value(&c, w->schema));
    if (c.pos != len)
        return check_fail(&c, c.pos, "%zu trailing bytes after the record", len - c.pos);

    avro_reader_memory_set_source(ac->reader, (const char *)buf + SHE_AVRO_HEADER_SIZE,
                                  (int64_t)(len - SHE_AVRO_HEADER_SIZE));
    if (avro_value_read(ac->reader, &w->value) != 0)
        return she_errf(SHE_ERR_AVRO, errstr, errstr_size, "%s: Avro C: %s", w->name,
                        avro_strerror());
    if (w != r) {
        resolve_t res = {.reader = r, .errstr = errstr, .errstr_size = errstr_size};
        avro_value_reset(&r->value);
        SHE_TRY(resolve_value(&res, &r->value, &w->value, w->name, 0));
    }
    if (writer_version)
        *writer_version = w->version;
    *value = &r->value;
    return SHE_OK;
}
