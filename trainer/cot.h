/* cot.h -- the five-step chain of thought the relevance policy writes: its layout, the prompt
 * it answers, the formatter and the parsing operators pi_S1..pi_S5 (trainer/COT_FORMAT.md is the
 * written spec with the grammar and examples).
 *
 *   1. Query: category=running shoes; color=red, brand=nike
 *   2. Item: category=running shoe; brand=nike, color=red, size=10
 *   3. Category: exact
 *   4. Attributes: match
 *   5. Grade: L4
 *
 * The parser judges each step on its own, so a reward can credit a valid step 3 when step 4 is
 * garbage; a malformed step is reported (which step, what was expected, at which byte), never
 * repaired or guessed.  It also reports the byte span of every step, and she_cot_token_steps()
 * turns those spans into a step index per token for SRPO's step-level advantages.
 *
 * This module does no tokenization, no I/O and no allocation: every value lives in fixed-size
 * fields (limits below), so parsing a rollout costs nothing on the heap.  Deciding what a chain
 * should say for a sample is trainer/teacher.h; reading categories out of text is
 * trainer/lexicon.h. */
#ifndef SHE_COT_H
#define SHE_COT_H

#include <stddef.h>

#include "sample.h"

#define SHE_COT_N_STEPS 5
#define SHE_COT_MAX_ATTRS 8  /* attributes per interpretation step */
#define SHE_COT_MAX_KEY 24   /* attribute key bytes incl. NUL: [a-z][a-z0-9_]{0,22} */
#define SHE_COT_MAX_TEXT 64  /* category / attribute value bytes incl. NUL */
#define SHE_COT_MAX_CHAIN 2048 /* a formatted chain at its limits fits (about 1.7 KB) */
#define SHE_COT_PROMPT_FIELD_MAX 200 /* prompt fields are cut at a word boundary past this */
#define SHE_COT_MAX_ERR 128

/* Step numbers as written in the chain (1-based; arrays below are indexed [step - 1]). */
typedef enum she_cot_step {
    SHE_COT_STEP_QUERY = 1,      /* query interpretation: category; attributes */
    SHE_COT_STEP_ITEM = 2,       /* item interpretation: category; attributes */
    SHE_COT_STEP_CATEGORY = 3,   /* category match: exact | partial | none */
    SHE_COT_STEP_ATTRIBUTES = 4, /* attribute match: match | partial | conflict | none */
    SHE_COT_STEP_GRADE = 5,      /* grade: L1..L4 */
} she_cot_step_t;

typedef struct she_cot_attr {
    char key[SHE_COT_MAX_KEY];
    char value[SHE_COT_MAX_TEXT];
} she_cot_attr_t;

/* What steps 1 and 2 say about one side (query or item). */
typedef struct she_cot_interp {
    char category[SHE_COT_MAX_TEXT];
    she_cot_attr_t attrs[SHE_COT_MAX_ATTRS];
    int n_attrs;
} she_cot_interp_t;

/* The content of one chain.  Zero-initialise, then fill. */
typedef struct she_cot {
    she_cot_interp_t query;      /* step 1 */
    she_cot_interp_t item;       /* step 2 */
    she_cat_match_t cat_match;   /* step 3 */
    she_attr_match_t attr_match; /* step 4 */
    she_grade_t grade;           /* step 5 */
} she_cot_t;

/* Byte range [begin, end) of a step in the parsed text: from the first byte of its line to the
 * first byte of the next step line (or the end of the text), so stray text after a step belongs
 * to that step.  {-1, -1} when the step's line is absent. */
typedef struct she_cot_span {
    int begin, end;
} she_cot_span_t;

typedef struct she_cot_parsed {
    she_cot_t cot;                         /* fields of steps that failed stay zero */
    int ok[SHE_COT_N_STEPS];               /* 1 when step [i] parsed cleanly */
    int n_ok;                              /* number of steps with ok = 1 */
    she_cot_span_t span[SHE_COT_N_STEPS];  /* first occurrence of each step's line */
    int err_at[SHE_COT_N_STEPS];           /* byte offset of the problem; -1 when ok */
    char err[SHE_COT_N_STEPS][SHE_COT_MAX_ERR]; /* "expected ..., got ..."; "" when ok */
} she_cot_parsed_t;

/* "Query", "Item", "Category", "Attributes", "Grade" for steps 1..5 (the labels written in the
 * chain); "?" for anything else. */
const char *she_cot_step_name(int step);

/* Writes the chain for `cot` into buf (NUL-terminated) and its length into *len (may be NULL).
 * Returns SHE_ERR_INVALID, leaving buf unspecified, when a field cannot be written in the format
 * (empty category, a character outside the value alphabet, a bad key, an unknown enum, more
 * than SHE_COT_MAX_ATTRS attributes) or when buf is too small (SHE_COT_MAX_CHAIN always fits). */
she_err_t she_cot_format(const she_cot_t *cot, char *buf, size_t size, size_t *len, char *errstr,
                         size_t errstr_size);

/* Writes the prompt the policy answers with a chain:
 *   query: <query>\nitem: <item title>\n[attributes: k=v, k=v\n]answer:\n
 * Whitespace runs (newlines included) become one space, control bytes are dropped and each
 * field is cut at a word boundary past SHE_COT_PROMPT_FIELD_MAX bytes; at most
 * SHE_COT_MAX_ATTRS catalogue attributes are listed.  The description is not used (the
 * sequence budget is ~128-192 tokens for prompt and answer).  Returns SHE_ERR_INVALID when
 * the query or title is missing or empty, or buf is too small (4 KB always fits). */
she_err_t she_cot_format_prompt(const she_sample_t *s, char *buf, size_t size, size_t *len,
                                char *errstr, size_t errstr_size);

/* pi_S1..pi_S5 at once.  Parses text[0..len) (need not be NUL-terminated) into *parsed, judging
 * each step independently (see COT_FORMAT.md, "Parsing").  Returns SHE_OK when all five steps
 * parsed; otherwise SHE_ERR_FORMAT with errstr naming the first failing step, what was
 * expected and the byte, and *parsed still holding every step that did parse. */
she_err_t she_cot_parse(const char *text, size_t len, she_cot_parsed_t *parsed, char *errstr,
                        size_t errstr_size);

/* Token -> step map for SRPO.  tok_end[t] is the byte offset just past token t in the parsed
 * text (the caller computes these from its tokenizer); step[t] receives 1..5: the step whose
 * line holds the token's last byte, i.e. the step with the latest span start at or before it.
 * Tokens before the first step line (or in a text with no step line) belong to step 1; tokens
 * after step 5 to step 5; stray or duplicate lines go to the step line above them. */
void she_cot_token_steps(const she_cot_parsed_t *parsed, const int *tok_end, int n_tok,
                         int *step);

/* Comparison key for categories (per-step accuracy of steps 1-2, exact-vs-partial in the
 * teacher): ASCII lowercase, every run of non-alphanumeric bytes becomes one space, trimmed,
 * and a plural "s" is dropped from words of 4+ letters not ending in "ss" ("Running-Shoes" ->
 * "running shoe").  Bytes >= 0x80 are kept as they are.  Truncates to size-1 bytes. */
void she_cot_norm_category(const char *s, char *out, size_t size);

/* Copies s into out (SHE_COT_MAX_TEXT) as a valid category / attribute value: bytes the format
 * reserves (',' ';' '=' and control bytes) become spaces, whitespace runs collapse, the ends
 * are trimmed and the result is cut at a word boundary (or a UTF-8 boundary for one long word)
 * to fit.  Returns 0 when nothing is left (out is then ""). */
int she_cot_clean_value(const char *s, char out[SHE_COT_MAX_TEXT]);

/* Appends key=value to an interpretation when it fits the format: key valid, value non-empty
 * after she_cot_clean_value, fewer than SHE_COT_MAX_ATTRS attributes, and not already present
 * with the same value.  Returns 1 when appended, 0 otherwise (silently, by design: readers add
 * what they find and the chain keeps the first SHE_COT_MAX_ATTRS). */
int she_cot_interp_add(she_cot_interp_t *in, const char *key, const char *value);

#endif
