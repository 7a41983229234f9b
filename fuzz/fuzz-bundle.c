/* Bundles, as the depot reads an upload and pull reads a fetch answer:
 * any body is walked to its end or refused with a message, and every entry
 * given is within bounds (compressed ones are decompressed, bounded). */
#include "fuzz.h"
#include "xfer/xfer_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bool plain = false; /* the depot's first look at an upload, from the headers alone */
  (void)br_xfer__bundle_pack_need(data, size, BR_XFER__PACK_MAX_ENTRY, &plain);
  br_xfer__bundle_iter it;
  br_error err;
  br_error_clear(&err);
  if (br_xfer__bundle_open(&it, data, size, &err) != BR_OK) {
    FUZZ_CHECK(err.msg[0] != 0);
    return 0;
  }
  br_xfer_digest d;
  const uint8_t *p;
  size_t len;
  int r;
  while ((r = br_xfer__bundle_next(&it, &d, &p, &len, &err)) == 1) {
    FUZZ_CHECK(len <= BR_XFER__MAX_CHUNK);
    if (len) {
      volatile uint8_t sum = 0; /* touch every byte: the sanitizers check the bounds */
      for (size_t i = 0; i < len; i++) sum ^= p[i];
      (void)sum;
    }
  }
  FUZZ_CHECK(r == 0 || err.msg[0] != 0);
  br_xfer__bundle_close(&it);
  return 0;
}
