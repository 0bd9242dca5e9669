/* log.h - leveled diagnostics on stderr and the JSON access log. */
#ifndef LG_LOG_H
#define LG_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "lambdagate/lambdagate.h"

enum lg_log_level {
    LG_LOG_DEBUG = 0,
    LG_LOG_INFO = 1,
    LG_LOG_WARN = 2,
    LG_LOG_ERROR = 3,
};

/* Messages below level are dropped. Default LG_LOG_INFO. */
void lg_log_set_level(enum lg_log_level level);
enum lg_log_level lg_log_get_level(void);
bool lg_log_enabled(enum lg_log_level level);

/* Write one line "LEVEL message key=value ..." to stderr with a single
 * write(2). fmt holds the message and its key=value pairs; control bytes
 * from formatted values are replaced so that one call is one line. */
void lg_log(enum lg_log_level level, const char *fmt, ...) LG_PRINTF(2, 3);
/* The same, with " request_id=ID" appended when request_id is not NULL. */
void lg_log_req(enum lg_log_level level, const char *request_id, const char *fmt, ...)
    LG_PRINTF(3, 4);

/* Make s fit between double quotes in a log line (key="value"): double
 * quotes, backslashes and control bytes become ', so that a value from
 * outside (a peer's error text, a token's kid) cannot close its field and
 * add fields of its own. In place. */
void lg_log_clean(char *s);
/* The same for a copy of s in out (size bytes, truncated); returns out. */
const char *lg_log_cleaned(char *out, size_t size, const char *s);

/* Open the access log: "-" = stdout, "off" = none, else a file opened for
 * append (created 0640). Replaces any previous one. -1 with err set when the
 * file cannot be opened. Thread-safe against lg_log_access_write(). */
int lg_log_access_open(const char *target, char *err, size_t errlen) LG_WUR;
/* Reopen the current access log file (after rotation, on SIGUSR1). */
int lg_log_access_reopen(char *err, size_t errlen) LG_WUR;
/* True when an access log is open (so callers can skip building lines). */
bool lg_log_access_enabled(void);
/* Append one line (a newline is added) with one write(2). */
void lg_log_access_write(const char *line, size_t len);
/* Close the access log. */
void lg_log_access_close(void);

#endif
