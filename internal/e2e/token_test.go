package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
)

// openDemoWith loads the demo page with token in the fragment, without
// waiting for a live connection.
func openDemoWith(t *testing.T, token string) *tab {
	tb := newTab(t, 60*time.Second)
	tb.run("open demo page",
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(stack.NotifierURL+"/#token="+token),
		chromedp.WaitVisible(chromedp.ID("new-job")),
	)
	return tb
}

// A refused token (here: signed with another secret, as after a devstack
// restart with a new one) is said in a sentence with how to get a new
// one, not "Connecting…" forever (issue 16, item 3).
func TestDemoSaysTokenRefused(t *testing.T) {
	bad, err := auth.Issue([]byte("another-secret-0123456789abcdef"), "dev", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tb := openDemoWith(t, bad)
	tb.waitJS("the refused-token sentence", `(() => {
		const p = document.getElementById("token-refused");
		return !!p && !p.hidden && p.offsetParent !== null;
	})()`, 15*time.Second)
	msg := eval[string](tb, `document.getElementById("token-refused").textContent`)
	t.Logf("shown: %q", msg)
	for _, want := range []string{"refused this page's token", "bad signature", "devstack prints"} {
		if !containsText(msg, want) {
			t.Errorf("message lacks %q: %q", want, msg)
		}
	}
	if conn := eval[string](tb, `document.getElementById("conn-text").textContent`); conn == "Connecting…" {
		t.Errorf("connection indicator still says %q", conn)
	}
	if !eval[bool](tb, `document.getElementById("submit").disabled`) {
		t.Error("the submit button stays enabled with a refused token")
	}
	tb.screenshot("demo-token-refused")
}

// A token that names no user gets a sentence, not the code no_user
// (issue 16, item 7).
func TestDemoShowsSentencesNotCodes(t *testing.T) {
	noSub, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(stackSecret())
	if err != nil {
		t.Fatal(err)
	}
	tb := openDemoWith(t, noSub)
	tb.waitJS("the form status to explain", `/names no user/.test(document.getElementById("form-status").textContent)`, 15*time.Second)
	status := eval[string](tb, `document.getElementById("form-status").textContent`)
	t.Logf("shown: %q", status)
	if containsText(status, "no_user") {
		t.Errorf("the page shows a code: %q", status)
	}
	tb.waitJS("the refused-token sentence", `!!document.getElementById("token-refused")`, 15*time.Second)
	if msg := eval[string](tb, `document.getElementById("token-refused").textContent`); !containsText(msg, "sub: must not be empty") || containsText(msg, "envelope") {
		t.Errorf("refusal reads %q", msg)
	}
}

// stackSecret is the secret the shared stack verifies tokens with.
func stackSecret() []byte { return devstacktest.Secret }

func containsText(s, sub string) bool { return strings.Contains(s, sub) }
