/* SHA-256, HMAC-SHA1 and HMAC-SHA256 over mbedTLS, for webhook signatures (Twilio signs with HMAC-SHA1, Meta with
 * HMAC-SHA256), JWTs and API key hashes.
 *
 * One-shot functions write the digest into the caller's buffer and cannot fail: mbedTLS fails here only when it
 * cannot allocate, and allocation failure aborts the process as sb_malloc does. An incremental HMAC (init, update
 * any number of times, finish) serves messages that arrive in pieces, such as Twilio's URL followed by each sorted
 * parameter, without concatenating them first. Keys are borrowed and never kept: mbedTLS derives its pads into the
 * context, and finish wipes the context. */
#ifndef SB_DIGEST_H
#define SB_DIGEST_H

#include "proto/str.h"

#include <mbedtls/md.h>

#include <stddef.h>

#define SB_DIGEST_SHA1_LEN 20
#define SB_DIGEST_SHA256_LEN 32
#define SB_DIGEST_MAX_LEN 32

typedef enum sb_digest_alg {
    SB_DIGEST_SHA1,
    SB_DIGEST_SHA256
} sb_digest_alg_t;

/* Writes SHA-256(in) to out (caller's, SB_DIGEST_SHA256_LEN bytes). in is borrowed; in.p may be NULL if in.len is 0. */
void sb_digest_sha256(sb_str_t in, unsigned char out[SB_DIGEST_SHA256_LEN]);

/* Writes HMAC-SHA1(key, msg) to out (caller's, SB_DIGEST_SHA1_LEN bytes). key and msg are borrowed; any length. */
void sb_digest_hmac_sha1(sb_str_t key, sb_str_t msg, unsigned char out[SB_DIGEST_SHA1_LEN]);

/* Writes HMAC-SHA256(key, msg) to out (caller's, SB_DIGEST_SHA256_LEN bytes). key and msg are borrowed. */
void sb_digest_hmac_sha256(sb_str_t key, sb_str_t msg, unsigned char out[SB_DIGEST_SHA256_LEN]);

/* The digest length of alg in bytes. */
size_t sb_digest_len(sb_digest_alg_t alg);

/* An HMAC in progress; caller's storage. It holds key material: always end it with sb_digest_hmac_finish or
 * sb_digest_hmac_cleanup, which free and wipe it. */
typedef struct sb_digest_hmac {
    mbedtls_md_context_t md;
    size_t len; /* digest length of the algorithm */
} sb_digest_hmac_t;

/* Starts an HMAC under key (borrowed, not kept). */
void sb_digest_hmac_init(sb_digest_hmac_t *h, sb_digest_alg_t alg, sb_str_t key);

/* Feeds data (borrowed) into the HMAC. */
void sb_digest_hmac_update(sb_digest_hmac_t *h, sb_str_t data);

/* Writes the MAC to out (caller's, at least sb_digest_len(alg) bytes), wipes and frees the context, and returns
 * the number of bytes written. h may be initialised again afterwards. */
size_t sb_digest_hmac_finish(sb_digest_hmac_t *h, unsigned char *out);

/* Abandons an HMAC: wipes and frees the context without producing a MAC. Safe after finish. */
void sb_digest_hmac_cleanup(sb_digest_hmac_t *h);

#endif
