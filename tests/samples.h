/* samples.h -- generated samples held in memory for the tests (header-only, like test.h):
 * `she gen-data`'s generator into a growing array, and its release. */
#ifndef SHE_TESTS_SAMPLES_H
#define SHE_TESTS_SAMPLES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gendata.h"
#include "sample.h"

typedef struct samples {
    she_sample_t *v;
    int n;
} samples_t;

static she_err_t samples_take(she_sample_t *s, void *opaque, char *errstr, size_t errstr_size) {
    (void)errstr, (void)errstr_size;
    samples_t *ss = opaque;
    ss->v = realloc(ss->v, sizeof(*ss->v) * (size_t)(ss->n + 1));
    ss->v[ss->n++] = *s;
    memset(s, 0, sizeof(*s));
    return SHE_OK;
}

/* n samples of the default synthetic catalogue with this seed, appended to ss. */
static void gen_samples(samples_t *ss, int n, uint64_t seed) {
    char errstr[SHE_ERRSTR_SIZE];
    she_gendata_opts_t o;
    she_gendata_opts_default(&o);
    o.n_samples = n;
    o.seed = seed;
    if (she_gendata_run(&o, samples_take, ss, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "gen-data: %s\n", errstr);
        abort();
    }
}

static void free_samples(samples_t *ss) {
    for (int i = 0; i < ss->n; i++)
        she_sample_clear(&ss->v[i]);
    free(ss->v);
    ss->v = NULL;
    ss->n = 0;
}

#endif
