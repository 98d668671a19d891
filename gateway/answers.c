/* Answers the REST front doors share; see answers.h. */
#include "gateway/answers.h"

#include "proto/err.h"

#include <stdio.h>

void sb_answer_db_error(sb_http_req_t *req, int err, const char *what_missing, const char *what_conflicts)
{
    if (err == SB_ENOENT)
        sb_http_respond_error(req, 404, "not_found", what_missing);
    else if (err == SB_EEXIST && what_conflicts)
        sb_http_respond_error(req, 409, "conflict", what_conflicts);
    else if (err == SB_EINVAL || err == SB_EEXIST)
        sb_http_respond_error(req, 500, "internal", "the database refused the statement");
    else
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; try again");
}

json_t *sb_answer_id(int64_t id)
{
    char t[24];
    snprintf(t, sizeof t, "%lld", (long long)id);
    return json_string(t);
}
