package docscheck

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRepositoryReferences is the check itself: every docs/ reference in a
// tracked text file resolves to an existing file and heading.
func TestRepositoryReferences(t *testing.T) {
	root := repoRoot(t)
	files := trackedFiles(t, root)
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(root, filepath.FromSlash(name))) }
	var refs []Ref
	for _, f := range files {
		b, err := read(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted in the work tree, not yet committed
			}
			t.Fatal(err)
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			continue // binary
		}
		refs = append(refs, Refs(f, b)...)
	}
	if len(refs) == 0 {
		t.Fatal("no reference to docs/ found: the scan is broken")
	}
	for _, msg := range Check(refs, read) {
		t.Error(msg)
	}
	t.Logf("%d references in %d files checked", len(refs), len(files))
}

// TestDocsExist: the two documents the code is written against are there
// and have the sections the code cites most.
func TestDocsExist(t *testing.T) {
	root := repoRoot(t)
	for doc, want := range map[string][]string{
		"docs/design.md":           {"delivery-promises", "promise-3-exactly-one-terminal-state", "attempts-count-runs"},
		"docs/phoenix-protocol.md": {"61-server-rules", "7-binary-frames", "9-long-poll-transport", "10-compatibility-checklist"},
	} {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		a := Anchors(b)
		for _, w := range want {
			if !a[w] {
				t.Errorf("%s: no anchor #%s", doc, w)
			}
		}
	}
}

func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Beamline design":                               "beamline-design",
		"7. Binary frames":                              "7-binary-frames",
		"6.1 Server rules":                              "61-server-rules",
		"10. Compatibility checklist":                   "10-compatibility-checklist",
		"Promise 3: exactly one terminal state":         "promise-3-exactly-one-terminal-state",
		"Promise 5: overload is refused, never dropped": "promise-5-overload-is-refused-never-dropped",
		"8. Presence (not served)":                      "8-presence-not-served",
		"The `job_status` bucket":                       "the-job_status-bucket",
		"See [the design](design.md#notifier)":          "see-the-design",
		"§9 Long-poll – brief":                          "9-long-poll--brief",
		"Ünïcode Überschrift":                           "ünïcode-überschrift",
	} {
		if got := Slug(heading); got != want {
			t.Errorf("Slug(%q) = %q, want %q", heading, got, want)
		}
	}
}

func TestAnchors(t *testing.T) {
	md := "# Title\n\n## 7. Binary frames\n\n```\n## not a heading\n```\n\n## Notes\n### Notes\n" +
		"## Closed heading ##\n<a id=\"custom\"></a>\n    # indented code, not a heading\n"
	got := Anchors([]byte(md))
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"7-binary-frames", "closed-heading", "custom", "notes", "notes-1", "title"}
	if !slices.Equal(keys, want) {
		t.Errorf("Anchors = %q, want %q", keys, want)
	}
}

// TestCheckFindsBrokenReferences makes sure the check fails where it must:
// a missing file, a missing anchor, and a broken link inside docs/.
func TestCheckFindsBrokenReferences(t *testing.T) {
	// Built by concatenation so that the repository scan does not take
	// these deliberately broken references for real ones.
	d := "docs/"
	docs := map[string]string{
		d + "design.md": "# Design\n## Promise 3: exactly one terminal state\nSee [rules](proto.md#61-server-rules) and [here](#design).\n" +
			"Broken: [gone](proto.md#6-server-rules), [self](#nope).\n",
		d + "proto.md": "## 6.1 Server rules\n",
	}
	read := func(name string) ([]byte, error) {
		if s, ok := docs[name]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
	src := "package x\n" +
		"// ok: " + d + "design.md#promise-3-exactly-one-terminal-state and " + d + "proto.md\n" +
		"// missing anchor: " + d + "design.md#promise-9-nothing.\n" +
		"// missing file: (" + d + "nothing.md#x), ../" + d + "gone.md\n" +
		"// not ours: https://example.com/x/" + d + "design.md#zzz, other/" + d + "y.md\n"
	refs := Refs("internal/x/x.go", []byte(src))
	refs = append(refs, Refs(d+"design.md", []byte(docs[d+"design.md"]))...)

	var got []string
	for _, r := range refs {
		got = append(got, r.String())
	}
	wantRefs := []string{
		"internal/x/x.go:2: " + d + "design.md#promise-3-exactly-one-terminal-state",
		"internal/x/x.go:2: " + d + "proto.md",
		"internal/x/x.go:3: " + d + "design.md#promise-9-nothing",
		"internal/x/x.go:4: " + d + "nothing.md#x",
		"internal/x/x.go:4: " + d + "gone.md",
		"docs/design.md:3: " + d + "proto.md#61-server-rules",
		"docs/design.md:3: " + d + "design.md#design",
		"docs/design.md:4: " + d + "proto.md#6-server-rules",
		"docs/design.md:4: " + d + "design.md#nope",
	}
	if !slices.Equal(got, wantRefs) {
		t.Fatalf("Refs:\n got %q\nwant %q", got, wantRefs)
	}

	bad := Check(refs, read)
	wantBad := []string{
		"internal/x/x.go:3: " + d + "design.md#promise-9-nothing",
		"internal/x/x.go:4: " + d + "nothing.md#x",
		"internal/x/x.go:4: " + d + "gone.md",
		"docs/design.md:4: " + d + "proto.md#6-server-rules",
		"docs/design.md:4: " + d + "design.md#nope",
	}
	if len(bad) != len(wantBad) {
		t.Fatalf("Check = %q, want %d failures", bad, len(wantBad))
	}
	for i, w := range wantBad {
		if !strings.HasPrefix(bad[i], w+": ") {
			t.Errorf("failure %d = %q, want it to start with %q", i, bad[i], w)
		}
	}
}

// repoRoot is the folder holding go.mod, above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package")
		}
		dir = parent
	}
}

// trackedFiles lists the repository's files, slash-separated: those git
// tracks plus new ones it does not ignore (git ls-files), or, without git (a source archive), every file outside .git,
// node_modules and data folders.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			switch e.Name() {
			case ".git", "node_modules", "data":
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
