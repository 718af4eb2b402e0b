package ctl

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/export"
)

// sentChunks is a finished ExportBundle answer.
type sentChunks []*stationv1.ExportChunk

func (c *sentChunks) Recv() (*stationv1.ExportChunk, error) {
	if len(*c) == 0 {
		return nil, io.EOF
	}
	ch := (*c)[0]
	*c = (*c)[1:]
	return ch, nil
}

// TestReceiveRefuses checks that a file whose sentChunks hold more or fewer bytes than the station
// announced (first, or at the end of a file announced with -1), a chunk of no file or after
// its file's end, a misplaced end chunk and a stream without the manifest are refused, as a
// folder and as an archive, leaving nothing behind; and that a file in several sentChunks
// lands whole, announced or streamed.
func TestReceiveRefuses(t *testing.T) {
	manifest := &stationv1.ExportChunk{Path: export.ManifestFile, Size: 2, Data: []byte("{}")}
	for _, c := range []struct {
		name   string
		chunks sentChunks
		want   string
	}{
		{"more than announced", sentChunks{{Path: "a.txt", Size: 3, Data: []byte("ab")}, {Path: "a.txt", Data: []byte("cd")}, manifest}, "a.txt: got 4 bytes, the station announced 3"},
		{"fewer than announced", sentChunks{{Path: "a.txt", Size: 5, Data: []byte("ab")}, {Path: "a.txt", Data: []byte("cd")}, manifest}, "a.txt: got 4 bytes, the station announced 5"},
		{"no file", sentChunks{{Path: "", Size: 1, Data: []byte("a")}, manifest}, "a chunk of no file"},
		{"no manifest", sentChunks{{Path: "a.txt", Size: 1, Data: []byte("a")}}, "incomplete bundle"},
		{"whole", sentChunks{{Path: "a.txt", Size: 4, Data: []byte("ab")}, {Path: "a.txt", Data: []byte("cd")}, manifest}, ""},
		{"streamed whole", sentChunks{{Path: "a.txt", Size: -1, Data: []byte("ab")}, {Path: "a.txt", Data: []byte("cd")}, {Path: "a.txt", Size: 4, End: true}, manifest}, ""},
		{"streamed without its end", sentChunks{{Path: "a.txt", Size: -1, Data: []byte("ab")}, {Path: "a.txt", Data: []byte("cd")}, manifest}, "a.txt: the file ended without its size"},
		{"streamed, more than its end says", sentChunks{{Path: "a.txt", Size: -1, Data: []byte("abcd")}, {Path: "a.txt", Size: 3, End: true}, manifest}, "a.txt: got 4 bytes, the station announced 3"},
		{"streamed, a chunk after its end", sentChunks{{Path: "a.txt", Size: -1, Data: []byte("ab")}, {Path: "a.txt", Size: 2, End: true}, {Path: "a.txt", Data: []byte("cd")}, manifest}, "a.txt: a chunk after its end"},
		{"an end chunk of an announced file", sentChunks{{Path: "a.txt", Size: 2, Data: []byte("ab")}, {Path: "a.txt", Size: 2, End: true}, manifest}, "a.txt: an end chunk the station may not send"},
		{"an end chunk with data", sentChunks{{Path: "a.txt", Size: -1, Data: []byte("ab")}, {Path: "a.txt", Size: 4, End: true, Data: []byte("cd")}, manifest}, "a.txt: an end chunk the station may not send"},
		{"a size below -1", sentChunks{{Path: "a.txt", Size: -2, Data: []byte("ab")}, manifest}, "a.txt: the station announced -2 bytes"},
	} {
		for _, archive := range []bool{false, true} {
			dir := t.TempDir()
			out := filepath.Join(dir, "bundle")
			stream := append(sentChunks(nil), c.chunks...)
			var err error
			if archive {
				out += ".tar"
				_, err = receiveArchive(out, &stream)
			} else {
				_, err = receiveFolder(out, &stream)
			}
			left, _ := os.ReadDir(dir)
			if c.want == "" {
				if err != nil || len(left) != 1 {
					t.Errorf("%s (archive %v): %v, %d files", c.name, archive, err, len(left))
				}
				if !archive && err == nil {
					if data, _ := os.ReadFile(filepath.Join(out, "a.txt")); string(data) != "abcd" {
						t.Errorf("%s: a.txt holds %q", c.name, data)
					}
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s (archive %v): error %v, want %q", c.name, archive, err, c.want)
			}
			if len(left) > 0 {
				t.Errorf("%s (archive %v): %s left behind", c.name, archive, left[0].Name())
			}
		}
	}
}
