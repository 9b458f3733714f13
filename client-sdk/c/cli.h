/* Shared between the files of tidewire-cli (not part of the SDK). */
#ifndef TW_CLI_H
#define TW_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

/* Exit codes of every subcommand. */
enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2 };

/* Option parsing: argv[*i] is "--name" or "--name=value"; on a match returns true and sets
 * *val (taking argv[*i + 1] and advancing *i when there is no '='). A missing value prints
 * a usage error and sets *val to NULL. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val);
/* Strict number parsing (whole string, in range). */
bool cli_u64(const char *s, uint64_t *out);
bool cli_double(const char *s, double *out);

/* Prints "tidewire-cli: <fmt>" and the usage hint to stderr; returns CLI_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the full usage text to f. */
void cli_usage(FILE *f);

/* The default server URL: $TIDEWIRE_URL or ws://127.0.0.1:8080/ws. */
const char *cli_default_url(void);
/* The default token: $TIDEWIRE_TOKEN or NULL. */
const char *cli_default_token(void);

/* Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit. */
uint64_t cli_raise_nofile(void);

/* Raises RLIMIT_NOFILE as cli_raise_nofile() and returns 0 when it allows nconns
 * connections (plus a margin for the loop's own files); else says so on stderr and
 * returns -1. */
int cli_nofile_allows(uint64_t nconns);

/* Runs loop until nothing is left, closes it and checks (debug assert) that it closed
 * cleanly: every handle closed, every request done. Returns uv_loop_close's result. */
int cli_loop_finish(uv_loop_t *loop);

/* `tidewire-cli bench ...` (argv[0] == "bench"). Returns an exit code. */
int cli_bench(int argc, char **argv);

#endif
