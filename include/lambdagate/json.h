/* json.h - bounded parsing of untrusted JSON; a fast JSON writer. */
#ifndef LG_JSON_H
#define LG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "lambdagate/buf.h"
#include "lambdagate/lambdagate.h"

/* Parse JSON text from outside. Before yajl sees it the text is checked for
 * length (<= max_len), NUL bytes and nesting depth (<= max_depth), since
 * a recursive parser must not recurse without limit and C strings stop at a
 * NUL. Comments are not allowed. The tree has yajl's node layout (use
 * yajl's macros) but is built by our own parser in one arena. Returns the tree (caller frees with
 * lg_json_free()) or NULL with a reason in err. */
yajl_val lg_json_parse(const char *text, size_t len, size_t max_len, size_t max_depth, char *err,
                       size_t errlen);
/* Free a tree from lg_json_parse() (only its root; never with
 * yajl_tree_free: the tree lives in one arena); accepts NULL. */
void lg_json_free(yajl_val v);

/* Member key of an object, or NULL when v is not an object or has no such
 * key. Keys are compared exactly. Borrowed from the tree. */
yajl_val lg_json_get(yajl_val obj, const char *key);
/* The string value of member key, or NULL when absent or not a string. */
const char *lg_json_get_string(yajl_val obj, const char *key);
/* True with *out set when v is a JSON number that is an exact integer
 * within the range of int64_t (no fraction, no exponent overflow). */
bool lg_json_integer(yajl_val v, int64_t *out) LG_WUR;

/* Files read with yajl's callback parser (the config, the API keys file)
 * want a line number in every message, and yajl gives no positions: feed
 * text to h one line at a time, incrementing *line after each newline, so
 * that a callback belongs to *line (a number completes at the byte after
 * it, at the latest the newline fed with its line; JSON strings cannot
 * span lines; comments can, and yield no callbacks). At the end *line is
 * the last line with something on it (where end-of-file errors belong)
 * before yajl_complete_parse runs. Returns yajl's status; on an error
 * *line is where it happened. */
yajl_status lg_json_parse_lines(yajl_handle h, const char *text, size_t len, int *line);
/* The text of yajl's error message without its "lexical error: " /
 * "parse error: " prefix and trailing newline (yajl never echoes input in
 * it), into out. */
void lg_json_yajl_error(yajl_handle h, char *out, size_t outlen);

/* A JSON writer that appends compact JSON to a buffer: separators are
 * placed from the writer's state, strings are escaped and must be strictly
 * valid UTF-8 (NUL is written as \u0000), and a misuse (a non-string key,
 * a close that does not match, nesting past LG_JSON_WRITER_MAX_DEPTH) fails.
 * Every call returns 0 or -1; after a failure all calls fail. On failure
 * the buffer holds a partial document: the caller cuts it back. */
#define LG_JSON_WRITER_MAX_DEPTH 63
struct lg_json_writer {
    struct lg_buf *out;
    int depth;
    uint64_t seen;     /* bit per depth: an item was written there */
    uint64_t in_map;   /* bit per depth: the container is an object */
    bool expect_value; /* in an object: a key was written */
    bool value_written;
    bool failed;
    bool no_room; /* the failure was the buffer refusing to grow */
};
void lg_json_writer_init(struct lg_json_writer *w, struct lg_buf *out);
int lg_json_gen_map_open(struct lg_json_writer *w) LG_WUR;
int lg_json_gen_map_close(struct lg_json_writer *w) LG_WUR;
int lg_json_gen_array_open(struct lg_json_writer *w) LG_WUR;
int lg_json_gen_array_close(struct lg_json_writer *w) LG_WUR;
int lg_json_gen_cstr(struct lg_json_writer *w, const char *s) LG_WUR;
int lg_json_gen_str(struct lg_json_writer *w, const char *s, size_t n) LG_WUR;
int lg_json_gen_int(struct lg_json_writer *w, int64_t v) LG_WUR;
int lg_json_gen_bool(struct lg_json_writer *w, bool v) LG_WUR;
int lg_json_gen_null(struct lg_json_writer *w) LG_WUR;
/* A whole JSON value written as it is (separators placed as for any
 * value): text must be a complete, valid value that a writer of this
 * module produced, never outside input. */
int lg_json_gen_value_raw(struct lg_json_writer *w, const char *text, size_t n) LG_WUR;
/* A string that needs no escaping or checking (the caller's own literal:
 * printable ASCII without '"' or '\\'), written as it is. */
int lg_json_gen_plain(struct lg_json_writer *w, const char *s, size_t n) LG_WUR;
/* key (plain, as for lg_json_gen_plain) then string value (value NULL
 * writes null). */
int lg_json_gen_kv(struct lg_json_writer *w, const char *key, const char *value) LG_WUR;

/* Append s[0..n) to out as a quoted JSON string, escaping quotes,
 * backslashes and control bytes; bytes that are not well-formed UTF-8 become
 * U+FFFD. For log lines built from client input. */
int lg_json_append_string(struct lg_buf *out, const char *s, size_t n) LG_WUR;

#endif
