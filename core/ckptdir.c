/* ckptdir.c -- atomic checkpoint directories (see ckptdir.h for the protocol). */
#include "ckptdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"

#define MANIFEST "manifest.json"

/* Copies dir without trailing slashes into out[PATH_MAX]; 0 if it does not fit or is empty. */
static int strip_slashes(const char *dir, char out[PATH_MAX]) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len == 0 || len >= PATH_MAX)
        return 0;
    memcpy(out, dir, len);
    out[len] = '\0';
    return 1;
}

/* "dir/name" into out; 0 if it does not fit. */
static int join(char out[PATH_MAX], const char *dir, const char *name) {
    size_t dlen = strlen(dir), nlen = strlen(name);
    if (dlen + 1 + nlen >= PATH_MAX)
        return 0;
    memcpy(out, dir, dlen);
    out[dlen] = '/';
    memcpy(out + dlen + 1, name, nlen + 1);
    return 1;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* The directory holding path ("." for a bare name), for fsyncing a rename into it. */
static void parent_of(const char *path, char out[PATH_MAX]) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, PATH_MAX, ".");
    else if (slash == path)
        snprintf(out, PATH_MAX, "/");
    else
        snprintf(out, PATH_MAX, "%.*s", (int)(slash - path), path);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int remove_tree(const char *dir) {
    return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

she_err_t she_ckptdir_begin(const char *final_dir, char *tmp_dir, size_t tmp_dir_size,
                            char *errstr, size_t errstr_size) {
    char base[PATH_MAX];
    if (!strip_slashes(final_dir, base))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "bad checkpoint directory '%s'",
                        final_dir);
    for (int n = 0; n < 1000; n++) {
        if ((size_t)snprintf(tmp_dir, tmp_dir_size, "%s.tmp-%d-%d", base, (int)getpid(), n) >=
            tmp_dir_size)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: temporary directory name does not fit in %zu bytes", base,
                            tmp_dir_size);
        if (mkdir(tmp_dir, 0755) == 0)
            return SHE_OK;
        if (errno != EEXIST)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: mkdir: %s", tmp_dir,
                            strerror(errno));
    }
    return she_errf(SHE_ERR_IO, errstr, errstr_size,
                    "%s: 1000 stale temporary directories from this pid", base);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the entries of dir other than ".", ".." and the manifest, sorted; every one must
 * be a regular file.  *names is NULL-terminated; free with free_names. */
static she_err_t list_files(const char *dir, char ***names, char *errstr, size_t errstr_size) {
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return she_errf(errno == ENOENT ? SHE_ERR_NOT_FOUND : SHE_ERR_IO, errstr, errstr_size,
                        "%s: opendir: %s", dir, strerror(errno));
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(*v));
    SHE_CHECK_ALLOC(v);
    she_err_t err = SHE_OK;
    struct dirent *e;
    while (err == SHE_OK && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, MANIFEST))
            continue;
        char path[PATH_MAX];
        struct stat sb;
        if (!join(path, dir, e->d_name))
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s/%s: path too long", dir,
                           e->d_name);
        else if (lstat(path, &sb) < 0)
            err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: lstat: %s", path,
                           strerror(errno));
        else if (!S_ISREG(sb.st_mode))
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "%s: not a regular file (checkpoints are flat directories of files)",
                           path);
        if (err != SHE_OK)
            break;
        if (n + 1 == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(*v));
            SHE_CHECK_ALLOC(v);
        }
        v[n] = strdup(e->d_name);
        SHE_CHECK_ALLOC(v[n]);
        n++;
    }
    closedir(d);
    v[n] = NULL;
    qsort(v, n, sizeof(*v), cmp_str);
    *names = v;
    return err;
}

static void free_names(char **names) {
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

/* Hashes path, reports its size and fsyncs it (fsync unless sync is 0). */
static she_err_t hash_file(const char *path, int sync, char hex[65], uint64_t *bytes,
                           char *errstr, size_t errstr_size) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: open: %s", path, strerror(errno));
    char msg[SHE_ERRSTR_SIZE];
    she_err_t err = she_sha256_fd(fd, hex, bytes, msg, sizeof(msg));
    if (err == SHE_OK && sync && fsync(fd) < 0)
        err = she_errf(SHE_ERR_IO, msg, sizeof(msg), "fsync: %s", strerror(errno));
    close(fd);
    if (err != SHE_OK)
        return she_errf(err, errstr, errstr_size, "%s: %s", path, msg);
    return SHE_OK;
}

static she_err_t write_manifest(const char *dir, char **names, char *errstr, size_t errstr_size) {
    json_t *files = json_object();
    SHE_CHECK_ALLOC(files);
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", "she-checkpoint", "version", 1, "files",
                             files);
    SHE_CHECK_ALLOC(root);
    she_err_t err = SHE_OK;
    for (size_t i = 0; names[i] && err == SHE_OK; i++) {
        char path[PATH_MAX], hex[65];
        uint64_t bytes;
        join(path, dir, names[i]); /* fits: list_files checked */
        err = hash_file(path, 1, hex, &bytes, errstr, errstr_size);
        if (err == SHE_OK &&
            json_object_set_new(files, names[i],
                                json_pack("{s:s, s:I}", "sha256", hex, "bytes",
                                          (json_int_t)bytes)) < 0)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "%s: file name is not valid UTF-8", path);
    }
    char *text = err == SHE_OK ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (err != SHE_OK)
        return err;
    SHE_CHECK_ALLOC(text);
    char path[PATH_MAX];
    if (!join(path, dir, MANIFEST)) {
        free(text);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: path too long", dir);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text), done = 0;
    while (fd >= 0 && done < len) {
        ssize_t put = write(fd, text + done, len - done);
        if (put < 0 && errno != EINTR)
            break;
        done += put > 0 ? (size_t)put : 0;
    }
    free(text);
    int ok = fd >= 0 && done == len && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (!ok)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: write: %s", path, strerror(saved));
    return SHE_OK;
}

/* Puts tmp in final's place, final (a directory) existing.  On failure final is unchanged. */
static she_err_t replace_dir(const char *tmp, const char *final, char *errstr,
                             size_t errstr_size) {
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        remove_tree(tmp); /* now the old checkpoint; a leftover costs disk, not correctness */
        return SHE_OK;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: exchange with %s: %s", tmp, final,
                        strerror(errno));
    /* No atomic exchange here (NFS, older kernels): rename the old one aside first. */
    char aside[PATH_MAX];
    struct stat sb;
    int n = 0;
    do {
        if ((size_t)snprintf(aside, sizeof(aside), "%s.old-%d-%d", final, (int)getpid(), n++) >=
            sizeof(aside))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: path too long", final);
    } while (lstat(aside, &sb) == 0);
    if (rename(final, aside) < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: rename to %s: %s", final, aside,
                        strerror(errno));
    if (rename(tmp, final) < 0) {
        she_err_t err = she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: rename to %s: %s", tmp,
                                 final, strerror(errno));
        rename(aside, final);
        return err;
    }
    remove_tree(aside);
    return SHE_OK;
}

she_err_t she_ckptdir_commit(const char *tmp_dir, const char *final_dir, char *errstr,
                             size_t errstr_size) {
    char tmp[PATH_MAX], final[PATH_MAX], parent[PATH_MAX];
    if (!strip_slashes(tmp_dir, tmp) || !strip_slashes(final_dir, final))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "bad directory '%s' or '%s'",
                        tmp_dir, final_dir);
    char **names;
    she_err_t err = list_files(tmp, &names, errstr, errstr_size);
    if (err == SHE_OK)
        err = write_manifest(tmp, names, errstr, errstr_size);
    free_names(names);
    SHE_TRY(err);
    if (fsync_dir(tmp) < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: fsync: %s", tmp, strerror(errno));

    struct stat sb;
    if (lstat(final, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "%s: exists and is not a directory; not replacing it", final);
        SHE_TRY(replace_dir(tmp, final, errstr, errstr_size));
    } else if (errno != ENOENT)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: lstat: %s", final, strerror(errno));
    else if (rename(tmp, final) < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: rename to %s: %s", tmp, final,
                        strerror(errno));
    parent_of(final, parent);
    if (fsync_dir(parent) < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s: fsync: %s", parent,
                        strerror(errno));
    return SHE_OK;
}

void she_ckptdir_abort(const char *tmp_dir) {
    if (!tmp_dir || !tmp_dir[0])
        return;
    SHE_ASSERT(strstr(tmp_dir, ".tmp-") != NULL);
    remove_tree(tmp_dir);
}

static int is_hex64(const char *s) {
    if (!s || strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

/* Size and hash of every file the manifest lists. */
static she_err_t check_entries(const char *dir, const json_t *files, char *errstr,
                               size_t errstr_size) {
    const char *name;
    json_t *entry;
    json_object_foreach((json_t *)files, name, entry) {
        const char *want = json_string_value(json_object_get(entry, "sha256"));
        const json_t *jbytes = json_object_get(entry, "bytes");
        char path[PATH_MAX], hex[65];
        uint64_t bytes;
        struct stat sb;
        if (!join(path, dir, name) || strchr(name, '/') || !strcmp(name, ".") ||
            !strcmp(name, "..") || !strcmp(name, MANIFEST) || !is_hex64(want) ||
            !json_is_integer(jbytes) || json_integer_value(jbytes) < 0)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "%s/%s: bad manifest entry (name, sha256 or bytes)", dir, name);
        if (lstat(path, &sb) < 0)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "%s: listed in the manifest but missing", path);
        if ((uint64_t)sb.st_size != (uint64_t)json_integer_value(jbytes))
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "%s: %lld bytes, the manifest says %lld", path, (long long)sb.st_size,
                            (long long)json_integer_value(jbytes));
        SHE_TRY(hash_file(path, 0, hex, &bytes, errstr, errstr_size));
        if (strcmp(hex, want) != 0)
            return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                            "%s: sha256 %s, the manifest says %s", path, hex, want);
    }
    return SHE_OK;
}

she_err_t she_ckptdir_verify(const char *dir, char *errstr, size_t errstr_size) {
    char **names;
    she_err_t err = list_files(dir, &names, errstr, errstr_size);
    if (err == SHE_ERR_INVALID)
        err = SHE_ERR_FORMAT; /* a subdirectory in a checkpoint is a malformed checkpoint */
    if (err != SHE_OK) {
        free_names(names);
        return err;
    }
    char path[PATH_MAX];
    json_error_t jerr;
    json_t *root = NULL;
    const json_t *files = NULL;
    if (!join(path, dir, MANIFEST))
        err = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%s: path too long", dir);
    else if (access(path, F_OK) < 0)
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: missing", path);
    else if (!(root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)))
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "%s: line %d: %s", path, jerr.line,
                       jerr.text);
    else if (!json_is_string(json_object_get(root, "format")) ||
             strcmp(json_string_value(json_object_get(root, "format")), "she-checkpoint") != 0 ||
             !json_is_object(files = json_object_get(root, "files")))
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                       "%s: not a she-checkpoint manifest (format, files)", path);
    else if (!json_is_integer(json_object_get(root, "version")) ||
             json_integer_value(json_object_get(root, "version")) != 1)
        err = she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                       "%s: manifest version is not 1", path);
    /* Unlisted files first: cheap, and they mean someone wrote into a committed checkpoint. */
    for (size_t i = 0; err == SHE_OK && names[i]; i++)
        if (!json_object_get(files, names[i]))
            err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                           "%s/%s: not listed in the manifest", dir, names[i]);
    free_names(names);
    if (err == SHE_OK)
        err = check_entries(dir, files, errstr, errstr_size);
    json_decref(root);
    return err;
}
