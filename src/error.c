/* br_error helpers: filling, positioning and formatting error records. */
#include <braid/error.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void br_error_clear(br_error *err) {
  if (err) memset(err, 0, sizeof *err);
}

int br_error_set(br_error *err, int code, const char *fmt, ...) {
  if (!err) return code;
  /* a new error: nothing of an earlier one (or of an uncleared struct) stays */
  err->code = code;
  err->file[0] = err->node[0] = '\0';
  err->line = err->column = 0;
  err->task_id = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

void br_error_at(br_error *err, const char *file, int line, int column) {
  if (!err) return;
  if (file) snprintf(err->file, sizeof err->file, "%s", file);
  err->line = line;
  err->column = column;
}

const char *br_error_format(const br_error *err, char *buf, size_t size) {
  if (!err || size == 0) return buf;
  if (err->file[0] && err->line > 0)
    snprintf(buf, size, "%s:%d:%d: %s", err->file, err->line, err->column, err->msg);
  else if (err->file[0])
    snprintf(buf, size, "%s: %s", err->file, err->msg);
  else if (err->task_id && err->node[0])
    snprintf(buf, size, "task %lld at node '%s': %s", (long long)err->task_id, err->node,
             err->msg);
  else if (err->task_id)
    snprintf(buf, size, "task %lld: %s", (long long)err->task_id, err->msg);
  else if (err->node[0])
    snprintf(buf, size, "node '%s': %s", err->node, err->msg);
  else
    snprintf(buf, size, "%s", err->msg[0] ? err->msg : br_strerror(err->code));
  return buf;
}

const char *br_strerror(int code) {
  switch (code) {
  case BR_OK: return "success";
  case BR_EINVAL: return "invalid input";
  case BR_ENOMEM: return "out of memory";
  case BR_EIO: return "input/output error";
  case BR_ENOTFOUND: return "not found";
  case BR_ESTORE: return "store error";
  case BR_ESTATE: return "invalid state";
  case BR_ESCRIPT: return "script error";
  case BR_EEXEC: return "execution error";
  case BR_ECANCEL: return "cancelled";
  case BR_ENET: return "network error";
  case BR_EAUTH: return "not authorised";
  case BR_EVERSION: return "unsupported version";
  default: return "unknown error";
  }
}
