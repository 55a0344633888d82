/* log.h - one key=value line per event, to stderr, syslog or a file.
 *
 * Process-wide and safe from any thread: every line goes out in one
 * write(2). Peer text is passed through px_log_sanitize() first; passwords,
 * SASL payloads and message bodies are never logged.
 */
#ifndef PX_LOG_H
#define PX_LOG_H

#include <stddef.h>

#include "conf.h"

/* Opens the destination named by c (log, log_level). Returns 0 or a
 * negative errno code; on error the previous destination stays. */
int px_log_open(const struct px_conf *c);

/* Reopens a log file (SIGUSR1, after rotation). */
int px_log_reopen(void);

void px_log_close(void);

int px_log_enabled(enum px_log_level lvl);

void px_log(enum px_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Copies peer text into out[0..cap) so that it can stand as a log value,
 * bare (user=%s) or quoted (err="%s"): bytes outside 0x21-0x7E and the
 * quote, backslash, '=' and space become \xNN, so peer text can neither end
 * a quoted value early nor split or forge a key=value pair. At most max
 * input bytes are copied; when the input is longer, or its escaped form
 * does not fit in cap, it is cut (never inside an escape) and "..." is
 * appended. max * 4 + 4 bytes of cap always hold the whole result. Always
 * NUL-terminates when cap > 0; returns out. Any thread. */
char *px_log_sanitize(const char *in, size_t n, size_t max, char *out,
                      size_t cap);

/* The same for a value written inside double quotes (err="...",
 * reason="..."): spaces stay, while '"', '\\', '=' and bytes outside
 * 0x20-0x7E become \xNN, so the value cannot end early or fake a key. */
char *px_log_quote(const char *in, size_t n, size_t max, char *out,
                   size_t cap);

#endif
