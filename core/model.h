/* model.h -- the Llama/Qwen2-family decoder-only transformer, forward and backward on the CPU.
 *
 * Architecture (Hugging Face LlamaForCausalLM / Qwen2ForCausalLM): token embedding; N blocks of
 * RMSNorm -> causal self-attention with RoPE ("rotate_half" convention, rope_theta) and
 * grouped-query heads, optional q/k/v bias (Qwen2) -> residual -> RMSNorm -> SwiGLU MLP
 * (down(silu(gate(x)) * up(x))) -> residual; final RMSNorm; LM head, optionally tied to the
 * embedding.
 *
 * Training interface: she_model_forward() runs a padded batch [B, T] and returns, per position,
 * the log-probability of a target token under softmax(logits / temperature) and that
 * distribution's entropy; she_model_backward() takes dL/dlogp (and optionally dL/dentropy) per
 * position and ADDS the parameter gradients into the gradient block, so gradient accumulation
 * is several forward/backward pairs between she_model_zero_grad() and one optimizer step
 * (core/optim.h).  Every loss (SFT, DPO, GRPO, SRPO) is written outside the engine.
 *
 * Memory (llm.c style): parameters and gradients each live in ONE contiguous float block; the
 * tensor table `tensors` names every Hugging Face tensor and points into it; activations are
 * reserved once for max_batch x max_seq at creation, so a step allocates nothing.  Block
 * layout, in order (tensor-type major, every weight in HF's [out, in] layout):
 *   embed   (V, D)                     model.embed_tokens.weight
 *   wqkv    (L, D + 2*KVD, D)          per layer: q_proj rows, then k_proj rows, then v_proj
 *   wo      (L, D, D)                  o_proj
 *   wgu     (L, 2*F, D)                per layer: gate_proj rows, then up_proj rows
 *   wd      (L, D, F)                  down_proj
 *   lm_head (V, D)                     absent when tied (then lm_head == embed)
 *   --- n_decay: everything above is a matrix and gets weight decay, nothing below does ---
 *   ln1     (L, D)                     input_layernorm
 *   bqkv    (L, D + 2*KVD)             q/k/v biases, only when attention_bias
 *   ln2     (L, D)                     post_attention_layernorm
 *   lnf     (D)                        model.norm.weight
 * (D hidden, F intermediate, V vocab, L layers, KVD = n_kv_heads * head_dim.)  The fused
 * q|k|v and gate|up rows make one GEMM per projection; each HF tensor is a contiguous slice.
 *
 * Threads: all parallelism comes from OpenMP (n_threads = omp_get_max_threads() at creation);
 * OpenBLAS is switched to one thread for the duration of each forward/backward call (and
 * restored after), and each GEMM is split across the OpenMP threads.  This avoids running
 * OpenBLAS's own pthread pool and the OpenMP pool at once on the same cores (both spin while
 * waiting, and each steals the cores the other needs).  Every reduction has a fixed order that
 * does not depend on timing, so results are bit-identical run to run for a given thread count.
 *
 * Not here: sampling with a KV cache (it builds on the helpers at the end of this header and
 * the parameter layout above), the optimizer (optim.h), tokenization. */
#ifndef SHE_MODEL_H
#define SHE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "optim.h"

#define SHE_MODEL_TYPE_MAX 16

typedef struct she_model_config {
    char model_type[SHE_MODEL_TYPE_MAX]; /* "llama" or "qwen2" */
    int vocab_size;              /* V */
    int hidden_size;             /* D */
    int intermediate_size;       /* F */
    int n_layers;                /* L: num_hidden_layers */
    int n_heads;                 /* num_attention_heads; head_dim = D / n_heads */
    int n_kv_heads;              /* num_key_value_heads, divides n_heads */
    int max_position_embeddings;
    double rope_theta;
    double rms_norm_eps;
    int tie_word_embeddings;     /* 1: lm_head shares the embedding matrix */
    int attention_bias;          /* 1: q/k/v projections have biases (always for qwen2) */
} she_model_config_t;

/* Pointers into one float block (parameters or gradients); shapes as in the layout above. */
typedef struct she_model_weights {
    float *embed;   /* (V, D) */
    float *wqkv;    /* (L, D + 2*KVD, D) */
    float *wo;      /* (L, D, D) */
    float *wgu;     /* (L, 2*F, D) */
    float *wd;      /* (L, D, F) */
    float *lm_head; /* (V, D); == embed when tied */
    float *ln1;     /* (L, D) */
    float *bqkv;    /* (L, D + 2*KVD); NULL without attention_bias */
    float *ln2;     /* (L, D) */
    float *lnf;     /* (D) */
} she_model_weights_t;

/* One Hugging Face tensor: a named slice of the parameter (and gradient) block. */
typedef struct she_model_tensor {
    char name[96];
    int ndim;         /* 1 or 2 */
    int64_t shape[2];
    size_t offset;    /* in floats from the start of the block */
} she_model_tensor_t;

/* Activations saved by the forward pass for the backward pass; N = max_batch * max_seq rows
 * reserved, the first B*T used.  QKV = D + 2*KVD. */
typedef struct she_model_acts {
    float *res;     /* (L+1, N, D) residual stream entering layer l; res[L] enters the final norm */
    float *res_mid; /* (L, N, D) residual after the attention half of layer l */
    float *h1;      /* (L, N, D) input_layernorm output */
    float *rstd1;   /* (L, N) its 1/rms */
    float *qkv;     /* (L, N, QKV) q|k|v after bias and RoPE */
    float *att;     /* (L, N, D) attention output (o_proj input) */
    float *lse;     /* (L, B, H, T) log-sum-exp of each scaled score row; masked rows: -INF */
    float *h2;      /* (L, N, D) post_attention_layernorm output */
    float *rstd2;   /* (L, N) */
    float *gu;      /* (L, N, 2F) gate|up pre-activations */
    float *act;     /* (L, N, F) silu(gate) * up */
    float *hf;      /* (N, D) final norm output */
    float *rstdf;   /* (N) */
    float *logits;  /* (N, V) raw logits after forward; overwritten by dlogits in backward */
    float *row_lse; /* (N) log-sum-exp of logits / temperature */
    float *row_ent; /* (N) entropy of softmax(logits / temperature) */
    /* backward scratch */
    float *dres;    /* (N, D) gradient of the residual stream */
    float *dh;      /* (N, D) */
    float *dqkv;    /* (N, QKV) */
    float *datt;    /* (N, D) */
    float *dgu;     /* (N, 2F) */
    float *dact;    /* (N, F) */
    float *scores;  /* (n_threads, 2, T, T) per-thread attention score tiles */
    /* the batch of the last forward, copied so the caller may reuse its arrays */
    int32_t *tokens;  /* (N) */
    int32_t *targets; /* (N), -1 = no target */
    int32_t *pos;     /* (N) RoPE positions */
    uint8_t *mask;    /* (N) */
} she_model_acts_t;

typedef struct she_model {
    she_model_config_t cfg;
    int head_dim, kv_dim, qkv_dim; /* hd = D / H; KVD = n_kv_heads * hd; QKV = D + 2 * KVD */
    int max_batch, max_seq;
    int n_threads;

    float *params;                /* (n_params) one block */
    float *grads;                 /* (n_params) one block, same layout */
    size_t n_params;
    size_t n_decay;               /* params[0, n_decay) get weight decay (the matrices) */
    she_model_weights_t w;        /* into params */
    she_model_weights_t g;        /* into grads */
    she_model_tensor_t *tensors;  /* (n_tensors) HF tensors in file order */
    int n_tensors;

    float *rope_cos, *rope_sin;   /* (max_seq, hd/2) */
    float *act_block;             /* the one activation allocation */
    she_model_acts_t a;
    int B, T;                     /* shape of the last forward; 0 before any */
    float temperature;            /* of the last forward */
    int backward_ready;           /* a forward with targets ran and no backward since */
} she_model_t;

/* ---- configuration ---- */

/* Fills cfg from a Hugging Face config.json.  Required keys: hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, vocab_size, max_position_embeddings, rms_norm_eps;
 * optional: num_key_value_heads (= heads), rope_theta (10000), tie_word_embeddings (false),
 * attention_bias (llama, false; qwen2 always has q/k/v bias), head_dim (must equal D / heads),
 * model_type ("llama" | "qwen2", default from `architectures`, else "llama").
 * Returns SHE_ERR_NOT_FOUND if the file is missing, SHE_ERR_FORMAT for bad JSON, a missing key
 * or a wrong type, SHE_ERR_CONFIG for values she_model_config_validate refuses; messages name
 * the file and the key. */
she_err_t she_model_config_load(const char *path, she_model_config_t *cfg, char *errstr,
                                size_t errstr_size);
/* Writes cfg as a Hugging Face config.json (with "architectures" and "torch_dtype": "float32")
 * to path.  SHE_ERR_IO on failure. */
she_err_t she_model_config_save(const she_model_config_t *cfg, const char *path, char *errstr,
                                size_t errstr_size);
/* Checks sizes are positive, heads divide hidden, kv heads divide heads, head_dim is even,
 * model_type is known, rope_theta and rms_norm_eps positive.  SHE_ERR_CONFIG naming the key. */
she_err_t she_model_config_validate(const she_model_config_t *cfg, char *errstr,
                                    size_t errstr_size);

/* ---- life cycle ---- */

/* Creates a model for batches of at most max_batch rows of at most max_seq positions
 * (max_seq <= max_position_embeddings), allocating parameters, gradients and all activations.
 * Parameters are zero until she_model_init_weights or she_model_load_weights.  Returns
 * SHE_ERR_CONFIG for a bad config or sizes, SHE_ERR_NOMEM if the blocks cannot be allocated
 * (*out = NULL then).  Free with she_model_free. */
she_err_t she_model_new(const she_model_config_t *cfg, int max_batch, int max_seq,
                        she_model_t **out, char *errstr, size_t errstr_size);
void she_model_free(she_model_t *m);

/* Hugging Face's initialisation: matrices N(0, std) (std 0.02 in HF configs), norms 1, biases 0,
 * from a seeded generator (same seed => same weights, whatever the thread count). */
void she_model_init_weights(she_model_t *m, uint64_t seed, float std);

/* Floating-point operations of one training step (forward + backward) on B x T tokens:
 * 6 * (matrix parameters, LM head included) * B*T for the projections, plus
 * 12 * L * D * T * B*T for attention (scores and values, full T x T as computed). */
double she_model_flops_per_step(const she_model_config_t *cfg, int B, int T);

/* ---- training ---- */

/* Runs the model on tokens [B, T] (row-major).  mask [B, T]: 1 = real token, 0 = padding
 * (NULL = all real); a padding position is never attended to.  RoPE positions count the real
 * tokens before a position (cumsum(mask) - 1, as HF computes position_ids from the attention
 * mask), so right padding gives 0..T-1 and left padding starts each row at 0.  targets [B, T]
 * (NULL allowed): at each real position with target >= 0, logp = log softmax(logits/temperature)
 * [target] and, if entropy != NULL, entropy = -sum p log p of that distribution; both 0 at
 * padding and where target < 0.  The raw logits stay in m->a.logits until the next backward.
 * Returns SHE_ERR_INVALID (nothing computed) for B or T outside the reserved sizes, a
 * temperature <= 0, or a token / target id >= vocab_size or a token < 0. */
she_err_t she_model_forward(she_model_t *m, const int32_t *tokens, const uint8_t *mask,
                            const int32_t *targets, int B, int T, float temperature, float *logp,
                            float *entropy, char *errstr, size_t errstr_size);

/* The argument checks of she_model_forward (shared with the CUDA backend): SHE_ERR_INVALID for a
 * batch outside max_batch x max_seq, temperature <= 0, or token / target ids out of range. */
she_err_t she_model_check_batch(const she_model_config_t *c, int max_batch, int max_seq,
                                const int32_t *tokens, const int32_t *targets, int B, int T,
                                float temperature, char *errstr, size_t errstr_size);

/* Back-propagates dL/dlogp [B, T] and, if non-NULL, dL/dentropy [B, T] of the last forward
 * (which must have had targets), ADDING into m->grads.  Values at padding positions and where
 * target < 0 are ignored.  Destroys the logits of that forward.  Calling it twice for one
 * forward is a bug (asserts). */
void she_model_backward(she_model_t *m, const float *dlogp, const float *dentropy);

void she_model_zero_grad(she_model_t *m);

/* One optimizer step on the whole parameter block: global-norm clipping to max_grad_norm
 * (<= 0: no clipping) after multiplying the gradients by grad_scale (e.g. 1/accumulation
 * steps), then AdamW at learning rate lr with weight decay on the matrices only (norm weights
 * and biases are not decayed).  Returns the gradient norm before clipping (after grad_scale). */
float she_model_adamw_step(she_model_t *m, she_adamw_t *opt, const she_adamw_config_t *hp,
                           float lr, float grad_scale, float max_grad_norm);

/* ---- checkpoints ----
 * A checkpoint directory holds config.json, model.safetensors (F32, HF names) and optionally
 * optimizer.safetensors (exp_avg.<name> and exp_avg_sq.<name> per tensor, metadata "step"),
 * plus whatever the caller adds (tokenizer.json, ...), and manifest.json written by
 * she_ckptdir_commit.  To add files: she_ckptdir_begin(final, tmp), she_model_write_files(m,
 * opt, tmp), write the others into tmp, she_ckptdir_commit(tmp, final); she_model_save does the
 * three steps for the model alone.  The engine has no random state in a step (no dropout), so
 * parameters, m, v and step are all exact resume needs. */

/* Writes config.json, model.safetensors and, when opt != NULL, optimizer.safetensors into the
 * existing directory dir.  SHE_ERR_IO / SHE_ERR_INVALID from the writers. */
she_err_t she_model_write_files(const she_model_t *m, const she_adamw_t *opt, const char *dir,
                                char *errstr, size_t errstr_size);
/* Atomically saves into final_dir (replacing it if present): begin, write files, commit.  On
 * failure the temp dir is removed and final_dir is unchanged. */
she_err_t she_model_save(const she_model_t *m, const she_adamw_t *opt, const char *final_dir,
                         char *errstr, size_t errstr_size);
/* Verifies dir's manifest, reads config.json and creates a model (see she_model_new) holding
 * model.safetensors' weights (F32, BF16 or F16).  When opt_out != NULL also reads
 * optimizer.safetensors (which must exist) into a new optimizer.  Refuses, with a message naming
 * the file and the tensor or key, a manifest or hash mismatch, a missing or malformed config
 * key, a missing, extra or wrongly shaped tensor; *out (and *opt_out) are NULL on failure. */
she_err_t she_model_load(const char *dir, int max_batch, int max_seq, she_model_t **out,
                         she_adamw_t **opt_out, char *errstr, size_t errstr_size);
/* Reads the weights of a model.safetensors whose tensors match m's table exactly. */
she_err_t she_model_load_weights(she_model_t *m, const char *path, char *errstr,
                                 size_t errstr_size);

/* ---- building blocks, shared with the sampler (single rows or many) ---- */

/* C = alpha op(A) op(B) + beta C (row-major, op = transpose when ta/tb), split across n_threads
 * OpenMP threads that each call sgemm on a slice of C.  Expects OpenBLAS set to one thread
 * (openblas_set_num_threads(1)): see "Threads" above for why the two pools must not mix. */
void she_gemm(int n_threads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* out[r] = x[r] / rms(x[r]) * w for n_rows rows of dim; rstd[r] = 1/rms (rstd may be NULL). */
void she_rmsnorm(float *out, float *rstd, const float *x, const float *w, int n_rows, int dim,
                 float eps);
/* out (rows, n_out) = in (rows, n_in) @ w^T + bias, w in [n_out, n_in] layout, bias may be
 * NULL.  Calls sgemm as it is: the caller decides OpenBLAS's thread count. */
void she_matmul(float *out, const float *in, const float *w, const float *bias, int rows,
                int n_in, int n_out);
/* Rotates n_heads heads of head_dim floats (contiguous) in place by the angles whose cos/sin
 * (head_dim/2 each) are given: HF rotate_half, x' = x*cos + rotate_half(x)*sin. */
void she_rope(float *x, int n_heads, int head_dim, const float *cos, const float *sin);
/* out[i] = silu(gu[i]) * gu[F + i] for one row of gate|up (2F floats). */
void she_swiglu(float *out, const float *gu, int F);
/* e^x for x in float range, accurate to a few ulp, written so loops over it vectorise. */
float she_expf(float x);

#endif
