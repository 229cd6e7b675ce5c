/* reward.h -- one rollout group's step rewards (paper Eq. 5 and appendix B): each response is
 * decoded and parsed, each step gets a verdict, and trainer/rl.h turns the verdicts into step
 * rewards by the reward mode; the result is the she_rewarded_group_t message the learner takes.
 *
 * Verdicts per response (she_step_verdict_t):
 *   parsed[j]  the parser accepted step j (an unparsable step earns 0 in every mode);
 *   rm[0..3]   the generative stepwise reward model's P([Correct]) (trainer/rm.h), asked only for
 *              parsed steps the mode uses: steps 1-2 in hybrid, 1-4 in rm; -1 otherwise;
 *   gt[2..3]   agreement of steps 3-4 with the ground truth: the sample's step truth when it has
 *              it, else the label decomposition of the teacher (trainer/teacher.h);
 *   gt[0..1]   agreement of steps 1-2 with the step truth, only on samples that have it (for
 *              measuring the reward model; no mode rewards them): -1 otherwise;
 *   gt[4]      the parsed grade equals the human label.
 * A sample without a label gets -1 everywhere ground truth is asked for, so it earns nothing
 * and never passes.
 *
 * Not here: sampling (trainer/rollout.h), advantages and the loss (trainer/learner.h).  The
 * rewarder reserves its reward-model questions for the largest batch it has seen, growing when
 * a larger one comes. */
#ifndef SHE_REWARD_H
#define SHE_REWARD_H

#include "lexicon.h"
#include "messages.h"
#include "rl.h"
#include "rm.h"
#include "tokenizer.h"

typedef struct she_rewarder she_rewarder_t;

/* A rewarder for cfg (copied) over the policy's tokenizer (borrowed), a reward model (borrowed;
 * required for the rm and hybrid modes, ignored otherwise) and the lexicons teacher chains use
 * (may be NULL; the same ones SFT used).  SHE_ERR_INVALID when the mode needs a reward model
 * and rm is NULL, SHE_ERR_FORMAT when tok lacks the SFT special tokens; *out NULL then.  Free
 * with she_rewarder_free (NULL allowed). */
she_err_t she_rewarder_new(const she_reward_config_t *cfg, const she_tokenizer_t *tok,
                           she_rm_t *rm, const she_lexicon_t *brands,
                           const she_lexicon_t *materials, she_rewarder_t **out, char *errstr,
                           size_t errstr_size);
void she_rewarder_free(she_rewarder_t *rw);

/* The verdicts of every response of groups[0..n), in order (verdicts holds the sum of their
 * n_responses).  SHE_ERR_INVALID for a response with token ids outside the vocabulary, or
 * from the reward model's engine. */
she_err_t she_reward_verdicts(she_rewarder_t *rw, const she_rollout_group_t *groups, int n,
                              she_step_verdict_t *verdicts, char *errstr, size_t errstr_size);

/* Rewards groups[0..n): out[i] (zeroed by the caller) takes over groups[i] (which is left
 * zeroed: no copy of the token arrays) and gets one she_response_reward_t per response --
 * step rewards, their sum, pass -- and the group's pass rate.  verdicts (NULL allowed, else
 * room for every response) receives the verdicts.  On failure nothing is moved and out is
 * left zeroed.  Free out[i] with she_msg_clear_rewarded_group. */
she_err_t she_reward_groups(she_rewarder_t *rw, she_rollout_group_t *groups, int n,
                            she_rewarded_group_t *out, she_step_verdict_t *verdicts,
                            char *errstr, size_t errstr_size);

#endif
