package server

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// slowJournal holds every step boundary a little, so that a unit stays on the line long
// enough for a browser to watch its tile move; a held unit's next step boundary waits until
// its session ends, so that it stays in flight however slow the host, until the test aborts it.
type slowJournal struct {
	workflow.Journal
	pause *atomic.Int64           // nanoseconds; the test may change it while units run
	held  *atomic.Pointer[string] // the serial held, if any
}

func newSlowJournal(j workflow.Journal, pause time.Duration) slowJournal {
	s := slowJournal{Journal: j, pause: new(atomic.Int64), held: new(atomic.Pointer[string])}
	s.pause.Store(int64(pause))
	return s
}

// wait holds a step boundary of serial.
func (j slowJournal) wait(ctx context.Context, serial string) {
	time.Sleep(time.Duration(j.pause.Load()))
	if h := j.held.Load(); h != nil && *h == serial {
		<-ctx.Done()
	}
}

func (j slowJournal) BeginStep(ctx context.Context, serial, step string, intent []byte) (store.StepRef, error) {
	j.wait(ctx, serial)
	return j.Journal.BeginStep(ctx, serial, step, intent)
}

func (j slowJournal) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	j.wait(ctx, end.Serial)
	return j.Journal.Advance(ctx, end, result, step, intent)
}

// chromium returns the path of a Chromium to drive, or skips the test (fails it under CI,
// where make deps installs Chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium; make deps installs the Debian package chromium")
	}
	t.Skip("no Chromium (Debian package chromium): the console's browser test is skipped")
	return ""
}

// TestConsoleInBrowser opens the operator console in headless Chromium as the line's wall
// display and provisions a unit: the page goes live, the unit's tile appears and moves through
// the steps, and once the unit is done its tile leaves and the counters show it. A screenshot
// of the line view mid-run is saved to $CONSOLE_ARTIFACTS (make test sets out/artifacts/), or
// to the test's temporary folder; the log names the file.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	l := newTestLine(t, lineOptions{})
	l.file.Console.Listen = "127.0.0.1:0"
	l.file.Console.WallDisplay = []string{"127.0.0.1/32"}
	l.stop(false)
	l.start(func(j workflow.Journal) workflow.Journal { return newSlowJournal(j, 300*time.Millisecond) })
	url := l.srv.ConsoleURL()

	bctx := newBrowser(t, exe)
	// The first action starts the browser, which lives as long as that action's context.
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading the console: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#live.live:not(.off)")); err != nil {
		t.Fatalf("the console did not go live: %v", err)
	}
	if live, err := chromedp.Run(ctx, chromedp.Text("#live")); err != nil || live != "live" {
		t.Fatalf("live indicator %q, %v", live, err)
	}

	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	verdict := make(chan bool, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v, err := agent.Run(ctx, l.agentConfig("SN-0001"), sim)
		if err != nil {
			t.Errorf("agent: %v", err)
		}
		verdict <- err == nil && v.Passed
	}()

	steps := map[string]bool{}
	var shot, tablet []byte
	var passed, finished bool
	for !finished {
		step, err := chromedp.Run(ctx, chromedp.EvaluateAsDevTools[string](
			`(() => { const t = document.querySelector('.tile[data-serial="SN-0001"]'); return t ? t.dataset.step : ""; })()`))
		if err != nil {
			t.Fatalf("reading the tiles: %v", err)
		}
		if step != "" {
			steps[step] = true
			if shot == nil && len(steps) >= 2 {
				if shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
					t.Fatalf("screenshot: %v", err)
				}
				tablet = screenshotAt(t, ctx, tabletWidth, tabletHeight)
			}
		}
		select {
		case passed = <-verdict:
			finished = true
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the unit did not finish")
		}
	}
	if !passed {
		t.Fatal("the unit did not pass")
	}
	if len(steps) < 2 {
		t.Errorf("the tile showed steps %v; want it to move through the steps", steps)
	}
	// Once done, the tile leaves and the counters count the unit.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('.tile[data-serial="SN-0001"]') === null &&
		[...document.querySelectorAll('#counters dt')].some(dt => dt.textContent === 'done' && dt.nextElementSibling.textContent === '1')`)); err != nil {
		counters, _ := chromedp.Run(ctx, chromedp.Text("#counters"))
		t.Fatalf("after the unit: %v (counters %q)", err, counters)
	}
	if shot == nil {
		t.Fatal("no screenshot mid-run")
	}
	path := saveArtifact(t, "console-line-view.png", shot)
	saveArtifact(t, "console-line-view-tablet.png", tablet)
	t.Logf("line view mid-run: %s (steps seen: %s)", path, strings.Join(slices.Sorted(maps.Keys(steps)), ", "))
}

// A tablet's viewport (portrait), beside the line monitor's 1920x1080.
const tabletWidth, tabletHeight = 820, 1180

// newBrowser returns a context of a new headless Chromium with a 1080p window; the browser
// starts with the first action run in it and ends with the test.
func newBrowser(t *testing.T, exe string) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("ignore-certificate-errors", true), // the station's dev CA is not the browser's
		chromedp.WindowSize(1920, 1080))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	return bctx
}

// screenshotAt takes a full-page screenshot at a width x height viewport, then returns to the
// window's size.
func screenshotAt(t *testing.T, ctx context.Context, width, height int64) []byte {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height), chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatalf("viewport %dx%d: %v", width, height, err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot at %dx%d: %v", width, height, err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1920, 1080)); err != nil {
		t.Fatalf("viewport back to 1920x1080: %v", err)
	}
	return shot
}

// saveArtifact writes a screenshot to $CONSOLE_ARTIFACTS (make test sets out/artifacts/), or
// to the test's temporary folder, and returns its path.
func saveArtifact(t *testing.T, name string, png []byte) string {
	t.Helper()
	dir := os.Getenv("CONSOLE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(filepath.Join(dir, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
