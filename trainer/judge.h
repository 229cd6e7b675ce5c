/* judge.h -- the policy as a relevance judge: samples -> prompts -> generated chains of thought
 * -> parsed grades, in batches with the KV-cache sampler.  Used by `she evaluate`, the
 * validation of `she train-sft`, and (with a temperature) by rollouts and serving.
 *
 * Per row: the prompt is <|bos|> + she_cot_format_prompt() with the item text shortened to fit
 * max_prompt tokens (she_sft_encode_prompt, the same layout SFT trains on); the sampler
 * continues it until <|eos|>, until the text holds a complete step 5 ("5. Grade: L1".."L4"),
 * or max_new_tokens; the generated text up to the first <|eos|> (other special tokens stay in
 * as their text, so they make the chain malformed rather than vanish) goes to she_cot_parse.
 * The predicted grade is step 5 when it parsed, else none (a format failure).
 *
 * Device (opts.device, core/engine.h): "cpu" (the default) generates with the CPU engine over
 * the borrowed model; "cuda[:N]" with a device copy of its weights made by she_judge_new (call
 * she_judge_sync after changing the model's weights).  she_judge_new_engine instead judges on
 * a caller's engine (e.g. the one a trainer trains on), sharing its device weights.
 *
 * What it does not do: probabilities of the four grades (ranking ties are left to row order),
 * retries, or any repair of a malformed chain. */
#ifndef SHE_JUDGE_H
#define SHE_JUDGE_H

#include <stdint.h>

#include "cot.h"
#include "engine.h"
#include "eval.h"
#include "lexicon.h"
#include "model.h"
#include "sample.h"
#include "sampler.h"
#include "tokenizer.h"

#define SHE_JUDGE_MAX_TEXT SHE_COT_MAX_CHAIN /* answer bytes kept per row */

typedef struct she_judge_opts {
    int max_batch;      /* rows generated together (64) */
    int max_prompt;     /* prompt tokens, bos included (128) */
    int max_new_tokens; /* answer tokens (128) */
    float temperature;  /* 0 = greedy (the default) */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off */
    uint64_t seed;      /* for temperature > 0 */
    const char *device; /* "cpu" (NULL or "" too, the default), "cuda" or "cuda:N"; read by
                         * she_judge_new only */
} she_judge_opts_t;

void she_judge_opts_default(she_judge_opts_t *o);

typedef struct she_judge_result {
    she_grade_t grade;        /* step 5, or SHE_GRADE_UNKNOWN for a format failure */
    int format_ok;            /* all five steps parsed */
    int prompt_ok;            /* 0 when the sample could not be made a prompt (nothing ran) */
    int prompt_truncated;     /* the item text was shortened to fit max_prompt */
    int n_tokens;             /* tokens generated (a stop token included) */
    she_finish_t finish;
    she_cot_parsed_t parsed;
    char text[SHE_JUDGE_MAX_TEXT]; /* the answer text (NUL-terminated, cut at the cap) */
    int text_len;
} she_judge_result_t;

typedef struct she_judge_s she_judge_t;

/* A judge over model m and tokenizer tok (both borrowed; they must outlive the judge; m is
 * only read) on device o->device.  Reserves a sampler of max_batch rows x (max_prompt +
 * max_new_tokens) positions.  SHE_ERR_INVALID for bad options, a tokenizer without the SFT
 * special tokens, or a sequence longer than the model's positions; SHE_ERR_CONFIG /
 * SHE_ERR_NOT_FOUND for a malformed or absent device (she_device_select), SHE_ERR_CUDA when
 * the device copy cannot be made; *out is NULL then.  Free with she_judge_free. */
she_err_t she_judge_new(const she_model_t *m, const she_tokenizer_t *tok,
                        const she_judge_opts_t *o, she_judge_t **out, char *errstr,
                        size_t errstr_size);
/* The same on engine e (borrowed; o->device is ignored): generation reads e's current
 * weights, so a judge on a training engine judges the policy as trained so far. */
she_err_t she_judge_new_engine(she_engine_t *e, const she_tokenizer_t *tok,
                               const she_judge_opts_t *o, she_judge_t **out, char *errstr,
                               size_t errstr_size);
void she_judge_free(she_judge_t *j); /* NULL is fine */

/* After the weights of the model given to she_judge_new changed (a reloaded policy): copies
 * them to the judge's device.  Nothing to do on the CPU, or for a judge on a caller's engine
 * (the caller syncs that).  SHE_ERR_CUDA on a device failure. */
she_err_t she_judge_sync(she_judge_t *j, char *errstr, size_t errstr_size);

/* Called after each batch with the rows done so far. */
typedef void (*she_judge_progress_fn)(int done, int total, void *opaque);

/* Judges samples[0..n) into res[0..n), max_batch rows at a time (progress may be NULL).  A
 * sample that cannot be made a prompt is a format failure with prompt_ok = 0, not an error.
 * Returns SHE_ERR_INVALID only when the sampler refuses a batch (a bug or a bad model). */
she_err_t she_judge_run(she_judge_t *j, const she_sample_t *samples, int n,
                        she_judge_result_t *res, she_judge_progress_fn progress, void *opaque,
                        char *errstr, size_t errstr_size);

/* Decodes generated ids (up to the first <|eos|>) and parses them into r's text, parsed,
 * format_ok and grade (the other fields are left as they are).  For callers that run the
 * sampler themselves, e.g. RL rollouts. */
void she_judge_parse_ids(const she_tokenizer_t *tok, int32_t eos_id, const int32_t *ids, int n,
                         she_judge_result_t *r);

/* Evaluation rows (trainer/eval.h) for samples[i] judged as res[i] (res NULL: gold only, for
 * baselines, whose pred the caller sets).  Samples with step ground truth use it.  For the
 * others, when teacher_ref != NULL, the teacher chain (label decomposition, trainer/teacher.h)
 * is written into teacher_ref[i] and its steps 1-4 become the step reference: a stand-in for
 * annotation that reports must name as such.  *n_teacher (may be NULL) counts those rows.  The
 * rows borrow from samples, res and teacher_ref. */
void she_judge_eval_rows(const she_sample_t *samples, const she_judge_result_t *res, int n,
                         const she_lexicon_t *brands, const she_lexicon_t *materials,
                         she_cot_t *teacher_ref, she_eval_row_t *rows, int *n_teacher);

#endif
