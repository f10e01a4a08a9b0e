package compose

import (
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// block is one Caddyfile line (its tokens) and the block it opens.
type block struct {
	tokens   []string
	children []*block
}

// parseCaddyfile reads the Caddyfile's structure: lines of tokens, nested
// by braces, comments dropped. It is enough to evaluate the gateway's
// routes below; Caddy itself runs the file in test/gateway.
func parseCaddyfile(t *testing.T, text string) *block {
	t.Helper()
	root := &block{}
	stack := []*block{root}
	for i, line := range strings.Split(text, "\n") {
		if c := strings.Index(line, "#"); c >= 0 && !strings.Contains(line[:c], "`") {
			line = line[:c]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) == 1 && f[0] == "}" {
			if len(stack) == 1 {
				t.Fatalf("Caddyfile line %d: unbalanced }", i+1)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		b := &block{tokens: f}
		top := stack[len(stack)-1]
		top.children = append(top.children, b)
		if f[len(f)-1] == "{" {
			b.tokens = f[:len(f)-1]
			stack = append(stack, b)
		}
	}
	if len(stack) != 1 {
		t.Fatal("Caddyfile: unclosed {")
	}
	return root
}

// matcher is a named request matcher: every condition must hold.
type matcher struct {
	paths   []string         // any of them (Caddy's path matcher)
	regexps []*regexp.Regexp // each must match
	not     []*regexp.Regexp // none may match
}

func pathMatches(pattern, p string) bool {
	switch {
	case strings.Count(pattern, "*") == 1 && strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(p, strings.TrimSuffix(pattern, "*"))
	case strings.Contains(pattern, "*"):
		ok, _ := path.Match(pattern, p)
		return ok
	}
	return p == pattern
}

func (m matcher) match(p string) bool {
	if len(m.paths) > 0 && !slices.ContainsFunc(m.paths, func(pat string) bool { return pathMatches(pat, p) }) {
		return false
	}
	for _, re := range m.regexps {
		if !re.MatchString(p) {
			return false
		}
	}
	for _, re := range m.not {
		if re.MatchString(p) {
			return false
		}
	}
	return true
}

// route is one handle block: its matcher (nil: the fallback) and what it
// does.
type route struct {
	name      string
	m         *matcher
	upstreams []string // host:port of reverse_proxy
	policy    string   // lb_policy
	respond   int      // status of a respond, 0 when proxied
	healthURI string
}

// gatewayRoutes evaluates deploy/Caddyfile's single site: its named
// matchers, its handle blocks, and the snippets they import.
func gatewayRoutes(t *testing.T, text string) (site string, routes []route) {
	t.Helper()
	root := parseCaddyfile(t, text)
	snippets := map[string]*block{}
	var siteBlock *block
	for _, b := range root.children {
		switch {
		case len(b.tokens) == 1 && strings.HasPrefix(b.tokens[0], "(") && strings.HasSuffix(b.tokens[0], ")"):
			snippets[strings.Trim(b.tokens[0], "()")] = b
		case len(b.tokens) == 0:
			// global options
		default:
			if siteBlock != nil {
				t.Fatalf("more than one site block: %v and %v", siteBlock.tokens, b.tokens)
			}
			siteBlock = b
		}
	}
	if siteBlock == nil {
		t.Fatal("no site block")
	}
	mustRE := func(s string) *regexp.Regexp {
		re, err := regexp.Compile(s)
		if err != nil {
			t.Fatalf("path_regexp %q: %v", s, err)
		}
		return re
	}
	addCond := func(m *matcher, f []string) {
		neg := false
		if f[0] == "not" {
			neg, f = true, f[1:]
		}
		switch {
		case f[0] == "path" && !neg:
			m.paths = append(m.paths, f[1:]...)
		case f[0] == "path_regexp":
			re := mustRE(f[len(f)-1]) // path_regexp [name] regexp
			if neg {
				m.not = append(m.not, re)
			} else {
				m.regexps = append(m.regexps, re)
			}
		default:
			t.Fatalf("matcher condition %v is not understood by this test", f)
		}
	}
	matchers := map[string]*matcher{}
	for _, b := range siteBlock.children {
		if name := b.tokens[0]; strings.HasPrefix(name, "@") {
			m := &matcher{}
			if len(b.tokens) > 1 {
				addCond(m, b.tokens[1:])
			}
			for _, c := range b.children {
				addCond(m, c.tokens)
			}
			matchers[name] = m
		}
	}
	// expand replaces `import snippet` lines by the snippet's lines.
	var expand func(bs []*block) []*block
	expand = func(bs []*block) []*block {
		var out []*block
		for _, b := range bs {
			if b.tokens[0] == "import" {
				s, ok := snippets[b.tokens[1]]
				if !ok {
					t.Fatalf("import of unknown snippet %q", b.tokens[1])
				}
				out = append(out, expand(s.children)...)
				continue
			}
			out = append(out, b)
		}
		return out
	}
	for _, b := range siteBlock.children {
		if b.tokens[0] != "handle" {
			continue
		}
		r := route{name: strings.Join(b.tokens, " ")}
		if len(b.tokens) > 1 {
			m, ok := matchers[b.tokens[1]]
			if !ok {
				t.Fatalf("handle uses undefined matcher %s", b.tokens[1])
			}
			r.m = m
		}
		for _, d := range b.children {
			switch d.tokens[0] {
			case "reverse_proxy":
				r.upstreams = append(r.upstreams, d.tokens[1:]...)
				for _, sub := range expand(d.children) {
					switch sub.tokens[0] {
					case "to":
						r.upstreams = append(r.upstreams, sub.tokens[1:]...)
					case "lb_policy":
						r.policy = sub.tokens[1]
					case "health_uri":
						r.healthURI = sub.tokens[1]
					}
				}
			case "respond":
				var err error
				if r.respond, err = strconv.Atoi(d.tokens[len(d.tokens)-1]); err != nil {
					t.Fatalf("respond without a status: %v", d.tokens)
				}
			}
		}
		routes = append(routes, r)
	}
	return siteBlock.tokens[0], routes
}

// routeOf is the handle block that serves path p: the blocks with a
// matcher must not overlap (so Caddy's ordering of them cannot matter),
// and the block without one serves the rest.
func routeOf(t *testing.T, routes []route, p string) route {
	t.Helper()
	var hits []route
	var fallback *route
	for i, r := range routes {
		if r.m == nil {
			fallback = &routes[i]
			continue
		}
		if r.m.match(p) {
			hits = append(hits, r)
		}
	}
	switch {
	case len(hits) > 1:
		t.Fatalf("%s matches several handle blocks: %q and %q", p, hits[0].name, hits[1].name)
	case len(hits) == 1:
		return hits[0]
	case fallback == nil:
		t.Fatalf("%s matches no handle block and there is no fallback", p)
	}
	return *fallback
}

func readCaddyfile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(repo + "/deploy/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
