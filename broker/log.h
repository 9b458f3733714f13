/*
 * log.h — the broker's log lines.
 *
 * One line per event, to stderr, as text or as JSON lines. Every line carries a stable
 * message id (a short kebab-case word such as "listen" or "store-full") that operators can
 * alert on. The level is checked before anything is formatted. Never log a token, a key or
 * an event's payload: log their sizes or ids instead.
 *
 * Loop thread and any other thread: each line is written with one write(2).
 */
#ifndef TW_LOG_H
#define TW_LOG_H

typedef enum tw_log_level {
    TW_LOG_DEBUG = 0,
    TW_LOG_INFO,
    TW_LOG_WARN,
    TW_LOG_ERROR,
} tw_log_level;

extern tw_log_level tw_log_min_level;

/* Parses "debug" | "info" | "warn" | "error"; returns 0 or -1. */
int tw_log_level_parse(const char *s, tw_log_level *out);

/* Sets the minimum level and the format (json: 1 for JSON lines, 0 for text). */
void tw_log_configure(tw_log_level min, int json);

void tw_log_write(tw_log_level level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define tw_log(level, id, ...)                                                                     \
    do {                                                                                           \
        if ((level) >= tw_log_min_level) tw_log_write((level), (id), __VA_ARGS__);                 \
    } while (0)

#define tw_debug(id, ...) tw_log(TW_LOG_DEBUG, id, __VA_ARGS__)
#define tw_info(id, ...) tw_log(TW_LOG_INFO, id, __VA_ARGS__)
#define tw_warn(id, ...) tw_log(TW_LOG_WARN, id, __VA_ARGS__)
#define tw_error(id, ...) tw_log(TW_LOG_ERROR, id, __VA_ARGS__)

#endif /* TW_LOG_H */
