/* tokenizer.h -- byte-level BPE tokenizer stored in Hugging Face `tokenizer.json` format.
 *
 * What it does: trains a byte-level BPE vocabulary from a corpus, encodes any byte string to
 * token ids and decodes ids back to the exact bytes (the round trip is lossless for every byte
 * string, invalid UTF-8 included, because the base vocabulary holds all 256 bytes), and loads /
 * saves the tokenizer as a `tokenizer.json` that HF `tokenizers` (and so
 * `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`) loads and encodes identically.
 *
 * The pipeline, chosen so that C can reproduce HF bit for bit:
 *   1. special tokens (HF `added_tokens`, all `special: true`, `normalized: false`) that appear
 *      literally in the input are cut out first, leftmost-longest, as HF's added vocabulary does;
 *      she_tokenizer_encode() can turn this off (HF `encode_special_tokens = True`);
 *   2. no normalizer;
 *   3. pre-tokenizer `Sequence[Split(Regex(SHE_TOKENIZER_SPLIT_REGEX), "isolated"),
 *      ByteLevel(add_prefix_space=false, use_regex=false)]`.  The regex is GPT-2's with every
 *      class written out in ASCII, so Oniguruma's Unicode `\s`, `\p{L}`, `\p{N}` never enter: a
 *      non-ASCII character (and in C any byte >= 0x80, which is how invalid UTF-8 is handled)
 *      counts as "other", like punctuation;
 *   4. model BPE (no unk, `byte_fallback: false`, no dropout, no subword prefix/suffix), merged
 *      with HF's algorithm (lowest merge rank first, then leftmost position);
 *   5. decoder ByteLevel.  HF's decode applies a lossy UTF-8 conversion; ours returns raw bytes.
 *
 * What it does not do: normalization, truncation/padding, post-processing (BOS/EOS insertion is
 * the caller's job), non-special added tokens, or loading tokenizer.json files that use any other
 * pipeline (those are rejected on load with a message naming what differs).
 *
 * Ids: training puts the special tokens at ids 0..n_special-1 in the order given, the 256 bytes
 * at n_special..n_special+255 in byte order, then one id per learned token.
 *
 * Thread safety: a tokenizer is immutable once trained or loaded; encode/decode/lookup may run
 * concurrently from any number of threads.  There is deliberately no shared word cache: without
 * one, encoding already runs at about 30 MB/s on one core (measured on 20 MB of Python sources
 * and licence texts with 4096 ids, which training learns from that corpus in about 0.3 s).
 *
 * Checked against HF tokenizers 0.22.1 (tests/test_tokenizer.c, golden fixture) and loaded with
 * transformers 4.57.1 PreTrainedTokenizerFast. */
#ifndef SHE_TOKENIZER_H
#define SHE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The Split pre-tokenizer pattern as written into tokenizer.json (Oniguruma syntax). */
#define SHE_TOKENIZER_SPLIT_REGEX                                                        \
    "'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\\x09-\\x0D A-Za-z0-9]+"             \
    "|[\\x09-\\x0D ]+(?![^\\x09-\\x0D ])|[\\x09-\\x0D ]+"

typedef struct she_tokenizer_s she_tokenizer_t;

/* Trains a tokenizer on texts[0..n) (text i is lens[i] bytes, or NUL-terminated when lens is
 * NULL) up to vocab_size ids in all, special tokens and the 256 bytes included.
 * special[0..n_special) are the special tokens: non-empty, distinct, valid UTF-8, and not one
 * character of the byte-level alphabet such as "a" (a byte token already has that vocabulary
 * key); their literal occurrences in the corpus are cut out and not learned from.  Merges are
 * learned greedily: the most frequent adjacent pair of the pre-token "words" is merged, ties
 * going to the pair with the smaller (left id, right id); training stops early when no pair
 * occurs at least twice, so the result may be smaller than vocab_size.  A merge whose result
 * would spell a special token is never made.  On success *out is a new tokenizer (free with
 * she_tokenizer_free()); on failure *out is NULL and errstr says why (SHE_ERR_INVALID for bad
 * arguments). */
she_err_t she_tokenizer_train(const char *const *texts, const size_t *lens, size_t n,
                              int vocab_size, const char *const *special, int n_special,
                              she_tokenizer_t **out, char *errstr, size_t errstr_size);

/* Loads and validates a tokenizer.json (see the pipeline above).  Fails with SHE_ERR_IO when the
 * file cannot be read, SHE_ERR_FORMAT when it is not valid JSON or not a tokenizer this module
 * can reproduce (wrong model type or pipeline, vocabulary ids not 0..N-1, a missing byte token,
 * a merge naming an unknown token, ...); errstr names the file and the offending entry.  On
 * failure *out is NULL. */
she_err_t she_tokenizer_load(const char *path, she_tokenizer_t **out, char *errstr,
                             size_t errstr_size);

/* Writes tokenizer.json (pretty-printed, merges as "left right" strings, which every HF
 * tokenizers version reads) to path.tmp and renames it over path, so a crash never leaves a
 * truncated file.  SHE_ERR_IO on failure, with path left untouched. */
she_err_t she_tokenizer_save(const she_tokenizer_t *tok, const char *path, char *errstr,
                             size_t errstr_size);

void she_tokenizer_free(she_tokenizer_t *tok);

/* Encodes bytes[0..len) (any bytes).  split_special = 1 turns literal special-token text into
 * the special ids (HF's default); 0 encodes it as ordinary bytes.  *n_ids receives the number
 * of ids the input encodes to; the first min(*n_ids, max_ids) are written to ids.  Returns
 * SHE_ERR_INVALID when they do not all fit (the prefix written is still valid, so a caller may
 * treat it as truncation) or when len > INT_MAX. */
she_err_t she_tokenizer_encode(const she_tokenizer_t *tok, const char *bytes, size_t len,
                               int split_special, int32_t *ids, int max_ids, int *n_ids,
                               char *errstr, size_t errstr_size);

/* Decodes ids[0..n_ids) to the bytes they stand for (special tokens as their text, or nothing
 * when skip_special = 1).  *len receives the decoded length; the first min(*len, cap) bytes are
 * written to out, which is not NUL-terminated.  Returns SHE_ERR_INVALID for an id outside the
 * vocabulary (nothing useful is written then) or when the bytes do not fit in cap. */
she_err_t she_tokenizer_decode(const she_tokenizer_t *tok, const int32_t *ids, int n_ids,
                               int skip_special, char *out, size_t cap, size_t *len,
                               char *errstr, size_t errstr_size);

/* Number of ids (special tokens included); valid ids are 0..size-1. */
int she_tokenizer_vocab_size(const she_tokenizer_t *tok);

/* Id of a special token by its text, else of the ordinary token spelling exactly these bytes
 * (NUL-terminated); -1 when there is none. */
int32_t she_tokenizer_token_id(const she_tokenizer_t *tok, const char *text);

/* 1 if id is a special token, 0 otherwise (also for ids out of range). */
int she_tokenizer_is_special(const she_tokenizer_t *tok, int32_t id);

#endif
