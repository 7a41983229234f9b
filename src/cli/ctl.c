/* braid ctl: the job side of the runtime channel. A job (shell script, a
 * DCC's Python, a C program) runs `braid ctl set|spawn|progress ...`; this
 * sends one request over BRAID_CTL with BRAID_CTL_TOKEN and returns only once
 * braid has acknowledged it. */
#include "cli.h"

#include <braid/runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ctl_usage(FILE *out) {
  fprintf(out,
          "usage: braid ctl set KEY=VALUE [KEY=VALUE...]\n"
          "       braid ctl spawn [--name NAME] [KEY=VALUE...]\n"
          "       braid ctl progress VALUE\n"
          "       braid ctl send JSON\n"
          "\n"
          "Run inside a braid job: reports to the braid that runs the job (through\n"
          "BRAID_CTL and BRAID_CTL_TOKEN) and returns once braid has acknowledged.\n"
          "\n"
          "  set       sets attributes on the job's task; they are applied when the\n"
          "            invocation succeeds\n"
          "  spawn     creates a child task now, with these attributes (it leaves the\n"
          "            node by its children output while the job still runs)\n"
          "  progress  reports progress: a fraction 0..1 (0.42) or a percentage (42%%)\n"
          "  send      sends one raw protocol request (a JSON object; the token is\n"
          "            added) and prints the answer\n"
          "\n"
          "Values:\n"
          "  KEY=VALUE   VALUE is JSON when it parses as JSON (42, 1.5, true, null,\n"
          "              [1,2], {\"a\":1}, \"\\\"quoted\\\"\"), otherwise a string (hello,\n"
          "              007, /shots/a.exr); quote to force a string: KEY='\"42\"'\n"
          "  KEY:=JSON   VALUE must be JSON (an error otherwise)\n"
          "\n"
          "Exit status: 0 acknowledged, 1 refused by braid or braid unreachable,\n"
          "2 usage error or not inside a braid job.\n");
}

static int parse_assigns(int argc, char **argv, int first, json_t *attrs) {
  for (int i = first; i < argc; i++) {
    char *key = NULL;
    json_t *value = NULL;
    br_error err = {0};
    br_error_clear(&err);
    if (br_runtime_parse_assign(argv[i], &key, &value, &err) != BR_OK) {
      br_cli_errorf("ctl: %s", err.msg);
      return -1;
    }
    json_object_set_new(attrs, key, value);
    free(key);
  }
  return 0;
}

int br_cli_ctl(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv)) {
    ctl_usage(stdout);
    return BR_EXIT_OK;
  }
  if (argc < 2) {
    ctl_usage(stderr);
    return BR_EXIT_USAGE;
  }
  const char *op = argv[1];
  json_t *req = json_object();
  int rc = BR_EXIT_USAGE;
  if (strcmp(op, "set") == 0) {
    json_t *attrs = json_object();
    json_object_set_new(req, "op", json_string("set"));
    json_object_set_new(req, "attrs", attrs);
    if (argc < 3) {
      br_cli_errorf("ctl set: nothing to set (KEY=VALUE ...)");
      goto out;
    }
    if (parse_assigns(argc, argv, 2, attrs) != 0) goto out;
  } else if (strcmp(op, "spawn") == 0) {
    json_t *attrs = json_object();
    json_object_set_new(req, "op", json_string("spawn"));
    json_object_set_new(req, "attrs", attrs);
    int i = 2;
    if (i < argc && strcmp(argv[i], "--name") == 0) {
      if (i + 1 >= argc) {
        br_cli_errorf("ctl spawn: --name needs a value");
        goto out;
      }
      json_object_set_new(req, "name", json_string(argv[i + 1]));
      i += 2;
    } else if (i < argc && strncmp(argv[i], "--name=", 7) == 0) {
      json_object_set_new(req, "name", json_string(argv[i] + 7));
      i++;
    }
    if (parse_assigns(argc, argv, i, attrs) != 0) goto out;
  } else if (strcmp(op, "progress") == 0) {
    if (argc != 3) {
      br_cli_errorf("ctl progress: give one value (0.42 or 42%%)");
      goto out;
    }
    char *end = NULL;
    double v = strtod(argv[2], &end);
    if (end == argv[2]) {
      br_cli_errorf("ctl progress: '%s' is not a number", argv[2]);
      goto out;
    }
    if (*end == '%') {
      v /= 100.0;
      end++;
    }
    if (*end || !(v >= 0.0 && v <= 1.0)) {
      br_cli_errorf("ctl progress: '%s' is not between 0 and 1 (or 0%% and 100%%)", argv[2]);
      goto out;
    }
    json_object_set_new(req, "op", json_string("progress"));
    json_object_set_new(req, "value", json_real(v));
  } else if (strcmp(op, "send") == 0) {
    if (argc != 3) {
      br_cli_errorf("ctl send: give one JSON object");
      goto out;
    }
    json_error_t jerr;
    json_t *raw = json_loads(argv[2], 0, &jerr);
    if (!json_is_object(raw)) {
      br_cli_errorf("ctl send: not a JSON object: %s", raw ? "another JSON value" : jerr.text);
      json_decref(raw);
      goto out;
    }
    json_decref(req);
    req = raw;
  } else {
    br_cli_errorf("ctl: unknown operation '%s' (set, spawn, progress or send; see `braid "
                  "ctl --help`)", op);
    goto out;
  }

  const char *path = getenv("BRAID_CTL");
  const char *token = getenv("BRAID_CTL_TOKEN");
  if (!path || !*path || !token || !*token) {
    br_cli_errorf("ctl: not inside a braid job (BRAID_CTL%s is not set)",
                  (!path || !*path) ? "" : "_TOKEN");
    goto out;
  }
  if (!json_object_get(req, "token")) json_object_set_new(req, "token", json_string(token));

  json_t *resp = NULL;
  br_error err = {0};
  br_error_clear(&err);
  if (br_runtime_call(path, req, &resp, &err) != BR_OK) {
    br_cli_errorf("ctl %s: %s", op, err.msg);
    rc = BR_EXIT_FAILED;
    goto out;
  }
  if (json_is_true(json_object_get(resp, "ok"))) {
    rc = BR_EXIT_OK;
    if (strcmp(op, "send") == 0) {
      char *text = json_dumps(resp, JSON_COMPACT);
      if (text) puts(text);
      free(text);
    }
  } else {
    const char *msg = json_string_value(json_object_get(resp, "error"));
    br_cli_errorf("ctl %s: braid refused: %s", op, msg ? msg : "(no reason given)");
    rc = BR_EXIT_FAILED;
  }
  json_decref(resp);
out:
  json_decref(req);
  return rc;
}
