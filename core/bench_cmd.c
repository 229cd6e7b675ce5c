/* bench_cmd.c -- `she bench`: engine throughput as name=value lines, each figure next to the
 * reference the same run measures on the model's own shapes: cblas_sgemm for the CPU section,
 * cuBLAS SGEMM (FP32, and TF32 when asked) for the GPU section.
 *
 * The GPU section runs when a CUDA device is present (bench.device auto) or is named
 * (--device cuda[:N]); otherwise one line says why it was skipped.  Its all-reduce figure is
 * NCCL on one GPU in this process and, when more GPUs are visible, NCCL across all of them:
 * one `she bench` process per GPU (core/dist.c's NCCL backend, rendezvous over the TCP star
 * on 127.0.0.1), rank 0's figures read back through a pipe. */
#include <arpa/inet.h>
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cmd.h"
#include "commands.h"
#include "cuda_device.h"
#include "dist.h"
#include "engine.h"

#define MAX_GEN_BATCHES 16

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
    {"bench.cpu", SHE_CONF_BOOL, "true", "run the CPU section", 0, 0, NULL, NULL},
    {"bench.device", SHE_CONF_STR, "auto",
     "device of the GPU section: auto (cuda:0 when a CUDA device exists), cpu (no GPU section), "
     "cuda or cuda:N", 0, 0, NULL, "device"},
    {"bench.math", SHE_CONF_STR, "fp32,tf32,bf16",
     "GPU section: the math modes of the GEMMs measured, each against cuBLAS in the same mode "
     "(comma-separated: fp32, tf32, bf16)", 0, 0, NULL, "math"},
    {"bench.gpu.allreduce.mb", SHE_CONF_INT, "64",
     "GPU section: NCCL all-reduce of this many MiB on one GPU and on all visible GPUs "
     "(0 = skip)", 0, 4096, NULL, NULL},
    {"bench.allreduce.mb", SHE_CONF_INT, "0",
     "all-reduce bandwidth over this many MiB across the ranks of the launch (mpirun or "
     "SHE_WORLD_SIZE/SHE_RANK/SHE_MASTER_ADDR); 0 = skip", 0, 4096, NULL, "allreduce-mb"},
    {"bench.allreduce.backend", SHE_CONF_ENUM, "auto",
     "backend of --allreduce-mb: auto (MPI under mpirun, else TCP; host memory) or nccl (device "
     "memory, one GPU per rank: the local rank's)", 0, 0, "auto|nccl", NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct bench {
    she_conf_t *conf;
    she_model_config_t cfg;
    int B, T, reps, steps, gen_runs, prompt, n_new;
    int gen_batch[MAX_GEN_BATCHES], n_gen_batches;
    she_math_t math[3]; /* bench.math, in its order */
    int n_math;
} bench_t;

/* "1,16,64" -> sizes; SHE_ERR_CONFIG naming the bad entry. */
static she_err_t parse_batches(bench_t *b, const char *text, char *errstr, size_t errstr_size) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", text);
    b->n_gen_batches = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (end == tok || *end || v < 1 || v > 4096 || b->n_gen_batches == MAX_GEN_BATCHES)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "bench.gen.batches: bad generation batch '%s' (1..4096, at most %d "
                            "sizes)", tok, MAX_GEN_BATCHES);
        b->gen_batch[b->n_gen_batches++] = (int)v;
    }
    return SHE_OK;
}

/* "fp32,tf32" -> modes; SHE_ERR_CONFIG naming the bad or repeated entry. */
static she_err_t parse_math(bench_t *b, const char *text, char *errstr, size_t errstr_size) {
    char buf[256], why[SHE_ERRSTR_SIZE];
    snprintf(buf, sizeof(buf), "%s", text);
    b->n_math = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        she_math_t m;
        if (she_math_parse(tok, &m, why, sizeof(why)) != SHE_OK)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "bench.math: %s", why);
        for (int i = 0; i < b->n_math; i++)
            if (b->math[i] == m)
                return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                                "bench.math: '%s' is listed twice", tok);
        b->math[b->n_math++] = m;
    }
    if (b->n_math == 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "bench.math: no math mode (fp32, tf32, bf16)");
    return SHE_OK;
}

/* ---- the CPU section ---- */

static she_err_t cpu_section(const bench_t *b, char *errstr, size_t errstr_size) {
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    printf("omp_threads=%d\nopenblas_threads=%d\nopenblas_core=%s\nopenblas_coretype_env=%s\n",
           omp_get_max_threads(), openblas_get_num_threads(), openblas_get_corename(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
    fflush(stdout);
    double sgemm = she_bench_sgemm_gflops(&b->cfg, b->B * b->T, b->reps);
    printf("train_batch=%d\ntrain_seq=%d\nsgemm_gflops=%.2f\n", b->B, b->T, sgemm);
    fflush(stdout);
    if (she_conf_get_bool(b->conf, "bench.train")) {
        she_bench_train_t tr;
        SHE_TRY(she_bench_train(&b->cfg, &cpu, b->B, b->T, b->steps, &tr, errstr,
                                errstr_size));
        printf("train_step_s=%.4f\ntrain_step_s_min=%.4f\ntrain_tokens_per_s=%.0f\n"
               "train_gflops=%.2f\ntrain_gflops_ratio=%.3f\n"
               "train_forward_frac=%.3f\ntrain_backward_frac=%.3f\ntrain_adamw_frac=%.3f\n",
               tr.step_s_median, tr.step_s_min, tr.tokens_per_s, tr.gflops, tr.gflops / sgemm,
               tr.forward_frac, tr.backward_frac, tr.adamw_frac);
        fflush(stdout);
    }
    if (she_conf_get_bool(b->conf, "bench.generate")) {
        for (int i = 0; i < b->n_gen_batches; i++) {
            int gb = b->gen_batch[i];
            /* the decode GEMMs have gb rows: their own sgemm reference, for context */
            double sg_rows = she_bench_sgemm_gflops(&b->cfg, gb, b->reps);
            she_bench_gen_t g;
            SHE_TRY(she_bench_generate(&b->cfg, &cpu, gb, b->prompt, b->n_new, b->gen_runs,
                                       &g, errstr, errstr_size));
            printf("gen_b%d_s=%.4f\ngen_b%d_tokens_per_s=%.1f\ngen_b%d_gflops=%.2f\n"
                   "gen_b%d_gflops_ratio=%.3f\ngen_b%d_sgemm_rows_gflops=%.2f\n",
                   gb, g.s_median, gb, g.tokens_per_s, gb, g.gflops, gb, g.gflops / sgemm, gb,
                   sg_rows);
            fflush(stdout);
        }
    }
    return SHE_OK;
}

/* ---- the GPU section ---- */

static void print_allreduce(const char *prefix, const she_dist_bench_t *db, const char *backend,
                            int ranks, int mb) {
    printf("%sbackend=%s\n%sranks=%d\n%smib=%d\n%ss=%.4f\n%salgbw_gbs=%.3f\n%sbusbw_gbs=%.3f\n",
           prefix, backend, prefix, ranks, prefix, mb, prefix, db->seconds, prefix,
           db->algbw_gbs, prefix, db->busbw_gbs);
    fflush(stdout);
}

/* NCCL all-reduce on device `device` alone (a communicator of one rank). */
static she_err_t allreduce_one_gpu(int device, int mb, char *errstr, size_t errstr_size) {
    she_dist_config_t dc = {.backend = SHE_DIST_NCCL, .world_size = 1, .cuda_device = device};
    she_dist_t *d = NULL;
    she_dist_bench_t db;
    SHE_TRY(she_dist_init(&dc, &d, errstr, errstr_size));
    she_err_t err = she_dist_bench_allreduce(d, (size_t)mb << 20, 5, &db, errstr, errstr_size);
    if (err == SHE_OK)
        print_allreduce("gpu_allreduce_1gpu_", &db, "nccl", 1, mb);
    she_dist_free(d);
    return err;
}

/* A TCP port free on 127.0.0.1 just now, for the ranks' rendezvous. */
static she_err_t free_port(int *port, char *errstr, size_t errstr_size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "a free port on 127.0.0.1: %s",
                        strerror(errno));
    }
    *port = ntohs(a.sin_port);
    close(fd);
    return SHE_OK;
}

/* NCCL all-reduce across all n visible GPUs: n `she bench` processes (rank r on GPU r; CUDA
 * cannot be used across fork, hence exec), rank 0's allreduce_* lines printed with the
 * gpu_allreduce_<n>gpu_ prefix. */
static she_err_t allreduce_all_gpus(int n, int mb, char *errstr, size_t errstr_size) {
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int port = 0, fds[2];
    if (sl <= 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "readlink /proc/self/exe: %s",
                        strerror(errno));
    self[sl] = '\0';
    SHE_TRY(free_port(&port, errstr, errstr_size));
    if (pipe(fds) != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pids[64];
    int started = 0;
    char mbs[16], ns[16], ps[16];
    snprintf(mbs, sizeof(mbs), "%d", mb);
    snprintf(ns, sizeof(ns), "%d", n);
    snprintf(ps, sizeof(ps), "%d", port);
    for (int r = 0; r < n && r < 64; r++, started++) {
        pids[r] = fork();
        if (pids[r] < 0)
            break;
        if (pids[r] == 0) {
            char rs[16];
            snprintf(rs, sizeof(rs), "%d", r);
            setenv("SHE_WORLD_SIZE", ns, 1);
            setenv("SHE_RANK", rs, 1);
            setenv("SHE_LOCAL_RANK", rs, 1);
            setenv("SHE_MASTER_ADDR", "127.0.0.1", 1);
            setenv("SHE_MASTER_PORT", ps, 1);
            /* rank 0 reports through the pipe; the others' lines would only repeat it */
            dup2(r == 0 ? fds[1] : open("/dev/null", O_WRONLY), STDOUT_FILENO);
            close(fds[0]);
            close(fds[1]);
            execl(self, self, "bench", "--device", "cpu", "--set", "bench.cpu=false", "--set",
                  "bench.allreduce.backend=nccl", "--allreduce-mb", mbs, (char *)NULL);
            fprintf(stderr, "exec %s: %s\n", self, strerror(errno));
            _exit(127);
        }
    }
    close(fds[1]);
    char out[8192];
    size_t got = 0;
    ssize_t k;
    while ((k = read(fds[0], out + got, sizeof(out) - 1 - got)) > 0)
        got += (size_t)k;
    out[got] = '\0';
    close(fds[0]);
    int failed = started < n;
    for (int r = 0; r < started; r++) {
        int st = 0;
        failed |= waitpid(pids[r], &st, 0) != pids[r] || !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    if (failed)
        return she_errf(SHE_ERR_IO, errstr, errstr_size,
                        "NCCL all-reduce across %d GPUs: a rank failed (its error is above)", n);
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "gpu_allreduce_%dgpu_", n);
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        if (strncmp(line, "allreduce_", 10) == 0)
            printf("%s%s\n", prefix, line + 10);
    fflush(stdout);
    return SHE_OK;
}

/* Training and generation on dev in every math mode of bench.math, each against cuBLAS in the
 * same mode, then the NCCL all-reduce figures. */
static she_err_t gpu_section(const bench_t *b, const she_device_t *dev, char *errstr,
                             size_t errstr_size) {
    char info[1024], name[SHE_DEVICE_NAME_MAX];
    she_cuda_describe(info, sizeof(info));
    she_device_name(dev, name, sizeof(name));
    printf("gpu_device=%s\ngpu_info=%s\n", name, info);
    fflush(stdout);
    for (int i = 0; i < b->n_math; i++) {
        she_device_t one = *dev;
        one.math = b->math[i];
        const char *m = she_math_name(one.math);
        double ref = 0;
        SHE_TRY(she_bench_cublas_gflops(&b->cfg, one.index, b->B * b->T, b->reps, one.math,
                                        &ref, errstr, errstr_size));
        printf("gpu_%s_cublas_tflops=%.3f\n", m, ref / 1e3);
        fflush(stdout);
        if (she_conf_get_bool(b->conf, "bench.train")) {
            she_bench_train_t tr;
            SHE_TRY(she_bench_train(&b->cfg, &one, b->B, b->T, b->steps, &tr, errstr,
                                    errstr_size));
            printf("gpu_%s_train_step_s=%.5f\ngpu_%s_train_tokens_per_s=%.0f\n"
                   "gpu_%s_train_tflops=%.3f\ngpu_%s_train_tflops_ratio=%.3f\n"
                   "gpu_%s_train_forward_frac=%.3f\ngpu_%s_train_backward_frac=%.3f\n"
                   "gpu_%s_train_adamw_frac=%.3f\n",
                   m, tr.step_s_median, m, tr.tokens_per_s, m, tr.gflops / 1e3, m,
                   tr.gflops / ref, m, tr.forward_frac, m, tr.backward_frac, m, tr.adamw_frac);
            fflush(stdout);
        }
        if (!she_conf_get_bool(b->conf, "bench.generate"))
            continue;
        for (int k = 0; k < b->n_gen_batches; k++) {
            int gb = b->gen_batch[k];
            double rows_ref = 0;
            she_bench_gen_t g;
            SHE_TRY(she_bench_cublas_gflops(&b->cfg, one.index, gb, b->reps, one.math, &rows_ref,
                                            errstr, errstr_size));
            SHE_TRY(she_bench_generate(&b->cfg, &one, gb, b->prompt, b->n_new, b->gen_runs, &g,
                                       errstr, errstr_size));
            printf("gpu_%s_gen_b%d_s=%.4f\ngpu_%s_gen_b%d_tokens_per_s=%.1f\n"
                   "gpu_%s_gen_b%d_tflops=%.4f\ngpu_%s_gen_b%d_tflops_ratio=%.4f\n"
                   "gpu_%s_gen_b%d_cublas_rows_tflops=%.3f\n",
                   m, gb, g.s_median, m, gb, g.tokens_per_s, m, gb, g.gflops / 1e3, m, gb,
                   g.gflops / ref, m, gb, rows_ref / 1e3);
            fflush(stdout);
        }
    }
    int mb = (int)she_conf_get_int(b->conf, "bench.gpu.allreduce.mb");
    if (mb > 0) {
        char why[SHE_ERRSTR_SIZE];
        int n = she_cuda_device_count(why, sizeof(why));
        SHE_TRY(allreduce_one_gpu(dev->index, mb, errstr, errstr_size));
        if (n > 1)
            SHE_TRY(allreduce_all_gpus(n, mb, errstr, errstr_size));
    }
    return SHE_OK;
}

/* ---- --allreduce-mb: across the ranks of the launch ---- */

static she_err_t launch_allreduce(const she_conf_t *conf, int mb, char *errstr,
                                  size_t errstr_size) {
    she_dist_config_t dc;
    she_dist_t *d = NULL;
    she_dist_bench_t db;
    SHE_TRY(she_dist_config_from_env(&dc, errstr, errstr_size));
    if (strcmp(she_conf_get(conf, "bench.allreduce.backend"), "nccl") == 0)
        dc.backend = SHE_DIST_NCCL;
    SHE_TRY(she_dist_init(&dc, &d, errstr, errstr_size));
    she_err_t err = she_dist_bench_allreduce(d, (size_t)mb << 20, 5, &db, errstr, errstr_size);
    if (err == SHE_OK && she_dist_rank(d) == 0)
        print_allreduce("allreduce_", &db, she_dist_backend_name(she_dist_backend(d)),
                        she_dist_world(d), mb);
    she_dist_free(d);
    return err;
}

int she_cmd_bench(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp,
                          "she bench [--model c1|c2|small|base|CONFIG.json] [--device cuda[:N]]",
                          "Measures training and KV-cache generation throughput of the engine and\n"
                          "prints name=value lines: the CPU section with every GFLOP/s figure as a\n"
                          "ratio to cblas_sgemm measured in the same run on the model's shapes;\n"
                          "the GPU section (when a CUDA device exists, or --device cuda[:N]) with\n"
                          "TFLOP/s as a ratio to cuBLAS GEMM (FP32, TF32, BF16 math) on the same shapes\n"
                          "and NCCL all-reduce bandwidth on one and on all visible GPUs.",
                          bench_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *conf = env.conf;
    char errstr[SHE_ERRSTR_SIZE];
    bench_t b = {.conf = conf};
    const char *model = she_conf_get(conf, "bench.model");
    she_err_t err = strstr(model, ".json")
                        ? she_model_config_load(model, &b.cfg, errstr, sizeof(errstr))
                        : she_model_preset(model, &b.cfg, &b.B, &b.T, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = parse_batches(&b, she_conf_get(conf, "bench.gen.batches"), errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = parse_math(&b, she_conf_get(conf, "bench.math"), errstr, sizeof(errstr));
    /* the GPU section's device: a named one must exist (exit 2), auto takes cuda:0 if any */
    const char *spec = she_conf_get(conf, "bench.device");
    she_device_t dev = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    char skipped[SHE_ERRSTR_SIZE + 64] = "";
    if (err == SHE_OK && strcmp(spec, "auto") == 0) {
        char why[SHE_ERRSTR_SIZE] = "";
        if (she_cuda_device_count(why, sizeof(why)) > 0)
            dev.kind = SHE_DEVICE_CUDA;
        else
            snprintf(skipped, sizeof(skipped), "no CUDA device (%s)", why);
    } else if (err == SHE_OK && strchr(spec, '/')) {
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr),
                       "device \"%s\": the math modes measured are --math's (bench.math)", spec);
    } else if (err == SHE_OK) {
        err = she_device_select(spec, &dev, errstr, sizeof(errstr));
        if (err == SHE_OK && dev.kind == SHE_DEVICE_CPU)
            snprintf(skipped, sizeof(skipped), "--device cpu");
    }
    if (err != SHE_OK) {
        fprintf(stderr, "she bench: %s\n", errstr);
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    if (she_conf_get_int(conf, "bench.batch") > 0)
        b.B = (int)she_conf_get_int(conf, "bench.batch");
    if (she_conf_get_int(conf, "bench.seq") > 0)
        b.T = (int)she_conf_get_int(conf, "bench.seq");
    if (b.B <= 0 || b.T <= 0) {
        fprintf(stderr, "she bench: a config.json needs --batch and --seq\n");
        she_cmd_fini(&env);
        return SHE_EXIT_USAGE;
    }
    b.reps = (int)she_conf_get_int(conf, "bench.sgemm.reps");
    b.steps = (int)she_conf_get_int(conf, "bench.steps");
    b.gen_runs = (int)she_conf_get_int(conf, "bench.gen.runs");
    b.prompt = (int)she_conf_get_int(conf, "bench.gen.prompt");
    b.n_new = (int)she_conf_get_int(conf, "bench.gen.new");
    if (b.T > b.cfg.max_position_embeddings)
        b.cfg.max_position_embeddings = b.T;
    if (b.prompt + b.n_new > b.cfg.max_position_embeddings)
        b.cfg.max_position_embeddings = b.prompt + b.n_new;

    printf("model=%s\nhidden=%d\nlayers=%d\nheads=%d\nkv_heads=%d\nintermediate=%d\nvocab=%d\n",
           model, b.cfg.hidden_size, b.cfg.n_layers, b.cfg.n_heads, b.cfg.n_kv_heads,
           b.cfg.intermediate_size, b.cfg.vocab_size);
    fflush(stdout);
    if (she_conf_get_bool(conf, "bench.cpu"))
        err = cpu_section(&b, errstr, sizeof(errstr));
    if (err == SHE_OK && dev.kind == SHE_DEVICE_CUDA) {
        err = gpu_section(&b, &dev, errstr, sizeof(errstr));
    } else if (err == SHE_OK) {
        printf("gpu=skipped: %s\n", skipped);
        fflush(stdout);
    }
    int mb = (int)she_conf_get_int(conf, "bench.allreduce.mb");
    if (err == SHE_OK && mb > 0)
        err = launch_allreduce(conf, mb, errstr, sizeof(errstr));
    if (err != SHE_OK)
        fprintf(stderr, "she bench: %s\n", errstr);
    she_cmd_fini(&env);
    return err == SHE_OK ? SHE_EXIT_OK : SHE_EXIT_FAILURE;
}
