package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// startSink starts a loopback TCP listener; each connection is handled by fn.
func startSink(fn func(*net.TCPConn)) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c.(*net.TCPConn))
			}()
		}
	}()
	return ln, nil
}

// bulkReader yields chunks of buf until the deadline, then io.EOF.
type bulkReader struct {
	buf      []byte
	deadline time.Time
	n        int
}

func (b *bulkReader) Read(p []byte) (int, error) {
	b.n++
	if b.n%16 == 0 && time.Now().After(b.deadline) {
		return 0, io.EOF
	}
	return copy(p, b.buf), nil
}

func runBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	mode := fs.String("mode", "throughput", "throughput | setup")
	certFile := fs.String("cert", "", "certificate chain PEM (used by both in-process sides)")
	keyFile := fs.String("key", "", "private key PEM")
	rootsFile := fs.String("roots", "", "mesh root certificates PEM")
	server := fs.String("server", "", "external HBONE server host:port (default: in-process Go server)")
	expectSAN := fs.String("expect-san", "", "server SPIFFE id (default: the SPIFFE id of --cert)")
	streams := fs.Int("streams", 1, "throughput: concurrent bulk streams")
	seconds := fs.Float64("seconds", 5, "throughput: duration")
	chunk := fs.Int("chunk", 64<<10, "throughput: write size")
	total := fs.Int("streams-total", 1000, "setup: number of short streams")
	concurrency := fs.Int("concurrency", 1, "setup: streams in flight")
	if err := fs.Parse(args); err != nil {
		return 64
	}
	if *expectSAN == "" {
		san, err := firstSAN(*certFile, *keyFile)
		if err != nil {
			return fatalf(1, "cert: %v", err)
		}
		*expectSAN = san
	}
	ccfg, err := clientTLSConfig(*certFile, *keyFile, *rootsFile, *expectSAN)
	if err != nil {
		return fatalf(1, "client tls config: %v", err)
	}
	addr := *server
	if addr == "" {
		scfg, err := serverTLSConfig(*certFile, *keyFile, *rootsFile, "cluster.local")
		if err != nil {
			return fatalf(1, "server tls config: %v", err)
		}
		allow, _ := parseCIDRs("127.0.0.0/8")
		s, err := startHBONEServer("127.0.0.1:0", scfg, &connectHandler{allow: allow, dialTimeout: 5 * time.Second, quiet: true})
		if err != nil {
			return fatalf(1, "server: %v", err)
		}
		defer s.Close()
		addr = s.Addr()
	}
	c := newHBONEClient(addr, ccfg, http.Header{"Forwarded": {`for="127.0.0.1:1"`}})
	defer c.transport.CloseIdleConnections()

	var result map[string]any
	switch *mode {
	case "throughput":
		result, err = benchThroughput(c, *streams, *seconds, *chunk)
	case "setup":
		result, err = benchSetup(c, *total, *concurrency)
	default:
		return fatalf(64, "unknown --mode %q", *mode)
	}
	if err != nil {
		var te *tlsDialError
		if errors.As(err, &te) || c.rejectedAfterHandshake(err) {
			return fatalf(3, "tls: %v", err)
		}
		return fatalf(1, "bench: %v", err)
	}
	result["mode"] = *mode
	result["server"] = map[bool]string{true: "external", false: "go"}[*server != ""]
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
	return 0
}

// roundTripAll runs one CONNECT stream: body is uploaded, the response is drained.
func (c *hboneClient) roundTripAll(authority string, body io.Reader, drain io.Writer) error {
	resp, err := c.connect(context.Background(), authority, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	_, err = io.Copy(drain, resp.Body)
	return err
}

func benchThroughput(c *hboneClient, streams int, seconds float64, chunk int) (map[string]any, error) {
	if streams < 1 || seconds <= 0 || chunk < 1 {
		return nil, errors.New("--streams, --seconds and --chunk must be positive")
	}
	var received atomic.Int64
	sink, err := startSink(func(conn *net.TCPConn) {
		n, _ := io.Copy(io.Discard, conn)
		received.Add(n)
	})
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	target := sink.Addr().String()
	// Warm up: establish the shared HTTP/2 connection.
	if err := c.roundTripAll(target, &bulkReader{buf: make([]byte, 1), deadline: time.Now()}, io.Discard); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	received.Store(0)

	buf := make([]byte, chunk)
	start := time.Now()
	deadline := start.Add(time.Duration(seconds * float64(time.Second)))
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.roundTripAll(target, &bulkReader{buf: buf, deadline: deadline}, io.Discard); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	total := received.Load()
	return map[string]any{
		"mb_per_s": float64(total) / 1e6 / elapsed,
		"bytes":    total,
		"seconds":  elapsed,
		"streams":  streams,
	}, nil
}

func benchSetup(c *hboneClient, total, concurrency int) (map[string]any, error) {
	if total < 1 || concurrency < 1 {
		return nil, errors.New("--streams-total and --concurrency must be >= 1")
	}
	sink, err := startSink(func(conn *net.TCPConn) {
		_, _ = io.Copy(conn, conn) // echo until EOF
	})
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	target := sink.Addr().String()
	one := func() (time.Duration, error) {
		t0 := time.Now()
		pr, pw := io.Pipe()
		resp, err := c.connect(context.Background(), target, pr)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		go func() {
			_, _ = pw.Write([]byte{'x'})
			_ = pw.Close()
		}()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		if string(got) != "x" {
			return 0, fmt.Errorf("echo mismatch: %q", got)
		}
		return time.Since(t0), nil
	}
	if _, err := one(); err != nil { // warm connection
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var next atomic.Int64
	lat := make([]time.Duration, total)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				d, err := one()
				if err != nil {
					errs <- err
					return
				}
				lat[i] = d
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return map[string]any{
		"streams_per_s": float64(total) / elapsed,
		"streams_total": total,
		"concurrency":   concurrency,
		"seconds":       elapsed,
		"p50_ms":        ms(lat[len(lat)/2]),
		"p99_ms":        ms(lat[len(lat)*99/100]),
	}, nil
}
