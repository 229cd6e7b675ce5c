/* test_model_golden.c -- the model against Hugging Face transformers (PyTorch, float32).
 *
 * tests/fixtures/model_golden.bin is written by scripts/make_model_fixture.py (format in that
 * script) from transformers' LlamaForCausalLM (GQA 4:2, untied) and Qwen2ForCausalLM (GQA 4:1,
 * q/k/v bias, tied), each on a padded batch with right and left padding.  The config is read
 * from the config.json text transformers wrote, the weights are placed by their HF names, so the
 * test also checks the HF layout.  Tolerances (both sides float32, different summation order;
 * atol + rtol*|ref|):
 *   logits, logp, entropy          2e-5 + 1e-4
 *   loss L                         1e-4 + 1e-5
 *   every gradient entry           1e-4 * max|ref over its tensor| + 1e-3
 *   L before/after 3 AdamW steps   1e-3 + 1e-4  (Adam normalises tiny gradients, so rounding
 *                                                differences grow a little per step) */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/model.h"
#include "test.h"

typedef struct reader {
    const uint8_t *p, *end;
    int bad;
} reader_t;

static const void *take(reader_t *r, size_t n) {
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p;
    r->p += n;
    return p;
}

static uint32_t rd_u32(reader_t *r) {
    uint32_t v = 0;
    const void *p = take(r, 4);
    if (p)
        memcpy(&v, p, 4);
    return v;
}

static float rd_f32(reader_t *r) {
    float v = 0;
    const void *p = take(r, 4);
    if (p)
        memcpy(&v, p, 4);
    return v;
}

static double rd_f64(reader_t *r) {
    double v = 0;
    const void *p = take(r, 8);
    if (p)
        memcpy(&v, p, 8);
    return v;
}

/* n floats / ints, copied out (the buffer has no alignment guarantee) */
static void *rd_array(reader_t *r, size_t n, size_t elem) {
    const void *p = take(r, n * elem);
    void *out = malloc(n * elem + 1);
    if (p)
        memcpy(out, p, n * elem);
    else
        memset(out, 0, n * elem);
    return out;
}

static uint8_t *read_file(const char *path, size_t *len) {
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

static double weighted_loss(const float *logp, const float *ent, const float *a, const float *c,
                            int n) {
    double L = 0;
    for (int r = 0; r < n; r++)
        L += (double)a[r] * logp[r] + (double)c[r] * ent[r];
    return L;
}

static void run_case(reader_t *r, int case_no) {
    char errstr[512];
    uint32_t cj_len = rd_u32(r);
    const char *cj = take(r, cj_len);
    int B = (int)rd_u32(r), T = (int)rd_u32(r);
    float temp = rd_f32(r), lr = rd_f32(r);
    she_adamw_config_t hp;
    hp.beta1 = rd_f32(r);
    hp.beta2 = rd_f32(r);
    hp.eps = rd_f32(r);
    hp.weight_decay = rd_f32(r);
    float clip = rd_f32(r);
    int n_steps = (int)rd_u32(r);
    REQUIRE(!r->bad && B > 0 && T > 0 && B * T < 4096 && n_steps > 0 && n_steps < 100);
    size_t N = (size_t)B * T;
    int32_t *tok = rd_array(r, N, 4), *mask32 = rd_array(r, N, 4), *tgt = rd_array(r, N, 4);
    float *a = rd_array(r, N, 4), *c = rd_array(r, N, 4);
    uint8_t mask[4096];
    for (size_t i = 0; i < N; i++)
        mask[i] = (uint8_t)mask32[i];

    /* the config, through the real loader */
    char dir[1024], path[1100];
    const char *tmp = getenv("SHE_TEST_TMP");
    snprintf(dir, sizeof(dir), "%s/model_golden_%d", tmp ? tmp : "/tmp", case_no);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && cj);
    fwrite(cj, 1, cj_len, f);
    fclose(f);
    she_model_config_t cfg;
    REQUIRE_OK(she_model_config_load(path, &cfg, errstr, sizeof(errstr)));
    fprintf(stderr, "  case %d: %s V=%d D=%d L=%d H=%d KV=%d tied=%d bias=%d\n", case_no,
            cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.n_layers, cfg.n_heads,
            cfg.n_kv_heads, cfg.tie_word_embeddings, cfg.attention_bias);
    she_model_t *m = NULL;
    REQUIRE_OK(she_model_new(&cfg, B, T, &m, errstr, sizeof(errstr)));

    /* weights by HF name; the fixture must name exactly the model's tensors */
    int n_tensors = (int)rd_u32(r);
    CHECK_EQ_INT(n_tensors, m->n_tensors);
    int *index = calloc((size_t)n_tensors + 1, sizeof(int));
    for (int i = 0; i < n_tensors && !r->bad; i++) {
        uint32_t len = rd_u32(r);
        char name[128] = {0};
        const char *nm = take(r, len);
        if (nm && len < sizeof(name))
            memcpy(name, nm, len);
        int ndim = (int)rd_u32(r);
        int64_t shape[2] = {0, 0};
        size_t numel = 1;
        for (int d = 0; d < ndim; d++) {
            uint32_t s = rd_u32(r);
            if (d < 2)
                shape[d] = s;
            numel *= s;
        }
        float *data = rd_array(r, numel, 4);
        index[i] = -1;
        for (int k = 0; k < m->n_tensors; k++)
            if (strcmp(m->tensors[k].name, name) == 0)
                index[i] = k;
        CHECK_MSG(index[i] >= 0, "fixture tensor %s is not in the model", name);
        if (index[i] >= 0) {
            const she_model_tensor_t *t = &m->tensors[index[i]];
            CHECK_MSG(t->ndim == ndim && t->shape[0] == shape[0] &&
                          (ndim == 1 || t->shape[1] == shape[1]),
                      "%s: shape differs", name);
            if (t->ndim == ndim && t->shape[0] == shape[0])
                memcpy(m->params + t->offset, data, numel * sizeof(float));
        }
        free(data);
    }
    REQUIRE(!r->bad);
    float *init = malloc(m->n_params * sizeof(float));
    memcpy(init, m->params, m->n_params * sizeof(float));

    int V = cfg.vocab_size;
    float *ref_logits = rd_array(r, N * V, 4), *ref_logp = rd_array(r, N, 4);
    float *ref_ent = rd_array(r, N, 4);
    double ref_loss = rd_f64(r);
    float logp[4096], ent[4096];
    she_model_zero_grad(m);
    REQUIRE_OK(she_model_forward(m, tok, mask, tgt, B, T, temp, logp, ent, errstr,
                                 sizeof(errstr)));
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < N; i++) {
        if (!mask[i])
            continue; /* HF computes padding rows too, with a different (unused) convention */
        for (int j = 0; j < V; j++) {
            double d = fabs(m->a.logits[i * V + j] - ref_logits[i * V + j]);
            worst = fmax(worst, d);
            bad += d > 2e-5 + 1e-4 * fabs(ref_logits[i * V + j]);
        }
    }
    CHECK_MSG(bad == 0, "%d logits differ (worst %.3g)", bad, worst);
    fprintf(stderr, "  logits: worst abs diff %.3g\n", worst);
    for (size_t i = 0; i < N; i++) {
        CHECK_CLOSE(logp[i], ref_logp[i], 2e-5, 1e-4);
        CHECK_CLOSE(ent[i], ref_ent[i], 2e-5, 1e-4);
    }
    double loss = weighted_loss(logp, ent, a, c, (int)N);
    CHECK_CLOSE(loss, ref_loss, 1e-4, 1e-5);

    she_model_backward(m, a, c);
    for (int i = 0; i < n_tensors; i++) {
        const she_model_tensor_t *t = &m->tensors[index[i] >= 0 ? index[i] : 0];
        size_t numel = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        float *g = rd_array(r, numel, 4);
        double scale = 0, w = 0;
        for (size_t k = 0; k < numel; k++)
            scale = fmax(scale, fabs(g[k]));
        int nb = 0;
        for (size_t k = 0; k < numel; k++) {
            double d = fabs(m->grads[t->offset + k] - g[k]);
            w = fmax(w, d / (scale > 0 ? scale : 1));
            nb += d > 1e-4 * scale + 1e-3 * fabs(g[k]);
        }
        CHECK_MSG(nb == 0, "%s: %d of %zu gradient entries differ (worst %.3g of max)", t->name,
                  nb, numel, w);
        free(g);
    }

    /* three AdamW steps from the initial weights */
    memcpy(m->params, init, m->n_params * sizeof(float));
    she_adamw_t *opt = she_adamw_new(m->n_params);
    for (int s = 0; s <= n_steps; s++) {
        double ref = rd_f64(r);
        she_model_zero_grad(m);
        REQUIRE_OK(she_model_forward(m, tok, mask, tgt, B, T, temp, logp, ent, errstr,
                                     sizeof(errstr)));
        double L = weighted_loss(logp, ent, a, c, (int)N);
        fprintf(stderr, "  step %d: loss %.6f (torch %.6f)\n", s, L, ref);
        CHECK_CLOSE(L, ref, 1e-3, 1e-4);
        if (s == n_steps)
            break;
        she_model_backward(m, a, c);
        she_model_adamw_step(m, opt, &hp, lr, 1.0f, clip);
    }
    CHECK(!r->bad);
    she_adamw_free(opt);
    free(tok), free(mask32), free(tgt), free(a), free(c), free(index), free(init);
    free(ref_logits), free(ref_logp), free(ref_ent);
    she_model_free(m);
}

static void test_golden(void) {
    char path[1024];
    const char *src = getenv("SHE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/tests/fixtures/model_golden.bin", src ? src : ".");
    size_t len = 0;
    uint8_t *buf = read_file(path, &len);
    REQUIRE_MSG(buf != NULL, "cannot read %s", path);
    reader_t r = {buf, buf + len, 0};
    const void *magic = take(&r, 8);
    REQUIRE(magic && memcmp(magic, "SHEMODL1", 8) == 0);
    uint32_t version = rd_u32(&r), n_cases = rd_u32(&r);
    REQUIRE_MSG(version == 1, "fixture version %u, test knows 1", version);
    CHECK(n_cases == 2);
    for (uint32_t i = 0; i < n_cases && !r.bad; i++)
        run_case(&r, (int)i);
    CHECK_MSG(r.p == r.end, "%zu trailing bytes in the fixture", (size_t)(r.end - r.p));
    free(buf);
}

int main(void) {
    RUN(test_golden);
    TEST_DONE();
}
