/// Follows the frame boundaries of the bytes a client sends (after its 24-byte preface) and
/// reports each frame header, whatever nghttp2 then does with the frame. nghttp2 drops DATA
/// for closed streams before any callback sees it; counting empty DATA frames here makes such
/// a flood as visible as one on an open stream.
///
/// A plain value fed with the same bytes as `nghttp2_session_mem_recv`, in the same order.
struct FrameHeaderScanner {
    struct Header: Equatable {
        var length: Int
        var type: UInt8
        var flags: UInt8
        var streamID: Int32
    }

    private var prefaceLeft = 24
    /// The bytes of a frame header split across two reads (rare: most reads hold whole frames).
    private var header: [UInt8] = []
    private var payloadLeft = 0

    init() {}

    mutating func scan(_ bytes: UnsafeRawBufferPointer, onHeader: (Header) -> Void) {
        var index = 0
        let count = bytes.count
        while index < count {
            if prefaceLeft > 0 {
                let skip = min(prefaceLeft, count - index)
                prefaceLeft -= skip
                index += skip
            } else if payloadLeft > 0 {
                let skip = min(payloadLeft, count - index)
                payloadLeft -= skip
                index += skip
            } else if header.isEmpty, count - index >= 9 {
                // A whole header in this read: parsed in place.
                let parsed = Self.parse(UnsafeRawBufferPointer(rebasing: bytes[index..<index + 9]))
                index += 9
                onHeader(parsed)
                payloadLeft = parsed.length
            } else {
                header.append(bytes[index])
                index += 1
                if header.count == 9 {
                    let parsed = header.withUnsafeBytes { Self.parse($0) }
                    header = []
                    onHeader(parsed)
                    payloadLeft = parsed.length
                }
            }
        }
    }

    /// The 9 bytes of a frame header (RFC 9113 section 4.1).
    private static func parse(_ header: UnsafeRawBufferPointer) -> Header {
        let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
        let streamID = Int32(bitPattern: (UInt32(header[5]) << 24 | UInt32(header[6]) << 16
                                          | UInt32(header[7]) << 8 | UInt32(header[8])) & 0x7FFF_FFFF)
        return Header(length: length, type: header[3], flags: header[4], streamID: streamID)
    }
}

extension FrameHeaderScanner.Header {
    /// A DATA frame with no payload and no END_STREAM (what an empty-frame flood sends).
    var isEmptyDataWithoutEndStream: Bool {
        type == 0x0 && length == 0 && flags & 0x1 == 0
    }
}
