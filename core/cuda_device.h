/* cuda_device.h -- CUDA device discovery and the device self-test.
 *
 * Built from cuda_device.cu when CUDA is enabled (SHE_HAVE_CUDA), from cuda_device_none.c otherwise,
 * so callers never need #ifdefs: without CUDA there are simply zero devices.  The engine's
 * CUDA backend builds on this module; every kernel here has a CPU twin for parity tests. */
#ifndef SHE_CUDA_DEVICE_H
#define SHE_CUDA_DEVICE_H

#include <stddef.h>

#include "error.h"

/* Number of usable CUDA devices (0 when built without CUDA or no driver/device is present;
 * the reason goes to errstr in that case). */
int she_cuda_device_count(char *errstr, size_t errstr_size);
/* One line: "built with CUDA 13.0, 1 device(s): NVIDIA H100 (sm_90, 80 GiB)" or why not. */
void she_cuda_describe(char *out, size_t out_size);

/* y[i] = a * x[i] + y[i]: the CPU twin of the device self-test kernel. */
void she_saxpy_cpu(int n, float a, const float *x, float *y);
/* Runs the same on device `device`, copying x and y there and y back. */
she_err_t she_saxpy_cuda(int device, int n, float a, const float *x, float *y, char *errstr,
                         size_t errstr_size);

#endif
