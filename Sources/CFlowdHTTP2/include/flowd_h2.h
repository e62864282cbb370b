#ifndef FLOWD_H2_H
#define FLOWD_H2_H
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What an nghttp2 server session needs that is cheaper in C than through a Swift callback:
 *
 * - A memory pool for nghttp2's own allocations (nghttp2_session_server_new3): the streams,
 *   outbound items and header copies a call allocates and frees come from per-size free lists
 *   instead of glibc's malloc (8 malloc/free pairs a call, about 1,000 instructions).
 * - The request header recorder: nghttp2's on_header callback, which appends each field of a
 *   request header block to one buffer per read, in RequestHeaderBlock's layout (for each field
 *   its name's and value's lengths, 4 bytes each, little-endian, then the name, then the value),
 *   and counts it against the header list limits. Through Swift this was about 280
 *   instructions a field.
 * - The request body bytes of a read, one after the other (the Swift DATA callback appends
 *   them here; through a ByteBuffer an append of a few bytes cost 230 instructions).
 *
 * The context is the session's user data; its first member points to the Swift owner
 * (`flowd_h2_context_owner`). Everything is confined to the session's thread.
 */

/* A request header block being received (blocks never interleave). */
typedef struct flowd_h2_receiving {
    int32_t stream_id;      /* 0: none */
    int too_large;          /* went over a limit: its fields are not kept */
    size_t start;           /* where its bytes start in `headers` */
    size_t list_size;       /* sum of name + value + 32 over its fields (RFC 7541 4.1) */
    size_t field_count;
} flowd_h2_receiving;

#define FLOWD_H2_POOL_CLASSES 4

typedef struct flowd_h2_context {
    void *owner;
    /* The request header blocks of the current read, one after the other. */
    uint8_t *headers;
    size_t headers_count;
    size_t headers_capacity;
    flowd_h2_receiving receiving;
    /* The request body bytes of the current read, one after the other. */
    uint8_t *data;
    size_t data_count;
    size_t data_capacity;
    size_t max_list_size;
    size_t max_field_count;
    /* The pool: free blocks per size class, each list at most `pool_cap` long. */
    void *free_blocks[FLOWD_H2_POOL_CLASSES];
    uint32_t free_count[FLOWD_H2_POOL_CLASSES];
    uint32_t pool_cap;
    nghttp2_mem mem;
} flowd_h2_context;

/* Storage of `headers` and `data` kept between reads (above it, the next read starts with none). */
#define FLOWD_H2_KEPT_CAPACITY (64 * 1024)

/* A context with the header list limits; NULL when out of memory. `pool_cap` bounds each free
 * list (0: every block goes back to malloc). */
flowd_h2_context *flowd_h2_context_new(size_t max_list_size, size_t max_field_count, uint32_t pool_cap);
/* Frees the context and the pool's blocks: after nghttp2_session_del of its session. */
void flowd_h2_context_free(flowd_h2_context *context);

static inline void *flowd_h2_context_owner(void *user_data) { return ((flowd_h2_context *)user_data)->owner; }
static inline void flowd_h2_context_set_owner(flowd_h2_context *context, void *owner) { context->owner = owner; }
static inline nghttp2_mem *flowd_h2_context_mem(flowd_h2_context *context) { return &context->mem; }
static inline const uint8_t *flowd_h2_headers_bytes(const flowd_h2_context *context) { return context->headers; }
static inline size_t flowd_h2_headers_count(const flowd_h2_context *context) { return context->headers_count; }
static inline const uint8_t *flowd_h2_data_bytes(const flowd_h2_context *context) { return context->data; }
static inline size_t flowd_h2_data_count(const flowd_h2_context *context) { return context->data_count; }
/* Appends request body bytes of this read; their offset in `data`, or -1 when out of memory. */
ptrdiff_t flowd_h2_data_append(flowd_h2_context *context, const uint8_t *bytes, size_t length);
/* Free blocks held by the pool (tests). */
size_t flowd_h2_pool_free_blocks(const flowd_h2_context *context);

/* Installs the header recorder as the on_header callback. */
void flowd_h2_callbacks_set_header_recorder(nghttp2_session_callbacks *callbacks);

/* Before a read: the body bytes of the last one are dropped; a header block still arriving
 * moves to the front, the other blocks are dropped. */
void flowd_h2_next_read(flowd_h2_context *context);
/* A request header block of `stream_id` begins (a block abandoned before it is dropped). */
void flowd_h2_headers_begin(flowd_h2_context *context, int32_t stream_id);
/* The block of `stream_id` is complete: 1 with its range and whether it went over a limit, 0
 * when no block of that stream was being received. */
int flowd_h2_headers_end(flowd_h2_context *context, int32_t stream_id, size_t *start, size_t *end, int *too_large);
/* `stream_id` closed: a block of it still arriving is no longer expected (its bytes stay until
 * the next read: a handler may be reading a block of this read). */
void flowd_h2_headers_stream_closed(flowd_h2_context *context, int32_t stream_id);

#endif
