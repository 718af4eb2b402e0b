package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// operatorFront serves the console to a browser as the holder of cert: a TLS front on
// loopback that forwards every request to the console over mutual TLS with cert, as a
// browser does once the certificate is imported (headless Chromium offers no way to import
// one without the NSS tools).
func operatorFront(t *testing.T, console string, cert tls.Certificate, l *testLine) string {
	t.Helper()
	target, err := url.Parse(console)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.stationCA, Certificates: []tls.Certificate{cert}}}
	rp.FlushInterval = -1 // the event stream
	front := httptest.NewTLSServer(rp)
	t.Cleanup(front.Close)
	return front.URL + "/"
}

// TestConsoleActionsInBrowser drives the console's actions in headless Chromium during a
// fixture line: the wall display shows no action and its page's POST is refused (403) with
// the unit untouched; the operator aborts a unit in flight from its tile with a reason, and
// the store's audit trail records the abort with the operator's principal and the reason.
// Screenshots of the line view (1080p and tablet), a unit's page and the work orders are
// saved as artifacts.
func TestConsoleActionsInBrowser(t *testing.T) {
	exe := chromium(t)
	l := newTestLine(t, lineOptions{})
	tlsDir := filepath.Join(l.dir, "tls")
	tlsPair(t, l.pki.MakerRoot, tlsDir, "operator", "operator-1", false)
	l.file.API.Roles = []config.RoleBinding{{CommonName: "operator-1", Role: "operator"}}
	l.file.Console.Listen = "127.0.0.1:0"
	l.file.Console.WallDisplay = []string{"127.0.0.1/32"}
	l.stop(false)
	var slow slowJournal
	l.start(func(j workflow.Journal) workflow.Journal { slow = newSlowJournal(j, 0); return slow })
	wallURL := l.srv.ConsoleURL()
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "operator.pem"), filepath.Join(tlsDir, "operator.key"))
	if err != nil {
		t.Fatal(err)
	}
	opURL := operatorFront(t, wallURL, cert, l)

	// One unit done first, so that the line view has typical step times and a unit page.
	l.workOrder("WO-1", "SN-0001", "SN-0002", "SN-0003")
	first := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", first); !v.Passed {
		t.Fatalf("SN-0001: %+v", v)
	}
	first.Close() // one simulator per process

	// The next one is slow, then held in flight: the browsers watch it and the operator
	// aborts it, however long the browser takes on a loaded host.
	slow.pause.Store(int64(400 * time.Millisecond))
	held := "SN-0002"
	slow.held.Store(&held)
	sim := l.manufacture(nil, tpm.ECCP256)
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = agent.Run(ctx, l.agentConfig("SN-0002"), sim) // aborted: the verdict is a failure
	}()
	t.Cleanup(func() { <-agentDone })

	browser := newBrowser(t, exe)
	if err := chromedp.Do(browser, chromedp.Navigate(wallURL)); err != nil {
		t.Fatalf("loading the console: %v", err)
	}
	ctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	defer cancel()
	const tile = `.tile[data-serial="SN-0002"]`

	// The wall display: the tile, no action on it, and a POST from its page is refused.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(tile), chromedp.WaitVisible("#role")); err != nil {
		t.Fatalf("wall display: %v", err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("button.action").length`)); err != nil || n != 0 {
		t.Errorf("wall display shows %d action buttons (%v), want none", n, err)
	}
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/api/units/SN-0002/abort", {method: "POST",
		headers: {"Content-Type": "application/json", "X-Console-Action": "abort"}, body: JSON.stringify({reason: "from the wall"})}).then(r => r.status)`,
		func(p *runtime.EvaluateParams) { p.AwaitPromise = new(true) }))
	if err != nil || code != http.StatusForbidden {
		t.Errorf("abort from the wall display: %d, %v; want 403", code, err)
	}
	if u := l.unit("SN-0002"); u.Status == store.StatusAborted {
		t.Fatal("the wall display aborted the unit")
	}

	// The operator: the abort button on the tile, a reason, confirm.
	if err := chromedp.Do(ctx, chromedp.Navigate(opURL), chromedp.WaitVisible(tile+" button.abort")); err != nil {
		t.Fatalf("operator's line view: %v", err)
	}
	line := screenshotAt(t, ctx, 1920, 1080)
	tablet := screenshotAt(t, ctx, tabletWidth, tabletHeight)
	const reason = "connector bent on slot 2"
	// The tile is drawn again on every step of the unit, so the button is clicked in the page
	// in one go: a node looked up first may be gone by the time a click is sent to it.
	clicked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const b = document.querySelector('`+tile+` button.abort'); if (b) b.click(); return !!b })()`))
	if err != nil || !clicked {
		t.Fatalf("clicking the tile's abort button: found %v, %v", clicked, err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#action textarea"),
		chromedp.SendKeys("#action textarea", reason), chromedp.Click("#action button.primary"),
		chromedp.WaitNotVisible("#action")); err != nil {
		// ctx may be over: the dialog's error is read with a deadline of its own.
		ectx, ecancel := context.WithTimeout(browser, 10*time.Second)
		defer ecancel()
		msg, _ := chromedp.Run(ectx, chromedp.Text("#action .error"))
		t.Fatalf("aborting from the tile: %v (%s)", err, msg)
	}
	deadline := time.Now().Add(30 * time.Second)
	for l.unit("SN-0002").Status != store.StatusAborted {
		if time.Now().After(deadline) {
			t.Fatalf("SN-0002 not aborted: %+v", l.unit("SN-0002"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	audit, err := l.srv.Store().AuditAfter(context.Background(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, a := range audit {
		if a.Serial == "SN-0002" && a.Details["type"] == "unit.aborted" {
			found = a.Principal == "operator:CN=operator-1" && a.Details["reason"] == reason
			if !found {
				t.Errorf("abort audit record %+v, want principal operator:CN=operator-1 and reason %q", a, reason)
			}
		}
	}
	if !found {
		t.Fatal("no audit record of the abort")
	}
	// The failure shows up with what to do.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`[...document.querySelectorAll('#failures li')].some(li => li.dataset.code === "ABORTED" && li.textContent.includes("SN-0002"))`)); err != nil {
		t.Errorf("the abort is not among the latest failures: %v", err)
	}
	failures := screenshotAt(t, ctx, 1920, 1080)

	// The done unit's page and the work orders.
	if err := chromedp.Do(ctx, chromedp.Navigate(opURL+"unit?serial=SN-0001"), chromedp.WaitVisible(".timeline .row"),
		chromedp.WaitVisible("#certs tbody td.mono")); err != nil {
		t.Fatalf("unit page: %v", err)
	}
	unit := screenshotAt(t, ctx, 1920, 1080)
	if err := chromedp.Do(ctx, chromedp.Navigate(opURL+"workorders"), chromedp.WaitVisible(`tr[data-work-order="WO-1"]`)); err != nil {
		t.Fatalf("work orders page: %v", err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(`tr[data-work-order="WO-1"]`))
	if err != nil || !strings.Contains(row, "WO-1") {
		t.Errorf("work order row %q, %v", row, err)
	}
	orders := screenshotAt(t, ctx, 1920, 1080)

	saveArtifact(t, "console-operator-line.png", line)
	saveArtifact(t, "console-operator-line-tablet.png", tablet)
	saveArtifact(t, "console-after-abort.png", failures)
	saveArtifact(t, "console-unit.png", unit)
	saveArtifact(t, "console-workorders.png", orders)
}
