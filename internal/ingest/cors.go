package ingest

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// CORS answers for the API under /v1 (Config.CORSOrigins): an app served
// from another origin may call ingest from the browser only when its origin
// is listed. Behind the compose gateway the app, the API and the socket
// share one origin and no CORS is needed at all.
const (
	corsAllowMethods = "GET, POST, DELETE"
	// Headers a browser may send: the token, the JSON body's type, the
	// idempotency key and the W3C trace context.
	corsAllowHeaders = "Authorization, Content-Type, Idempotency-Key, Traceparent"
	// Headers a script may read: 429 and 503 tell when to come back.
	corsExposeHeaders = "Retry-After"
	// corsMaxAge is how long a browser may cache a preflight answer
	// (Chromium caps it at 2 hours).
	corsMaxAge = 2 * time.Hour
)

// ParseOrigins parses the comma-separated list of -cors-origins: each an
// origin as browsers send it (scheme://host[:port], http or https, no
// path), compared case-insensitively. An empty list allows no origin.
func ParseOrigins(list string) ([]string, error) {
	var out []string
	for one := range strings.SplitSeq(list, ",") {
		one = strings.TrimSpace(one)
		if one == "" {
			continue
		}
		o, err := normalOrigin(one)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// normalOrigin checks one configured origin and lower-cases it.
func normalOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil, u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.User != nil,
		u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return "", fmt.Errorf("CORS origin %q is not scheme://host[:port] (http or https, no path)", s)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// cors wraps the API: under /v1 it answers a preflight (OPTIONS with
// Access-Control-Request-Method) itself, 204 for an allowed origin and 403
// for any other, and adds Access-Control-Allow-Origin to the answers to an
// allowed origin. Any other request passes untouched, so a refused origin
// gets no CORS header and the browser keeps the answer from the script.
func cors(origins []string, next http.Handler) http.Handler {
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[o] = true
	}
	maxAge := strconv.Itoa(int(corsMaxAge / time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || (r.URL.Path != "/v1" && !strings.HasPrefix(r.URL.Path, "/v1/")) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		ok := allowed[strings.ToLower(origin)]
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			if !ok {
				writeError(w, newError(http.StatusForbidden, CodeForbidden,
					fmt.Sprintf("origin %s is not allowed to call this API (ingest -cors-origins)", strconv.QuoteToASCII(origin))))
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", maxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if ok {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		}
		next.ServeHTTP(w, r)
	})
}
