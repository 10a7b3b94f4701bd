package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var logger = log.New(os.Stderr, "", log.Ldate|log.Ltime|log.Lmicroseconds)

// handshakeListener performs the TLS handshake itself so that every rejected
// handshake is logged with its reason, and hands only established *tls.Conn
// values (with h2 negotiated) to http.Server.
type handshakeListener struct {
	inner  net.Listener
	config *tls.Config
	conns  chan net.Conn
	errc   chan error
	once   sync.Once
	done   chan struct{}
	quiet  bool
}

func newHandshakeListener(inner net.Listener, config *tls.Config, quiet bool) *handshakeListener {
	l := &handshakeListener{inner: inner, config: config, conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{}), quiet: quiet}
	go l.acceptLoop()
	return l
}

func (l *handshakeListener) acceptLoop() {
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		go l.handshake(raw)
	}
}

func (l *handshakeListener) handshake(raw net.Conn) {
	// Record what the client offered (SNI, ALPN) for the log lines.
	sni, offered := "", []string(nil)
	cfg := l.config.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, offered = hello.ServerName, hello.SupportedProtos
		return nil, nil
	}
	tc := tls.Server(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		logger.Printf("HANDSHAKE-REJECT remote=%s sni=%q alpn_offered=%q reason=%q", raw.RemoteAddr(), sni, strings.Join(offered, ","), err.Error())
		_ = raw.Close()
		return
	}
	if !l.quiet {
		cs := tc.ConnectionState()
		logger.Printf("ACCEPT remote=%s peer=%s sni=%q alpn_offered=%q alpn=%s", raw.RemoteAddr(), peerID(&cs), sni, strings.Join(offered, ","), cs.NegotiatedProtocol)
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		return nil, err
	}
}

func (l *handshakeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.inner.Close()
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

// connectHandler implements the HBONE server side of one CONNECT stream.
type connectHandler struct {
	allow       []*net.IPNet
	dialTimeout time.Duration
	quiet       bool
	logHeaders  bool
}

func parseCIDRs(s string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		_, n, err := net.ParseCIDR(part)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (h *connectHandler) allowed(ip net.IP) bool {
	for _, n := range h.allow {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func (h *connectHandler) logStream(r *http.Request, status int, detail string) {
	if h.quiet {
		return
	}
	fwd := r.Header.Get("Forwarded")
	if fwd == "" {
		fwd = "-"
	}
	line := fmt.Sprintf("CONNECT authority=%s peer=%s forwarded=%s status=%d remote=%s", r.Host, peerID(r.TLS), strconv.Quote(fwd), status, r.RemoteAddr)
	if detail != "" {
		line += " detail=" + strconv.Quote(detail)
	}
	if h.logHeaders {
		hdrs, _ := json.Marshal(r.Header)
		line += " headers=" + string(hdrs)
	}
	logger.Print(line)
}

func (h *connectHandler) fail(w http.ResponseWriter, r *http.Request, status int, detail string) {
	h.logStream(r, status, detail)
	w.Header()["Date"] = nil
	w.WriteHeader(status)
}

func (h *connectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		h.fail(w, r, http.StatusBadRequest, "not HTTP/2")
		return
	}
	if r.Method != http.MethodConnect {
		h.fail(w, r, http.StatusBadRequest, "method "+r.Method)
		return
	}
	host, portStr, err := net.SplitHostPort(r.Host)
	ip := net.ParseIP(host)
	port, perr := strconv.Atoi(portStr)
	if err != nil || ip == nil || perr != nil || port < 1 || port > 65535 {
		h.fail(w, r, http.StatusBadRequest, "authority is not ip:port")
		return
	}
	if !h.allowed(ip) {
		h.fail(w, r, http.StatusBadRequest, "target not allowed")
		return
	}
	upstream, err := net.DialTimeout("tcp", r.Host, h.dialTimeout)
	if err != nil {
		h.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer upstream.Close()
	tcp := upstream.(*net.TCPConn)
	flusher := w.(http.Flusher)

	h.logStream(r, http.StatusOK, "")
	w.Header()["Date"] = nil
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	// client -> upstream; request END_STREAM becomes a TCP half-close.
	go func() {
		_, _ = io.Copy(tcp, r.Body)
		_ = tcp.CloseWrite()
	}()

	// upstream -> client; upstream EOF ends the handler, i.e. END_STREAM.
	buf := make([]byte, 64<<10)
	for {
		n, rerr := tcp.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			flusher.Flush()
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				// Upstream reset: reset the stream instead of ending it cleanly.
				panic(http.ErrAbortHandler)
			}
			return
		}
	}
}

// hboneServer is an in-process HBONE server, shared by `server` and `bench`.
type hboneServer struct {
	srv *http.Server
	ln  *handshakeListener
}

func startHBONEServer(listen string, cfg *tls.Config, h *connectHandler) (*hboneServer, error) {
	raw, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	ln := newHandshakeListener(raw, cfg, h.quiet)
	srv := &http.Server{
		Handler: h,
		// http.Server configures its bundled HTTP/2 server only if TLSConfig
		// mentions h2; it then appends "http/1.1" to this copy, which is never
		// used for handshakes (handshakeListener uses cfg, h2 only).
		TLSConfig:         cfg.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "http: ", log.Ldate|log.Ltime|log.Lmicroseconds),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("serve: %v", err)
		}
	}()
	return &hboneServer{srv: srv, ln: ln}, nil
}

func (s *hboneServer) Addr() string { return s.ln.Addr().String() }

func (s *hboneServer) Close() { _ = s.srv.Close() }

func runServer(args []string) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	certFile := fs.String("cert", "", "certificate chain PEM (leaf first)")
	keyFile := fs.String("key", "", "private key PEM")
	rootsFile := fs.String("roots", "", "mesh root certificates PEM")
	trustDomain := fs.String("trust-domain", "cluster.local", "required client SPIFFE trust domain")
	allowTargets := fs.String("allow-targets", "127.0.0.0/8", "comma-separated CIDRs CONNECT may reach")
	quiet := fs.Bool("quiet", false, "log only rejected handshakes")
	logHeaders := fs.Bool("log-headers", false, "append headers={json} (all request headers) to CONNECT lines")
	if err := fs.Parse(args); err != nil {
		return 64
	}
	cfg, err := serverTLSConfig(*certFile, *keyFile, *rootsFile, *trustDomain)
	if err != nil {
		return fatalf(1, "tls config: %v", err)
	}
	allow, err := parseCIDRs(*allowTargets)
	if err != nil {
		return fatalf(64, "--allow-targets: %v", err)
	}
	s, err := startHBONEServer(*listen, cfg, &connectHandler{allow: allow, dialTimeout: 5 * time.Second, quiet: *quiet, logHeaders: *logHeaders})
	if err != nil {
		return fatalf(1, "listen: %v", err)
	}
	fmt.Printf("LISTENING %s\n", s.Addr())
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
	return 0
}
