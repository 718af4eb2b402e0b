package console

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// liveRunner is a workflow runner whose running serials the test sets.
type liveRunner struct {
	api.Runner
	mu      sync.Mutex
	serials []string
}

func (r *liveRunner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.serials)
}

type fixture struct {
	env  *apitest.Env
	live *liveRunner
	url  string
	ca   *x509.CertPool
}

// newFixture serves the console over real mutual TLS in front of a real API and store.
func newFixture(t *testing.T, wall ...netip.Prefix) *fixture {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-console"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	runner, err := workflow.New(workflow.Config{Journal: st, EKRoots: []*x509.Certificate{travelertest.NewCA(t, "EK root").Cert}})
	if err != nil {
		t.Fatal(err)
	}
	live := &liveRunner{Runner: runner}
	env := apitest.Start(t, api.Config{Store: st, Runner: live, Version: "v-console"})
	h, err := New(Config{Line: env.API, Events: st, Steps: workflow.Steps, Poll: 20 * time.Millisecond,
		Role: func(c *x509.Certificate) (string, bool) { r, ok := apitest.Roles.Lookup(c); return string(r), ok }, WallDisplay: wall})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(env.PKI.CA.Cert)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{env.PKI.Server}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &fixture{env: env, live: live, url: srv.URL, ca: pool}
}

// client returns an HTTPS client presenting cert (none when nil).
func (f *fixture) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.ca, ServerName: apitest.ServerName}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func (f *fixture) operator(t *testing.T) *http.Client {
	c := f.env.PKI.Client(t, apitest.Operator)
	return f.client(&c)
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestAccess(t *testing.T) {
	f := newFixture(t)
	noRole := f.env.PKI.Client(t, apitest.NoRole)
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"no certificate", f.client(nil), http.StatusUnauthorized},
		{"certificate without a role", f.client(&noRole), http.StatusForbidden},
		{"operator", f.operator(t), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/", "/assets/app.js", "/api/line"} {
				if resp, body := get(t, tc.client, f.url+path); resp.StatusCode != tc.want {
					t.Errorf("GET %s: %s, want %d: %s", path, resp.Status, tc.want, body)
				}
			}
		})
	}
	// A wall display views without a certificate; a certificate without a role stays refused.
	wall := newFixture(t, netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"))
	for _, path := range []string{"/", "/api/line"} {
		if resp, body := get(t, wall.client(nil), wall.url+path); resp.StatusCode != http.StatusOK {
			t.Errorf("wall display GET %s: %s: %s", path, resp.Status, body)
		}
	}
	wallNoRole := wall.env.PKI.Client(t, apitest.NoRole)
	if resp, _ := get(t, wall.client(&wallNoRole), wall.url+"/"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("certificate without a role from a wall display's address: %s, want 403", resp.Status)
	}
	other := newFixture(t, netip.MustParsePrefix("10.0.0.0/8"))
	if resp, _ := get(t, other.client(nil), other.url+"/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no certificate from outside the wall displays: %s, want 401", resp.Status)
	}

	untrusted := f.env.PKI.Untrusted(t, apitest.Admin)
	if _, err := f.client(&untrusted).Get(f.url + "/"); err == nil {
		t.Error("a certificate from another CA got through the handshake")
	}
}

func TestPageAndAssets(t *testing.T) {
	f := newFixture(t)
	c := f.operator(t)
	resp, body := get(t, c, f.url+"/")
	if !strings.Contains(body, `<script src="/assets/app.js"`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("page: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for path, typ := range map[string]string{"/assets/app.js": "text/javascript", "/assets/style.css": "text/css"} {
		if resp, _ := get(t, c, f.url+path); !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) {
			t.Errorf("%s: %s, Content-Type %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := get(t, c, f.url+"/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %s", resp.Status)
	}
	// Everything the page needs is embedded: no asset names another origin.
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, path)
		if strings.Contains(string(b), "http://") || strings.Contains(string(b), "https://") || strings.Contains(string(b), "//cdn") {
			t.Errorf("%s refers to another origin", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLineView(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	travelertest.WriteUnit(t, f.env.Store, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default"})
	if _, err := f.env.Store.UpdateUnit(ctx, "SN-0002", func(u *store.UnitState) error { u.Status = store.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.env.Store.BeginStep(ctx, "SN-0002", "idevid_key", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	f.live.mu.Lock()
	f.live.serials = []string{"SN-0002"}
	f.live.mu.Unlock()

	resp, body := get(t, f.operator(t), f.url+"/api/line")
	var v struct {
		Status struct {
			StationID string `json:"station_id"`
			UnitsDone string `json:"units_done"` // protojson writes 64-bit integers as strings
		} `json:"status"`
		Units []struct {
			Serial string `json:"serial"`
			Step   string `json:"step"`
		} `json:"units"`
		Steps []string `json:"steps"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/line: %s, %v\n%s", resp.Status, err, body)
	}
	if v.Status.StationID != "st-console" || v.Status.UnitsDone != "1" {
		t.Errorf("status %+v", v.Status)
	}
	if len(v.Units) != 1 || v.Units[0].Serial != "SN-0002" || v.Units[0].Step != "idevid_key" {
		t.Errorf("units in flight %+v, want SN-0002 in idevid_key", v.Units)
	}
	if !slices.Equal(v.Steps, workflow.Steps) {
		t.Errorf("steps %v", v.Steps)
	}
}

// sse reads Server-Sent Events from body.
type sse struct{ r *bufio.Reader }

type message struct{ id, event, data string }

// next returns the next event (comments and the retry field skipped).
func (s sse) next(t *testing.T) message {
	t.Helper()
	var m message
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if m.event != "" {
				return m
			}
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			m.data = line[6:]
		}
	}
}

func (f *fixture) stream(t *testing.T, lastID string) sse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	c := f.operator(t)
	c.Timeout = 0 // a stream; the context bounds it
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/api/events: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return sse{bufio.NewReader(resp.Body)}
}

func TestEvents(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.env.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-OLD", Profile: "default", Serials: []string{"X-0"}}); err != nil {
		t.Fatal(err)
	}
	s := f.stream(t, "")
	// The stream starts from now: the older work order is not replayed.
	var first message
	for _, id := range []string{"WO-1", "WO-2"} {
		if _, err := f.env.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: id, Profile: "default", Serials: []string{"X-" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	first = s.next(t)
	var ev event
	if err := json.Unmarshal([]byte(first.data), &ev); err != nil {
		t.Fatalf("event data %q: %v", first.data, err)
	}
	if first.event != "station" || ev.Kind != "work_order.created" || strings.Contains(first.data, "WO-OLD") || !strings.Contains(first.data, "WO-1") {
		t.Errorf("first event %+v, want work order WO-1 created", first)
	}
	second := s.next(t)
	if !strings.Contains(second.data, "WO-2") {
		t.Errorf("second event %+v, want WO-2", second)
	}
	// A browser reconnecting with Last-Event-ID gets what followed that event.
	if again := f.stream(t, first.id).next(t); again.id != second.id {
		t.Errorf("after Last-Event-ID %s: event %s, want %s", first.id, again.id, second.id)
	}
}

// TestScriptParses has Node.js parse the pages' scripts, when Node.js is installed (it is not
// one of make deps' packages; the browser test in station/server runs them).
func TestScriptParses(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed: the scripts are not parsed")
	}
	scripts, err := fs.Glob(assets, "assets/*.js")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("scripts %v, %v", scripts, err)
	}
	for _, name := range scripts {
		src, err := fs.ReadFile(assets, name)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), filepath.Base(name))
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(node, "--check", path).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
	}
}
