package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tlsDialError marks failures of the TLS handshake (including identity checks).
type tlsDialError struct{ err error }

func (e *tlsDialError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *tlsDialError) Unwrap() error { return e.err }

// countingConn counts bytes read from the raw TCP connection below TLS.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// dialedConn remembers a connection whose TLS handshake completed.
type dialedConn struct {
	tc          *tls.Conn
	raw         *countingConn
	atHandshake int64
}

// hboneClient multiplexes CONNECT streams over HTTP/2 connections to one server.
type hboneClient struct {
	server    string
	transport *http.Transport
	headers   http.Header

	mu     sync.Mutex
	dialed []dialedConn
}

// rejectedAfterHandshake reports whether a failed request looks like the
// server refusing our certificate (or ALPN) rather than an HTTP/2 failure.
// In TLS 1.3 the server verifies the client certificate after the client's
// handshake is complete, so a refusal surfaces later: as a TLS alert (sticky
// on the tls.Conn) or as a connection closed before the server sent a single
// byte after the handshake (an HTTP/2 server always sends SETTINGS). Only
// call this once the client is done: it disturbs live connections.
func (c *hboneClient) rejectedAfterHandshake(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.dialed {
		if d.raw.n.Load() == d.atHandshake {
			return true
		}
		// A received alert is sticky: Read returns it without touching the
		// socket; the past deadline keeps healthy connections from blocking.
		_ = d.tc.SetReadDeadline(time.Now())
		_, rerr := d.tc.Read(make([]byte, 1))
		if errors.As(rerr, &op) && op.Op == "remote error" {
			return true
		}
	}
	return false
}

func newHBONEClient(server string, cfg *tls.Config, headers http.Header) *hboneClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	c := &hboneClient{server: server, headers: headers}
	// The Transport appends "http/1.1" to TLSClientConfig.NextProtos when it
	// sets up HTTP/2; dial with a private copy so that we offer only "h2".
	dialCfg := cfg.Clone()
	c.transport = &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: true, // required for h2 when DialTLSContext is set
		// Our own TLS dial keeps ALPN exactly ["h2"] and sends no SNI; the
		// Transport would otherwise offer "h2,http/1.1" and set ServerName.
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			counted := &countingConn{Conn: raw}
			tc := tls.Client(counted, dialCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, &tlsDialError{err}
			}
			c.mu.Lock()
			c.dialed = append(c.dialed, dialedConn{tc: tc, raw: counted, atHandshake: counted.n.Load()})
			c.mu.Unlock()
			return tc, nil
		},
		DisableCompression:    true, // no accept-encoding header
		ResponseHeaderTimeout: 15 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}
	return c
}

// connect opens one CONNECT stream; body is the client->server direction.
// The returned response body is the server->client direction.
func (c *hboneClient) connect(ctx context.Context, authority string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+c.server, body)
	if err != nil {
		return nil, err
	}
	req.URL = &url.URL{Scheme: "https", Host: c.server}
	req.Host = authority // becomes :authority; Go sends no :scheme/:path for CONNECT
	req.ContentLength = -1
	for k, v := range c.headers {
		req.Header[k] = v
	}
	req.Header["User-Agent"] = []string{""} // suppress Go's default user-agent
	return c.transport.RoundTrip(req)
}

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func runClient(args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	server := fs.String("server", "", "HBONE server host:port")
	authority := fs.String("authority", "", "CONNECT target ip:port (:authority)")
	certFile := fs.String("cert", "", "certificate chain PEM (leaf first)")
	keyFile := fs.String("key", "", "private key PEM")
	rootsFile := fs.String("roots", "", "mesh root certificates PEM")
	expectSAN := fs.String("expect-san", "", "required server SPIFFE id")
	forwarded := fs.String("forwarded", "", "value of the forwarded request header")
	listen := fs.String("listen", "", "if set, accept TCP here and tunnel each connection as one CONNECT stream")
	var extra headerFlags
	fs.Var(&extra, "header", "extra request header 'name: value' (repeatable), e.g. baggage, traceparent")
	if err := fs.Parse(args); err != nil {
		return 64
	}
	if *server == "" || *authority == "" {
		return fatalf(64, "--server and --authority are required")
	}
	cfg, err := clientTLSConfig(*certFile, *keyFile, *rootsFile, *expectSAN)
	if err != nil {
		return fatalf(1, "tls config: %v", err)
	}
	headers := http.Header{}
	if *forwarded != "" {
		headers.Set("Forwarded", *forwarded)
	}
	for _, h := range extra {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fatalf(64, "--header %q: want 'name: value'", h)
		}
		headers.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	c := newHBONEClient(*server, cfg, headers)
	if *listen != "" {
		return runClientListener(c, *listen, *authority)
	}
	return runClientOnce(c, *authority)
}

func runClientOnce(c *hboneClient, authority string) int {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, os.Stdin)
		_ = pw.CloseWithError(err) // nil error: END_STREAM
	}()
	resp, err := c.connect(context.Background(), authority, pr)
	if err != nil {
		var te *tlsDialError
		if errors.As(err, &te) {
			return fatalf(3, "%v", te)
		}
		if c.rejectedAfterHandshake(err) {
			return fatalf(3, "tls: server rejected the connection after the handshake: %v", err)
		}
		return fatalf(1, "connect: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "status=%d\n", resp.StatusCode)
		return 2
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fatalf(1, "stream: %v", err)
	}
	return 0
}

func runClientListener(c *hboneClient, listen, authority string) int {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fatalf(1, "listen: %v", err)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go tunnel(c, conn.(*net.TCPConn), authority)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = ln.Close()
	c.transport.CloseIdleConnections()
	return 0
}

// tunnel carries one accepted TCP connection over one CONNECT stream.
func tunnel(c *hboneClient, conn *net.TCPConn, authority string) {
	defer conn.Close()
	pr, pw := io.Pipe()
	uploadDone := make(chan struct{})
	go func() {
		defer close(uploadDone)
		_, err := io.Copy(pw, conn)
		_ = pw.CloseWithError(err) // local half-close -> END_STREAM
	}()
	resp, err := c.connect(context.Background(), authority, pr)
	if err != nil {
		logger.Printf("STREAM local=%s authority=%s error=%q", conn.RemoteAddr(), authority, err.Error())
		return
	}
	defer resp.Body.Close()
	logger.Printf("STREAM local=%s authority=%s status=%d", conn.RemoteAddr(), authority, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		return
	}
	if _, err := io.Copy(conn, resp.Body); err != nil {
		logger.Printf("STREAM local=%s reset=%q", conn.RemoteAddr(), err.Error())
		_ = conn.SetLinger(0)
		return
	}
	_ = conn.CloseWrite() // END_STREAM -> local half-close
	<-uploadDone
}
