// protoc-c's headers include <protobuf-c/protobuf-c.h> textually, so Clang attributes the
// protobuf-c declarations to CFlowdProtos (which re-exports them); CProtobufC is imported
// for the case where it owns them.
package import CFlowdProtos
internal import CProtobufC

/// Decoding and encoding of protoc-c generated messages, hardened for untrusted input
/// (DESIGN.md, "protobuf-c on untrusted input").
///
/// `decode` first walks the wire bytes guided by the message descriptors (iteratively) and
/// rejects invalid UTF-8 and NULs in `string` fields, nesting deeper than
/// `DecodingLimits.maxDepth`, and malformed framing; only then does protobuf-c unpack the
/// bytes, through an allocator with a byte budget. The unpacked message lives only for the
/// duration of `body` and is freed with the same allocator.
///
/// `encode` packs a message that the caller builds in a `ProtobufCArena`, which owns every
/// string, array and sub-message of it and frees them after packing.
///
/// A service in another target uses it like this (the test-only Control service):
///
/// ```swift
/// import Codec
/// import CProtobufC
/// import CFlowdTestingProtos
///
/// func handle(_ bytes: [UInt8]) throws(CodecError) -> [UInt8] {
///     let (count, payload) = try ProtobufCCodec.decode(
///         bytes, as: Flowd__Testing__V1__ControlRequest.self,
///         initializer: flowd__testing__v1__control_request__init, limits: DecodingLimits()
///     ) { request in
///         (request.pointee.response_count, ProtobufCCodec.bytes(request.pointee.payload))
///     }
///     return ProtobufCCodec.encode { arena in
///         let response = arena.message(flowd__testing__v1__control_response__init)
///         response.pointee.index = count
///         response.pointee.payload = arena.bytes(payload)
///         return response
///     }
/// }
/// ```
package enum ProtobufCCodec {
    /// Checks `bytes` against `descriptor`, unpacks them within the allocation budget of
    /// `limits`, and passes the message to `body`. The message and everything it points to
    /// are freed when `body` returns: copy what you need out of it.
    package static func decode<T>(
        _ bytes: [UInt8],
        descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        limits: DecodingLimits,
        _ body: (UnsafePointer<ProtobufCMessage>) throws(CodecError) -> T
    ) throws(CodecError) -> T {
        try bytes.withUnsafeBufferPointer { (buffer) throws(CodecError) -> T in
            try WireCheck.run(buffer, root: descriptor, maxDepth: limits.maxDepth)
            var budget = AllocationBudget(limit: limits.allocationBudget(forInputSize: buffer.count))
            return try withUnsafeMutablePointer(to: &budget) { (budget) throws(CodecError) -> T in
                var allocator = ProtobufCAllocator(
                    alloc: { data, size in AllocationBudget.allocate(data, size) },
                    free: { data, pointer in AllocationBudget.free(data, pointer) },
                    allocator_data: UnsafeMutableRawPointer(budget))
                return try withUnsafeMutablePointer(to: &allocator) { (allocator) throws(CodecError) -> T in
                    guard let message = protobuf_c_message_unpack(
                        descriptor, allocator, buffer.count, buffer.baseAddress)
                    else {
                        assert(budget.pointee.live == 0, "protobuf-c kept memory after a failed unpack")
                        let name = String(cString: descriptor.pointee.name)
                        if budget.pointee.exhausted {
                            throw CodecError(
                                code: .allocationBudgetExceeded,
                                message: "unpacking \(buffer.count) bytes of \(name) needs more than "
                                    + "the allocation budget of \(budget.pointee.limit) bytes",
                                field: name)
                        }
                        throw CodecError(code: .malformed, message: "protobuf-c rejected the bytes of \(name)",
                                         field: name)
                    }
                    defer {
                        protobuf_c_message_free_unpacked(message, allocator)
                        assert(budget.pointee.live == 0, "free_unpacked left memory allocated")
                    }
                    return try body(UnsafePointer(message))
                }
            }
        }
    }

    /// `decode` for a generated message type `M`, whose descriptor is found through its
    /// generated `*__init` function.
    package static func decode<M, T>(
        _ bytes: [UInt8],
        as type: M.Type,
        initializer: (UnsafeMutablePointer<M>?) -> Void,
        limits: DecodingLimits,
        _ body: (UnsafePointer<M>) throws(CodecError) -> T
    ) throws(CodecError) -> T {
        if bytes.isEmpty {
            // The encoding of a message whose fields all hold their defaults (a health check of
            // the server as a whole): what unpacking would build, without unpacking.
            return try withUnsafeTemporaryAllocation(of: M.self, capacity: 1) { (message) throws(CodecError) -> T in
                initializer(message.baseAddress!)
                return try body(message.baseAddress!)
            }
        }
        return try decode(bytes, descriptor: descriptor(of: M.self, initializer: initializer), limits: limits) {
            (message) throws(CodecError) -> T in
            try body(UnsafeRawPointer(message).assumingMemoryBound(to: M.self))
        }
    }

    /// The protobuf encoding of a message built by the caller (never an unpacked one that
    /// has been freed). Strings must be NUL-terminated and counts must match their arrays.
    package static func encode(_ message: UnsafePointer<ProtobufCMessage>) -> [UInt8] {
        precondition(message.pointee.descriptor != nil, "message not initialised with its generated __init")
        let size = protobuf_c_message_get_packed_size(message)
        if size <= smallMessageSize {
            // Packed on the stack, then copied into an array made by a specialised initializer:
            // `Array(unsafeUninitializedCapacity:)` reaches the standard library's unspecialised
            // allocation, whose look-up of the array's storage type cost 370 instructions, more
            // than packing a small message.
            return withUnsafeTemporaryAllocation(byteCount: smallMessageSize, alignment: 1) { buffer in
                let count = size == 0 ? 0 : protobuf_c_message_pack(message, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
                precondition(count == size, "protobuf-c packed \(count) bytes, announced \(size)")
                return [UInt8](UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
        }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = size == 0 ? 0 : protobuf_c_message_pack(message, buffer.baseAddress)
            precondition(count == size, "protobuf-c packed \(count) bytes, announced \(size)")
        }
    }

    /// The largest encoding `encode` packs on the stack (what `withUnsafeTemporaryAllocation`
    /// always places there).
    static let smallMessageSize = 1024

    /// Builds a message in a fresh arena with `build`, packs it, then frees the arena.
    ///
    /// The arena's first slab is on this call's stack (`ProtobufCArena.stackSlabSize`): a
    /// typical response fits in it, and its message then costs no `malloc` at all (a 4 KiB
    /// slab and the arena's block list were two allocations per response).
    package static func encode<M>(_ build: (ProtobufCArena) -> UnsafeMutablePointer<M>) -> [UInt8] {
        withUnsafeTemporaryAllocation(byteCount: ProtobufCArena.stackSlabSize, alignment: ProtobufCArena.slabAlignment) { slab in
            let arena = ProtobufCArena(firstSlab: slab)
            return withExtendedLifetime(arena) {
                encode(UnsafeRawPointer(build(arena)).assumingMemoryBound(to: ProtobufCMessage.self))
            }
        }
    }

    /// The descriptor of the generated message type `M`, read from a message initialised by
    /// its `*__init` function. (`withUnsafePointer(to: x__descriptor)` would give the address
    /// of a temporary copy in release builds.)
    package static func descriptor<M>(
        of type: M.Type, initializer: (UnsafeMutablePointer<M>?) -> Void
    ) -> UnsafePointer<ProtobufCMessageDescriptor> {
        withUnsafeTemporaryAllocation(of: M.self, capacity: 1) { message in
            initializer(message.baseAddress!)
            return UnsafeRawPointer(message.baseAddress!).load(as: ProtobufCMessage.self).descriptor
        }
    }

    /// A `string` field of an unpacked message ("" for NULL).
    package static func string(_ pointer: UnsafePointer<CChar>?) -> String {
        pointer.map { String(cString: $0) } ?? ""
    }

    /// A `bytes` field of an unpacked message.
    package static func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard data.len > 0, let start = data.data else { return [] }
        return Array(UnsafeBufferPointer(start: start, count: data.len))
    }

    /// The elements of a repeated field (`n_x`, `x`) of an unpacked message.
    package static func elements<E>(_ start: UnsafeMutablePointer<E>?, count: Int) -> UnsafeBufferPointer<E> {
        UnsafeBufferPointer(start: count > 0 ? start : nil, count: count > 0 ? count : 0)
    }

    /// The messages of a repeated message field (`n_x`, `x`) of an unpacked message.
    package static func messages<M>(
        _ start: UnsafeMutablePointer<UnsafeMutablePointer<M>?>?, count: Int
    ) -> [UnsafeMutablePointer<M>] {
        elements(start, count: count).compactMap { $0 }
    }
}

/// Owns the C memory of a message being built for `ProtobufCCodec.encode`: strings, byte
/// buffers, arrays and sub-messages, all freed together when the arena goes away.
package final class ProtobufCArena {
    /// Slabs the pieces are carved from (one `malloc` for a typical message instead of one or
    /// two per string and sub-message), plus pieces too large for a slab.
    private var blocks: [UnsafeMutableRawPointer] = []
    private var cursor: UnsafeMutableRawPointer?
    private var remaining = 0
    private static let slabSize = 4096
    fileprivate static let slabAlignment = 16
    /// The first slab, which `ProtobufCCodec.encode` takes from its stack: at most 1 KiB, the
    /// most `withUnsafeTemporaryAllocation` always places on the stack (above, it asks the
    /// runtime, which on the event loop's threads said no: a malloc and a free per response).
    fileprivate static let stackSlabSize = 1024

    /// An arena whose pieces come from `firstSlab` (not owned: it must outlive the arena's
    /// use) until it is full, then from slabs of its own.
    fileprivate init(firstSlab: UnsafeMutableRawBufferPointer) {
        precondition(Int(bitPattern: firstSlab.baseAddress) % Self.slabAlignment == 0, "misaligned first slab")
        cursor = firstSlab.baseAddress
        remaining = firstSlab.count
    }

    deinit {
        for block in blocks { block.deallocate() }
    }

    private func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer {
        precondition(alignment <= Self.slabAlignment, "alignment \(alignment) above the arena's")
        let count = max(byteCount, 1)
        if let cursor {
            let aligned = cursor.alignedUp(toMultipleOf: alignment)
            let needed = (aligned - cursor) + count
            if needed <= remaining {
                self.cursor = aligned + count
                remaining -= needed
                return aligned
            }
        }
        if count > Self.slabSize / 4 {
            let block = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: Self.slabAlignment)
            blocks.append(block)
            return block
        }
        let slab = UnsafeMutableRawPointer.allocate(byteCount: Self.slabSize, alignment: Self.slabAlignment)
        blocks.append(slab)
        cursor = slab + count
        remaining = Self.slabSize - count
        return slab
    }

    /// A NUL-terminated copy of `text`. protobuf-c strings end at the first NUL, so a NUL
    /// inside `text` is sent as U+FFFD rather than silently cutting the string short.
    package func string(_ text: String) -> UnsafeMutablePointer<CChar> {
        var text = text
        return text.withUTF8 { utf8 -> UnsafeMutablePointer<CChar> in
            guard !utf8.contains(0) else {
                return copy(utf8.flatMap { $0 == 0 ? [0xEF, 0xBF, 0xBD] : [$0] })
            }
            return copy(utf8)
        }
    }

    private func copy(_ utf8: some Collection<UInt8>) -> UnsafeMutablePointer<CChar> {
        let block = allocate(byteCount: utf8.count + 1, alignment: 1)
        let bytes = UnsafeMutableRawBufferPointer(start: block, count: utf8.count + 1)
        _ = bytes.initializeMemory(as: UInt8.self, from: utf8)
        bytes[utf8.count] = 0
        return block.bindMemory(to: CChar.self, capacity: utf8.count + 1)
    }

    /// A `bytes` field value holding a copy of `data`.
    package func bytes(_ data: [UInt8]) -> ProtobufCBinaryData {
        guard !data.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let block = allocate(byteCount: data.count, alignment: 1)
        block.copyMemory(from: data, byteCount: data.count)
        return ProtobufCBinaryData(len: data.count, data: block.bindMemory(to: UInt8.self, capacity: data.count))
    }

    /// A message of generated type `M`, initialised by its `*__init` function.
    package func message<M>(_ initializer: (UnsafeMutablePointer<M>?) -> Void) -> UnsafeMutablePointer<M> {
        let message = allocate(byteCount: MemoryLayout<M>.size, alignment: MemoryLayout<M>.alignment)
            .bindMemory(to: M.self, capacity: 1)
        initializer(message)
        return message
    }

    /// A C array holding `elements` (for repeated scalar fields), nil when empty.
    package func array<E>(_ elements: [E]) -> UnsafeMutablePointer<E>? {
        guard !elements.isEmpty else { return nil }
        let array = allocate(byteCount: MemoryLayout<E>.stride * elements.count, alignment: MemoryLayout<E>.alignment)
            .bindMemory(to: E.self, capacity: elements.count)
        array.initialize(from: elements, count: elements.count)
        return array
    }

    /// A C array of pointers (for repeated message and string fields), nil when empty.
    package func pointers<E>(_ elements: [UnsafeMutablePointer<E>]) -> UnsafeMutablePointer<UnsafeMutablePointer<E>?>? {
        array(elements.map { Optional($0) })
    }
}

// MARK: - The allocation budget

/// Per-call state of the budgeted allocator, reached through `allocator_data`. Every block
/// carries its size in a header so that `free` can give the bytes back: the budget bounds the
/// bytes live at any moment (protobuf-c frees its scratch slabs while unpacking).
private struct AllocationBudget {
    static let headerSize = 16

    let limit: Int
    var live = 0
    var exhausted = false

    init(limit: Int) { self.limit = limit }

    static func allocate(_ data: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
        let budget = data!.assumingMemoryBound(to: AllocationBudget.self)
        let (charged, overflow) = size.addingReportingOverflow(headerSize)
        guard size >= 0, !overflow, charged <= budget.pointee.limit - budget.pointee.live else {
            budget.pointee.exhausted = true
            return nil
        }
        let block = UnsafeMutableRawPointer.allocate(byteCount: charged, alignment: headerSize)
        block.storeBytes(of: charged, as: Int.self)
        budget.pointee.live += charged
        return block + headerSize
    }

    static func free(_ data: UnsafeMutableRawPointer?, _ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let budget = data!.assumingMemoryBound(to: AllocationBudget.self)
        let block = pointer - headerSize
        budget.pointee.live -= block.load(as: Int.self)
        block.deallocate()
    }
}

// MARK: - The wire check

/// The pre-scan of untrusted bytes, guided by the message descriptors. Iterative: the depth of
/// the input cannot grow the stack. Length-delimited fields that the descriptor does not know
/// are skipped without looking inside (protobuf-c keeps them as opaque bytes).
private enum WireCheck {
    private struct Frame {
        var descriptor: UnsafePointer<ProtobufCMessageDescriptor>
        var end: Int
        /// The field holding this message; nil for the top-level message.
        var field: UnsafePointer<ProtobufCFieldDescriptor>?
    }

    static func run(
        _ bytes: UnsafeBufferPointer<UInt8>, root: UnsafePointer<ProtobufCMessageDescriptor>, maxDepth: Int
    ) throws(CodecError) {
        var stack = [Frame(descriptor: root, end: bytes.count, field: nil)]
        if maxDepth < 1 {
            throw error(.nestingTooDeep, "the nesting limit (\(maxDepth)) leaves no room for the message",
                        stack, nil)
        }
        var position = 0
        while let frame = stack.last {
            if position == frame.end {
                stack.removeLast()
                continue
            }
            guard let key = varint(bytes, &position, end: frame.end, maxBytes: 5), key <= UInt32.max else {
                throw error(.malformed, "bad field key at offset \(position)", stack, nil)
            }
            let number = UInt32(key >> 3)
            let wireType = key & 7
            guard number != 0 else {
                throw error(.malformed, "field number 0 at offset \(position)", stack, nil)
            }
            let field = protobuf_c_message_descriptor_get_field(frame.descriptor, number)
            switch wireType {
            case 0:
                guard varint(bytes, &position, end: frame.end, maxBytes: 10) != nil else {
                    throw error(.malformed, "bad varint at offset \(position)", stack, field)
                }
                try expect(field, accepts: .varint, stack)
            case 1, 5:
                let width = wireType == 1 ? 8 : 4
                guard frame.end - position >= width else {
                    throw error(.malformed, "truncated fixed-width field at offset \(position)", stack, field)
                }
                position += width
                try expect(field, accepts: wireType == 1 ? .fixed64 : .fixed32, stack)
            case 2:
                guard let length = varint(bytes, &position, end: frame.end, maxBytes: 5),
                      length <= UInt64(frame.end - position)
                else {
                    throw error(.malformed, "bad or truncated length at offset \(position)", stack, field)
                }
                let end = position + Int(length)
                if let field {
                    switch field.pointee.type {
                    case PROTOBUF_C_TYPE_MESSAGE:
                        guard stack.count < maxDepth else {
                            throw error(.nestingTooDeep, "sub-messages nested deeper than \(maxDepth)", stack, field)
                        }
                        let descriptor = field.pointee.descriptor.assumingMemoryBound(
                            to: ProtobufCMessageDescriptor.self)
                        stack.append(Frame(descriptor: descriptor, end: end, field: field))
                        continue
                    case PROTOBUF_C_TYPE_STRING:
                        if let (code, offset) = textProblem(bytes, from: position, to: end) {
                            let what = code == .embeddedNUL ? "a NUL byte" : "invalid UTF-8"
                            throw error(code, "string field holds \(what) at offset \(offset)", stack, field)
                        }
                    case PROTOBUF_C_TYPE_BYTES:
                        break
                    default:
                        try expect(field, accepts: .packed, stack)
                    }
                }
                position = end
            case 3, 4:
                throw error(.malformed, "group wire type \(wireType) (unsupported) at offset \(position)", stack, field)
            default:
                throw error(.malformed, "invalid wire type \(wireType) at offset \(position)", stack, field)
            }
        }
    }

    private enum WireShape { case varint, fixed64, fixed32, packed }

    /// protobuf-c rejects a known field sent with a wire type that its type does not use;
    /// rejecting it here names the field.
    private static func expect(
        _ field: UnsafePointer<ProtobufCFieldDescriptor>?, accepts shape: WireShape, _ stack: [Frame]
    ) throws(CodecError) {
        guard let field else { return }
        let type = field.pointee.type
        let fits: Bool
        switch type {
        case PROTOBUF_C_TYPE_INT32, PROTOBUF_C_TYPE_SINT32, PROTOBUF_C_TYPE_UINT32,
             PROTOBUF_C_TYPE_INT64, PROTOBUF_C_TYPE_SINT64, PROTOBUF_C_TYPE_UINT64,
             PROTOBUF_C_TYPE_BOOL, PROTOBUF_C_TYPE_ENUM:
            fits = shape == .varint || (shape == .packed && field.pointee.label == PROTOBUF_C_LABEL_REPEATED)
        case PROTOBUF_C_TYPE_SFIXED64, PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_DOUBLE:
            fits = shape == .fixed64 || (shape == .packed && field.pointee.label == PROTOBUF_C_LABEL_REPEATED)
        case PROTOBUF_C_TYPE_SFIXED32, PROTOBUF_C_TYPE_FIXED32, PROTOBUF_C_TYPE_FLOAT:
            fits = shape == .fixed32 || (shape == .packed && field.pointee.label == PROTOBUF_C_LABEL_REPEATED)
        default:
            fits = false
        }
        if !fits {
            throw error(.malformed, "wrong wire type for the field's type", stack, field)
        }
    }

    /// Reads a base-128 varint of at most `maxBytes` bytes that fits in 64 bits.
    private static func varint(
        _ bytes: UnsafeBufferPointer<UInt8>, _ position: inout Int, end: Int, maxBytes: Int
    ) -> UInt64? {
        var value: UInt64 = 0
        var index = 0
        while index < maxBytes, position + index < end {
            let byte = bytes[position + index]
            if index == 9 && byte > 1 { return nil }
            value |= UInt64(byte & 0x7F) << (7 * UInt64(index))
            index += 1
            if byte & 0x80 == 0 {
                position += index
                return value
            }
        }
        return nil
    }

    /// The first NUL or invalid UTF-8 sequence in `bytes[from..<to]` and its offset.
    private static func textProblem(
        _ bytes: UnsafeBufferPointer<UInt8>, from: Int, to end: Int
    ) -> (CodecError.Code, Int)? {
        var i = from
        while i < end {
            let lead = bytes[i]
            if lead < 0x80 {
                if lead == 0 { return (.embeddedNUL, i) }
                i += 1
                continue
            }
            // The allowed range of the second byte depends on the lead byte (no overlong
            // forms, no surrogates, nothing above U+10FFFF); later bytes are 80...BF.
            let count: Int
            var second: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: count = 2
            case 0xE0: count = 3; second = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: count = 3
            case 0xED: count = 3; second = 0x80...0x9F
            case 0xF0: count = 4; second = 0x90...0xBF
            case 0xF1...0xF3: count = 4
            case 0xF4: count = 4; second = 0x80...0x8F
            default: return (.invalidUTF8, i)
            }
            guard end - i >= count, second.contains(bytes[i + 1]) else { return (.invalidUTF8, i) }
            for k in 2..<count where !(0x80...0xBF).contains(bytes[i + k]) {
                return (.invalidUTF8, i)
            }
            i += count
        }
        return nil
    }

    /// A `CodecError` naming the field as a dotted path from the top-level message:
    /// `google.rpc.Status.details.type_url`.
    private static func error(
        _ code: CodecError.Code, _ message: String, _ stack: [Frame],
        _ field: UnsafePointer<ProtobufCFieldDescriptor>?
    ) -> CodecError {
        var path = String(cString: stack[0].descriptor.pointee.name)
        for frame in stack.dropFirst() {
            if let holder = frame.field { path += "." + String(cString: holder.pointee.name) }
        }
        if let field { path += "." + String(cString: field.pointee.name) }
        return CodecError(code: code, message: message, field: path)
    }
}
