// Package docscheck keeps the repository's citations of its own documents
// honest. Code, tests and docs cite sections of the documents in docs/ as
// "docs/design.md#promise-3-exactly-one-terminal-state"; the package test
// scans every tracked text file for such references and fails, naming the
// file and line, when the cited file or heading anchor does not exist.
// Markdown links inside docs/ ("(phoenix-protocol.md#9-long-poll-transport)",
// "(#notifier)") are checked the same way.
//
// Anchors follow GitHub's rules for headings (see Slug), so a reference
// that passes here also works when the file is read on GitHub.
package docscheck

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode"
)

// Ref is one reference to a document, found at File:Line.
type Ref struct {
	File   string // the file holding the reference, slash-separated, relative to the repository root
	Line   int    // 1-based
	Target string // the referenced document, relative to the repository root
	Anchor string // without '#'; "" when the reference names the whole file
}

func (r Ref) String() string {
	s := r.Target
	if r.Anchor != "" {
		s += "#" + r.Anchor
	}
	return fmt.Sprintf("%s:%d: %s", r.File, r.Line, s)
}

// Slug is the anchor GitHub gives a heading: inline markup removed
// (code spans keep their text, links keep their text), lower case, every
// character other than a letter, digit, mark, '_', '-' or space dropped,
// and each space turned into '-'. "7. Binary frames" → "7-binary-frames",
// "6.1 Server rules" → "61-server-rules".
func Slug(heading string) string {
	text := linkRE.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_', unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsNumber(r), unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

var (
	linkRE    = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	headingRE = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	htmlIDRE  = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	fenceRE   = regexp.MustCompile("^ {0,3}(```|~~~)")
)

// Anchors returns the anchors of a Markdown document: one per ATX heading
// outside fenced code blocks (a repeated slug gets "-1", "-2", … as on
// GitHub), plus explicit <a name="…"> and <a id="…"> anchors.
func Anchors(md []byte) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(md))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			switch fence {
			case "":
				fence = m[1]
			case m[1]:
				fence = ""
			}
			continue
		}
		if fence != "" {
			continue
		}
		for _, m := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := Slug(m[2])
		if n := seen[s]; n > 0 {
			seen[s] = n + 1
			s = fmt.Sprintf("%s-%d", s, n)
		} else {
			seen[s] = 1
		}
		out[s] = true
	}
	return out
}

// refRE finds "docs/<file>.md" and "docs/<file>.md#<anchor>" not preceded
// by a path character (so "other/docs/x.md" and URLs of other repositories'
// docs/ folders are not taken), optionally after "../" steps.
var refRE = regexp.MustCompile(`(?:^|[^\w./-])(?:\.\./)*(docs/[\w./-]*?\.md)(?:#([\p{L}\p{N}_-]+))?`)

// mdLinkRE finds the target of a Markdown link: "](target)".
var mdLinkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// Refs returns the references to docs/ in the text of file (a path
// relative to the repository root). In a Markdown file under docs/, the
// targets of relative Markdown links to .md files and to "#anchor" are
// references too, resolved against the file's folder.
func Refs(file string, text []byte) []Ref {
	var out []Ref
	inDocs := strings.HasPrefix(file, "docs/") && strings.HasSuffix(file, ".md")
	for i, line := range strings.Split(string(text), "\n") {
		for _, m := range refRE.FindAllStringSubmatch(line, -1) {
			out = append(out, Ref{File: file, Line: i + 1, Target: path.Clean(m[1]), Anchor: m[2]})
		}
		if !inDocs {
			continue
		}
		for _, m := range mdLinkRE.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			doc, anchor, _ := strings.Cut(target, "#")
			switch {
			case doc == "":
				doc = file
			case strings.HasSuffix(doc, ".md"):
				doc = path.Join(path.Dir(file), doc)
			default:
				continue // a link to code or a folder
			}
			out = append(out, Ref{File: file, Line: i + 1, Target: doc, Anchor: anchor})
		}
	}
	return out
}

// Check returns one message per reference in refs whose document is
// missing (read returns an error) or whose anchor is not among the
// document's anchors.
func Check(refs []Ref, read func(name string) ([]byte, error)) []string {
	anchors := map[string]map[string]bool{}
	var bad []string
	for _, r := range refs {
		a, ok := anchors[r.Target]
		if !ok {
			b, err := read(r.Target)
			if err == nil {
				a = Anchors(b)
			}
			anchors[r.Target] = a
		}
		switch {
		case a == nil:
			bad = append(bad, fmt.Sprintf("%s: no such file %s", r, r.Target))
		case r.Anchor != "" && !a[r.Anchor]:
			bad = append(bad, fmt.Sprintf("%s: %s has no heading with anchor #%s", r, r.Target, r.Anchor))
		}
	}
	return bad
}
