/* admin.c — see admin.h. */
#include "admin.h"

#include <string.h>

/* The pages load only their own files and talk only to this node (fetch /stats). The page
 * may carry ?key= in its URL: no Referer leaves with it. */
#define ADMIN_HEADERS                                                                              \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'\r\n"                                                                   \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"

int tw_admin_path(const char *path)
{
    return strncmp(path, "/admin", 6) == 0 && (path[6] == '\0' || path[6] == '/');
}

const tw_admin_asset *tw_admin_find(const char *path)
{
    if (!tw_admin_path(path)) return NULL;
    const char *name = path[6] == '/' ? path + 7 : "";
    if (*name == '\0') name = "index.html";
    for (size_t i = 0; i < tw_admin_nassets; i++)
        if (strcmp(tw_admin_assets[i].name, name) == 0) return &tw_admin_assets[i];
    return NULL;
}

void tw_admin_handle(tw_conn *c, const tw_http_request *req)
{
    if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
        static const char body[] = "{\"error\":\"use GET\"}\n";
        tw_conn_http_respond(c, 405, "application/json", body, sizeof body - 1,
                             "Allow: GET, HEAD\r\n");
        return;
    }
    const tw_admin_asset *a = tw_admin_find(req->path);
    if (!a) {
        static const char body[] = "{\"error\":\"not found\"}\n";
        tw_conn_http_respond(c, 404, "application/json", body, sizeof body - 1, NULL);
        return;
    }
    tw_conn_http_respond(c, 200, a->type, a->data, a->len, ADMIN_HEADERS);
}
