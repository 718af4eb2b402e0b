package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxExposure is the highest systemd-analyze security exposure a unit may have, in tenths of
// the level it prints (0 is fully locked down, 100 not at all; stationd printed 1.4, i.e. 14,
// when this was written).
const maxExposure = "30"

// units lists the unit files of systemd/ and firstboot/ and the name each is verified as (a
// template gets an instance).
func units(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("systemd/*.service")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("systemd/ holds %d units, want stationd, estca@ and device-agent", len(paths))
	}
	firstboot, err := filepath.Glob("firstboot/*.service")
	if err != nil || len(firstboot) == 0 {
		t.Fatalf("firstboot/ holds no unit (%v), want devid-pkcs11-link", err)
	}
	paths = append(paths, firstboot...)
	out := map[string]string{}
	for _, p := range paths {
		name := filepath.Base(p)
		if strings.HasSuffix(name, "@.service") {
			name = strings.TrimSuffix(name, "@.service") + "@test.service"
		}
		out[p] = name
	}
	return out
}

// directives returns every Key=value line of a unit file, continuation lines joined.
func directives(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[') {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		out = append(out, cur+line)
		cur = ""
	}
	return out
}

// commands returns the executables the unit's Exec*= lines run.
func commands(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, d := range directives(t, path) {
		k, v, _ := strings.Cut(d, "=")
		if strings.HasPrefix(k, "Exec") {
			out = append(out, strings.TrimLeft(strings.Fields(v)[0], "-+!@:"))
		}
	}
	return out
}

// buildOutputs returns the names make build gives its binaries: go build -o bin/ ./... names
// each main package's binary after its folder.
func buildOutputs(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.Dir}}{{end}}`, "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var names []string
	for _, dir := range strings.Fields(string(out)) {
		names = append(names, filepath.Base(dir))
	}
	return names
}

// TestUnitsRunBuiltBinaries checks that each unit of systemd/ runs a binary of make build from
// /usr/local/bin/, and each unit of firstboot/ the script shipped beside it from
// /usr/local/libexec/devid/.
func TestUnitsRunBuiltBinaries(t *testing.T) {
	built := buildOutputs(t)
	for path := range units(t) {
		cmds := commands(t, path)
		if len(cmds) == 0 {
			t.Errorf("%s: no ExecStart", path)
		}
		for _, c := range cmds {
			dir, name := filepath.Split(c)
			if filepath.Dir(path) == "firstboot" {
				if fi, err := os.Stat(filepath.Join("firstboot", name)); dir != "/usr/local/libexec/devid/" || err != nil || fi.Mode()&0o111 == 0 {
					t.Errorf("%s runs %s; want /usr/local/libexec/devid/ and an executable script of firstboot/ (%v)", path, c, err)
				}
				continue
			}
			if dir != "/usr/local/bin/" || !slices.Contains(built, name) {
				t.Errorf("%s runs %s; want /usr/local/bin/ and one of make build's binaries %v", path, c, built)
			}
		}
	}
}

// TestStationdHardening checks the stationd unit keeps the hardening docs/install.md promises.
func TestStationdHardening(t *testing.T) {
	got := directives(t, "systemd/stationd.service")
	for _, want := range []string{
		"User=devid-station", "StateDirectory=devid", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"PrivateTmp=yes", "CapabilityBoundingSet=", "Restart=on-failure", "ProtectHome=yes",
		"SystemCallFilter=@system-service", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("stationd.service lacks %q", want)
		}
	}
}

// TestSystemdVerify runs systemd-analyze verify, and its offline security review, on every
// unit inside a scratch root holding the system's own units, the units under test and a
// stand-in for each binary they run. A warning (an unknown key, a bad value) fails too.
func TestSystemdVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not found; make deps installs the systemd package")
		}
		t.Skip("systemd-analyze not found (Debian package systemd; make deps installs it): units not verified")
	}
	systemUnits := ""
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, "sysinit.target")); err == nil {
			systemUnits = dir
			break
		}
	}
	if systemUnits == "" {
		t.Fatal("systemd-analyze is here but the system's units (sysinit.target) are not")
	}
	root := t.TempDir()
	for _, dir := range []string{"usr/lib/systemd", "etc/systemd/system", "usr/local/bin", "usr/local/libexec/devid"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", systemUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copying the system's units: %v\n%s", err, out)
	}
	all := units(t)
	for path := range all {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", filepath.Base(path)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, c := range commands(t, path) {
			if err := os.WriteFile(filepath.Join(root, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for path, name := range all {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(analyze, "verify", "--root="+root, name).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
			}
			out, err = exec.Command(analyze, "security", "--offline=yes", "--root="+root, "--threshold="+maxExposure, "--no-pager", name).CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze security %s: exposure above %s (%v):\n%s", path, maxExposure, err, lastLines(out, 3))
			}
		})
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestSysusersCreateUnitUsers applies sysusers.d/devid.conf to a scratch root with
// systemd-sysusers and checks it creates every User= and Group= the units name.
func TestSysusersCreateUnitUsers(t *testing.T) {
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-sysusers not found; make deps installs the systemd package")
		}
		t.Skip("systemd-sysusers not found (Debian package systemd): sysusers.d not checked")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"passwd", "group"} {
		if err := os.WriteFile(filepath.Join(root, "etc", f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := filepath.Abs("sysusers.d/devid.conf")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	names := func(file string) []string {
		data, err := os.ReadFile(filepath.Join(root, "etc", file))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			out = append(out, strings.SplitN(line, ":", 2)[0])
		}
		return out
	}
	users, groups := names("passwd"), names("group")
	for path := range units(t) {
		for _, d := range directives(t, path) {
			k, v, _ := strings.Cut(d, "=")
			if (k == "User" && !slices.Contains(users, v)) || (k == "Group" && !slices.Contains(groups, v)) {
				t.Errorf("%s: %s=%s is not created by sysusers.d/devid.conf (users %v, groups %v)", path, k, v, users, groups)
			}
		}
	}
}
