/* cublas_api.c -- cuBLAS loaded on first use (see cublas_api.h). */
#ifdef SHE_HAVE_CUDA
#include "cublas_api.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

she_err_t she_cublas_api_open(she_cublas_api_t *api, char *errstr, size_t errstr_size) {
    memset(api, 0, sizeof(*api));
    /* the soname through the usual search (LD_LIBRARY_PATH, ld.so.cache); failing that, the
     * toolkit's own directory, for machines whose loader does not know it -- libcublasLt first,
     * by path, since libcublas carries no run path to find it (a loaded library satisfies a
     * later dependency on its soname) */
    char why[1024] = "";
    api->lib = dlopen(SHE_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) {
        snprintf(why, sizeof(why), "%s", dlerror());
        api->lt = dlopen(SHE_CUBLAS_DIR "/" SHE_CUBLASLT_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (api->lt)
            api->lib = dlopen(SHE_CUBLAS_DIR "/" SHE_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!api->lib) {
            size_t n = strlen(why);
            snprintf(why + n, sizeof(why) - n, "; then %s", dlerror());
            she_cublas_api_close(api);
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "cannot load cuBLAS: %s", why);
        }
    }
    struct {
        void **slot;
        const char *name;
    } calls[] = {
        {(void **)&api->create, "cublasCreate_v2"},
        {(void **)&api->destroy, "cublasDestroy_v2"},
        {(void **)&api->set_stream, "cublasSetStream_v2"},
        {(void **)&api->set_math_mode, "cublasSetMathMode"},
        {(void **)&api->set_workspace, "cublasSetWorkspace_v2"},
        {(void **)&api->gemm_ex, "cublasGemmEx"},
        {(void **)&api->gemm_strided_batched_ex, "cublasGemmStridedBatchedEx"},
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        *calls[i].slot = dlsym(api->lib, calls[i].name);
        if (!*calls[i].slot) {
            she_cublas_api_close(api);
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s has no %s", SHE_CUBLAS_SONAME,
                            calls[i].name);
        }
    }
    return SHE_OK;
}

void she_cublas_api_close(she_cublas_api_t *api) {
    if (api->lib)
        dlclose(api->lib);
    if (api->lt)
        dlclose(api->lt);
    memset(api, 0, sizeof(*api));
}

const char *she_cublas_status_name(cublasStatus_t st) {
    switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_(unknown)";
}
#endif
