/* libFuzzer target for proto/inbox's batches from other nodes (sb_inbox_batch_unpack: what a node reads from a
 * tenant's Pub/Sub channel). Whatever it takes must be a batch within the reader's bounds with consecutive cursors
 * after prev, and pack it back to the very same bytes (the form is canonical: one way to write each batch); whatever
 * it refuses leaves no batch. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/inbox.h"

#include "proto/str.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_inbox_batch_t *b = (sb_inbox_batch_t *)1;
    if (sb_inbox_batch_unpack(data, size, &b) < 0) {
        CHECK(b == NULL);
        return 0;
    }
    CHECK(b && b->tenant > 0 && b->prev >= 0 && b->n >= 1 && b->n <= 65536);
    for (size_t i = 0; i < b->n; i++) {
        CHECK(b->ev[i].cursor == b->prev + 1 + (int64_t)i);
        CHECK(b->ev[i].type.len >= 1 && b->ev[i].type.len <= 64);
    }
    sb_buf_t out;
    sb_buf_init(&out);
    sb_inbox_batch_pack(b, &out);
    CHECK(out.len == size && memcmp(out.p, data, size) == 0);
    sb_buf_cleanup(&out);
    sb_inbox_batch_unref(b);
    return 0;
}
