/*
 * The class of a byte, for the loops that check or copy text a byte at a time (header names of
 * every attempt, every access-log line): one table, a bit per class.
 */
#ifndef TAILCUT_BASE_BYTES_H
#define TAILCUT_BASE_BYTES_H

/* RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~ */
#define TC__BYTE_TCHAR 1u
/* printable ASCII but '"' and '\\': what the text access log writes as it is */
#define TC__BYTE_PLAIN 2u

/* TC__BYTE_* bits of every byte value. */
extern const unsigned char tc__byte_class[256];

#endif /* TAILCUT_BASE_BYTES_H */
