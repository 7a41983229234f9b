/* Snapshot locations: "http://host:port/NAME[@vN|@N|@latest]"; "depot://" is
 * a synonym of "http://" (and "depots://" of "https://"). */
#include "xfer_int.h"

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

char *br_xfer_depot_base(const char *s) {
  const char *rest = NULL, *scheme = s ? scheme_of(s, &rest) : NULL;
  if (!scheme) return NULL;
  size_t n = strcspn(rest, "/");
  if (!n || (rest[n] && strcmp(rest + n, "/") != 0)) return NULL;
  char *b = NULL;
  if (asprintf(&b, "%s%.*s", scheme, (int)n, rest) < 0) return NULL;
  return b;
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
  if (!slash || slash == rest)
    return br_error_set(err, BR_EINVAL, "'%s': no snapshot name after the host", s);
  char *name = strdup(slash + 1);
  if (!name) return br_error_set(err, BR_ENOMEM, "out of memory");
  char *at = strrchr(name, '@');
  int64_t version = 0;
  if (at) {
    *at = 0;
    const char *v = at + 1;
    if (strcmp(v, "latest") != 0) {
      if (*v == 'v') v++;
      char *end;
      long long n = strtoll(v, &end, 10);
      if (!*v || *end || n <= 0) {
        free(name);
        return br_error_set(err, BR_EINVAL, "'%s': bad version (want @vN or @latest)", s);
      }
      version = n;
    }
  }
  int rc = br_xfer_name_check(name, err);
  if (rc) {
    free(name);
    return rc;
  }
  if (asprintf(&out->base, "%s%.*s", scheme, (int)(slash - rest), rest) < 0) {
    free(name);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  out->name = name;
  out->version = version;
  return BR_OK;
}

void br_xfer_ref_free(br_xfer_ref *r) {
  free(r->base);
  free(r->name);
  r->base = r->name = NULL;
}
