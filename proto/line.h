/* The admin console's line protocol, without the I/O: framing received bytes into lines, and lines into commands.
 *
 * The console (API.md "Admin console") is read by people on telnet/nc and by scripts, so it is strict about what it
 * accepts and forgiving about how it arrives: a line may come in any number of reads, "\r\n" and "\n" both end it,
 * an overlong line is reported once and skipped so the session can answer "ERR line too long" and go on, and a line
 * holding control bytes or invalid UTF-8 is refused as binary rather than echoed back into someone's terminal.
 * Answers go the other way through sb_line_escape, so that text from outside (a tenant's name) cannot break the
 * framing or reach the terminal as control codes. Nothing here blocks or keeps pointers past a call; only the
 * escape allocates (into the caller's buffer). */
#ifndef SB_LINE_H
#define SB_LINE_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>

#define SB_LINE_MAX 1024 /* longest accepted line, excluding its "\n" or "\r\n" */
#define SB_LINE_MAX_ARGS 16

/* Reassembles lines from a byte stream. Caller's storage. buf exists only while an unfinished line is held (a reader
 * between lines holds no memory); it has one byte more than SB_LINE_MAX so that a line of exactly SB_LINE_MAX bytes
 * still fits with the "\r" of its "\r\n". */
#define SB_LINE_BUF (SB_LINE_MAX + 1)
typedef struct sb_line_reader {
    char *buf;       /* SB_LINE_BUF bytes, or NULL */
    size_t len;      /* bytes of the current, unfinished line held in buf */
    bool discarding; /* the current line is already too long: drop bytes until its "\n" */
} sb_line_reader_t;

/* Called once per line. line borrows either the caller's data or the reader's buffer and is valid only during the
 * call; it never contains the "\n" nor a "\r" just before it. err is 0 for a good line, or SB_E2BIG for a line longer
 * than SB_LINE_MAX, in which case line is empty (len 0). */
typedef void (*sb_line_cb)(void *arg, sb_str_t line, int err);

/* Prepares r for a new stream (empty, not discarding). */
void sb_line_reader_init(sb_line_reader_t *r);
/* Frees what r holds (an unfinished line); r may be initialised again. */
void sb_line_reader_cleanup(sb_line_reader_t *r);

/* Feeds len received bytes (borrowed; data may be NULL when len is 0). Calls cb once per complete line, in order.
 * A line ends at "\n"; one "\r" just before it is removed (any other "\r" stays in the line, where sb_line_parse will
 * refuse it). A line longer than SB_LINE_MAX is reported once, with SB_E2BIG, when its "\n" arrives; its bytes are
 * discarded and never buffered. Bytes after the last "\n" are kept in r for the next feed; a final line without "\n"
 * is therefore never reported (the session is closing anyway). Lines may span any number of feeds, down to one byte
 * each. Returns the number of lines reported. Never fails. cb must not call sb_line_feed on the same reader. */
size_t sb_line_feed(sb_line_reader_t *r, const char *data, size_t len, sb_line_cb cb, void *arg);

typedef struct sb_line_cmd {
    int argc;                        /* 1..SB_LINE_MAX_ARGS after a successful parse, 0 after a failed one */
    sb_str_t argv[SB_LINE_MAX_ARGS]; /* argv[0] is the command name; each word borrows the line */
    bool json;                       /* the line ended in the word "-j": answer one line of JSON */
} sb_line_cmd_t;

/* Splits line (borrowed) into words separated by runs of spaces and tabs; leading and trailing blanks are ignored.
 * A last word "-j" is removed and sets out->json; it does not count against SB_LINE_MAX_ARGS, so a command may have
 * 16 words plus "-j". Only the last word is special: "-j" elsewhere is an ordinary word.
 * Returns 0 and fills *out (argv borrow line), or, with out->argc == 0 and out->json == false:
 *   SB_EPARSE  binary input: a byte below 0x20 other than tab, 0x7f, or invalid UTF-8 (see sb_utf8_valid);
 *              checked first, so a blank line holding a control byte is SB_EPARSE;
 *   SB_EINVAL  no command: the line is empty or blank, or is only "-j" (which is read as the flag with no command,
 *              not as a command named "-j");
 *   SB_E2BIG   more than SB_LINE_MAX_ARGS words (not counting a final "-j"). */
int sb_line_parse(sb_str_t line, sb_line_cmd_t *out);

/* Strict UTF-8 (RFC 3629): true if the len bytes at p (borrowed; may be NULL when len is 0) are well-formed: no
 * overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence at the end, no stray
 * continuation bytes. NUL and other control characters are valid UTF-8; callers that refuse them check separately. */
bool sb_utf8_valid(const char *p, size_t len);

/* Appends text (borrowed; any bytes) to b as the console shows it to a terminal: printable characters and valid
 * UTF-8 as they are, everything that could move the cursor, end a line or start an escape sequence as a visible
 * escape: "\\" for a backslash, "\n", "\r", "\t", "\xNN" for other C0 bytes, DEL and bytes of invalid UTF-8,
 * "\u00NN" for C1 controls (U+0080..U+009F). The result holds no control byte and is valid UTF-8, and it reads
 * back unambiguously. */
void sb_line_escape(sb_buf_t *b, sb_str_t text);

#endif
