/* Snapshot locations: "http://host:port/NAME[@vN|@N|@latest]"; "depot://" is
 * a synonym of "http://" (and "depots://" of "https://"). */
#include "xfer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int br_xfer_ref_parse(const char *s, br_xfer_ref *out, br_error *err) {
  memset(out, 0, sizeof *out);
  if (!s) return br_error_set(err, BR_EINVAL, "no depot location");
  const char *scheme = NULL, *rest = NULL;
  if (strncmp(s, "http://", 7) == 0) scheme = "http://", rest = s + 7;
  else if (strncmp(s, "https://", 8) == 0) scheme = "https://", rest = s + 8;
  else if (strncmp(s, "depot://", 8) == 0) scheme = "http://", rest = s + 8;
  else if (strncmp(s, "depots://", 9) == 0) scheme = "https://", rest = s + 9;
  else
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
