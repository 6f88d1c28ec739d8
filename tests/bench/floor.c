/*
 * floor.c - a deliberately minimal SMTP responder, the "floor" that
 * tests/bench/compare.py measures luasmtpd against.  Not a server: it
 * does no parsing beyond the first 4 bytes of a line, keeps nothing of
 * the envelope or the body, and answers with fixed replies.
 *
 *   220 greeting; 250 to EHLO/HELO/MAIL/RCPT/RSET/NOOP; 354 to DATA and
 *   250 after "\r\n.\r\n" (found with memmem over the buffer, a marker
 *   split across reads is handled by keeping the last 4 bytes); 221 to
 *   QUIT, then close; 220 to STARTTLS (when CERT and KEY are given) and
 *   a TLS handshake; 500 to anything else.
 *
 * TLS as luasmtpd's contexts are, so that the figures compare like with
 * like: the same certificate and key (compare.py's ECDSA P-256 pair),
 * OpenSSL's default groups (X25519 first), TLS 1.2 and up, stateless
 * session tickets issued (one per TLS 1.3 handshake, new ones after a
 * TLS 1.3 resumption) and accepted, OpenSSL's server session cache.
 * It differs where a server must: its ticket keys are OpenSSL's own
 * (luasmtpd's come from tls/tls_tickets.c), and it keeps its buffers
 * (luasmtpd releases them while idle: SSL_MODE_RELEASE_BUFFERS).
 *
 * One thread, epoll (level-triggered), non-blocking sockets, one fixed
 * 64 KiB buffer per connection (luasmtpd reads message bodies 64 KiB at a
 * time too; untouched pages of it cost no RSS).  The replies to one read are written
 * with one call; replies that do not fit in the socket buffer close the
 * connection (a lock-step client never gets there).
 *
 * usage: bench_floor PORT [CERT KEY]      (listens on 127.0.0.1)
 * build: cc -O2 -o build/bench_floor tests/bench/floor.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUFSZ 65536
#define MARK "\r\n.\r\n"
#define MARKLEN 5

enum { CMD, BODY, HANDSHAKE };

struct conn {
  int fd;
  int state;
  size_t len;          /* bytes in buf */
  SSL *ssl;
  char buf[BUFSZ];
};

static SSL_CTX *ctx;
static struct conn **conns;
static int nconns;
static int ep;

static const char GREETING[] = "220 floor ESMTP\r\n";
static const char EHLO[] = "250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
static const char EHLO_TLS[] = "250-floor\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n";
static const char OK[] = "250 2.0.0 OK\r\n";
static const char GO[] = "354 go ahead\r\n";
static const char BYE[] = "221 2.0.0 bye\r\n";
static const char TLSGO[] = "220 2.0.0 ready\r\n";
static const char WHAT[] = "500 5.5.1 what\r\n";

/* Replies to one read are gathered here and written with one call. */
static char out[BUFSZ];
static size_t outlen;

static void drop(struct conn *c) {
  outlen = 0;
  if (c->ssl) {
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  close(c->fd);
  conns[c->fd] = NULL;
  free(c);
}

static int flush(struct conn *c);

/* Queues a reply; returns 0, or -1 when the connection has to go. */
static int put(struct conn *c, const char *s, size_t n) {
  if (outlen + n > sizeof out && flush(c)) return -1;
  memcpy(out + outlen, s, n);
  outlen += n;
  return 0;
}

/* Writes the queued replies; returns 0, or -1 when the connection has to go. */
static int flush(struct conn *c) {
  const char *s = out;
  size_t n = outlen;
  outlen = 0;
  if (n == 0) return 0;
  if (c->ssl) {
    int r = SSL_write(c->ssl, s, (int)n);
    return r == (int)n ? 0 : -1;
  }
  while (n > 0) {
    ssize_t r = write(c->fd, s, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Reads into buf+len; returns bytes read, 0 for "try later", -1 for EOF/error. */
static ssize_t get(struct conn *c) {
  size_t room = BUFSZ - c->len;
  if (c->ssl) {
    int r = SSL_read(c->ssl, c->buf + c->len, (int)room);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
  }
  for (;;) {
    ssize_t r = read(c->fd, c->buf + c->len, room);
    if (r > 0) return r;
    if (r == 0) return -1;
    if (errno == EINTR) continue;
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
  }
}

/* Consumes what is in buf. Returns 0, or -1 when the connection has to go. */
static int process(struct conn *c) {
  size_t off = 0;
  for (;;) {
    if (c->state == BODY) {
      /* buf[0..4) may hold the tail of the previous read */
      char *m = memmem(c->buf + off, c->len - off, MARK, MARKLEN);
      if (!m) {
        size_t keep = c->len - off < MARKLEN - 1 ? c->len - off : MARKLEN - 1;
        memmove(c->buf, c->buf + c->len - keep, keep);
        c->len = keep;
        return flush(c);
      }
      off = (size_t)(m - c->buf) + MARKLEN;
      c->state = CMD;
      if (put(c, OK, sizeof OK - 1)) return -1;
      continue;
    }
    char *nl = memchr(c->buf + off, '\n', c->len - off);
    if (!nl) {
      if (off == 0 && c->len == BUFSZ) c->len = 0; /* overlong line: discard */
      else {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
      }
      return flush(c);
    }
    char *line = c->buf + off;
    size_t n = (size_t)(nl - line) + 1;
    off += n;
    unsigned v = 0;
    if (n >= 5)
      for (int i = 0; i < 4; i++) v = v << 8 | (unsigned char)(line[i] & ~0x20);
#define K(a, b, c_, d) ((unsigned)(a) << 24 | (unsigned)(b) << 16 | (unsigned)(c_) << 8 | (unsigned)(d))
    switch (v) {
    case K('E', 'H', 'L', 'O'):
    case K('H', 'E', 'L', 'O'):
      if (ctx && !c->ssl) {
        if (put(c, EHLO_TLS, sizeof EHLO_TLS - 1)) return -1;
      } else if (put(c, EHLO, sizeof EHLO - 1)) return -1;
      break;
    case K('M', 'A', 'I', 'L'):
    case K('R', 'C', 'P', 'T'):
    case K('R', 'S', 'E', 'T'):
    case K('N', 'O', 'O', 'P'):
      if (put(c, OK, sizeof OK - 1)) return -1;
      break;
    case K('D', 'A', 'T', 'A'):
      if (put(c, GO, sizeof GO - 1)) return -1;
      /* the body starts after a CRLF: a bare ".\r\n" ends an empty body */
      memmove(c->buf + 2, c->buf + off, c->len - off);
      c->len = c->len - off + 2;
      c->buf[0] = '\r';
      c->buf[1] = '\n';
      off = 0;
      c->state = BODY;
      break;
    case K('Q', 'U', 'I', 'T'):
      if (!put(c, BYE, sizeof BYE - 1)) flush(c);
      return -1;
    case K('S', 'T', 'A', 'R'):
      if (ctx && !c->ssl) {
        if (put(c, TLSGO, sizeof TLSGO - 1) || flush(c)) return -1;
        c->ssl = SSL_new(ctx);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) return -1;
        SSL_set_accept_state(c->ssl);
        c->state = HANDSHAKE;
        c->len = 0; /* anything pipelined after STARTTLS is dropped */
        return 0;
      }
      /* fall through */
    default:
      if (put(c, WHAT, sizeof WHAT - 1)) return -1;
    }
  }
}

static void on_readable(struct conn *c) {
  for (;;) {
    if (c->state == HANDSHAKE) {
      int r = SSL_do_handshake(c->ssl);
      if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        ERR_clear_error();
        drop(c);
        return;
      }
      c->state = CMD;
    }
    ssize_t r = get(c);
    if (r == 0) return;
    if (r < 0 || (c->len += (size_t)r, process(c))) {
      drop(c);
      return;
    }
  }
}

static void on_accept(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (fd >= nconns) {
      int n = nconns;
      while (fd >= n) n *= 2;
      struct conn **p = realloc(conns, (size_t)n * sizeof *p);
      if (!p) { close(fd); continue; }
      memset(p + nconns, 0, (size_t)(n - nconns) * sizeof *p);
      conns = p;
      nconns = n;
    }
    struct conn *c = malloc(sizeof *c);
    if (!c) { close(fd); continue; }
    c->fd = fd;
    c->state = CMD;
    c->len = 0;
    c->ssl = NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conns[fd] = c;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) || put(c, GREETING, sizeof GREETING - 1) || flush(c))
      drop(c);
  }
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 4) {
    fprintf(stderr, "usage: %s PORT [CERT KEY]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (argc == 4) {
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      ERR_print_errors_fp(stderr);
      return 1;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* the ticket behaviour of luasmtpd's contexts: stateless tickets
     * (here under OpenSSL's own keys), one per TLS 1.3 handshake */
    SSL_CTX_set_num_tickets(ctx, 1);
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1])) };
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4096)) {
    perror("listen");
    return 1;
  }
  nconns = 1024;
  conns = calloc((size_t)nconns, sizeof *conns);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
  if (!conns || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev)) {
    perror("epoll");
    return 1;
  }
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) on_accept(lfd);
      else if (fd < nconns && conns[fd]) on_readable(conns[fd]);
    }
  }
}
