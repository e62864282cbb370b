public import Codec

/// gRPC server reflection, `grpc.reflection.v1` and `grpc.reflection.v1alpha` (the same
/// messages), over one bidirectional stream per call: one response per request, in order, as
/// grpc-go answers (notes/tls-fuzz-reflection-metrics.md §3). Files are served from the
/// descriptor set that tools/gen-protos.sh builds from proto/ (`FlowdDescriptorSet`); a file
/// comes with those of its transitive dependencies that this stream has not been sent yet.
public struct ReflectionService: RegistrableRPCService {
    private let index: DescriptorIndex

    /// `descriptorSet`: a serialized `google.protobuf.FileDescriptorSet` (dependencies first).
    public init(descriptorSet: [UInt8] = FlowdDescriptorSet.bytes) {
        index = DescriptorIndex(descriptorSet)
    }

    /// The services the descriptor set defines, sorted.
    public var serviceNames: [String] { index.services }

    public func registerMethods(with router: inout RPCRouter) {
        for package in ["grpc.reflection.v1", "grpc.reflection.v1alpha"] {
            router.registerBidirectionalStreaming(
                MethodDescriptor(service: "\(package).ServerReflection", method: "ServerReflectionInfo"),
                request: ReflectionV1.Request.self, response: ReflectionV1.Response.self
            ) { [index] requests, writer, _ in
                var sent = Set<String>()
                for try await request in requests {
                    guard let kind = request.kind else {
                        throw RPCError(code: .invalidArgument, message: "the request sets none of message_request's fields")
                    }
                    let body = index.answer(kind, alreadySent: &sent)
                    try await writer.write(ReflectionV1.Response(validHost: request.host, originalRequest: request, body: body))
                }
                return Metadata()
            }
        }
    }
}

/// The files, symbols and services of a descriptor set.
struct DescriptorIndex: Sendable {
    /// Serialized `FileDescriptorProto`s by file name.
    private(set) var files: [String: [UInt8]] = [:]
    private(set) var dependencies: [String: [String]] = [:]
    /// Fully-qualified names of messages (nested too), enums, services, methods and fields,
    /// with the file that declares them.
    private(set) var symbols: [String: String] = [:]
    private(set) var messageTypes: Set<String> = []
    private(set) var services: [String] = []

    init(_ set: [UInt8]) {
        for (field, value) in ProtoWire.fields(set[...]) where field == 1 {
            guard case .bytes(let file) = value else { continue }
            add(file: file)
        }
        services.sort()
    }

    private mutating func add(file: ArraySlice<UInt8>) {
        var name = "", package = ""
        var deps: [String] = []
        for (field, value) in ProtoWire.fields(file) {
            switch (field, value) {
            case (1, .bytes(let b)): name = ProtoWire.string(b)
            case (2, .bytes(let b)): package = ProtoWire.string(b)
            case (3, .bytes(let b)): deps.append(ProtoWire.string(b))
            default: break
            }
        }
        files[name] = Array(file)
        dependencies[name] = deps
        let prefix = package.isEmpty ? "" : package + "."
        for (field, value) in ProtoWire.fields(file) {
            guard case .bytes(let body) = value else { continue }
            switch field {
            case 4: addMessage(body, prefix: prefix, file: name)
            case 5: addNamed(body, prefix: prefix, file: name)
            case 6:
                let service = prefix + ProtoWire.name(of: body)
                symbols[service] = name
                services.append(service)
                for (f, v) in ProtoWire.fields(body) where f == 2 {
                    if case .bytes(let method) = v { symbols[service + "." + ProtoWire.name(of: method)] = name }
                }
            default: break
            }
        }
    }

    private mutating func addMessage(_ body: ArraySlice<UInt8>, prefix: String, file: String) {
        let full = prefix + ProtoWire.name(of: body)
        symbols[full] = file
        messageTypes.insert(full)
        for (field, value) in ProtoWire.fields(body) {
            guard case .bytes(let inner) = value else { continue }
            switch field {
            case 2, 8: symbols[full + "." + ProtoWire.name(of: inner)] = file  // fields, oneofs
            case 3: addMessage(inner, prefix: full + ".", file: file)
            case 4: addNamed(inner, prefix: full + ".", file: file)
            default: break
            }
        }
    }

    private mutating func addNamed(_ body: ArraySlice<UInt8>, prefix: String, file: String) {
        symbols[prefix + ProtoWire.name(of: body)] = file
    }

    /// The response body for one request; `sent` is the files this stream already has.
    func answer(_ kind: ReflectionV1.Request.Kind, alreadySent sent: inout Set<String>) -> ReflectionV1.Response.Body {
        let notFound = 5  // google.rpc.Code.NOT_FOUND
        switch kind {
        case .listServices:
            return .services(services)
        case .fileByFilename(let name):
            guard files[name] != nil else { return .error(code: Int32(notFound), message: "file not found: \(name)") }
            return .fileDescriptors(withDependencies(name, sent: &sent))
        case .fileContainingSymbol(let symbol):
            guard let file = symbols[symbol] else { return .error(code: Int32(notFound), message: "symbol not found: \(symbol)") }
            return .fileDescriptors(withDependencies(file, sent: &sent))
        case .fileContainingExtension(let type, let number):
            return .error(code: Int32(notFound), message: "extension not found: \(type) \(number)")
        case .allExtensionNumbersOfType(let type):
            guard messageTypes.contains(type) else { return .error(code: Int32(notFound), message: "type not found: \(type)") }
            return .extensionNumbers(baseType: type, numbers: [])
        }
    }

    /// `name` (always) and, breadth first, its dependencies not in `sent`.
    private func withDependencies(_ name: String, sent: inout Set<String>) -> [[UInt8]] {
        var result: [[UInt8]] = []
        var queue = [name]
        var seen: Set<String> = [name]
        while !queue.isEmpty {
            let next = queue.removeFirst()
            if next == name || !sent.contains(next), let bytes = files[next] {
                result.append(bytes)
                sent.insert(next)
            }
            for dependency in dependencies[next] ?? [] where seen.insert(dependency).inserted {
                queue.append(dependency)
            }
        }
        return result
    }
}

/// Just enough of the protobuf wire format to walk descriptor protos (trusted, generated input).
enum ProtoWire {
    enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed
    }

    /// The fields of a message in order; stops at the first malformed byte.
    static func fields(_ bytes: ArraySlice<UInt8>) -> [(Int, Value)] {
        var result: [(Int, Value)] = []
        var rest = bytes
        func varint() -> UInt64? {
            var value: UInt64 = 0, shift: UInt64 = 0
            while let byte = rest.first, shift < 64 {
                rest = rest.dropFirst()
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while !rest.isEmpty {
            guard let key = varint() else { break }
            let field = Int(key >> 3)
            switch key & 7 {
            case 0:
                guard let value = varint() else { return result }
                result.append((field, .varint(value)))
            case 1:
                guard rest.count >= 8 else { return result }
                rest = rest.dropFirst(8)
                result.append((field, .fixed))
            case 2:
                guard let length = varint(), length <= UInt64(rest.count) else { return result }
                result.append((field, .bytes(rest.prefix(Int(length)))))
                rest = rest.dropFirst(Int(length))
            case 5:
                guard rest.count >= 4 else { return result }
                rest = rest.dropFirst(4)
                result.append((field, .fixed))
            default:
                return result
            }
        }
        return result
    }

    static func string(_ bytes: ArraySlice<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }

    /// Field 1 (`name`) of a descriptor proto.
    static func name(of message: ArraySlice<UInt8>) -> String {
        for (field, value) in fields(message) where field == 1 {
            if case .bytes(let b) = value { return string(b) }
        }
        return ""
    }
}
