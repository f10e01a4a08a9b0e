// Package freeport finds a port of 127.0.0.1 for a process that is started
// later and binds it by number: the servers the chaos, cluster and fault
// tests run as child processes, and the notifiers beambench starts.
//
// A port from net.Listen("tcp", "127.0.0.1:0") comes from the kernel's
// ephemeral range, the range every outgoing connection takes its local
// port from. Between closing that listener and the child's bind, any
// client on the machine (a NATS connection of a process started a moment
// earlier, another test package's HTTP client) may be given the port, and
// the child fails with "address already in use". CI saw exactly that on
// 2026-12-06. So Port picks below the ephemeral range, where only
// listeners that ask for a port by number go, checks that it binds, and
// never hands out the same port twice in one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowest is the first port Port considers: above the registered ports
// that services on a developer's machine tend to hold.
const lowest = 15000

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Port returns a port of 127.0.0.1 that was free a moment ago, outside the
// ephemeral range, and not returned before by this process.
func Port() (int, error) {
	high := ephemeralLow()
	if high-lowest < 1000 {
		return listenZero()
	}
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(high-lowest)
		if handed[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		handed[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free port in 127.0.0.1:%d-%d after 200 tries", lowest, high-1)
}

// Addr is Port as "127.0.0.1:port".
func Addr() (string, error) {
	p, err := Port()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// ephemeralLow is the first port of the kernel's ephemeral range: Linux's
// own setting, or 32768, Linux's default, which is also below the range of
// macOS and Windows (49152).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return 32768
	}
	return n
}

// listenZero is the kernel's choice, for a machine whose ephemeral range
// leaves too little room below it.
func listenZero() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
