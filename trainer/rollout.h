/* rollout.h -- the policy's G responses per prompt (paper Algorithm 1, line 4), packed as the
 * she_rollout_group_t messages the reward step and the learner consume (core/messages.h), so the
 * streaming pipeline ships them over Kafka unchanged.
 *
 * For each prompt sample: the prompt is the one SFT trains on and the judge decodes from
 * (she_sft_encode_prompt: <|bos|> + she_cot_format_prompt(), item text shortened to fit); the
 * sampler draws G continuations (default temperature 0.99, top-k 100: paper §5.1.5) that stop
 * as the judge's do -- at <|eos|>, once the text holds a complete step 5 ("5. Grade: L3"), or at
 * the token limit -- keeping each token's behaviour log-prob under softmax(logits/temperature)
 * over the whole vocabulary, the quantity the learner's training forward computes at that
 * temperature.  Each response is decoded like the judge's (up to the first <|eos|>, other special
 * tokens as their text), parsed (trainer/cot.h) and given step spans: runs of tokens with the
 * same step index from she_cot_token_steps (tokens before step 1 belong to step 1, after step 5
 * to step 5; <|eos|> to the step of the text before it).
 *
 * Not here: rewards (trainer/reward.h), the learner, selecting prompts.  Buffers for the
 * largest batch are reserved by she_rollout_new; the groups written are malloc'd (the
 * messages own their arrays) and freed with she_msg_clear_rollout_group. */
#ifndef SHE_ROLLOUT_H
#define SHE_ROLLOUT_H

#include <stdint.h>

#include "cot.h"
#include "messages.h"
#include "model.h"
#include "tokenizer.h"

typedef struct she_rollout_config {
    int group_size;        /* G responses per prompt (16) */
    float temperature;     /* 0.99; 0 = greedy */
    int top_k;             /* 100; 0 = none */
    float top_p;           /* 1 = none */
    int max_new_tokens;    /* response budget (96) */
    int max_prompt_tokens; /* longer prompts are refused (160) */
    const char *device;    /* "cpu" (NULL, the default), "cuda" or "cuda:N" (core/engine.h);
                            * read by she_rollout_new only */
} she_rollout_config_t;

she_rollout_config_t she_rollout_defaults(void);

typedef struct she_rollout she_rollout_t;

/* A rollout engine over `policy` and its tokenizer (both borrowed; the policy is only read)
 * for up to max_prompts prompts per call (G rows each), generating on cfg->device.  On the CPU
 * the weights are read at each call, so a policy updated in place is sampled from at once; on
 * a CUDA device they are copied there whenever she_rollout_generate gets another
 * policy_version than the call before (so a policy updated in place must come with a new
 * version, as policy_watch.h and the trainers give).  Needs the SFT special tokens in tok and
 * policy->cfg.max_position_embeddings >= max_prompt_tokens + max_new_tokens.  On failure
 * returns SHE_ERR_INVALID / SHE_ERR_FORMAT / SHE_ERR_NOMEM, SHE_ERR_CONFIG / SHE_ERR_NOT_FOUND
 * for a malformed or absent device, SHE_ERR_CUDA, with *out = NULL.  Free with
 * she_rollout_free (NULL allowed). */
she_err_t she_rollout_new(const she_model_t *policy, const she_tokenizer_t *tok,
                          const she_rollout_config_t *cfg, int max_prompts, she_rollout_t **out,
                          char *errstr, size_t errstr_size);
void she_rollout_free(she_rollout_t *ro);

/* G responses for each of samples[0..n) (n <= max_prompts).  groups[i] must be zeroed; it
 * receives a copy of the sample, group_id "<sample_id>@<policy_version>/<seed>", the prompt
 * tokens and the G responses with log-probs and step spans (created_ms is left 0 for the
 * caller: the offline trainer keeps its output free of clock readings).  seed fixes the draws (row r of the
 * call draws from (seed, r)), so the same inputs give the same groups.  On failure every group
 * is left zeroed and errstr says why (a prompt too long, a sample without query/title). */
she_err_t she_rollout_generate(she_rollout_t *ro, const she_sample_t *const *samples, int n,
                               int64_t policy_version, uint64_t seed, she_rollout_group_t *groups,
                               char *errstr, size_t errstr_size);

#define SHE_RESPONSE_TEXT_MAX (2 * SHE_COT_MAX_CHAIN) /* decoded bytes kept per response */

/* The text of a response as the judge reads it -- up to the first eos_id, other special tokens
 * as their text -- into buf (capacity SHE_RESPONSE_TEXT_MAX, NUL-terminated, cut there), *len
 * its length.  With tok_end != NULL (capacity r->n_tokens) also the byte offset just past each
 * token (tokens from eos_id on end where the text does).  SHE_ERR_INVALID for a token outside
 * the vocabulary. */
she_err_t she_response_text(const she_tokenizer_t *tok, int32_t eos_id, const she_response_t *r,
                            char *buf, size_t *len, int *tok_end, char *errstr,
                            size_t errstr_size);

/* Decodes and parses a response (a chain that does not parse fully is not an error here:
 * parsed->ok says which steps did).  text (capacity SHE_RESPONSE_TEXT_MAX, may be NULL)
 * receives the decoded text, *len (may be NULL) its length.  SHE_ERR_INVALID only for bad
 * token ids. */
she_err_t she_response_parse(const she_tokenizer_t *tok, int32_t eos_id, const she_response_t *r,
                             she_cot_parsed_t *parsed, char *text, size_t *len, char *errstr,
                             size_t errstr_size);

/* Decodes and parses r and sets its step spans from the parse (as rollouts do): each token
 * gets the step of the line holding its last byte (she_cot_token_steps).  Replaces r->spans.
 * SHE_ERR_INVALID only for bad token ids. */
she_err_t she_response_make_spans(const she_tokenizer_t *tok, int32_t eos_id, she_response_t *r,
                                  char *errstr, size_t errstr_size);

/* Sets the spans of r from a step index (1..5) per token: one span per run of equal steps.
 * Replaces r->spans (malloc'd). */
void she_response_set_spans(she_response_t *r, const int *step);

/* Step index 1..5 of every token of r (capacity r->n_tokens) from its spans; a token outside
 * every span takes the step of the span before it (step 1 before the first). */
void she_response_token_steps(const she_response_t *r, uint8_t *step);

#endif
