/* Networks of addresses (CIDR) and the address lists that name them: which peers are trusted proxies, and which
 * client address a trusted proxy's X-Forwarded-For names.
 *
 * A network is written "192.0.2.0/24", "2001:db8::/32", or a bare address (a /32 or /128). IPv4 peers that reach an
 * IPv6 socket as ::ffff:a.b.c.d are matched as the IPv4 address they are. Pure: no I/O, no allocation but the list
 * that sb_cidr_list_parse returns. */
#ifndef SB_CIDR_H
#define SB_CIDR_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>

struct sockaddr;
struct sockaddr_storage;

typedef struct sb_cidr {
    unsigned char addr[16]; /* the network, IPv4 as ::ffff:a.b.c.d; bits past the prefix are zero */
    unsigned bits;          /* prefix length over those 16 bytes (an IPv4 /24 is 96 + 24) */
} sb_cidr_t;

/* Parses one network (blanks around it allowed). Returns 0, or SB_EINVAL for anything else (host bits set past the
 * prefix are refused too: "10.0.0.1/8" is more likely a mistake than meant). */
int sb_cidr_parse(sb_str_t text, sb_cidr_t *out);

/* Parses a list of networks separated by commas and/or blanks. *out (caller frees; NULL for an empty list) and *n
 * are set on success. Returns 0, or SB_EINVAL (nothing allocated) when an item is not a network or the list holds
 * more than SB_CIDR_LIST_MAX. */
#define SB_CIDR_LIST_MAX 64
int sb_cidr_list_parse(sb_str_t text, sb_cidr_t **out, size_t *n);

/* Appends the network as text ("10.0.0.0/8", "::1/128") to out. */
void sb_cidr_format(const sb_cidr_t *c, sb_buf_t *out);

/* Whether sa (AF_INET or AF_INET6; borrowed) is in one of the n networks. */
bool sb_cidr_match(const sb_cidr_t *list, size_t n, const struct sockaddr *sa);

/* Parses one IP address as X-Forwarded-For writes it ("192.0.2.7", "2001:db8::1", blanks around it allowed; also
 * "[2001:db8::1]" and "192.0.2.7:1234", which some proxies write) into *out (port 0). Returns 0 or SB_EINVAL. */
int sb_ip_parse(sb_str_t text, struct sockaddr_storage *out);

/* The client an X-Forwarded-For value (borrowed) names, as seen by a server whose peer is a trusted proxy: the
 * entries are read from the right (the one the nearest proxy added) and the first that is not itself a trusted
 * proxy is the client; when every entry is trusted, the leftmost. Returns 0 with *out set, or SB_EINVAL when the
 * value is empty or an entry that had to be read is not an address (then the caller keeps the peer's address). */
int sb_cidr_forwarded_client(const sb_cidr_t *trusted, size_t n, sb_str_t xff, struct sockaddr_storage *out);

#endif
