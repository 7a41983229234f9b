/* A private PostgreSQL cluster for a test: initdb in a temporary folder,
 * listening only on a unix socket there (no TCP at all), stopped at the end.
 * Uses Debian's postgresql package; as root it runs the server as the
 * `postgres` user (initdb refuses root). */
#ifndef BR_TEST_PG_FIXTURE_H
#define BR_TEST_PG_FIXTURE_H

#include <glob.h>
#include <unistd.h>

#include "harness.h"

typedef struct pg_fixture {
  char *dir;
  char bin[512];
  char uri[1024];
} pg_fixture;

static inline int pg_sh(const pg_fixture *f, const char *cmd) {
  char full[8192];
  if (geteuid() == 0)
    snprintf(full, sizeof full, "runuser -u postgres -- sh -c \"%s\" >>'%s/setup.log' 2>&1", cmd, f->dir);
  else
    snprintf(full, sizeof full, "sh -c \"%s\" >>'%s/setup.log' 2>&1", cmd, f->dir);
  return system(full);
}

static inline void pg_start(pg_fixture *f, const char *name) {
  memset(f, 0, sizeof *f);
  glob_t g;
  if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0)
    br_test_fail(__FILE__, __LINE__, "PostgreSQL is not installed (scripts/deps.sh installs it)");
  snprintf(f->bin, sizeof f->bin, "%s", g.gl_pathv[g.gl_pathc - 1]);
  *strrchr(f->bin, '/') = '\0';
  globfree(&g);
  f->dir = br_test_tmpdir(name);
  char cmd[4096];
  if (geteuid() == 0) {
    snprintf(cmd, sizeof cmd, "chown postgres '%s'", f->dir);
    if (system(cmd) != 0) br_test_fail(__FILE__, __LINE__, "chown failed");
  }
  snprintf(cmd, sizeof cmd, "'%s/initdb' -D '%s/data' -A trust -U braid -E UTF8 --no-sync", f->bin, f->dir);
  if (pg_sh(f, cmd) != 0) br_test_fail(__FILE__, __LINE__, "initdb failed (see %s/setup.log)", f->dir);
  snprintf(cmd, sizeof cmd,
           "'%s/pg_ctl' -D '%s/data' -l '%s/server.log' -w -o \\\"-k %s -c listen_addresses='' "
           "-c fsync=off -c max_connections=50\\\" start",
           f->bin, f->dir, f->dir, f->dir);
  if (pg_sh(f, cmd) != 0) br_test_fail(__FILE__, __LINE__, "pg_ctl start failed (see %s)", f->dir);
  snprintf(f->uri, sizeof f->uri, "postgresql://braid@/postgres?host=%s", f->dir);
}

static inline void pg_stop(pg_fixture *f) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s/pg_ctl' -D '%s/data' -m immediate -w stop", f->bin, f->dir);
  pg_sh(f, cmd);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", f->dir);
  free(f->dir);
}

#endif
