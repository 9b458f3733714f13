/*
 * config.h — every setting of the node, from one table.
 *
 * The table (config.c) gives each setting its name, type, default, bounds and help; it
 * drives command-line flags (--name VALUE or --name=VALUE), environment variables
 * (TIDEWIRE_NAME, dashes as underscores), the config file (`name = value` lines), --help
 * and docs/configuration.md. Precedence: flags, then environment, then file, then default.
 */
#ifndef TW_CONFIG_H
#define TW_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct tw_config {
    char *node_id;
    char *listen;  /* HOST:PORT */
    char *data;    /* data directory */
    char *durability; /* "local" | "quorum" */
    char *api_key;    /* "" = HTTP API open */
    char *config;     /* the config file read, "" = none */
    char *log_level;
    char *log_format; /* "text" | "json" */

    int64_t threads; /* event loops (--threads) */
    int64_t max_connections;
    int64_t max_message_size;   /* bytes of one WebSocket message or HTTP body */
    int64_t max_header_bytes;   /* bytes of an HTTP request's head */
    int64_t max_subscriptions;  /* per connection */
    int64_t max_last;           /* largest `last` in a subscribe */
    int64_t handshake_timeout_ms;
    int64_t ping_interval_ms;
    int64_t idle_timeout_ms;
    int64_t outbound_high_water; /* bytes queued to a client before it is fed from the log */
    int64_t slow_consumer_timeout_ms;
    int64_t replay_chunk_events;
    int64_t replay_chunk_bytes;
    int64_t store_map_size;
    int64_t store_max_queue_bytes;
    int64_t shutdown_timeout_ms;
    /* -- the log: retention, growth (issue 3) -- */
    int64_t retention_max_age_ms;  /* 0 = events kept whatever their age */
    int64_t retention_max_count;   /* per channel; 0 = no limit */
    int64_t retention_max_bytes;   /* whole log; 0 = no limit */
    char *retention;               /* per-prefix rules, one per line: see server.c */
    int64_t retention_interval_ms; /* time between retention passes */
    int64_t store_map_initial;     /* map size at start; grows up to store_map_size */
    /* -- authentication, permissions, TLS, limits (issue 5) -- */
    char *jwt_key;      /* jwt-key entries, one per line ("" = open node): see auth.h */
    char *jwt_audience; /* "" = aud not checked */
    char *jwt_issuer;   /* "" = iss not checked */
    int64_t jwt_leeway_ms;
    int64_t auth_timeout_ms;   /* time a client has to authenticate when tokens are required */
    char *namespace;           /* namespace entries, one per line: see auth.h */
    char *admin_key;           /* "" = /stats and /metrics open */
    char *allowed_origins;     /* comma list of browser origins; "" = any */
    int64_t max_connections_per_ip;  /* 0 = no limit */
    int64_t new_connections_per_ip;  /* per second; 0 = no limit */
    int64_t max_messages_per_second; /* per connection; 0 = no limit */
    int64_t messages_burst;          /* token bucket depth; 0 = twice the rate */
    char *tls_listen;                /* HOST:PORT of the TLS listener; "" = none */
    char *tls_cert;                  /* PEM certificate chain file */
    char *tls_key;                   /* PEM private key file */
    /* -- admin dashboard (issue 7) -- */
    /* -- the cluster (issue 4) -- */
    char *cluster_listen;
    char *peers;
    int64_t cluster_heartbeat_ms;
    int64_t cluster_suspect_timeout_ms;
    int64_t cluster_dead_timeout_ms;
    char *cluster_tls_cert;
    char *cluster_tls_key;
    char *cluster_tls_ca;
} tw_config;

/* Outcome of tw_config_load besides errors. */
enum { TW_CONFIG_OK = 0, TW_CONFIG_EXIT_HELP = 1, TW_CONFIG_EXIT_VERSION = 2 };

/*
 * Fills *cfg from defaults, then the config file (from --config or TIDEWIRE_CONFIG), then
 * the environment `env` (NULL-terminated "NAME=value" strings, e.g. environ), then argv.
 * Returns TW_CONFIG_OK, TW_CONFIG_EXIT_HELP / _VERSION (after printing to `out`), or -1
 * after writing a one-line reason to errbuf. *cfg is valid (and must be freed) in every case.
 */
int tw_config_load(tw_config *cfg, int argc, char **argv, char **env, char *errbuf, size_t errlen,
                   FILE *out);

/*
 * Applies config-file text (`name = value` lines, as in a --config file) on top of *cfg;
 * `name` labels error messages. Returns 0, or -1 after writing a one-line reason to errbuf.
 * Pure: reads no file (the fuzz driver and tests feed it text).
 */
int tw_config_parse_text(tw_config *cfg, const char *text, size_t len, const char *name,
                         char *errbuf, size_t errlen);

/* Frees the strings a config holds. */
void tw_config_free(tw_config *cfg);

/* Writes the settings table as help text (flag, env, default, description). */
void tw_config_print_help(FILE *out);

/* Writes the settings table as a Markdown table (docs/configuration.md is generated from it). */
void tw_config_print_markdown(FILE *out);

/* Parses "1MiB", "64KiB", "512", "2GiB" (also k/m/g, KB/MB/GB as powers of 1024). */
int tw_parse_size(const char *s, int64_t *out);

/* Parses "25s", "500ms", "2m", "1h" or a bare number of seconds into milliseconds. */
int tw_parse_duration_ms(const char *s, int64_t *out);

/* Splits "HOST:PORT" ("[::1]:80" for IPv6) into host (NUL-terminated) and port. */
int tw_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif /* TW_CONFIG_H */
