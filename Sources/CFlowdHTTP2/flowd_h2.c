#include "flowd_h2.h"
#include <stdlib.h>
#include <string.h>

/* ---- Pool ----
 * Each block has a 16-byte header (keeps malloc's 16-byte alignment) holding its size class;
 * blocks above the largest class go to malloc with the class LARGE. */
#define POOL_HEADER 16
#define POOL_LARGE 0xFFu
static const size_t pool_class_size[FLOWD_H2_POOL_CLASSES] = {64, 128, 256, 512};

static inline unsigned pool_class(size_t size) {
    if (size <= 64) return 0;
    if (size <= 128) return 1;
    if (size <= 256) return 2;
    if (size <= 512) return 3;
    return POOL_LARGE;
}

static void *pool_malloc(size_t size, void *user_data) {
    flowd_h2_context *context = user_data;
    unsigned cls = pool_class(size);
    uint8_t *block;
    if (cls != POOL_LARGE) {
        void *head = context->free_blocks[cls];
        if (head != NULL) {
            context->free_blocks[cls] = *(void **)head;
            context->free_count[cls]--;
            return head;
        }
        block = malloc(POOL_HEADER + pool_class_size[cls]);
    } else {
        if (size > SIZE_MAX - POOL_HEADER) return NULL;
        block = malloc(POOL_HEADER + size);
    }
    if (block == NULL) return NULL;
    *(uint32_t *)block = cls;
    return block + POOL_HEADER;
}

static void pool_free(void *pointer, void *user_data) {
    if (pointer == NULL) return;
    flowd_h2_context *context = user_data;
    uint8_t *block = (uint8_t *)pointer - POOL_HEADER;
    unsigned cls = *(uint32_t *)block;
    if (cls != POOL_LARGE && context->free_count[cls] < context->pool_cap) {
        *(void **)pointer = context->free_blocks[cls];
        context->free_blocks[cls] = pointer;
        context->free_count[cls]++;
        return;
    }
    free(block);
}

static void *pool_calloc(size_t count, size_t size, void *user_data) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *pointer = pool_malloc(count * size, user_data);
    if (pointer != NULL) memset(pointer, 0, count * size);
    return pointer;
}

static void *pool_realloc(void *pointer, size_t size, void *user_data) {
    if (pointer == NULL) return pool_malloc(size, user_data);
    uint8_t *block = (uint8_t *)pointer - POOL_HEADER;
    unsigned cls = *(uint32_t *)block;
    if (cls == POOL_LARGE) {
        if (size > SIZE_MAX - POOL_HEADER) return NULL;
        uint8_t *grown = realloc(block, POOL_HEADER + size);
        return grown == NULL ? NULL : grown + POOL_HEADER;
    }
    if (size <= pool_class_size[cls]) return pointer;
    void *moved = pool_malloc(size, user_data);
    if (moved == NULL) return NULL;
    memcpy(moved, pointer, pool_class_size[cls]);
    pool_free(pointer, user_data);
    return moved;
}

flowd_h2_context *flowd_h2_context_new(size_t max_list_size, size_t max_field_count, uint32_t pool_cap) {
    flowd_h2_context *context = calloc(1, sizeof *context);
    if (context == NULL) return NULL;
    context->max_list_size = max_list_size;
    context->max_field_count = max_field_count;
    context->pool_cap = pool_cap;
    context->mem.mem_user_data = context;
    context->mem.malloc = pool_malloc;
    context->mem.free = pool_free;
    context->mem.calloc = pool_calloc;
    context->mem.realloc = pool_realloc;
    return context;
}

void flowd_h2_context_free(flowd_h2_context *context) {
    if (context == NULL) return;
    for (unsigned cls = 0; cls < FLOWD_H2_POOL_CLASSES; cls++) {
        void *pointer = context->free_blocks[cls];
        while (pointer != NULL) {
            void *next = *(void **)pointer;
            free((uint8_t *)pointer - POOL_HEADER);
            pointer = next;
        }
    }
    free(context->headers);
    free(context->data);
    free(context);
}

size_t flowd_h2_pool_free_blocks(const flowd_h2_context *context) {
    size_t total = 0;
    for (unsigned cls = 0; cls < FLOWD_H2_POOL_CLASSES; cls++) total += context->free_count[cls];
    return total;
}

/* ---- Request header recorder ---- */

/* Makes room for `extra` more bytes in a growing buffer; 0 when out of memory. */
static int buffer_reserve(uint8_t **bytes, size_t *capacity, size_t count, size_t extra) {
    if (extra > SIZE_MAX - count) return 0;
    size_t needed = count + extra;
    if (needed <= *capacity) return 1;
    size_t grown_capacity = *capacity < 4096 ? 4096 : *capacity;
    while (grown_capacity < needed) grown_capacity *= 2;
    uint8_t *grown = realloc(*bytes, grown_capacity);
    if (grown == NULL) return 0;
    *bytes = grown;
    *capacity = grown_capacity;
    return 1;
}

/* Empties a buffer, keeping its storage up to FLOWD_H2_KEPT_CAPACITY. */
static void buffer_reset(uint8_t **bytes, size_t *capacity, size_t *count) {
    *count = 0;
    if (*capacity > FLOWD_H2_KEPT_CAPACITY) {
        free(*bytes);
        *bytes = NULL;
        *capacity = 0;
    }
}

ptrdiff_t flowd_h2_data_append(flowd_h2_context *context, const uint8_t *bytes, size_t length) {
    if (!buffer_reserve(&context->data, &context->data_capacity, context->data_count, length)) return -1;
    size_t start = context->data_count;
    if (length > 0) memcpy(context->data + start, bytes, length);
    context->data_count += length;
    return (ptrdiff_t)start;
}

static int record_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t name_length, const uint8_t *value, size_t value_length, uint8_t flags,
                         void *user_data) {
    (void)session;
    (void)flags;
    flowd_h2_context *context = user_data;
    flowd_h2_receiving *block = &context->receiving;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST
        || block->stream_id == 0 || block->stream_id != frame->hd.stream_id) {
        return 0;
    }
    block->list_size += name_length + value_length + 32;
    block->field_count += 1;
    if (block->too_large) return 0;
    if (block->list_size > context->max_list_size || block->field_count > context->max_field_count) {
        context->headers_count = block->start;
        block->too_large = 1;
        return 0;
    }
    size_t size = 8 + name_length + value_length;
    if (!buffer_reserve(&context->headers, &context->headers_capacity, context->headers_count, size)) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    uint8_t *out = context->headers + context->headers_count;
    uint32_t lengths[2] = {(uint32_t)name_length, (uint32_t)value_length};
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    lengths[0] = __builtin_bswap32(lengths[0]);
    lengths[1] = __builtin_bswap32(lengths[1]);
#endif
    memcpy(out, lengths, 8);
    memcpy(out + 8, name, name_length);
    memcpy(out + 8 + name_length, value, value_length);
    context->headers_count += size;
    return 0;
}

void flowd_h2_callbacks_set_header_recorder(nghttp2_session_callbacks *callbacks) {
    nghttp2_session_callbacks_set_on_header_callback(callbacks, record_header);
}

void flowd_h2_next_read(flowd_h2_context *context) {
    buffer_reset(&context->data, &context->data_capacity, &context->data_count);
    flowd_h2_receiving *block = &context->receiving;
    if (block->stream_id != 0) {
        size_t length = context->headers_count - block->start;
        if (block->start > 0) memmove(context->headers, context->headers + block->start, length);
        context->headers_count = length;
        block->start = 0;
        return;
    }
    buffer_reset(&context->headers, &context->headers_capacity, &context->headers_count);
}

void flowd_h2_headers_begin(flowd_h2_context *context, int32_t stream_id) {
    flowd_h2_receiving *block = &context->receiving;
    if (block->stream_id != 0) context->headers_count = block->start;
    block->stream_id = stream_id;
    block->too_large = 0;
    block->start = context->headers_count;
    block->list_size = 0;
    block->field_count = 0;
}

int flowd_h2_headers_end(flowd_h2_context *context, int32_t stream_id, size_t *start, size_t *end, int *too_large) {
    flowd_h2_receiving *block = &context->receiving;
    if (block->stream_id == 0 || block->stream_id != stream_id) return 0;
    *start = block->start;
    *end = context->headers_count;
    *too_large = block->too_large;
    block->stream_id = 0;
    return 1;
}

void flowd_h2_headers_stream_closed(flowd_h2_context *context, int32_t stream_id) {
    if (context->receiving.stream_id == stream_id) context->receiving.stream_id = 0;
}
