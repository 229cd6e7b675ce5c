/* fuzz_avro.c -- libFuzzer target for the Avro single-object decoder and the message
 * conversions on top of it.
 *
 * Feeds arbitrary bytes to the generic decoder and to every message decoder.  A decoder must
 * either fail with a reason and a cleared struct, or succeed with a message that encodes
 * again and whose encoding is a fixed point (decode, encode: the same bytes), so a decoder
 * that accepts what the encoder would never write, or loses data, shows up as an abort.
 * Built with clang -fsanitize=fuzzer,address when SHE_FUZZ=ON, and with fuzz_main.c as a plain
 * replay test over tests/fuzz/corpus/avro otherwise.  SHE_SCHEMA_DIR is set by the build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One codec for the whole run: loading the schemas per input would dominate the time.  This
 * static is the harness's, not the library's; it is freed at exit so that LeakSanitizer
 * reports only what a decode loses. */
static she_avro_codec_t *fuzz_codec;

static void free_codec(void) { she_avro_codec_free(fuzz_codec); }

static she_avro_codec_t *codec(void) {
    if (!fuzz_codec) {
        char errstr[SHE_ERRSTR_SIZE];
        if (she_msg_codec_open(SHE_SCHEMA_DIR, &fuzz_codec, errstr, sizeof(errstr)) != SHE_OK) {
            fprintf(stderr, "fuzz_avro: %s\n", errstr);
            abort();
        }
        atexit(free_codec);
    }
    return fuzz_codec;
}

/* Decode; on success encode, decode that and encode again: both encodings must agree. */
#define ROUND_TRIP(type, decode, encode, clear)                                            \
    do {                                                                                   \
        type m, m2;                                                                        \
        memset(&m, 0, sizeof(m));                                                          \
        memset(&m2, 0, sizeof(m2));                                                        \
        errstr[0] = '\0';                                                                  \
        if (decode(ac, data, size, &m, errstr, sizeof(errstr)) != SHE_OK) {                \
            SHE_ASSERT(errstr[0] != '\0' && memcmp(&m, &m2, sizeof(m)) == 0);              \
            break;                                                                         \
        }                                                                                  \
        const uint8_t *buf;                                                                \
        size_t len;                                                                        \
        SHE_ASSERT(encode(ac, &m, &buf, &len, errstr, sizeof(errstr)) == SHE_OK);          \
        uint8_t *first = malloc(len);                                                      \
        SHE_ASSERT(first);                                                                 \
        memcpy(first, buf, len);                                                           \
        SHE_ASSERT(decode(ac, first, len, &m2, errstr, sizeof(errstr)) == SHE_OK);         \
        size_t first_len = len;                                                            \
        SHE_ASSERT(encode(ac, &m2, &buf, &len, errstr, sizeof(errstr)) == SHE_OK);         \
        SHE_ASSERT(len == first_len && memcmp(buf, first, len) == 0);                      \
        free(first);                                                                       \
        clear(&m);                                                                         \
        clear(&m2);                                                                        \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    she_avro_codec_t *ac = codec();
    char errstr[SHE_ERRSTR_SIZE] = "";
    avro_value_t *v = NULL;
    if (she_avro_codec_decode(ac, NULL, data, size, &v, NULL, errstr, sizeof(errstr)) != SHE_OK)
        SHE_ASSERT(v == NULL && errstr[0] != '\0');
    ROUND_TRIP(she_sample_t, she_msg_decode_sample, she_msg_encode_sample, she_sample_clear);
    ROUND_TRIP(she_rollout_group_t, she_msg_decode_rollout_group, she_msg_encode_rollout_group,
               she_msg_clear_rollout_group);
    ROUND_TRIP(she_rewarded_group_t, she_msg_decode_rewarded_group,
               she_msg_encode_rewarded_group, she_msg_clear_rewarded_group);
    ROUND_TRIP(she_checkpoint_announcement_t, she_msg_decode_checkpoint, she_msg_encode_checkpoint,
               she_msg_clear_checkpoint);
    ROUND_TRIP(she_control_state_t, she_msg_decode_control_state, she_msg_encode_control_state,
               she_msg_clear_control_state);
    ROUND_TRIP(she_pass_rate_t, she_msg_decode_pass_rate, she_msg_encode_pass_rate,
               she_msg_clear_pass_rate);
    ROUND_TRIP(she_dead_letter_t, she_msg_decode_dead_letter, she_msg_encode_dead_letter,
               she_msg_clear_dead_letter);
    ROUND_TRIP(she_deployment_event_t, she_msg_decode_deployment_event,
               she_msg_encode_deployment_event, she_msg_clear_deployment_event);
    ROUND_TRIP(she_evaluation_record_t, she_msg_decode_evaluation, she_msg_encode_evaluation,
               she_msg_clear_evaluation);
    return 0;
}
