/* alloc: allocation that never returns NULL.
 * Out of memory is not a recoverable condition for davit (as in Redis): these
 * print a message and abort, so callers never check for NULL. */
#ifndef DV_CORE_ALLOC_H
#define DV_CORE_ALLOC_H

#include <stddef.h>

void *dv_xmalloc(size_t size);
void *dv_xcalloc(size_t count, size_t size);
void *dv_xrealloc(void *ptr, size_t size);
/* Copies of a string (the caller frees them). */
char *dv_xstrdup(const char *s);
char *dv_xstrndup(const char *s, size_t len);
/* Formats into a new string (the caller frees it). */
char *dv_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Frees *pp and sets it to NULL. */
#define dv_free(pp) do { free(*(pp)); *(pp) = NULL; } while (0)

#endif
