/* dot.h - POP3 multi-line byte-stuffing (RFC 1939 section 3), both ways.
 *
 * Pure codecs: no I/O, no allocation, any chunking. Feeding "ab" then "c"
 * produces exactly what feeding "abc" produces.
 */
#ifndef PX_DOT_H
#define PX_DOT_H

#include <stddef.h>
#include <stdint.h>

enum px_dot_st {
  PX_DOT_SOL = 0, /* at the start of a line (after CRLF, or at the start) */
  PX_DOT_TEXT,    /* inside a line */
  PX_DOT_CR,      /* just after a CR inside a line */
  PX_DOT_DOT,     /* a "." seen at the start of a line, held */
  PX_DOT_DOTCR,   /* ".\r" seen at the start of a line, held */
  PX_DOT_DONE,    /* the terminating ".\r\n" has been consumed */
  PX_DOT_COUNT
};
extern const char *const px_dot_state_names[];

struct px_dot {
  enum px_dot_st st;
  uint64_t bytes; /* decoded bytes produced so far */
};

void px_dot_init(struct px_dot *d);

/* Unstuffs up to n bytes of a multi-line body (the bytes after the status
 * line's CRLF) into out, which must hold n bytes. Returns the bytes of in
 * consumed; *outn receives the bytes written to out. A CR held back from
 * the previous call (".\r" at a line start) comes out with this call's
 * bytes, so fewer than n may be consumed although the body goes on: call
 * again with the rest. A line starts only
 * after CRLF: a "." that starts a line is removed when other octets follow
 * it, and ".\r\n" at the start of a line is the terminator; d->st becomes
 * PX_DOT_DONE right after it and the bytes that follow are left unconsumed.
 * The decoded body keeps the CRLF that precedes the terminator ("a\r\n.\r\n"
 * decodes to "a\r\n"); an empty body is ".\r\n". Nothing else changes:
 * bare LF, bare CR and NUL pass through. Feeding a PX_DOT_DONE decoder
 * consumes nothing. */
size_t px_dot_decode(struct px_dot *d, const char *in, size_t n, char *out,
                     size_t *outn);

struct px_dot_enc {
  int sol;               /* the next byte starts a line */
  unsigned char last[2]; /* the last two body bytes, for the terminator */
  uint64_t bytes;        /* body bytes consumed so far */
};

void px_dot_enc_init(struct px_dot_enc *e);

/* Stuffs body bytes: a "." at the start of a line gets another "." in
 * front. A line starts at the beginning of the body and after every LF
 * (also a bare LF, so that lenient clients which end lines at LF cannot be
 * cut short by a lone "."). Consumes as much of in[0..n) as fits in
 * out[0..cap), never splitting the stuffed pair, and returns the bytes
 * consumed; *outn receives the bytes written. cap >= 2 guarantees
 * progress; cap >= 2 * n consumes everything. */
size_t px_dot_encode(struct px_dot_enc *e, const char *in, size_t n, char *out,
                     size_t cap, size_t *outn);

/* Re-stuffs a multi-line body as it streams through: out receives exactly
 * what px_dot_encode(e) would produce from what px_dot_decode(d) produces
 * from in, but in one pass that copies whole lines (the relay path, where
 * no filter needs the unstuffed message). Stops after the terminator (d
 * becomes PX_DOT_DONE; the terminator itself is not copied: finish with
 * px_dot_encode_end) or when out has fewer than 4 bytes left. Returns the
 * bytes of in consumed; *outn receives the bytes written. cap >= 4
 * guarantees progress. */
size_t px_dot_relay(struct px_dot *d, struct px_dot_enc *e, const char *in,
                    size_t n, char *out, size_t cap, size_t *outn);

#define PX_DOT_END_MAX 5
/* Writes the terminator into out (PX_DOT_END_MAX bytes): ".\r\n" when the
 * body is empty or ends in CRLF, else "\r\n.\r\n". Returns its length. */
size_t px_dot_encode_end(const struct px_dot_enc *e, char *out);

#endif
