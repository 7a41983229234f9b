/* Snapshot locations: "http://host:port/NAME[@vN|@N|@latest]"; "depot://" is
 * a synonym of "http://" (and "depots://" of "https://"). */
#include "xfer_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The http(s) scheme of a depot location, and *rest where its host
 * starts; NULL when s has none of the depot schemes. */
static const char *scheme_of(const char *s, const char **rest) {
  static const struct {
    const char *prefix, *scheme;
  } schemes[] = {{"http://", "http://"},
                 {"https://", "https://"},
                 {"depot://", "http://"},
                 {"depots://", "https://"}};
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    size_t n = strlen(schemes[i].prefix);
    if (strncmp(s, schemes[i].prefix, n) == 0) {
      *rest = s + n;
      return schemes[i].scheme;
    }
  }
  return NULL;
}

/* Checks HOST[:PORT] (the n bytes at rest) of s and makes the base
 * ("http://HOST:PORT", malloc'd) in *base. A depot:// or depots:// address
 * without a port gets the depot's own, BR_XFER_DEPOT_PORT; http:// and
 * https:// keep theirs (80, 443). */
static int make_base(const char *s, const char *scheme, const char *rest, size_t n,
                     char **base, br_error *err) {
  *base = NULL;
  const char *end = rest + n, *colon = NULL;
  if (n && rest[0] == '[') { /* [IPv6] */
    const char *rb = memchr(rest, ']', n);
    size_t an = rb ? (size_t)(rb - rest - 1) : 0;
    if (!an || strspn(rest + 1, "0123456789abcdefABCDEF:.") < an)
      return br_error_set(err, BR_EINVAL, "'%s': bad IPv6 address (want [ADDRESS]:PORT)", s);
    if (rb + 1 < end && rb[1] != ':')
      return br_error_set(err, BR_EINVAL, "'%s': unexpected '%c' after ']'", s, rb[1]);
    if (rb + 1 < end) colon = rb + 1;
  } else {
    colon = memchr(rest, ':', n);
    size_t hn = colon ? (size_t)(colon - rest) : n;
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";
    if (!hn) return br_error_set(err, BR_EINVAL, "'%s': no host (want depot://HOST:PORT/NAME)", s);
    for (size_t i = 0; i < hn; i++)
      if (!memchr(ok, rest[i], sizeof ok - 1))
        return br_error_set(err, BR_EINVAL, "'%s': bad host name '%.*s'", s, (int)hn, rest);
  }
  if (colon) {
    const char *p = colon + 1;
    long port = 0;
    for (const char *q = p; q < end && port <= 65535; q++)
      port = isdigit((unsigned char)*q) ? port * 10 + (*q - '0') : 65536;
    if (p == end || port < 1 || port > 65535)
      return br_error_set(err, BR_EINVAL, "'%s': bad port '%.*s' (want 1 to 65535)", s,
                          (int)(end - p), p);
  }
  bool depot = strncmp(s, "depot", 5) == 0;
  int r = colon || !depot ? asprintf(base, "%s%.*s", scheme, (int)n, rest)
                          : asprintf(base, "%s%.*s:%d", scheme, (int)n, rest, BR_XFER_DEPOT_PORT);
  if (r < 0) {
    *base = NULL;
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  return BR_OK;
}

char *br_xfer_depot_base(const char *s) {
  const char *rest = NULL, *scheme = s ? scheme_of(s, &rest) : NULL;
  if (!scheme) return NULL;
  size_t n = strcspn(rest, "/");
  if (rest[n] && strcmp(rest + n, "/") != 0) return NULL;
  char *b = NULL;
  br_error err;
  br_error_clear(&err);
  return make_base(s, scheme, rest, n, &b, &err) == BR_OK ? b : NULL;
}

int br_xfer_ref_parse(const char *s, br_xfer_ref *out, br_error *err) {
  memset(out, 0, sizeof *out);
  if (!s) return br_error_set(err, BR_EINVAL, "no depot location");
  const char *rest = NULL;
  const char *scheme = scheme_of(s, &rest);
  if (!scheme)
    return br_error_set(err, BR_EINVAL,
                        "'%s' is not a depot location (want depot://HOST:PORT/NAME[@vN])", s);
  const char *slash = strchr(rest, '/');
  if (!slash || !slash[1])
    return br_error_set(err, BR_EINVAL, "'%s': no snapshot name after the host", s);
  char *base = NULL;
  int rc = make_base(s, scheme, rest, (size_t)(slash - rest), &base, err);
  if (rc) return rc;
  char *name = strdup(slash + 1);
  if (!name) {
    free(base);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  char *at = strrchr(name, '@');
  int64_t version = 0;
  if (at) {
    *at = 0;
    const char *v = at + 1;
    if (strcmp(v, "latest") != 0) {
      if (*v == 'v') v++;
      char *end;
      errno = 0;
      long long n = strtoll(v, &end, 10);
      if (!*v || *end || n <= 0 || errno == ERANGE || !isdigit((unsigned char)*v)) {
        free(name);
        free(base);
        return br_error_set(err, BR_EINVAL, "'%s': bad version (want @vN or @latest)", s);
      }
      version = n;
    }
  }
  rc = br_xfer_name_check(name, err);
  if (rc) {
    free(name);
    free(base);
    return rc;
  }
  out->base = base;
  out->name = name;
  out->version = version;
  return BR_OK;
}

void br_xfer_ref_free(br_xfer_ref *r) {
  free(r->base);
  free(r->name);
  r->base = r->name = NULL;
}
