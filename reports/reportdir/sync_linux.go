package reportdir

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS flushes the file system holding dir to disk (syncfs(2)): every file written into the
// reports folder and every rename there.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
