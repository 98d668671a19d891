/* Answers the REST front doors share: a store's error as its HTTP answer, an id as the API shows it. */
#ifndef SB_ANSWERS_H
#define SB_ANSWERS_H

#include "adapters/net/http_server.h"

#include <jansson.h>
#include <stdint.h>

/* SB_ENOENT: 404 not_found (what_missing); SB_EEXIST: 409 conflict (what_conflicts; NULL: treated as a refusal);
 * SB_EINVAL: 500, a statement the database refused (the store logged its SQLSTATE); anything else: 503, the
 * database is away. */
void sb_answer_db_error(sb_http_req_t *req, int err, const char *what_missing, const char *what_conflicts);
/* An id as a JSON string: ids are 64-bit, and not every client's numbers are. */
json_t *sb_answer_id(int64_t id);

#endif
