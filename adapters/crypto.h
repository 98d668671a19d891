/* Secrets at rest and API keys, over mbedTLS and the kernel's random source.
 *
 * Sealing: provider credentials (Twilio auth tokens, Meta access tokens) are stored encrypted under the 32-byte
 * master_key with AES-256-GCM. The sealed form is one printable string,
 *     base64(version 0x01 | 12-byte random nonce | ciphertext | 16-byte tag)      (standard alphabet, padded)
 * and the caller may bind it to its context with associated data (e.g. the tenant id), so a sealed credential copied
 * into another tenant's row does not open there. The associated data is not stored; opening must pass the same bytes.
 * Nonces come from getrandom(2): at 96 random bits, one key can seal far more credentials than the gateway will
 * ever hold (NIST SP 800-38D's 2^32 limit for random nonces).
 *
 * API keys: "sb_live_" + base64url(32 random bytes) (51 characters). Only the SHA-256 hex of the whole key is stored
 * and looked up (sb_crypto_key_hash); 256 random bits need no slow hash. The first 12 characters are its public
 * prefix, shown in listings so a person can tell keys apart.
 *
 * Nothing here logs. Secrets this module creates on its stack are wiped before return; plaintext it hands back is
 * the caller's to wipe (sb_crypto_wipe, sb_crypto_buf_wipe). */
#ifndef SB_CRYPTO_H
#define SB_CRYPTO_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>

#define SB_CRYPTO_KEY_LEN 32           /* AES-256 master key, bytes */
#define SB_CRYPTO_SEAL_VERSION 1
#define SB_CRYPTO_NONCE_LEN 12
#define SB_CRYPTO_TAG_LEN 16
#define SB_CRYPTO_PLAIN_MAX (64 * 1024) /* largest plaintext sealed or opened */

#define SB_CRYPTO_API_KEY_PREFIX "sb_live_"
#define SB_CRYPTO_API_KEY_LEN 51        /* "sb_live_" + 43 base64url characters */
#define SB_CRYPTO_API_KEY_PUBLIC_LEN 12 /* shown prefix */
#define SB_CRYPTO_KEY_HASH_LEN 64       /* lower-case hex SHA-256 */

/* Fills the n bytes at buf (caller's) from getrandom(2), retrying on EINTR and short reads. Blocks only before the
 * kernel's pool is first initialised at boot. Returns 0 or -errno (ENOSYS on kernels without getrandom). */
int sb_crypto_random(void *buf, size_t n);

/* Seals plain under key with associated data ad (all borrowed; ad may be empty) and appends the sealed string to
 * out. Returns 0; SB_E2BIG if plain is longer than SB_CRYPTO_PLAIN_MAX; or -errno from sb_crypto_random. On failure
 * out is as it was. */
int sb_crypto_seal(const unsigned char key[SB_CRYPTO_KEY_LEN], sb_str_t plain, sb_str_t ad, sb_buf_t *out);

/* Opens sealed (borrowed) under key with the same ad it was sealed with, appending the plaintext to out (reserved in
 * one step, so no stray copy is left by a reallocation; pass an empty buffer and end it with sb_crypto_buf_wipe).
 * Returns 0; SB_EPARSE if sealed is not the base64 of a version-1 sealed value (bad base64, unknown version, too
 * short); SB_E2BIG if it is longer than any sealed SB_CRYPTO_PLAIN_MAX could be; -EBADMSG if authentication fails
 * (wrong key, wrong ad, any byte altered). On failure out is as it was and no plaintext byte remains in it. */
int sb_crypto_open(const unsigned char key[SB_CRYPTO_KEY_LEN], sb_str_t sealed, sb_str_t ad, sb_buf_t *out);

/* Overwrites n bytes at p with zeros in a way the compiler cannot drop. */
void sb_crypto_wipe(void *p, size_t n);

/* Wipes all cap bytes of b, then frees them (sb_buf_cleanup). */
void sb_crypto_buf_wipe(sb_buf_t *b);

/* A new API key. key is the secret (show it once, then wipe the struct); hash is what the database stores and looks
 * up; prefix is the public display form. All NUL-terminated. */
typedef struct sb_crypto_api_key {
    char key[SB_CRYPTO_API_KEY_LEN + 1];
    char hash[SB_CRYPTO_KEY_HASH_LEN + 1];
    char prefix[SB_CRYPTO_API_KEY_PUBLIC_LEN + 1];
} sb_crypto_api_key_t;

/* Generates a key into *out (caller's). Returns 0 or -errno from sb_crypto_random (then *out is zeroed). */
int sb_crypto_key_generate(sb_crypto_api_key_t *out);

/* Writes the lower-case hex SHA-256 of key (borrowed, any bytes) and a NUL to out (caller's). Cannot fail. */
void sb_crypto_key_hash(sb_str_t key, char out[SB_CRYPTO_KEY_HASH_LEN + 1]);

/* True if key (borrowed) has the shape of an API key we issue: "sb_live_" followed by the canonical base64url of 32
 * bytes. A cheap refusal before hashing and a database lookup; not a proof the key exists. */
bool sb_crypto_key_well_formed(sb_str_t key);

/* The public prefix of key (borrowing it): its first SB_CRYPTO_API_KEY_PUBLIC_LEN characters, or all of it when
 * shorter. */
sb_str_t sb_crypto_key_public(sb_str_t key);

#endif
