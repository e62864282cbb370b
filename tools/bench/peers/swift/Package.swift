// swift-tools-version:6.1
// grpc-swift-2 peer for make bench-peers: GRPCServer + HTTP2ServerTransport.Posix serving
// grpc.health.v1.Health, built in release by tools/bench/peers/build.sh from the package
// versions below. The stubs in Sources/GRPCSwiftHealth/Generated were generated once by
// protoc-gen-swift and protoc-gen-grpc-swift-2 (tools/bench/peers/gen-swift-stubs.sh) and are
// committed: the plugins' build is slow.
import PackageDescription

let package = Package(
  name: "GRPCSwiftHealth",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
  ],
  targets: [
    .executableTarget(
      name: "GRPCSwiftHealth",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    )
  ]
)
