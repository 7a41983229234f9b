/* The lists of the missing and fetch questions ({"chunks":[...],
 * "zstd":true}), as the depot reads them: a list taken is JSON to jansson,
 * is bounded, and writes back to a text that reads back the same. */
#include "fuzz.h"
#include "xfer/xfer_int.h"

#include <jansson.h>
#include <string.h>

#define MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  br_xfer_digest *ds = NULL, *back = NULL;
  size_t n = 77, nb = 0;
  bool flag = false;
  br_error err;
  br_error_clear(&err);
  if (br_xfer__digest_list_parse((const char *)data, size, "chunks", MAX, &ds, &n, "zstd", &flag,
                                 &err) != BR_OK) {
    FUZZ_CHECK(ds == NULL && n == 0);
    FUZZ_CHECK(err.msg[0] != 0);
    return 0;
  }
  FUZZ_CHECK(n <= MAX);
  json_t *j = json_loadb((const char *)data, size, 0, NULL);
  FUZZ_CHECK(j != NULL);
  json_decref(j);
  size_t len = 0;
  char *text = br_xfer__digest_list_json("chunks", ds, n, &len);
  FUZZ_CHECK(text && strlen(text) == len);
  FUZZ_CHECK(br_xfer__digest_list_parse(text, len, "chunks", MAX, &back, &nb, NULL, NULL, &err) ==
             BR_OK);
  FUZZ_CHECK(nb == n && (n == 0 || memcmp(back, ds, n * sizeof *ds) == 0));
  free(text);
  free(back);
  free(ds);
  return 0;
}
