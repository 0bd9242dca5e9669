/* buf.h - a growable, bounded byte buffer that stays NUL-terminated. */
#ifndef LG_BUF_H
#define LG_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "lambdagate/lambdagate.h"

/* A byte buffer. data is NULL until the first append, then always holds a
 * NUL after the last byte, so text can be used as a C string. Appends fail
 * (return -1, buffer unchanged) past max bytes or when memory runs out. */
struct lg_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    bool borrowed; /* data is the caller's storage (lg_buf_init_local) */
};

/* Prepare an empty buffer that may grow to max bytes (0 = SIZE_MAX / 2). */
void lg_buf_init(struct lg_buf *b, size_t max);
/* The same, starting in the caller's storage (size bytes, at least 1, that
 * outlive b's use): texts that fit never allocate; a longer one moves to
 * the heap. lg_buf_free is still needed; lg_buf_steal returns a copy. */
void lg_buf_init_local(struct lg_buf *b, char *storage, size_t size, size_t max);
/* Make room for extra more bytes. */
int lg_buf_reserve(struct lg_buf *b, size_t extra) LG_WUR;
int lg_buf_append_slow(struct lg_buf *b, const void *p, size_t n) LG_WUR;

/* Append n bytes. The common case (room already there) is inline: builders
 * of events and signatures append a few bytes at a time. */
LG_WUR static inline int lg_buf_append(struct lg_buf *b, const void *p, size_t n)
{
    /* cap - len >= 1 whenever data is set (the NUL); cap is 0 without data */
    if (n < b->cap - b->len && n <= b->max - b->len) {
        if (n)
            memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return lg_buf_append_slow(b, p, n);
}

LG_WUR static inline int lg_buf_putc(struct lg_buf *b, char c)
{
    return lg_buf_append(b, &c, 1);
}

LG_WUR static inline int lg_buf_puts(struct lg_buf *b, const char *s)
{
    return lg_buf_append(b, s, strlen(s));
}
int lg_buf_printf(struct lg_buf *b, const char *fmt, ...) LG_PRINTF(2, 3) LG_WUR;
int lg_buf_vprintf(struct lg_buf *b, const char *fmt, va_list ap) LG_PRINTF(2, 0) LG_WUR;
/* The contents as a C string ("" when empty); borrowed, valid until the next
 * change to b. */
const char *lg_buf_cstr(const struct lg_buf *b);
/* Take the contents: the caller frees the result with free(); b is left
 * empty. Returns NULL (and *len 0) when b never held memory; a buffer that
 * was emptied (lg_buf_reset) gives an allocated "". */
char *lg_buf_steal(struct lg_buf *b, size_t *len);
/* Forget the contents, keep the memory. */
void lg_buf_reset(struct lg_buf *b);
/* Release the memory; b may be reused after lg_buf_init. */
void lg_buf_free(struct lg_buf *b);

#endif
