package outputs

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// PreviewName is the output name of a running job's live preview: one
// object per job, <job>/preview, replaced by every newer preview
// (docs/design.md#live-previews).
const PreviewName = "preview"

// DefaultPreviewLinkTTL is how long the signed URL of a preview is valid:
// a preview is superseded within seconds, and the page asks ingest for a
// fresh link (GET …/outputs/preview/link) if it ever needs one later.
const DefaultPreviewLinkTTL = 5 * time.Minute

// Previewer stores the intermediate outputs of running jobs.
type Previewer struct {
	Store   *Store
	Fetcher *Fetcher
	// Signer, when set, signs a short-lived URL of each preview
	// (envelope.Preview.SignedURL) that ingest verifies: the processor
	// and ingest must derive it from the same secret. nil: no signed URL.
	Signer *Signer
	// LinkTTL of the signed URLs. Default DefaultPreviewLinkTTL.
	LinkTTL time.Duration
	// Now is the clock of the signed URLs' expiry. Default time.Now.
	Now func() time.Time
}

// Preview copies u (a data: URL or an http(s) URL, under the Fetcher's
// guards) into <job>/preview, replacing the job's previous preview, and
// returns its reference. Errors are classified as Keep's are; a failed
// preview should be logged and forgotten, never fail its job.
func (p *Previewer) Preview(ctx context.Context, job, u string) (envelope.Preview, error) {
	d, err := p.Fetcher.Fetch(ctx, u)
	if err != nil {
		return envelope.Preview{}, err
	}
	defer d.Body.Close()
	info, err := p.Store.Put(ctx, Key(job, PreviewName), d.ContentType, d.Body)
	if err != nil {
		return envelope.Preview{}, err
	}
	pv := envelope.Preview{
		Output:      PreviewName,
		URL:         Path(job, PreviewName),
		ContentType: info.ContentType,
		Size:        info.Size,
		Digest:      info.Digest,
	}
	if p.Signer != nil {
		now := time.Now
		if p.Now != nil {
			now = p.Now
		}
		ttl := p.LinkTTL
		if ttl <= 0 {
			ttl = DefaultPreviewLinkTTL
		}
		exp := now().Add(ttl).Truncate(time.Second)
		// v tells one preview's URL from the next (the object's name stays
		// "preview"): a browser caches a signed URL for minutes. Verify
		// ignores it.
		pv.SignedURL = p.Signer.URL(job, PreviewName, exp) + "&v=" + url.QueryEscape(version(info.Digest))
		utc := exp.UTC()
		pv.ExpiresAt = &utc
	}
	return pv, nil
}

// version is a short tag of a digest for cache busting.
func version(digest string) string {
	v := strings.TrimPrefix(digest, "SHA-256=")
	if len(v) > 16 {
		v = v[:16]
	}
	return v
}

// LatestURL is the newest output URL of a prediction's output so far: the
// last in document order (a model that yields images returns a growing
// list), "" when there is none.
func LatestURL(output []byte) string {
	if !mayHoldURL(output) {
		return ""
	}
	urls := OutputURLs(output)
	if len(urls) == 0 {
		return ""
	}
	return urls[len(urls)-1]
}

var (
	dataScheme = []byte(`"data:`)
	httpScheme = []byte(`"http`)
	escape     = []byte(`\u`)
)

// mayHoldURL is a cheap guard before decoding a result: every output URL
// is a JSON string starting with data: or http, unless the JSON spells it
// with \u escapes (then it is decoded too). A false positive only costs
// the decode.
func mayHoldURL(result []byte) bool {
	return bytes.Contains(result, dataScheme) || bytes.Contains(result, httpScheme) || bytes.Contains(result, escape)
}
