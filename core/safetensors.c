/* safetensors.c -- safetensors parsing, validation, F32 conversion and F32 writing
 * (see safetensors.h for what is checked). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host, as the file format does"
#endif

/* Every dtype the reference implementation knows with a whole number of bytes per element;
 * parsing accepts them all so files with integer side tensors can still be indexed. */
typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST__COUNT
} st_dtype_t;

static const struct {
    const char *name;
    unsigned size;
} st_dtypes[ST__COUNT] = {
    [ST_BOOL] = {"BOOL", 1},      [ST_U8] = {"U8", 1},          [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},        [ST_F16] = {"F16", 2},        [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},        [ST_U32] = {"U32", 4},        [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},        [ST_I64] = {"I64", 8},        [ST_U64] = {"U64", 8},
};

typedef struct st_tensor {
    const char *name; /* a key of root, owned by it */
    st_dtype_t dtype;
    int ndim;
    int64_t shape[SHE_SAFETENSORS_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* byte range inside the data buffer */
} st_tensor_t;

struct she_safetensors {
    json_t *root;          /* parsed header; owns the names and metadata strings */
    const json_t *meta;    /* root["__metadata__"] or NULL */
    const uint8_t *data;   /* the byte buffer after the header (borrowed) */
    st_tensor_t *tensors;  /* (n) in data-offset order */
    st_tensor_t **by_name; /* (n) sorted by name, for she_safetensors_find */
    int n;
};

/* "[2, 3]" into buf, for messages. */
static const char *fmt_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && k < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < size)
        snprintf(buf + k, size - k, "]");
    return buf;
}

static int cmp_offset(const void *a, const void *b) {
    const st_tensor_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(st_tensor_t *const *)a)->name, (*(st_tensor_t *const *)b)->name);
}

/* A non-negative JSON integer, or -1. */
static int64_t json_count(const json_t *v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return (int64_t)json_integer_value(v);
}

static she_err_t parse_meta(const json_t *meta, char *errstr, size_t errstr_size) {
    if (!json_is_object(meta))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "\"__metadata__\" is not an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        if (!json_is_string(v))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "\"__metadata__\" value of '%s' is not a string", key);
    }
    return SHE_OK;
}

static she_err_t parse_tensor(const char *name, const json_t *v, uint64_t data_len, st_tensor_t *t,
                              char *errstr, size_t errstr_size) {
    t->name = name;
    if (!json_is_object(v))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "tensor '%s': entry is not an object",
                        name);
    const json_t *dtype = json_object_get(v, "dtype");
    if (!json_is_string(dtype))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': field 'dtype' is missing or not a string", name);
    int d = 0;
    while (d < ST__COUNT && strcmp(st_dtypes[d].name, json_string_value(dtype)) != 0)
        d++;
    if (d == ST__COUNT)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "tensor '%s': unsupported dtype '%s'",
                        name, json_string_value(dtype));
    t->dtype = (st_dtype_t)d;

    const json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > SHE_SAFETENSORS_MAX_DIMS)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': field 'shape' is missing, not an array or has more than %d "
                        "dimensions", name, SHE_SAFETENSORS_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    int overflow = 0;
    for (int k = 0; k < t->ndim; k++) {
        t->shape[k] = json_count(json_array_get(shape, (size_t)k));
        if (t->shape[k] < 0)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "tensor '%s': field 'shape' holds something other than a non-negative "
                            "integer at index %d", name, k);
        overflow |= __builtin_mul_overflow(t->numel, (uint64_t)t->shape[k], &t->numel);
    }
    uint64_t nbytes;
    overflow |= __builtin_mul_overflow(t->numel, (uint64_t)st_dtypes[d].size, &nbytes);

    const json_t *offs = json_object_get(v, "data_offsets");
    int64_t begin = -1, end = -1;
    if (json_is_array(offs) && json_array_size(offs) == 2) {
        begin = json_count(json_array_get(offs, 0));
        end = json_count(json_array_get(offs, 1));
    }
    if (begin < 0 || end < begin)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': field 'data_offsets' is not [begin, end] with "
                        "0 <= begin <= end", name);
    t->begin = (uint64_t)begin;
    t->end = (uint64_t)end;
    char sbuf[160];
    fmt_shape(sbuf, sizeof(sbuf), t->ndim, t->shape);
    if (overflow)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': shape %s needs more than 2^64 bytes", name, sbuf);
    if (t->end - t->begin != nbytes)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but dtype %s "
                        "with shape %s needs %llu", name, (unsigned long long)t->begin,
                        (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
                        st_dtypes[d].name, sbuf, (unsigned long long)nbytes);
    if (t->end > data_len)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "tensor '%s': data_offsets [%llu, %llu] out of range: the data buffer "
                        "holds %llu bytes (truncated file?)", name, (unsigned long long)t->begin,
                        (unsigned long long)t->end, (unsigned long long)data_len);
    return SHE_OK;
}

/* The reference refuses buffers with overlaps, holes or trailing bytes; so do we. */
static she_err_t check_tiling(const st_tensor_t *ts, int n, uint64_t data_len, char *errstr,
                              size_t errstr_size) {
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].begin < pos)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' [%llu, "
                            "%llu]", ts[i].name, (unsigned long long)ts[i].begin,
                            (unsigned long long)ts[i].end, ts[i - 1].name,
                            (unsigned long long)ts[i - 1].begin, (unsigned long long)ts[i - 1].end);
        if (ts[i].begin > pos)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "tensor '%s': data_offsets [%llu, %llu] leave bytes [%llu, %llu) of "
                            "the buffer unused", ts[i].name, (unsigned long long)ts[i].begin,
                            (unsigned long long)ts[i].end, (unsigned long long)pos,
                            (unsigned long long)ts[i].begin);
        pos = ts[i].end;
    }
    if (pos != data_len)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "data buffer holds %llu bytes but the tensors cover %llu",
                        (unsigned long long)data_len, (unsigned long long)pos);
    return SHE_OK;
}

she_err_t she_safetensors_parse(const uint8_t *buf, size_t len, she_safetensors_t **out,
                                char *errstr, size_t errstr_size) {
    *out = NULL;
    if (len < 8)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > SHE_SAFETENSORS_MAX_HEADER)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "header length %llu exceeds the %llu-byte limit", (unsigned long long)hlen,
                        SHE_SAFETENSORS_MAX_HEADER);
    if (hlen > len - 8)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "header length %llu exceeds the %zu bytes after the length field "
                        "(truncated file?)", (unsigned long long)hlen, len - 8);
    if (hlen == 0 || buf[8] != '{')
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "header does not start with '{'");

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "header JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    /* It starts with '{' and jansson refuses trailing text, so root is an object. */
    size_t cap = json_object_size(root);
    she_safetensors_t *st = calloc(1, sizeof(*st));
    if (!st) {
        json_decref(root);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    st->root = root;
    st->tensors = calloc(cap + 1, sizeof(*st->tensors));
    st->by_name = calloc(cap + 1, sizeof(*st->by_name));
    if (!st->tensors || !st->by_name) {
        she_safetensors_free(st);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "out of memory indexing %zu tensors",
                        cap);
    }
    st->data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;

    she_err_t err = SHE_OK;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (err != SHE_OK)
            break;
        if (strcmp(key, "__metadata__") == 0) {
            st->meta = v;
            err = parse_meta(v, errstr, errstr_size);
        } else {
            err = parse_tensor(key, v, data_len, &st->tensors[st->n], errstr, errstr_size);
            st->n++;
        }
    }
    if (err == SHE_OK) {
        qsort(st->tensors, (size_t)st->n, sizeof(*st->tensors), cmp_offset);
        err = check_tiling(st->tensors, st->n, data_len, errstr, errstr_size);
    }
    if (err != SHE_OK) {
        she_safetensors_free(st);
        return err;
    }
    for (int i = 0; i < st->n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->n, sizeof(*st->by_name), cmp_name);
    *out = st;
    return SHE_OK;
}

void she_safetensors_free(she_safetensors_t *st) {
    if (!st)
        return;
    json_decref(st->root);
    free(st->tensors);
    free(st->by_name);
    free(st);
}

int she_safetensors_count(const she_safetensors_t *st) { return st->n; }

int she_safetensors_find(const she_safetensors_t *st, const char *name) {
    st_tensor_t key = {.name = name}, *pkey = &key;
    st_tensor_t **hit = bsearch(&pkey, st->by_name, (size_t)st->n, sizeof(*st->by_name), cmp_name);
    return hit ? (int)(*hit - st->tensors) : -1;
}

const char *she_safetensors_name(const she_safetensors_t *st, int i) {
    SHE_ASSERT(i >= 0 && i < st->n);
    return st->tensors[i].name;
}

const char *she_safetensors_dtype(const she_safetensors_t *st, int i) {
    SHE_ASSERT(i >= 0 && i < st->n);
    return st_dtypes[st->tensors[i].dtype].name;
}

int she_safetensors_shape(const she_safetensors_t *st, int i,
                          int64_t shape[SHE_SAFETENSORS_MAX_DIMS]) {
    SHE_ASSERT(i >= 0 && i < st->n);
    memcpy(shape, st->tensors[i].shape, sizeof(st->tensors[i].shape));
    return st->tensors[i].ndim;
}

uint64_t she_safetensors_numel(const she_safetensors_t *st, int i) {
    SHE_ASSERT(i >= 0 && i < st->n);
    return st->tensors[i].numel;
}

/* IEEE binary16 to binary32, exact for every input including subnormals, inf and NaN. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | man << 13;
    else if (exp == 0) {
        /* man * 2^-24 is exact in binary32 and always normal there. */
        float f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else
        bits = sign | (exp + 112) << 23 | man << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

she_err_t she_safetensors_to_f32(const she_safetensors_t *st, int i, float *dst, uint64_t numel,
                                 char *errstr, size_t errstr_size) {
    SHE_ASSERT(i >= 0 && i < st->n);
    const st_tensor_t *t = &st->tensors[i];
    if (numel != t->numel)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tensor '%s' has %llu elements, destination holds %llu", t->name,
                        (unsigned long long)t->numel, (unsigned long long)numel);
    const uint8_t *src = st->data + t->begin;
    uint16_t h;
    switch (t->dtype) {
    case ST_F32:
        if (numel > 0) /* dst may be NULL for an empty tensor */
            memcpy(dst, src, numel * 4);
        return SHE_OK;
    case ST_BF16:
        for (uint64_t k = 0; k < numel; k++) {
            memcpy(&h, src + 2 * k, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[k], &bits, 4);
        }
        return SHE_OK;
    case ST_F16:
        for (uint64_t k = 0; k < numel; k++) {
            memcpy(&h, src + 2 * k, 2);
            dst[k] = f16_to_f32(h);
        }
        return SHE_OK;
    default:
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "tensor '%s' has dtype %s, which cannot be converted to F32 "
                        "(F32, BF16 and F16 can)", t->name, st_dtypes[t->dtype].name);
    }
}

const char *she_safetensors_meta(const she_safetensors_t *st, const char *key) {
    return st->meta ? json_string_value(json_object_get(st->meta, key)) : NULL;
}

/* Matches the read side's view of an expected tensor: ndim 1..4, dims >= 0. */
static she_err_t ref_numel(const she_tensor_ref_t *t, uint64_t *numel, char *errstr,
                           size_t errstr_size) {
    if (!t->name || !t->name[0] || t->ndim < 1 || t->ndim > 4)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "tensor '%s': needs a non-empty name and 1..4 dimensions (has %d)",
                        t->name ? t->name : "(null)", t->ndim);
    *numel = 1;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || __builtin_mul_overflow(*numel, (uint64_t)t->shape[d], numel))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "tensor '%s': bad dimension %lld", t->name, (long long)t->shape[d]);
    return SHE_OK;
}

she_err_t she_safetensors_read(const char *path, const she_tensor_ref_t *expect, int n,
                               int allow_extra, char *errstr, size_t errstr_size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "%s: open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        she_err_t err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: fstat: %s", path,
                                 strerror(errno));
        close(fd);
        return err;
    }
    size_t len = (size_t)sb.st_size;
    /* mmap cannot map an empty file; parse reports it as too short. */
    const uint8_t *buf = NULL;
    if (len > 0) {
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            she_err_t err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: mmap: %s", path,
                                     strerror(errno));
            close(fd);
            return err;
        }
        buf = map;
    }
    close(fd);

    char msg[SHE_ERRSTR_SIZE];
    she_safetensors_t *st = NULL;
    she_err_t err = she_safetensors_parse(buf, len, &st, msg, sizeof(msg));
    int *slot = NULL; /* (n) index in st of expect[j] */
    char *seen = NULL;
    if (err == SHE_OK) {
        slot = calloc((size_t)n + 1, sizeof(*slot));
        seen = calloc((size_t)st->n + 1, 1);
        if (!slot || !seen)
            err = she_errf(SHE_ERR_NOMEM, msg, sizeof(msg), "out of memory");
    }
    /* Resolve every expected tensor before converting any, so a bad file costs no copying. */
    for (int j = 0; j < n && err == SHE_OK; j++) {
        uint64_t numel;
        char s1[160], s2[160];
        err = ref_numel(&expect[j], &numel, msg, sizeof(msg));
        if (err != SHE_OK)
            break;
        int i = she_safetensors_find(st, expect[j].name);
        const st_tensor_t *t = i >= 0 ? &st->tensors[i] : NULL;
        if (!t)
            err = she_errf(SHE_ERR_FORMAT, msg, sizeof(msg), "missing tensor '%s'",
                           expect[j].name);
        else if (seen[i])
            err = she_errf(SHE_ERR_INVALID, msg, sizeof(msg),
                           "tensor '%s' is expected twice", expect[j].name);
        else if (t->ndim != expect[j].ndim ||
                 memcmp(t->shape, expect[j].shape, sizeof(int64_t) * (size_t)t->ndim) != 0)
            err = she_errf(SHE_ERR_FORMAT, msg, sizeof(msg),
                           "tensor '%s' has shape %s, expected %s", t->name,
                           fmt_shape(s1, sizeof(s1), t->ndim, t->shape),
                           fmt_shape(s2, sizeof(s2), expect[j].ndim, expect[j].shape));
        else if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
            err = she_errf(SHE_ERR_FORMAT, msg, sizeof(msg),
                           "tensor '%s' has dtype %s; only F32, BF16 and F16 can be read",
                           t->name, st_dtypes[t->dtype].name);
        else {
            seen[i] = 1;
            slot[j] = i;
        }
    }
    for (int i = 0; err == SHE_OK && !allow_extra && i < st->n; i++)
        if (!seen[i])
            err = she_errf(SHE_ERR_FORMAT, msg, sizeof(msg), "unexpected tensor '%s'",
                           st->tensors[i].name);
    for (int j = 0; j < n && err == SHE_OK; j++)
        err = she_safetensors_to_f32(st, slot[j], expect[j].data, st->tensors[slot[j]].numel, msg,
                                     sizeof(msg));
    free(slot);
    free(seen);
    she_safetensors_free(st);
    if (buf)
        munmap((void *)buf, len);
    if (err != SHE_OK)
        return she_errf(err, errstr, errstr_size, "%s: %s", path, msg);
    return SHE_OK;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes; free with free(). */
static she_err_t build_header(const she_tensor_ref_t *tensors, int n, const char *const *meta_keys,
                              const char *const *meta_values, int n_meta, char **out,
                              size_t *out_len, char *errstr, size_t errstr_size) {
    json_t *root = json_object();
    SHE_CHECK_ALLOC(root);
    she_err_t err = SHE_OK;
    if (n_meta > 0) {
        json_t *meta = json_object();
        SHE_CHECK_ALLOC(meta);
        json_object_set_new(root, "__metadata__", meta);
        for (int k = 0; k < n_meta && err == SHE_OK; k++) {
            if (!meta_keys[k] || !meta_values[k] || json_object_get(meta, meta_keys[k]))
                err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                               "metadata entry %d: NULL or duplicate key or value", k);
            else if (json_object_set_new(meta, meta_keys[k], json_string(meta_values[k])) < 0)
                err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                               "metadata entry '%s': not valid UTF-8", meta_keys[k]);
        }
    }
    uint64_t offset = 0;
    for (int i = 0; i < n && err == SHE_OK; i++) {
        const she_tensor_ref_t *t = &tensors[i];
        uint64_t numel;
        err = ref_numel(t, &numel, errstr, errstr_size);
        if (err != SHE_OK)
            break;
        if (strcmp(t->name, "__metadata__") == 0 || json_object_get(root, t->name)) {
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "tensor name '%s' is reserved or used twice", t->name);
            break;
        }
        if (numel > 0 && !t->data) {
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "tensor '%s': data is NULL",
                           t->name);
            break;
        }
        json_t *shape = json_array();
        SHE_CHECK_ALLOC(shape);
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        /* Key order as the reference writes it: dtype, shape, data_offsets. */
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                                  "data_offsets", (json_int_t)offset,
                                  (json_int_t)(offset + 4 * numel));
        if (!entry || json_object_set_new(root, t->name, entry) < 0)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "tensor '%s': name is not valid UTF-8", t->name);
        offset += 4 * numel;
    }
    char *json = err == SHE_OK ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (err != SHE_OK)
        return err;
    SHE_CHECK_ALLOC(json);
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    char *hdr = realloc(json, padded);
    SHE_CHECK_ALLOC(hdr);
    memset(hdr + len, ' ', padded - len);
    *out = hdr;
    *out_len = padded;
    return SHE_OK;
}

she_err_t she_safetensors_write(const char *path, const she_tensor_ref_t *tensors, int n,
                                const char *const *meta_keys, const char *const *meta_values,
                                int n_meta, char *errstr, size_t errstr_size) {
    char *hdr;
    size_t hlen;
    SHE_TRY(build_header(tensors, n, meta_keys, meta_values, n_meta, &hdr, &hlen, errstr,
                         errstr_size));
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        free(hdr);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(hdr);
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: open: %s", tmp, strerror(errno));
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    free(hdr);
    for (int i = 0; i < n && ok; i++) {
        uint64_t numel = 0;
        ref_numel(&tensors[i], &numel, NULL, 0); /* cannot fail: build_header checked */
        ok = numel == 0 || fwrite(tensors[i].data, sizeof(float), numel, f) == numel;
    }
    /* fsync before rename: otherwise a crash could leave path naming an empty file. */
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) == 0)
        return SHE_OK;
    if (ok)
        saved = errno;
    unlink(tmp);
    return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: write: %s", path, strerror(saved));
}
