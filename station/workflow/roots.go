package workflow

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// maxRootsShown bounds how many announced roots a refusal quotes.
const maxRootsShown = 8

// checkFileRoots refuses a unit whose agent cannot take every file the profile writes: each
// file must lie below one of the roots the agent announced in Hello. Roots are claims, so
// roots that cover every file prove nothing (the install steps read each file back), but
// roots that miss a file mean the install would fail after keys and certificates exist, so
// the unit is refused before. An agent that announced no roots (started without -root or
// -sysroot, or older than the file_roots field) is refused the same way: it takes no files.
func checkFileRoots(p *Profile, roots []string) error {
	var missed []string
	for _, f := range p.Files() {
		if !slices.ContainsFunc(roots, func(r string) bool { return below(r, f) }) {
			missed = append(missed, f)
		}
	}
	switch {
	case len(missed) == 0:
		return nil
	case len(roots) == 0:
		return fail(CodeFileRootsUnsuitable, nil, "profile %s writes %s, and the agent announced no file roots (start it with -root for each folder, or -sysroot on a bench)",
			p.Name, quoteList(missed, len(missed)))
	}
	return fail(CodeFileRootsUnsuitable, nil, "profile %s writes %s outside the agent's file roots %s (start it with -root for each folder, or -sysroot on a bench)",
		p.Name, quoteList(missed, len(missed)), "["+quoteList(roots, maxRootsShown)+"]")
}

// below reports whether the unit path p lies strictly below the directory root, both taken
// as clean absolute slash paths: /etc/devid covers /etc/devid/ldevid.pem, not
// /etc/devidX/ldevid.pem nor /etc/devid itself; "/" covers every other absolute path.
func below(root, p string) bool {
	root, p = path.Clean(root), path.Clean(p)
	if !path.IsAbs(root) || !path.IsAbs(p) || p == root {
		return false
	}
	return root == "/" || strings.HasPrefix(p, root+"/")
}

// quoteList quotes at most n items, comma separated, saying how many more there are.
func quoteList(items []string, n int) string {
	q := make([]string, 0, min(len(items), n)+1)
	for _, s := range items[:min(len(items), n)] {
		q = append(q, fmt.Sprintf("%q", s))
	}
	if len(items) > n {
		q = append(q, fmt.Sprintf("and %d more", len(items)-n))
	}
	return strings.Join(q, ", ")
}
