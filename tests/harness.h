/* A tiny test harness in the manner of libuv's TEST_IMPL: each TEST(name) in a
 * tests/test-*.c file registers itself; the file's executable runs them all
 * (or only those named on its command line) and ends with "N passed, N failed". */
#ifndef BR_TEST_HARNESS_H
#define BR_TEST_HARNESS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

typedef void (*br_test_fn)(void);
void br_test_register(const char *name, br_test_fn fn);
void br_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* A fresh empty directory for this test under $TMPDIR; the caller frees it. */
char *br_test_tmpdir(const char *name);
/* Writes text as the file dir/name (replaced). */
void br_test_put(const char *dir, const char *name, const char *text);
/* The whole file at path (malloc'd), "" when it cannot be read. */
char *br_test_slurp(const char *path);
/* Warnings the library tells (a br_warn_fn: br_test_warn with a
 * br_test_warnings as ud), one per line, until br_test_warnings_take hands
 * them over as a string the caller frees ("" when none). */
typedef struct br_test_warnings {
  char *text;
  size_t len;
} br_test_warnings;
void br_test_warn(void *ud, const char *msg);
char *br_test_warnings_take(br_test_warnings *w);
/* How many times needle is in hay (not overlapping). */
int br_test_count(const char *hay, const char *needle);
/* Waits up to 5 s for pid to end: true when it is gone, or a zombie (a
 * process that is not our child waits for init to reap it, which may be
 * late). */
bool br_test_pid_gone(pid_t pid);

#define TEST(name)                                                     \
  static void test_##name(void);                                       \
  __attribute__((constructor)) static void test_register_##name(void) { \
    br_test_register(#name, test_##name);                              \
  }                                                                    \
  static void test_##name(void)

#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) br_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
  } while (0)

#define CHECK_EQ_INT(a, b)                                             \
  do {                                                                 \
    long long va_ = (long long)(a), vb_ = (long long)(b);              \
    if (va_ != vb_)                                                    \
      br_test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", \
                   #a, va_, #b, vb_);                                  \
  } while (0)

#define CHECK_EQ_STR(a, b)                                             \
  do {                                                                 \
    const char *va_ = (a), *vb_ = (b);                                 \
    if (!va_ || !vb_ || strcmp(va_, vb_) != 0)                         \
      br_test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", \
                   #a, va_ ? va_ : "(null)", vb_ ? vb_ : "(null)");    \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                    \
  do {                                                                 \
    const char *h_ = (hay), *n_ = (needle);                            \
    if (!h_ || !strstr(h_, n_))                                        \
      br_test_fail(__FILE__, __LINE__, "%s == \"%s\" does not contain \"%s\"", \
                   #hay, h_ ? h_ : "(null)", n_);                      \
  } while (0)

/* CHECK_CONTAINS with a needle made by printf. */
#define CHECK_CONTAINSF(hay, ...)                                      \
  do {                                                                 \
    char nf_[2048];                                                    \
    snprintf(nf_, sizeof nf_, __VA_ARGS__);                            \
    CHECK_CONTAINS(hay, nf_);                                          \
  } while (0)

#endif
