/* proc.h -- `she` child processes for the end-to-end tests (header-only, like test.h): start a
 * command with its output in a log file, wait for or stop it, start an embedded broker, read
 * the logs.  Every child dies with the test (PR_SET_PDEATHSIG), so a test killed by its ctest
 * timeout leaves no broker or component behind.  OMP_NUM_THREADS=1 in the children: several
 * components share the test machine's cores. */
#ifndef SHE_TESTS_PROC_H
#define SHE_TESTS_PROC_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"

/* Starts `bin ARGS...` (NULL-terminated) with stdout and stderr appended to dir/<log>.log. */
static pid_t tp_spawn(const char *bin, const char *dir, const char *log,
                      const char *const *args) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s.log", dir, log);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = fopen(path, "a");
        if (f) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        setenv("OMP_NUM_THREADS", "1", 1);
        const char *argv[96];
        int n = 0;
        argv[n++] = bin;
        for (int i = 0; args[i] && n < 95; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* The child's exit status (128 + signal when killed); after timeout_s it is SIGKILLed and the
 * answer is -1. */
static int tp_wait_exit(pid_t pid, double timeout_s) {
    int status = -1;
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s; usleep(20000))
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* SIGTERM, then its exit status within 30 s (-1 for pid <= 0 or a child that would not stop). */
static int tp_stop(pid_t pid) {
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    return tp_wait_exit(pid, 30);
}

/* The first line of file (newline dropped) into out once the file has one, up to timeout_s;
 * 0, or -1 when it never came. */
static int tp_read_first_line(const char *file, char *out, size_t size, double timeout_s) {
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s; usleep(50000)) {
        FILE *f = fopen(file, "r");
        if (f && fgets(out, (int)size, f)) {
            fclose(f);
            out[strcspn(out, "\n")] = '\0';
            return 0;
        }
        if (f)
            fclose(f);
    }
    return -1;
}

/* `bin broker` on a free port (log dir/broker.log); its bootstrap address into bootstrap.
 * The broker's pid, or -1 when it did not come up within 20 s. */
static pid_t tp_start_broker(const char *bin, const char *dir, char *bootstrap, size_t size) {
    char file[1200];
    snprintf(file, sizeof(file), "%s/bootstrap", dir);
    const char *args[] = {"broker", "--port", "0", "--bootstrap-file", file, NULL};
    pid_t pid = tp_spawn(bin, dir, "broker", args);
    if (tp_read_first_line(file, bootstrap, size, 20) != 0) {
        tp_stop(pid);
        return -1;
    }
    return pid;
}

/* Lines of file path containing needle (0 when there is no such file). */
static int tp_count_lines(const char *path, const char *needle) {
    char line[16384];
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

#endif
