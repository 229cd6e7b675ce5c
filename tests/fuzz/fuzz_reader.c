/* fuzz_reader.c -- libFuzzer target for the CSV and JSON Lines readers.
 *
 * Feeds arbitrary bytes to a CSV reader and a JSON Lines reader, each twice: whole, and in
 * pieces whose sizes come from the input, and checks that both feedings give the same
 * samples and counts, that rows add up (ok + bad = rows), and that every sample has its
 * required fields and valid UTF-8.  Built with clang -fsanitize=fuzzer,address when
 * SHE_FUZZ=ON, and with fuzz_main.c as a replay test over tests/fuzz/corpus/reader otherwise. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads everything; returns a hash of the samples' fields (0 after a fatal error). */
static uint64_t run(const char *format, const uint8_t *data, size_t size, int chunked,
                    she_reader_stats_t *st) {
    char errstr[SHE_ERRSTR_SIZE];
    she_reader_opts_t o = {format, NULL, "lt1.5=L1,le2=L2,lt3=L3,else=L4"};
    she_reader_t *rd = NULL;
    SHE_ASSERT(she_reader_new("fuzz", &o, &rd, errstr, sizeof(errstr)) == SHE_OK);
    uint64_t h = 1;
    size_t off = 0;
    int fatal = 0;
    for (;;) {
        int last = off >= size;
        if (!last) {
            size_t n = chunked ? 1 + (size_t)data[off] % 7 : size;
            n = n < size - off ? n : size - off;
            she_reader_feed(rd, (const char *)data + off, n);
            off += n;
        } else {
            she_reader_finish(rd);
        }
        for (;;) {
            she_sample_t s = {0};
            int got = 0;
            if (she_reader_next(rd, &s, &got, errstr, sizeof(errstr)) != SHE_OK) {
                SHE_ASSERT(errstr[0] != '\0');
                fatal = 1;
                break;
            }
            if (!got)
                break;
            SHE_ASSERT(s.sample_id && s.query && s.item_title && s.query[0] && s.item_title[0]);
            SHE_ASSERT(she_utf8_valid_prefix(s.query, strlen(s.query)) == strlen(s.query));
            h = she_hash_mix(h ^ she_hash64(s.sample_id, strlen(s.sample_id)));
            h = she_hash_mix(h ^ she_hash64(s.query, strlen(s.query)));
            h = she_hash_mix(h ^ she_hash64(s.item_title, strlen(s.item_title)) ^ s.grade);
            she_sample_clear(&s);
        }
        if (last || fatal)
            break;
    }
    *st = *she_reader_stats(rd);
    SHE_ASSERT(st->n_ok + st->n_bad == st->n_rows);
    SHE_ASSERT(st->n_messages <= SHE_READER_MAX_MESSAGES);
    she_reader_free(rd);
    return fatal ? 0 : h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const formats[] = {"csv", "jsonl"};
    for (int i = 0; i < 2; i++) {
        she_reader_stats_t a, b;
        uint64_t ha = run(formats[i], data, size, 0, &a);
        uint64_t hb = run(formats[i], data, size, 1, &b);
        SHE_ASSERT(ha == hb && a.n_ok == b.n_ok && a.n_bad == b.n_bad);
    }
    return 0;
}
