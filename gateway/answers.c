/* Answers the REST front doors share; see answers.h. */
#include "gateway/answers.h"

#include "proto/err.h"

#include <stdio.h>
#include <stdlib.h>

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

void sb_answer_json(sb_http_req_t *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, s);
    sb_buf_puts(&b, "\n");
    free(s);
    sb_http_respond(req, status, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
}

void sb_answer_rows(sb_http_req_t *req, int err, const char *key, const sb_rows_t *rows, const char *what_missing)
{
    if (err) {
        sb_answer_db_error(req, err, what_missing, NULL);
        return;
    }
    json_t *list = json_array();
    for (size_t r = 0; r < rows->nrows; r++) {
        json_t *o = json_object();
        for (size_t c = 0; c < rows->ncols; c++) {
            const char *v = sb_rows_cell(rows, r, c);
            json_object_set_new(o, rows->names[c], v ? json_string(v) : json_null());
        }
        json_array_append_new(list, o);
    }
    sb_answer_json(req, 200, json_pack("{s:o}", key, list));
}
