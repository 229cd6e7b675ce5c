/* rl.h -- the math of GRPO, SRPO and DPO over plain arrays: stepwise rewards, advantages, the
 * clipped policy loss with its KL penalty, the DPO loss, and their gradients w.r.t. the per-token
 * log-probabilities (what the engine's she_model_backward takes).
 *
 * The chain of thought has five steps (paper §4.3): S1 query interpretation, S2 item
 * interpretation, S3 category match, S4 attribute match, S5 final grade.  Arrays indexed by step
 * use index j-1 for S_j; per-token step indices (from the chain-of-thought parser) are 1..5.
 *
 * Layout: a batch is B responses (rows) of T positions, row-major [B, T]; mask [B, T] is 1 where a
 * position is a response token that takes part in the loss.  Groups are G consecutive rows (the G
 * rollouts of one prompt), so B is a multiple of G.  Inputs and outputs are float (as the engine
 * holds them); every sum and every transcendental is computed in double.
 *
 * Not here: rollouts, the parser, the reward model, I/O, the optimizer (trainer/ and core/ own
 * those).  Nothing allocates; the functions are pure apart from writing their outputs. */
#ifndef SHE_RL_H
#define SHE_RL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define SHE_RL_N_STEPS 5

/* ---- rewards (Eq. 5 and appendix B) ---- */

typedef enum she_reward_mode {
    SHE_REWARD_MODE_OUTCOME = 0, /* S5 only: the final grade against the human label (GRPO) */
    SHE_REWARD_MODE_SUM,         /* GRPO*: the ground-truth verifications of S3, S4 and the S5
                                    grade, summed into one sequence reward reported at S5 */
    SHE_REWARD_MODE_RM,          /* the reward model judges S1..S4; S5 the grade */
    SHE_REWARD_MODE_HYBRID,      /* the paper's: reward model S1, S2; ground truth S3, S4; grade S5 */
    SHE_REWARD_MODE__COUNT
} she_reward_mode_t;

typedef struct she_reward_config {
    she_reward_mode_t mode;
    float weight[SHE_RL_N_STEPS]; /* reward of a correct step; appendix B: 0.2 0.2 0.2 0.2 1.0 */
    /* subtracted from S5's reward of a response with a step that does not parse (0 = none, the
     * paper's setting): without it an unparsable answer earns what a wrong one does, and a
     * policy that drifts into malformed text (a reward model rewarding odd strings) is not
     * pulled back.  On S5, so that SRPO's advantage (Eq. 6) carries it to every step. */
    float format_penalty;
} she_reward_config_t;

/* What the caller learned about one response, per step (index j-1 for S_j). */
typedef struct she_step_verdict {
    uint8_t parsed[SHE_RL_N_STEPS]; /* 1 when the parser extracted the step's output */
    float rm[SHE_RL_N_STEPS];  /* reward-model verdict on S1..S4: P([Correct]) in [0, 1] or 0/1;
                                  < 0 = not judged.  rm[4] is never read. */
    int8_t gt[SHE_RL_N_STEPS]; /* agreement with ground truth: 1 agrees, 0 does not, -1 no ground
                                  truth for this step; gt[4] = final grade == human label */
} she_step_verdict_t;

/* Hybrid mode, appendix B weights. */
she_reward_config_t she_reward_defaults(void);
/* "0.2,0.2,0.2,0.2,1.0" (the value of configuration key `key`, named in the message) into w:
 * five non-negative numbers; SHE_ERR_CONFIG quoting text otherwise. */
she_err_t she_reward_weights_parse(const char *key, const char *text,
                                   float w[SHE_RL_N_STEPS], char *errstr, size_t errstr_size);

/* "outcome" | "sum" | "rm" | "hybrid"; NULL / -1 for anything else. */
const char *she_reward_mode_name(she_reward_mode_t mode);
int she_reward_mode_parse(const char *name); /* the mode, or -1 */

/* Step rewards of n responses: rewards [n, 5], r_j = weight_j * verdict_j with the verdict's
 * source chosen by the mode (see she_reward_mode_t).  A step that did not parse, or whose verdict
 * is missing (rm < 0, gt < 0), earns 0; steps a mode does not use earn 0.  In SUM mode r_1..r_4
 * are 0 and r_5 holds the sum, so the reward is sequence-level under either advantage.
 * pass [n] (NULL allowed): 1 when S5 parsed and the grade is right (gt[4] == 1), whatever the
 * mode. */
void she_rl_step_rewards(const she_reward_config_t *cfg, const she_step_verdict_t *verdicts,
                         int n, float *rewards, uint8_t *pass);

typedef struct she_reward_stats {
    double step_mean[SHE_RL_N_STEPS]; /* mean r_j over the responses */
    double total_mean;                /* mean of sum_j r_j */
    double pass_rate;                 /* mean of pass (NAN when pass is NULL) */
    int n_all_pass, n_all_fail;       /* groups whose G responses all pass / all fail */
} she_reward_stats_t;

/* Reward statistics of B responses in groups of G (pass may be NULL: no pass statistics). */
void she_rl_reward_stats(const float *rewards, const uint8_t *pass, int B, int G,
                         she_reward_stats_t *st);

/* ---- advantages (Eq. 4 and Eq. 6) ---- */

typedef enum she_adv_algo {
    SHE_ADV_ALGO_GRPO = 0, /* sequence-level: R_i = sum_j r_ij, one advantage for every token */
    SHE_ADV_ALGO_SRPO,     /* step-level: a token of step j gets sum_{k>=j} gamma^(k-j) r_ik */
} she_adv_algo_t;

typedef enum she_adv_norm {
    SHE_ADV_NORM_NONE = 0, /* rewards as they are (Eq. 6 as printed) */
    SHE_ADV_NORM_GROUP,    /* z-score over the G responses of the prompt (Eq. 4) */
    SHE_ADV_NORM_BATCH,    /* z-score over all B responses */
} she_adv_norm_t;

typedef struct she_adv_config {
    she_adv_algo_t algo;
    she_adv_norm_t norm;
    float gamma; /* SRPO discount (paper: 1) */
    float clip;  /* |A| <= clip; <= 0 = no clipping (paper: 2) */
    float delta; /* the delta of Eq. 4 added to the std (1e-6) */
} she_adv_config_t;

/* GRPO, group normalisation, gamma 1, clip 2, delta 1e-6. */
she_adv_config_t she_adv_defaults(void);
const char *she_adv_algo_name(she_adv_algo_t algo); /* "grpo" | "srpo" */
int she_adv_algo_parse(const char *name);           /* the algo, or -1 */
const char *she_adv_norm_name(she_adv_norm_t norm); /* "none" | "group" | "batch" */
int she_adv_norm_parse(const char *name);           /* the norm, or -1 */

typedef struct she_adv_stats {
    double mean, std, min, max; /* of the token advantages over mask (after clipping) */
    long n_tokens;              /* masked tokens */
    long n_clipped;             /* masked tokens whose advantage was clipped */
    int n_degenerate;           /* normalisation sets whose values were all equal (see below) */
} she_adv_stats_t;

/* Advantages of B responses (groups of G consecutive rows) from their step rewards [B, 5].
 *
 * Normalisation z-scores a set of values x: (x - mean) / (std + delta), std with Bessel's
 * correction (n - 1, as torch.std which TRL and verl use).  The sets: GRPO -- the G sequence
 * rewards of a group (GROUP) or all B (BATCH); SRPO -- for each step separately, the G rewards of
 * that step in a group (GROUP) or all B (BATCH), before the discounted sum.  A DEGENERATE set,
 * whose values are all exactly equal (std = 0: all right or all wrong, or a step no response
 * earns; also any set of one), normalises to exactly 0 for every member, so it gives no signal
 * (it is counted in n_degenerate); this also holds with delta = 0.
 *
 * step_adv [B, 5] (NULL allowed): the advantage of a token in step j of response i, clipped.
 * adv [B, T] (NULL allowed): per token; step [B, T] gives each masked token's step 1..5 (read
 * only for SRPO; may be NULL for GRPO); 0 where mask is 0.  A step index outside 1..5 at a
 * masked position is a bug (asserts).  st may be NULL (token statistics need adv). */
void she_rl_advantages(const she_adv_config_t *cfg, const float *rewards, int B, int G,
                       const uint8_t *step, const uint8_t *mask, int T, float *step_adv,
                       float *adv, she_adv_stats_t *st);

/* ---- clipped policy loss with KL (Eq. 2 / Eq. 6) ---- */

typedef struct she_rl_loss_config {
    float clip_eps; /* PPO clip epsilon (0.2) */
    float kl_beta;  /* beta of the KL penalty; 0 disables it (ref_logp may then be NULL) */
} she_rl_loss_config_t;

she_rl_loss_config_t she_rl_loss_defaults(void); /* eps 0.2, beta 0.04 */

typedef struct she_rl_loss_stats {
    double loss;      /* pg_loss + kl_loss */
    double pg_loss;   /* -(clipped surrogate), aggregated like the loss */
    double kl_loss;   /* beta * k3, aggregated like the loss */
    /* token means over all masked tokens (not per-response weighted): */
    double kl_mean;   /* k3 estimate of KL(pi || pi_ref); 0 when beta = 0 */
    double clip_frac; /* tokens where the clipped branch is taken (zero surrogate gradient) */
    double clip_frac_low, clip_frac_high; /* ... split by rho < 1-eps (A < 0), rho > 1+eps (A > 0) */
    double ratio_mean, ratio_min, ratio_max;
    double adv_mean;
    double entropy_mean; /* NAN when no entropy was given */
    long n_tokens;
    int n_responses;     /* rows with at least one masked token */
} she_rl_loss_stats_t;

/* L = -(1/N) sum_i (1/|o_i|) sum_t mask_it [ min(rho A, clip(rho, 1-eps, 1+eps) A) - beta k3 ]
 * with rho = exp(logp - old_logp), k3 = exp(ref - logp) - (ref - logp) - 1, |o_i| the masked
 * tokens of row i and N the rows with at least one (rows without any contribute nothing).
 * All arrays [B, T].  Writes dlogp = dL/dlogp [B, T] (0 where mask is 0): where the clipped
 * branch is strictly smaller the surrogate's gradient is 0, elsewhere rho*A (ties are inside
 * the clip range, where both branches agree).  entropy (NULL allowed) is only averaged for
 * logging.  st may be NULL.  Returns L (0 when no token is masked).
 * Micro-batches: L is a mean over this call's rows; scale accumulated gradients accordingly. */
double she_rl_policy_loss(const she_rl_loss_config_t *cfg, const float *logp,
                          const float *old_logp, const float *ref_logp, const float *adv,
                          const uint8_t *mask, const float *entropy, int B, int T, float *dlogp,
                          she_rl_loss_stats_t *st);

/* ---- DPO ---- */

typedef struct she_dpo_stats {
    double loss;
    double reward_acc;      /* fraction of pairs with chosen reward > rejected reward */
    double margin_mean;     /* mean of chosen reward - rejected reward */
    double chosen_reward, rejected_reward; /* means of beta * (logp_sum - ref_sum) */
    int n_pairs;
} she_dpo_stats_t;

/* DPO over P pairs.  logp_c, logp_r [P, T] per-token log-probs of the chosen and rejected
 * responses with masks mask_c, mask_r [P, T]; ref_c, ref_r [P] the frozen reference's summed
 * log-probs of the same responses.  With z = beta * ((sum logp_c - ref_c) - (sum logp_r - ref_r)),
 * L = (1/P) sum -log sigmoid(z).  Writes dlogp_c, dlogp_r [P, T] (0 where masked out); they may
 * point into one array (e.g. a batch of 2P rows).  st may be NULL.  Returns L. */
double she_dpo_loss(float beta, const float *logp_c, const uint8_t *mask_c, const float *ref_c,
                    const float *logp_r, const uint8_t *mask_r, const float *ref_r, int P, int T,
                    float *dlogp_c, float *dlogp_r, she_dpo_stats_t *st);

#endif
