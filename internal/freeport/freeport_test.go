package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortIsBelowEphemeralAndNeverRepeated(t *testing.T) {
	high := ephemeralLow()
	seen := map[int]bool{}
	for range 300 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if high-lowest >= 1000 && (p < lowest || p >= high) {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, high)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

func TestPortBinds(t *testing.T) {
	// Hold every port Port returns: each one, and each next one, binds.
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for range 20 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d does not bind: %v", p, err)
		}
		held = append(held, ln)
	}
}
