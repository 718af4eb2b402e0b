package console

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/workflow"
)

// advice is what the operator should do when a unit fails with a workflow error code; the
// line view shows it beside each of the latest failures. Codes without advice get a generic
// line in the page.
var advice = map[string]string{
	workflow.CodeAgentError:          "check the unit's cable and fixture; retry the unit once",
	workflow.CodeEKCertMissing:       "set the unit aside: its TPM has no EK certificate; QA decides",
	workflow.CodeEKUntrusted:         "quarantine the unit; QA decides",
	workflow.CodeEKCertInvalid:       "quarantine the unit; QA decides",
	workflow.CodeEKMismatch:          "quarantine the unit (EK certificate does not match the TPM); QA decides",
	workflow.CodeEKBound:             "quarantine the unit: its TPM is bound to another serial; QA decides",
	workflow.CodeEKChanged:           "quarantine the unit: its TPM changed since it was first seen; QA decides",
	workflow.CodeNotAuthorized:       "check the serial label and the work order; call the shift lead",
	workflow.CodeAlreadyProvisioned:  "nothing to do: the unit was provisioned before; rework needs an admin",
	workflow.CodeProfileUnknown:      "call the line engineer: the work order names a profile this station lacks",
	workflow.CodeHandleOccupied:      "set the unit aside for rework: its TPM holds other keys",
	workflow.CodeKeyChanged:          "set the unit aside for rework; QA decides",
	workflow.CodeKeyAttributes:       "quarantine the unit; QA decides",
	workflow.CodeKeyNameMismatch:     "quarantine the unit; QA decides",
	workflow.CodeActivationFailed:    "quarantine the unit: its TPM failed the credential proof; QA decides",
	workflow.CodeCSRInvalid:          "retry the unit once; if it fails again, set it aside for QA",
	workflow.CodeCARejected:          "stop the line and call the line engineer: the CA refuses requests",
	workflow.CodeCAUnavailable:       "check the CA (see the CA panel); the unit retries on reconnect",
	workflow.CodeCertInvalid:         "call the line engineer: the CA issued a certificate the station refused",
	workflow.CodeInstallFailed:       "reseat the unit and retry; if it fails again, set it aside",
	workflow.CodeReadbackMismatch:    "set the unit aside for rework; QA decides",
	workflow.CodeProofFailed:         "quarantine the unit; QA decides",
	workflow.CodeStepTimeout:         "check the unit is powered and connected; retry it once",
	workflow.CodeAborted:             "follow the abort's reason (unit page); rework needs an admin",
	workflow.CodeSerialBusy:          "the serial is already on the line: check for a duplicate label",
	workflow.CodeInternal:            "call the line engineer with the station log",
	workflow.CodeFileRootsUnsuitable: "check the unit's image: the agent offers no folder for its files",
}

// Bounds of the line view's figures.
const (
	// latestFailures is how many failed units the line view lists.
	latestFailures = 10
	// sampleUnits is how many of the most recently finished units the typical step times and
	// cycle times are taken from.
	sampleUnits = 50
	// statsTTL is how long those figures are reused before they are computed again.
	statsTTL = 30 * time.Second
)

// stats are figures taken from the travelers of the most recently finished units.
type stats struct {
	// Typical is the median duration of each step's successful attempts, in milliseconds.
	Typical map[string]int64
	// CycleP50 and CycleP95 are cycle-time percentiles in milliseconds (0 without units).
	CycleP50, CycleP95 int64
	at                 time.Time
}

// statsCache holds the last stats.
type statsCache struct {
	mu   sync.Mutex
	last *stats
}

// stats returns the current figures, computing them at most every statsTTL.
func (c *console) stats(ctx context.Context) (*stats, error) {
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if s := c.cache.last; s != nil && time.Since(s.at) < statsTTL {
		return s, nil
	}
	done, err := c.list(ctx, stationv1.UnitStatus_UNIT_STATUS_DONE)
	if err != nil {
		return nil, err
	}
	latestFirst(done)
	durations := map[string][]float64{}
	var cycles []float64
	for _, u := range done[:min(len(done), sampleUnits)] {
		tr, err := c.cfg.Line.GetTraveler(ctx, &stationv1.GetTravelerRequest{Serial: u.GetSerial()})
		if err != nil {
			return nil, fmt.Errorf("traveler of %s: %w", u.GetSerial(), err)
		}
		var rec traveler.Record
		if err := json.Unmarshal(tr.GetJson(), &rec); err != nil {
			return nil, fmt.Errorf("traveler of %s: %w", u.GetSerial(), err)
		}
		for _, s := range rec.Steps {
			if s.EndedAt != nil && s.ErrorCode == "" {
				durations[s.Name] = append(durations[s.Name], s.DurationMS)
			}
		}
		if rec.CycleTimeSeconds > 0 {
			cycles = append(cycles, rec.CycleTimeSeconds*1000)
		}
	}
	s := &stats{Typical: map[string]int64{}, CycleP50: quantile(cycles, .5), CycleP95: quantile(cycles, .95), at: time.Now()}
	for step, d := range durations {
		s.Typical[step] = quantile(d, .5)
	}
	c.cache.last = s
	return s, nil
}

// quantile returns the q-quantile of xs (nearest rank), rounded; 0 for none.
func quantile(xs []float64, q float64) int64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(q*float64(len(xs)) + .5)
	return int64(xs[min(max(i-1, 0), len(xs)-1)] + .5)
}

// latestFirst orders units by their last change, newest first.
func latestFirst(units []*stationv1.Unit) {
	slices.SortFunc(units, func(a, b *stationv1.Unit) int {
		return b.GetUpdateTime().AsTime().Compare(a.GetUpdateTime().AsTime())
	})
}
