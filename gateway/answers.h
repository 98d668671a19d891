/* Answers the REST front doors share: JSON values and listings, a store's error as its HTTP answer, an id as the
 * API shows it. */
#ifndef SB_ANSWERS_H
#define SB_ANSWERS_H

#include "adapters/net/http_server.h"
#include "proto/rows.h"

#include <jansson.h>
#include <stdint.h>

/* SB_ENOENT: 404 not_found (what_missing); SB_EEXIST: 409 conflict (what_conflicts; NULL: treated as a refusal);
 * SB_EINVAL: 500, a statement the database refused (the store logged its SQLSTATE); anything else: 503, the
 * database is away. */
void sb_answer_db_error(sb_http_req_t *req, int err, const char *what_missing, const char *what_conflicts);
/* Answers status with the JSON value j (compact, a newline after it); takes j. */
void sb_answer_json(sb_http_req_t *req, int status, json_t *j);
/* Answers 200 {key: [the rows as objects, a member a column: strings, or null]}, or the store's error (err; a
 * missing row answers what_missing). */
void sb_answer_rows(sb_http_req_t *req, int err, const char *key, const sb_rows_t *rows, const char *what_missing);
/* An id as a JSON string: ids are 64-bit, and not every client's numbers are. */
json_t *sb_answer_id(int64_t id);

#endif
