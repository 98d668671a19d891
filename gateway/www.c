/* The inbox page; see www.h. */
#include "gateway/www.h"

#include "gateway/log.h"
#include "proto/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE (1024 * 1024)

static struct asset {
    const char *path, *file, *type;
    char *body;
    size_t len;
} assets[] = {
    {"/inbox", "inbox.html", "text/html; charset=utf-8", NULL, 0},
    {"/inbox/app.js", "inbox.js", "text/javascript; charset=utf-8", NULL, 0},
    {"/inbox/app.css", "inbox.css", "text/css; charset=utf-8", NULL, 0},
};

static const char headers[] =
    "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:;"
    " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
    "x-content-type-options: nosniff\r\n"
    "referrer-policy: no-referrer\r\n"
    "cache-control: no-cache\r\n";

void sb_www_init(const char *dir)
{
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, assets[i].file);
        FILE *f = fopen(path, "rb");
        if (!f) {
            sb_log_warn("www: %s not found: /inbox is not served", path);
            continue;
        }
        char *b = sb_malloc(MAX_FILE);
        size_t n = fread(b, 1, MAX_FILE, f);
        fclose(f);
        assets[i].body = b;
        assets[i].len = n;
    }
}

void sb_www_cleanup(void)
{
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        free(assets[i].body);
        assets[i].body = NULL;
        assets[i].len = 0;
    }
}

bool sb_www_handle(sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req);
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        if (!sb_str_eq_cstr(path, assets[i].path))
            continue;
        sb_http_method_t m = sb_http_req_method(req);
        if (m != SB_HTTP_GET && m != SB_HTTP_HEAD)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET and HEAD only");
        else if (!assets[i].body)
            sb_http_respond_error(req, 404, "not_found", "the inbox page's files were not found at start-up");
        else
            sb_http_respond_headers(req, 200, assets[i].type, headers, assets[i].body, assets[i].len);
        return true;
    }
    return false;
}
