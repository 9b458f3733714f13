/*
 * api.h — the HTTP endpoints: health and readiness for load balancers, /stats and /metrics
 * for operators, and the back-end API (publish). Loop thread only.
 */
#ifndef TW_API_H
#define TW_API_H

#include <stdint.h>

#include "server.h"

/* Handles one complete HTTP request on a connection in HTTP mode. Responds at once, or,
 * for a publish, after the commit (tw_api_publish_done); c->http_busy stays set until then. */
void tw_api_handle(tw_conn *c, tw_http_request *req);

/* 1 when the request carries the admin key (`Authorization: Bearer KEY`) or none is set
 * (--admin-key empty); counts refusals. For /stats, /metrics and the admin pages. */
int tw_api_admin_authorized(tw_conn *c, const tw_http_request *req);

/* Finishes an HTTP publish: origin/seq on success, or an HTTP error code and message. */
void tw_api_publish_done(tw_conn *c, const char *origin, uint64_t seq, int code, const char *msg);

#endif /* TW_API_H */
