package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// loadRoots reads every CERTIFICATE block of a PEM file into a pool.
func loadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no certificates", path)
	}
	return pool, nil
}

// spiffeID returns the first URI SAN with the spiffe scheme.
func spiffeID(c *x509.Certificate) (*url.URL, error) {
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			if u.Host == "" {
				return nil, fmt.Errorf("SPIFFE id %q has no trust domain", u.String())
			}
			return u, nil
		}
	}
	return nil, errors.New("certificate has no spiffe:// URI SAN")
}

// verifyChain checks the presented chain (leaf first, then intermediates)
// against the mesh roots for the given key usage and returns the leaf's SPIFFE id.
func verifyChain(rawCerts [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage) (*url.URL, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("no certificate presented")
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("bad certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := certs[0].Verify(opts); err != nil {
		return nil, fmt.Errorf("chain verification failed: %w", err)
	}
	return spiffeID(certs[0])
}

// peerID is the SPIFFE id of an already verified peer, or "-".
func peerID(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "-"
	}
	u, err := spiffeID(cs.PeerCertificates[0])
	if err != nil {
		return "-"
	}
	return u.String()
}

func requireH2(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != "h2" {
		return fmt.Errorf("ALPN: peer did not negotiate h2 (got %q)", cs.NegotiatedProtocol)
	}
	return nil
}

// serverTLSConfig: TLS 1.3 only, ALPN h2 only, client certificate required and
// verified against roots, client trust domain must equal trustDomain.
func serverTLSConfig(certFile, keyFile, rootsFile, trustDomain string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(rootsFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyChain(rawCerts, roots, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return err
			}
			if !strings.EqualFold(id.Host, trustDomain) {
				return fmt.Errorf("client trust domain %q != %q (%s)", id.Host, trustDomain, id)
			}
			return nil
		},
		VerifyConnection: requireH2,
	}, nil
}

// clientTLSConfig: TLS 1.3 only, ALPN h2 only, no SNI, hostname verification
// replaced by chain verification plus an exact SPIFFE id match.
func clientTLSConfig(certFile, keyFile, rootsFile, expectSAN string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(rootsFile)
	if err != nil {
		return nil, err
	}
	if expectSAN == "" {
		return nil, errors.New("--expect-san is required")
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyChain(rawCerts, roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id.String() != expectSAN {
				return fmt.Errorf("server identity %q != expected %q", id, expectSAN)
			}
			return nil
		},
		VerifyConnection: requireH2,
	}, nil
}

// firstSAN returns the SPIFFE id of the leaf in a cert file (used by bench).
func firstSAN(certFile, keyFile string) (string, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return "", err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", err
	}
	u, err := spiffeID(leaf)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
