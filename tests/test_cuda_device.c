/* test_cuda_device.c -- GPU parity for the device self-test kernel against its CPU twin.
 * Skips ("skipped: no CUDA device") where no device exists, e.g. CI. */
#include <stdint.h>

#include "cuda_device.h"
#include "test.h"

static void test_saxpy_matches_cpu_twin(void) {
    char errstr[512];
    enum { N = 100003 };
    static float x[N], y_cpu[N], y_gpu[N];
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        y_cpu[i] = y_gpu[i] = (float)i * 1e-3f;
    }
    she_saxpy_cpu(N, 1.5f, x, y_cpu);
    REQUIRE_OK(she_saxpy_cuda(0, N, 1.5f, x, y_gpu, errstr, sizeof(errstr)));
    for (int i = 0; i < N; i++)
        if (fabsf(y_gpu[i] - y_cpu[i]) > 1e-6f + 1e-6f * fabsf(y_cpu[i])) {
            CHECK_CLOSE(y_gpu[i], y_cpu[i], 1e-6, 1e-6);
            break;
        }
}

int main(void) {
    char errstr[512] = "";
    if (she_cuda_device_count(errstr, sizeof(errstr)) == 0)
        TEST_SKIP("no CUDA device (%s)", errstr);
    RUN(test_saxpy_matches_cpu_twin);
    TEST_DONE();
}
