/* test_cublas_api.c -- cuBLAS is loaded only when asked for (core/cublas_api.h): a process that
 * has not opened the table has no libcublas mapped; opening it resolves every call the CUDA
 * backend makes (no device needed: only the library); a second holder shares the mapping;
 * status names need no library.  Skipped in builds without CUDA. */
#include <stdio.h>
#include <string.h>

#include "test.h"

#ifdef SHE_HAVE_CUDA
#include "cublas_api.h"

/* Whether a mapping of libcublas.so is in this process's address space. */
static int cublas_mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "/libcublas.so") != NULL;
    fclose(f);
    return found;
}

static void test_loaded_on_first_use(void) {
    char errstr[512];
    CHECK_MSG(cublas_mapped() == 0, "libcublas is mapped before anything asked for it");
    she_cublas_api_t a, b;
    REQUIRE_OK(she_cublas_api_open(&a, errstr, sizeof(errstr)));
    CHECK(cublas_mapped() == 1);
    void *const calls[] = {(void *)a.create,        (void *)a.destroy,
                           (void *)a.set_stream,    (void *)a.set_math_mode,
                           (void *)a.set_workspace, (void *)a.gemm_ex,
                           (void *)a.gemm_strided_batched_ex};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
        CHECK_MSG(calls[i] != NULL, "call %zu not resolved", i);
    REQUIRE_OK(she_cublas_api_open(&b, errstr, sizeof(errstr)));
    CHECK(b.lib == a.lib && b.gemm_ex == a.gemm_ex);
    she_cublas_api_close(&b);
    CHECK(b.lib == NULL && b.gemm_ex == NULL);
    CHECK(cublas_mapped() == 1); /* a's reference holds it */
    she_cublas_api_close(&a);
    she_cublas_api_close(&a); /* closing twice is harmless */
    CHECK_STR(she_cublas_status_name(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
    CHECK_STR(she_cublas_status_name((cublasStatus_t)999), "CUBLAS_STATUS_(unknown)");
}
#endif

int main(void) {
#ifdef SHE_HAVE_CUDA
    RUN(test_loaded_on_first_use);
    TEST_DONE();
#else
    TEST_SKIP("built without CUDA");
#endif
}
