/*
 * The combinators' (future_comb.c) door into a future's insides (future.c).
 */
#ifndef TAILCUT_FUTURE_INTERNAL_H
#define TAILCUT_FUTURE_INTERNAL_H

#include "tailcut/future.h"

/* Bytes kept of a rejection message, including the terminating NUL. */
#define TC__FUTURE_MESSAGE_MAX 512

/* Fulfills f with src's value, borrowed: f keeps a reference to src instead of owning the value.
 * Returns what tc_future_fulfill() returns. */
int tc__future_fulfill_borrowed(tc_future *f, tc_future *src);

/* Completes dst the way src completed: same value (borrowed), same error, or cancelled; nothing
 * while src is pending. */
void tc__future_mirror(tc_future *dst, tc_future *src);

/* Marks f as tc_first_success()'s output, won by input index (for tc_first_success_index()). */
void tc__future_mark_first_success(tc_future *f, long index);

#endif /* TAILCUT_FUTURE_INTERNAL_H */
