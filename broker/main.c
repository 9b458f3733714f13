/*
 * main.c — the tidewire node: read the settings, configure logging, serve.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "server.h"

extern char **environ;

int main(int argc, char **argv)
{
    tw_config cfg;
    char err[512] = "";
    int rc = tw_config_load(&cfg, argc, argv, environ, err, sizeof err, stdout);
    if (rc != TW_CONFIG_OK) {
        tw_config_free(&cfg);
        if (rc < 0) {
            fprintf(stderr, "tidewire: %s\n", err);
            return 2;
        }
        return 0; /* --help or --version */
    }
    tw_log_level level = TW_LOG_INFO;
    tw_log_level_parse(cfg.log_level, &level); /* validated by the settings table */
    tw_log_configure(level, strcmp(cfg.log_format, "json") == 0);
    if (!*cfg.api_key)
        tw_warn("api-open", "no --api-key: the HTTP API is open to anyone who can reach "
                            "this port (development only)");
    int status = tw_server_run(&cfg);
    tw_config_free(&cfg);
    return status;
}
