/* dpo.h -- direct preference optimisation between SFT and RL (the paper's Tbstar-DPO stage):
 * pairs of answers to one prompt, chosen (a correct chain: the teacher's) and rejected (a chain
 * the SFT policy sampled and got wrong), the frozen reference's summed log-probs of both, and a
 * training step on the DPO loss of trainer/rl.h.
 *
 * An answer is the token ids after the prompt, <|eos|> included, so a pair is scored exactly as
 * the policy would write it.  Log-probs are at temperature 1.
 *
 * Not here: sampling the rejected chains and choosing pairs (`she train-dpo`,
 * trainer/train_dpo_cmd.c), I/O.  Unlike the RL learner, a step allocates its micro-batch
 * arrays (sized by the pairs it gets): DPO is a short offline stage. */
#ifndef SHE_DPO_H
#define SHE_DPO_H

#include <stdint.h>

#include "engine.h"
#include "model.h"
#include "optim.h"
#include "rl.h"

typedef struct she_dpo_pair {
    int32_t *prompt;   /* (n_prompt) malloc'd */
    int32_t *chosen;   /* (n_chosen) */
    int32_t *rejected; /* (n_rejected) */
    int n_prompt, n_chosen, n_rejected;
    float ref_chosen, ref_rejected; /* the reference's summed log-probs (she_dpo_ref_logps) */
} she_dpo_pair_t;

typedef struct she_dpo_set {
    she_dpo_pair_t *pairs;
    int n, cap;
} she_dpo_set_t;

/* Appends a pair (the ids are copied; ref sums 0 until she_dpo_ref_logps). */
void she_dpo_set_add(she_dpo_set_t *set, const int32_t *prompt, int n_prompt,
                     const int32_t *chosen, int n_chosen, const int32_t *rejected,
                     int n_rejected);
void she_dpo_set_free(she_dpo_set_t *set); /* frees the contents; NULL is fine */

/* Fills every pair's ref_chosen / ref_rejected from the reference on engine ref_engine,
 * micro_batch rows per forward (<= the model's max_batch).  SHE_ERR_INVALID when a prompt +
 * answer exceeds its max_seq, SHE_ERR_CUDA on a device failure. */
she_err_t she_dpo_ref_logps(she_engine_t *ref_engine, she_dpo_set_t *set, int micro_batch,
                            char *errstr, size_t errstr_size);

/* One optimizer step of the policy on engine e (which holds its AdamW state) on pairs idx[0..P)
 * of set: per micro-batch of micro_batch/2 pairs, one forward of their chosen and rejected
 * rows, the DPO loss (beta) scaled to the mean over the P pairs, backward; then AdamW at lr
 * with global-norm clipping to clip.  st (NULL allowed) gets the loss statistics over the P
 * pairs, *grad_norm (NULL allowed) the norm before clipping.  SHE_ERR_INVALID for
 * micro_batch < 2 or above the model's rows, or a sequence too long (then nothing is
 * updated); SHE_ERR_CUDA on a device failure. */
she_err_t she_dpo_step(she_engine_t *e, const she_adamw_config_t *hp, float lr, float clip,
                       float beta, const she_dpo_set_t *set, const int *idx, int P,
                       int micro_batch, she_dpo_stats_t *st, float *grad_norm, char *errstr,
                       size_t errstr_size);

#endif
