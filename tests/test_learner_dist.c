/* test_learner_dist.c -- the learner's rollout-vs-learner gap per behaviour-policy version, and
 * its data-parallel step (trainer/learner.h), on a tiny random policy.
 *
 * Without arguments (ctest test_learner_gap_per_version):
 *   - a batch from versions 5, 4, 5, 3 whose behaviour log-probs are the policy's own plus a
 *     known offset per version (0; 0.5 on every token; 1.0 on the first token and 0.25 on the
 *     others): one entry per version, newest first, with its groups, tokens, mean and max;
 *   - with two mini-batches only the first part is measured (the update moves the policy
 *     before the second): versions seen only later have groups but no tokens;
 *   - ten versions in one batch: the newest eight are kept apart, the other two pooled.
 * --parity (ctest test_learner_dist_parity): forks 2 ranks (this binary again, --tcp-rank R
 * PORT) joined by the TCP star on 127.0.0.1.  Each takes its share of every batch through a
 * data-parallel learner and, in the same process, a single learner takes the combined batch
 * (part k = the ranks' parts k in rank order, learner.h): after every step the statistics
 * agree (counts exactly; losses, rewards, gaps and gradient norms to float rounding) and at
 * the end the parameters agree within PTOL and are bit-identical across ranks.  Two
 * configurations: one mini-batch with the KL reference (SRPO) on unequal shares (3 and 1
 * groups, responses of different lengths, and a step where rank 1 has none), so a loss
 * normalised by each rank's own count would miss; two mini-batches over two epochs (GRPO) on
 * shares whose parts have the sizes one rank would cut.  Then the
 * parameter check: equal copies pass, one changed float on rank 1 fails on both ranks naming
 * rank 1.
 * --mpi (tests/test_learner_dist_mpi.sh, under mpirun -np 2): the same parity over MPI. */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/dataset.h"
#include "core/dist.h"
#include "test.h"
#include "trainer/learner.h"

enum { V = 50, MAXB = 8, MAXS = 40, PL = 4, MAXR = 9, MAXG = 12, MAXK = 4 };

static she_model_t *tiny_model(uint64_t seed) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = V, .hidden_size = 32, .intermediate_size = 64,
                              .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                              .max_position_embeddings = 64, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, MAXB, MAXS, &m, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_model_init_weights(m, seed, 0.1f);
    return m;
}

/* Rewarded groups with their memory. */
typedef struct bank {
    int n, G;
    int32_t prompt[MAXG][PL];
    int32_t tok[MAXG][MAXK][MAXR];
    float lp[MAXG][MAXK][MAXR];
    she_step_span_t spans[MAXG][MAXK][5];
    she_response_t resp[MAXG][MAXK];
    she_response_reward_t rew[MAXG][MAXK];
    she_rewarded_group_t g[MAXG];
} bank_t;

/* n groups of G responses from seed: random prompts, lengths 3..MAXR, tokens, step rewards;
 * behaviour log-probs near a uniform policy's (-log V, +-0.3) so some ratios clip; versions
 * 3..5. */
static void bank_fill(bank_t *b, int n, int G, uint64_t seed) {
    she_rng_t rng;
    she_rng_seed(&rng, seed);
    memset(b, 0, sizeof(*b));
    b->n = n, b->G = G;
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < PL; t++)
            b->prompt[i][t] = (int32_t)she_rng_below(&rng, V);
        for (int k = 0; k < G; k++) {
            int R = 3 + (int)she_rng_below(&rng, MAXR - 2);
            for (int t = 0; t < R; t++) {
                b->tok[i][k][t] = (int32_t)she_rng_below(&rng, V);
                b->lp[i][k][t] = (float)(-log((double)V) + 0.6 * (she_rng_uniform(&rng) - 0.5));
            }
            for (int j = 0; j < 5; j++)
                b->spans[i][k][j] = (she_step_span_t){j + 1, j * R / 5, (j + 1) * R / 5};
            b->resp[i][k] = (she_response_t){.tokens = b->tok[i][k], .logprobs = b->lp[i][k],
                                             .n_tokens = R, .spans = b->spans[i][k],
                                             .n_spans = 5};
            for (int j = 0; j < 5; j++)
                b->rew[i][k].step_rewards[j] = she_rng_uniform(&rng) < 0.5 ? 0.2f : 0.0f;
            b->rew[i][k].pass = b->rew[i][k].step_rewards[4] > 0;
        }
        she_rollout_group_t *ro = &b->g[i].rollout;
        ro->prompt_tokens = b->prompt[i];
        ro->n_prompt_tokens = PL;
        ro->responses = b->resp[i];
        ro->n_responses = G;
        ro->policy_version = 3 + (int64_t)she_rng_below(&rng, 3);
        b->g[i].rewards = b->rew[i];
        b->g[i].n_rewards = G;
    }
}

/* The policy's own log-probs of response k of group i, at temperature 1. */
static void own_logp(she_model_t *m, const bank_t *b, int i, int k, float *out) {
    char errstr[512];
    int32_t tok[MAXS], tg[MAXS];
    float lp[MAXS];
    int R = b->resp[i][k].n_tokens, T = PL + R;
    for (int t = 0; t < T; t++) {
        tok[t] = t < PL ? b->prompt[i][t] : b->tok[i][k][t - PL];
        tg[t] = t >= PL - 1 && t < T - 1 ? b->tok[i][k][t + 1 - PL] : -1;
    }
    SHE_ASSERT(she_model_forward(m, tok, NULL, tg, 1, T, 1.0f, lp, NULL, errstr,
                                 sizeof(errstr)) == SHE_OK);
    for (int t = 0; t < R; t++)
        out[t] = lp[PL - 1 + t];
}

/* ---- the gap per version ---- */

static she_learner_t *gap_learner(she_model_t *m, she_adamw_t *opt, int mini_batches) {
    char errstr[512];
    she_learner_config_t lc = she_learner_defaults();
    lc.loss.kl_beta = 0;
    lc.temperature = 1.0f;
    lc.micro_batch = 3;
    lc.mini_batches = mini_batches;
    she_learner_t *ln = NULL;
    SHE_ASSERT(she_learner_new(m, opt, NULL, &lc, &ln, errstr, sizeof(errstr)) == SHE_OK);
    return ln;
}

/* Behaviour log-probs = the policy's + offset by version: v4 +0.5 everywhere, v3 +1.0 on the
 * first token and -0.25 on the others, any other version exact. */
static void set_offsets(she_model_t *m, bank_t *b) {
    for (int i = 0; i < b->n; i++)
        for (int k = 0; k < b->G; k++) {
            own_logp(m, b, i, k, b->lp[i][k]);
            int64_t v = b->g[i].rollout.policy_version;
            for (int t = 0; t < b->resp[i][k].n_tokens; t++)
                b->lp[i][k][t] += v == 4 ? 0.5f : v == 3 ? (t == 0 ? 1.0f : -0.25f) : 0.0f;
        }
}

static long group_tokens(const bank_t *b, int i) {
    long n = 0;
    for (int k = 0; k < b->G; k++)
        n += b->resp[i][k].n_tokens;
    return n;
}

static void test_gap_per_version(void) {
    char errstr[512];
    she_model_t *m = tiny_model(11);
    REQUIRE(m != NULL);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    static bank_t b;
    bank_fill(&b, 4, 2, 7);
    const int64_t versions[4] = {5, 4, 5, 3};
    for (int i = 0; i < 4; i++)
        b.g[i].rollout.policy_version = versions[i];
    set_offsets(m, &b);
    /* expected mean of v3: one token at 1.0 and the rest at 0.25 per response */
    double v3_sum = 0;
    for (int k = 0; k < b.G; k++)
        v3_sum += 1.0 + 0.25 * (b.resp[3][k].n_tokens - 1);
    double v3_mean = v3_sum / (double)group_tokens(&b, 3);

    she_learner_t *ln = gap_learner(m, opt, 1);
    she_learner_stats_t st;
    REQUIRE_OK(she_learner_step(ln, b.g, 4, 0.0f, &st, errstr, sizeof(errstr)));
    CHECK_EQ_INT(st.n_gap, 3);
    CHECK_EQ_INT(st.gap_older.n_groups, 0);
    CHECK_EQ_INT(st.gap[0].version, 5);
    CHECK_EQ_INT(st.gap[1].version, 4);
    CHECK_EQ_INT(st.gap[2].version, 3);
    CHECK_EQ_INT(st.gap[0].n_groups, 2);
    CHECK_EQ_INT(st.gap[1].n_groups, 1);
    CHECK_EQ_INT(st.gap[2].n_groups, 1);
    CHECK_EQ_INT(st.gap[0].tokens, group_tokens(&b, 0) + group_tokens(&b, 2));
    CHECK_EQ_INT(st.gap[1].tokens, group_tokens(&b, 1));
    CHECK_EQ_INT(st.gap[2].tokens, group_tokens(&b, 3));
    CHECK_EQ_INT(st.gap_tokens, st.n_tokens);
    CHECK(st.gap[0].mean < 1e-4 && st.gap[0].max < 1e-4);
    CHECK_CLOSE(st.gap[1].mean, 0.5, 1e-4, 0);
    CHECK_CLOSE(st.gap[1].max, 0.5, 1e-4, 0);
    CHECK_CLOSE(st.gap[2].mean, v3_mean, 1e-4, 0);
    CHECK_CLOSE(st.gap[2].max, 1.0, 1e-4, 0);
    double all = 0;
    for (int k = 0; k < st.n_gap; k++)
        all += st.gap[k].mean * (double)st.gap[k].tokens;
    CHECK_CLOSE(st.logp_gap_mean, all / (double)st.gap_tokens, 1e-9, 0);
    CHECK_CLOSE(st.logp_gap_max, 1.0, 1e-4, 0);
    fprintf(stderr, "   v5 %.1e, v4 %.4f, v3 %.4f (expected %.4f, max %.4f)\n", st.gap[0].mean,
            st.gap[1].mean, st.gap[2].mean, v3_mean, st.gap[2].max);
    she_learner_free(ln);

    /* two mini-batches: the first part (groups 0 and 1) only is measured */
    ln = gap_learner(m, opt, 2);
    REQUIRE_OK(she_learner_step(ln, b.g, 4, 0.0f, &st, errstr, sizeof(errstr)));
    CHECK_EQ_INT(st.n_gap, 3);
    CHECK_EQ_INT(st.gap[0].n_groups, 2);
    CHECK_EQ_INT(st.gap[0].tokens, group_tokens(&b, 0));
    CHECK_EQ_INT(st.gap[1].tokens, group_tokens(&b, 1));
    CHECK_EQ_INT(st.gap[2].version, 3);
    CHECK_EQ_INT(st.gap[2].n_groups, 1);
    CHECK_EQ_INT(st.gap[2].tokens, 0);
    CHECK(st.gap[2].mean == 0.0 && st.gap[2].max == 0.0);
    CHECK_EQ_INT(st.gap_tokens, group_tokens(&b, 0) + group_tokens(&b, 1));
    she_learner_free(ln);

    /* ten versions: 9..2 apart, 1 and 0 pooled under the newer of them */
    static bank_t c;
    bank_fill(&c, 10, 2, 8);
    for (int i = 0; i < 10; i++)
        c.g[i].rollout.policy_version = (i * 7) % 10; /* every version once, out of order */
    set_offsets(m, &c);
    ln = gap_learner(m, opt, 1);
    REQUIRE_OK(she_learner_step(ln, c.g, 10, 0.0f, &st, errstr, sizeof(errstr)));
    CHECK_EQ_INT(st.n_gap, SHE_LEARNER_GAP_VERSIONS);
    for (int k = 0; k < st.n_gap; k++)
        CHECK_EQ_INT(st.gap[k].version, 9 - k);
    CHECK_EQ_INT(st.gap_older.version, 1);
    CHECK_EQ_INT(st.gap_older.n_groups, 2);
    long pooled = 0, kept = 0;
    for (int i = 0; i < 10; i++)
        pooled += c.g[i].rollout.policy_version <= 1 ? group_tokens(&c, i) : 0;
    for (int k = 0; k < st.n_gap; k++)
        kept += st.gap[k].tokens;
    CHECK_EQ_INT(st.gap_older.tokens, pooled);
    CHECK_EQ_INT(kept + pooled, st.gap_tokens);
    /* v4's offset lands in its own entry, v3's in its own: nothing leaks between versions */
    CHECK_CLOSE(st.gap[5].mean, 0.5, 1e-4, 0);
    CHECK(st.gap_older.max < 1e-4);
    she_learner_free(ln);
    she_adamw_free(opt);
    she_model_free(m);
}

/* ---- the data-parallel step ---- */

#define PTOL 2e-5 /* parameters after the steps, absolute (weights ~0.1, lr 1e-2) */

typedef struct scenario {
    const char *name;
    int algo, mini_batches, epochs;
    float kl_beta;
    int n_steps;
    int n[3];           /* groups per step */
    int owner[3][MAXG]; /* rank of each group */
} scenario_t;

static const scenario_t scenarios[] = {
    {"srpo, one mini-batch, KL", SHE_ADV_ALGO_SRPO, 1, 1, 0.04f, 3,
     {4, 4, 4}, {{0, 0, 1, 0}, {0, 1, 0, 1}, {0, 0, 0, 0}}},
    /* parts of the sizes one rank would cut: equal shares of 2 or 4, or all on rank 0 */
    {"grpo, two mini-batches, two epochs", SHE_ADV_ALGO_GRPO, 2, 2, 0.0f, 3,
     {4, 8, 4}, {{0, 1, 1, 0}, {1, 0, 0, 1, 1, 0, 1, 0}, {0, 0, 0, 0}}},
};

/* rank's share of step s: the groups it owns, in bank order, copied into out */
static int share_of(const scenario_t *sc, int s, const bank_t *b, int rank,
                    she_rewarded_group_t *out) {
    int n = 0;
    for (int i = 0; i < sc->n[s]; i++)
        if (sc->owner[s][i] == rank)
            out[n++] = b->g[i];
    return n;
}

/* The combined batch of the single-rank run: part k of it is every rank's part k, in rank
 * order (trainer/learner.h). */
static int combined(const scenario_t *sc, int s, const bank_t *b, int world,
                    she_rewarded_group_t *out) {
    she_rewarded_group_t shares[2][MAXG];
    int n[2], total = 0, m = 0;
    for (int r = 0; r < world; r++)
        total += n[r] = share_of(sc, s, b, r, shares[r]);
    int parts = sc->mini_batches < total ? sc->mini_batches : total;
    for (int k = 0; k < parts; k++)
        for (int r = 0; r < world; r++)
            for (int j = n[r] * k / parts; j < n[r] * (k + 1) / parts; j++)
                out[m++] = shares[r][j];
    return m;
}

static she_learner_t *parity_learner(const scenario_t *sc, she_model_t *m, she_adamw_t *opt,
                                     she_model_t *ref) {
    char errstr[512];
    she_learner_config_t lc = she_learner_defaults();
    lc.adv.algo = (she_adv_algo_t)sc->algo;
    lc.adv.norm = SHE_ADV_NORM_GROUP;
    lc.loss.kl_beta = sc->kl_beta;
    lc.temperature = 1.0f;
    lc.micro_batch = 3; /* several micro-batches per part */
    lc.mini_batches = sc->mini_batches;
    lc.epochs = sc->epochs;
    she_learner_t *ln = NULL;
    SHE_ASSERT(she_learner_new(m, opt, sc->kl_beta > 0 ? ref : NULL, &lc, &ln, errstr,
                               sizeof(errstr)) == SHE_OK);
    return ln;
}

static void compare_stats(const char *what, const she_learner_stats_t *d,
                          const she_learner_stats_t *s) {
    CHECK_MSG(d->n_groups == s->n_groups && d->n_rows == s->n_rows &&
                  d->n_tokens == s->n_tokens && d->gap_tokens == s->gap_tokens &&
                  d->n_updates == s->n_updates && d->loss.n_tokens == s->loss.n_tokens &&
                  d->loss.n_responses == s->loss.n_responses &&
                  d->adv.n_tokens == s->adv.n_tokens &&
                  d->reward.n_all_pass == s->reward.n_all_pass && d->n_gap == s->n_gap,
              "%s: counts differ (groups %d/%d, tokens %ld/%ld, gap tokens %ld/%ld, updates "
              "%d/%d, versions %d/%d)",
              what, d->n_groups, s->n_groups, d->n_tokens, s->n_tokens, d->gap_tokens,
              s->gap_tokens, d->n_updates, s->n_updates, d->n_gap, s->n_gap);
    CHECK_CLOSE(d->loss.loss, s->loss.loss, 1e-6, 1e-4);
    CHECK_CLOSE(d->loss.kl_mean, s->loss.kl_mean, 1e-7, 1e-4);
    CHECK_CLOSE(d->loss.clip_frac, s->loss.clip_frac, 1e-9, 0);
    CHECK_CLOSE(d->loss.ratio_min, s->loss.ratio_min, 1e-6, 1e-5);
    CHECK_CLOSE(d->reward.total_mean, s->reward.total_mean, 1e-9, 0);
    CHECK_CLOSE(d->reward.pass_rate, s->reward.pass_rate, 1e-9, 0);
    CHECK_CLOSE(d->adv.mean, s->adv.mean, 1e-6, 0);
    CHECK_CLOSE(d->adv.std, s->adv.std, 1e-6, 1e-5);
    CHECK_CLOSE(d->grad_norm, s->grad_norm, 1e-7, 1e-4);
    CHECK_CLOSE(d->logp_gap_mean, s->logp_gap_mean, 1e-7, 1e-5);
    CHECK_CLOSE(d->logp_gap_max, s->logp_gap_max, 1e-7, 1e-5);
    for (int k = 0; k < d->n_gap && k < s->n_gap; k++) {
        CHECK_EQ_INT(d->gap[k].version, s->gap[k].version);
        CHECK_EQ_INT(d->gap[k].n_groups, s->gap[k].n_groups);
        CHECK_EQ_INT(d->gap[k].tokens, s->gap[k].tokens);
        CHECK_CLOSE(d->gap[k].mean, s->gap[k].mean, 1e-7, 1e-5);
    }
}

/* Every scenario on this rank of d, against the single learner on the combined batch.
 * Returns the number of failed checks. */
static int parity_run(she_dist_t *d) {
    char errstr[512];
    int failed_before = test_checks_failed_, rank = she_dist_rank(d), W = she_dist_world(d);
    SHE_ASSERT(W == 2);
    for (size_t c = 0; c < sizeof(scenarios) / sizeof(scenarios[0]); c++) {
        const scenario_t *sc = &scenarios[c];
        /* the same start everywhere: same seed */
        she_model_t *m = tiny_model(21), *ref = tiny_model(21), *m1 = tiny_model(21);
        SHE_ASSERT(m && ref && m1);
        she_adamw_t *opt = she_adamw_new(m->n_params), *opt1 = she_adamw_new(m1->n_params);
        she_learner_t *ln = parity_learner(sc, m, opt, ref), *ln1 = parity_learner(sc, m1, opt1,
                                                                                    ref);
        SHE_ASSERT(she_learner_set_dist(ln, d, errstr, sizeof(errstr)) == SHE_OK);
        double worst = 0;
        for (int s = 0; s < sc->n_steps; s++) {
            static bank_t b;
            she_rewarded_group_t mine[MAXG], all[MAXG];
            bank_fill(&b, sc->n[s], 3, 100 * c + s);
            int n = share_of(sc, s, &b, rank, mine), n_all = combined(sc, s, &b, W, all);
            she_learner_stats_t sd, s1;
            float lr = 1e-2f;
            CHECK_OK(she_learner_step(ln, mine, n, lr, &sd, errstr, sizeof(errstr)));
            CHECK_OK(she_learner_step(ln1, all, n_all, lr, &s1, errstr, sizeof(errstr)));
            char what[128];
            snprintf(what, sizeof(what), "rank %d, %s, step %d (%d of %d groups here)", rank,
                     sc->name, s, n, n_all);
            compare_stats(what, &sd, &s1);
            for (size_t i = 0; i < m->n_params; i++) {
                double diff = fabs((double)m->params[i] - m1->params[i]);
                worst = diff > worst ? diff : worst;
            }
        }
        CHECK_MSG(worst <= PTOL, "rank %d, %s: parameters differ from the single rank's by %.3g",
                  rank, sc->name, worst);
        CHECK_OK(she_dist_check_identical(d, m->params, sizeof(float) * m->n_params,
                                          "parameters", errstr, sizeof(errstr)));
        printf("rank %d/%d, %s: %d steps, parameters within %.2g of 1 rank on the combined "
               "batch (tolerance %.0e), identical across ranks\n",
               rank, W, sc->name, sc->n_steps, worst, PTOL);
        she_learner_free(ln), she_learner_free(ln1);
        she_adamw_free(opt), she_adamw_free(opt1);
        she_model_free(m), she_model_free(ref), she_model_free(m1);
    }
    /* the check catches one float changed on one rank, and says so on every rank */
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i * 0.5f;
    if (rank == 1)
        x[17] = nextafterf(x[17], 100.0f);
    CHECK_EQ_INT(she_dist_check_identical(d, x, sizeof(x), "parameters", errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK_MSG(strstr(errstr, "parameters differ between ranks") && strstr(errstr, "ranks: 1)"),
              "%s", errstr);
    return test_checks_failed_ - failed_before;
}

/* ---- processes ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    SHE_ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
               getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int wait_child(pid_t pid, double timeout_s) {
    int status;
    for (double t0 = now_s(); waitpid(pid, &status, WNOHANG) == 0;) {
        if (now_s() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_rank(she_dist_config_t *c) {
    char errstr[512];
    she_dist_t *d = NULL;
    if (she_dist_init(c, &d, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "rank %d: %s\n", c->rank, errstr);
        return 1;
    }
    int failed = parity_run(d);
    she_dist_free(d);
    printf("rank parity %s\n", failed ? "FAILED" : "ok");
    return failed ? 1 : 0;
}

static int run_tcp_rank(int rank, int port) {
    she_dist_config_t c = {0};
    c.backend = SHE_DIST_TCP;
    c.launcher = SHE_DIST_LAUNCHER_ENV;
    c.world_size = 2;
    c.rank = rank;
    snprintf(c.master_addr, sizeof(c.master_addr), "127.0.0.1");
    c.master_port = port;
    c.timeout_s = 60;
    c.cuda_device = -1;
    return run_rank(&c);
}

static void test_dist_parity_tcp(void) {
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", free_port());
    pid_t pids[2];
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        SHE_ASSERT(pids[r] >= 0);
        if (pids[r] == 0) {
            /* a fresh process (the OpenMP pool does not survive fork), one thread each */
            setenv("OMP_NUM_THREADS", "1", 1);
            execl("/proc/self/exe", "test_learner_dist", "--tcp-rank", r ? "1" : "0", port_s,
                  (char *)NULL);
            _exit(127);
        }
    }
    for (int r = 0; r < 2; r++)
        CHECK_MSG(wait_child(pids[r], 120) == 0, "rank %d failed", r);
}

static int run_mpi(void) {
    char errstr[512];
    she_dist_config_t c;
    if (she_dist_config_from_env(&c, errstr, sizeof(errstr)) != SHE_OK ||
        c.launcher != SHE_DIST_LAUNCHER_MPIRUN || c.world_size != 2) {
        fprintf(stderr, "not under mpirun -np 2\n");
        return 1;
    }
    c.timeout_s = 60;
    return run_rank(&c);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--tcp-rank") == 0)
        return run_tcp_rank(atoi(argv[2]), atoi(argv[3]));
    if (argc == 2 && strcmp(argv[1], "--mpi") == 0)
        return run_mpi();
    if (argc == 2 && strcmp(argv[1], "--parity") == 0)
        RUN(test_dist_parity_tcp);
    else
        RUN(test_gap_per_version);
    TEST_DONE();
}
