/* learner.h -- one policy update from a batch of rewarded groups (paper Algorithm 1, line 16):
 * advantages (GRPO Eq. 4 or SRPO Eq. 6, trainer/rl.h) from the step rewards and the responses'
 * step spans; the policy's log-probs and entropies at the behaviour tokens (training forward at
 * the rollouts' temperature); the frozen reference policy's log-probs; the PPO-clip surrogate
 * with the k3 KL penalty (Eq. 2 / Eq. 6); backward; AdamW with global-norm clipping.
 *
 * Pure compute: no I/O, no clock, no logging -- the offline trainer (`she train-rl`) and the
 * streaming learner call exactly she_learner_step.  The groups are split into mini_batches
 * consecutive parts, each one optimizer step (so from the second part on the ratio to the
 * behaviour policy moves away from 1 and clipping acts), repeated `epochs` times; each part is
 * run through the engine micro_batch rows at a time with gradients accumulated, and each
 * micro-batch's loss gradient scaled so that the part's loss is Eq. 2's mean over its responses
 * of their token means.
 *
 * The rollout-vs-learner gap: on the first part of the first epoch (before any update in the
 * call) the learner's log-probs are compared with the behaviour log-probs the sampler recorded.
 * With an unchanged policy they agree to ~1e-5 (the sampler guarantees it); a large gap means
 * the rollouts came from another policy version or another temperature.
 *
 * Memory: work arrays grow to the largest batch seen (realloc); a batch of the same size
 * allocates nothing. */
#ifndef SHE_LEARNER_H
#define SHE_LEARNER_H

#include "messages.h"
#include "model.h"
#include "optim.h"
#include "rl.h"

typedef struct she_learner_config {
    she_adv_config_t adv;       /* algorithm, normalisation, gamma, |A| clip */
    she_rl_loss_config_t loss;  /* PPO clip epsilon, KL beta */
    she_adamw_config_t adamw;
    float temperature;          /* of the rollouts: the ratio compares like with like (0.99) */
    float max_grad_norm;        /* global-norm clip; <= 0 off (1.0) */
    int micro_batch;            /* rows per forward/backward (16) */
    int mini_batches;           /* optimizer steps per call (1) */
    int epochs;                 /* passes over the batch (1) */
} she_learner_config_t;

she_learner_config_t she_learner_defaults(void);

typedef struct she_learner_stats {
    she_adv_stats_t adv;
    she_rl_loss_stats_t loss;     /* over every part and epoch (per-token means weighted by
                                     tokens, losses by responses) */
    she_reward_stats_t reward;    /* of the batch's step rewards and pass flags */
    double grad_norm;             /* mean over the updates, before clipping */
    double grad_norm_max;
    double logp_gap_mean, logp_gap_max; /* |learner - behaviour| log-prob, first part */
    long gap_tokens;
    int n_updates, n_groups, n_rows;
    long n_tokens;                /* response tokens in the batch */
} she_learner_stats_t;

typedef struct she_learner she_learner_t;

/* A learner updating policy with opt (both borrowed).  ref is the frozen reference (borrowed;
 * NULL allowed when cfg->loss.kl_beta == 0).  Both models must be reserved for micro_batch rows
 * of the longest prompt + response.  SHE_ERR_INVALID for a bad configuration; *out NULL then.
 * Free with she_learner_free (NULL allowed). */
she_err_t she_learner_new(she_model_t *policy, she_adamw_t *opt, she_model_t *ref,
                          const she_learner_config_t *cfg, she_learner_t **out, char *errstr,
                          size_t errstr_size);
void she_learner_free(she_learner_t *ln);

/* One update from groups[0..n) at learning rate lr.  Every group must have the same number of
 * responses G >= 1 with one reward each.  st may be NULL.  Returns SHE_ERR_INVALID (and changes
 * nothing) for groups of different sizes, missing rewards, a prompt + response longer than the
 * models' reserved positions or token ids outside the vocabulary. */
she_err_t she_learner_step(she_learner_t *ln, const she_rewarded_group_t *groups, int n, float lr,
                           she_learner_stats_t *st, char *errstr, size_t errstr_size);

#endif
