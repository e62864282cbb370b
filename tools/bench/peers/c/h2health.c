/*
 * Minimal C peer for make bench-peers: an HTTP/2 server on libnghttp2 (no gRPC library) that
 * answers POST /grpc.health.v1.Health/Check with a fixed gRPC response: headers (:status 200,
 * content-type application/grpc), one message HealthCheckResponse{status: SERVING}
 * (00 00000002 08 01), trailers grpc-status 0. Any other path gets a trailers-only response with
 * grpc-status 12 (UNIMPLEMENTED). The request body is read and ignored.
 *
 * It is the floor of what an HTTP/2 gRPC server can cost here: no parsing of the request
 * message, no routing table, no deadlines, no metadata, no flow-control tuning.
 *
 * Threads: one epoll loop each (default: the number of online CPUs), all waiting on the one
 * listening socket (EPOLLEXCLUSIVE); a connection stays on the thread that accepted it.
 * Listens on 127.0.0.1 only; prints "listening on 127.0.0.1:PORT" once bound.
 *
 *   h2health [PORT [THREADS]]      (PORT 0, the default: any free port)
 *
 * Build: cc -O2 -o h2health h2health.c $(pkg-config --cflags --libs libnghttp2) -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK_PATH "/grpc.health.v1.Health/Check"
#define OUTBUF_CAP (64 * 1024) /* gather up to this much before a write */

static const uint8_t serving_message[] = {0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x01};

typedef struct {
    int32_t id;
    int is_check;
    int body_sent;
} stream_t;

typedef struct conn {
    int fd;
    nghttp2_session *session;
    uint8_t *out;      /* bytes nghttp2 produced that the socket has not taken yet */
    size_t out_len;
    size_t out_off;
    size_t out_cap;
    int want_write;    /* EPOLLOUT registered */
} conn_t;

static int listen_fd = -1;

#define MAKE_NV(NAME, VALUE)                                                                   \
    {(uint8_t *)(NAME), (uint8_t *)(VALUE), sizeof(NAME) - 1, sizeof(VALUE) - 1,               \
     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}

static nghttp2_nv response_headers[] = {MAKE_NV(":status", "200"),
                                        MAKE_NV("content-type", "application/grpc")};
static nghttp2_nv ok_trailers[] = {MAKE_NV("grpc-status", "0")};
static nghttp2_nv unimplemented_headers[] = {
    MAKE_NV(":status", "200"), MAKE_NV("content-type", "application/grpc"),
    MAKE_NV("grpc-status", "12"), MAKE_NV("grpc-message", "unknown method")};

/* ---- nghttp2 callbacks ---- */

static ssize_t read_message(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
    (void)source; (void)user_data;
    stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
    size_t n = sizeof(serving_message);
    if (st == NULL || st->body_sent || length < n) {
        if (length < n && st != NULL && !st->body_sent) return NGHTTP2_ERR_DEFERRED;
        n = 0;
    } else {
        memcpy(buf, serving_message, n);
        st->body_sent = 1;
    }
    /* End of data, but the stream ends with the trailers. */
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (nghttp2_submit_trailer(session, stream_id, ok_trailers,
                               sizeof(ok_trailers) / sizeof(ok_trailers[0])) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)n;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                            void *user_data) {
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL) return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->id = frame->hd.stream_id;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
    (void)flags; (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL) return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0 && valuelen == sizeof(CHECK_PATH) - 1 &&
        memcmp(value, CHECK_PATH, valuelen) == 0)
        st->is_check = 1;
    return 0;
}

static int respond(nghttp2_session *session, stream_t *st) {
    if (!st->is_check)
        return nghttp2_submit_response(
            session, st->id, unimplemented_headers,
            sizeof(unimplemented_headers) / sizeof(unimplemented_headers[0]), NULL);
    nghttp2_data_provider provider = {.source = {.ptr = st}, .read_callback = read_message};
    return nghttp2_submit_response(session, st->id, response_headers,
                                   sizeof(response_headers) / sizeof(response_headers[0]),
                                   &provider);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    (void)user_data;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (st != NULL && respond(session, st) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data) {
    (void)error_code; (void)user_data;
    free(nghttp2_session_get_stream_user_data(session, stream_id));
    return 0;
}

static nghttp2_session_callbacks *callbacks;

/* ---- connections ---- */

static void conn_free(int epfd, conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    nghttp2_session_del(c->session);
    free(c->out);
    free(c);
}

/* Moves what nghttp2 has to send into the socket. Returns -1 when the connection is done. */
static int conn_flush(int epfd, conn_t *c) {
    for (;;) {
        while (c->out_off < c->out_len) {
            ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    if (!c->want_write) {
                        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                        c->want_write = 1;
                    }
                    return 0;
                }
                return -1;
            }
            c->out_off += (size_t)w;
        }
        c->out_off = c->out_len = 0;
        /* Gather nghttp2's output into one buffer, so a read batch costs one write. */
        while (c->out_len < OUTBUF_CAP) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) return -1;
            if (n == 0) break;
            if (c->out_len + (size_t)n > c->out_cap) {
                size_t cap = c->out_cap * 2 > c->out_len + (size_t)n ? c->out_cap * 2
                                                                     : c->out_len + (size_t)n;
                uint8_t *bigger = realloc(c->out, cap);
                if (bigger == NULL) return -1;
                c->out = bigger;
                c->out_cap = cap;
            }
            memcpy(c->out + c->out_len, data, (size_t)n);
            c->out_len += (size_t)n;
        }
        if (c->out_len == 0) break;
    }
    if (c->want_write) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_write = 0;
    }
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
        return -1;
    return 0;
}

static int conn_read(conn_t *c) {
    uint8_t buf[64 * 1024];
    for (;;) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r == 0) return -1;
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        if (nghttp2_session_mem_recv(c->session, buf, (size_t)r) < 0) return -1;
        if ((size_t)r < sizeof(buf)) return 0;
    }
}

static void conn_accept(int epfd) {
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN: another thread took it, or none left */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = calloc(1, sizeof(*c));
        c->fd = fd;
        c->out = malloc(OUTBUF_CAP);
        c->out_cap = OUTBUF_CAP;
        nghttp2_session_server_new(&c->session, callbacks, c);
        nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
        nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        if (conn_flush(epfd, c) < 0) conn_free(epfd, c);
    }
}

static void *worker(void *arg) {
    (void)arg;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &lev) != 0) {
        perror("epoll_ctl(listen)");
        exit(1);
    }
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (c == NULL) { conn_accept(epfd); continue; }
            int done = 0;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) done = 1;
            if (!done && (events[i].events & EPOLLIN) && conn_read(c) < 0) done = 1;
            if (!done && conn_flush(epfd, c) < 0) done = 1;
            if (done) conn_free(epfd, c);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    long threads = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    signal(SIGPIPE, SIG_IGN);

    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(listen_fd, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t len = sizeof(addr);
    getsockname(listen_fd, (struct sockaddr *)&addr, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    pthread_t tids[threads];
    for (long i = 1; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
    worker(NULL);
    return 0;
}
