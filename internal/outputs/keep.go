package outputs

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// DefaultMaxOutputs bounds the outputs of one job.
const DefaultMaxOutputs = 32

// Output is what a job's result holds in place of each output URL once the
// output is stored (docs/design.md#outputs).
type Output struct {
	// Output is the output's name within its job: "<n><ext>", n counting
	// the job's output URLs from 0 in document order.
	Output string `json:"output"`
	// URL is where ingest serves it: /v1/jobs/<job>/outputs/<name>.
	URL         string `json:"url"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	// Digest is the SHA-256 of the bytes, "SHA-256=<base64url>"; the
	// served output's ETag.
	Digest string `json:"digest"`
}

// Keeper stores the outputs a result names and rewrites the result.
type Keeper struct {
	Store   *Store
	Fetcher *Fetcher
	// MaxOutputs bounds the URLs of one result. Default DefaultMaxOutputs.
	MaxOutputs int
}

// IsOutputURL reports whether a string of a result is an output to keep: a
// data: URL or an absolute http(s) URL, with no whitespace.
func IsOutputURL(s string) bool {
	if strings.HasPrefix(s, "data:") {
		return true
	}
	if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") {
		return false
	}
	return !strings.ContainsAny(s, " \t\r\n")
}

// OutputURLs returns the output URLs of a result in document order (the
// order Keep numbers them): the result itself when it is one, the strings
// of a list, and the strings anywhere inside objects and lists. nil when
// there are none or the result is not JSON.
func OutputURLs(result []byte) []string {
	v, ok := decode(result)
	if !ok {
		return nil
	}
	var urls []string
	walk(v, func(s string) any { urls = append(urls, s); return s })
	return urls
}

func decode(result []byte) (any, bool) {
	if len(bytes.TrimSpace(result)) == 0 {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(result))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

// walk calls fn on every output URL of v, in document order (object keys
// sorted, as encoding/json writes them), and replaces it with fn's value.
func walk(v any, fn func(string) any) any {
	switch t := v.(type) {
	case string:
		if IsOutputURL(t) {
			return fn(t)
		}
	case []any:
		for i := range t {
			t[i] = walk(t[i], fn)
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t[k] = walk(t[k], fn)
		}
	}
	return v
}

// Keep stores every output URL of a job's result as <job>/<name> and
// returns the result with each URL replaced by its Output. A result with no
// output URL (or that is not JSON) is returned unchanged, byte for byte. An
// output that cannot be stored fails the whole call with a classified
// error; outputs already stored stay until their TTL (a rerun replaces
// them under the same names).
func (k *Keeper) Keep(ctx context.Context, job string, result []byte) ([]byte, error) {
	if !mayHoldURL(result) {
		return result, nil // most results name no output: no decode
	}
	v, ok := decode(result)
	if !ok {
		return result, nil
	}
	max := k.MaxOutputs
	if max <= 0 {
		max = DefaultMaxOutputs
	}
	n := 0
	walk(v, func(string) any { n++; return nil })
	if n == 0 {
		return result, nil
	}
	if n > max {
		return nil, flowTerminal(wrapf(ErrTooMany, "the result names %d output URLs, limit %d", n, max))
	}
	v, _ = decode(result) // walk above replaced the URLs
	var firstErr error
	i := 0
	v = walk(v, func(u string) any {
		if firstErr != nil {
			return nil
		}
		out, err := k.keepOne(ctx, job, i, u)
		i++
		if err != nil {
			firstErr = err
			return nil
		}
		return out
	})
	if firstErr != nil {
		return nil, firstErr
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, flowTerminal(wrapf(ErrBadURL, "result: %v", err))
	}
	return b, nil
}

func (k *Keeper) keepOne(ctx context.Context, job string, i int, u string) (Output, error) {
	d, err := k.Fetcher.Fetch(ctx, u)
	if err != nil {
		return Output{}, err
	}
	defer d.Body.Close()
	name := Name(i, u, d.ContentType)
	info, err := k.Store.Put(ctx, Key(job, name), d.ContentType, d.Body)
	if err != nil {
		return Output{}, err
	}
	return Output{
		Output:      name,
		URL:         Path(job, name),
		ContentType: info.ContentType,
		Size:        info.Size,
		Digest:      info.Digest,
	}, nil
}

// Path is where ingest serves an output.
func Path(job, name string) string { return "/v1/jobs/" + job + "/outputs/" + name }

var extRe = regexp.MustCompile(`^\.[a-z0-9]{1,8}$`)

// nameRe is the shape of every output name: what Name makes.
var nameRe = regexp.MustCompile(`^[0-9]{1,6}(\.[a-z0-9]{1,8})?$`)

// ValidName reports whether name can be an output's name: one Name makes,
// or PreviewName.
func ValidName(name string) bool { return name == PreviewName || nameRe.MatchString(name) }

// Name is the name of the i-th output: "<i><ext>", the extension taken from
// the URL's path when it has a short plain one (…/out-0.webp → 0.webp),
// else from the content type (image/png → 0.png), else none.
func Name(i int, u, contentType string) string {
	base := strconv.Itoa(i)
	if !strings.HasPrefix(u, "data:") {
		p := u
		if j := strings.IndexAny(p, "?#"); j >= 0 {
			p = p[:j]
		}
		if ext := strings.ToLower(path.Ext(p)); extRe.MatchString(ext) {
			return base + ext
		}
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if ext := extOf(mt); ext != "" {
		return base + ext
	}
	return base
}

// extOf is the usual extension of the media types models produce (the
// system's mime table is not consulted: names must not depend on the host).
func extOf(mt string) string {
	switch mt {
	case "image/png":
		return ".png"
	case "image/jpeg":
		return ".jpg"
	case "image/webp":
		return ".webp"
	case "image/gif":
		return ".gif"
	case "video/mp4":
		return ".mp4"
	case "video/webm":
		return ".webm"
	case "audio/mpeg":
		return ".mp3"
	case "audio/wav", "audio/x-wav":
		return ".wav"
	case "application/json":
		return ".json"
	case "text/plain":
		return ".txt"
	}
	return ""
}
