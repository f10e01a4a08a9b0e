package ingest

import (
	"strconv"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
)

func TestTokenCacheRespectsExpTTLAndBound(t *testing.T) {
	now := time.Now()
	c := newTokenCache(2, 30*time.Second)
	c.now = func() time.Time { return now }
	short, err := auth.Issue(testSecret, "alice", false, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	long, err := auth.Issue(testSecret, "bob", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.put(short, auth.Principal{User: "alice"})
	c.put(long, auth.Principal{User: "bob", Admin: true})
	if p, ok := c.get(long); !ok || p.User != "bob" || !p.Admin {
		t.Fatalf("long token: %+v %v", p, ok)
	}
	if _, ok := c.get(long + "x"); ok {
		t.Fatal("an altered token was a hit")
	}
	now = now.Add(11 * time.Second) // past the short token's exp
	if _, ok := c.get(short); ok {
		t.Fatal("a token was served from the cache after its exp")
	}
	if _, ok := c.get(long); !ok {
		t.Fatal("long token gone before the TTL")
	}
	now = now.Add(30 * time.Second) // past the TTL
	if _, ok := c.get(long); ok {
		t.Fatal("a token was served from the cache after the TTL")
	}
	for i := range 5 {
		tok, err := auth.Issue(testSecret, "u"+strconv.Itoa(i), false, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.put(tok, auth.Principal{User: "u" + strconv.Itoa(i)})
	}
	if n := c.lru.Len(); n != 2 || len(c.m) != 2 {
		t.Fatalf("cache holds %d/%d entries, bound 2", n, len(c.m))
	}
	c.put("not-a-jwt", auth.Principal{User: "x"})
	if _, ok := c.get("not-a-jwt"); ok {
		t.Fatal("a token without a readable exp was cached")
	}
}
