/* fuzz_main.c -- replay main for libFuzzer targets built without libFuzzer (e.g. gcc):
 * runs LLVMFuzzerTestOneInput once over each file named on the command line, or over every
 * file in a named directory.  Exits non-zero if an argument cannot be read; a bug in the
 * target aborts (SHE_ASSERT, or a sanitizer when built with one). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the file into a buffer of exactly its size, so a sanitizer catches a read one
 * past the input, and runs the target on it. */
static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    long len = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    uint8_t *buf = len >= 0 ? malloc(len ? (size_t)len : 1) : NULL;
    int ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)len, f) == (size_t)len;
    if (f)
        fclose(f);
    if (!ok) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        return 1;
    }
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    printf("ok %s (%ld bytes)\n", path, len);
    return 0;
}

int main(int argc, char **argv) {
    int failed = 0, runs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            while (d && (e = readdir(d)) != NULL) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
                if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                    failed |= run_file(path);
                    runs++;
                }
            }
            if (d)
                closedir(d);
            else
                failed = 1;
        } else {
            failed |= run_file(argv[i]);
            runs++;
        }
    }
    printf("%d inputs replayed\n", runs);
    return failed || runs == 0;
}
