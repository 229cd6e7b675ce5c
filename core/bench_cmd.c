/* bench_cmd.c -- `she bench`: engine throughput as name=value lines, each figure next to the
 * sgemm GFLOP/s the same run measures on the model's own shapes. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "dist.h"
#include "cmd.h"
#include "commands.h"

static const she_conf_def_t bench_defs[] = {
    {"bench.model", SHE_CONF_STR, "small",
     "preset (c1, c2, small, base) or a Hugging Face config.json", 0, 0, NULL, "model"},
    {"bench.batch", SHE_CONF_INT, "0", "training batch (0 = the preset's)", 0, 4096, NULL, "batch"},
    {"bench.seq", SHE_CONF_INT, "0", "training sequence length (0 = the preset's)", 0, 8192, NULL,
     "seq"},
    {"bench.steps", SHE_CONF_INT, "5", "timed training steps (median reported)", 1, 1000, NULL,
     "steps"},
    {"bench.gen.runs", SHE_CONF_INT, "3", "timed generation runs per batch size", 1, 100, NULL,
     "gen-runs"},
    {"bench.gen.batches", SHE_CONF_STR, "1,16,64", "generation batch sizes", 0, 0, NULL,
     "gen-batches"},
    {"bench.gen.prompt", SHE_CONF_INT, "64", "prompt tokens per row", 1, 4096, NULL, NULL},
    {"bench.gen.new", SHE_CONF_INT, "64", "new tokens per row", 1, 4096, NULL, NULL},
    {"bench.sgemm.reps", SHE_CONF_INT, "7", "repetitions per sgemm shape", 1, 100, NULL, NULL},
    {"bench.train", SHE_CONF_BOOL, "true", "run the training benchmark", 0, 0, NULL, NULL},
    {"bench.generate", SHE_CONF_BOOL, "true", "run the generation benchmark", 0, 0, NULL, NULL},
    {"bench.allreduce.mb", SHE_CONF_INT, "0",
     "all-reduce bandwidth over this many MiB across the ranks of the launch (mpirun or "
     "SHE_WORLD_SIZE/SHE_RANK/SHE_MASTER_ADDR); 0 = skip", 0, 4096, NULL, "allreduce-mb"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

int she_cmd_bench(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she bench [--model c1|c2|small|base|CONFIG.json]",
                          "Measures training and KV-cache generation throughput of the CPU engine\n"
                          "and prints name=value lines, with every GFLOP/s figure also as a ratio\n"
                          "to cblas_sgemm GFLOP/s measured in the same run on the model's shapes.",
                          bench_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *conf = env.conf;
    char errstr[SHE_ERRSTR_SIZE];
    she_model_config_t cfg;
    int B = 0, T = 0;
    const char *model = she_conf_get(conf, "bench.model");
    she_err_t err = strstr(model, ".json")
                        ? she_model_config_load(model, &cfg, errstr, sizeof(errstr))
                        : she_model_preset(model, &cfg, &B, &T, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        fprintf(stderr, "she bench: %s\n", errstr);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (she_conf_get_int(conf, "bench.batch") > 0)
        B = (int)she_conf_get_int(conf, "bench.batch");
    if (she_conf_get_int(conf, "bench.seq") > 0)
        T = (int)she_conf_get_int(conf, "bench.seq");
    if (B <= 0 || T <= 0) {
        fprintf(stderr, "she bench: a config.json needs --batch and --seq\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (T > cfg.max_position_embeddings)
        cfg.max_position_embeddings = T;
    int reps = (int)she_conf_get_int(conf, "bench.sgemm.reps");

    printf("model=%s\nhidden=%d\nlayers=%d\nheads=%d\nkv_heads=%d\nintermediate=%d\nvocab=%d\n",
           model, cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
           cfg.intermediate_size, cfg.vocab_size);
    printf("omp_threads=%d\nopenblas_threads=%d\nopenblas_core=%s\nopenblas_coretype_env=%s\n",
           omp_get_max_threads(), openblas_get_num_threads(), openblas_get_corename(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
    fflush(stdout);

    double sgemm = she_bench_sgemm_gflops(&cfg, B * T, reps);
    printf("train_batch=%d\ntrain_seq=%d\nsgemm_gflops=%.2f\n", B, T, sgemm);
    fflush(stdout);
    if (she_conf_get_bool(conf, "bench.train")) {
        she_bench_train_t tr;
        err = she_bench_train(&cfg, B, T, (int)she_conf_get_int(conf, "bench.steps"), &tr, errstr,
                              sizeof(errstr));
        if (err != SHE_OK)
            goto fail;
        printf("train_step_s=%.4f\ntrain_step_s_min=%.4f\ntrain_tokens_per_s=%.0f\n"
               "train_gflops=%.2f\ntrain_gflops_ratio=%.3f\n"
               "train_forward_frac=%.3f\ntrain_backward_frac=%.3f\ntrain_adamw_frac=%.3f\n",
               tr.step_s_median, tr.step_s_min, tr.tokens_per_s, tr.gflops, tr.gflops / sgemm,
               tr.forward_frac, tr.backward_frac, tr.adamw_frac);
        fflush(stdout);
    }
    if (she_conf_get_bool(conf, "bench.generate")) {
        int prompt = (int)she_conf_get_int(conf, "bench.gen.prompt");
        int n_new = (int)she_conf_get_int(conf, "bench.gen.new");
        if (prompt + n_new > cfg.max_position_embeddings)
            cfg.max_position_embeddings = prompt + n_new;
        char batches[256];
        snprintf(batches, sizeof(batches), "%s", she_conf_get(conf, "bench.gen.batches"));
        for (char *save = NULL, *tok = strtok_r(batches, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            int gb = atoi(tok);
            if (gb < 1) {
                fprintf(stderr, "she bench: bad generation batch '%s'\n", tok);
                she_cmd_fini(&env);
                return SHE_EXIT_USAGE;
            }
            /* the decode GEMMs have gb rows: their own sgemm reference, for context */
            double sg_rows = she_bench_sgemm_gflops(&cfg, gb, reps);
            she_bench_gen_t g;
            err = she_bench_generate(&cfg, gb, prompt, n_new,
                                     (int)she_conf_get_int(conf, "bench.gen.runs"), &g, errstr,
                                     sizeof(errstr));
            if (err != SHE_OK)
                goto fail;
            printf("gen_b%d_s=%.4f\ngen_b%d_tokens_per_s=%.1f\ngen_b%d_gflops=%.2f\n"
                   "gen_b%d_gflops_ratio=%.3f\ngen_b%d_sgemm_rows_gflops=%.2f\n",
                   gb, g.s_median, gb, g.tokens_per_s, gb, g.gflops, gb, g.gflops / sgemm, gb,
                   sg_rows);
            fflush(stdout);
        }
    }
    int mb = (int)she_conf_get_int(conf, "bench.allreduce.mb");
    if (mb > 0) {
        she_dist_config_t dc;
        she_dist_t *d = NULL;
        she_dist_bench_t db;
        err = she_dist_config_from_env(&dc, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = she_dist_init(&dc, &d, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = she_dist_bench_allreduce(d, (size_t)mb << 20, 5, &db, errstr, sizeof(errstr));
        if (err == SHE_OK && she_dist_rank(d) == 0)
            printf("allreduce_backend=%s\nallreduce_ranks=%d\nallreduce_mib=%d\n"
                   "allreduce_s=%.4f\nallreduce_algbw_gbs=%.3f\nallreduce_busbw_gbs=%.3f\n",
                   she_dist_backend_name(she_dist_backend(d)), she_dist_world(d), mb, db.seconds,
                   db.algbw_gbs, db.busbw_gbs);
        she_dist_free(d);
        if (err != SHE_OK)
            goto fail;
    }
    she_cmd_fini(&env);
    return SHE_EXIT_OK;
fail:
    fprintf(stderr, "she bench: %s\n", errstr);
    she_cmd_fini(&env);
    return SHE_EXIT_FAILURE;
}
