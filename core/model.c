/* model.c -- Llama/Qwen2 transformer: config, parameter block, forward, backward, checkpoints.
 * See model.h for the layout and the threading scheme. */
/* Loops over she_expf's clamps only vectorise when float compares are known not to trap; we
 * never enable floating-point exceptions, and this changes no result. */
#pragma GCC optimize("no-trapping-math")

#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptdir.h"
#include "safetensors.h"

/* ------------------------------------------------------------------------------------------ */
/* configuration                                                                              */

static const char *arch_of(const char *model_type) {
    return strcmp(model_type, "qwen2") == 0 ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
}

she_err_t she_model_config_validate(const she_model_config_t *c, char *errstr,
                                    size_t errstr_size) {
    const struct {
        const char *key;
        int v;
    } pos[] = {{"vocab_size", c->vocab_size},
               {"hidden_size", c->hidden_size},
               {"intermediate_size", c->intermediate_size},
               {"num_hidden_layers", c->n_layers},
               {"num_attention_heads", c->n_heads},
               {"num_key_value_heads", c->n_kv_heads},
               {"max_position_embeddings", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
        if (pos[i].v <= 0)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s must be positive, not %d",
                            pos[i].key, pos[i].v);
    if (strcmp(c->model_type, "llama") != 0 && strcmp(c->model_type, "qwen2") != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "model_type must be \"llama\" or \"qwen2\", not \"%s\"", c->model_type);
    if (c->hidden_size % c->n_heads != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "num_attention_heads (%d) must divide hidden_size (%d)", c->n_heads,
                        c->hidden_size);
    if (c->n_heads % c->n_kv_heads != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "num_key_value_heads (%d) must divide num_attention_heads (%d)",
                        c->n_kv_heads, c->n_heads);
    if ((c->hidden_size / c->n_heads) % 2 != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "head dimension hidden_size / num_attention_heads = %d must be even "
                        "for RoPE", c->hidden_size / c->n_heads);
    if (!(c->rope_theta > 0.0))
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "rope_theta must be positive");
    if (!(c->rms_norm_eps > 0.0))
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "rms_norm_eps must be positive");
    if (c->model_type[0] == 'q' && !c->attention_bias)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "qwen2 models always have q/k/v biases (attention_bias)");
    return SHE_OK;
}

/* Reads an integer key; `required` = 0 leaves *v alone when the key is absent or null. */
static she_err_t get_int(json_t *root, const char *path, const char *key, int required, int *v,
                         char *errstr, size_t errstr_size) {
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j)) {
        if (required)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: missing key \"%s\"", path,
                            key);
        return SHE_OK;
    }
    if (!json_is_integer(j) || json_integer_value(j) > 0x7fffffff ||
        json_integer_value(j) < -0x7fffffff)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "%s: key \"%s\" must be a 32-bit integer", path, key);
    *v = (int)json_integer_value(j);
    return SHE_OK;
}

static she_err_t get_num(json_t *root, const char *path, const char *key, int required,
                         double *v, char *errstr, size_t errstr_size) {
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j)) {
        if (required)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: missing key \"%s\"", path,
                            key);
        return SHE_OK;
    }
    if (!json_is_number(j))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: key \"%s\" must be a number",
                        path, key);
    *v = json_number_value(j);
    return SHE_OK;
}

static she_err_t get_bool(json_t *root, const char *path, const char *key, int *v,
                          char *errstr, size_t errstr_size) {
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return SHE_OK;
    if (!json_is_boolean(j))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: key \"%s\" must be a boolean",
                        path, key);
    *v = json_is_true(j);
    return SHE_OK;
}

/* Everything that needs the parsed JSON; the caller owns and frees root. */
static she_err_t config_from_json(json_t *root, const char *path, she_model_config_t *c,
                                  char *errstr, size_t errstr_size) {
    memset(c, 0, sizeof(*c));
    if (!json_is_object(root))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: not a JSON object", path);

    json_t *mt = json_object_get(root, "model_type");
    json_t *archs = json_object_get(root, "architectures");
    const char *type = "llama";
    if (mt) {
        if (!json_is_string(mt))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "%s: key \"model_type\" must be a string", path);
        type = json_string_value(mt);
    } else if (json_is_array(archs) && json_is_string(json_array_get(archs, 0)) &&
               strcmp(json_string_value(json_array_get(archs, 0)), "Qwen2ForCausalLM") == 0) {
        type = "qwen2";
    }
    if (strcmp(type, "llama") != 0 && strcmp(type, "qwen2") != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "%s: key \"model_type\": \"%s\" is not supported (llama, qwen2)", path,
                        type);
    snprintf(c->model_type, sizeof(c->model_type), "%s", type);

    SHE_TRY(get_int(root, path, "hidden_size", 1, &c->hidden_size, errstr, errstr_size));
    SHE_TRY(get_int(root, path, "intermediate_size", 1, &c->intermediate_size, errstr,
                    errstr_size));
    SHE_TRY(get_int(root, path, "num_hidden_layers", 1, &c->n_layers, errstr, errstr_size));
    SHE_TRY(get_int(root, path, "num_attention_heads", 1, &c->n_heads, errstr, errstr_size));
    c->n_kv_heads = c->n_heads;
    SHE_TRY(get_int(root, path, "num_key_value_heads", 0, &c->n_kv_heads, errstr, errstr_size));
    SHE_TRY(get_int(root, path, "vocab_size", 1, &c->vocab_size, errstr, errstr_size));
    SHE_TRY(get_int(root, path, "max_position_embeddings", 1, &c->max_position_embeddings,
                    errstr, errstr_size));
    c->rope_theta = 10000.0;
    SHE_TRY(get_num(root, path, "rope_theta", 0, &c->rope_theta, errstr, errstr_size));
    SHE_TRY(get_num(root, path, "rms_norm_eps", 1, &c->rms_norm_eps, errstr, errstr_size));
    SHE_TRY(get_bool(root, path, "tie_word_embeddings", &c->tie_word_embeddings, errstr,
                     errstr_size));
    c->attention_bias = strcmp(type, "qwen2") == 0;
    if (!c->attention_bias)
        SHE_TRY(get_bool(root, path, "attention_bias", &c->attention_bias, errstr, errstr_size));

    /* Keys that would change the math: refuse rather than compute something else. */
    int head_dim = 0;
    SHE_TRY(get_int(root, path, "head_dim", 0, &head_dim, errstr, errstr_size));
    if (head_dim && c->n_heads > 0 && head_dim * c->n_heads != c->hidden_size)
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "%s: key \"head_dim\" = %d differs from hidden_size / "
                        "num_attention_heads", path, head_dim);
    json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "%s: key \"hidden_act\" must be \"silu\"", path);
    json_t *scaling = json_object_get(root, "rope_scaling");
    if (scaling && !json_is_null(scaling))
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "%s: key \"rope_scaling\" is not supported (must be null)", path);
    int sliding = 0, mlp_bias = 0;
    SHE_TRY(get_bool(root, path, "use_sliding_window", &sliding, errstr, errstr_size));
    SHE_TRY(get_bool(root, path, "mlp_bias", &mlp_bias, errstr, errstr_size));
    if (sliding || mlp_bias)
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "%s: key \"%s\" = true is not supported", path,
                        sliding ? "use_sliding_window" : "mlp_bias");

    she_err_t err = she_model_config_validate(c, errstr, errstr_size);
    if (err != SHE_OK) {
        char why[SHE_ERRSTR_SIZE];
        snprintf(why, sizeof(why), "%s", errstr ? errstr : "");
        return she_errf(err, errstr, errstr_size, "%s: %s", path, why);
    }
    return SHE_OK;
}

she_err_t she_model_config_load(const char *path, she_model_config_t *c, char *errstr,
                                size_t errstr_size) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_cannot_open_file)
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "%s: %s", path, jerr.text);
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s:%d: %s", path, jerr.line,
                        jerr.text);
    }
    she_err_t err = config_from_json(root, path, c, errstr, errstr_size);
    json_decref(root);
    return err;
}

she_err_t she_model_config_save(const she_model_config_t *c, const char *path, char *errstr,
                                size_t errstr_size) {
    json_t *root = json_object();
    json_t *archs = json_array();
    json_array_append_new(archs, json_string(arch_of(c->model_type)));
    json_object_set_new(root, "architectures", archs);
    json_object_set_new(root, "model_type", json_string(c->model_type));
    json_object_set_new(root, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(root, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(root, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(root, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(root, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(root, "max_position_embeddings",
                        json_integer(c->max_position_embeddings));
    json_object_set_new(root, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(root, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (strcmp(c->model_type, "llama") == 0)
        json_object_set_new(root, "attention_bias", json_boolean(c->attention_bias));
    json_object_set_new(root, "hidden_act", json_string("silu"));
    json_object_set_new(root, "torch_dtype", json_string("float32"));
    /* 15 significant digits print 1e-05 as "1e-05", not its binary neighbour. */
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(root);
    if (rc != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot write %s: %s", path,
                        strerror(errno));
    return SHE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* parameter layout                                                                           */

/* Points w's fields into block following the order in model.h; returns the block size.  With
 * block == NULL only counts.  *n_decay receives the size of the matrix part. */
static size_t point_weights(const she_model_config_t *c, int qkv_dim, float *block,
                            she_model_weights_t *w, size_t *n_decay) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t V = (size_t)c->vocab_size, Q = (size_t)qkv_dim;
    size_t off = 0;
#define TAKE(field, count)                              \
    do {                                                \
        w->field = block ? block + off : NULL;          \
        off += (count);                                 \
    } while (0)
    TAKE(embed, V * D);
    TAKE(wqkv, L * Q * D);
    TAKE(wo, L * D * D);
    TAKE(wgu, L * 2 * F * D);
    TAKE(wd, L * D * F);
    if (c->tie_word_embeddings)
        w->lm_head = w->embed;
    else
        TAKE(lm_head, V * D);
    *n_decay = off;
    TAKE(ln1, L * D);
    if (c->attention_bias)
        TAKE(bqkv, L * Q);
    else
        w->bqkv = NULL;
    TAKE(ln2, L * D);
    TAKE(lnf, D);
#undef TAKE
    return off;
}

static void add_tensor(she_model_t *m, const float *p, int64_t rows, int64_t cols,
                       const char *fmt, int layer) {
    she_model_tensor_t *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof(t->name), fmt, layer);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->offset = (size_t)(p - m->params);
}

/* The HF tensor table, in the order HF writes a Llama state dict. */
static void build_tensor_table(she_model_t *m) {
    const she_model_config_t *c = &m->cfg;
    int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, KVD = m->kv_dim;
    int64_t Q = m->qkv_dim;
    const she_model_weights_t *w = &m->w;
    m->tensors = calloc((size_t)c->n_layers * 12 + 4, sizeof(*m->tensors));
    SHE_CHECK_ALLOC(m->tensors);
    add_tensor(m, w->embed, V, D, "model.embed_tokens.weight", 0);
    for (int l = 0; l < c->n_layers; l++) {
        const float *qkv = w->wqkv + l * Q * D, *gu = w->wgu + l * 2 * F * D;
        const char *pre = "model.layers.%d.";
        char fmt[96];
#define LAYER_TENSOR(p, rows, cols, suffix)                  \
    do {                                                     \
        snprintf(fmt, sizeof(fmt), "%s%s", pre, suffix);     \
        add_tensor(m, (p), (rows), (cols), fmt, l);          \
    } while (0)
        LAYER_TENSOR(w->ln1 + l * D, D, 0, "input_layernorm.weight");
        LAYER_TENSOR(qkv, D, D, "self_attn.q_proj.weight");
        LAYER_TENSOR(qkv + D * D, KVD, D, "self_attn.k_proj.weight");
        LAYER_TENSOR(qkv + (D + KVD) * D, KVD, D, "self_attn.v_proj.weight");
        if (w->bqkv) {
            const float *b = w->bqkv + l * Q;
            LAYER_TENSOR(b, D, 0, "self_attn.q_proj.bias");
            LAYER_TENSOR(b + D, KVD, 0, "self_attn.k_proj.bias");
            LAYER_TENSOR(b + D + KVD, KVD, 0, "self_attn.v_proj.bias");
        }
        LAYER_TENSOR(w->wo + l * D * D, D, D, "self_attn.o_proj.weight");
        LAYER_TENSOR(w->ln2 + l * D, D, 0, "post_attention_layernorm.weight");
        LAYER_TENSOR(gu, F, D, "mlp.gate_proj.weight");
        LAYER_TENSOR(gu + F * D, F, D, "mlp.up_proj.weight");
        LAYER_TENSOR(w->wd + l * D * F, D, F, "mlp.down_proj.weight");
#undef LAYER_TENSOR
    }
    add_tensor(m, w->lnf, D, 0, "model.norm.weight", 0);
    if (!c->tie_word_embeddings)
        add_tensor(m, w->lm_head, V, D, "lm_head.weight", 0);
}

/* ------------------------------------------------------------------------------------------ */
/* life cycle                                                                                 */

she_err_t she_model_new(const she_model_config_t *cfg, int max_batch, int max_seq,
                        she_model_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    SHE_TRY(she_model_config_validate(cfg, errstr, errstr_size));
    if (max_batch <= 0 || max_seq <= 0 || max_seq > cfg->max_position_embeddings)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "batch %d x sequence %d: both must be positive and the sequence at most "
                        "max_position_embeddings (%d)", max_batch, max_seq,
                        cfg->max_position_embeddings);
    she_model_t *m = calloc(1, sizeof(*m));
    SHE_CHECK_ALLOC(m);
    m->cfg = *cfg;
    m->head_dim = cfg->hidden_size / cfg->n_heads;
    m->kv_dim = cfg->n_kv_heads * m->head_dim;
    m->qkv_dim = cfg->hidden_size + 2 * m->kv_dim;
    m->max_batch = max_batch;
    m->max_seq = max_seq;
    m->n_threads = omp_get_max_threads();

    m->n_params = point_weights(cfg, m->qkv_dim, NULL, &m->w, &m->n_decay);
    m->params = calloc(m->n_params, sizeof(float));
    m->grads = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->grads) {
        she_model_free(m);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size,
                        "cannot allocate %zu parameters and their gradients", m->n_params);
    }
    point_weights(cfg, m->qkv_dim, m->params, &m->w, &m->n_decay);
    point_weights(cfg, m->qkv_dim, m->grads, &m->g, &m->n_decay);
    build_tensor_table(m);

    size_t L = (size_t)cfg->n_layers, D = (size_t)cfg->hidden_size;
    size_t F = (size_t)cfg->intermediate_size, V = (size_t)cfg->vocab_size;
    size_t N = (size_t)max_batch * (size_t)max_seq, Q = (size_t)m->qkv_dim;
    size_t T = (size_t)max_seq, H = (size_t)cfg->n_heads, half = (size_t)m->head_dim / 2;
    struct {
        float **p;
        size_t n;
    } fl[] = {
        {&m->a.res, (L + 1) * N * D}, {&m->a.res_mid, L * N * D}, {&m->a.h1, L * N * D},
        {&m->a.rstd1, L * N},         {&m->a.qkv, L * N * Q},     {&m->a.att, L * N * D},
        {&m->a.lse, L * N * H},       {&m->a.h2, L * N * D},      {&m->a.rstd2, L * N},
        {&m->a.gu, L * N * 2 * F},    {&m->a.act, L * N * F},     {&m->a.hf, N * D},
        {&m->a.rstdf, N},             {&m->a.logits, N * V},      {&m->a.row_lse, N},
        {&m->a.row_ent, N},           {&m->a.dres, N * D},        {&m->a.dh, N * D},
        {&m->a.dqkv, N * Q},          {&m->a.datt, N * D},        {&m->a.dgu, N * 2 * F},
        {&m->a.dact, N * F},          {&m->a.scores, (size_t)m->n_threads * 2 * T * T},
        {&m->rope_cos, T * half},     {&m->rope_sin, T * half},
    };
    /* Every array starts on a 64-byte boundary. */
    size_t total = 0;
    for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++)
        total += (fl[i].n + 15) / 16 * 16;
    size_t n_int = 3 * N, n_bytes = total * sizeof(float) + n_int * sizeof(int32_t) + N;
    m->act_block = aligned_alloc(64, (n_bytes + 63) / 64 * 64);
    if (!m->act_block) {
        she_model_free(m);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size,
                        "cannot allocate %zu MB of activations for batch %d x %d",
                        n_bytes >> 20, max_batch, max_seq);
    }
    memset(m->act_block, 0, n_bytes);
    float *p = m->act_block;
    for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
        *fl[i].p = p;
        p += (fl[i].n + 15) / 16 * 16;
    }
    m->a.tokens = (int32_t *)p;
    m->a.targets = m->a.tokens + N;
    m->a.pos = m->a.targets + N;
    m->a.mask = (uint8_t *)(m->a.pos + N);

    /* RoPE angles as HF computes them: inv_freq_i = theta^(-2i/hd), angle = pos * inv_freq. */
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < half; i++) {
            double inv_freq = pow(cfg->rope_theta, -(double)(2 * i) / (double)m->head_dim);
            double angle = (double)t * inv_freq;
            m->rope_cos[t * half + i] = (float)cos(angle);
            m->rope_sin[t * half + i] = (float)sin(angle);
        }
    *out = m;
    return SHE_OK;
}

void she_model_free(she_model_t *m) {
    if (!m)
        return;
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->act_block);
    free(m);
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void she_model_init_weights(she_model_t *m, uint64_t seed, float std) {
    uint64_t s = seed;
    /* Box-Muller in double from 53-bit uniforms; one serial stream, so thread-independent. */
    for (size_t i = 0; i < m->n_decay; i += 2) {
        double u1 = ((splitmix64(&s) >> 11) + 1.0) * 0x1.0p-53;
        double u2 = (splitmix64(&s) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)) * std;
        m->params[i] = (float)(r * cos(2.0 * M_PI * u2));
        if (i + 1 < m->n_decay)
            m->params[i + 1] = (float)(r * sin(2.0 * M_PI * u2));
    }
    size_t L = (size_t)m->cfg.n_layers, D = (size_t)m->cfg.hidden_size;
    for (size_t i = 0; i < L * D; i++)
        m->w.ln1[i] = m->w.ln2[i] = 1.0f;
    for (size_t i = 0; i < D; i++)
        m->w.lnf[i] = 1.0f;
    if (m->w.bqkv)
        memset(m->w.bqkv, 0, L * (size_t)m->qkv_dim * sizeof(float));
}

double she_model_flops_per_step(const she_model_config_t *c, int B, int T) {
    double D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, L = c->n_layers;
    double hd = D / c->n_heads, kvd = c->n_kv_heads * hd;
    double matrix_params = L * (D * (D + 2 * kvd) + D * D + 3 * D * F) + V * D;
    double tokens = (double)B * T;
    return 6.0 * matrix_params * tokens + 12.0 * L * D * T * tokens;
}

/* ------------------------------------------------------------------------------------------ */
/* kernels                                                                                    */

/* Cephes expf: x = n ln2 + r with |r| <= ln2/2 (about), a degree-6 polynomial for e^r, and 2^n built
 * in the exponent bits.  Branch-free so that loops calling it vectorise (glibc's expf does not
 * without -ffast-math).  Inputs are clamped to [-87, 88]: e^-87 ~ 1.6e-38 stands in for 0. */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest by adding and subtracting 1.5 * 2^23 (floorf is a libm call here) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

float she_expf(float x) { return fast_expf(x); }

/* C = alpha op(A) op(B) + beta C (row-major), computed by the OpenMP threads, each calling a
 * single-threaded sgemm on its slice of C's rows (or columns when C is wide and short). */
void she_gemm(int n_threads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int split_rows = M >= N;
#pragma omp parallel num_threads(n_threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int len = split_rows ? M : N;
        /* slice edges on multiples of 16 keep the kernels on their full-width paths */
        int per = ((len + nt - 1) / nt + 15) / 16 * 16;
        int lo = t * per, hi = lo + per < len ? lo + per : len;
        if (lo < hi) {
            if (split_rows)
                cblas_sgemm(CblasRowMajor, TA, TB, hi - lo, N, K, alpha,
                            ta ? A + lo : A + (size_t)lo * lda, lda, B, ldb, beta,
                            C + (size_t)lo * ldc, ldc);
            else
                cblas_sgemm(CblasRowMajor, TA, TB, M, hi - lo, K, alpha, A, lda,
                            tb ? B + (size_t)lo * ldb : B + lo, ldb, beta, C + lo, ldc);
        }
    }
}

void she_matmul(float *out, const float *in, const float *w, const float *bias, int rows,
                int n_in, int n_out) {
    if (bias)
        for (int r = 0; r < rows; r++)
            memcpy(out + (size_t)r * n_out, bias, (size_t)n_out * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_out, n_in, 1.0f, in, n_in, w,
                n_in, bias ? 1.0f : 0.0f, out, n_out);
}

static float rmsnorm_row(float *out, const float *x, const float *w, int dim, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < dim; i++)
        ss += x[i] * x[i];
    float rstd = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * rstd * w[i];
    return rstd;
}

void she_rmsnorm(float *out, float *rstd, const float *x, const float *w, int n_rows, int dim,
                 float eps) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n_rows; r++) {
        float rs = rmsnorm_row(out + (size_t)r * dim, x + (size_t)r * dim, w, dim, eps);
        if (rstd)
            rstd[r] = rs;
    }
}

/* Column block of the weight-gradient reductions: each column is summed over the rows by one
 * thread in row order, so the result does not depend on the thread count. */
#define COL_BLOCK 32

/* dx (+)= d rmsnorm / dx . dy; dw += sum_rows dy * x * rstd. */
static void rmsnorm_backward(const she_model_t *m, float *dx, int accumulate, float *dw,
                             const float *dy, const float *x, const float *rstd, const float *w,
                             int n_rows, int dim) {
#pragma omp parallel num_threads(m->n_threads)
    {
#pragma omp for schedule(static)
        for (int r = 0; r < n_rows; r++) {
            const float *dyr = dy + (size_t)r * dim, *xr = x + (size_t)r * dim;
            float *dxr = dx + (size_t)r * dim, rs = rstd[r], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < dim; i++)
                dot += dyr[i] * w[i] * xr[i];
            float c = dot * rs * rs * rs / (float)dim;
            if (accumulate)
                for (int i = 0; i < dim; i++)
                    dxr[i] += rs * dyr[i] * w[i] - c * xr[i];
            else
                for (int i = 0; i < dim; i++)
                    dxr[i] = rs * dyr[i] * w[i] - c * xr[i];
        }
#pragma omp for schedule(static)
        for (int c0 = 0; c0 < dim; c0 += COL_BLOCK) {
            int c1 = c0 + COL_BLOCK < dim ? c0 + COL_BLOCK : dim;
            float acc[COL_BLOCK] = {0};
            for (int r = 0; r < n_rows; r++) {
                const float *dyr = dy + (size_t)r * dim, *xr = x + (size_t)r * dim;
                float rs = rstd[r];
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += dyr[c] * xr[c] * rs;
            }
            for (int c = c0; c < c1; c++)
                dw[c] += acc[c - c0];
        }
    }
}

void she_rope(float *x, int n_heads, int head_dim, const float *cos, const float *sin) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

/* The transpose of she_rope: rotates by the opposite angles. */
static void rope_backward(float *dx, int n_heads, int head_dim, const float *cos,
                          const float *sin) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = dx + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] + b * sin[i];
            v[i + half] = b * cos[i] - a * sin[i];
        }
    }
}

void she_swiglu(float *out, const float *gu, int F) {
    for (int i = 0; i < F; i++) {
        float g = gu[i];
        out[i] = g / (1.0f + fast_expf(-g)) * gu[F + i];
    }
}

/* dgu = d(silu(g) * u) from dout, for one row. */
static void swiglu_backward(float *dgu, const float *dout, const float *gu, int F) {
    for (int i = 0; i < F; i++) {
        float g = gu[i], u = gu[F + i], s = 1.0f / (1.0f + fast_expf(-g));
        dgu[i] = dout[i] * u * s * (1.0f + g * (1.0f - s));
        dgu[F + i] = dout[i] * g * s;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* attention                                                                                  */

/* Scores of one (batch row, head) pair: S = scale * Q K^T, T x T. */
static void attn_scores(float *S, const float *q, const float *k, int T, int hd, int ldqkv,
                        float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, ldqkv, k, ldqkv,
                0.0f, S, T);
}

/* Softmax of each score row over the visible keys (j <= i and mask[j]); P replaces S, invisible
 * entries become 0; lse[i] = log-sum-exp of the visible scores (-INF: none visible). */
static void attn_softmax(float *S, float *lse, const uint8_t *mask, int T) {
    for (int i = 0; i < T; i++) {
        float *s = S + (size_t)i * T, mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j <= i; j++) {
            float v = mask[j] ? s[j] : -INFINITY;
            mx = v > mx ? v : mx;
        }
        if (mx == -INFINITY) {
            memset(s, 0, (size_t)T * sizeof(float));
            lse[i] = -INFINITY;
            continue;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= i; j++) {
            float p = mask[j] ? fast_expf(s[j] - mx) : 0.0f;
            s[j] = p;
            sum += p;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++)
            s[j] *= inv;
        for (int j = i + 1; j < T; j++)
            s[j] = 0.0f;
        lse[i] = mx + logf(sum);
    }
}

/* Recomputes P from the scores and the saved log-sum-exp (backward pass). */
static void attn_probs(float *S, const float *lse, const uint8_t *mask, int T) {
    for (int i = 0; i < T; i++) {
        float *s = S + (size_t)i * T, l = lse[i];
        if (l == -INFINITY) {
            memset(s, 0, (size_t)T * sizeof(float));
            continue;
        }
        for (int j = 0; j <= i; j++)
            s[j] = mask[j] ? fast_expf(s[j] - l) : 0.0f;
        for (int j = i + 1; j < T; j++)
            s[j] = 0.0f;
    }
}

static void attention_forward(const she_model_t *m, float *att, float *lse, const float *qkv,
                              int B, int T) {
    int D = m->cfg.hidden_size, H = m->cfg.n_heads, hd = m->head_dim, Q = m->qkv_dim;
    int group = H / m->cfg.n_kv_heads, kvd = m->kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, g = h / group;
        float *S = m->a.scores + (size_t)omp_get_thread_num() * 2 * m->max_seq * m->max_seq;
        const float *base = qkv + (size_t)b * T * Q;
        const float *q = base + h * hd, *k = base + D + g * hd, *v = base + D + kvd + g * hd;
        attn_scores(S, q, k, T, hd, Q, scale);
        attn_softmax(S, lse + (size_t)bh * T, m->a.mask + (size_t)b * T, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, S, T, v, Q, 0.0f,
                    att + (size_t)b * T * D + h * hd, D);
    }
}

/* dqkv (overwritten) from datt, for every (batch row, kv group); the heads of a group run in
 * one task because they add into the same dK and dV.  Ends with the RoPE transpose. */
static void attention_backward(const she_model_t *m, float *dqkv, const float *datt,
                               const float *qkv, const float *lse, int B, int T) {
    int D = m->cfg.hidden_size, H = m->cfg.n_heads, hd = m->head_dim, Q = m->qkv_dim;
    int KV = m->cfg.n_kv_heads, group = H / KV, kvd = m->kv_dim, half = hd / 2;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (int bg = 0; bg < B * KV; bg++) {
        int b = bg / KV, g = bg % KV;
        float *P = m->a.scores + (size_t)omp_get_thread_num() * 2 * m->max_seq * m->max_seq;
        float *dP = P + (size_t)m->max_seq * m->max_seq;
        const uint8_t *mask = m->a.mask + (size_t)b * T;
        const float *base = qkv + (size_t)b * T * Q;
        float *dbase = dqkv + (size_t)b * T * Q;
        const float *k = base + D + g * hd, *v = base + D + kvd + g * hd;
        float *dk = dbase + D + g * hd, *dv = dbase + D + kvd + g * hd;
        for (int hh = 0; hh < group; hh++) {
            int h = g * group + hh;
            const float *q = base + h * hd, *dO = datt + (size_t)b * T * D + h * hd;
            float *dq = dbase + h * hd, beta = hh ? 1.0f : 0.0f;
            attn_scores(P, q, k, T, hd, Q, scale);
            attn_probs(P, lse + ((size_t)b * H + h) * T, mask, T);
            /* dV (+)= P^T dO;  dP = dO V^T */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, D,
                        beta, dv, Q);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, D, v, Q,
                        0.0f, dP, T);
            /* dS = P * (dP - rowsum(P * dP)), in place in dP */
            for (int i = 0; i < T; i++) {
                const float *p = P + (size_t)i * T;
                float *dp = dP + (size_t)i * T, dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j <= i; j++)
                    dot += p[j] * dp[j];
                for (int j = 0; j <= i; j++)
                    dp[j] = p[j] * (dp[j] - dot);
                for (int j = i + 1; j < T; j++)
                    dp[j] = 0.0f;
            }
            /* dQ = scale dS K;  dK (+)= scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dP, T, k, Q,
                        0.0f, dq, Q);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dP, T, q, Q,
                        beta, dk, Q);
        }
        for (int t = 0; t < T; t++) {
            const int32_t pos = m->a.pos[(size_t)b * T + t];
            const float *c = m->rope_cos + (size_t)pos * half, *s = m->rope_sin + (size_t)pos * half;
            float *row = dbase + (size_t)t * Q;
            rope_backward(row + g * group * hd, group, hd, c, s);
            rope_backward(row + D + g * hd, 1, hd, c, s);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* forward / backward                                                                         */

/* Row r takes part in the loss: a real token with a target. */
static int row_active(const she_model_t *m, size_t r) {
    return m->a.mask[r] && m->a.targets[r] >= 0;
}

she_err_t she_model_check_batch(const she_model_config_t *c, int max_batch, int max_seq,
                                const int32_t *tokens, const int32_t *targets, int B, int T,
                                float temperature, char *errstr, size_t errstr_size) {
    if (B <= 0 || T <= 0 || B > max_batch || T > max_seq)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "batch %d x %d outside the reserved %d x %d", B, T, max_batch, max_seq);
    if (!(temperature > 0.0f))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "temperature %g must be > 0",
                        (double)temperature);
    size_t N = (size_t)B * T;
    for (size_t r = 0; r < N; r++) {
        if (tokens[r] < 0 || tokens[r] >= c->vocab_size)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "token %d at [%zu, %zu] outside the vocabulary (%d)", tokens[r],
                            r / T, r % T, c->vocab_size);
        if (targets && targets[r] >= c->vocab_size)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "target %d at [%zu, %zu] outside the vocabulary (%d)", targets[r],
                            r / T, r % T, c->vocab_size);
    }
    return SHE_OK;
}

she_err_t she_model_forward(she_model_t *m, const int32_t *tokens, const uint8_t *mask,
                            const int32_t *targets, int B, int T, float temperature, float *logp,
                            float *entropy, char *errstr, size_t errstr_size) {
    const she_model_config_t *c = &m->cfg;
    SHE_TRY(she_model_check_batch(c, m->max_batch, m->max_seq, tokens, targets, B, T, temperature,
                                  errstr, errstr_size));
    size_t N = (size_t)B * T;
    she_model_acts_t *a = &m->a;
    m->B = B;
    m->T = T;
    m->temperature = temperature;
    m->backward_ready = targets != NULL;
    for (int b = 0; b < B; b++) {
        int seen = 0;
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            a->tokens[r] = tokens[r];
            a->targets[r] = targets ? targets[r] : -1;
            a->mask[r] = mask ? mask[r] != 0 : 1;
            seen += a->mask[r];
            a->pos[r] = seen > 0 ? seen - 1 : 0;
        }
    }

    int saved_blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    int D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, Q = m->qkv_dim;
    int H = c->n_heads, KV = c->n_kv_heads, hd = m->head_dim, half = hd / 2;
    float eps = (float)c->rms_norm_eps;
    const she_model_weights_t *w = &m->w;
    size_t mND = (size_t)m->max_batch * m->max_seq * D, mN = (size_t)m->max_batch * m->max_seq;
    size_t mNQ = mN * Q, mNF = mN * F;

#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (size_t r = 0; r < N; r++)
        memcpy(a->res + r * D, w->embed + (size_t)a->tokens[r] * D, (size_t)D * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        const float *res = a->res + l * mND;
        float *h1 = a->h1 + l * mND, *qkv = a->qkv + l * mNQ, *att = a->att + l * mND;
        float *mid = a->res_mid + l * mND, *h2 = a->h2 + l * mND, *gu = a->gu + l * 2 * mNF;
        float *act = a->act + l * mNF, *next = a->res + (l + 1) * mND;
        const float *bqkv = w->bqkv ? w->bqkv + (size_t)l * Q : NULL;

        she_rmsnorm(h1, a->rstd1 + l * mN, res, w->ln1 + (size_t)l * D, (int)N, D, eps);
        she_gemm(m->n_threads, 0, 1, (int)N, Q, D, 1.0f, h1, D, w->wqkv + (size_t)l * Q * D, D, 0.0f, qkv, Q);
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
        for (size_t r = 0; r < N; r++) {
            float *row = qkv + r * Q;
            if (bqkv)
                for (int i = 0; i < Q; i++)
                    row[i] += bqkv[i];
            const float *cs = m->rope_cos + (size_t)a->pos[r] * half;
            const float *sn = m->rope_sin + (size_t)a->pos[r] * half;
            she_rope(row, H, hd, cs, sn);
            she_rope(row + D, KV, hd, cs, sn);
        }
        attention_forward(m, att, a->lse + l * mN * H, qkv, B, T);
        memcpy(mid, res, N * D * sizeof(float));
        she_gemm(m->n_threads, 0, 1, (int)N, D, D, 1.0f, att, D, w->wo + (size_t)l * D * D, D, 1.0f, mid, D);
        she_rmsnorm(h2, a->rstd2 + l * mN, mid, w->ln2 + (size_t)l * D, (int)N, D, eps);
        she_gemm(m->n_threads, 0, 1, (int)N, 2 * F, D, 1.0f, h2, D, w->wgu + (size_t)l * 2 * F * D, D, 0.0f, gu,
             2 * F);
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
        for (size_t r = 0; r < N; r++)
            she_swiglu(act + r * F, gu + r * 2 * F, F);
        memcpy(next, mid, N * D * sizeof(float));
        she_gemm(m->n_threads, 0, 1, (int)N, D, F, 1.0f, act, F, w->wd + (size_t)l * D * F, F, 1.0f, next, D);
    }

    she_rmsnorm(a->hf, a->rstdf, a->res + c->n_layers * mND, w->lnf, (int)N, D, eps);
    she_gemm(m->n_threads, 0, 1, (int)N, V, D, 1.0f, a->hf, D, w->lm_head, D, 0.0f, a->logits, V);
    openblas_set_num_threads(saved_blas_threads);

    if (!targets)
        return SHE_OK;
    float inv_t = 1.0f / temperature;
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (size_t r = 0; r < N; r++) {
        float lp = 0.0f, ent = 0.0f;
        if (row_active(m, r)) {
            const float *z = a->logits + r * V;
            float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
            for (int j = 0; j < V; j++)
                mx = z[j] > mx ? z[j] : mx;
            mx *= inv_t;
            /* sum e^(z-mx) and sum e^(z-mx) (z-mx) give lse and the entropy in one pass */
            float s = 0.0f, sz = 0.0f;
#pragma omp simd reduction(+ : s, sz)
            for (int j = 0; j < V; j++) {
                float d = z[j] * inv_t - mx, e = fast_expf(d);
                s += e;
                sz += e * d;
            }
            float lse = mx + logf(s);
            ent = logf(s) - sz / s;
            lp = z[a->targets[r]] * inv_t - lse;
            a->row_lse[r] = lse;
            a->row_ent[r] = ent;
        }
        if (logp)
            logp[r] = lp;
        if (entropy)
            entropy[r] = ent;
    }
    return SHE_OK;
}

void she_model_backward(she_model_t *m, const float *dlogp, const float *dentropy) {
    SHE_ASSERT(m->backward_ready);
    m->backward_ready = 0;
    const she_model_config_t *c = &m->cfg;
    she_model_acts_t *a = &m->a;
    const she_model_weights_t *w = &m->w;
    she_model_weights_t *gw = &m->g;
    int B = m->B, T = m->T, D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int Q = m->qkv_dim, H = c->n_heads, L = c->n_layers;
    size_t N = (size_t)B * T;
    size_t mN = (size_t)m->max_batch * m->max_seq, mND = mN * D, mNQ = mN * Q, mNF = mN * F;
    float inv_t = 1.0f / m->temperature;

    /* logits -> dlogits in place.  With z = logits / temperature, lp = z - lse, p = e^lp:
     * dlogp/dz_j = [j == target] - p_j and dH/dz_j = -p_j (lp_j + H). */
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (size_t r = 0; r < N; r++) {
        float *z = a->logits + r * V;
        if (!row_active(m, r)) {
            memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        float gl = dlogp ? dlogp[r] : 0.0f, ge = dentropy ? dentropy[r] : 0.0f;
        float lse = a->row_lse[r], ent = a->row_ent[r];
        for (int j = 0; j < V; j++) {
            float lp = z[j] * inv_t - lse, p = fast_expf(lp);
            z[j] = -p * (gl + ge * (lp + ent)) * inv_t;
        }
        z[a->targets[r]] += gl * inv_t;
    }

    int saved_blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    she_gemm(m->n_threads, 0, 0, (int)N, D, V, 1.0f, a->logits, V, w->lm_head, D, 0.0f, a->dh, D);
    she_gemm(m->n_threads, 1, 0, V, D, (int)N, 1.0f, a->logits, V, a->hf, D, 1.0f, gw->lm_head, D);
    rmsnorm_backward(m, a->dres, 0, gw->lnf, a->dh, a->res + L * mND, a->rstdf, w->lnf, (int)N,
                     D);

    for (int l = L - 1; l >= 0; l--) {
        const float *res = a->res + l * mND, *h1 = a->h1 + l * mND, *qkv = a->qkv + l * mNQ;
        const float *att = a->att + l * mND, *mid = a->res_mid + l * mND;
        const float *h2 = a->h2 + l * mND, *gu = a->gu + l * 2 * mNF, *act = a->act + l * mNF;
        size_t lD = (size_t)l * D, lQ = (size_t)l * Q;

        /* MLP: next = mid + act @ wd^T, act = swiglu(h2 @ wgu^T) */
        she_gemm(m->n_threads, 0, 0, (int)N, F, D, 1.0f, a->dres, D, w->wd + lD * F, F, 0.0f, a->dact, F);
        she_gemm(m->n_threads, 1, 0, D, F, (int)N, 1.0f, a->dres, D, act, F, 1.0f, gw->wd + lD * F, F);
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
        for (size_t r = 0; r < N; r++)
            swiglu_backward(a->dgu + r * 2 * F, a->dact + r * F, gu + r * 2 * F, F);
        she_gemm(m->n_threads, 0, 0, (int)N, D, 2 * F, 1.0f, a->dgu, 2 * F, w->wgu + lD * 2 * F, D, 0.0f, a->dh,
             D);
        she_gemm(m->n_threads, 1, 0, 2 * F, D, (int)N, 1.0f, a->dgu, 2 * F, h2, D, 1.0f, gw->wgu + lD * 2 * F,
             D);
        rmsnorm_backward(m, a->dres, 1, gw->ln2 + lD, a->dh, mid, a->rstd2 + l * mN,
                         w->ln2 + lD, (int)N, D);

        /* attention: mid = res + att @ wo^T */
        she_gemm(m->n_threads, 0, 0, (int)N, D, D, 1.0f, a->dres, D, w->wo + lD * D, D, 0.0f, a->datt, D);
        she_gemm(m->n_threads, 1, 0, D, D, (int)N, 1.0f, a->dres, D, att, D, 1.0f, gw->wo + lD * D, D);
        attention_backward(m, a->dqkv, a->datt, qkv, a->lse + l * mN * H, B, T);
        if (gw->bqkv) {
            float *db = gw->bqkv + lQ;
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
            for (int c0 = 0; c0 < Q; c0 += COL_BLOCK) {
                int c1 = c0 + COL_BLOCK < Q ? c0 + COL_BLOCK : Q;
                float acc[COL_BLOCK] = {0};
                for (size_t r = 0; r < N; r++)
                    for (int j = c0; j < c1; j++)
                        acc[j - c0] += a->dqkv[r * Q + j];
                for (int j = c0; j < c1; j++)
                    db[j] += acc[j - c0];
            }
        }
        she_gemm(m->n_threads, 0, 0, (int)N, D, Q, 1.0f, a->dqkv, Q, w->wqkv + lQ * D, D, 0.0f, a->dh, D);
        she_gemm(m->n_threads, 1, 0, Q, D, (int)N, 1.0f, a->dqkv, Q, h1, D, 1.0f, gw->wqkv + lQ * D, D);
        rmsnorm_backward(m, a->dres, 1, gw->ln1 + lD, a->dh, res, a->rstd1 + l * mN,
                         w->ln1 + lD, (int)N, D);
    }
    openblas_set_num_threads(saved_blas_threads);

    /* embedding: column blocks again, rows in order */
#pragma omp parallel for schedule(static) num_threads(m->n_threads)
    for (int c0 = 0; c0 < D; c0 += COL_BLOCK) {
        int c1 = c0 + COL_BLOCK < D ? c0 + COL_BLOCK : D;
        for (size_t r = 0; r < N; r++) {
            float *dst = gw->embed + (size_t)a->tokens[r] * D;
            const float *src = a->dres + r * D;
            for (int j = c0; j < c1; j++)
                dst[j] += src[j];
        }
    }
}

void she_model_zero_grad(she_model_t *m) { memset(m->grads, 0, m->n_params * sizeof(float)); }

float she_model_adamw_step(she_model_t *m, she_adamw_t *opt, const she_adamw_config_t *hp,
                           float lr, float grad_scale, float max_grad_norm) {
    SHE_ASSERT(opt->n == m->n_params);
    double norm = she_grad_norm(m->grads, m->n_params) * fabsf(grad_scale);
    float scale = grad_scale * she_grad_clip_scale(norm, max_grad_norm);
    she_adamw_update(opt, m->params, m->grads, m->n_decay, hp, lr, scale);
    return (float)norm;
}

/* ------------------------------------------------------------------------------------------ */
/* checkpoints                                                                                */

/* Tensor refs for the model's table over `block` (params, or an optimizer moment), names
 * optionally prefixed.  names holds n_tensors * 128 chars.  */
static void tensor_refs(const she_model_t *m, float *block, const char *prefix,
                        she_tensor_ref_t *refs, char *names) {
    for (int i = 0; i < m->n_tensors; i++) {
        const she_model_tensor_t *t = &m->tensors[i];
        char *name = names + (size_t)i * 128;
        snprintf(name, 128, "%s%s", prefix, t->name);
        refs[i].name = name;
        refs[i].ndim = t->ndim;
        refs[i].shape[0] = t->shape[0];
        refs[i].shape[1] = t->shape[1];
        refs[i].shape[2] = refs[i].shape[3] = 0;
        refs[i].data = block + t->offset;
    }
}

static void path_join(char *out, size_t size, const char *dir, const char *file) {
    snprintf(out, size, "%s/%s", dir, file);
}

she_err_t she_model_write_files(const she_model_t *m, const she_adamw_t *opt, const char *dir,
                                char *errstr, size_t errstr_size) {
    char path[4096];
    path_join(path, sizeof(path), dir, "config.json");
    SHE_TRY(she_model_config_save(&m->cfg, path, errstr, errstr_size));

    int n = m->n_tensors, n_refs = opt ? 2 * n : n;
    she_tensor_ref_t *refs = calloc((size_t)n_refs, sizeof(*refs));
    char *names = calloc((size_t)n_refs, 128);
    SHE_CHECK_ALLOC(refs);
    SHE_CHECK_ALLOC(names);
    const char *fmt_keys[] = {"format"}, *fmt_vals[] = {"pt"};
    tensor_refs(m, m->params, "", refs, names);
    path_join(path, sizeof(path), dir, "model.safetensors");
    she_err_t err = she_safetensors_write(path, refs, n, fmt_keys, fmt_vals, 1, errstr,
                                          errstr_size);
    if (err == SHE_OK && opt) {
        SHE_ASSERT(opt->n == m->n_params);
        tensor_refs(m, opt->m, "exp_avg.", refs, names);
        tensor_refs(m, opt->v, "exp_avg_sq.", refs + n, names + (size_t)n * 128);
        char step[32], n_params[32];
        snprintf(step, sizeof(step), "%lld", (long long)opt->step);
        snprintf(n_params, sizeof(n_params), "%zu", m->n_params);
        const char *keys[] = {"format", "optimizer", "step", "n_params"};
        const char *vals[] = {"pt", "adamw", step, n_params};
        path_join(path, sizeof(path), dir, "optimizer.safetensors");
        err = she_safetensors_write(path, refs, n_refs, keys, vals, 4, errstr, errstr_size);
    }
    free(refs);
    free(names);
    return err;
}

she_err_t she_model_save(const she_model_t *m, const she_adamw_t *opt, const char *final_dir,
                         char *errstr, size_t errstr_size) {
    char tmp[4096];
    SHE_TRY(she_ckptdir_begin(final_dir, tmp, sizeof(tmp), errstr, errstr_size));
    she_err_t err = she_model_write_files(m, opt, tmp, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, final_dir, errstr, errstr_size);
    if (err != SHE_OK)
        she_ckptdir_abort(tmp);
    return err;
}

she_err_t she_model_load_weights(she_model_t *m, const char *path, char *errstr,
                                 size_t errstr_size) {
    she_tensor_ref_t *refs = calloc((size_t)m->n_tensors, sizeof(*refs));
    char *names = calloc((size_t)m->n_tensors, 128);
    SHE_CHECK_ALLOC(refs);
    SHE_CHECK_ALLOC(names);
    tensor_refs(m, m->params, "", refs, names);
    she_err_t err = she_safetensors_read(path, refs, m->n_tensors, 0, errstr, errstr_size);
    free(refs);
    free(names);
    return err;
}

/* The optimizer file's metadata: "step" and "n_params". */
static she_err_t read_opt_meta(const char *path, int64_t *step, size_t *n_params, char *errstr,
                               size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "%s: %s", path, strerror(errno));
    she_err_t err = SHE_OK;
    uint8_t *buf = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: cannot seek", path);
        goto done;
    }
    buf = malloc((size_t)len + 1);
    SHE_CHECK_ALLOC(buf);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: short read", path);
        goto done;
    }
    she_safetensors_t *st;
    char why[SHE_ERRSTR_SIZE];
    err = she_safetensors_parse(buf, (size_t)len, &st, why, sizeof(why));
    if (err != SHE_OK) {
        err = she_errf(err, errstr, errstr_size, "%s: %s", path, why);
        goto done;
    }
    const char *s = she_safetensors_meta(st, "step"), *n = she_safetensors_meta(st, "n_params");
    char *end1 = NULL, *end2 = NULL;
    long long sv = s ? strtoll(s, &end1, 10) : -1;
    unsigned long long nv = n ? strtoull(n, &end2, 10) : 0;
    if (!s || *end1 || sv < 0 || !n || *end2)
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                       "%s: metadata \"step\" and \"n_params\" must be non-negative integers",
                       path);
    *step = sv;
    *n_params = (size_t)nv;
    she_safetensors_free(st);
done:
    free(buf);
    fclose(f);
    return err;
}

she_err_t she_model_load(const char *dir, int max_batch, int max_seq, she_model_t **out,
                         she_adamw_t **opt_out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (opt_out)
        *opt_out = NULL;
    SHE_TRY(she_ckptdir_verify(dir, errstr, errstr_size));
    char path[4096];
    she_model_config_t cfg;
    path_join(path, sizeof(path), dir, "config.json");
    SHE_TRY(she_model_config_load(path, &cfg, errstr, errstr_size));
    she_model_t *m;
    SHE_TRY(she_model_new(&cfg, max_batch, max_seq, &m, errstr, errstr_size));
    path_join(path, sizeof(path), dir, "model.safetensors");
    she_err_t err = she_model_load_weights(m, path, errstr, errstr_size);
    she_adamw_t *opt = NULL;
    if (err == SHE_OK && opt_out) {
        int64_t step = 0;
        size_t n_params = 0;
        path_join(path, sizeof(path), dir, "optimizer.safetensors");
        err = read_opt_meta(path, &step, &n_params, errstr, errstr_size);
        if (err == SHE_OK && n_params != m->n_params)
            err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                           "%s: metadata n_params %zu differs from the model's %zu", path,
                           n_params, m->n_params);
        if (err == SHE_OK) {
            opt = she_adamw_new(m->n_params);
            opt->step = step;
            int n = m->n_tensors;
            she_tensor_ref_t *refs = calloc((size_t)2 * n, sizeof(*refs));
            char *names = calloc((size_t)2 * n, 128);
            SHE_CHECK_ALLOC(refs);
            SHE_CHECK_ALLOC(names);
            tensor_refs(m, opt->m, "exp_avg.", refs, names);
            tensor_refs(m, opt->v, "exp_avg_sq.", refs + n, names + (size_t)n * 128);
            err = she_safetensors_read(path, refs, 2 * n, 0, errstr, errstr_size);
            free(refs);
            free(names);
        }
    }
    if (err != SHE_OK) {
        she_adamw_free(opt);
        she_model_free(m);
        return err;
    }
    *out = m;
    if (opt_out)
        *opt_out = opt;
    return SHE_OK;
}
