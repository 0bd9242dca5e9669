/* buf.c - a growable, bounded byte buffer that stays NUL-terminated. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lambdagate/buf.h"

#define BUF_DEFAULT_MAX (SIZE_MAX / 2)

void lg_buf_init(struct lg_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : BUF_DEFAULT_MAX;
    b->borrowed = false;
}

void lg_buf_init_local(struct lg_buf *b, char *storage, size_t size, size_t max)
{
    lg_buf_init(b, max);
    b->data = storage;
    b->cap = size;
    b->borrowed = true;
    storage[0] = '\0';
}

int lg_buf_reserve(struct lg_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return -1;
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap)
        return 0;
    /* The first allocation is big enough for the usual small texts (a
     * signature, a header line, a key), so that they never reallocate. */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p;
    if (b->borrowed) {
        if ((p = malloc(cap)) == NULL)
            return -1;
        memcpy(p, b->data, b->len + 1);
        b->borrowed = false;
    } else if ((p = realloc(b->data, cap)) == NULL) {
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int lg_buf_append_slow(struct lg_buf *b, const void *p, size_t n)
{
    if (lg_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int lg_buf_vprintf(struct lg_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, copy);
    va_end(copy);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(small))
        return lg_buf_append(b, small, (size_t)n);
    if (lg_buf_reserve(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int lg_buf_printf(struct lg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = lg_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

const char *lg_buf_cstr(const struct lg_buf *b)
{
    return b->data ? b->data : "";
}

char *lg_buf_steal(struct lg_buf *b, size_t *len)
{
    char *p = b->data;
    if (b->borrowed) {
        p = malloc(b->len + 1);
        if (p != NULL)
            memcpy(p, b->data, b->len + 1);
        b->borrowed = false;
    }
    if (len)
        *len = p ? b->len : 0;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

void lg_buf_reset(struct lg_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void lg_buf_free(struct lg_buf *b)
{
    if (!b->borrowed)
        free(b->data);
    b->borrowed = false;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
