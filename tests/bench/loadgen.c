/*
 * loadgen.c - the load generator of `make bench` (tests/bench/compare.py).
 *
 * One thread, epoll, non-blocking sockets, a state machine per
 * connection.  Each connection is lock-step like a real client: it waits
 * for every reply before its next step, except MAIL FROM + RCPT TO + DATA,
 * which go out in one write (pipelined), then the body after the 354.
 * Replies are multi-line aware ("250-" continues).  Every reply code is
 * checked; an unexpected code, EOF, a connect error or a step timeout is
 * an error: the first few are printed on stderr with the connection's
 * step and the reply line, and the exit status is 1.
 *
 * usage: bench_load -p PORT [-s SCENARIO] [-n UNITS] [-c CONCURRENCY]
 *                   [--per K] [--size BYTES] [--uniform] [--tls] [--tls-msg] [--resume]
 *                   [--hup PID]
 *                   [--timeout SECONDS] [--step-timeout SECONDS]
 *                   [--hold-max SECONDS] [--no-spread] [--host ADDR]
 *
 *   msgs   UNITS messages, K per connection (default K=100), 1 KiB bodies
 *   conns  UNITS connections, one message each, then QUIT
 *   bulk   UNITS messages of --size bytes (give e.g. 10485760), K per
 *          connection (default K=10)
 *   tls    UNITS connections: EHLO, STARTTLS, TLS 1.3 handshake, EHLO,
 *          [one message with --tls-msg], QUIT
 *   idle   open UNITS connections, EHLO each (with --tls also STARTTLS,
 *          handshake, EHLO), print "ready HELD ERRORS" on stdout and hold
 *          them until stdin reaches EOF, SIGTERM/SIGINT or --hold-max
 *          (default 600 s); then close them all with RST and exit.
 *
 *   -c   connections in flight at once (default 1; for idle: connections
 *        being set up at once, default 100); when one finishes the next
 *        one starts until UNITS are done.
 *   --size      body size in bytes (default 1024): "Subject: bench" header,
 *               76-character base64-like lines (pseudo-random, fixed seed),
 *               "."; --uniform: lines of 76 x's instead
 *   --timeout   bound on the whole run, not counting the idle hold (default 60)
 *   --step-timeout  bound on each step of a connection (default 20)
 *   --no-spread bind nothing; otherwise every socket is bound before connect
 *               to 127.1.B.C (C in 1..254), round-robin from a per-process
 *               starting point, with IP_BIND_ADDRESS_NO_PORT and port 0, so
 *               many connections neither exhaust ephemeral ports nor trip
 *               over TIME_WAIT.  The server is at --host (default 127.0.0.1).
 *
 * TLS: TLS 1.3 only, group X25519, no tickets, no session cache, a new SSL
 * per connection (every handshake a full one), SNI "localhost", no
 * certificate verification (the bench certificate is self-signed); a
 * negotiated version other than TLS 1.3 is an error.
 *   --resume  the other client profile, the way Python's smtplib (OpenSSL
 *             defaults) and Postfix's TLS session cache behave: tickets
 *             accepted, the newest one kept per connection slot (-c slots:
 *             as -c clients, each with its session for the destination)
 *             and offered on the slot's next STARTTLS; OpenSSL's default groups list (X25519 first, its
 *             key share). The JSON gains "resumed": handshakes resumed.
 *   --hup PID sends SIGHUP to PID (the server) when half of the UNITS
 *             connections have started; the JSON gains "after_hup" and
 *             "resumed_after_hup": handshakes of the connections started
 *             after it, and how many of them resumed (with --resume: the
 *             tickets of before the reload still work).  TCP_NODELAY on every
 * socket.  RLIMIT_NOFILE: soft raised to hard at start.
 *
 * Output, at the end, one JSON line on stdout:
 *   {"scenario":"msgs","units":N,"connections":N,"messages":N,"bytes":N,
 *    "held":N,"errors":N,"seconds":S}
 * (bytes = message bytes sent, body and final dot; held = idle only.)
 *
 * build: cc -O2 -Wall -Wextra -Werror -o build/bench_load tests/bench/loadgen.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RBUF 2048
#define MAXEXP 4
#define MAXERRPRINT 5

enum scen { SC_MSGS, SC_CONNS, SC_BULK, SC_TLS, SC_IDLE };
static const char *scen_name[] = {"msgs", "conns", "bulk", "tls", "idle"};

/* phases: what the connection is waiting for */
enum phase { P_FREE, P_CONNECT, P_GREET, P_EHLO, P_STARTTLS, P_HANDSHAKE, P_EHLO2,
             P_ENVELOPE, P_BODY, P_QUIT, P_HELD };
static const char *phase_name[] = {"free", "connect", "greeting", "EHLO", "STARTTLS",
                                   "TLS handshake", "EHLO after STARTTLS",
                                   "MAIL/RCPT/DATA", "body", "QUIT", "held idle"};

struct conn {
  int fd;
  int id;
  enum phase phase;
  SSL *ssl;
  uint32_t mask;      /* epoll events registered */
  int msgs_left;
  double deadline;    /* of the current step; 0: none */
  const char *out;    /* pending output */
  size_t outlen, outoff;
  unsigned long steps; /* steps begun */
  int nexp;           /* codes still expected in this step */
  int exp[MAXEXP];
  size_t rlen;
  char rbuf[RBUF];
};

/* options */
static int port;
static const char *host = "127.0.0.1";
static enum scen scen = SC_MSGS;
static long units = 1000;
static int conc = -1;
static int per = -1;
static size_t size = 1024;
static int use_tls, tls_msg, resume, spread = 1;
static double timeout_s = 60, step_timeout = 20, hold_max = 600;

/* state */
static int ep;
static SSL_CTX *ctx;
static char *body;
static int uniform; /* --uniform: lines of x's, not base64 */
static size_t bodylen;
static struct conn *pool;
static int poolsize;
static int *freelist, nfree;
static long started, conns_done, msgs_assigned, msgs_done, held;
static long long bytes_sent;
static long errors;
static SSL_SESSION **slot_session; /* --resume: each slot's newest ticket */
static long resumed;
static pid_t hup_pid; /* --hup */
static long after_hup, resumed_after_hup;
static int in_flight;      /* connections being worked on (not held) */
static uint32_t src_next;
static volatile sig_atomic_t got_term;

static const char EHLO[] = "EHLO bench.client\r\n";
static const char STARTTLS[] = "STARTTLS\r\n";
static const char ENVELOPE[] = "MAIL FROM:<bench@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n";
static const char QUIT[] = "QUIT\r\n";

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_term(int sig) {
  (void)sig;
  got_term = 1;
}

/* --resume: every new session (a ticket) replaces the one its slot kept */
static int keep_session(SSL *ssl, SSL_SESSION *sess) {
  struct conn *c = SSL_get_app_data(ssl);
  SSL_SESSION **kept = &slot_session[c - pool];
  if (*kept)
    SSL_SESSION_free(*kept);
  *kept = sess;
  return 1; /* the reference is ours */
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_load -p PORT [-s msgs|conns|bulk|tls|idle] [-n UNITS] [-c CONCURRENCY]\n"
          "                  [--per K] [--size BYTES] [--uniform] [--tls] [--tls-msg] [--resume] [--hup PID]\n"
          "                  [--timeout S] [--step-timeout S] [--hold-max S] [--no-spread] [--host ADDR]\n");
  exit(2);
}

static void conn_release(struct conn *c, int rst) {
  if (c->ssl) {
    /* closed, not failed: OpenSSL would mark the session not resumable */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    if (rst) {
      struct linger l = {1, 0};
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
  }
  if (c->phase == P_HELD)
    held--;
  else if (c->phase != P_FREE)
    in_flight--;
  c->phase = P_FREE;
  freelist[nfree++] = (int)(c - pool);
}

static void fail(struct conn *c, const char *fmt, ...) {
  if (errors < MAXERRPRINT) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "bench_load: connection #%d, step %s: %s\n", c->id, phase_name[c->phase], msg);
  } else if (errors == MAXERRPRINT) {
    fprintf(stderr, "bench_load: more errors, not shown\n");
  }
  errors++;
  conns_done++;
  conn_release(c, 1);
}

static void set_mask(struct conn *c, uint32_t m) {
  if (m == c->mask)
    return;
  struct epoll_event ev = {.events = m, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
    c->mask = m;
}

/* queue output and the reply codes the step expects */
static void step(struct conn *c, enum phase p, const char *out, size_t len, int n, ...) {
  va_list ap;
  c->phase = p;
  c->out = out;
  c->outlen = len;
  c->outoff = 0;
  c->nexp = n;
  va_start(ap, n);
  for (int i = 0; i < n; i++)
    c->exp[i] = va_arg(ap, int);
  va_end(ap);
  c->deadline = now() + step_timeout;
  c->steps++;
}

static void next_message_or_quit(struct conn *c) {
  if (c->msgs_left > 0)
    step(c, P_ENVELOPE, ENVELOPE, sizeof ENVELOPE - 1, 3, 250, 250, 354);
  else
    step(c, P_QUIT, QUIT, sizeof QUIT - 1, 1, 221);
}

static void after_ehlo(struct conn *c) {
  if (scen == SC_IDLE) {
    c->phase = P_HELD;
    c->deadline = 0;
    in_flight--;
    held++;
  } else {
    next_message_or_quit(c);
  }
}

/* the step's replies are all in; returns 0 or -1 when c is gone */
static int advance(struct conn *c) {
  switch (c->phase) {
  case P_GREET:
    step(c, P_EHLO, EHLO, sizeof EHLO - 1, 1, 250);
    break;
  case P_EHLO:
    if (use_tls)
      step(c, P_STARTTLS, STARTTLS, sizeof STARTTLS - 1, 1, 220);
    else
      after_ehlo(c);
    break;
  case P_STARTTLS:
    if (c->rlen) {
      fail(c, "%zu unexpected bytes after the 220 to STARTTLS", c->rlen);
      return -1;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, "localhost")) {
      fail(c, "SSL_new/SSL_set_fd failed");
      return -1;
    }
    if (resume) {
      SSL_set_app_data(c->ssl, c);
      if (slot_session[c - pool])
        SSL_set_session(c->ssl, slot_session[c - pool]);
    }
    SSL_set_connect_state(c->ssl);
    c->phase = P_HANDSHAKE;
    c->deadline = now() + step_timeout;
    break;
  case P_EHLO2:
    after_ehlo(c);
    break;
  case P_ENVELOPE:
    step(c, P_BODY, body, bodylen, 1, 250);
    break;
  case P_BODY:
    c->msgs_left--;
    msgs_done++;
    bytes_sent += (long long)bodylen;
    next_message_or_quit(c);
    break;
  case P_QUIT:
    conns_done++;
    conn_release(c, 0);
    return -1;
  default:
    fail(c, "internal: advance in this phase");
    return -1;
  }
  return 0;
}

/* parse complete reply lines in rbuf; 0 or -1 when c is gone */
static int parse(struct conn *c) {
  for (;;) {
    char *e = memmem(c->rbuf, c->rlen, "\r\n", 2);
    if (!e) {
      if (c->rlen == sizeof c->rbuf) {
        fail(c, "reply line longer than %d bytes", RBUF);
        return -1;
      }
      return 0;
    }
    size_t ll = (size_t)(e - c->rbuf);
    char line[160];
    snprintf(line, sizeof line, "%.*s", (int)(ll < 150 ? ll : 150), c->rbuf);
    int final = !(ll >= 4 && c->rbuf[3] == '-');
    int code = -1;
    if (ll >= 3 && c->rbuf[0] >= '1' && c->rbuf[0] <= '5' && c->rbuf[1] >= '0' && c->rbuf[1] <= '9' &&
        c->rbuf[2] >= '0' && c->rbuf[2] <= '9' && (ll == 3 || c->rbuf[3] == ' ' || c->rbuf[3] == '-'))
      code = (c->rbuf[0] - '0') * 100 + (c->rbuf[1] - '0') * 10 + (c->rbuf[2] - '0');
    memmove(c->rbuf, e + 2, c->rlen - ll - 2);
    c->rlen -= ll + 2;
    if (code < 0) {
      fail(c, "malformed reply line \"%s\"", line);
      return -1;
    }
    if (!final)
      continue;
    if (c->nexp == 0 || c->phase == P_HELD) {
      fail(c, "unsolicited reply \"%s\"", line);
      return -1;
    }
    if (code != c->exp[0]) {
      fail(c, "expected %d, got \"%s\"", c->exp[0], line);
      return -1;
    }
    memmove(c->exp, c->exp + 1, sizeof c->exp[0] * (MAXEXP - 1));
    if (--c->nexp == 0) {
      if (c->outoff < c->outlen) {
        fail(c, "reply \"%s\" before the command was written", line);
        return -1;
      }
      if (advance(c) < 0)
        return -1;
      if (c->phase == P_HANDSHAKE)
        return 0; /* the rest is TLS records: leave the socket to OpenSSL */
    }
  }
}

static const char *ssl_err(void) {
  static char buf[256];
  unsigned long e = ERR_get_error();
  if (!e)
    return errno ? strerror(errno) : "no error detail";
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

/* do what can be done on c now; called on every epoll event */
static void drive(struct conn *c, uint32_t events) {
  if (c->phase == P_CONNECT) {
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
      err = errno;
    if (err) {
      fail(c, "connect: %s", strerror(err));
      return;
    }
    if (!(events & (EPOLLOUT | EPOLLIN)))
      return;
    step(c, P_GREET, NULL, 0, 1, 220);
  }
  int want_out = 0;
  if (c->phase == P_HANDSHAKE) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_mask(c, EPOLLIN | (e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0));
        return;
      }
      fail(c, "SSL_connect: %s", e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
                                     ? "EOF" : ssl_err());
      return;
    }
    if (SSL_version(c->ssl) != TLS1_3_VERSION) {
      fail(c, "negotiated %s, not TLSv1.3", SSL_get_version(c->ssl));
      return;
    }
    resumed += SSL_session_reused(c->ssl) == 1;
    if (hup_pid && c->id >= units / 2) {
      after_hup++;
      resumed_after_hup += SSL_session_reused(c->ssl) == 1;
    }
    step(c, P_EHLO2, EHLO, sizeof EHLO - 1, 1, 250);
  }
  for (;;) {
    /* write what is pending */
    want_out = 0;
    while (c->outoff < c->outlen) {
      size_t n = c->outlen - c->outoff;
      ssize_t w;
      if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, c->out + c->outoff, (int)(n > (1u << 20) ? (1u << 20) : n));
        if (r <= 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_WRITE) {
            want_out = 1;
            break;
          }
          if (e == SSL_ERROR_WANT_READ)
            break;
          fail(c, "SSL_write: %s", ssl_err());
          return;
        }
        w = r;
      } else {
        w = send(c->fd, c->out + c->outoff, n, MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            want_out = 1;
            break;
          }
          if (errno == EINTR)
            continue;
          fail(c, "send: %s", strerror(errno));
          return;
        }
      }
      c->outoff += (size_t)w;
    }
    /* read and parse what is there; a reply that starts a new step sends us back to writing */
    int newstep = 0;
    for (;;) {
      ssize_t r;
      size_t room = sizeof c->rbuf - c->rlen;
      errno = 0;
      if (c->ssl) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)room);
        if (n <= 0) {
          int e = SSL_get_error(c->ssl, n);
          if (e == SSL_ERROR_WANT_READ)
            break;
          if (e == SSL_ERROR_WANT_WRITE) {
            want_out = 1;
            break;
          }
          if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !ERR_peek_error() && errno == 0))
            fail(c, "EOF from the server (TLS)%s%.*s", c->rlen ? ", partial line " : "",
                 (int)(c->rlen > 100 ? 100 : c->rlen), c->rbuf);
          else
            fail(c, "SSL_read: %s", ssl_err());
          return;
        }
        r = n;
      } else {
        r = recv(c->fd, c->rbuf + c->rlen, room, 0);
        if (r < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
          if (errno == EINTR)
            continue;
          fail(c, "recv: %s", strerror(errno));
          return;
        }
        if (r == 0) {
          fail(c, "EOF from the server%s%.*s", c->rlen ? ", partial line " : "",
               (int)(c->rlen > 100 ? 100 : c->rlen), c->rbuf);
          return;
        }
      }
      c->rlen += (size_t)r;
      unsigned long before = c->steps;
      if (parse(c) < 0)
        return;
      if (c->phase == P_HANDSHAKE) {
        drive(c, 0); /* start the handshake now: the ClientHello goes first */
        return;
      }
      if (c->phase == P_HELD) {
        set_mask(c, EPOLLIN);
        return;
      }
      if (c->steps != before && c->outoff < c->outlen) {
        newstep = 1;
        break;
      }
    }
    if (!newstep)
      break;
  }
  set_mask(c, EPOLLIN | (want_out ? EPOLLOUT : 0));
}

static int start_conn(void) {
  if (nfree == 0)
    return -1;
  struct conn *c = &pool[freelist[--nfree]];
  memset(c, 0, offsetof(struct conn, rbuf));
  c->fd = -1;
  c->id = (int)started++;
  if (hup_pid && c->id == units / 2)
    kill(hup_pid, SIGHUP);
  in_flight++;
  c->phase = P_CONNECT;
  c->deadline = now() + step_timeout;
  if (scen == SC_MSGS || scen == SC_BULK) {
    long k = units - msgs_assigned;
    c->msgs_left = (int)(k < per ? k : per);
  } else if (scen == SC_CONNS || (scen == SC_TLS && tls_msg)) {
    c->msgs_left = 1;
  }
  msgs_assigned += c->msgs_left;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(c, "socket: %s", strerror(errno));
    return 0;
  }
  c->fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (spread) {
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    uint32_t i = src_next++ % (256u * 254u);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((i / 254u) << 8) | (i % 254u + 1u));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
      fail(c, "bind %s: %s", inet_ntoa(src.sin_addr), strerror(errno));
      return 0;
    }
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, host, &sa.sin_addr);
  int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (r < 0 && errno != EINPROGRESS) {
    fail(c, "connect: %s", strerror(errno));
    return 0;
  }
  c->mask = EPOLLIN | EPOLLOUT;
  struct epoll_event ev = {.events = c->mask, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    fail(c, "epoll_ctl: %s", strerror(errno));
    return 0;
  }
  return 0;
}


/* A held connection became readable: the server must not talk or close. */
static void check_held(struct conn *c) {
  char b[256];
  ssize_t r = c->ssl ? SSL_read(c->ssl, b, sizeof b) : recv(c->fd, b, sizeof b, 0);
  if (r == 0 || (r < 0 && !(c->ssl ? SSL_get_error(c->ssl, (int)r) == SSL_ERROR_WANT_READ
                                    : (errno == EAGAIN))))
    fail(c, "the server closed a held connection");
  else if (r > 0)
    fail(c, "unsolicited data on a held connection: \"%.*s\"", (int)(r > 100 ? 100 : r), b);
}
static void make_body(void) {
  static const char head[] = "Subject: bench\r\n\r\n";
  size_t hl = sizeof head - 1;
  size_t nl = size > hl ? (size - hl) / 78 : 0;
  if (nl < 1)
    nl = 1;
  bodylen = hl + nl * 78 + 3;
  body = malloc(bodylen);
  if (!body) {
    perror("malloc");
    exit(2);
  }
  memcpy(body, head, hl);
  char *p = body + hl;
  /* What a big message mostly is: a base64 attachment (pseudo-random,
   * fixed seed); --uniform sends lines of x's instead. */
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint64_t r = 0x9E3779B97F4A7C15u;
  for (size_t i = 0; i < nl; i++, p += 78) {
    for (int j = 0; j < 76; j++) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      p[j] = uniform ? 'x' : b64[r & 63];
    }
    p[76] = '\r';
    p[77] = '\n';
  }
  memcpy(p, ".\r\n", 3);
}

int main(int argc, char **argv) {
  static const struct option lo[] = {
      {"port", required_argument, 0, 'p'},    {"scenario", required_argument, 0, 's'},
      {"units", required_argument, 0, 'n'},   {"concurrency", required_argument, 0, 'c'},
      {"per", required_argument, 0, 'k'},     {"size", required_argument, 0, 'z'},
      {"tls", no_argument, 0, 'T'},           {"tls-msg", no_argument, 0, 'M'},
      {"uniform", no_argument, 0, 'U'},      {"resume", no_argument, 0, 'R'},
      {"hup", required_argument, 0, 'P'},
      {"timeout", required_argument, 0, 't'}, {"step-timeout", required_argument, 0, 'S'},
      {"hold-max", required_argument, 0, 'H'}, {"no-spread", no_argument, 0, 'N'},
      {"host", required_argument, 0, 'h'},    {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "p:s:n:c:", lo, NULL)) != -1) {
    switch (o) {
    case 'p': port = atoi(optarg); break;
    case 's': {
      int f = -1;
      for (int i = 0; i < 5; i++)
        if (!strcmp(optarg, scen_name[i]))
          f = i;
      if (f < 0)
        usage();
      scen = (enum scen)f;
      break;
    }
    case 'n': units = atol(optarg); break;
    case 'c': conc = atoi(optarg); break;
    case 'k': per = atoi(optarg); break;
    case 'z': size = (size_t)atoll(optarg); break;
    case 'T': use_tls = 1; break;
    case 'M': tls_msg = 1; break;
    case 'U': uniform = 1; break;
    case 'R': resume = 1; break;
    case 'P': hup_pid = (pid_t)atol(optarg); break;
    case 't': timeout_s = atof(optarg); break;
    case 'S': step_timeout = atof(optarg); break;
    case 'H': hold_max = atof(optarg); break;
    case 'N': spread = 0; break;
    case 'h': host = optarg; break;
    default: usage();
    }
  }
  if (optind != argc || port <= 0 || port > 65535 || units <= 0)
    usage();
  if (scen == SC_TLS)
    use_tls = 1;
  if (conc <= 0)
    conc = scen == SC_IDLE ? 100 : 1;
  if (per <= 0)
    per = scen == SC_BULK ? 10 : scen == SC_MSGS ? 100 : 1;
  struct in_addr tmp;
  if (inet_pton(AF_INET, host, &tmp) != 1)
    usage();

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  long need = (scen == SC_IDLE ? units : conc) + 16;
  if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need) {
    fprintf(stderr, "bench_load: needs %ld file descriptors, RLIMIT_NOFILE is %ld\n", need, (long)rl.rlim_cur);
    return 2;
  }

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  make_body();
  if (use_tls) {
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        (!resume && !SSL_CTX_set1_groups_list(ctx, "X25519"))) {
      fprintf(stderr, "bench_load: TLS setup: %s\n", ssl_err());
      return 2;
    }
    if (resume) {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx, keep_session);
    } else {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
  }

  poolsize = scen == SC_IDLE ? (int)units : conc;
  pool = calloc((size_t)poolsize, sizeof *pool);
  freelist = malloc(sizeof(int) * (size_t)poolsize);
  slot_session = calloc((size_t)poolsize, sizeof *slot_session);
  if (!pool || !freelist || !slot_session) {
    perror("malloc");
    return 2;
  }
  for (int i = poolsize - 1; i >= 0; i--) {
    pool[i].fd = -1;
    freelist[nfree++] = i;
  }
  src_next = (uint32_t)getpid() * 2654435761u;

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    perror("epoll_create1");
    return 2;
  }

  double t0 = now(), deadline = t0 + timeout_s, last_scan = t0, t_end = 0;
  int timed_out = 0;
  struct epoll_event evs[256];
  /* load phase */
  for (;;) {
    if (got_term)
      break;
    if (scen == SC_IDLE) {
      while (in_flight < conc && started < units && nfree > 0)
        start_conn();
      if (started >= units && in_flight == 0)
        break;
    } else {
      int more;
      while ((more = (scen == SC_MSGS || scen == SC_BULK) ? msgs_assigned < units : started < units) &&
             in_flight < conc)
        start_conn();
      if (!more && in_flight == 0)
        break;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      return 2;
    }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->phase == P_HELD) {
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
          check_held(c);
        }
        continue;
      }
      if (c->phase != P_FREE)
        drive(c, evs[i].events);
    }
    double t = now();
    if (t > deadline) {
      timed_out = 1;
      break;
    }
    if (t - last_scan > 0.25) {
      last_scan = t;
      for (int i = 0; i < poolsize; i++)
        if (pool[i].phase != P_FREE && pool[i].deadline && t > pool[i].deadline)
          fail(&pool[i], "no progress for %.0f s (step timeout)", step_timeout);
    }
  }
  t_end = now();
  if (timed_out) {
    for (int i = 0; i < poolsize; i++)
      if (pool[i].phase != P_FREE && pool[i].phase != P_HELD)
        fail(&pool[i], "run timeout (%.0f s) reached", timeout_s);
  }

  if (scen == SC_IDLE) {
    /* hold: until stdin EOF, SIGTERM or --hold-max */
    printf("ready %ld %ld\n", held, errors);
    fflush(stdout);
    int fl = fcntl(0, F_GETFL);
    if (fl >= 0)
      fcntl(0, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    /* stdin that epoll cannot watch (a regular file, /dev/null): hold until SIGTERM or --hold-max */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
    double hold_end = now() + hold_max;
    while (!got_term && now() < hold_end) {
      int n = epoll_wait(ep, evs, 256, 200);
      int stop = 0;
      for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (!c) {
          char b[256];
          ssize_t r = read(0, b, sizeof b);
          if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            stop = 1;
          continue;
        }
        if (c->phase != P_HELD)
          continue;
        check_held(c);
      }
      if (stop)
        break;
    }
  }
  long still_held = held;
  for (int i = 0; i < poolsize; i++)
    if (pool[i].phase != P_FREE)
      conn_release(&pool[i], 1);

  printf("{\"scenario\":\"%s\",\"units\":%ld,\"connections\":%ld,\"messages\":%ld,\"bytes\":%lld,"
         "\"held\":%ld,\"errors\":%ld,\"resumed\":%ld,\"after_hup\":%ld,\"resumed_after_hup\":%ld,"
         "\"seconds\":%.3f}\n",
         scen_name[scen], units, started, msgs_done, bytes_sent, scen == SC_IDLE ? still_held : 0L, errors,
         resumed, after_hup, resumed_after_hup, t_end - t0);
  fflush(stdout);
  if (got_term && scen != SC_IDLE)
    return 1;
  return errors ? 1 : 0;
}
