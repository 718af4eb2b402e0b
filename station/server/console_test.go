package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/config"
)

// TestConsoleDuringLine opens the operator console of a real station as an operator, follows
// its event stream while a unit is provisioned, and reads the line view after it: the stream
// carries the unit's steps and its completion, the view counts it done.
func TestConsoleDuringLine(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	tlsDir := filepath.Join(l.dir, "tls")
	tlsPair(t, l.pki.MakerRoot, tlsDir, "operator", "operator-1", false)
	l.file.API.Roles = []config.RoleBinding{{CommonName: "operator-1", Role: "operator"}}
	l.file.Console.Listen = "127.0.0.1:0"
	l.stop(false)
	l.start(nil)
	url := l.srv.ConsoleURL()
	if url == "" {
		t.Fatal("console not started")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "operator.pem"), filepath.Join(tlsDir, "operator.key"))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.stationCA, Certificates: []tls.Certificate{cert}}}}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("console events: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("console events: %s", resp.Status)
	}

	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}

	kinds := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for !kinds["unit.done"] && sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct{ Serial, Kind string }
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if ev.Serial == "SN-0001" {
			kinds[ev.Kind] = true
		}
	}
	if !kinds["unit.done"] || !kinds["step.begun"] {
		t.Fatalf("event stream for SN-0001: %v (%v)", kinds, sc.Err())
	}

	r, err := client.Get(url + "api/line")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	var v struct {
		Status struct {
			UnitsDone string `json:"units_done"`
		} `json:"status"`
		Units []json.RawMessage `json:"units"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Status.UnitsDone != "1" || len(v.Units) != 0 {
		t.Errorf("line view after the unit: %v\n%s", err, body)
	}
}
