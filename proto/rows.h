/* A set of rows as a database hands them back, for the listings that are shown as they come: the admin console's
 * tables and the admin API's lists, whose columns are their output's names. A pure value — column names, which
 * columns hold integers, and every cell as text — so that a front door can render a listing without ever seeing the
 * database's own result type. Whoever fills one (adapters/store) owns its storage and lends it for a call.
 *
 * Header only: there is nothing to do with one but read it. */
#ifndef SB_ROWS_H
#define SB_ROWS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sb_rows {
    size_t nrows, ncols;
    const char *const *names; /* ncols column names */
    const bool *integer;      /* ncols flags: the column is of an integer type (its cells are decimal numbers) */
    const char *const *cells; /* nrows * ncols, row after row; NULL is SQL NULL */
} sb_rows_t;

/* The cell of row r, column c (NULL: SQL NULL). */
static inline const char *sb_rows_cell(const sb_rows_t *rows, size_t r, size_t c)
{
    return rows->cells[r * rows->ncols + c];
}

#endif
