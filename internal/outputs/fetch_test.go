package outputs

import (
	"net/netip"
	"testing"
)

// TestForbiddenAddr: every address class the guard refuses, and public
// addresses it lets through.
func TestForbiddenAddr(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		refused bool
	}{
		{"127.0.0.1", true}, {"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true},
		{"169.254.169.254", true}, {"0.0.0.0", true}, {"100.64.0.1", true}, {"224.0.0.1", true},
		{"::1", true}, {"fc00::1", true}, {"fe80::1", true}, {"::ffff:10.0.0.1", true},
		{"64:ff9b::a00:1", true}, {"64:ff9b:1::a00:1", true}, {"fec0::1", true}, {"2002:a00:1::1", true},
		{"93.184.216.34", false}, {"2606:4700::6810:85e5", false},
	} {
		if got := forbiddenAddr(netip.MustParseAddr(tc.ip)); (got != "") != tc.refused {
			t.Errorf("%s: forbidden %q, want refused=%v", tc.ip, got, tc.refused)
		}
	}
}
