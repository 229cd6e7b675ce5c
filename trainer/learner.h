/* learner.h -- one policy update from a batch of rewarded groups (paper Algorithm 1, line 16):
 * advantages (GRPO Eq. 4 or SRPO Eq. 6, trainer/rl.h) from the step rewards and the responses'
 * step spans; the policy's log-probs and entropies at the behaviour tokens (training forward at
 * the rollouts' temperature); the frozen reference policy's log-probs; the PPO-clip surrogate
 * with the k3 KL penalty (Eq. 2 / Eq. 6); backward; AdamW with global-norm clipping.
 *
 * Pure compute: no I/O (but a data-parallel step's collectives), no clock, no logging -- the
 * offline trainer (`she train-rl`) and the streaming learner call exactly she_learner_step.
 * The groups are split into mini_batches consecutive parts, each one optimizer step (so from
 * the second part on the ratio to the behaviour policy moves away from 1 and clipping acts),
 * repeated `epochs` times; each part is run through the engine micro_batch rows at a time with
 * gradients accumulated, and each micro-batch's loss gradient scaled so that the part's loss
 * is Eq. 2's mean over its responses of their token means.
 *
 * The rollout-vs-learner gap: on the first part of the first epoch (before any update in the
 * call) the learner's log-probs are compared with the behaviour log-probs the sampler recorded,
 * in all and per behaviour-policy version (the groups' policy_version).  With an unchanged
 * policy they agree to ~1e-5 (the sampler guarantees it); a large gap means the rollouts came
 * from another policy version or another temperature.  Later parts are not measured: the
 * update before them moved the policy.
 *
 * Data parallel (she_learner_set_dist): each rank passes its own share of the batch; optimizer
 * step k takes every rank's part k (so every rank works on every step), with each loss
 * normalised by the counts over all ranks and the gradients summed over ranks (dist.h); the
 * statistics are the combined batch's, the same on every rank.  With one mini-batch that is
 * the single-rank step on the ranks' groups one after the other; with several, it is the
 * single-rank step on the batch whose part k is the ranks' parts k one after the other (rank
 * 0's first) when those parts have the sizes a single rank would cut (equal shares whose size
 * mini_batches divides, e.g.).  A rank may pass no groups (it still takes part in every
 * collective).  Every rank must call she_learner_step the same number of times with the same
 * lr.  Advantages are normalised per group (or not at all): batch normalisation would need the
 * batch's statistics across ranks and is refused.
 *
 * Device: the forward, backward and AdamW steps go through engine.h, on the CPU (bit-identical
 * to calling model.h directly) unless she_learner_set_device moved them.
 *
 * Memory: work arrays grow to the largest batch seen (realloc); a batch of the same size
 * allocates nothing. */
#ifndef SHE_LEARNER_H
#define SHE_LEARNER_H

#include "dist.h"
#include "engine.h"
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

/* Versions of the behaviour policy whose gap is kept apart in a step's statistics (the newest
 * ones; older versions are pooled): bounded, whatever the staleness bound lets through. */
#define SHE_LEARNER_GAP_VERSIONS 8

/* The rollout-vs-learner gap of the groups of one behaviour-policy version. */
typedef struct she_learner_gap {
    int64_t version;   /* the groups' policy_version (pooled: the newest of the pooled ones) */
    int n_groups;      /* groups of the batch from it (measured or not) */
    long tokens;       /* response tokens measured (those in the first part) */
    double mean, max;  /* |learner - behaviour| log-prob over them; 0 when tokens is 0 */
} she_learner_gap_t;

typedef struct she_learner_stats {
    she_adv_stats_t adv;
    she_rl_loss_stats_t loss;     /* over every part and epoch (per-token means weighted by
                                     tokens, losses by responses) */
    she_reward_stats_t reward;    /* of the batch's step rewards and pass flags */
    double grad_norm;             /* mean over the updates, before clipping */
    double grad_norm_max;
    double logp_gap_mean, logp_gap_max; /* |learner - behaviour| log-prob, first part */
    long gap_tokens;
    she_learner_gap_t gap[SHE_LEARNER_GAP_VERSIONS]; /* (n_gap) per version, newest first */
    int n_gap;
    she_learner_gap_t gap_older;  /* versions older than gap[], pooled; n_groups 0 if none */
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

/* Runs the learner on dev (engine.h; the CPU until this is called): the policy with its AdamW
 * state and the reference move there, from their host copies as they are now; the host copies
 * are then stale until she_learner_sync_host.  Device errors of she_engine_new (the learner
 * stays where it was then).  Data parallel on CUDA, the gradients are summed on the devices:
 * the dist handle's backend must be nccl. */
she_err_t she_learner_set_device(she_learner_t *ln, const she_device_t *dev, char *errstr,
                                 size_t errstr_size);
/* Copies the policy's weights and AdamW state from the device into the host copies (before a
 * checkpoint is written or the weights are read); nothing to do on the CPU.  SHE_ERR_CUDA. */
she_err_t she_learner_sync_host(she_learner_t *ln, char *errstr, size_t errstr_size);

/* Makes every later step data parallel over d's ranks (borrowed; must outlive ln; see above).
 * SHE_ERR_INVALID when the configuration cannot be split across ranks (batch normalisation
 * with more than one rank). */
she_err_t she_learner_set_dist(she_learner_t *ln, she_dist_t *d, char *errstr,
                               size_t errstr_size);

/* Whether one group can be trained on: responses with one reward each, a prompt, token ids
 * inside the vocabulary, prompt + response within the models' reserved positions.
 * SHE_ERR_INVALID with the reason otherwise. */
she_err_t she_learner_check_group(const she_learner_t *ln, const she_rewarded_group_t *g,
                                  char *errstr, size_t errstr_size);

/* One update from groups[0..n) at learning rate lr.  Every group must pass
 * she_learner_check_group and have the same number of responses G >= 1.  st may be NULL.
 * Returns SHE_ERR_INVALID (and changes nothing) for groups that do not, or for no groups (in
 * all: data parallel, a rank may bring none, and every rank refuses when any rank's groups are
 * refused).  Data parallel, a failed collective returns its error; the ranks then disagree on
 * the parameters and the job must end (dist.h). */
she_err_t she_learner_step(she_learner_t *ln, const she_rewarded_group_t *groups, int n, float lr,
                           she_learner_stats_t *st, char *errstr, size_t errstr_size);

#endif
