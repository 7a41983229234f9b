/* Path safety: every path, link target and snapshot name that comes from a
 * manifest or the network is checked here before it touches a file system.
 * The rules are strict on purpose (a pipeline's cache tree never needs a
 * colon, a backslash or a device name), and identical on push and pull, so
 * a tree that pushes is a tree that pulls on Linux, macOS and Windows. */
#include "xfer_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_PATH_BYTES 4096
#define MAX_COMPONENT_BYTES 255

static bool reserved_windows(const char *c, size_t len) {
  /* CON, PRN, AUX, NUL, COM1-9, LPT1-9, also with any extension. */
  size_t stem = 0;
  while (stem < len && c[stem] != '.') stem++;
  static const char *names3[] = {"CON", "PRN", "AUX", "NUL"};
  if (stem == 3)
    for (size_t i = 0; i < 4; i++)
      if (strncasecmp(c, names3[i], 3) == 0) return true;
  if (stem == 4 && (strncasecmp(c, "COM", 3) == 0 || strncasecmp(c, "LPT", 3) == 0) &&
      c[3] >= '1' && c[3] <= '9')
    return true;
  return false;
}

const char *br_xfer__shown(const char *s, bool high, char *buf, size_t size) {
  size_t o = 0;
  for (; *s && o + 5 < size; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch < 0x20 || ch == 0x7f || (high && ch >= 0x80))
      o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
    else
      buf[o++] = (char)ch;
  }
  buf[o] = 0;
  if (*s && size > 4) memcpy(buf + size - 4, "...", 4);
  return buf;
}

static int check_component(const char *path, const char *c, size_t len, br_error *err) {
  if (len == 0) return br_error_set(err, BR_EINVAL, "unsafe path '%s': empty component", path);
  if (len > MAX_COMPONENT_BYTES)
    return br_error_set(err, BR_EINVAL, "unsafe path '%s': component too long", path);
  if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
    return br_error_set(err, BR_EINVAL, "unsafe path '%s': '.' or '..' component", path);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)c[i];
    char shown[600];
    if (ch < 0x20 || ch == 0x7f)
      return br_error_set(err, BR_EINVAL, "unsafe path '%s': control character \\x%02x",
                          br_xfer__shown(path, false, shown, sizeof shown), ch);
    if (ch == '\\' || ch == ':' || ch == '<' || ch == '>' || ch == '"' || ch == '|' ||
        ch == '?' || ch == '*')
      return br_error_set(err, BR_EINVAL,
                          "unsafe path '%s': forbidden character '%c' (Windows refuses it)", path,
                          ch);
  }
  if (c[len - 1] == '.' || c[len - 1] == ' ')
    return br_error_set(err, BR_EINVAL,
                        "unsafe path '%s': a name ends with a dot or a space (Windows drops it)",
                        path);
  if (reserved_windows(c, len))
    return br_error_set(err, BR_EINVAL,
                        "unsafe path '%s': '%.*s' is a reserved device name on Windows", path,
                        (int)len, c);
  if (len >= strlen(BR_XFER__PARTIAL_PREFIX) &&
      strncmp(c, BR_XFER__PARTIAL_PREFIX, strlen(BR_XFER__PARTIAL_PREFIX)) == 0)
    return br_error_set(err, BR_EINVAL, "unsafe path '%s': braid's temporary name", path);
  return BR_OK;
}

int br_xfer_path_check(const char *path, br_error *err) {
  if (!path || !*path) return br_error_set(err, BR_EINVAL, "unsafe path: empty");
  size_t n = strnlen(path, MAX_PATH_BYTES + 1);
  if (n > MAX_PATH_BYTES) return br_error_set(err, BR_EINVAL, "unsafe path: too long");
  if (path[0] == '/') return br_error_set(err, BR_EINVAL, "unsafe path '%s': absolute", path);
  const char *c = path;
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t len = slash ? (size_t)(slash - c) : strlen(c);
    int rc = check_component(path, c, len, err);
    if (rc) return rc;
    if (!slash) break;
    c = slash + 1;
  }
  return BR_OK;
}

int br_xfer_link_check(const char *path, const char *target, br_error *err) {
  if (!target || !*target)
    return br_error_set(err, BR_EINVAL, "symlink '%s': empty target", path);
  if (strnlen(target, MAX_PATH_BYTES + 1) > MAX_PATH_BYTES)
    return br_error_set(err, BR_EINVAL, "symlink '%s': target too long", path);
  if (target[0] == '/')
    return br_error_set(err, BR_EINVAL, "symlink '%s' points out of the tree (absolute '%s')",
                        path, target);
  /* Depth of the link's directory, then walk the target lexically. */
  int depth = 0;
  for (const char *p = path; *p; p++)
    if (*p == '/') depth++;
  const char *c = target;
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t len = slash ? (size_t)(slash - c) : strlen(c);
    if (len == 2 && c[0] == '.' && c[1] == '.') {
      if (--depth < 0)
        return br_error_set(err, BR_EINVAL, "symlink '%s' points out of the tree ('%s')", path,
                            target);
    } else if (len == 0 || (len == 1 && c[0] == '.')) {
      /* "a//b" and "./a" stay where they are */
    } else {
      for (size_t i = 0; i < len; i++)
        if ((unsigned char)c[i] < 0x20 || c[i] == '\\')
          return br_error_set(err, BR_EINVAL, "symlink '%s': forbidden character", path);
      depth++;
    }
    if (!slash) break;
    c = slash + 1;
  }
  return BR_OK;
}

int br_xfer_name_check(const char *name, br_error *err) {
  if (!name || !*name) return br_error_set(err, BR_EINVAL, "empty snapshot name");
  size_t n = strnlen(name, 256);
  if (n > 255) return br_error_set(err, BR_EINVAL, "snapshot name too long");
  const char *c = name;
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t len = slash ? (size_t)(slash - c) : strlen(c);
    if (len == 0 || c[0] == '.')
      return br_error_set(err, BR_EINVAL,
                          "bad snapshot name '%s': empty segment or leading dot", name);
    for (size_t i = 0; i < len; i++)
      if (!isalnum((unsigned char)c[i]) && c[i] != '.' && c[i] != '_' && c[i] != '-')
        return br_error_set(err, BR_EINVAL,
                            "bad snapshot name '%s': use letters, digits, '.', '_', '-'",
                            name);
    if (!slash) break;
    c = slash + 1;
  }
  return BR_OK;
}
