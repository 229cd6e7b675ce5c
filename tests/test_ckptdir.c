/* test_ckptdir.c -- SHA-256 against the FIPS 180-2 vectors, and atomic checkpoint
 * directories: commit produces a verified directory, corruption of any kind is named by
 * verify, commit replaces an existing checkpoint, and a failed write leaves the old one. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptdir.h"
#include "sha256.h"
#include "test.h"

static char tmpdir[512];

static void digest_hex(const void *data, size_t len, size_t split, char hex[65]) {
    she_sha256_t s;
    uint8_t d[32];
    she_sha256_init(&s);
    she_sha256_update(&s, data, split);
    she_sha256_update(&s, (const char *)data + split, len - split);
    she_sha256_final(&s, d);
    she_sha256_hex(d, hex);
}

static void test_sha256_vectors(void) {
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t len = strlen(v[i].msg);
        /* Every split point, so partial-block buffering is exercised. */
        for (size_t split = 0; split <= len; split++) {
            digest_hex(v[i].msg, len, split, hex);
            CHECK_STR(hex, v[i].hex);
        }
    }
    /* One million 'a', fed in uneven pieces. */
    static char a[1000000];
    memset(a, 'a', sizeof(a));
    she_sha256_t s;
    uint8_t d[32];
    she_sha256_init(&s);
    for (size_t done = 0, step = 1; done < sizeof(a); done += step, step = step * 3 % 1000 + 1)
        she_sha256_update(&s, a + done, done + step > sizeof(a) ? sizeof(a) - done : step);
    she_sha256_final(&s, d);
    she_sha256_hex(d, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    char errstr[512], path[600];
    snprintf(path, sizeof(path), "%s/abc.txt", tmpdir);
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    fputs("abc", f);
    fclose(f);
    CHECK_OK(she_sha256_file(path, hex, errstr, sizeof(errstr)));
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    snprintf(path, sizeof(path), "%s/absent.txt", tmpdir);
    CHECK_EQ_INT(she_sha256_file(path, hex, errstr, sizeof(errstr)), SHE_ERR_NOT_FOUND);
}

static void put(const char *dir, const char *name, const char *text) {
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    SHE_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

static int has(const char *dir, const char *name, const char *text) {
    char path[1100], buf[256] = "";
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t got = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[got] = '\0';
    return strcmp(buf, text) == 0;
}

/* Entries of the parent directory whose name starts with prefix and is longer than it:
 * leftover ".tmp-" or ".old-" directories. */
static int leftovers(const char *prefix) {
    DIR *d = opendir(tmpdir);
    SHE_ASSERT(d);
    int n = 0;
    struct dirent *e;
    size_t plen = strlen(prefix);
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, plen) == 0 && e->d_name[plen] == '.';
    closedir(d);
    return n;
}

/* Commits a checkpoint holding the given files (name, text, name, text, ..., NULL). */
static she_err_t save(const char *final, char *errstr, size_t errstr_size, ...) {
    char tmp[1024];
    SHE_TRY(she_ckptdir_begin(final, tmp, sizeof(tmp), errstr, errstr_size));
    va_list ap;
    va_start(ap, errstr_size);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL)
        put(tmp, name, va_arg(ap, const char *));
    va_end(ap);
    she_err_t err = she_ckptdir_commit(tmp, final, errstr, errstr_size);
    if (err != SHE_OK)
        she_ckptdir_abort(tmp);
    return err;
}

static void test_commit_verify(void) {
    char errstr[512], final[600];
    snprintf(final, sizeof(final), "%s/ckpt", tmpdir);
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "model.safetensors", "weights",
                    "config.json", "{}", NULL));
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    CHECK(has(final, "model.safetensors", "weights"));
    CHECK(leftovers("ckpt") == 0);

    char manifest[700];
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", final);
    FILE *f = fopen(manifest, "rb");
    REQUIRE(f != NULL);
    char text[2048];
    size_t got = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[got] = '\0';
    CHECK(strstr(text, "\"format\": \"she-checkpoint\"") != NULL);
    CHECK(strstr(text, "\"version\": 1") != NULL);
    /* sha256("weights") and its size. */
    const char *hash = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c";
    CHECK(strstr(text, hash) != NULL);
    CHECK(strstr(text, "\"bytes\": 7") != NULL);
    /* Trailing slash on the final directory is the same directory. */
    char slashed[700];
    snprintf(slashed, sizeof(slashed), "%s/", final);
    CHECK_OK(she_ckptdir_verify(slashed, errstr, sizeof(errstr)));
}

static void check_verify_fails(const char *dir, const char *want, int line) {
    char errstr[512] = "";
    int err = she_ckptdir_verify(dir, errstr, sizeof(errstr));
    CHECK_MSG(err == SHE_ERR_FORMAT, "line %d: verify returned %d: %s", line, err, errstr);
    CHECK_MSG(strstr(errstr, want) != NULL, "line %d: message lacks \"%s\": %s", line, want,
              errstr);
}

static void test_verify_detects(void) {
    char errstr[512], final[600], path[700];
    snprintf(final, sizeof(final), "%s/corrupt", tmpdir);
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "a.bin", "aaaa", "b.bin", "bbbb", NULL));
    REQUIRE_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));

    /* A flipped byte, same size. */
    put(final, "a.bin", "aaab");
    check_verify_fails(final, "a.bin: sha256", __LINE__);
    put(final, "a.bin", "aaaa");
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    /* A changed size. */
    put(final, "b.bin", "bbbbb");
    check_verify_fails(final, "b.bin: 5 bytes, the manifest says 4", __LINE__);
    put(final, "b.bin", "bbbb");
    /* An extra file. */
    put(final, "stray.txt", "x");
    check_verify_fails(final, "stray.txt: not listed in the manifest", __LINE__);
    snprintf(path, sizeof(path), "%s/stray.txt", final);
    unlink(path);
    /* An extra subdirectory. */
    snprintf(path, sizeof(path), "%s/sub", final);
    REQUIRE(mkdir(path, 0755) == 0);
    check_verify_fails(final, "sub: not a regular file", __LINE__);
    rmdir(path);
    /* A missing file. */
    snprintf(path, sizeof(path), "%s/b.bin", final);
    unlink(path);
    check_verify_fails(final, "b.bin: listed in the manifest but missing", __LINE__);
    put(final, "b.bin", "bbbb");
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    /* A missing or broken manifest. */
    put(final, "manifest.json", "{\"format\": \"she-checkpoint\", ");
    check_verify_fails(final, "manifest.json", __LINE__);
    snprintf(path, sizeof(path), "%s/manifest.json", final);
    unlink(path);
    check_verify_fails(final, "manifest.json: missing", __LINE__);
    /* No directory at all. */
    snprintf(path, sizeof(path), "%s/nonexistent", tmpdir);
    CHECK_EQ_INT(she_ckptdir_verify(path, errstr, sizeof(errstr)), SHE_ERR_NOT_FOUND);
}

static void test_commit_replaces(void) {
    char errstr[512], final[600];
    snprintf(final, sizeof(final), "%s/replace", tmpdir);
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "model.safetensors", "old", "old-only.txt",
                    "x", NULL));
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "model.safetensors", "new", NULL));
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    CHECK(has(final, "model.safetensors", "new"));
    CHECK(!has(final, "old-only.txt", "x"));
    CHECK(leftovers("replace") == 0);
    /* A stale manifest.json the caller left in the temporary directory is rewritten. */
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "model.safetensors", "newer",
                    "manifest.json", "garbage", NULL));
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
}

static void test_failed_write_keeps_old(void) {
    char errstr[512], final[600], tmp[1024], sub[1100];
    snprintf(final, sizeof(final), "%s/keep", tmpdir);
    REQUIRE_OK(save(final, errstr, sizeof(errstr), "model.safetensors", "good", NULL));

    /* The writer fails half-way and aborts. */
    REQUIRE_OK(she_ckptdir_begin(final, tmp, sizeof(tmp), errstr, sizeof(errstr)));
    CHECK(strstr(tmp, "keep.tmp-") != NULL);
    put(tmp, "model.safetensors", "half");
    she_ckptdir_abort(tmp);
    CHECK(access(tmp, F_OK) != 0);
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    CHECK(has(final, "model.safetensors", "good"));

    /* Commit itself fails (a subdirectory is refused): the old checkpoint stays. */
    REQUIRE_OK(she_ckptdir_begin(final, tmp, sizeof(tmp), errstr, sizeof(errstr)));
    put(tmp, "model.safetensors", "bad");
    snprintf(sub, sizeof(sub), "%s/nested", tmp);
    REQUIRE(mkdir(sub, 0755) == 0);
    CHECK_EQ_INT(she_ckptdir_commit(tmp, final, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(strstr(errstr, "nested") != NULL);
    she_ckptdir_abort(tmp);
    CHECK_OK(she_ckptdir_verify(final, errstr, sizeof(errstr)));
    CHECK(has(final, "model.safetensors", "good"));
    CHECK(leftovers("keep") == 0);

    /* Two begins for one final directory get distinct temporary directories. */
    char tmp2[1024];
    REQUIRE_OK(she_ckptdir_begin(final, tmp, sizeof(tmp), errstr, sizeof(errstr)));
    REQUIRE_OK(she_ckptdir_begin(final, tmp2, sizeof(tmp2), errstr, sizeof(errstr)));
    CHECK(strcmp(tmp, tmp2) != 0);
    she_ckptdir_abort(tmp);
    she_ckptdir_abort(tmp2);
    CHECK(leftovers("keep") == 0);
    /* A too-small buffer is refused, not overrun. */
    char tiny[8];
    CHECK_EQ_INT(she_ckptdir_begin(final, tiny, sizeof(tiny), errstr, sizeof(errstr)),
                 SHE_ERR_INVALID);
}

int main(void) {
    const char *base = getenv("SHE_TEST_TMP");
    snprintf(tmpdir, sizeof(tmpdir), "%s/ckptdir-%d", base ? base : "/tmp", (int)getpid());
    if (mkdir(tmpdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s failed\n", tmpdir);
        return 1;
    }
    RUN(test_sha256_vectors);
    RUN(test_commit_verify);
    RUN(test_verify_detects);
    RUN(test_commit_replaces);
    RUN(test_failed_write_keeps_old);
    TEST_DONE();
}
