/* test.h -- the tiny assertion harness every she test executable uses.
 *
 * A test executable is a main() that calls RUN(fn) for each test function and ends with
 * TEST_DONE(), which prints "N passed, N failed" and exits non-zero if any check failed.
 * Checks print file:line and the reason, and let the test function go on (so one run
 * shows every failure); REQUIRE* return from the test function instead.  TEST_SKIP exits
 * with 77, which CMake marks as skipped (SKIP_RETURN_CODE). */
#ifndef SHE_TEST_H
#define SHE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks_failed_;
static int test_fns_passed_, test_fns_failed_;

#define CHECK_MSG(cond, ...)                                              \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            test_checks_failed_++;                                        \
        }                                                                 \
    } while (0)
#define CHECK(cond) CHECK_MSG(cond, "%s", "false")
#define REQUIRE_MSG(cond, ...)            \
    do {                                  \
        int ok_ = (cond);                 \
        CHECK_MSG(ok_, __VA_ARGS__);      \
        if (!ok_)                         \
            return;                       \
    } while (0)
#define REQUIRE(cond) REQUIRE_MSG(cond, "%s", "required")
#define CHECK_EQ_INT(a, b)                                                              \
    do {                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                             \
        CHECK_MSG(a_ == b_, "%s = %lld, %s = %lld", #a, a_, #b, b_);                    \
    } while (0)
#define CHECK_STR(a, b)                                                                 \
    do {                                                                                \
        const char *a_ = (a), *b_ = (b);                                                \
        CHECK_MSG(a_ && b_ && strcmp(a_, b_) == 0, "\"%s\" != \"%s\"", a_ ? a_ : "(null)", \
                  b_ ? b_ : "(null)");                                                  \
    } while (0)
/* |a-b| <= atol + rtol*|b|, b being the reference. */
#define CHECK_CLOSE(a, b, atol, rtol)                                                       \
    do {                                                                                    \
        double a_ = (double)(a), b_ = (double)(b);                                          \
        CHECK_MSG(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_), "%s = %.9g, %s = %.9g (diff %.3g)", \
                  #a, a_, #b, b_, fabs(a_ - b_));                                           \
    } while (0)
/* For calls returning she_err_t with a buffer named errstr in scope. */
#define CHECK_OK(call)                                                                  \
    do {                                                                                \
        int e_ = (int)(call);                                                           \
        CHECK_MSG(e_ == 0, "%s returned %d: %s", #call, e_, errstr);                    \
    } while (0)
#define REQUIRE_OK(call)                                                                \
    do {                                                                                \
        int e_ = (int)(call);                                                           \
        REQUIRE_MSG(e_ == 0, "%s returned %d: %s", #call, e_, errstr);                  \
    } while (0)

#define RUN(fn)                                                        \
    do {                                                               \
        int before_ = test_checks_failed_;                             \
        fprintf(stderr, "-- %s\n", #fn);                               \
        fn();                                                          \
        if (test_checks_failed_ == before_)                            \
            test_fns_passed_++;                                        \
        else {                                                         \
            test_fns_failed_++;                                        \
            fprintf(stderr, "FAILED: %s\n", #fn);                      \
        }                                                              \
    } while (0)

#define TEST_DONE()                                                          \
    do {                                                                     \
        printf("%d passed, %d failed\n", test_fns_passed_, test_fns_failed_); \
        return test_fns_failed_ ? 1 : 0;                                     \
    } while (0)

#define TEST_SKIP_CODE 77
#define TEST_SKIP(...)                  \
    do {                                \
        printf("skipped: ");            \
        printf(__VA_ARGS__);            \
        printf("\n");                   \
        exit(TEST_SKIP_CODE);           \
    } while (0)

#endif
