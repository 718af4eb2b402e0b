package stationv1

import "testing"

// TestEventKinds checks that every EventKind of the proto has one distinct Event.kind string.
func TestEventKinds(t *testing.T) {
	seen := map[string]EventKind{}
	for v := range EventKind_name {
		k := EventKind(v)
		if k == EventKind_EVENT_KIND_UNSPECIFIED {
			if k.Kind() != "" {
				t.Errorf("unspecified kind has the string %q", k.Kind())
			}
			continue
		}
		s := k.Kind()
		if s == "" {
			t.Errorf("%v has no Event.kind string", k)
			continue
		}
		if prev, ok := seen[s]; ok {
			t.Errorf("%v and %v share %q", k, prev, s)
		}
		seen[s] = k
		if ParseEventKind(s) != k {
			t.Errorf("ParseEventKind(%q) = %v, want %v", s, ParseEventKind(s), k)
		}
	}
	if len(eventKinds) != len(EventKind_name)-1 {
		t.Errorf("%d kind strings for %d kinds", len(eventKinds), len(EventKind_name)-1)
	}
}
