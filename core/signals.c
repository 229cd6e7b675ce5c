/* signals.c -- pending-flag signal handlers (see signals.h for why these are static). */
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t pending_hup, pending_usr1, pending_usr2;

static void on_signal(int signo) {
    switch (signo) {
    case SIGINT:
    case SIGTERM: stop_flag = 1; break;
    case SIGHUP: pending_hup = 1; break;
    case SIGUSR1: pending_usr1 = 1; break;
    case SIGUSR2: pending_usr2 = 1; break;
    default: break;
    }
}

void she_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    const int signos[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(signos) / sizeof(signos[0]); i++)
        sigaction(signos[i], &sa, NULL);
    /* A peer closing a socket must surface as EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

int she_signals_stop_requested(void) { return stop_flag != 0; }

int she_signals_take(int signo) {
    volatile sig_atomic_t *flag = signo == SIGHUP    ? &pending_hup
                                  : signo == SIGUSR1 ? &pending_usr1
                                  : signo == SIGUSR2 ? &pending_usr2
                                                     : NULL;
    if (!flag || !*flag)
        return 0;
    *flag = 0;
    return 1;
}

void she_signals_sleep_ms(int ms) {
    while (ms > 0 && !stop_flag) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}
