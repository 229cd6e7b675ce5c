/* test_safetensors.c -- safetensors writer/reader: round trip, byte-for-byte and value
 * agreement with the reference Python library (fixtures from
 * scripts/make_safetensors_fixture.py), and refusal of every kind of malformed file with a
 * message naming the file and the culprit. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"

static char tmpdir[512];

static const char *tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
    return buf;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len + 1);
    if (fread(buf, 1, *len, f) != *len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* A file with header length hlen (the JSON's length when hlen is 0) and data_len zero bytes. */
static void write_raw(const char *path, const char *json, uint64_t hlen, size_t data_len) {
    FILE *f = fopen(path, "wb");
    SHE_ASSERT(f);
    if (!hlen)
        hlen = strlen(json);
    for (int i = 0; i < 8; i++)
        fputc((int)(hlen >> (8 * i)) & 0xff, f);
    fwrite(json, 1, strlen(json), f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    fclose(f);
}

/* read must fail with want_err and a message naming the file and containing want. */
static void check_refused(const char *path, const she_tensor_ref_t *expect, int n, int allow_extra,
                          int want_err, const char *want, int line) {
    char errstr[512] = "";
    int err = she_safetensors_read(path, expect, n, allow_extra, errstr, sizeof(errstr));
    CHECK_MSG(err == want_err, "line %d: error %d, want %d (%s)", line, err, want_err, errstr);
    CHECK_MSG(strstr(errstr, path) != NULL, "line %d: message does not name the file: %s", line,
              errstr);
    CHECK_MSG(strstr(errstr, want) != NULL, "line %d: message lacks \"%s\": %s", line, want,
              errstr);
}
#define REFUSED(path, expect, n, allow_extra, want) \
    check_refused(path, expect, n, allow_extra, SHE_ERR_FORMAT, want, __LINE__)

static void test_roundtrip(void) {
    char errstr[512], path[600], tmp[620];
    float emb[12], q[16], norm[5];
    for (int i = 0; i < 12; i++)
        emb[i] = (float)i * 0.5f - 3;
    for (int i = 0; i < 16; i++)
        q[i] = sinf((float)i);
    for (int i = 0; i < 5; i++)
        norm[i] = 1.0f + (float)i / 7;
    she_tensor_ref_t ts[] = {
        {"model.embed_tokens.weight", 2, {3, 4}, emb},
        {"model.layers.0.self_attn.q_proj.weight", 4, {2, 2, 2, 2}, q},
        {"model.norm.weight", 1, {5}, norm},
        {"empty", 2, {0, 4}, NULL},
    };
    const char *keys[] = {"format", "she.step"}, *values[] = {"pt", "42"};
    tmp_path(path, sizeof(path), "roundtrip.safetensors");
    /* Twice: the second write replaces the first file. */
    REQUIRE_OK(she_safetensors_write(path, ts, 4, keys, values, 2, errstr, sizeof(errstr)));
    REQUIRE_OK(she_safetensors_write(path, ts, 4, keys, values, 2, errstr, sizeof(errstr)));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);

    float emb2[12] = {0}, q2[16] = {0}, norm2[5] = {0};
    she_tensor_ref_t back[] = {
        {"model.norm.weight", 1, {5}, norm2},
        {"model.embed_tokens.weight", 2, {3, 4}, emb2},
        {"empty", 2, {0, 4}, NULL},
        {"model.layers.0.self_attn.q_proj.weight", 4, {2, 2, 2, 2}, q2},
    };
    CHECK_OK(she_safetensors_read(path, back, 4, 0, errstr, sizeof(errstr)));
    CHECK(memcmp(emb, emb2, sizeof(emb)) == 0);
    CHECK(memcmp(q, q2, sizeof(q)) == 0);
    CHECK(memcmp(norm, norm2, sizeof(norm)) == 0);

    size_t len;
    uint8_t *buf = slurp(path, &len);
    REQUIRE(buf != NULL);
    uint64_t hlen = 0;
    memcpy(&hlen, buf, 8);
    CHECK_EQ_INT(hlen % 8, 0);
    CHECK_EQ_INT(len, 8 + hlen + 4 * (12 + 16 + 5));
    CHECK(buf[8 + hlen - 1] == ' ' || buf[8 + hlen - 1] == '}');
    she_safetensors_t *st = NULL;
    REQUIRE_OK(she_safetensors_parse(buf, len, &st, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_safetensors_count(st), 4);
    CHECK_STR(she_safetensors_meta(st, "format"), "pt");
    CHECK_STR(she_safetensors_meta(st, "she.step"), "42");
    CHECK(she_safetensors_meta(st, "nope") == NULL);
    CHECK(she_safetensors_find(st, "nope") == -1);
    /* Written in the given order, so data-offset order is the same. */
    for (int i = 0; i < 4; i++) {
        CHECK_STR(she_safetensors_name(st, i), ts[i].name);
        CHECK_EQ_INT(she_safetensors_find(st, ts[i].name), i);
        CHECK_STR(she_safetensors_dtype(st, i), "F32");
        int64_t shape[SHE_SAFETENSORS_MAX_DIMS];
        CHECK_EQ_INT(she_safetensors_shape(st, i, shape), ts[i].ndim);
        CHECK(memcmp(shape, ts[i].shape, sizeof(int64_t) * (size_t)ts[i].ndim) == 0);
    }
    CHECK_EQ_INT(she_safetensors_numel(st, 1), 16);
    she_safetensors_free(st);
    free(buf);
}

/* she's writer must produce exactly the bytes the reference library writes. */
static void test_reference_bytes(void) {
    char errstr[512], path[600], ref[600];
    /* b[0] is -0: the script computes it as 0 * -1.5. */
    float a[6] = {0, 1, 2, 3, 4, 5}, b[4] = {-0.0f, -1.5f, -3, -4.5f};
    she_tensor_ref_t ts[] = {{"a", 2, {2, 3}, a}, {"b", 1, {4}, b}};
    const char *keys[] = {"format"}, *values[] = {"pt"};
    tmp_path(path, sizeof(path), "ref_bytes.safetensors");
    REQUIRE_OK(she_safetensors_write(path, ts, 2, keys, values, 1, errstr, sizeof(errstr)));
    snprintf(ref, sizeof(ref), "%s/tests/fixtures/safetensors_ref_f32.safetensors",
             getenv("SHE_SOURCE_DIR"));
    size_t len, ref_len;
    uint8_t *buf = slurp(path, &len), *want = slurp(ref, &ref_len);
    CHECK(buf && want && len == ref_len && memcmp(buf, want, len) == 0);
    free(buf);
    free(want);
}

/* Bitwise equality, so NaN payloads and -0 count too. */
static int same_bits(const float *a, const float *b, int n) {
    return memcmp(a, b, 4 * (size_t)n) == 0;
}

static void test_reference_fixture(void) {
    char errstr[512], path[600];
    snprintf(path, sizeof(path), "%s/tests/fixtures/safetensors_ref.safetensors",
             getenv("SHE_SOURCE_DIR"));
    enum { SWEEP = 1075 };
    static float sb[SWEEP], sb_want[SWEEP], sf[SWEEP], sf_want[SWEEP];
    float emb[12], emb_want[12], up[12], up_want[12], norm[5];
    she_tensor_ref_t ts[] = {
        {"sweep.bf16", 1, {SWEEP}, sb},
        {"expect.sweep.bf16", 1, {SWEEP}, sb_want},
        {"sweep.f16", 1, {SWEEP}, sf},
        {"expect.sweep.f16", 1, {SWEEP}, sf_want},
        {"model.embed_tokens.weight", 2, {4, 3}, emb},
        {"expect.model.embed_tokens.weight", 2, {4, 3}, emb_want},
        {"model.layers.0.mlp.up_proj.weight", 3, {2, 2, 3}, up},
        {"expect.model.layers.0.mlp.up_proj.weight", 3, {2, 2, 3}, up_want},
        {"model.norm.weight", 1, {5}, norm},
    };
    REQUIRE_OK(she_safetensors_read(path, ts, 9, 0, errstr, sizeof(errstr)));
    for (int i = 0; i < 5; i++)
        CHECK_CLOSE(norm[i], i * 0.25 - 1, 0, 0);
    CHECK(same_bits(sb, sb_want, SWEEP));
    CHECK(same_bits(sf, sf_want, SWEEP));
    CHECK(same_bits(emb, emb_want, 12));
    CHECK(same_bits(up, up_want, 12));
    CHECK(isinf(emb[0]) && emb[0] > 0 && isnan(emb[2]));
    CHECK_CLOSE(up[0], 65504, 0, 0);
    CHECK(up[1] == 0 && signbit(up[1]));

    /* A subset with allow_extra, and the metadata through the index. */
    float norm2[5];
    she_tensor_ref_t one[] = {{"model.norm.weight", 1, {5}, norm2}};
    CHECK_OK(she_safetensors_read(path, one, 1, 1, errstr, sizeof(errstr)));
    CHECK(same_bits(norm, norm2, 5));
    size_t len;
    uint8_t *buf = slurp(path, &len);
    REQUIRE(buf != NULL);
    she_safetensors_t *st = NULL;
    CHECK_OK(she_safetensors_parse(buf, len, &st, errstr, sizeof(errstr)));
    if (st) {
        CHECK_STR(she_safetensors_meta(st, "format"), "pt");
        int i = she_safetensors_find(st, "model.embed_tokens.weight");
        CHECK(i >= 0 && strcmp(she_safetensors_dtype(st, i), "BF16") == 0);
    }
    she_safetensors_free(st);
    free(buf);
}

static void write_good(const char *path) {
    char errstr[512];
    static float a[12], b[4];
    she_tensor_ref_t ts[] = {{"a", 2, {3, 4}, a}, {"b", 1, {4}, b}};
    CHECK_OK(she_safetensors_write(path, ts, 2, NULL, NULL, 0, errstr, sizeof(errstr)));
}

static void test_reject_truncated(void) {
    char path[600];
    float a[12], b[4];
    she_tensor_ref_t ts[] = {{"a", 2, {3, 4}, a}, {"b", 1, {4}, b}};
    tmp_path(path, sizeof(path), "truncated.safetensors");
    write_good(path);
    struct stat sb;
    REQUIRE(stat(path, &sb) == 0);
    REQUIRE(truncate(path, sb.st_size - 4) == 0); /* inside the data */
    REFUSED(path, ts, 2, 0, "tensor 'b': data_offsets [48, 64] out of range");
    REQUIRE(truncate(path, 40) == 0); /* inside the header */
    REFUSED(path, ts, 2, 0, "header length");
    REQUIRE(truncate(path, 3) == 0);
    REFUSED(path, ts, 2, 0, "too short");
    REQUIRE(truncate(path, 0) == 0);
    REFUSED(path, ts, 2, 0, "too short");
}

static void test_reject_shape(void) {
    char path[600];
    float a[15], b[4];
    tmp_path(path, sizeof(path), "shape.safetensors");
    write_good(path);
    she_tensor_ref_t wrong[] = {{"a", 2, {3, 5}, a}, {"b", 1, {4}, b}};
    REFUSED(path, wrong, 2, 0, "tensor 'a' has shape [3, 4], expected [3, 5]");
    she_tensor_ref_t rank[] = {{"a", 3, {3, 4, 1}, a}, {"b", 1, {4}, b}};
    REFUSED(path, rank, 2, 0, "tensor 'a' has shape [3, 4], expected [3, 4, 1]");
}

static void test_reject_header(void) {
    char path[600];
    float a[1];
    she_tensor_ref_t ts[] = {{"a", 1, {1}, a}};
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    tmp_path(path, sizeof(path), "header.safetensors");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],", 0, 4);
    REFUSED(path, ts, 1, 0, "header JSON");
    write_raw(path, "[1, 2]", 0, 4);
    REFUSED(path, ts, 1, 0, "does not start with '{'");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "duplicate");
    write_raw(path, "{\"__metadata__\":{\"step\":3},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "\"__metadata__\" value of 'step' is not a string");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "tensor 'a': field 'shape'");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "tensor 'a': field 'shape'");
    write_raw(path, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "tensor 'a': field 'dtype'");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 4);
    REFUSED(path, ts, 1, 0, "tensor 'a': field 'data_offsets'");
    /* Huge or lying header lengths. */
    write_raw(path, ok, 200000000, 4);
    REFUSED(path, ts, 1, 0, "exceeds the 100000000-byte limit");
    write_raw(path, ok, UINT64_C(1) << 63, 4);
    REFUSED(path, ts, 1, 0, "exceeds the 100000000-byte limit");
    write_raw(path, ok, strlen(ok) + 5, 4);
    REFUSED(path, ts, 1, 0, "bytes after the length field (truncated file?)");
}

static void test_reject_offsets(void) {
    char path[600];
    float a[2], b[2];
    she_tensor_ref_t ts[] = {{"a", 1, {2}, a}, {"b", 1, {2}, b}};
    tmp_path(path, sizeof(path), "offsets.safetensors");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 12);
    REFUSED(path, ts, 2, 0, "tensor 'b': data_offsets [8, 16] out of range");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12);
    REFUSED(path, ts, 2, 0, "tensor 'b': data_offsets [4, 12] overlap tensor 'a'");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,12]}}", 0, 12);
    REFUSED(path, ts, 2, 0, "tensor 'b': data_offsets [8, 12] hold 4 bytes, but dtype F32");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 16);
    REFUSED(path, ts, 2, 0, "tensor 'a': field 'data_offsets'");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 20);
    REFUSED(path, ts, 2, 0, "leave bytes [8, 12) of the buffer unused");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 20);
    REFUSED(path, ts, 2, 0, "data buffer holds 20 bytes but the tensors cover 16");
    /* A shape whose byte count overflows 64 bits. */
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                    "\"data_offsets\":[0,0]}}", 0, 0);
    REFUSED(path, ts, 1, 0, "needs more than 2^64 bytes");
}

static void test_reject_tensor_set(void) {
    char path[600];
    float a[12], b[4], c[1];
    tmp_path(path, sizeof(path), "set.safetensors");
    write_good(path);
    she_tensor_ref_t missing[] = {{"a", 2, {3, 4}, a}, {"b", 1, {4}, b}, {"c", 1, {1}, c}};
    REFUSED(path, missing, 3, 0, "missing tensor 'c'");
    she_tensor_ref_t only_a[] = {{"a", 2, {3, 4}, a}};
    REFUSED(path, only_a, 1, 0, "unexpected tensor 'b'");
    char errstr[512];
    CHECK_OK(she_safetensors_read(path, only_a, 1, 1, errstr, sizeof(errstr)));
    she_tensor_ref_t twice[] = {{"a", 2, {3, 4}, a}, {"a", 2, {3, 4}, a}};
    check_refused(path, twice, 2, 1, SHE_ERR_INVALID, "expected twice", __LINE__);
    tmp_path(path, sizeof(path), "absent.safetensors");
    check_refused(path, only_a, 1, 0, SHE_ERR_NOT_FOUND, "open", __LINE__);
}

static void test_reject_dtype(void) {
    char path[600];
    float a[2];
    she_tensor_ref_t ts[] = {{"a", 1, {2}, a}};
    tmp_path(path, sizeof(path), "dtype.safetensors");
    write_raw(path, "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 0, 16);
    REFUSED(path, ts, 1, 0, "tensor 'a' has dtype I64");
    write_raw(path, "{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 0, 1);
    REFUSED(path, ts, 1, 0, "tensor 'a': unsupported dtype 'F4'");
}

static void test_write_invalid(void) {
    char errstr[512], path[600];
    float a[2] = {0};
    tmp_path(path, sizeof(path), "invalid.safetensors");
    she_tensor_ref_t scalar[] = {{"a", 0, {0}, a}};
    CHECK_EQ_INT(she_safetensors_write(path, scalar, 1, NULL, NULL, 0, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    she_tensor_ref_t dup[] = {{"a", 1, {2}, a}, {"a", 1, {2}, a}};
    CHECK_EQ_INT(she_safetensors_write(path, dup, 2, NULL, NULL, 0, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(strstr(errstr, "'a'") != NULL);
    she_tensor_ref_t reserved[] = {{"__metadata__", 1, {2}, a}};
    CHECK_EQ_INT(she_safetensors_write(path, reserved, 1, NULL, NULL, 0, errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
    CHECK(access(path, F_OK) != 0);
}

int main(void) {
    const char *base = getenv("SHE_TEST_TMP");
    snprintf(tmpdir, sizeof(tmpdir), "%s/safetensors-%d", base ? base : "/tmp", (int)getpid());
    SHE_ASSERT(mkdir(tmpdir, 0755) == 0);
    if (!getenv("SHE_SOURCE_DIR"))
        TEST_SKIP("SHE_SOURCE_DIR is not set (run through ctest)");
    RUN(test_roundtrip);
    RUN(test_reference_bytes);
    RUN(test_reference_fixture);
    RUN(test_reject_truncated);
    RUN(test_reject_shape);
    RUN(test_reject_header);
    RUN(test_reject_offsets);
    RUN(test_reject_tensor_set);
    RUN(test_reject_dtype);
    RUN(test_write_invalid);
    TEST_DONE();
}
