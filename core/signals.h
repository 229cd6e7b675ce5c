/* signals.h -- clean shutdown and operator signals for long-running commands.
 *
 * she_signals_install() routes SIGINT/SIGTERM (stop), SIGHUP, SIGUSR1 and SIGUSR2 (operator
 * actions, e.g. the broker's fault control) into pending flags that the main loop polls in
 * short intervals; nothing else happens inside the handler.  The flags are the one piece of
 * process-wide mutable state in she: a signal handler can reach nothing else. */
#ifndef SHE_SIGNALS_H
#define SHE_SIGNALS_H

void she_signals_install(void);
/* True once SIGINT or SIGTERM has arrived (stays true). */
int she_signals_stop_requested(void);
/* Returns 1 and clears the flag if `signo` (SIGHUP, SIGUSR1, SIGUSR2) arrived since the last call. */
int she_signals_take(int signo);
/* Sleeps up to ms milliseconds, returning early when a stop is requested. */
void she_signals_sleep_ms(int ms);

#endif
