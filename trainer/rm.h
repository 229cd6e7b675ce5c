/* rm.h -- the generative stepwise reward model R_phi (paper §4.3.1): the same engine as the
 * policy, asked about one step of one of the policy's chains of thought, writes a short
 * justification and a verdict; the step's reward is the verdict's probability.
 *
 * The exchange, as text (tokenized in three parts, see she_rm_encode_*):
 *   <|bos|>query: ...\nitem: ...\n[attributes: ...\n]answer:\n     (the policy's prompt)
 *   1. Query: ...\n...5. Grade: L3\n                                 (the chain, as written)
 *   judge: step 2\n
 * and the model answers
 *   expected: category=sweater; color=navy\n                        (justification)
 *   [Correct]<|eos|>                                                 (or [Incorrect])
 * The justification is what the step should say (the step's value as the chain format writes
 * it), so the verdict is a comparison the model has just set up; greedy decoding writes it.
 * The reward is P([Correct]) against [Incorrect] after the justification: the two verdict token
 * sequences share a prefix ("[") and then differ in one token, and the probability is the
 * softmax over those two tokens' logits at that position (the tokens after it are the model's
 * to copy once it has chosen; training makes them near-certain).
 *
 * Training data (SFT, she_rm_examples_add): for each sample and each step 1..4, the truth chain
 * (judged Correct), the truth chain with that step corrupted (Incorrect: a wrong category, a
 * dropped or a contradicted attribute for steps 1-2; another value for steps 3-4), and optionally
 * the policy's own chains, judged against the truth.  The truth is the teacher chain
 * (trainer/teacher.h): the real step ground truth on synthetic data, the label decomposition on
 * logs without it (Home Depot) -- so on real data the labels of steps 1-2 are only as good as
 * the lexicon reader.
 *
 * Not here: the training loop (trainer/train_rm_cmd.c), rewards (trainer/reward.h). */
#ifndef SHE_RM_H
#define SHE_RM_H

#include <stdint.h>

#include "cot.h"
#include "dataset.h"
#include "engine.h"
#include "model.h"
#include "sample.h"
#include "sft.h"
#include "tokenizer.h"

#define SHE_RM_CORRECT "[Correct]"
#define SHE_RM_INCORRECT "[Incorrect]"
#define SHE_RM_N_STEPS 4 /* steps 1..4 are judged; step 5 is always the label's */
#define SHE_RM_CHAIN_MAX 600 /* chain bytes shown to the model (a chain is ~100-300) */

/* Tokens a verdict and <|eos|> may take: a tokenizer trained on chains that never saw the
 * verdicts spells them in up to ~10 pieces. */
#define SHE_RM_VERDICT_MAX 16

/* Token budgets of one exchange; max_prompt + max_chain + max_justify + SHE_RM_VERDICT_MAX <=
 * the model's max_seq. */
typedef struct she_rm_config {
    int max_prompt;  /* policy prompt, <|bos|> included (112) */
    int max_chain;   /* chain + judge line (112) */
    int max_justify; /* justification (40) */
} she_rm_config_t;

she_rm_config_t she_rm_defaults(void);
/* Tokens an exchange can take: the sum of the budgets + SHE_RM_VERDICT_MAX. */
int she_rm_max_seq(const she_rm_config_t *cfg);

/* ---- text ---- */

/* "judge: step <step>\n" appended to the chain (trailing whitespace trimmed, cut at
 * SHE_RM_CHAIN_MAX bytes, then "\n"): the part after the policy prompt.  buf needs
 * SHE_RM_CHAIN_MAX + 32 bytes. */
void she_rm_format_chain(const char *chain, size_t chain_len, int step, char *buf, size_t *len);

/* "expected: <value of `step` in truth>\n", the value as she_cot_format writes it after the
 * step's label.  SHE_ERR_INVALID when truth does not format or step is not 1..4. */
she_err_t she_rm_format_justification(const she_cot_t *truth, int step, char *buf, size_t size,
                                      size_t *len, char *errstr, size_t errstr_size);

/* The verdict in a generated text: 1 for [Correct], 0 for [Incorrect], -1 when neither appears
 * (the first one written counts). */
int she_rm_parse_verdict(const char *text, size_t len);

/* Whether step (1..5) of a parsed chain agrees with the truth: 1 yes, 0 no (a step that did
 * not parse is wrong).  Steps 1-2: the same category after she_cot_norm_category and the same
 * attributes (as a set of key=value, values compared like categories); steps 3-5: the same
 * value. */
int she_rm_step_correct(const she_cot_t *truth, const she_cot_parsed_t *parsed, int step);

/* Kinds of corruption of a correct step. */
typedef enum she_rm_corruption {
    SHE_RM_CORRUPT_CATEGORY = 0,   /* steps 1-2: the donor's category (a different one) */
    SHE_RM_CORRUPT_DROP_ATTR,      /* steps 1-2: one attribute left out */
    SHE_RM_CORRUPT_CONTRADICT_ATTR, /* steps 1-2: one attribute's value replaced (by the
                                       donor's value for the key, else "not <value>") */
    SHE_RM_CORRUPT_VALUE,          /* steps 3-5: another value */
    SHE_RM_CORRUPT__COUNT
} she_rm_corruption_t;

const char *she_rm_corruption_name(she_rm_corruption_t kind);

/* Writes into *out a copy of truth with `step` corrupted by `kind` (choices drawn from rng;
 * donor, another sample's truth chain, may be NULL).  Returns 1 when done, 0 when the kind does
 * not apply (no attribute to drop, no different donor category, a step the kind is not for);
 * *out is then unspecified. */
int she_rm_corrupt(const she_cot_t *truth, int step, she_rm_corruption_t kind,
                   const she_cot_t *donor, she_rng_t *rng, she_cot_t *out);

/* ---- token sequences ---- */

/* The exchange's question: she_sft_encode_prompt (within max_prompt) followed by the encoded
 * she_rm_format_chain (within max_chain; a longer one is cut to fit, keeping the judge line).
 * ids needs max_prompt + max_chain.  SHE_ERR_INVALID when the sample makes no prompt. */
she_err_t she_rm_encode_query(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                              const she_sft_special_t *sp, const she_sample_t *s,
                              const char *chain, size_t chain_len, int step, int32_t *ids,
                              int *n_ids, char *errstr, size_t errstr_size);

/* The answer: justification, verdict and <|eos|>, each encoded on its own (as scoring builds
 * them).  ids needs max_justify + SHE_RM_VERDICT_MAX; a justification longer than max_justify tokens is
 * SHE_ERR_INVALID. */
she_err_t she_rm_encode_answer(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                               const she_sft_special_t *sp, const char *justification,
                               size_t just_len, int correct, int32_t *ids, int *n_ids,
                               char *errstr, size_t errstr_size);

/* ---- SFT examples ---- */

typedef enum she_rm_source {
    SHE_RM_SRC_TRUTH = 0, /* the truth chain */
    SHE_RM_SRC_CORRUPT,   /* the truth chain with the judged step corrupted */
    SHE_RM_SRC_POLICY,    /* a chain the policy wrote */
} she_rm_source_t;

typedef struct she_rm_example {
    int sample;  /* index of the sample */
    int step;    /* 1..4 */
    int label;   /* 1 correct, 0 incorrect */
    she_rm_source_t source;
    char *chain; /* malloc'd chain text */
    char *justification; /* malloc'd "expected: ...\n" */
} she_rm_example_t;

typedef struct she_rm_examples {
    she_rm_example_t *ex;
    int n, cap;
} she_rm_examples_t;

void she_rm_examples_free(she_rm_examples_t *set); /* frees the contents; NULL is fine */

/* Appends the examples of one sample (index sample_index, its truth chain `truth`, a donor
 * truth chain from another sample, may be NULL): per step 1..4 one truth example and one
 * corruption of a kind drawn from those that apply; then, per policy chain in
 * policy_chains[0..n_policy) (texts as written, may be unparsable), one example per step
 * labelled by she_rm_step_correct.  SHE_ERR_INVALID when truth does not format. */
she_err_t she_rm_examples_add(she_rm_examples_t *set, int sample_index, const she_cot_t *truth,
                              const she_cot_t *donor, const char *const *policy_chains,
                              int n_policy, she_rng_t *rng, char *errstr, size_t errstr_size);

/* The examples as SFT sequences (trainer/sft.h: question as the masked prompt, answer =
 * justification + verdict + <|eos|>), for she_sft_batch_fill and she_sft_train_step; an example
 * whose sample makes no prompt is skipped and counted in n_skipped.  `sample` of each sequence
 * is the example's index.  Free with she_sft_set_free. */
she_sft_set_t *she_rm_sft_set(const she_rm_config_t *cfg, const she_tokenizer_t *tok,
                              const she_sft_special_t *sp, const she_sample_t *samples,
                              const she_rm_examples_t *set);

/* ---- the scorer ---- */

typedef struct she_rm she_rm_t;

/* One question: step `step` (1..4) of `chain` (chain_len bytes) written for `sample`. */
typedef struct she_rm_query {
    const she_sample_t *sample;
    const char *chain;
    size_t chain_len;
    int step;
} she_rm_query_t;

/* A scorer over model (borrowed, reserved for at least max_batch rows of she_rm_max_seq(cfg)
 * positions) and its tokenizer (with the SFT special tokens), judging on dev (NULL = the CPU):
 * on a CUDA device the scorer holds its own device copy of the model's current weights, so a
 * scorer made after the host weights change judges with the new ones.  SHE_ERR_INVALID when
 * the sizes do not fit or the verdicts do not tokenize into a shared prefix and one differing
 * token, the device errors of she_engine_new; *out NULL then.  Free with she_rm_free (NULL
 * allowed). */
she_err_t she_rm_new(she_model_t *model, const she_tokenizer_t *tok, const she_rm_config_t *cfg,
                     int max_batch, const she_device_t *dev, she_rm_t **out, char *errstr,
                     size_t errstr_size);
void she_rm_free(she_rm_t *rm);

/* Judges q[0..n): p_correct[i] = P([Correct]) in [0, 1], or -1 when the question could not be
 * asked (the sample makes no prompt); justification (NULL allowed, n pointers to buffers of
 * SHE_RM_JUSTIFY_TEXT bytes) receives the generated justification text.  Deterministic
 * (greedy).  On a device the same to float rounding: the verdict is read there as the
 * log-probs of its two tokens (two forwards of the rows), on the CPU from the logits.  Returns
 * SHE_ERR_INVALID only when the engine refuses a batch (a bug), SHE_ERR_CUDA on a device
 * failure. */
#define SHE_RM_JUSTIFY_TEXT 512
she_err_t she_rm_judge(she_rm_t *rm, const she_rm_query_t *q, int n, float *p_correct,
                       char *const *justification, char *errstr, size_t errstr_size);

#endif
