#ifndef FLOWD_CNGHTTP2_SHIM_H
#define FLOWD_CNGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>

/* Small accessors so that Swift never pokes at nghttp2's unions, bit flags and C enums. */

static inline int32_t flowd_h2_frame_stream_id(const nghttp2_frame *frame) { return frame->hd.stream_id; }
static inline size_t flowd_h2_frame_length(const nghttp2_frame *frame) { return frame->hd.length; }
static inline int flowd_h2_frame_is_data(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_DATA; }
static inline int flowd_h2_frame_is_headers(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_HEADERS; }
static inline int flowd_h2_frame_is_ping(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_PING; }
static inline int flowd_h2_frame_is_settings(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_SETTINGS; }
static inline int flowd_h2_frame_is_goaway(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_GOAWAY; }
static inline int flowd_h2_frame_is_request_headers(const nghttp2_frame *frame) {
    return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
}
static inline int flowd_h2_frame_has_end_stream(const nghttp2_frame *frame) {
    return (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
}
static inline int flowd_h2_frame_has_end_headers(const nghttp2_frame *frame) {
    return (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS) != 0;
}
static inline int flowd_h2_frame_has_ack(const nghttp2_frame *frame) {
    return (frame->hd.flags & NGHTTP2_FLAG_ACK) != 0;
}
static inline uint64_t flowd_h2_ping_opaque(const nghttp2_frame *frame) {
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) value = (value << 8) | frame->ping.opaque_data[i];
    return value;
}
static inline void flowd_h2_set_data_flags(uint32_t *flags, int eof, int no_end_stream) {
    if (eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (no_end_stream) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
}
static inline int flowd_h2_frame_is_rst_stream(const nghttp2_frame *frame) { return frame->hd.type == NGHTTP2_RST_STREAM; }
static inline uint32_t flowd_h2_frame_rst_error_code(const nghttp2_frame *frame) { return frame->rst_stream.error_code; }
static inline int flowd_h2_submit_ping(nghttp2_session *session, uint64_t opaque) {
    uint8_t data[8];
    for (int i = 7; i >= 0; i--) { data[i] = (uint8_t)(opaque & 0xff); opaque >>= 8; }
    return nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE, data);
}
#endif
