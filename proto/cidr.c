/* Networks and X-Forwarded-For; see cidr.h. */
#include "proto/cidr.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* The 16-byte form of an address of text (NUL-free, at most INET6_ADDRSTRLEN bytes); *v4 says which family. */
static bool addr16(sb_str_t t, unsigned char out[16], bool *v4)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (t.len == 0 || t.len >= sizeof buf)
        return false;
    memcpy(buf, t.p, t.len);
    buf[t.len] = '\0';
    if (inet_pton(AF_INET, buf, out + 12) == 1) {
        memcpy(out, mapped_prefix, sizeof mapped_prefix);
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, buf, out) == 1;
}

int sb_cidr_parse(sb_str_t text, sb_cidr_t *out)
{
    sb_str_t t = sb_str_trim(text);
    const char *slash = t.len ? memchr(t.p, '/', t.len) : NULL;
    sb_str_t a = slash ? sb_str(t.p, (size_t)(slash - t.p)) : t;
    bool v4;
    sb_cidr_t c;
    memset(&c, 0, sizeof c);
    if (!addr16(a, c.addr, &v4))
        return SB_EINVAL;
    long long bits = v4 ? 32 : 128;
    if (slash) {
        sb_str_t b = sb_str(slash + 1, t.len - a.len - 1);
        if (b.len == 0 || b.len > 3 || sb_str_to_ll(b, 0, v4 ? 32 : 128, &bits) < 0)
            return SB_EINVAL;
    }
    c.bits = (unsigned)bits + (v4 ? 96 : 0);
    for (unsigned i = c.bits; i < 128; i++) /* host bits must be zero */
        if (c.addr[i / 8] & (0x80u >> (i % 8)))
            return SB_EINVAL;
    *out = c;
    return 0;
}

int sb_cidr_list_parse(sb_str_t text, sb_cidr_t **out, size_t *n)
{
    sb_cidr_t items[SB_CIDR_LIST_MAX];
    size_t count = 0, i = 0;
    while (i < text.len) {
        while (i < text.len && (text.p[i] == ',' || text.p[i] == ' ' || text.p[i] == '\t'))
            i++;
        size_t start = i;
        while (i < text.len && text.p[i] != ',' && text.p[i] != ' ' && text.p[i] != '\t')
            i++;
        if (i == start)
            break;
        if (count == SB_CIDR_LIST_MAX || sb_cidr_parse(sb_str(text.p + start, i - start), &items[count]) < 0)
            return SB_EINVAL;
        count++;
    }
    *out = NULL;
    if (count) {
        *out = sb_malloc(count * sizeof **out);
        memcpy(*out, items, count * sizeof **out);
    }
    *n = count;
    return 0;
}

void sb_cidr_format(const sb_cidr_t *c, sb_buf_t *out)
{
    char text[INET6_ADDRSTRLEN] = "?";
    bool v4 = c->bits >= 96 && memcmp(c->addr, mapped_prefix, sizeof mapped_prefix) == 0;
    if (v4)
        inet_ntop(AF_INET, c->addr + 12, text, sizeof text);
    else
        inet_ntop(AF_INET6, c->addr, text, sizeof text);
    sb_buf_printf(out, "%s/%u", text, v4 ? c->bits - 96 : c->bits);
}

static bool sa16(const struct sockaddr *sa, unsigned char out[16])
{
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memcpy(out, mapped_prefix, sizeof mapped_prefix);
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    return false;
}

static bool match16(const sb_cidr_t *list, size_t n, const unsigned char a[16])
{
    for (size_t k = 0; k < n; k++) {
        const sb_cidr_t *c = &list[k];
        unsigned whole = c->bits / 8, rest = c->bits % 8;
        if (memcmp(a, c->addr, whole) != 0)
            continue;
        if (rest && ((a[whole] ^ c->addr[whole]) & (0xffu << (8 - rest)) & 0xffu))
            continue;
        return true;
    }
    return false;
}

bool sb_cidr_match(const sb_cidr_t *list, size_t n, const struct sockaddr *sa)
{
    unsigned char a[16];
    return n && sa16(sa, a) && match16(list, n, a);
}

int sb_ip_parse(sb_str_t text, struct sockaddr_storage *out)
{
    sb_str_t t = sb_str_trim(text);
    if (t.len >= 2 && t.p[0] == '[') { /* "[v6]" or "[v6]:port" */
        const char *close = memchr(t.p, ']', t.len);
        if (!close)
            return SB_EINVAL;
        t = sb_str(t.p + 1, (size_t)(close - t.p) - 1);
    } else if (t.len && memchr(t.p, '.', t.len)) { /* "a.b.c.d:port" has one ':' ("::ffff:a.b.c.d" more) */
        const char *colon = memchr(t.p, ':', t.len);
        if (colon && !memchr(colon + 1, ':', t.len - (size_t)(colon + 1 - t.p)))
            t.len = (size_t)(colon - t.p);
    }
    unsigned char a[16];
    bool v4;
    if (!addr16(t, a, &v4))
        return SB_EINVAL;
    memset(out, 0, sizeof *out);
    if (v4) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)out;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a + 12, 4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
    }
    return 0;
}

int sb_cidr_forwarded_client(const sb_cidr_t *trusted, size_t n, sb_str_t xff, struct sockaddr_storage *out)
{
    size_t end = xff.len;
    bool found = false;
    struct sockaddr_storage client;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff.p[start - 1] != ',')
            start--;
        sb_str_t item = sb_str_trim(sb_str(xff.p + start, end - start));
        end = start ? start - 1 : 0;
        if (!item.len) {
            if (start == 0)
                break;
            continue;
        }
        struct sockaddr_storage ss;
        if (sb_ip_parse(item, &ss) < 0)
            return SB_EINVAL; /* whatever is left of it cannot be trusted to mean anything */
        client = ss;
        found = true;
        if (!sb_cidr_match(trusted, n, (const struct sockaddr *)&ss))
            break; /* the first untrusted hop from the right: the client */
        if (start == 0)
            break;
    }
    if (!found)
        return SB_EINVAL;
    *out = client;
    return 0;
}
