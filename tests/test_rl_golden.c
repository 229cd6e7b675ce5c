/* test_rl_golden.c -- trainer/rl against an independent PyTorch implementation (float64,
 * autograd).
 *
 * tests/fixtures/rl_golden.bin is written by scripts/make_rl_fixture.py (format in that script):
 * GRPO and SRPO cases over every normalisation, gamma 1 / 0.9 / 0.5, clipping active, degenerate
 * groups and steps, masked prefixes, right padding and an empty response; and two DPO cases.
 * Both sides compute in double from the same float32 inputs, so the tolerances
 * (atol + rtol*|ref|) only cover float32 rounding of outputs and summation order:
 *   step and token advantages        1e-6 + 1e-6
 *   loss and its parts, statistics   1e-9 + 1e-9
 *   dL/dlogp                         1e-9 + 1e-6 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "trainer/rl.h"

#define J SHE_RL_N_STEPS

typedef struct reader {
    const uint8_t *p, *end;
    int bad;
} reader_t;

/* n bytes copied out (the buffer has no alignment guarantee); zeros once the data ran out */
static void *take(reader_t *r, size_t n) {
    void *out = calloc(1, n + 1);
    if (r->bad || (size_t)(r->end - r->p) < n)
        r->bad = 1;
    else {
        memcpy(out, r->p, n);
        r->p += n;
    }
    return out;
}

static uint32_t rd_u32(reader_t *r) {
    uint32_t v = 0;
    void *p = take(r, 4);
    memcpy(&v, p, 4);
    free(p);
    return v;
}
static int32_t rd_i32(reader_t *r) { return (int32_t)rd_u32(r); }
static float rd_f32(reader_t *r) {
    float v = 0;
    void *p = take(r, 4);
    memcpy(&v, p, 4);
    free(p);
    return v;
}
static double rd_f64(reader_t *r) {
    double v = 0;
    void *p = take(r, 8);
    memcpy(&v, p, 8);
    free(p);
    return v;
}

static uint8_t *read_fixture(size_t *len) {
    const char *src = getenv("SHE_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/fixtures/rl_golden.bin", src ? src : ".");
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len);
    if (fread(buf, 1, *len, f) != *len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static void check_floats(const char *what, int c, const float *got, const float *ref, size_t n,
                         double atol, double rtol) {
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++)
        if (!(fabs((double)got[i] - ref[i]) <= atol + rtol * fabs((double)ref[i]))) {
            CHECK_MSG(0, "case %d %s[%zu] = %.9g, ref %.9g", c, what, i, got[i], ref[i]);
            bad++;
        }
}

static void run_case(reader_t *r, int c) {
    she_adv_config_t ac = she_adv_defaults();
    ac.algo = (she_adv_algo_t)rd_i32(r);
    ac.norm = (she_adv_norm_t)rd_i32(r);
    ac.gamma = rd_f32(r);
    ac.clip = rd_f32(r);
    ac.delta = rd_f32(r);
    she_rl_loss_config_t lc;
    lc.clip_eps = rd_f32(r);
    lc.kl_beta = rd_f32(r);
    int B = rd_i32(r), G = rd_i32(r), T = rd_i32(r);
    REQUIRE(!r->bad && B > 0 && G > 0 && B % G == 0 && T > 0 && B * T < 1 << 20);
    size_t n = (size_t)B * T;
    float *rewards = take(r, (size_t)B * J * 4);
    uint8_t *step = take(r, n), *mask = take(r, n);
    float *logp = take(r, n * 4), *old = take(r, n * 4), *ref = take(r, n * 4);
    float *ref_step_adv = take(r, (size_t)B * J * 4), *ref_adv = take(r, n * 4);
    double ref_stats[6];
    for (int i = 0; i < 6; i++)
        ref_stats[i] = rd_f64(r);
    float *ref_d = take(r, n * 4);
    if (!r->bad) {
        float *step_adv = malloc((size_t)B * J * 4), *adv = malloc(n * 4), *d = malloc(n * 4);
        she_rl_advantages(&ac, rewards, B, G, step, mask, T, step_adv, adv, NULL);
        fprintf(stderr, "case %d: %s/%s gamma %g clip %g beta %g B %d G %d T %d\n", c,
                she_adv_algo_name(ac.algo), she_adv_norm_name(ac.norm), ac.gamma, ac.clip,
                lc.kl_beta, B, G, T);
        check_floats("step_adv", c, step_adv, ref_step_adv, (size_t)B * J, 1e-6, 1e-6);
        check_floats("adv", c, adv, ref_adv, n, 1e-6, 1e-6);
        she_rl_loss_stats_t st;
        double L = she_rl_policy_loss(&lc, logp, old, ref, adv, mask, NULL, B, T, d, &st);
        const double got[6] = {L, st.pg_loss, st.kl_loss, st.clip_frac, st.kl_mean, st.ratio_mean};
        const char *names[6] = {"loss", "pg_loss", "kl_loss", "clip_frac", "kl_mean", "ratio_mean"};
        for (int i = 0; i < 6; i++)
            CHECK_MSG(fabs(got[i] - ref_stats[i]) <= 1e-9 + 1e-9 * fabs(ref_stats[i]),
                      "case %d %s = %.15g, ref %.15g", c, names[i], got[i], ref_stats[i]);
        check_floats("dlogp", c, d, ref_d, n, 1e-9, 1e-6);
        free(step_adv);
        free(adv);
        free(d);
    }
    free(rewards);
    free(step);
    free(mask);
    free(logp);
    free(old);
    free(ref);
    free(ref_step_adv);
    free(ref_adv);
    free(ref_d);
}

static void run_dpo(reader_t *r, int c) {
    int P = rd_i32(r), T = rd_i32(r);
    float beta = rd_f32(r);
    REQUIRE(!r->bad && P > 0 && T > 0 && P * T < 1 << 20);
    size_t n = (size_t)P * T;
    float *lc = take(r, n * 4);
    uint8_t *mc = take(r, n);
    float *lr = take(r, n * 4);
    uint8_t *mr = take(r, n);
    float *rc = take(r, (size_t)P * 4), *rr = take(r, (size_t)P * 4);
    double ref_loss = rd_f64(r), ref_acc = rd_f64(r), ref_margin = rd_f64(r);
    float *ref_dc = take(r, n * 4), *ref_dr = take(r, n * 4);
    if (!r->bad) {
        float *dc = malloc(n * 4), *dr = malloc(n * 4);
        she_dpo_stats_t st;
        double L = she_dpo_loss(beta, lc, mc, rc, lr, mr, rr, P, T, dc, dr, &st);
        CHECK_MSG(fabs(L - ref_loss) <= 1e-9 + 1e-9 * fabs(ref_loss), "dpo %d loss %.15g ref %.15g",
                  c, L, ref_loss);
        CHECK_CLOSE(st.reward_acc, ref_acc, 1e-12, 0);
        CHECK_CLOSE(st.margin_mean, ref_margin, 1e-9, 1e-9);
        check_floats("dpo dlogp_c", c, dc, ref_dc, n, 1e-9, 1e-6);
        check_floats("dpo dlogp_r", c, dr, ref_dr, n, 1e-9, 1e-6);
        free(dc);
        free(dr);
    }
    free(lc);
    free(mc);
    free(lr);
    free(mr);
    free(rc);
    free(rr);
    free(ref_dc);
    free(ref_dr);
}

static void test_golden(void) {
    size_t len = 0;
    uint8_t *buf = read_fixture(&len);
    REQUIRE_MSG(buf != NULL, "cannot read tests/fixtures/rl_golden.bin (SHE_SOURCE_DIR set?)");
    reader_t r = {buf, buf + len, 0};
    char *magic = take(&r, 8);
    CHECK(memcmp(magic, "SHERLGD1", 8) == 0);
    free(magic);
    CHECK_EQ_INT(rd_u32(&r), 1);
    uint32_t n_cases = rd_u32(&r);
    CHECK(n_cases >= 6);
    for (uint32_t c = 0; c < n_cases && !r.bad; c++)
        run_case(&r, (int)c);
    uint32_t n_dpo = rd_u32(&r);
    CHECK(n_dpo >= 2);
    for (uint32_t c = 0; c < n_dpo && !r.bad; c++)
        run_dpo(&r, (int)c);
    CHECK_MSG(!r.bad && r.p == r.end, "fixture truncated or longer than expected");
    free(buf);
}

int main(void) {
    RUN(test_golden);
    TEST_DONE();
}
