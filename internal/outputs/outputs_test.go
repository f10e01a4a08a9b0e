package outputs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/pkg/flow"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T, maxBytes int64) *Store {
	t.Helper()
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := CreateStore(ctxT(t), js, StoreConfig{MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newKeeper(t *testing.T, fc FetchConfig) *Keeper {
	t.Helper()
	f, err := NewFetcher(fc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return &Keeper{Store: newStore(t, fc.MaxBytes), Fetcher: f}
}

// pattern is n bytes that are not all alike, so an offset error shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func readAll(t *testing.T, st *Store, key string) []byte {
	t.Helper()
	o, err := st.Open(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDataURLStoredByteIdentical(t *testing.T) {
	k := newKeeper(t, FetchConfig{})
	png := pattern(300 << 10) // several chunks
	res := `{"output":"data:image/png;base64,` + base64.StdEncoding.EncodeToString(png) + `","seed":42}`
	out, err := k.Keep(ctxT(t), "job1", []byte(res))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Output Output `json:"output"`
		Seed   int    `json:"seed"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := Output{Output: "0.png", URL: "/v1/jobs/job1/outputs/0.png", ContentType: "image/png", Size: int64(len(png))}
	if got.Seed != 42 || got.Output.Digest == "" {
		t.Fatalf("result = %s", out)
	}
	got.Output.Digest = ""
	if got.Output != want {
		t.Fatalf("output = %+v, want %+v", got.Output, want)
	}
	if b := readAll(t, k.Store, Key("job1", "0.png")); !bytes.Equal(b, png) {
		t.Fatalf("stored %d bytes, not the %d written", len(b), len(png))
	}
}

func TestResultWithoutURLsIsUnchanged(t *testing.T) {
	k := newKeeper(t, FetchConfig{})
	for _, res := range []string{`{"ok":true, "n": 1.50}`, `"plain text"`, `[1,2]`, `not json`, ``, `{"u":"ftp://x"}`} {
		out, err := k.Keep(ctxT(t), "job1", []byte(res))
		if err != nil || string(out) != res {
			t.Errorf("Keep(%q) = %q, %v", res, out, err)
		}
	}
}

func TestHTTPOutputsInAList(t *testing.T) {
	video := pattern(200 << 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a/out.mp4":
			w.Header().Set("Content-Type", "video/mp4")
			w.Write(video)
		case "/b":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "hello")
		}
	}))
	defer srv.Close()
	k := newKeeper(t, FetchConfig{AllowPrivate: true})
	res := `[` + `"` + srv.URL + `/a/out.mp4?token=x", "` + srv.URL + `/b"]`
	out, err := k.Keep(ctxT(t), "j2", []byte(res))
	if err != nil {
		t.Fatal(err)
	}
	var got []Output
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got) != 2 || got[0].Output != "0.mp4" || got[1].Output != "1.txt" || got[1].ContentType != "text/plain; charset=utf-8" {
		t.Fatalf("result = %s", out)
	}
	if b := readAll(t, k.Store, Key("j2", "0.mp4")); !bytes.Equal(b, video) {
		t.Fatal("video not byte-identical")
	}
}

func TestFetchFailuresAreClassified(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Type", "image/png")
			w.Write(pattern(2048)) // no Content-Length: chunked
			w.(http.Flusher).Flush()
			w.Write(pattern(2048))
		case "/html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<script>")
		case "/slow":
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case "/500":
			w.WriteHeader(500)
		case "/gone":
			w.WriteHeader(404)
		case "/redirect":
			http.Redirect(w, r, "http://127.0.0.1:1/x", http.StatusFound)
		}
	}))
	defer srv.Close()
	dev := newKeeper(t, FetchConfig{AllowPrivate: true, MaxBytes: 3000, Timeout: 500 * time.Millisecond})
	prod := newKeeper(t, FetchConfig{MaxBytes: 3000})
	cases := []struct {
		name     string
		k        *Keeper
		url      string
		want     error
		terminal bool
	}{
		{"too large", dev, srv.URL + "/big", ErrTooLarge, true},
		{"too large data", dev, "data:image/png;base64," + base64.StdEncoding.EncodeToString(pattern(4000)), ErrTooLarge, true},
		{"forbidden type", dev, srv.URL + "/html", ErrForbiddenType, true},
		{"forbidden data type", dev, "data:text/html,<b>", ErrForbiddenType, true},
		{"slow past the timeout", dev, srv.URL + "/slow", ErrUnavailable, false},
		{"5xx", dev, srv.URL + "/500", ErrUnavailable, false},
		{"4xx", dev, srv.URL + "/gone", ErrGone, true},
		{"http without the flag", prod, srv.URL + "/b", ErrForbiddenAddress, true},
		{"loopback over https", prod, strings.Replace(srv.URL, "http:", "https:", 1) + "/b", ErrForbiddenAddress, true},
		{"private address", prod, "https://10.1.2.3/x.png", ErrForbiddenAddress, true},
		{"link-local metadata", prod, "https://169.254.169.254/latest", ErrForbiddenAddress, true},
		{"name resolving to loopback", prod, "https://localhost:1/x.png", ErrForbiddenAddress, true},
		{"bad base64", dev, "data:image/png;base64,!!!", ErrBadURL, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.k.Keep(ctxT(t), "j3", []byte(`{"out":"`+c.url+`"}`))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if flow.IsTerminal(err) != c.terminal {
				t.Fatalf("terminal = %v, want %v (%v)", flow.IsTerminal(err), c.terminal, err)
			}
			if strings.Contains(err.Error(), "?") {
				t.Fatalf("error leaks a query: %v", err)
			}
		})
	}
	// The guard itself, on addresses no test server can have.
	guard := &Fetcher{}
	if err := guard.control("tcp4", "127.0.0.1:80", nil); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("control(127.0.0.1) = %v", err)
	}
	if err := guard.control("tcp6", "[::ffff:192.168.1.1]:443", nil); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("control(mapped private) = %v", err)
	}
	if err := guard.control("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Fatalf("control(public) = %v", err)
	}
}

// The dial guard covers the address actually dialled, whatever the URL
// said: an allowed (stand-in public) https server redirecting to a
// loopback one is refused at the redirect's dial.
func TestRedirectToLoopbackIsRefused(t *testing.T) {
	inner := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		io.WriteString(w, "secret")
	}))
	defer inner.Close()
	outer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/x.png", http.StatusFound)
	}))
	defer outer.Close()
	f, err := NewFetcher(FetchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.client.Transport.(*http.Transport).TLSClientConfig = outer.Client().Transport.(*http.Transport).TLSClientConfig
	outerAddr := outer.Listener.Addr().String()
	f.allowDial = func(ap netip.AddrPort) bool { return ap.String() == outerAddr }

	_, err = f.Fetch(ctxT(t), outer.URL+"/start")
	if !errors.Is(err, ErrForbiddenAddress) || !flow.IsTerminal(err) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("redirect to %s: %v", inner.URL, err)
	}
	// The stand-in itself is reachable: the refusal was the redirect's.
	d, err := f.Fetch(ctxT(t), inner.URL+"/x.png")
	if err == nil {
		d.Body.Close()
		t.Fatal("inner server reachable directly")
	}
	f.allowDial = func(netip.AddrPort) bool { return true }
	d, err = f.Fetch(ctxT(t), outer.URL+"/start")
	if err != nil {
		t.Fatalf("with both allowed: %v", err)
	}
	d.Body.Close()
}

func TestTooManyOutputs(t *testing.T) {
	k := newKeeper(t, FetchConfig{})
	k.MaxOutputs = 2
	_, err := k.Keep(ctxT(t), "j", []byte(`["data:,a","data:,b","data:,c"]`))
	if !errors.Is(err, ErrTooMany) || !flow.IsTerminal(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestObjectSeeks(t *testing.T) {
	st := newStore(t, 0)
	data := pattern(400 << 10)
	if _, err := st.Put(ctxT(t), "k/0", "video/mp4", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	o, err := st.Open(ctxT(t), "k/0")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, off := range []int64{300 << 10, 5, 131072, int64(len(data)) - 3} {
		if _, err := o.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 3)
		if _, err := io.ReadFull(o, buf); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf, data[off:off+3]) {
			t.Fatalf("at %d got %v want %v", off, buf, data[off:off+3])
		}
	}
	if n, _ := o.Seek(0, io.SeekEnd); n != int64(len(data)) {
		t.Fatalf("size %d", n)
	}
	if _, err := st.Open(ctxT(t), "k/1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}

func TestSigner(t *testing.T) {
	s := NewSigner([]byte("0123456789abcdef0123"))
	now := time.Unix(1_800_000_000, 0)
	u := s.URL("job", "0.png", now.Add(time.Minute))
	q := u[strings.Index(u, "?")+1:]
	vals := map[string]string{}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	if err := s.Verify("job", "0.png", vals["exp"], vals["sig"], now); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"other name": s.Verify("job", "1.png", vals["exp"], vals["sig"], now),
		"other job":  s.Verify("job2", "0.png", vals["exp"], vals["sig"], now),
		"expired":    s.Verify("job", "0.png", vals["exp"], vals["sig"], now.Add(2*time.Minute)),
		"other key":  NewSigner([]byte("another secret of 16+")).Verify("job", "0.png", vals["exp"], vals["sig"], now),
		"bad sig":    s.Verify("job", "0.png", vals["exp"], "abc", now),
		"bad exp":    s.Verify("job", "0.png", "soon", vals["sig"], now),
	} {
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
