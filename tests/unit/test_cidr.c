/* Unit tests for proto/cidr: networks parsed and printed, lists, matching IPv4, IPv6 and IPv4-mapped peers, the
 * addresses X-Forwarded-For carries, and which of its entries a trusted proxy's request names as the client
 * (forged entries to the left of the proxy's own are not believed). */
#include "proto/cidr.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct sockaddr_storage ip(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (sb_ip_parse(sb_str_cstr(text), &ss) < 0)
        ss.ss_family = AF_UNSPEC;
    return ss;
}

static const char *text_of(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    if (ss->ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)len);
    if (ss->ss_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)len);
    return "-";
}

static const char *formatted(const char *text)
{
    static char out[64];
    sb_cidr_t c;
    if (sb_cidr_parse(sb_str_cstr(text), &c) < 0)
        return "invalid";
    sb_buf_t b;
    sb_buf_init(&b);
    sb_cidr_format(&c, &b);
    snprintf(out, sizeof out, "%s", sb_buf_cstr(&b));
    sb_buf_cleanup(&b);
    return out;
}

TEST(parse)
{
    is_str(formatted("10.0.0.0/8"), "10.0.0.0/8", "an IPv4 network");
    is_str(formatted(" 127.0.0.1 "), "127.0.0.1/32", "a bare IPv4 address is a /32");
    is_str(formatted("::1"), "::1/128", "a bare IPv6 address is a /128");
    is_str(formatted("2001:db8::/32"), "2001:db8::/32", "an IPv6 network");
    is_str(formatted("0.0.0.0/0"), "0.0.0.0/0", "every IPv4 address");
    is_str(formatted("10.0.0.1/8"), "invalid", "host bits set past the prefix: refused");
    is_str(formatted("10.0.0.0/33"), "invalid", "a prefix too long for IPv4");
    is_str(formatted("::/129"), "invalid", "a prefix too long for IPv6");
    is_str(formatted("10.0.0.0/"), "invalid", "an empty prefix");
    is_str(formatted("10.0.0.0/x"), "invalid", "a prefix that is not a number");
    is_str(formatted("localhost"), "invalid", "a name");
    is_str(formatted(""), "invalid", "nothing");
    is_str(formatted("10.0.0.0/8/8"), "invalid", "two slashes");
}

TEST(lists)
{
    sb_cidr_t *l = NULL;
    size_t n = 99;
    is_int(sb_cidr_list_parse(sb_str_cstr(""), &l, &n), 0, "an empty list");
    ok(l == NULL && n == 0, "holds nothing");
    is_int(sb_cidr_list_parse(sb_str_cstr("127.0.0.1, 10.0.0.0/8 ::1,,192.168.0.0/16"), &l, &n), 0,
           "commas and blanks separate");
    is_int((long long)n, 4, "four networks");
    free(l);
    is_int(sb_cidr_list_parse(sb_str_cstr("127.0.0.1, nope"), &l, &n), SB_EINVAL, "a bad item refuses the list");
    char many[70 * 12] = "";
    for (int i = 0; i < 65; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "10.0.0.%d ", i);
    is_int(sb_cidr_list_parse(sb_str_cstr(many), &l, &n), SB_EINVAL, "more than SB_CIDR_LIST_MAX refused");
}

TEST(match)
{
    sb_cidr_t *l = NULL;
    size_t n = 0;
    sb_cidr_list_parse(sb_str_cstr("127.0.0.1 10.0.0.0/8 172.16.0.0/12 2001:db8::/32"), &l, &n);
    struct sockaddr_storage a;
    a = ip("127.0.0.1");
    ok(sb_cidr_match(l, n, (struct sockaddr *)&a), "127.0.0.1 is in");
    a = ip("127.0.0.2");
    ok(!sb_cidr_match(l, n, (struct sockaddr *)&a), "127.0.0.2 is not");
    a = ip("10.200.3.4");
    ok(sb_cidr_match(l, n, (struct sockaddr *)&a), "10.200.3.4 is in 10/8");
    a = ip("172.31.255.255");
    ok(sb_cidr_match(l, n, (struct sockaddr *)&a), "172.31.255.255 is in 172.16/12");
    a = ip("172.32.0.0");
    ok(!sb_cidr_match(l, n, (struct sockaddr *)&a), "172.32.0.0 is not");
    a = ip("2001:db8:1::5");
    ok(sb_cidr_match(l, n, (struct sockaddr *)&a), "2001:db8:1::5 is in 2001:db8::/32");
    a = ip("2001:db9::1");
    ok(!sb_cidr_match(l, n, (struct sockaddr *)&a), "2001:db9::1 is not");
    a = ip("::ffff:127.0.0.1");
    ok(sb_cidr_match(l, n, (struct sockaddr *)&a), "an IPv4-mapped peer on an IPv6 socket matches as IPv4");
    a = ip("::1");
    ok(!sb_cidr_match(l, n, (struct sockaddr *)&a), "::1 is not 127.0.0.1");
    ok(!sb_cidr_match(NULL, 0, (struct sockaddr *)&a), "an empty list trusts no one");
    free(l);
}

static const char *client(const char *trusted, const char *xff)
{
    static char out[64];
    sb_cidr_t *l = NULL;
    size_t n = 0;
    sb_cidr_list_parse(sb_str_cstr(trusted), &l, &n);
    struct sockaddr_storage ss;
    int rc = sb_cidr_forwarded_client(l, n, sb_str_cstr(xff), &ss);
    free(l);
    if (rc < 0)
        return "none";
    return text_of(&ss, out, sizeof out);
}

TEST(forwarded)
{
    is_str(client("127.0.0.1", "203.0.113.7"), "203.0.113.7", "one entry: the client");
    is_str(client("127.0.0.1", "198.51.100.1, 203.0.113.7"), "203.0.113.7",
           "a forged entry left of the proxy's own is not believed");
    is_str(client("127.0.0.1 10.0.0.0/8", "198.51.100.1, 203.0.113.7, 10.1.1.1"), "203.0.113.7",
           "trusted hops on the right are skipped");
    is_str(client("127.0.0.1 10.0.0.0/8", "10.0.0.5, 10.1.1.1"), "10.0.0.5", "all trusted: the leftmost");
    is_str(client("127.0.0.1", "2001:db8::7"), "2001:db8::7", "an IPv6 client");
    is_str(client("127.0.0.1", "[2001:db8::7]:443"), "2001:db8::7", "in brackets with a port");
    is_str(client("127.0.0.1", "203.0.113.7:5555"), "203.0.113.7", "IPv4 with a port");
    is_str(client("127.0.0.1", ""), "none", "empty: none");
    is_str(client("127.0.0.1", " , "), "none", "only commas: none");
    is_str(client("127.0.0.1", "unknown"), "none", "not an address: none");
    is_str(client("127.0.0.1", "garbage, 203.0.113.7"), "203.0.113.7", "garbage left of the client is not read");
    is_str(client("10.0.0.0/8", "203.0.113.7, garbage"), "none", "garbage where the client should be: none");
}

int main(void)
{
    RUN(parse);
    RUN(lists);
    RUN(match);
    RUN(forwarded);
    return tap_done();
}
