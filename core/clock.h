/* clock.h -- the two questions every long-running command asks of its surroundings: what time
 * it is (monotonic seconds, for throughput, ETA and deadlines) and whether a directory exists
 * (a checkpoint to resume from). */
#ifndef SHE_CLOCK_H
#define SHE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (never jumps with the wall clock). */
double she_now_s(void);
/* 1 if path exists and is a directory. */
int she_is_dir(const char *path);

#endif
