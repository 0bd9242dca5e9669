/* json.h - bounded parsing of untrusted JSON and yajl_gen helpers. */
#ifndef LG_JSON_H
#define LG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "lambdagate/buf.h"
#include "lambdagate/lambdagate.h"

/* Parse JSON text from outside. Before yajl sees it the text is checked for
 * length (<= max_len), NUL bytes and nesting depth (<= max_depth), since
 * yajl's tree parser recurses without limit and stops at a NUL. Comments are
 * not allowed. Returns the tree (caller frees with lg_json_free()) or NULL
 * with a reason in err. */
yajl_val lg_json_parse(const char *text, size_t len, size_t max_len, size_t max_depth, char *err,
                       size_t errlen);
/* Free a tree from lg_json_parse(); accepts NULL. */
void lg_json_free(yajl_val v);

/* Member key of an object, or NULL when v is not an object or has no such
 * key. Keys are compared exactly. Borrowed from the tree. */
yajl_val lg_json_get(yajl_val obj, const char *key);
/* The string value of member key, or NULL when absent or not a string. */
const char *lg_json_get_string(yajl_val obj, const char *key);
/* True with *out set when v is a JSON number that is an exact integer
 * within the range of int64_t (no fraction, no exponent overflow). */
bool lg_json_integer(yajl_val v, int64_t *out) LG_WUR;

/* A generator for output that will be read by others: no indentation.
 * Write strings with lg_json_gen_str/cstr, which refuse text that is not
 * strictly valid UTF-8 (or holds NUL). Caller frees with yajl_gen_free(). */
yajl_gen lg_json_gen_new(void);
/* Shorthands that return 0 or -1 (yajl_gen_status other than ok). */
int lg_json_gen_cstr(yajl_gen g, const char *s) LG_WUR;
int lg_json_gen_str(yajl_gen g, const char *s, size_t n) LG_WUR;
int lg_json_gen_int(yajl_gen g, int64_t v) LG_WUR;
int lg_json_gen_bool(yajl_gen g, bool v) LG_WUR;
int lg_json_gen_null(yajl_gen g) LG_WUR;
/* key then string value (value NULL writes null). */
int lg_json_gen_kv(yajl_gen g, const char *key, const char *value) LG_WUR;

/* Append s[0..n) to out as a quoted JSON string, escaping quotes,
 * backslashes and control bytes; bytes that are not well-formed UTF-8 become
 * U+FFFD. For log lines built from client input. */
int lg_json_append_string(struct lg_buf *out, const char *s, size_t n) LG_WUR;

#endif
