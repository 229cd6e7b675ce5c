/* lexicon.h -- phrase lexicons (brands, materials) and the deterministic reader that turns a
 * query or an item title into what steps 1-2 of the chain of thought say: a category (the head
 * noun phrase) and attributes (the rest).
 *
 * The reader is a heuristic, documented in trainer/COT_FORMAT.md ("Reading steps 1-2 out of
 * text"); it exists so that teacher chains can be written for logs without step ground truth
 * (Home Depot).  It knows no grammar, no synonyms and no spelling correction, and it never looks
 * anything up beyond the two lexicons given and its small built-in colour/size/unit word lists.
 *
 * Lexicon files are the CSVs in ../shared/data/homedepot/lexicons/ (brand_statistics.csv,
 * material_statistics.csv): a header naming a `name` column (and `cnt_attribute` when a
 * minimum count is asked for), unquoted comma-separated fields. */
#ifndef SHE_LEXICON_H
#define SHE_LEXICON_H

#include "cot.h"
#include "error.h"

/* A set of phrases, each stored in reader-normal form: words split at whitespace, hyphens and
 * punctuation, lowercased, outer punctuation stripped, joined by one space
 * ("Simpson Strong-Tie" -> "simpson strong tie"). */
typedef struct she_lexicon she_lexicon_t;

/* An empty lexicon.  Never returns NULL (aborts when out of memory).  Free with
 * she_lexicon_free. */
she_lexicon_t *she_lexicon_new(void);
void she_lexicon_free(she_lexicon_t *lex); /* NULL is fine */

/* Adds a phrase (normalised as above; empty phrases and duplicates are ignored). */
void she_lexicon_add(she_lexicon_t *lex, const char *phrase);

/* Loads the `name` column of a lexicon CSV, keeping rows whose cnt_attribute >= min_count
 * (min_count <= 0 keeps all and does not need the column).  On failure returns SHE_ERR_IO
 * (cannot open/read), SHE_ERR_FORMAT (missing column, wrong field count, bad count; errstr
 * says file:line) and sets *lex to NULL.  Free the result with she_lexicon_free. */
she_err_t she_lexicon_load(const char *path, int min_count, she_lexicon_t **lex, char *errstr,
                           size_t errstr_size);

int she_lexicon_size(const she_lexicon_t *lex);
/* 1 when the phrase (normalised as above) is in the lexicon. */
int she_lexicon_contains(const she_lexicon_t *lex, const char *phrase);

/* Reads category and attributes out of text into *out (zeroed first).  brands and materials
 * may be NULL.  Attributes come in this order and are capped at SHE_COT_MAX_ATTRS: brand,
 * material, color, size, type (the main phrase's other words), then one per trailing phrase:
 * feature ("with ..."), use ("for ..."), detail (anything else after "in", a comma, a dash).
 * The category is never empty: "unknown" when the text has no word at all. */
void she_lexicon_interpret(const she_lexicon_t *brands, const she_lexicon_t *materials,
                           const char *text, she_cot_interp_t *out);

#endif
