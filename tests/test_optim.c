/* test_optim.c -- AdamW, gradient norm and clipping, learning-rate schedules (core/optim.h).
 * AdamW is compared with a double-precision transcription of torch.optim.AdamW over a block
 * whose decay boundary falls inside an 8-lane vector and whose length leaves a scalar tail;
 * the golden test (test_model_golden) checks it against PyTorch itself on a model. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/optim.h"
#include "test.h"

static void test_lr_schedule(void) {
    she_lr_schedule_t c = {SHE_LR_COSINE, 1e-3f, 1e-4f, 10, 110};
    CHECK_CLOSE(she_lr_at(&c, 0), 1e-4, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 4), 5e-4, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 9), 1e-3, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 10), 1e-3, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 60), 5.5e-4, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 110), 1e-4, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&c, 1000), 1e-4, 1e-9, 0);
    for (int s = 10; s < 110; s++)
        CHECK(she_lr_at(&c, s + 1) <= she_lr_at(&c, s));
    she_lr_schedule_t k = {SHE_LR_CONSTANT, 2e-3f, 0.0f, 4, 0};
    CHECK_CLOSE(she_lr_at(&k, 1), 1e-3, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&k, 3), 2e-3, 1e-9, 0);
    CHECK_CLOSE(she_lr_at(&k, 500), 2e-3, 1e-9, 0);
    she_lr_schedule_t nw = {SHE_LR_CONSTANT, 2e-3f, 0.0f, 0, 0};
    CHECK_CLOSE(she_lr_at(&nw, 0), 2e-3, 1e-9, 0);
}

static void test_grad_norm_and_clip(void) {
    size_t n = 100003;
    float *g = malloc(n * sizeof(float));
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)sin((double)i) * 0.01f;
        ref += (double)g[i] * g[i];
    }
    int threads = omp_get_max_threads();
    double n2 = she_grad_norm(g, n);
    omp_set_num_threads(1);
    double n1 = she_grad_norm(g, n);
    omp_set_num_threads(threads);
    CHECK_CLOSE(n2, sqrt(ref), 0, 1e-12);
    CHECK_MSG(n1 == n2, "norm depends on the thread count: %.17g vs %.17g", n1, n2);
    CHECK_CLOSE(she_grad_clip_scale(2.0, 1.0f), 1.0 / (2.0 + 1e-6), 0, 1e-6);
    CHECK(she_grad_clip_scale(0.5, 1.0f) == 1.0f);
    CHECK(she_grad_clip_scale(5.0, 0.0f) == 1.0f);
    CHECK(she_grad_clip_scale(0.0, 1.0f) == 1.0f);
    free(g);
}

static void run_adamw(size_t n, size_t n_decay, int threads, float *p, float *m, float *v) {
    she_adamw_t *opt = she_adamw_new(n);
    she_adamw_config_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    float *g = malloc(n * sizeof(float));
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)cos((double)i);
    for (int s = 0; s < 3; s++) {
        for (size_t i = 0; i < n; i++)
            g[i] = (float)sin((double)(i * (s + 1)));
        she_adamw_update(opt, p, g, n_decay, &hp, 1e-2f, 0.5f);
    }
    omp_set_num_threads(saved);
    CHECK_EQ_INT(opt->step, 3);
    memcpy(m, opt->m, n * sizeof(float));
    memcpy(v, opt->v, n * sizeof(float));
    free(g);
    she_adamw_free(opt);
}

static void test_adamw(void) {
    size_t n = 8192 * 2 + 21, nd = 8192 + 13; /* boundary inside a vector, scalar tail */
    float *p1 = malloc(n * 4), *m1 = malloc(n * 4), *v1 = malloc(n * 4);
    float *p2 = malloc(n * 4), *m2 = malloc(n * 4), *v2 = malloc(n * 4);
    run_adamw(n, nd, 1, p1, m1, v1);
    run_adamw(n, nd, 2, p2, m2, v2);
    CHECK(memcmp(p1, p2, n * 4) == 0 && memcmp(m1, m2, n * 4) == 0 && memcmp(v1, v2, n * 4) == 0);
    /* torch.optim.AdamW in double */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double p = cos((double)i), m = 0, v = 0;
        for (int s = 1; s <= 3; s++) {
            double g = (double)(float)sin((double)(i * s)) * 0.5;
            if (i < nd)
                p *= 1.0 - 1e-2 * 0.1;
            m = 0.9 * m + 0.1 * g;
            v = 0.95 * v + 0.05 * g * g;
            double mh = m / (1 - pow(0.9, s)), vh = v / (1 - pow(0.95, s));
            p -= 1e-2 * mh / (sqrt(vh) + 1e-8);
        }
        bad += fabs(p1[i] - p) > 1e-6 + 1e-5 * fabs(p);
        bad += fabs(m1[i] - m) > 1e-6 + 1e-5 * fabs(m);
    }
    CHECK_MSG(bad == 0, "%d AdamW values differ from the double reference", bad);
    free(p1), free(m1), free(v1), free(p2), free(m2), free(v2);
}

int main(void) {
    RUN(test_lr_schedule);
    RUN(test_grad_norm_and_clip);
    RUN(test_adamw);
    TEST_DONE();
}
