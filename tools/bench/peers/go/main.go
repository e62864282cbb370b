// grpc-go peer for make bench-peers: the stock grpc-go server with the stock health service
// (google.golang.org/grpc/health), default options, on 127.0.0.1 only. Prints
// "listening on 127.0.0.1:PORT" once bound. Built offline from Debian's golang-google-grpc-dev
// (GOPATH=/usr/share/gocode, GO111MODULE=off) by tools/bench/peers/build.sh.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.Parse()

	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer() // "" is SERVING by default
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)

	fmt.Printf("listening on %s\n", lis.Addr().String())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; srv.Stop() }()
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
