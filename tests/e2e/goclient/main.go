// Command goclient makes one HTTP request the way a Go service in a pod would: the
// standard library's net/http, through the pod's SOCKS5 proxy (ALL_PROXY).
//
//	goclient [-h2c] [-H 'name: value']... URL
//
// It prints one JSON object: proto, status, headers (lower-case names, values joined
// with ","), body. HTTP/1.1 by default; -h2c speaks unencrypted HTTP/2 with prior
// knowledge (the standard library's Transport.Protocols, Go 1.24+).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, "; ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "goclient: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var headers headerFlags
	flag.Var(&headers, "H", "request header 'name: value' (repeatable)")
	h2c := flag.Bool("h2c", false, "unencrypted HTTP/2 with prior knowledge")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: goclient [-H 'name: value']... URL")
	}
	transport := &http.Transport{}
	if proxy := os.Getenv("ALL_PROXY"); proxy != "" {
		u, err := url.Parse(proxy)
		if err != nil {
			fail("bad ALL_PROXY %q: %v", proxy, err)
		}
		// Go's SOCKS5 dialer hands host names to the proxy already (what socks5h means).
		if u.Scheme == "socks5h" {
			u.Scheme = "socks5"
		}
		transport.Proxy = http.ProxyURL(u)
	}
	if *h2c {
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true)
		transport.Protocols = protocols
	}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, flag.Arg(0), nil)
	if err != nil {
		fail("bad URL: %v", err)
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fail("bad header %q: expected 'name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("request failed: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fail("reading the body: %v", err)
	}
	received := map[string]string{}
	for name, values := range resp.Header {
		received[strings.ToLower(name)] = strings.Join(values, ",")
	}
	out := map[string]any{
		"proto":   resp.Proto,
		"status":  resp.StatusCode,
		"headers": received,
		"body":    string(body),
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing the answer: %v", err)
	}
}
