// Command gopeer is an HBONE test peer (server, client and benchmark) built only
// on Go's standard library: crypto/tls for mutual TLS 1.3 and the HTTP/2
// implementation bundled in net/http. It exists so that the Python HBONE
// implementation can be tested against an HTTP/2 stack we did not write.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  gopeer server --listen 127.0.0.1:0 --cert chain.pem --key key.pem --roots roots.pem
                [--trust-domain cluster.local] [--allow-targets 127.0.0.0/8,...]
  gopeer client --server HOST:PORT --authority IP:PORT --cert chain.pem --key key.pem
                --roots roots.pem --expect-san spiffe://... [--forwarded 'for="ip:port"']
                [--header 'name: value']... [--listen 127.0.0.1:0]
  gopeer bench  --mode throughput|setup --cert chain.pem --key key.pem --roots roots.pem
                [--streams N --seconds S] [--streams-total N --concurrency C]
                [--server HOST:PORT --expect-san spiffe://...]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(64)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "server":
		os.Exit(runServer(args))
	case "client":
		os.Exit(runClient(args))
	case "bench":
		os.Exit(runBench(args))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "gopeer: unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(64)
	}
}

// fatalf prints an error and returns the exit code, for use as `return fatalf(...)`.
func fatalf(code int, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", a...)
	return code
}
