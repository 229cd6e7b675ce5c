/* dataset.h -- an in-memory set of samples, the train/validation split by query, and the
 * seeded hashing, random numbers and shuffling that the data tools share.
 *
 * What it does: holds samples loaded with the readers (reader.h) or made by the generator,
 * writes them back as JSON Lines, splits them by query -- never by row -- so that no query
 * is on both sides, and shuffles them reproducibly.
 *
 * The split is a pure function of (normalised query, seed, fraction): a query goes to
 * validation when a 53-bit uniform drawn from the hash of both is below the fraction.  So
 * every sample of one query lands on the same side, the same query lands on the same side in
 * any file and in a stream (she_split_is_validation needs nothing but the query), and the
 * share of *queries* in validation is the fraction up to binomial noise (sd sqrt(f(1-f)/Q)
 * for Q distinct queries, e.g. 0.4 points for Home Depot's 9,489).  Normalisation: ASCII
 * lower case, runs of white space made one space, leading and trailing space removed (no
 * Unicode case folding).
 *
 * What it does not do: stream (see reader.h for that), deduplicate, or balance grades. */
#ifndef SHE_DATASET_H
#define SHE_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "reader.h"
#include "sample.h"

/* ---- hashing and random numbers ---- */
/* 64-bit FNV-1a of n bytes. */
uint64_t she_hash64(const void *data, size_t n);
/* splitmix64's finaliser: a bijective mix of a 64-bit value. */
uint64_t she_hash_mix(uint64_t x);

/* splitmix64 stream: small, fast and the same on every platform. */
typedef struct she_rng {
    uint64_t state;
} she_rng_t;

void she_rng_seed(she_rng_t *rng, uint64_t seed);
uint64_t she_rng_next(she_rng_t *rng);
/* Uniform in [0, 1) with 53 random bits. */
double she_rng_uniform(she_rng_t *rng);
/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift with rejection: unbiased). */
uint32_t she_rng_below(she_rng_t *rng, uint32_t n);
/* Fisher-Yates shuffle of n ints. */
void she_shuffle_ints(int *v, size_t n, she_rng_t *rng);

/* ---- the dataset ---- */
typedef struct she_dataset {
    she_sample_t *samples; /* (n) owned */
    size_t n, cap;
} she_dataset_t;

/* Empty set.  Never returns NULL.  Free with she_dataset_free (accepts NULL). */
she_dataset_t *she_dataset_new(void);
void she_dataset_free(she_dataset_t *ds);
/* Moves *s into the set (takes ownership of its fields) and zeroes *s. */
void she_dataset_take(she_dataset_t *ds, she_sample_t *s);
/* Appends a deep copy of *s. */
void she_dataset_append_copy(she_dataset_t *ds, const she_sample_t *s);

/* Reads a file with she_reader_read_file and appends every good sample.  Bad rows are
 * skipped and counted in stats (may be NULL).  On error the samples read so far stay in ds. */
she_err_t she_dataset_load(she_dataset_t *ds, const char *path, const she_reader_opts_t *opts,
                           she_reader_stats_t *stats, char *errstr, size_t errstr_size);
/* An output file written under a temporary name and renamed when closed with keep = 1, so a
 * reader never sees half a file; path "-" is stdout (flushed, not closed). */
typedef struct she_outfile {
    FILE *f;
    int is_stdout;
    char path[4096], tmp[4160];
} she_outfile_t;

/* SHE_ERR_IO when the temporary file cannot be created. */
she_err_t she_outfile_open(she_outfile_t *of, const char *path, char *errstr,
                           size_t errstr_size);
/* keep = 1: flush, close and rename (SHE_ERR_IO on failure, and no file is left); keep = 0:
 * close and remove the temporary file (returns SHE_OK). */
she_err_t she_outfile_close(she_outfile_t *of, int keep, char *errstr, size_t errstr_size);

/* Writes every sample as JSON Lines to path ("-" = stdout) through a she_outfile_t.
 * SHE_ERR_IO / SHE_ERR_INVALID (a string that is not UTF-8) leave no file behind. */
she_err_t she_dataset_save_jsonl(const she_dataset_t *ds, const char *path, char *errstr,
                                 size_t errstr_size);

/* Reorders the samples with a Fisher-Yates shuffle. */
void she_dataset_shuffle(she_dataset_t *ds, she_rng_t *rng);

/* ---- split by query ---- */
/* Normalised query (see above) into a malloc'd string; free() it. */
char *she_query_normalize(const char *query);
/* 1 when the query belongs to validation for this seed and fraction in [0, 1]. */
int she_split_is_validation(const char *query, double val_fraction, uint64_t seed);
/* Deep-copies each sample of ds into train or val (both appended to; either may be NULL to
 * drop that side) by she_split_is_validation. */
void she_dataset_split_by_query(const she_dataset_t *ds, double val_fraction, uint64_t seed,
                                she_dataset_t *train, she_dataset_t *val);

#endif
