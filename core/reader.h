/* reader.h -- read labelled (or unlabelled) search logs into she_sample_t: CSV (RFC 4180) and
 * JSON Lines, with a column mapping and a label mapping given as text, so any search log can
 * be read without code changes; and write samples as JSON Lines.
 *
 * What it does:
 *   - Push parser: the caller feeds bytes as they arrive (a file, a pipe, a file followed like
 *     `tail -f`) and pulls complete samples; she_reader_finish() says no more bytes will come.
 *     she_reader_read_file() drives it over a whole file or stdin.
 *   - A bad row is skipped and counted, never fatal: the stats keep the counts and the first
 *     SHE_READER_MAX_MESSAGES messages, each "FILE:LINE:COL: reason" (COL = 1-based byte
 *     column in that physical line) or "FILE:LINE: column N 'name': reason" for a bad value.
 *     Only what makes every row unreadable is fatal: a CSV header without a mapped column, or
 *     a malformed header.
 *   - CSV: header row required; quoted fields with embedded commas, newlines and "" escapes;
 *     LF or CRLF; a UTF-8 BOM is skipped; every record must have the header's field count; a
 *     quote inside an unquoted field is literal (as Python's csv module reads it).  After a
 *     syntax error (an unterminated quote, text after a closing quote) parsing resumes at the
 *     physical line after the bad record's first line, so one stray quote costs one row.
 *   - Every row is checked to be UTF-8 (no overlongs, surrogates or NUL bytes).
 *   - JSON Lines: one object per line (jansson); blank lines are skipped in both formats.
 *
 * What it does not do: other delimiters, unquoted multi-line fields, records longer than
 * SHE_READER_MAX_RECORD bytes (reported and skipped), Unicode normalisation.
 *
 * Fields (the left side of a column mapping; the name in parentheses is an alias):
 *   sample_id (id)          the row id; when absent or empty, "h" + 16 hex digits of a
 *                           64-bit FNV-1a hash of query + "\x1f" + (item_id or item_title)
 *   query                   required
 *   item_id
 *   item_title (title)      required
 *   item_desc (desc)
 *   item_attrs (attrs)      JSON: an object of strings (or numbers), or a string;
 *                           CSV: "key:value;key:value" (a value may not hold ';')
 *   query_type, domain
 *   grade (label)           passed through the label map
 *   query_category, query_attrs, item_category, item_gt_attrs (item_attrs_gt),
 *   cat_match, attr_match   step ground truth: "exact|partial|none", "match|partial|conflict|
 *                           none"; has_steps is set when a row holds any of these six.
 * Column mapping text: "field=column,field=column", e.g.
 *   "query=search_term,title=product_title,label=relevance,id=id,item_id=product_uid".
 * A given mapping is the whole mapping (fields it does not name are not read) and every column
 * it names must exist in a CSV header.  Without one, each field is read from the column (CSV)
 * or key (JSON) of its own name, when there is one -- the names she_sample_write_jsonl writes.
 *
 * Label map text: rules "CONDITION=GRADE" separated by commas, tried in order, first match
 * wins; GRADE is L1..L4.  CONDITION is
 *   ltX leX gtX geX eqX   the value is a number <, <=, >, >=, == X (e.g. "lt1.5")
 *   else                  any value
 *   anything else         a literal value, compared after trimming spaces; when both the rule
 *                         and the value are numbers they are compared as numbers ("3" = "3.0")
 * e.g. "lt1.5=L1,le2=L2,lt3=L3,eq3=L4" or "0=L1,1=L2,2=L3,3=L4" or "Exact=L4,else=L1".
 * Presets: "grades" = "L1=L1,L2=L2,L3=L3,L4=L4" (the default), "homedepot" = the thresholds
 * of shared/data/README.md: "lt1.5=L1,le2=L2,lt3=L3,eq3=L4".  A value no rule matches makes
 * the row bad.  A literal cannot contain ',' or '=' or look like a numeric condition.
 *
 * Formats: "csv", "jsonl", "auto" (by file extension: .csv; .jsonl .ndjson .json; stdin "-"
 * is jsonl) and the preset "homedepot": csv with columns "id=id,item_id=product_uid,
 * title=product_title,query=search_term,label=relevance" and label map "homedepot" (an
 * explicit columns or label map replaces the preset's). */
#ifndef SHE_READER_H
#define SHE_READER_H

#include <stddef.h>
#include <stdio.h>

#include "error.h"
#include "sample.h"

#define SHE_READER_MAX_MESSAGES 10
#define SHE_READER_MAX_RECORD (1 << 20) /* bytes in one record (CSV) or line (JSONL) */

/* ---- label maps ---- */
typedef struct she_label_map_s she_label_map_t;

/* Parses a label map (rules or a preset name).  Free with she_label_map_free().  On error
 * returns SHE_ERR_INVALID naming the bad rule, and *out is NULL. */
she_err_t she_label_map_new(const char *spec, she_label_map_t **out, char *errstr,
                            size_t errstr_size);
void she_label_map_free(she_label_map_t *lm);
/* Grade of a label value; SHE_ERR_INVALID (with a reason in errstr) when no rule matches. */
she_err_t she_label_map_apply(const she_label_map_t *lm, const char *value, she_grade_t *grade,
                              char *errstr, size_t errstr_size);

/* ---- readers ---- */
typedef struct she_reader_opts {
    const char *format;    /* "auto" (also NULL), "csv", "jsonl", "homedepot" */
    const char *columns;   /* column mapping text; NULL or "" = the format's default */
    const char *label_map; /* label map text or preset; NULL or "" = the format's default */
} she_reader_opts_t;

typedef struct she_reader_stats {
    long long n_rows; /* records seen, header and blank lines not counted */
    long long n_ok;   /* rows returned as samples */
    long long n_bad;  /* rows skipped */
    int n_messages;   /* messages kept: the first SHE_READER_MAX_MESSAGES bad rows */
    char messages[SHE_READER_MAX_MESSAGES][SHE_ERRSTR_SIZE];
} she_reader_stats_t;

typedef struct she_reader_s she_reader_t;

/* Creates a reader.  `name` (copied) prefixes every message; `format` must not be "auto"
 * here (see she_reader_resolve_format).  Returns SHE_ERR_INVALID for an unknown format,
 * field name or bad label map; *out is NULL then.  Free with she_reader_free(). */
she_err_t she_reader_new(const char *name, const she_reader_opts_t *opts, she_reader_t **out,
                         char *errstr, size_t errstr_size);
void she_reader_free(she_reader_t *rd);
/* Resolves "auto"/NULL by the path's extension into *format ("csv", "homedepot" or "jsonl",
 * a static string); SHE_ERR_INVALID when it cannot tell. */
she_err_t she_reader_resolve_format(const char *format, const char *path, const char **out,
                                    char *errstr, size_t errstr_size);

/* Appends bytes to the reader's buffer (copied). */
void she_reader_feed(she_reader_t *rd, const char *data, size_t n);
/* No more bytes will come: a last record without a newline is complete, and an open quote
 * is an error. */
void she_reader_finish(she_reader_t *rd);
/* Takes the next good sample out of the buffered bytes into *s (zeroed by the caller; the
 * caller owns and clears it), setting *got = 1; *got = 0 when no complete record is buffered
 * (after she_reader_finish: the end).  Bad rows are skipped and counted on the way.  Returns
 * SHE_ERR_FORMAT on a fatal header problem; every later call returns it again. */
she_err_t she_reader_next(she_reader_t *rd, she_sample_t *s, int *got, char *errstr,
                          size_t errstr_size);
const she_reader_stats_t *she_reader_stats(const she_reader_t *rd);

/* Called per sample.  fn may move the sample out (copy the struct, then zero *s); whatever is
 * left in *s is freed after it returns.  A non-SHE_OK return stops reading and is passed on. */
typedef she_err_t (*she_sample_fn)(she_sample_t *s, void *opaque, char *errstr,
                                   size_t errstr_size);

/* Reads a whole file (path "-" = stdin) and calls fn per good sample.  opts->format may be
 * "auto".  Stats (may be NULL) are copied out also on failure.  Returns SHE_ERR_IO when the
 * file cannot be read, the fatal reader errors above, or fn's error. */
she_err_t she_reader_read_file(const char *path, const she_reader_opts_t *opts, she_sample_fn fn,
                               void *opaque, she_reader_stats_t *stats, char *errstr,
                               size_t errstr_size);

/* ---- writing ---- */
/* Writes one sample as a JSON line (the field names above, absent fields left out, step
 * fields only when has_steps, query_attrs and item_gt_attrs always then, so has_steps
 * survives a round trip).  SHE_ERR_INVALID if a string is not UTF-8; SHE_ERR_IO on a write
 * error. */
she_err_t she_sample_write_jsonl(FILE *f, const she_sample_t *s, char *errstr,
                                 size_t errstr_size);

/* Index of the first byte that is not part of valid UTF-8 (or is NUL) in s[0..n), or n. */
size_t she_utf8_valid_prefix(const char *s, size_t n);

#endif
