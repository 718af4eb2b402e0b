package workflow

import (
	"strings"
	"testing"
)

func TestCheckFileRoots(t *testing.T) {
	full := &Profile{Name: "default", LDevIDCertPath: "/etc/devid/ldevid.pem", Onboarding: &Onboarding{Path: "/etc/aziot/config.toml"}}
	noOnboarding := &Profile{Name: "bare", LDevIDCertPath: "/etc/devid/ldevid.pem"}
	tests := []struct {
		name    string
		profile *Profile
		roots   []string
		missed  []string // paths the refusal names; nil: accepted
	}{
		{"each folder", full, []string{"/etc/devid", "/etc/aziot"}, nil},
		{"a common parent", full, []string{"/etc"}, nil},
		{"the whole unit", full, []string{"/"}, nil},
		{"unclean roots", full, []string{"/etc/devid/", "//etc/./aziot", "/tmp/../etc"}, nil},
		{"no onboarding file", noOnboarding, []string{"/etc/devid"}, nil},
		{"one folder missing", full, []string{"/etc/devid"}, []string{"/etc/aziot/config.toml"}},
		{"bench folder instead of unit paths", full, []string{"/tmp/unit"}, []string{"/etc/devid/ldevid.pem", "/etc/aziot/config.toml"}},
		{"prefix siblings", full, []string{"/etc/devidX", "/etc/aziot-old"}, []string{"/etc/devid/ldevid.pem", "/etc/aziot/config.toml"}},
		{"name prefix", noOnboarding, []string{"/etc/dev"}, []string{"/etc/devid/ldevid.pem"}},
		{"the file itself", noOnboarding, []string{"/etc/devid/ldevid.pem"}, []string{"/etc/devid/ldevid.pem"}},
		{"relative root", noOnboarding, []string{"etc/devid", "", "."}, []string{"/etc/devid/ldevid.pem"}},
		{"none announced", full, nil, []string{"/etc/devid/ldevid.pem", "/etc/aziot/config.toml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFileRoots(tc.profile, tc.roots)
			if tc.missed == nil {
				if err != nil {
					t.Fatalf("checkFileRoots(%q) = %v, want nil", tc.roots, err)
				}
				return
			}
			if CodeOf(err) != CodeFileRootsUnsuitable {
				t.Fatalf("checkFileRoots(%q) = %v, want %s", tc.roots, err, CodeFileRootsUnsuitable)
			}
			msg := err.Error()
			for _, p := range tc.missed {
				if !strings.Contains(msg, `"`+p+`"`) {
					t.Errorf("refusal does not name %s: %s", p, msg)
				}
			}
			for _, p := range tc.profile.Files() {
				if !strings.Contains(strings.Join(tc.missed, " "), p) && strings.Contains(msg, `"`+p+`"`) {
					t.Errorf("refusal names %s, which a root covers: %s", p, msg)
				}
			}
			for _, r := range tc.roots {
				if !strings.Contains(msg, `"`+r+`"`) {
					t.Errorf("refusal does not name root %q: %s", r, msg)
				}
			}
			if len(tc.roots) == 0 && !strings.Contains(msg, "no file roots") {
				t.Errorf("refusal does not say that no roots were announced: %s", msg)
			}
		})
	}
}

func TestCheckFileRootsBoundsMessage(t *testing.T) {
	p := &Profile{Name: "default", LDevIDCertPath: "/etc/devid/ldevid.pem"}
	roots := make([]string, 16)
	for i := range roots {
		roots[i] = "/srv/" + strings.Repeat("r", 10) + string(rune('a'+i))
	}
	msg := checkFileRoots(p, roots).Error()
	if !strings.Contains(msg, `"`+roots[maxRootsShown-1]+`"`) || strings.Contains(msg, `"`+roots[maxRootsShown]+`"`) ||
		!strings.Contains(msg, "and 8 more") {
		t.Errorf("refusal should quote the first %d roots and count the rest: %s", maxRootsShown, msg)
	}
}
