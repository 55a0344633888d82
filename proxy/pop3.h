/* pop3.h - the POP3 codec: command parser, line finder and response framer.
 *
 * No I/O and no libuv: the session feeds bytes in and acts on what comes
 * out. The shape of a response (one line, multi-line, SASL exchange) is
 * decided by the command that asked for it (RFC 1939, 2449, 5034, 6856),
 * never by guessing from the response bytes.
 */
#ifndef PX_POP3_H
#define PX_POP3_H

#include <stddef.h>
#include <sys/types.h>

#include "dot.h"

/* RFC 2449 section 4: a command is at most 255 octets including CRLF. */
#define PX_CMD_MAX 255
/* SASL continuation lines from the client carry base64 tokens (GSSAPI
 * tickets are kilobytes); Dovecot allows 8192. */
#define PX_SASL_MAX 8192
/* RFC 2449 section 4: a status line is at most 512 octets including CRLF;
 * [upstream] max_response_line adds an allowance for real servers. */
#define PX_RESP_MIN 512

enum px_cmd_id {
  PX_CMD_USER = 0,
  PX_CMD_PASS,
  PX_CMD_APOP,
  PX_CMD_AUTH,
  PX_CMD_STAT,
  PX_CMD_LIST,
  PX_CMD_UIDL,
  PX_CMD_RETR,
  PX_CMD_TOP,
  PX_CMD_DELE,
  PX_CMD_NOOP,
  PX_CMD_RSET,
  PX_CMD_QUIT,
  PX_CMD_CAPA,
  PX_CMD_STLS,
  PX_CMD_UTF8,
  PX_CMD_LANG,
  PX_CMD_COUNT
};
extern const char *const px_cmd_names[]; /* "USER", "PASS", ... */

#define PX_CMD_MAX_ARGS 2

struct px_cmd {
  enum px_cmd_id id;
  unsigned nargs;
  const char *arg[PX_CMD_MAX_ARGS]; /* point into the parsed line */
  size_t arglen[PX_CMD_MAX_ARGS];
};

/* Finds a CRLF-terminated line at the start of p[0..n). Returns 1 with
 * *linelen = the length without CRLF when the line, CRLF included, fits in
 * max octets; 0 when no CRLF is there yet and the line may still fit; or
 * PX_ELINE when no line of at most max octets can end here. Only CRLF ends
 * a line: a bare LF or bare CR stays inside it (callers reject those). */
int px_pop3_line(const char *p, size_t n, size_t max, size_t *linelen);

/* Parses one client command line (without its CRLF) into c. The keyword is
 * case-insensitive and ends at SP or at the end; "LISTX" is unknown.
 * Arguments are separated by one SP; a single trailing SP is ignored.
 * USER and PASS take the rest of the line as their one argument (spaces
 * included), since passwords may contain spaces. Every byte must be
 * printable ASCII (0x20-0x7E); bytes >= 0x80 are allowed only when utf8 is
 * set (after RFC 6856 UTF8). Argument shapes:
 *   STAT NOOP RSET QUIT CAPA STLS UTF8: none
 *   LIST UIDL: none or a message number    RETR DELE: a message number
 *   TOP: a message number and a line count    USER PASS: one, non-empty
 *   APOP: name and a 32-digit hex digest (RFC 1939 7)    LANG: none or one
 *   AUTH: none (mechanism list), or a mechanism and an optional initial
 *         response; EXTERNAL and *-PLUS mechanisms are refused (they do not
 *         survive TLS termination).
 * A number is 1 to 10 decimal digits. Returns 0, PX_EBADCHAR (a control
 * byte, DEL, NUL, CR or LF anywhere), PX_EBADCMD (unknown keyword) or
 * PX_EBADARG (known keyword, wrong arguments). */
int px_pop3_parse_cmd(const char *line, size_t len, int utf8, struct px_cmd *c);

/* Writes the canonical line "KEYWORD[ arg[ arg]]\r\n" with the keyword in
 * upper case into out[0..cap). Returns its length, or 0 when cap is too
 * small (cap > PX_CMD_MAX always suffices for a parsed command). */
size_t px_pop3_format_cmd(const struct px_cmd *c, char *out, size_t cap);

/* Checks a client line sent as a SASL continuation answer (RFC 5034): "*"
 * (cancel) or base64 (possibly empty). Returns 0 or PX_EBADARG. */
int px_pop3_sasl_check(const char *line, size_t len);

/* 1 when s[0..n) is a SASL mechanism name (RFC 4422: 1 to 20 of
 * [A-Z0-9-_], any case) that may be relayed: not EXTERNAL, not *-PLUS. */
int px_pop3_sasl_mech_ok(const char *s, size_t n);

enum px_shape {
  PX_SHAPE_SINGLE = 0, /* one status line */
  PX_SHAPE_MULTI,      /* +OK opens a dot-terminated body; -ERR is one line */
  PX_SHAPE_SASL,       /* "+ " continuations, then +OK or -ERR */
  PX_SHAPE_COUNT
};

/* The shape of the response to c: RETR, TOP, CAPA, argument-less LIST,
 * UIDL, LANG and AUTH are multi-line; AUTH with a mechanism is SASL. */
enum px_shape px_pop3_shape(const struct px_cmd *c);

/* ---- response framer ---------------------------------------------------
 *
 * One framer per upstream leg, restarted for every response. It splits
 * the status line (bounded, strict CRLF, no control bytes), then, for a
 * multi-line +OK, either unstuffs the body as a byte stream (RETR, TOP,
 * LIST, UIDL) or hands it over line by line (CAPA), and reports the end.
 */
enum px_fr_ev {
  PX_FR_NONE = 0, /* need more bytes */
  PX_FR_STATUS,   /* o->p/o->n: the status line without CRLF; o->ok */
  PX_FR_CONT,     /* a SASL "+ ..." line (PX_SHAPE_SASL only) */
  PX_FR_BODY,     /* o->p/o->n: unstuffed body bytes (in the caller's out) */
  PX_FR_LINE,     /* line mode: o->p/o->n one unstuffed body line + CRLF */
  PX_FR_END,      /* the response is complete */
  PX_FR_COUNT
};

enum px_fr_st { PX_FRS_STATUS = 0, PX_FRS_BODY, PX_FRS_DONE, PX_FRS_COUNT };

struct px_framer {
  size_t max_line; /* status lines and line-mode body lines, with CRLF */
  enum px_shape shape;
  int lines; /* line mode for the body */
  enum px_fr_st st;
  struct px_dot dot;
  char *lbuf; /* a partial line across feeds; allocated only then */
  size_t llen;
};

struct px_fr_out {
  enum px_fr_ev ev;
  int ok; /* PX_FR_STATUS: 1 for +OK, 0 for -ERR */
  const char *p;
  size_t n;
};

/* Prepares f for the response to a command of the given shape. lines
 * selects line mode for a multi-line body. Frees nothing: call
 * px_framer_reset() first when f was used. */
void px_framer_start(struct px_framer *f, enum px_shape shape, int lines,
                     size_t max_line);

/* Releases the partial-line buffer, if any. f may be started again. */
void px_framer_reset(struct px_framer *f);

/* Consumes bytes of in[0..n) and reports at most one event in *o. Returns
 * the bytes consumed (possibly 0 together with an event), or a negative
 * code: PX_ELINE (a status or line-mode line over max_line), PX_EPROTO (a
 * status line that is not "+OK", "-ERR", or for SASL "+", followed by SP
 * or the end; a control byte other than TAB in a status or line-mode
 * line), UV_ENOMEM.
 * Body bytes are unstuffed into out[0..outcap), outcap >= 2; o->p then
 * points into out. o->p of PX_FR_STATUS, PX_FR_CONT and PX_FR_LINE points
 * into in or into f's buffer, valid until the next call. After PX_FR_END
 * (or a one-line response's PX_FR_STATUS) the framer is in PX_FRS_DONE and
 * consumes nothing more: bytes left over are the caller's business.
 * Call repeatedly until it returns 0 with PX_FR_NONE. */
ssize_t px_framer_feed(struct px_framer *f, const char *in, size_t n, char *out,
                       size_t outcap, struct px_fr_out *o);

/* The relay path: when f is in a byte-mode body (px_framer_in_body), the
 * body can be re-stuffed straight into the caller's output instead of
 * coming out as PX_FR_BODY events: consumes bytes of in[0..n) into
 * out[0..cap) (cap >= 4) with px_dot_relay and returns the bytes consumed.
 * The next px_framer_feed() reports PX_FR_END once the terminator is in. */
size_t px_framer_relay(struct px_framer *f, struct px_dot_enc *e,
                       const char *in, size_t n, char *out, size_t cap,
                       size_t *outn);

static inline int px_framer_in_body(const struct px_framer *f)
{
  return f->st == PX_FRS_BODY && !f->lines && f->dot.st != PX_DOT_DONE;
}

#endif
