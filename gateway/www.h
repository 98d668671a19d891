/* The inbox page (GET /inbox): static HTML, CSS and JavaScript served by the gateway itself, no build step.
 *
 * The files live in www/ beside the gateway's working directory and are read once, at start-up, into memory:
 *   /inbox            www/inbox.html
 *   /inbox/app.js     www/inbox.js
 *   /inbox/app.css    www/inbox.css
 * A missing file answers 404 saying so (the gateway runs without the page). Answers carry a strict
 * Content-Security-Policy (scripts and styles from this origin only, connections to it and its WebSocket), and the
 * page keeps no API key: it trades the key for a short-lived token (POST /v1/tokens) and forgets the key. */
#ifndef SB_WWW_H
#define SB_WWW_H

#include "adapters/net/http_server.h"

#include <stdbool.h>

/* Reads the files (from dir, e.g. "www"). Call once before the shards start; missing files are logged. */
void sb_www_init(const char *dir);
/* Handles GET /inbox and its assets. Returns false when the path is not the page's. */
bool sb_www_handle(sb_http_req_t *req);
/* Frees what sb_www_init read. */
void sb_www_cleanup(void);

#endif
