// h2app: an HTTP/1.1 and h2c (HTTP/2 without TLS, prior knowledge) server on Go's net/http,
// a peer we did not write, for the waypoint's HTTP/2 upstream. Listens on $POD_IP:-addr.
// Every answer is "<pod> <protocol> <path>\n" with a trailer X-Trailer: done.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	port := flag.String("port", "8080", "port to listen on")
	flag.Parse()
	host := os.Getenv("POD_IP")
	if host == "" {
		host = "127.0.0.1"
	}
	name := os.Getenv("POD_NAME")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Trailer")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %s\n", name, r.Proto, r.URL.Path)
		w.Header().Set("X-Trailer", "done")
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	server := &http.Server{
		Addr:      net.JoinHostPort(host, *port),
		Handler:   handler,
		Protocols: &protocols,
	}
	log.Printf("h2app %s on %s", name, server.Addr)
	log.Fatal(server.ListenAndServe())
}
