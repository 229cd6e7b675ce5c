/* sampler.h -- batched generation with a KV cache on the CPU engine (model.h).
 *
 * she_sampler_generate() continues B prompts (each its own length) by up to max_new_tokens
 * tokens: prompts are prefilled in packed chunks (all prompts' tokens in one set of GEMMs), then
 * every still-active row decodes one token per step, all rows in one GEMM per projection.
 * Rows whose prompt is the same pointer with the same length (a GRPO group: G responses to one
 * prompt) are prefilled once and their cache copied.
 *
 * Sampling: logits / temperature, then top-k, then top-p (nucleus), from a per-row generator
 * seeded by (seed, row index): the same inputs and seed give bit-identical samples; a row's
 * draws do not depend on the other rows (only the last bits of its logits may, through where
 * it sits in the batched GEMMs).  temperature == 0 means greedy (argmax).  For each sampled token it returns
 *   logp      -- log-probability under softmax(logits / temperature) over the whole vocabulary,
 *                exactly what she_model_forward computes for that token at that temperature
 *                (the "old log-probs" of PPO/GRPO/SRPO: the learner's ratio compares like with
 *                like); for greedy decoding, under temperature 1;
 *   logp_trunc-- (optional) log-probability under the truncated, renormalised top-k/top-p
 *                distribution the token was actually drawn from.
 * A row stops after a stop token (kept in the output), after a stop string appears in its
 * decoded output (needs a tokenizer; the tokens up to and including the one completing it are
 * kept), or at max_new_tokens.
 *
 * Memory: the KV cache (2 x L x max_batch x max_seq x kv_dim floats) and all scratch are
 * reserved by she_sampler_new; generation allocates nothing. */
#ifndef SHE_SAMPLER_H
#define SHE_SAMPLER_H

#include <stdint.h>

#include "error.h"
#include "model.h"
#include "tokenizer.h"

typedef enum she_finish {
    SHE_FINISH_LENGTH = 0, /* reached max_new_tokens */
    SHE_FINISH_STOP_TOKEN,
    SHE_FINISH_STOP_STRING,
} she_finish_t;

typedef struct she_sample_params {
    float temperature;    /* > 0, or 0 for greedy */
    int top_k;            /* 0 = no top-k */
    float top_p;          /* in (0, 1]; 1 = no nucleus truncation */
    int max_new_tokens;   /* >= 1 */
    const int32_t *stop_ids;      /* tokens that end a row (may be NULL) */
    int n_stop_ids;
    const char *const *stop_strings; /* strings that end a row (needs tok) */
    int n_stop_strings;
    const she_tokenizer_t *tok;   /* for stop strings; may be NULL otherwise */
} she_sample_params_t;

typedef struct she_sampler_s she_sampler_t;

/* Reserves a cache for max_batch rows of at most max_seq positions (prompt + new tokens,
 * <= max_position_embeddings).  The model must outlive the sampler; its weights are read at
 * each call, so a reloaded policy is used as soon as the caller swaps the weights. */
she_err_t she_sampler_new(const she_model_t *m, int max_batch, int max_seq, she_sampler_t **out,
                          char *errstr, size_t errstr_size);
void she_sampler_free(she_sampler_t *s);

/* Generates for B rows.  prompts[b] points at prompt_lens[b] >= 1 token ids.  Outputs, row-major
 * with row stride p->max_new_tokens: out_tokens and out_logp (both required), out_logp_trunc (may be NULL); out_lens[b]
 * = tokens generated; finish[b] (may be NULL) says why the row ended.  SHE_ERR_INVALID (nothing
 * generated) for B > max_batch, a prompt + max_new_tokens longer than max_seq, a bad token id
 * or bad parameters. */
she_err_t she_sampler_generate(she_sampler_t *s, const int32_t *const *prompts,
                               const int *prompt_lens, int B, const she_sample_params_t *p,
                               uint64_t seed, int32_t *out_tokens, float *out_logp,
                               float *out_logp_trunc, int *out_lens, she_finish_t *finish,
                               char *errstr, size_t errstr_size);

/* ---- the draw, shared by every backend (the CUDA sampler calls these on the host) ---- */

/* Bytes of decoded output kept per row to look for stop strings. */
#define SHE_SAMPLE_STOP_TAIL 256

/* The generator state of row `row` for a generate call with `seed`. */
uint64_t she_sample_row_seed(uint64_t seed, int row);
/* Draws one token from logits z (V) under p (see above for logp and logp_trunc); probs and cand
 * are V-sized scratch. */
int32_t she_sample_draw(const float *z, int V, const she_sample_params_t *p, uint64_t *rng,
                        float *probs, int32_t *cand, float *logp, float *logp_trunc);
/* 1 if tok is one of p's stop ids. */
int she_sample_is_stop_id(const she_sample_params_t *p, int32_t tok);
/* Appends tok's text to a row's tail (SHE_SAMPLE_STOP_TAIL bytes, *tail_len used) and returns 1
 * if a stop string of p now ends inside it (0 without stop strings or tokenizer). */
int she_sample_hits_stop_string(char *tail, int *tail_len, int32_t tok,
                                const she_sample_params_t *p);

/* After row token `tok` (the row's last allowed one when `last`): 1 if the row ends, with the
 * reason in *why (stop token, stop string via the row's tail, or length). */
int she_sample_row_done(const she_sample_params_t *p, char *tail, int *tail_len, int32_t tok,
                        int last, she_finish_t *why);

/* Floating-point operations of generating n_new tokens per row after prompts of prompt_len,
 * for B rows (projections 2 * matrix params per token, attention 4 * L * D * context). */
double she_sampler_flops(const she_model_config_t *cfg, int B, int prompt_len, int n_new);

#endif
