/* bench.h -- engine throughput measurements for `she bench` (a benchmark program, not a test).
 *
 * Every figure is measured in the same process as its reference: the sgemm GFLOP/s that
 * OpenBLAS (its own threads) reaches on the model's own matrix shapes -- or, on a CUDA device,
 * the cuBLAS GEMM GFLOP/s on the same shapes in the same math mode (FP32, TF32 or BF16) -- so ratios
 * are comparable across machines and runs.  Times are medians of repeated runs.  Training and
 * generation run through the engine façade (engine.h) on the device given. */
#ifndef SHE_BENCH_H
#define SHE_BENCH_H

#include "engine.h"
#include "error.h"
#include "model.h"

/* Model presets used across she: "c1", "c2", "small" (the default policy), "base".  Fills the
 * config and the benchmark batch/sequence; SHE_ERR_NOT_FOUND for another name. */
she_err_t she_model_preset(const char *name, she_model_config_t *cfg, int *batch, int *seq,
                           char *errstr, size_t errstr_size);

/* sgemm GFLOP/s on the projection shapes of a model with `rows` token rows: for each of
 * q|k|v, o, gate|up, down and the LM head, the forward (X W^T), input-gradient (dY W) and
 * weight-gradient (dY^T X) products; flops / sum of the per-shape median times. */
double she_bench_sgemm_gflops(const she_model_config_t *cfg, int rows, int reps);

typedef struct she_bench_train {
    double step_s_median, step_s_min, tokens_per_s, gflops;
    double forward_frac, backward_frac, adamw_frac;
} she_bench_train_t;

/* cuBLAS GEMM GFLOP/s (FP32 operands) on CUDA device `device` on the shapes
 * she_bench_sgemm_gflops times, in math mode `math` (model_cuda.h: the compute type the model's
 * own GEMMs use in that mode); per shape the median of reps runs timed
 * with CUDA events after a warm-up.  SHE_ERR_CUDA on a device failure, SHE_ERR_UNSUPPORTED in
 * a build without CUDA. */
she_err_t she_bench_cublas_gflops(const she_model_config_t *cfg, int device, int rows, int reps,
                                  she_math_t math, double *gflops, char *errstr,
                                  size_t errstr_size);

/* Times `steps` training steps (forward + backward + AdamW, after one warm-up) on B x T on dev
 * (in dev's math mode).  On a device each phase is waited for before its clock
 * is read, so the fractions are of device time. */
she_err_t she_bench_train(const she_model_config_t *cfg, const she_device_t *dev, int B, int T,
                          int steps, she_bench_train_t *out, char *errstr, size_t errstr_size);

typedef struct she_bench_gen {
    double s_median, tokens_per_s, gflops;
} she_bench_gen_t;

/* Times generation of n_new tokens after distinct prompt_len-token prompts for B rows with the
 * KV-cache sampler on dev (temperature 0.99, top-k 100, no early stop), `runs` runs after a
 * warm-up. */
she_err_t she_bench_generate(const she_model_config_t *cfg, const she_device_t *dev, int B,
                             int prompt_len, int n_new, int runs, she_bench_gen_t *out,
                             char *errstr, size_t errstr_size);

#endif
