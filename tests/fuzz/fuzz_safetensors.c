/* fuzz_safetensors.c -- libFuzzer target for the safetensors parser.
 *
 * Feeds arbitrary bytes to she_safetensors_parse and, when they parse, walks every
 * accessor and converts every convertible tensor, so ASan sees any read outside the input.
 * Built with clang -fsanitize=fuzzer,address when SHE_FUZZ=ON, and with fuzz_main.c as a
 * plain replay test over tests/fuzz/corpus/safetensors otherwise. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char errstr[SHE_ERRSTR_SIZE];
    she_safetensors_t *st = NULL;
    if (she_safetensors_parse(data, size, &st, errstr, sizeof(errstr)) != SHE_OK) {
        SHE_ASSERT(st == NULL && errstr[0] != '\0');
        return 0;
    }
    she_safetensors_meta(st, "format");
    for (int i = 0; i < she_safetensors_count(st); i++) {
        int64_t shape[SHE_SAFETENSORS_MAX_DIMS];
        int ndim = she_safetensors_shape(st, i, shape);
        SHE_ASSERT(ndim >= 0 && ndim <= SHE_SAFETENSORS_MAX_DIMS);
        SHE_ASSERT(she_safetensors_find(st, she_safetensors_name(st, i)) == i);
        SHE_ASSERT(strlen(she_safetensors_dtype(st, i)) > 0);
        /* Validation bounds numel by the input size (at least one byte per element), so
         * this allocation is at most 4 bytes per input byte. */
        uint64_t numel = she_safetensors_numel(st, i);
        SHE_ASSERT(numel <= size);
        float *dst = malloc(numel * sizeof(float) + 1);
        SHE_ASSERT(dst);
        she_safetensors_to_f32(st, i, dst, numel, errstr, sizeof(errstr));
        free(dst);
    }
    she_safetensors_free(st);
    return 0;
}
