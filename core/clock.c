/* clock.c -- monotonic time and directory existence (see clock.h). */
#include "clock.h"

#include <sys/stat.h>
#include <time.h>

double she_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int she_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
