/* optim.h -- AdamW over one flat parameter block, learning-rate schedules, gradient norms.
 *
 * The optimizer knows nothing of tensors: it updates params[0, n) from grads[0, n), with weight
 * decay on params[0, n_decay) only (the model orders its block so that the matrices come first
 * and norm weights / biases last; see model.h).  AdamW (Loshchilov & Hutter) as in PyTorch's
 * torch.optim.AdamW: bias-corrected moments, decay decoupled from the gradient
 * (p -= lr * wd * p before the Adam update).  Reductions run in fixed-size chunks summed in a
 * fixed order, so a step is bit-identical run to run whatever the thread count.
 *
 * Not here: the loss, gradient accumulation (the model's backward adds into its gradient block;
 * the caller passes 1/steps as grad_scale), saving (model.h writes m, v and step). */
#ifndef SHE_OPTIM_H
#define SHE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct she_adamw_config {
    float beta1;        /* 0.9 */
    float beta2;        /* 0.999 (0.95 common for LLMs) */
    float eps;          /* 1e-8 */
    float weight_decay; /* 0.0 .. 0.1 */
} she_adamw_config_t;

typedef struct she_adamw {
    float *m;     /* (n) first moment */
    float *v;     /* (n) second moment */
    size_t n;
    int64_t step; /* completed updates; the next update uses t = step + 1 */
} she_adamw_t;

/* PyTorch's defaults: 0.9, 0.999, 1e-8, weight decay 0.01. */
she_adamw_config_t she_adamw_defaults(void);

/* Zeroed state for n parameters; aborts if the memory cannot be had (start-up allocation).
 * Free with she_adamw_free (NULL allowed). */
she_adamw_t *she_adamw_new(size_t n);
void she_adamw_free(she_adamw_t *opt);

/* One update: g = grads * grad_scale; m, v moments; bias correction with t = step + 1;
 * p -= lr * (wd * p [only i < n_decay] + m_hat / (sqrt(v_hat) + eps)); step++. */
void she_adamw_update(she_adamw_t *opt, float *params, const float *grads, size_t n_decay,
                      const she_adamw_config_t *hp, float lr, float grad_scale);

/* sqrt(sum g^2) accumulated in double in fixed chunks (deterministic). */
double she_grad_norm(const float *grads, size_t n);
/* The factor that brings a gradient of norm `norm` down to max_norm: min(1, max_norm / norm);
 * 1 when max_norm <= 0 (no clipping) or norm is 0. */
float she_grad_clip_scale(double norm, float max_norm);

typedef enum she_lr_kind {
    SHE_LR_CONSTANT = 0, /* warm-up, then max_lr */
    SHE_LR_COSINE,       /* warm-up, then cosine from max_lr to min_lr at total_steps */
} she_lr_kind_t;

typedef struct she_lr_schedule {
    she_lr_kind_t kind;
    float max_lr;
    float min_lr;         /* cosine floor */
    int64_t warmup_steps; /* linear from max_lr/warmup_steps at step 0 to max_lr */
    int64_t total_steps;  /* cosine end; later steps stay at min_lr */
} she_lr_schedule_t;

/* Learning rate for the 0-based step. */
float she_lr_at(const she_lr_schedule_t *s, int64_t step);

#endif
