/* reward.c -- verdicts and step rewards of rollout groups (see reward.h). */
#include "reward.h"

#include <stdlib.h>
#include <string.h>

#include "rollout.h"
#include "sft.h"
#include "teacher.h"

struct she_rewarder {
    she_reward_config_t cfg;
    const she_tokenizer_t *tok;
    she_sft_special_t sp;
    she_rm_t *rm;
    const she_lexicon_t *brands, *materials;
    /* reward-model questions of one call, grown to the largest call */
    she_rm_query_t *q;
    int *q_resp;   /* response (flat index) of each question */
    int *q_step;   /* its step 1..4 */
    float *q_p;
    char *texts;   /* (responses, SHE_RESPONSE_TEXT_MAX) decoded texts the questions point at */
    size_t *text_len;
    int cap_q, cap_resp;
};

she_err_t she_rewarder_new(const she_reward_config_t *cfg, const she_tokenizer_t *tok,
                           she_rm_t *rm, const she_lexicon_t *brands,
                           const she_lexicon_t *materials, she_rewarder_t **out, char *errstr,
                           size_t errstr_size) {
    *out = NULL;
    if ((unsigned)cfg->mode >= SHE_REWARD_MODE__COUNT)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "reward: unknown mode %d",
                        (int)cfg->mode);
    if (!rm && (cfg->mode == SHE_REWARD_MODE_RM || cfg->mode == SHE_REWARD_MODE_HYBRID))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "reward: mode %s needs a reward model", she_reward_mode_name(cfg->mode));
    she_sft_special_t sp;
    SHE_TRY(she_sft_special_ids(tok, &sp, errstr, errstr_size));
    she_rewarder_t *rw = calloc(1, sizeof(*rw));
    SHE_CHECK_ALLOC(rw);
    *rw = (she_rewarder_t){.cfg = *cfg, .tok = tok, .sp = sp, .rm = rm, .brands = brands,
                           .materials = materials};
    *out = rw;
    return SHE_OK;
}

void she_rewarder_free(she_rewarder_t *rw) {
    if (!rw)
        return;
    free(rw->q);
    free(rw->q_resp);
    free(rw->q_step);
    free(rw->q_p);
    free(rw->texts);
    free(rw->text_len);
    free(rw);
}

static void reserve(she_rewarder_t *rw, int n_resp) {
    if (n_resp <= rw->cap_resp)
        return;
    int nq = n_resp * SHE_RM_N_STEPS;
    rw->q = realloc(rw->q, sizeof(*rw->q) * nq);
    rw->q_resp = realloc(rw->q_resp, sizeof(int) * nq);
    rw->q_step = realloc(rw->q_step, sizeof(int) * nq);
    rw->q_p = realloc(rw->q_p, sizeof(float) * nq);
    rw->texts = realloc(rw->texts, (size_t)n_resp * SHE_RESPONSE_TEXT_MAX);
    rw->text_len = realloc(rw->text_len, sizeof(size_t) * n_resp);
    SHE_CHECK_ALLOC(rw->q);
    SHE_CHECK_ALLOC(rw->q_resp);
    SHE_CHECK_ALLOC(rw->q_step);
    SHE_CHECK_ALLOC(rw->q_p);
    SHE_CHECK_ALLOC(rw->texts);
    SHE_CHECK_ALLOC(rw->text_len);
    rw->cap_resp = n_resp;
    rw->cap_q = nq;
}

/* Does the mode reward step (1..4) with the reward model? */
static int mode_uses_rm(she_reward_mode_t mode, int step) {
    return mode == SHE_REWARD_MODE_RM || (mode == SHE_REWARD_MODE_HYBRID && step <= 2);
}

she_err_t she_reward_verdicts(she_rewarder_t *rw, const she_rollout_group_t *groups, int n,
                              she_step_verdict_t *verdicts, char *errstr, size_t errstr_size) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += groups[i].n_responses;
    reserve(rw, total);
    int nq = 0, at = 0;
    for (int i = 0; i < n; i++) {
        const she_sample_t *s = &groups[i].sample;
        she_cot_t truth;
        char e[SHE_ERRSTR_SIZE];
        int have_truth = s->grade != SHE_GRADE_UNKNOWN &&
                         she_teacher_chain(s, rw->brands, rw->materials, &truth, e, sizeof(e)) ==
                             SHE_OK;
        for (int g = 0; g < groups[i].n_responses; g++, at++) {
            she_step_verdict_t *v = &verdicts[at];
            char *text = rw->texts + (size_t)at * SHE_RESPONSE_TEXT_MAX;
            she_cot_parsed_t parsed;
            SHE_TRY(she_response_parse(rw->tok, rw->sp.eos, &groups[i].responses[g], &parsed,
                                       text, &rw->text_len[at], errstr, errstr_size));
            for (int j = 0; j < SHE_RL_N_STEPS; j++) {
                int step = j + 1;
                v->parsed[j] = (uint8_t)parsed.ok[j];
                v->rm[j] = -1.0f;
                int known = have_truth && (step >= 3 || s->has_steps);
                v->gt[j] = known ? (int8_t)she_rm_step_correct(&truth, &parsed, step) : -1;
                if (step <= SHE_RM_N_STEPS && parsed.ok[j] && mode_uses_rm(rw->cfg.mode, step)) {
                    rw->q[nq] = (she_rm_query_t){s, text, rw->text_len[at], step};
                    rw->q_resp[nq] = at;
                    rw->q_step[nq++] = step;
                }
            }
            /* the grade against the label, not the teacher (the same thing unless noise) */
            if (s->grade != SHE_GRADE_UNKNOWN)
                v->gt[4] = (int8_t)(parsed.ok[4] && parsed.cot.grade == s->grade);
        }
    }
    if (nq > 0) {
        SHE_TRY(she_rm_judge(rw->rm, rw->q, nq, rw->q_p, NULL, errstr, errstr_size));
        for (int k = 0; k < nq; k++)
            verdicts[rw->q_resp[k]].rm[rw->q_step[k] - 1] = rw->q_p[k];
    }
    return SHE_OK;
}

she_err_t she_reward_groups(she_rewarder_t *rw, she_rollout_group_t *groups, int n,
                            she_rewarded_group_t *out, she_step_verdict_t *verdicts,
                            char *errstr, size_t errstr_size) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += groups[i].n_responses;
    she_step_verdict_t *v = verdicts ? verdicts : malloc(sizeof(*v) * (total ? total : 1));
    float *rewards = malloc(sizeof(float) * SHE_RL_N_STEPS * (total ? total : 1));
    uint8_t *pass = malloc(total ? total : 1);
    SHE_CHECK_ALLOC(v);
    SHE_CHECK_ALLOC(rewards);
    SHE_CHECK_ALLOC(pass);
    she_err_t err = she_reward_verdicts(rw, groups, n, v, errstr, errstr_size);
    if (err == SHE_OK) {
        she_rl_step_rewards(&rw->cfg, v, total, rewards, pass);
        int at = 0;
        for (int i = 0; i < n; i++) {
            she_rewarded_group_t *o = &out[i];
            o->rollout = groups[i];
            memset(&groups[i], 0, sizeof(groups[i]));
            int G = o->rollout.n_responses;
            o->n_rewards = G;
            o->rewards = calloc(G ? G : 1, sizeof(*o->rewards));
            SHE_CHECK_ALLOC(o->rewards);
            int n_pass = 0;
            for (int g = 0; g < G; g++, at++) {
                she_response_reward_t *r = &o->rewards[g];
                double sum = 0;
                for (int j = 0; j < SHE_RL_N_STEPS; j++) {
                    r->step_rewards[j] = rewards[(size_t)at * SHE_RL_N_STEPS + j];
                    sum += r->step_rewards[j];
                }
                r->total = (float)sum;
                r->pass = pass[at];
                n_pass += pass[at];
            }
            o->pass_rate = G ? (float)n_pass / (float)G : 0.0f;
        }
    }
    if (!verdicts)
        free(v);
    free(rewards);
    free(pass);
    return err;
}
