package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzConfig decodes and validates arbitrary configuration files in a folder holding every
// file the example configuration names. A file that passes has the invariants the station
// starts on, and neither an error nor the runtime's printed form reveals a CA secret.
func FuzzConfig(f *testing.F) {
	dir := exampleDir(f)
	example, err := os.ReadFile(filepath.Join(dir, "station.toml"))
	if err != nil {
		f.Fatal(err)
	}
	if file, err := Decode(example); err != nil {
		f.Fatal(err)
	} else if _, err := file.Validate(dir); err != nil {
		f.Fatalf("the example seed does not validate: %v", err)
	}
	f.Add(example)
	f.Add([]byte(strings.Replace(string(example), "station_id", "station_idx", 1)))
	f.Add([]byte(strings.Replace(string(example), `"5m"`, `"-5m"`, 1)))
	f.Add([]byte(strings.Replace(string(example), "[[profile]]", "[[profile]]\n[[profile]]", 1)))
	f.Add([]byte("station_id = 'a'\n[agents]\nmax_units_in_flight = 99999999999999999999\n"))
	f.Add([]byte("[[ca]]\n[ca.x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(data)
		if err != nil {
			return
		}
		// Validate reads the files a configuration names: keep it to the test folder's kind
		// of files, never a device or kernel file that would block or never end.
		if s := fmt.Sprintf("%#v", file); strings.Contains(s, "/dev/") || strings.Contains(s, "/proc/") || strings.Contains(s, "/sys/") {
			return
		}
		rt, err := file.Validate(dir)
		if err != nil {
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error reveals a secret: %v", err)
			}
			return
		}
		if printed := fmt.Sprintf("%v %+v", rt, rt.CAs); strings.Contains(printed, "s3cret") {
			t.Fatal("printed runtime reveals a secret")
		}
		if !nameRE.MatchString(rt.StationID) || rt.StorePath == "" {
			t.Fatalf("station id %q, store %q accepted", rt.StationID, rt.StorePath)
		}
		if rt.MaxUnitsInFlight < 1 || rt.MaxUnitsInFlight > 10000 || rt.HelloTimeout < 0 || rt.SlotWait < 0 || rt.HandoverWait < 0 {
			t.Fatalf("limits accepted: %d units, hello %s, slot %s, handover %s", rt.MaxUnitsInFlight, rt.HelloTimeout, rt.SlotWait, rt.HandoverWait)
		}
		if rt.AgentTLS == nil || rt.APITLS == nil || len(rt.EKRoots) == 0 || len(rt.Profiles) == 0 {
			t.Fatal("accepted without TLS material, EK roots or a profile")
		}
		for name, p := range rt.Profiles {
			if p == nil {
				t.Fatalf("profile %q accepted without a validated profile", name)
			}
		}
	})
}

// FuzzCheckAzureIoTIdentity runs the aziot schema check on arbitrary files: it always answers,
// with sorted problems, one alone for a file that is not TOML.
func FuzzCheckAzureIoTIdentity(f *testing.F) {
	paths, err := filepath.Glob("testdata/aziot/*.toml")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no aziot fixtures: %v", err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[provisioning]\nsource = 42\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		problems := CheckAzureIoTIdentity(data)
		if !slices.IsSorted(problems) {
			t.Fatalf("problems not sorted: %q", problems)
		}
		for i, p := range problems {
			if strings.HasPrefix(p, "not TOML") && len(problems) != 1 {
				t.Fatalf("problem %d of %d says the file is not TOML", i, len(problems))
			}
		}
	})
}
