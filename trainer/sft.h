/* sft.h -- supervised fine-tuning of the relevance policy: samples become token sequences
 * (prompt, teacher chain of thought, end of sequence) with the prompt masked out of the loss,
 * batched with right padding, and trained with the mean token negative log-likelihood of the
 * answer.
 *
 * A sequence is
 *   <|bos|> prompt-text  |  chain-text <|eos|>
 * where prompt-text is she_cot_format_prompt() (ends in "answer:\n"), chain-text is the teacher
 * chain (trainer/teacher.h) formatted by she_cot_format(), and the two are tokenized separately
 * so the prompt tokens are exactly what the judge (trainer/judge.h) feeds the sampler at
 * inference.  When a sequence does not fit max_seq, the prompt's item text is shortened
 * (catalogue attributes dropped from the last, then title words from the end): never the
 * answer, never the query.
 *
 * Loss: with targets[t] = tokens[t+1] at the answer positions (from the last prompt token to
 * the token before the last, so every answer token and the eos are predicted) and -1 elsewhere,
 *   L = -(1/N) sum_{t: target >= 0} log p(target_t)
 * over the N answer targets of the whole batch, so dL/dlogp = -1/N there (she_model_backward).
 * Optional weights turn it into sum w_t * nll_t / sum w_t: per sequence by grade (class
 * balance) times per answer token by chain step (set->step_weight, e.g. more weight on the
 * decisions of steps 3-5 than on the text read back in steps 1-2).
 *
 * What it does not do: packing several samples into one row, the training loop (the command
 * trainer/sft_cmd.c), decoding (trainer/judge.h). */
#ifndef SHE_SFT_H
#define SHE_SFT_H

#include <stddef.h>
#include <stdint.h>

#include "cot.h"
#include "engine.h"
#include "error.h"
#include "lexicon.h"
#include "model.h"
#include "optim.h"
#include "sample.h"
#include "tokenizer.h"

/* The special tokens of a she policy tokenizer, in this id order when she trains it. */
#define SHE_SFT_PAD "<|pad|>"
#define SHE_SFT_BOS "<|bos|>"
#define SHE_SFT_EOS "<|eos|>"

typedef struct she_sft_special {
    int32_t pad, bos, eos;
} she_sft_special_t;

/* Loads the brand and material lexicons (trainer/lexicon.h) from dir/brand_statistics.csv and
 * dir/material_statistics.csv, rows with cnt_attribute >= min_count.  The same lexicons must be
 * used wherever a teacher chain is made for the same data (training, evaluation).  On failure
 * both are NULL and the loader's error is returned. */
she_err_t she_sft_load_lexicons(const char *dir, int min_count, she_lexicon_t **brands,
                                she_lexicon_t **materials, char *errstr, size_t errstr_size);

/* Looks the three special tokens up.  SHE_ERR_FORMAT naming the missing one. */
she_err_t she_sft_special_ids(const she_tokenizer_t *tok, she_sft_special_t *sp, char *errstr,
                              size_t errstr_size);

/* Trains a byte-level BPE tokenizer of up to vocab_size ids (special tokens first) on the
 * prompt and teacher chain of every sample (samples the teacher refuses are left out).
 * brands/materials may be NULL.  SHE_ERR_INVALID when no sample gives a text or the tokenizer
 * refuses the arguments; *out is NULL then.  Free with she_tokenizer_free. */
she_err_t she_sft_train_tokenizer(const she_sample_t *samples, int n, const she_lexicon_t *brands,
                                  const she_lexicon_t *materials, int vocab_size,
                                  she_tokenizer_t **out, char *errstr, size_t errstr_size);

/* Encodes the prompt of s as <|bos|> + she_cot_format_prompt() into ids (room for max_tokens),
 * shortening the item text until it fits; *truncated (may be NULL) is set to 1 when it did.
 * Returns SHE_ERR_INVALID when the sample has no query / title, or when the prompt does not
 * fit even with no attributes and a one-word title (a very long query). */
she_err_t she_sft_encode_prompt(const she_tokenizer_t *tok, const she_sft_special_t *sp,
                                const she_sample_t *s, int max_tokens, int32_t *ids, int *n_ids,
                                int *truncated, char *errstr, size_t errstr_size);

/* ---- a set of training sequences ---- */
typedef struct she_sft_set {
    int32_t *tokens;  /* (n_tokens) every sequence back to back */
    size_t *start;    /* (n) first token of sequence i */
    int *len;         /* (n) tokens of sequence i: prompt + answer + eos */
    int *n_prompt;    /* (n) the first n_prompt tokens are the prompt (bos included) */
    int *sample;      /* (n) index of the sample it was built from */
    float *weight;    /* (n) loss weight of sequence i; NULL = all 1 */
    uint8_t *step;    /* (n_tokens) per token: 0 in the prompt, else the chain step 1..5 of an
                       * answer token (she_cot_token_steps; the eos counts as step 5); NULL:
                       * every answer token weighs 1 */
    float step_weight[SHE_COT_N_STEPS]; /* loss weight of answer tokens by step; 1 after build */
    int n, cap;
    size_t n_tokens, cap_tokens;
    int max_len;      /* longest sequence */
    long n_answer_tokens; /* sum over sequences of len - n_prompt */
    long n_skipped;   /* samples that could not be made into a sequence */
    long n_truncated; /* sequences whose item text was shortened */
} she_sft_set_t;

/* Builds one sequence per sample (in order) with at most max_seq tokens.  A sample without a
 * grade, a query or a title, or whose answer alone does not fit, is skipped and counted (the
 * first such reason goes to errstr, which is left "" when none was skipped).  Never fails
 * otherwise (aborts when out of memory).  Uses OpenMP threads.  Free with she_sft_set_free. */
she_sft_set_t *she_sft_set_build(const she_tokenizer_t *tok, const she_sample_t *samples, int n,
                                 const she_lexicon_t *brands, const she_lexicon_t *materials,
                                 int max_seq, char *errstr, size_t errstr_size);
void she_sft_set_free(she_sft_set_t *set); /* NULL is fine */

/* Class-balanced loss weights: sequence i (built from samples[set->sample[i]], the array given
 * to she_sft_set_build) gets (1 / share of its grade in the set)^alpha, scaled so the mean
 * weight is 1.  alpha = 0 removes the weights (plain mean over answer tokens); alpha = 1 gives
 * every grade the same total weight.  Used because macro F1 counts the rare grades (Home
 * Depot: L1 is 7% of rows) as much as the common ones. */
void she_sft_set_weight_by_grade(she_sft_set_t *set, const she_sample_t *samples, double alpha);

/* ---- batches and the loss ---- */
typedef struct she_sft_batch {
    int max_batch, max_seq;
    int B, T;          /* shape of the last fill: T = the longest row */
    int32_t *tokens;   /* (max_batch * max_seq) row-major [B, T], pad id after each row */
    uint8_t *mask;     /* 1 real token, 0 padding */
    int32_t *targets;  /* next token at answer positions, -1 elsewhere */
    float *weight;     /* loss weight of each target: its sequence's weight times the step weight
                        * of the token it predicts (1 without weights) */
    float *logp;       /* forward output */
    float *dlogp;      /* loss gradient */
    long n_targets;    /* answer targets in the batch */
} she_sft_batch_t;

/* Reserves a batch of max_batch rows of max_seq tokens (aborts when out of memory).  Free with
 * she_sft_batch_free. */
she_sft_batch_t *she_sft_batch_new(int max_batch, int max_seq);
void she_sft_batch_free(she_sft_batch_t *b); /* NULL is fine */

/* Lays out sequences idx[0..B) of set (B <= max_batch, each len <= max_seq) right-padded with
 * pad_id to T = the longest, with the mask and the answer targets described above. */
void she_sft_batch_fill(she_sft_batch_t *b, const she_sft_set_t *set, const int *idx, int B,
                        int32_t pad_id);

/* Mean NLL over the n positions with targets[i] >= 0, and dlogp[i] = -1/N there, 0 elsewhere
 * (dlogp may be NULL).  Returns 0 when there is no target. */
double she_sft_loss(const float *logp, const int32_t *targets, int n, float *dlogp);
/* The weighted mean: sum w_i * -logp_i / sum w_i over the target positions, dlogp_i =
 * -w_i / sum w (weight NULL = she_sft_loss). */
double she_sft_loss_weighted(const float *logp, const int32_t *targets, const float *weight,
                             int n, float *dlogp);

/* The unweighted loss of the filled batch without training (validation), on engine e's device.
 * SHE_ERR_INVALID from the forward (a batch larger than the model reserved), SHE_ERR_CUDA. */
she_err_t she_sft_eval_loss(she_engine_t *e, she_sft_batch_t *b, double *loss, char *errstr,
                            size_t errstr_size);

/* One optimizer step on the filled batch on engine e (which must hold the AdamW state): zero
 * grads, forward, weighted loss, backward, AdamW at lr with global-norm clipping to clip.
 * *loss gets the batch loss before the step, *grad_norm (may be NULL) the gradient norm before
 * clipping.  On the CPU engine this is bit-for-bit the model.h sequence (exact resume). */
she_err_t she_sft_train_step(she_engine_t *e, const she_adamw_config_t *hp, float lr,
                             float clip, she_sft_batch_t *b, double *loss, float *grad_norm,
                             char *errstr, size_t errstr_size);

#endif
