/*
 * admin.h — the admin dashboard: a few static files (broker/admin/: index.html,
 * dashboard.js, dashboard.css) built into the binary and served at /admin.
 *
 * The files are embedded at build time by broker/admin/embed.cmake, which writes
 * admin_assets.c (the table below) into the build directory: no file is read at run time.
 * The pages hold no data: everything they show comes from /stats, which the page fetches
 * with the admin key (`Authorization: Bearer KEY`) when the node has one (--admin-key).
 *
 * Loop thread only.
 */
#ifndef TW_ADMIN_H
#define TW_ADMIN_H

#include <stddef.h>

#include "server.h"

typedef struct tw_admin_asset {
    const char *name;          /* file name under /admin/, e.g. "dashboard.js" */
    const char *type;          /* Content-Type */
    const unsigned char *data; /* the file's bytes (static) */
    size_t len;
} tw_admin_asset;

/* The embedded files (generated: admin_assets.c). */
extern const tw_admin_asset tw_admin_assets[];
extern const size_t tw_admin_nassets;

/* The asset a request path names: "/admin", "/admin/" and "/admin/index.html" are the page,
 * "/admin/NAME" a file. NULL when the path is not the dashboard's or names no file. */
const tw_admin_asset *tw_admin_find(const char *path);

/* True when path is /admin or under /admin/. */
int tw_admin_path(const char *path);

/* Answers a request whose path tw_admin_path() accepted: the file (GET/HEAD), 404 or 405.
 * Responds at once. */
void tw_admin_handle(tw_conn *c, const tw_http_request *req);

#endif /* TW_ADMIN_H */
