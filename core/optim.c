/* optim.c -- AdamW, gradient norms and learning-rate schedules (see optim.h). */

#include "optim.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#include "error.h"

/* Reduction chunk: fixed, so the summation order does not depend on the thread count. */
#define NORM_CHUNK 16384
/* Update chunk, a multiple of the 8 AVX lanes: which elements take the scalar path is fixed. */
#define UPDATE_CHUNK 8192

she_adamw_config_t she_adamw_defaults(void) {
    she_adamw_config_t hp = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
    return hp;
}

she_adamw_t *she_adamw_new(size_t n) {
    she_adamw_t *opt = calloc(1, sizeof(*opt));
    SHE_CHECK_ALLOC(opt);
    opt->m = calloc(n ? n : 1, sizeof(float));
    opt->v = calloc(n ? n : 1, sizeof(float));
    SHE_CHECK_ALLOC(opt->m);
    SHE_CHECK_ALLOC(opt->v);
    opt->n = n;
    return opt;
}

void she_adamw_free(she_adamw_t *opt) {
    if (!opt)
        return;
    free(opt->m);
    free(opt->v);
    free(opt);
}

typedef struct adamw_coef {
    float b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps, grad_scale, decay;
} adamw_coef_t;

/* One element; `decay` is 1 for parameters without weight decay (an exact multiply). */
static inline void adamw_scalar(float *p, const float *g, float *m, float *v, float decay,
                                const adamw_coef_t *k) {
    float gi = *g * k->grad_scale;
    float mi = k->b1 * *m + k->one_b1 * gi;
    float vi = k->b2 * *v + k->one_b2 * (gi * gi);
    *m = mi;
    *v = vi;
    *p = *p * decay - k->step_size * mi / (sqrtf(vi) / k->bc2_sqrt + k->eps);
}

/* The same operations in the same order on 8 lanes.  Written with intrinsics because gcc does
 * not vectorise sqrtf without -fno-math-errno, and the scalar loop made AdamW a large share of
 * a small model's step. */
static void adamw_range(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
                        size_t n_decay, const adamw_coef_t *k) {
    const __m256 b1 = _mm256_set1_ps(k->b1), b2 = _mm256_set1_ps(k->b2);
    const __m256 ob1 = _mm256_set1_ps(k->one_b1), ob2 = _mm256_set1_ps(k->one_b2);
    const __m256 ss = _mm256_set1_ps(k->step_size), bc2 = _mm256_set1_ps(k->bc2_sqrt);
    const __m256 eps = _mm256_set1_ps(k->eps), gs = _mm256_set1_ps(k->grad_scale);
    const __m256 wd = _mm256_set1_ps(k->decay), one = _mm256_set1_ps(1.0f);
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        if (i < n_decay && i + 8 > n_decay) { /* the block that straddles the decay boundary */
            for (size_t e = i; e < i + 8; e++)
                adamw_scalar(p + e, g + e, m + e, v + e, e < n_decay ? k->decay : 1.0f, k);
            continue;
        }
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(ob1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(ob2, _mm256_mul_ps(gi, gi)));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), i < n_decay ? wd : one);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(ss, mi), denom)));
    }
    for (; i < hi; i++)
        adamw_scalar(p + i, g + i, m + i, v + i, i < n_decay ? k->decay : 1.0f, k);
}

void she_adamw_update(she_adamw_t *opt, float *params, const float *grads, size_t n_decay,
                      const she_adamw_config_t *hp, float lr, float grad_scale) {
    SHE_ASSERT(n_decay <= opt->n);
    int64_t t = opt->step + 1;
    /* PyTorch folds the bias corrections into the step size and the denominator. */
    adamw_coef_t k = {.b1 = hp->beta1,
                      .b2 = hp->beta2,
                      .one_b1 = 1.0f - hp->beta1,
                      .one_b2 = 1.0f - hp->beta2,
                      .step_size = lr / (1.0f - (float)pow(hp->beta1, (double)t)),
                      .bc2_sqrt = (float)sqrt(1.0 - pow(hp->beta2, (double)t)),
                      .eps = hp->eps,
                      .grad_scale = grad_scale,
                      .decay = 1.0f - lr * hp->weight_decay};
    size_t n = opt->n;
    ptrdiff_t n_chunks = (ptrdiff_t)((n + UPDATE_CHUNK - 1) / UPDATE_CHUNK);
#pragma omp parallel for schedule(static)
    for (ptrdiff_t c = 0; c < n_chunks; c++) {
        size_t lo = (size_t)c * UPDATE_CHUNK, hi = lo + UPDATE_CHUNK < n ? lo + UPDATE_CHUNK : n;
        adamw_range(params, grads, opt->m, opt->v, lo, hi, n_decay, &k);
    }
    opt->step = t;
}

double she_grad_norm(const float *grads, size_t n) {
    ptrdiff_t n_chunks = (ptrdiff_t)((n + NORM_CHUNK - 1) / NORM_CHUNK);
    double total = 0.0;
    /* Chunk partials are computed in parallel; the ordered clause adds them in chunk order. */
#pragma omp parallel for ordered schedule(static, 1)
    for (ptrdiff_t c = 0; c < n_chunks; c++) {
        size_t lo = (size_t)c * NORM_CHUNK, hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++)
            s += (double)grads[i] * grads[i];
#pragma omp ordered
        total += s;
    }
    return sqrt(total);
}

float she_grad_clip_scale(double norm, float max_norm) {
    if (max_norm <= 0.0f || norm <= 0.0)
        return 1.0f;
    /* torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1. */
    double c = (double)max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

float she_lr_at(const she_lr_schedule_t *s, int64_t step) {
    if (step < s->warmup_steps)
        return s->max_lr * (float)(step + 1) / (float)s->warmup_steps;
    if (s->kind == SHE_LR_CONSTANT)
        return s->max_lr;
    int64_t span = s->total_steps - s->warmup_steps;
    if (span <= 0 || step >= s->total_steps)
        return s->min_lr;
    double progress = (double)(step - s->warmup_steps) / (double)span;
    return s->min_lr + 0.5f * (s->max_lr - s->min_lr) * (float)(1.0 + cos(M_PI * progress));
}
