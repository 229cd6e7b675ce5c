/* fuzz_serve_request.c -- libFuzzer target for the `she serve` request parser (POST /v1/judge
 * bodies, consumers/serve.h).
 *
 * Parses arbitrary bytes under small limits and checks what a caller relies on: a request is
 * either accepted, with a non-blank query and title, every field valid UTF-8 and within its
 * limit, or refused with SHE_ERR_INVALID, a UTF-8 message and nothing left in the sample; an
 * accepted query routes the same way twice.  Built with clang -fsanitize=fuzzer,address when
 * SHE_FUZZ=ON, and with fuzz_main.c as a replay test over tests/fuzz/corpus/serve otherwise. */
#include <stdint.h>
#include <string.h>

#include "consumers/serve.h"
#include "reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t max, int required) {
    if (!s) {
        SHE_ASSERT(!required);
        return;
    }
    size_t n = strlen(s);
    SHE_ASSERT(n <= max && she_utf8_valid_prefix(s, n) == n);
    SHE_ASSERT(!required || strspn(s, " \t\r\n\f\v") < n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const she_serve_limits_t lim = {.max_field_bytes = 64, .max_desc_bytes = 256,
                                    .max_attributes = 4};
    she_sample_t s = {0};
    char errstr[SHE_ERRSTR_SIZE] = "";
    she_err_t err = she_serve_parse_request((const char *)data, size, &lim, &s, errstr,
                                            sizeof(errstr));
    if (err != SHE_OK) {
        SHE_ASSERT(err == SHE_ERR_INVALID && errstr[0] != '\0');
        SHE_ASSERT(she_utf8_valid_prefix(errstr, strlen(errstr)) == strlen(errstr));
        SHE_ASSERT(!s.query && !s.item_title && !s.item_desc && !s.item_attrs);
        return 0;
    }
    check_text(s.query, lim.max_field_bytes, 1);
    check_text(s.item_title, lim.max_field_bytes, 1);
    check_text(s.item_desc, lim.max_desc_bytes, 0);
    SHE_ASSERT(s.n_item_attrs <= lim.max_attributes);
    for (int i = 0; i < s.n_item_attrs; i++) {
        check_text(s.item_attrs[i].key, lim.max_field_bytes, 1);
        check_text(s.item_attrs[i].value, lim.max_field_bytes, 0);
    }
    uint64_t h = she_serve_query_hash(s.query);
    SHE_ASSERT(h == she_serve_query_hash(s.query));
    SHE_ASSERT(she_serve_route(h, 0.3, 0.5, NULL) == she_serve_route(h, 0.3, 0.5, NULL));
    she_sample_clear(&s);
    return 0;
}
