/* dataset.c -- in-memory sample sets, the split by query, hashing and shuffling. */
#include "dataset.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- hashing and random numbers ---- */

uint64_t she_hash64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t she_hash_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void she_rng_seed(she_rng_t *rng, uint64_t seed) { rng->state = seed; }

uint64_t she_rng_next(she_rng_t *rng) {
    rng->state += 0x9e3779b97f4a7c15ull;
    return she_hash_mix(rng->state);
}

double she_rng_uniform(she_rng_t *rng) { return (she_rng_next(rng) >> 11) * 0x1.0p-53; }

uint32_t she_rng_below(she_rng_t *rng, uint32_t n) {
    SHE_ASSERT(n > 0);
    uint64_t m = (uint64_t)(uint32_t)she_rng_next(rng) * n;
    if ((uint32_t)m < n) {
        uint32_t threshold = -n % n;
        while ((uint32_t)m < threshold)
            m = (uint64_t)(uint32_t)she_rng_next(rng) * n;
    }
    return (uint32_t)(m >> 32);
}

void she_shuffle_ints(int *v, size_t n, she_rng_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = she_rng_below(rng, (uint32_t)i);
        int t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* ---- the dataset ---- */

she_dataset_t *she_dataset_new(void) {
    she_dataset_t *ds = calloc(1, sizeof(*ds));
    SHE_CHECK_ALLOC(ds);
    return ds;
}

void she_dataset_free(she_dataset_t *ds) {
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++)
        she_sample_clear(&ds->samples[i]);
    free(ds->samples);
    free(ds);
}

static she_sample_t *grow(she_dataset_t *ds) {
    if (ds->n == ds->cap) {
        ds->cap = ds->cap ? ds->cap * 2 : 256;
        she_sample_t *grown = realloc(ds->samples, ds->cap * sizeof(*grown));
        SHE_CHECK_ALLOC(grown);
        ds->samples = grown;
    }
    return &ds->samples[ds->n++];
}

void she_dataset_take(she_dataset_t *ds, she_sample_t *s) {
    *grow(ds) = *s;
    memset(s, 0, sizeof(*s));
}

void she_dataset_append_copy(she_dataset_t *ds, const she_sample_t *s) {
    she_sample_copy(grow(ds), s);
}

static she_err_t take_sample(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    she_dataset_take(opaque, s);
    return SHE_OK;
}

she_err_t she_dataset_load(she_dataset_t *ds, const char *path, const she_reader_opts_t *opts,
                           she_reader_stats_t *stats, char *errstr, size_t errstr_size) {
    return she_reader_read_file(path, opts, take_sample, ds, stats, errstr, errstr_size);
}

she_err_t she_outfile_open(she_outfile_t *of, const char *path, char *errstr,
                           size_t errstr_size) {
    memset(of, 0, sizeof(*of));
    of->is_stdout = strcmp(path, "-") == 0;
    snprintf(of->path, sizeof(of->path), "%s", path);
    snprintf(of->tmp, sizeof(of->tmp), "%s.tmp.%d", path, (int)getpid());
    of->f = of->is_stdout ? stdout : fopen(of->tmp, "w");
    if (!of->f)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write '%s': %s", of->tmp,
                        strerror(errno));
    return SHE_OK;
}

she_err_t she_outfile_close(she_outfile_t *of, int keep, char *errstr, size_t errstr_size) {
    if (!of->f)
        return SHE_OK;
    she_err_t err = SHE_OK;
    if (keep && fflush(of->f) != 0)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write '%s': %s", of->path,
                       strerror(errno));
    if (!of->is_stdout) {
        if (fclose(of->f) != 0 && keep && err == SHE_OK)
            err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write '%s': %s", of->tmp,
                           strerror(errno));
        if (keep && err == SHE_OK && rename(of->tmp, of->path) != 0)
            err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot rename '%s' to '%s': %s",
                           of->tmp, of->path, strerror(errno));
        if (!keep || err != SHE_OK)
            unlink(of->tmp);
    }
    of->f = NULL;
    return err;
}

she_err_t she_dataset_save_jsonl(const she_dataset_t *ds, const char *path, char *errstr,
                                 size_t errstr_size) {
    she_outfile_t of;
    SHE_TRY(she_outfile_open(&of, path, errstr, errstr_size));
    she_err_t err = SHE_OK;
    for (size_t i = 0; i < ds->n && err == SHE_OK; i++)
        err = she_sample_write_jsonl(of.f, &ds->samples[i], errstr, errstr_size);
    if (err != SHE_OK) {
        she_outfile_close(&of, 0, NULL, 0);
        return err;
    }
    return she_outfile_close(&of, 1, errstr, errstr_size);
}

void she_dataset_shuffle(she_dataset_t *ds, she_rng_t *rng) {
    for (size_t i = ds->n; i > 1; i--) {
        size_t j = she_rng_below(rng, (uint32_t)i);
        she_sample_t t = ds->samples[i - 1];
        ds->samples[i - 1] = ds->samples[j];
        ds->samples[j] = t;
    }
}

/* ---- split by query ---- */

char *she_query_normalize(const char *query) {
    size_t n = strlen(query);
    char *out = malloc(n + 1);
    SHE_CHECK_ALLOC(out);
    size_t k = 0;
    int pending_space = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)query[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            pending_space = k > 0;
            continue;
        }
        if (pending_space)
            out[k++] = ' ';
        pending_space = 0;
        out[k++] = (char)(c < 0x80 ? tolower(c) : c);
    }
    out[k] = '\0';
    return out;
}

int she_split_is_validation(const char *query, double val_fraction, uint64_t seed) {
    char *norm = she_query_normalize(query);
    uint64_t h = she_hash_mix(she_hash64(norm, strlen(norm)) ^ she_hash_mix(seed));
    free(norm);
    return (h >> 11) * 0x1.0p-53 < val_fraction;
}

void she_dataset_split_by_query(const she_dataset_t *ds, double val_fraction, uint64_t seed,
                                she_dataset_t *train, she_dataset_t *val) {
    for (size_t i = 0; i < ds->n; i++) {
        const she_sample_t *s = &ds->samples[i];
        she_dataset_t *side = she_split_is_validation(s->query, val_fraction, seed) ? val : train;
        if (side)
            she_dataset_append_copy(side, s);
    }
}
