package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// fileError marks a file system failure (ERROR_CODE_NOT_FOUND or ERROR_CODE_IO).
type fileError struct {
	op   string
	path string
	err  error
}

func (e *fileError) Error() string { return fmt.Sprintf("%s %s: %v", e.op, e.path, e.err) }
func (e *fileError) Unwrap() error { return e.err }

// notFound reports whether the file or a directory above it does not exist.
func (e *fileError) notFound() bool { return errors.Is(e.err, fs.ErrNotExist) }

// fileRoots confines file commands to directories below configured roots. Roots are resolved
// (symlinks followed) at each command, so a root may be created after the agent starts; paths
// are checked component by component so that no symlink leads outside the root it was
// reached from, and with a sysroot no resolved root may lie outside the resolved sysroot. The
// agent is assumed to be the only writer below its roots while a command runs. It is not safe
// for concurrent use.
type fileRoots struct {
	roots   []string // cleaned absolute paths, below sysroot when it is set
	sysroot string   // Config.Sysroot, cleaned; "" for the real root
}

// target is a checked path: the resolved parent directory and the final name.
type target struct {
	root string // resolved root the path lies below
	dir  string // resolved parent directory, below root
	base string
}

func (t target) path() string { return filepath.Join(t.dir, t.base) }

// within reports whether p is root or lies below it (both clean and absolute).
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// resolve checks p and resolves its parent directory, creating missing directories (0755)
// below the root when create is set.
func (r *fileRoots) resolve(p string, create bool) (target, error) {
	if p == "" || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return target{}, fmt.Errorf("%w: %q is not an absolute path", ErrPathNotAllowed, p)
	}
	for _, elem := range strings.Split(filepath.ToSlash(p), "/") {
		if elem == ".." {
			return target{}, fmt.Errorf("%w: %q contains \"..\"", ErrPathNotAllowed, p)
		}
	}
	c := filepath.Join(r.sysroot, filepath.Clean(p))
	for _, root := range r.roots {
		resolvedRoot, err := filepath.EvalSymlinks(root)
		rel := ""
		switch {
		case within(root, c):
			rel, _ = filepath.Rel(root, c)
		case err == nil && within(resolvedRoot, c):
			rel, _ = filepath.Rel(resolvedRoot, c)
		default:
			continue
		}
		if rel == "." {
			return target{}, fmt.Errorf("%w: %q is a root directory, not a file", ErrInvalidArgument, p)
		}
		if err != nil {
			return target{}, &fileError{op: "resolving root", path: root, err: err}
		}
		if err := r.inSysroot(root, resolvedRoot); err != nil {
			return target{}, err
		}
		dir, err := walkDir(resolvedRoot, filepath.Dir(rel), create)
		if err != nil {
			return target{}, err
		}
		return target{root: resolvedRoot, dir: dir, base: filepath.Base(rel)}, nil
	}
	return target{}, fmt.Errorf("%w: %q is outside the agent's file roots", ErrPathNotAllowed, p)
}

// inSysroot fails unless the resolved root lies below the resolved sysroot (when one is set):
// a symlink on the way to a root must not lead off the bench folder.
func (r *fileRoots) inSysroot(root, resolvedRoot string) error {
	if r.sysroot == "" {
		return nil
	}
	sys, err := filepath.EvalSymlinks(r.sysroot)
	if err != nil {
		return &fileError{op: "resolving sysroot", path: r.sysroot, err: err}
	}
	if !within(sys, resolvedRoot) {
		return fmt.Errorf("%w: root %s leads outside the sysroot through a symlink", ErrPathNotAllowed, root)
	}
	return nil
}

// makeRoots creates the roots that are missing below the sysroot, as a unit's image has the
// folders the station writes to; a symlink leading off the sysroot is refused. Without a
// sysroot it does nothing: a unit's roots are its own.
func (r *fileRoots) makeRoots() error {
	if r.sysroot == "" {
		return nil
	}
	sys, err := filepath.EvalSymlinks(r.sysroot)
	if err != nil {
		return &fileError{op: "resolving sysroot", path: r.sysroot, err: err}
	}
	for _, root := range r.roots {
		rel, err := filepath.Rel(r.sysroot, root)
		if err != nil {
			return fmt.Errorf("file root %s: %w", root, err)
		}
		if _, err := walkDir(sys, rel, true); err != nil {
			return fmt.Errorf("creating file root %s: %w", root, err)
		}
	}
	return nil
}

// walkDir descends from root through rel one component at a time, refusing symlinks that
// lead outside root and creating missing directories when create is set. It returns the
// resolved directory.
func walkDir(root, rel string, create bool) (string, error) {
	cur := root
	if rel == "." {
		return cur, nil
	}
	for _, comp := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, comp)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) && create {
			if err = os.Mkdir(next, 0o755); err == nil || errors.Is(err, fs.ErrExist) {
				fi, err = os.Lstat(next)
			}
		}
		if err != nil {
			return "", &fileError{op: "resolving", path: next, err: err}
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if next, err = resolveLink(root, next); err != nil {
				return "", err
			}
			if fi, err = os.Stat(next); err != nil {
				return "", &fileError{op: "resolving", path: next, err: err}
			}
		}
		if !fi.IsDir() {
			return "", &fileError{op: "resolving", path: next, err: errors.New("not a directory")}
		}
		cur = next
	}
	return cur, nil
}

// resolveLink follows the symlink at p and fails unless it stays below root.
func resolveLink(root, p string) (string, error) {
	t, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", &fileError{op: "resolving", path: p, err: err}
	}
	if !within(root, t) {
		return "", fmt.Errorf("%w: %s is a symlink leading outside its root", ErrPathNotAllowed, p)
	}
	return t, nil
}

// writeFile writes req.Content atomically and answers the SHA-256 and size read back.
func (r *fileRoots) writeFile(req *agentv1.WriteFileRequest) (*agentv1.WriteFileResult, error) {
	mode := req.GetMode()
	if mode > maxFileMode {
		return nil, fmt.Errorf("%w: mode %#o has bits beyond 0777", ErrInvalidArgument, mode)
	}
	if mode&groupOtherWrite != 0 {
		return nil, fmt.Errorf("%w: mode %#o lets group or others write", ErrInvalidArgument, mode)
	}
	if mode == 0 {
		mode = defaultFileMode
	}
	t, err := r.resolve(req.GetPath(), true)
	if err != nil {
		return nil, err
	}
	dst := t.path()
	if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory", ErrInvalidArgument, req.GetPath())
	}
	if err := atomicWrite(t.dir, dst, req.GetContent(), fs.FileMode(mode)); err != nil {
		return nil, err
	}
	sum, size, err := hashFile(dst)
	if err != nil {
		return nil, err
	}
	if want := sha256.Sum256(req.GetContent()); !bytes.Equal(sum, want[:]) || size != uint64(len(req.GetContent())) {
		return nil, &fileError{op: "verifying", path: dst, err: errors.New("content read back differs from content written")}
	}
	return &agentv1.WriteFileResult{Sha256: sum, Size: size}, nil
}

// atomicWrite writes content to a temporary file in dir with mode, syncs it, renames it to dst
// and syncs dir. The temporary file is removed on failure.
func atomicWrite(dir, dst string, content []byte, mode fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return &fileError{op: "creating temporary file in", path: dir, err: err}
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return &fileError{op: "setting mode of", path: tmp, err: err}
	}
	if _, err := f.Write(content); err != nil {
		return &fileError{op: "writing", path: tmp, err: err}
	}
	if err := f.Sync(); err != nil {
		return &fileError{op: "syncing", path: tmp, err: err}
	}
	if err := f.Close(); err != nil {
		return &fileError{op: "closing", path: tmp, err: err}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return &fileError{op: "renaming to", path: dst, err: err}
	}
	d, err := os.Open(dir)
	if err != nil {
		return &fileError{op: "opening directory", path: dir, err: err}
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &fileError{op: "syncing directory", path: dir, err: err}
	}
	return nil
}

// hashFile returns the SHA-256 and size of the file at p.
func hashFile(p string) ([]byte, uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, &fileError{op: "reading back", path: p, err: err}
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, 0, &fileError{op: "reading back", path: p, err: err}
	}
	return h.Sum(nil), uint64(n), nil
}

// removeFile removes a regular file or a symlink (not its target) below a root and syncs its
// directory; an absent file is no error.
func (r *fileRoots) removeFile(req *agentv1.RemoveFileRequest) (*agentv1.RemoveFileResult, error) {
	t, err := r.resolve(req.GetPath(), false)
	if errors.Is(err, fs.ErrNotExist) {
		return &agentv1.RemoveFileResult{}, nil // its directory is gone, so is the file
	}
	if err != nil {
		return nil, err
	}
	p := t.path()
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &agentv1.RemoveFileResult{}, nil
	}
	if err != nil {
		return nil, &fileError{op: "removing", path: p, err: err}
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidArgument, req.GetPath())
	}
	if err := os.Remove(p); err != nil {
		return nil, &fileError{op: "removing", path: p, err: err}
	}
	if d, err := os.Open(t.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return &agentv1.RemoveFileResult{Existed: true}, nil
}

// readFile reads a regular file of at most maxBytes below a root.
func (r *fileRoots) readFile(req *agentv1.ReadFileRequest, maxBytes int) (*agentv1.ReadFileResult, error) {
	t, err := r.resolve(req.GetPath(), false)
	if err != nil {
		return nil, err
	}
	p := t.path()
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, &fileError{op: "reading", path: p, err: err}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if p, err = resolveLink(t.root, p); err != nil {
			return nil, err
		}
		if fi, err = os.Stat(p); err != nil {
			return nil, &fileError{op: "reading", path: p, err: err}
		}
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidArgument, req.GetPath())
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, &fileError{op: "reading", path: p, err: err}
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, &fileError{op: "reading", path: p, err: err}
	}
	if fi.Size() > int64(maxBytes) {
		return nil, fmt.Errorf("%w: %s has %d bytes, above the %d-byte bound", ErrMessageTooLarge, req.GetPath(), fi.Size(), maxBytes)
	}
	content, err := io.ReadAll(io.LimitReader(f, int64(maxBytes)+1))
	if err != nil {
		return nil, &fileError{op: "reading", path: p, err: err}
	}
	if len(content) > maxBytes {
		return nil, fmt.Errorf("%w: %s grew above the %d-byte bound", ErrMessageTooLarge, req.GetPath(), maxBytes)
	}
	return &agentv1.ReadFileResult{Content: content, Mode: uint32(fi.Mode().Perm())}, nil
}
