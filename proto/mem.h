/* Allocation that cannot fail: out of memory aborts the process (as Redis's zmalloc does). A gateway that cannot
 * allocate a few bytes cannot keep any promise it made, and every caller checking NULL is code nobody tests.
 * Peer-controlled sizes must be bounded before they reach these functions. */
#ifndef SB_MEM_H
#define SB_MEM_H

#include <stddef.h>

void *sb_malloc(size_t n);
void *sb_calloc(size_t count, size_t size);
void *sb_realloc(void *p, size_t n);
char *sb_strdup(const char *s);
char *sb_strndup(const char *s, size_t n);

/* Overwrites a secret string (a token, a key) with zeros in a way the compiler cannot drop, then frees it. NULL:
 * nothing. */
void sb_free_secret(char *s);

/* free() and set the pointer to NULL. */
#define sb_free(p)      \
    do {                \
        free(p);        \
        (p) = NULL;     \
    } while (0)

#include <stdlib.h>

#endif
