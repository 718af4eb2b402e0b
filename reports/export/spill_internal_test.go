package export

import (
	"os"
	"testing"
)

// TestSpillFileMode checks that the spill file is private (0600) and leaves nothing in its
// folder once removed.
func TestSpillFileMode(t *testing.T) {
	dir := t.TempDir()
	s, err := newSpill(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := s.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("spill file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := s.w.WriteString("x\n"); err != nil || s.flush() != nil {
		t.Fatal("writing the spill file")
	}
	s.remove()
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("%s left in the spill folder", entries[0].Name())
	}
}
