import NGHTTP2Support
import NIOCore

/// A request's header block as bytes, the way nghttp2 delivered it: for each field its name's
/// and value's lengths (4 bytes each, little-endian), then the name, then the value.
///
/// A view: the bytes belong to the session (valid during the pass of `handleEvents` that
/// handles the block) or to an array the caller keeps alive. Fields are compared and parsed in
/// place; Strings are made only for what a handler keeps (metadata) or an error names. (As
/// Strings, a call's eight fields cost an array, two String allocations and their releases.)
struct RequestHeaderBlock: Sequence {
    let bytes: UnsafeRawBufferPointer

    struct Field {
        let name: UnsafeRawBufferPointer
        let value: UnsafeRawBufferPointer
    }

    static let fieldOverhead = 8

    /// Appends one field in the block layout.
    static func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, to storage: inout ByteBuffer) {
        let size = fieldOverhead + name.count + value.count
        storage.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            out.storeBytes(of: UInt32(name.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            out.storeBytes(of: UInt32(value.count).littleEndian, toByteOffset: 4, as: UInt32.self)
            let valueStart = fieldOverhead + name.count
            UnsafeMutableRawBufferPointer(rebasing: out[fieldOverhead..<valueStart]).copyMemory(from: name)
            UnsafeMutableRawBufferPointer(rebasing: out[valueStart..<size]).copyMemory(from: value)
            return size
        }
    }

    /// `fields` in the block layout (tests, and callers that hold fields as Strings).
    static func encode(_ fields: [HeaderField]) -> ByteBuffer {
        var storage = ByteBuffer()
        for field in fields {
            var name = field.name, value = field.value
            name.withUTF8 { name in
                value.withUTF8 { value in
                    append(name: UnsafeRawBufferPointer(name), value: UnsafeRawBufferPointer(value), to: &storage)
                }
            }
        }
        return storage
    }

    /// The fields in order.
    struct Iterator: IteratorProtocol {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        mutating func next() -> Field? {
            guard let (nameCount, valueCount) = RequestHeaderBlock.lengths(in: bytes, at: offset) else { return nil }
            let nameStart = offset + RequestHeaderBlock.fieldOverhead
            let valueStart = nameStart + nameCount
            offset = valueStart + valueCount
            return Field(name: UnsafeRawBufferPointer(rebasing: bytes[nameStart..<valueStart]),
                         value: UnsafeRawBufferPointer(rebasing: bytes[valueStart..<offset]))
        }
    }

    func makeIterator() -> Iterator { Iterator(bytes: bytes) }

    /// The name's and value's lengths of the field at `offset`; nil at the block's end.
    private static func lengths(in bytes: UnsafeRawBufferPointer, at offset: Int) -> (name: Int, value: Int)? {
        guard offset + fieldOverhead <= bytes.count else { return nil }
        return (Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))),
                Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))))
    }

    /// True when some field's name ends in `-bin`. One pass over the lengths, a 4-byte load per
    /// field: every call asks, nearly none has one.
    var hasBinaryNames: Bool {
        let suffix = UInt32(littleEndian: 0x6E69_622D)  // "-bin"
        var offset = 0
        while let (nameCount, valueCount) = Self.lengths(in: bytes, at: offset) {
            let nameEnd = offset + Self.fieldOverhead + nameCount
            if nameCount >= 4, bytes.loadUnaligned(fromByteOffset: nameEnd - 4, as: UInt32.self) == suffix { return true }
            offset = nameEnd + valueCount
        }
        return false
    }

    /// The value of the first field named `name`.
    func value(of name: StaticString) -> UnsafeRawBufferPointer? {
        first { $0.name.equals(name) }?.value
    }

    /// The fields as Strings (a plain HTTP request's head).
    var fields: [HeaderField] {
        map { HeaderField(name: HeaderText.name($0.name), value: HeaderText.value($0.value)) }
    }
}
