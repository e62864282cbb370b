/*
 * loadgen: a small, CPU-cheap load generator for flowd (tools/bench/engine.sh).
 *
 * One thread, one epoll loop, non-blocking sockets, 127.0.0.1-style targets. Two modes:
 *
 *   grpc   unary (or server-streaming) gRPC calls over cleartext HTTP/2 with prior knowledge (nghttp2 client API).
 *          C connections, up to M concurrent streams on each. The body file is sent as is, so it
 *          must already be gRPC-framed (0x00 + 4-byte big-endian length + protobuf). A call
 *          succeeds when :status is 200 AND grpc-status is 0 (in the trailers, or in the headers
 *          of a Trailers-Only response).
 *   http1  HTTP/1.1 keep-alive over C connections, one request in flight per connection (no
 *          pipelining). A request succeeds when the status is --expect. Responses must carry
 *          Content-Length (chunked responses are refused with an error); a server that closes an
 *          idle connection is reconnected to.
 *
 *   loadgen grpc  [options] HOST PORT PATH
 *   loadgen http1 [options] --expect STATUS HOST PORT PATH
 *
 *   -c C                   connections (default 1)
 *   -m M                   concurrent streams per connection, grpc only (default 1)
 *   -n N                   total requests (default 1000)
 *   -t SECONDS             time limit for the whole run (default 120)
 *   -d FILE                request body (default: empty)
 *   -H 'name: value'       extra request header, repeatable
 *   -X METHOD              http1 method (default POST)
 *   --expect STATUS        http1 status that counts as success (default 200)
 *   --unique-header NAME:PREFIX   add header `NAME: PREFIX-<request index>` to every request, so
 *                          that each request is distinct (e.g. idempotency-key:run-p3)
 *
 * Output: one JSON line on stdout,
 *   {"mode":"grpc","requests":N,"ok":..,"failed":..,"failures":{"grpc-status 8":3},"seconds":..,
 *    "rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,...}
 * and, in grpc mode, messages_min / messages_max / messages_total: the gRPC response messages
 * of the successful calls (one each for unary calls; a server-streaming call sends several).
 * where requests counts the completed requests, rps = requests / seconds, and each latency is
 * measured with CLOCK_MONOTONIC from the moment the request is submitted to its completion.
 * Failed requests are counted by kind ("grpc-status N", "http N", "rst N", "no grpc-status").
 * Exit status: 0 when all N requests completed (failed ones included: the caller judges them),
 * 1 on a connection error or when the time limit passed (the JSON then has an "error" field),
 * 2 on bad usage.
 *
 * Build: cc -O2 -o loadgen tools/bench/loadgen.c $(pkg-config --cflags --libs libnghttp2)
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define MAX_HEADERS 32
#define MAX_FAIL_KINDS 32
#define READ_CHUNK 65536

/* ---- options ------------------------------------------------------------------------- */

static struct {
    int grpc;                     /* 1: grpc mode, 0: http1 mode */
    const char *host, *port, *path, *method;
    long conns, streams, total, expect;
    double limit_s;
    char *body; size_t body_len;
    char *hname[MAX_HEADERS], *hvalue[MAX_HEADERS]; int nheaders;
    char *uname, *uprefix;        /* --unique-header NAME:PREFIX */
} o = { .method = "POST", .conns = 1, .streams = 1, .total = 1000, .expect = 200, .limit_s = 120 };

/* ---- results ------------------------------------------------------------------------- */

static double *lat_ms;            /* one latency per completed request */
static long submitted, completed, ok;
static struct { char kind[40]; long n; } fails[MAX_FAIL_KINDS];
static int nfail_kinds;
static long reconnects;
/* grpc: response messages per successful call (a server-streaming call sends several) */
static long msgs_min = -1, msgs_max, msgs_total;
static char fatal_msg[256];       /* set once: stops the loop, reported as "error" */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fatal(const char *fmt, ...) {
    if (fatal_msg[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fatal_msg, sizeof fatal_msg, fmt, ap);
    va_end(ap);
}

static void record(double t0, const char *fail_kind) {
    lat_ms[completed++] = now_ms() - t0;
    if (!fail_kind) { ok++; return; }
    for (int i = 0; i < nfail_kinds; i++)
        if (strcmp(fails[i].kind, fail_kind) == 0) { fails[i].n++; return; }
    int i = nfail_kinds < MAX_FAIL_KINDS ? nfail_kinds++ : MAX_FAIL_KINDS - 1;
    snprintf(fails[i].kind, sizeof fails[i].kind, "%s", i == MAX_FAIL_KINDS - 1 ? "other" : fail_kind);
    fails[i].n++;
}

/* ---- connections --------------------------------------------------------------------- */

struct conn {
    int fd, connected, inflight;
    uint32_t events;              /* what epoll currently watches */
    char *out; size_t outlen, outoff, outcap;   /* bytes waiting for the socket */
    nghttp2_session *h2;          /* grpc */
    char *in; size_t inlen, incap;              /* http1: the response read so far */
    double t0;                    /* http1: when the request in flight was submitted */
};

static int epfd;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static struct conn *conns;

static void out_append(struct conn *c, const void *p, size_t n) {
    if (c->outlen + n > c->outcap) {
        if (c->outoff > 0) {      /* slide the unsent part to the front first */
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff; c->outoff = 0;
        }
        while (c->outlen + n > c->outcap) c->outcap = c->outcap ? c->outcap * 2 : 65536;
        c->out = realloc(c->out, c->outcap);
        if (!c->out) { perror("realloc"); exit(1); }
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

static void watch(struct conn *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (epoll_ctl(epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0) {
        fatal("epoll_ctl: %s", strerror(errno)); return;
    }
    c->events = ev;
}

static void open_socket(struct conn *c) {
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { fatal("socket: %s", strerror(errno)); return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        fatal("connect %s:%s: %s", o.host, o.port, strerror(errno)); return;
    }
    c->connected = 0; c->events = 0;
    watch(c, EPOLLIN | EPOLLOUT);   /* writable = connected (or failed: SO_ERROR says) */
}

/* Writes what is buffered; asks epoll for EPOLLOUT while something is left. */
static void flush(struct conn *c) {
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            fatal("write: %s", strerror(errno)); return;
        }
        c->outoff += (size_t)w;
    }
    if (c->outoff == c->outlen) c->outoff = c->outlen = 0;
    watch(c, c->outlen ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

/* The value of the unique header for request idx, in buf. */
static const char *unique_value(char *buf, size_t size, long idx) {
    snprintf(buf, size, "%s-%ld", o.uprefix, idx);
    return buf;
}

/* ---- grpc over HTTP/2 (nghttp2) -------------------------------------------------------- */

struct stream {
    double t0; size_t body_off; int status, grpc_status;
    long msgs;                    /* response messages seen whole */
    uint8_t prefix[5]; int prefix_have; uint32_t msg_left;   /* where in the response framing */
};

/* Counts the gRPC-framed response messages in DATA as it arrives, across chunk boundaries. */
static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud) {
    (void)flags; (void)ud;
    struct stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    while (len > 0) {
        if (st->msg_left > 0) {
            size_t n = len < st->msg_left ? len : st->msg_left;
            st->msg_left -= (uint32_t)n; data += n; len -= n;
            if (st->msg_left == 0) st->msgs++;
            continue;
        }
        st->prefix[st->prefix_have++] = *data++; len--;
        if (st->prefix_have == 5) {
            st->prefix_have = 0;
            st->msg_left = (uint32_t)st->prefix[1] << 24 | (uint32_t)st->prefix[2] << 16
                         | (uint32_t)st->prefix[3] << 8 | st->prefix[4];
            if (st->msg_left == 0) st->msgs++;
        }
    }
    return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
    (void)s; (void)id; (void)ud;
    struct stream *st = src->ptr;
    size_t n = o.body_len - st->body_off;
    if (n > len) n = len;
    memcpy(buf, o.body + st->body_off, n);
    st->body_off += n;
    if (st->body_off == o.body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    (void)flags; (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st) return 0;
    char v[16];
    if (valuelen >= sizeof v) valuelen = sizeof v - 1;
    memcpy(v, value, valuelen); v[valuelen] = 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) st->status = atoi(v);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) st->grpc_status = atoi(v);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud) {
    struct conn *c = ud;
    struct stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    char kind[40];
    const char *fail = kind;
    if (error_code != 0) snprintf(kind, sizeof kind, "rst %u", error_code);
    else if (st->status != 200) snprintf(kind, sizeof kind, "http %d", st->status);
    else if (st->grpc_status < 0) snprintf(kind, sizeof kind, "no grpc-status");
    else if (st->grpc_status != 0) snprintf(kind, sizeof kind, "grpc-status %d", st->grpc_status);
    else fail = NULL;
    if (!fail) {
        if (msgs_min < 0 || st->msgs < msgs_min) msgs_min = st->msgs;
        if (st->msgs > msgs_max) msgs_max = st->msgs;
        msgs_total += st->msgs;
    }
    record(st->t0, fail);
    nghttp2_session_set_stream_user_data(s, id, NULL);
    free(st);
    c->inflight--;
    return 0;
}

static void grpc_start(struct conn *c) {
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    if (nghttp2_session_client_new(&c->h2, cb, c) != 0) { fatal("nghttp2_session_client_new"); return; }
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 },
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_submit_window_update(c->h2, NGHTTP2_FLAG_NONE, 0, (1 << 24) - 65535);
}

static nghttp2_nv mknv(const char *name, const char *value) {
    nghttp2_nv nv = { (uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE };
    return nv;
}

static void grpc_submit(struct conn *c) {
    static char authority[300];
    if (!authority[0]) snprintf(authority, sizeof authority, "%s:%s", o.host, o.port);
    nghttp2_nv nv[MAX_HEADERS + 8];
    int n = 0;
    nv[n++] = mknv(":method", "POST");
    nv[n++] = mknv(":scheme", "http");
    nv[n++] = mknv(":authority", authority);
    nv[n++] = mknv(":path", o.path);
    nv[n++] = mknv("content-type", "application/grpc");
    nv[n++] = mknv("te", "trailers");
    for (int i = 0; i < o.nheaders; i++) nv[n++] = mknv(o.hname[i], o.hvalue[i]);
    char uv[300];
    if (o.uname) nv[n++] = mknv(o.uname, unique_value(uv, sizeof uv, submitted));

    struct stream *st = calloc(1, sizeof *st);
    if (!st) { perror("calloc"); exit(1); }
    st->status = -1; st->grpc_status = -1;
    nghttp2_data_provider dp = { .source.ptr = st, .read_callback = body_read };
    st->t0 = now_ms();            /* nghttp2 copies the header names and values */
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, (size_t)n, &dp, st);
    if (id < 0) { free(st); fatal("nghttp2_submit_request: %s", nghttp2_strerror(id)); return; }
    submitted++;
    c->inflight++;
}

/* Submits requests up to M in flight, then serializes what nghttp2 wants to send. */
static void grpc_pump(struct conn *c) {
    while (!fatal_msg[0] && c->inflight < o.streams && submitted < o.total) grpc_submit(c);
    while (c->outlen - c->outoff < (1 << 20)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) { fatal("nghttp2_session_mem_send: %s", nghttp2_strerror((int)n)); return; }
        if (n == 0) break;
        out_append(c, data, (size_t)n);
    }
    flush(c);
    if (!fatal_msg[0] && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)
        && completed < o.total)
        fatal("HTTP/2 session ended (GOAWAY?) with requests outstanding");
}

static void grpc_input(struct conn *c, const char *buf, size_t n) {
    ssize_t r = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf, n);
    if (r < 0) fatal("nghttp2_session_mem_recv: %s", nghttp2_strerror((int)r));
}

/* ---- HTTP/1.1 ------------------------------------------------------------------------ */

static void http1_pump(struct conn *c) {
    if (c->connected && c->inflight == 0 && submitted < o.total) {
        char head[4096], uv[300];
        int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s:%s\r\n", o.method, o.path, o.host, o.port);
        if (o.body_len > 0 || strcmp(o.method, "GET") != 0)
            n += snprintf(head + n, sizeof head - n, "Content-Length: %zu\r\n", o.body_len);
        for (int i = 0; i < o.nheaders; i++)
            n += snprintf(head + n, sizeof head - n, "%s: %s\r\n", o.hname[i], o.hvalue[i]);
        if (o.uname)
            n += snprintf(head + n, sizeof head - n, "%s: %s\r\n", o.uname, unique_value(uv, sizeof uv, submitted));
        n += snprintf(head + n, sizeof head - n, "\r\n");
        if (n >= (int)sizeof head) { fatal("request head too long"); return; }
        out_append(c, head, (size_t)n);
        out_append(c, o.body, o.body_len);
        c->t0 = now_ms();
        c->inflight = 1;
        submitted++;
    }
    flush(c);
}

/* Case-insensitive "name:" match at the start of a header line; returns the value. */
static const char *header_value(const char *line, const char *name) {
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':') return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t') line++;
    return line;
}

static void http1_input(struct conn *c, const char *buf, size_t n) {
    if (c->inlen + n + 1 > c->incap) {
        while (c->inlen + n + 1 > c->incap) c->incap = c->incap ? c->incap * 2 : 16384;
        c->in = realloc(c->in, c->incap);
        if (!c->in) { perror("realloc"); exit(1); }
    }
    memcpy(c->in + c->inlen, buf, n);
    c->inlen += n;
    c->in[c->inlen] = 0;
    if (!c->inflight) { fatal("response bytes with no request in flight"); return; }
    char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (!end) return;             /* headers not complete yet */
    size_t head_len = (size_t)(end - c->in) + 4;
    int status = 0;
    if (sscanf(c->in, "HTTP/1.%*d %d", &status) != 1) { fatal("bad status line"); return; }
    long clen = -1;
    int close_after = 0;
    *end = 0;                     /* walk the header lines */
    for (char *line = strstr(c->in, "\r\n"); line && line < end; line = strstr(line, "\r\n")) {
        line += 2;
        const char *v;
        if ((v = header_value(line, "content-length"))) clen = atol(v);
        else if ((v = header_value(line, "transfer-encoding")) && strncasecmp(v, "chunked", 7) == 0) {
            fatal("chunked response (HTTP %d): not supported by loadgen", status); return;
        } else if ((v = header_value(line, "connection")) && strncasecmp(v, "close", 5) == 0) close_after = 1;
    }
    *end = '\r';
    if (clen < 0) {
        if (status == 204 || status == 304) clen = 0;
        else { fatal("HTTP %d response without Content-Length", status); return; }
    }
    if (c->inlen < head_len + (size_t)clen) return;   /* body not complete yet */
    if (c->inlen > head_len + (size_t)clen) { fatal("extra bytes after a response"); return; }
    char kind[40];
    snprintf(kind, sizeof kind, "http %d", status);
    record(c->t0, status == o.expect ? NULL : kind);
    c->inflight = 0;
    c->inlen = 0;
    if (close_after) {            /* the server will close: start a new connection */
        close(c->fd);
        reconnects++;
        open_socket(c);
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

static void on_event(struct conn *c, uint32_t ev) {
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { fatal("connect %s:%s: %s", o.host, o.port, strerror(err)); return; }
        if (!(ev & (EPOLLOUT | EPOLLIN))) return;
        c->connected = 1;
        if (o.grpc && !c->h2) grpc_start(c);
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char buf[READ_CHUNK];
        for (;;) {
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r > 0) {
                if (o.grpc) grpc_input(c, buf, (size_t)r); else http1_input(c, buf, (size_t)r);
                if (fatal_msg[0]) return;
                if (!c->connected) return;     /* http1 reconnected */
                if ((size_t)r < sizeof buf) break;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) { fatal("read: %s", strerror(errno)); return; }
            /* EOF */
            if (o.grpc || c->inflight) { fatal("server closed the connection with %d request(s) in flight", c->inflight); return; }
            close(c->fd);                      /* http1: an idle keep-alive connection closed */
            reconnects++;
            open_socket(c);
            return;
        }
    }
    if (o.grpc) grpc_pump(c); else http1_pump(c);
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen grpc|http1 [-c C] [-m M] [-n N] [-t SECONDS] [-d BODYFILE] [-H 'name: value']...\n"
                    "               [-X METHOD] [--expect STATUS] [--unique-header NAME:PREFIX] HOST PORT PATH\n");
    exit(2);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno)); exit(2); }
    size_t cap = 4096, n = 0, r;
    char *p = malloc(cap);
    while (p && (r = fread(p + n, 1, cap - n, f)) > 0)
        if ((n += r) == cap) p = realloc(p, cap *= 2);
    if (!p) { perror("malloc"); exit(1); }
    fclose(f);
    *len = n;
    return p;
}

/* "name: value" or NAME:PREFIX -> name (lowercased for HTTP/2) and the trimmed value. */
static void split_header(char *s, char **name, char **value) {
    char *colon = strchr(s, ':');
    if (!colon || colon == s) { fprintf(stderr, "loadgen: bad header '%s'\n", s); exit(2); }
    *colon = 0;
    *name = s;
    *value = colon + 1;
    while (**value == ' ') (*value)++;
    if (o.grpc) for (char *p = s; *p; p++) *p = (char)tolower((unsigned char)*p);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double q) {     /* nearest-rank percentile of the sorted latencies */
    if (completed == 0) return 0;
    long i = (long)(q * completed + 0.999999) - 1;
    return lat_ms[i < 0 ? 0 : i >= completed ? completed - 1 : i];
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    if (strcmp(argv[1], "grpc") == 0) o.grpc = 1;
    else if (strcmp(argv[1], "http1") != 0) usage();
    const char *pos[3];
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-c") && has) o.conns = atol(argv[++i]);
        else if (!strcmp(a, "-m") && has) o.streams = atol(argv[++i]);
        else if (!strcmp(a, "-n") && has) o.total = atol(argv[++i]);
        else if (!strcmp(a, "-t") && has) o.limit_s = atof(argv[++i]);
        else if (!strcmp(a, "-d") && has) o.body = read_file(argv[++i], &o.body_len);
        else if (!strcmp(a, "-X") && has) o.method = argv[++i];
        else if (!strcmp(a, "--expect") && has) o.expect = atol(argv[++i]);
        else if (!strcmp(a, "-H") && has) {
            if (o.nheaders == MAX_HEADERS) { fprintf(stderr, "loadgen: too many -H\n"); exit(2); }
            split_header(argv[++i], &o.hname[o.nheaders], &o.hvalue[o.nheaders]);
            o.nheaders++;
        } else if (!strcmp(a, "--unique-header") && has) split_header(argv[++i], &o.uname, &o.uprefix);
        else if (a[0] == '-') usage();
        else if (npos < 3) pos[npos++] = a;
        else usage();
    }
    if (npos != 3 || o.conns < 1 || o.streams < 1 || o.total < 1 || o.limit_s <= 0) usage();
    if (!o.grpc && o.streams != 1) { fprintf(stderr, "loadgen: http1 mode has one request in flight per connection (-m 1)\n"); exit(2); }
    o.host = pos[0]; o.port = pos[1]; o.path = pos[2];
    if (!o.body) o.body = "";

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    int g = getaddrinfo(o.host, o.port, &hints, &ai);
    if (g != 0) { fprintf(stderr, "loadgen: %s:%s: %s\n", o.host, o.port, gai_strerror(g)); exit(1); }
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    signal(SIGPIPE, SIG_IGN);
    lat_ms = malloc(sizeof(double) * (size_t)o.total);
    conns = calloc((size_t)o.conns, sizeof *conns);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!lat_ms || !conns || epfd < 0) { perror("setup"); exit(1); }

    double start = now_ms(), deadline = start + o.limit_s * 1e3;
    for (long i = 0; i < o.conns && !fatal_msg[0]; i++) open_socket(&conns[i]);
    struct epoll_event evs[64];
    while (!fatal_msg[0] && completed < o.total) {
        double left = deadline - now_ms();
        if (left <= 0) { fatal("time limit of %g s reached", o.limit_s); break; }
        int k = epoll_wait(epfd, evs, 64, left > 1000 ? 1000 : (int)left + 1);
        if (k < 0 && errno != EINTR) { fatal("epoll_wait: %s", strerror(errno)); break; }
        for (int i = 0; i < k && !fatal_msg[0]; i++) on_event(evs[i].data.ptr, evs[i].events);
    }
    double secs = (now_ms() - start) / 1e3;

    qsort(lat_ms, (size_t)completed, sizeof(double), cmp_double);
    printf("{\"mode\":\"%s\",\"requests\":%ld,\"ok\":%ld,\"failed\":%ld,\"failures\":{",
           o.grpc ? "grpc" : "http1", completed, ok, completed - ok);
    for (int i = 0; i < nfail_kinds; i++) printf("%s\"%s\":%ld", i ? "," : "", fails[i].kind, fails[i].n);
    printf("},\"seconds\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"connections\":%ld,\"streams_per_connection\":%ld,\"submitted\":%ld,\"reconnects\":%ld",
           secs, secs > 0 ? completed / secs : 0.0, pct(0.50), pct(0.90), pct(0.99),
           completed ? lat_ms[completed - 1] : 0.0, o.conns, o.streams, submitted, reconnects);
    if (o.grpc)
        printf(",\"messages_min\":%ld,\"messages_max\":%ld,\"messages_total\":%ld",
               msgs_min < 0 ? 0 : msgs_min, msgs_max, msgs_total);
    if (fatal_msg[0]) {
        printf(",\"error\":\"");
        for (const char *p = fatal_msg; *p; p++) printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
        printf("\"");
        fprintf(stderr, "loadgen: %s\n", fatal_msg);
    }
    printf("}\n");
    return fatal_msg[0] ? 1 : 0;
}
