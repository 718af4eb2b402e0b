package store

import (
	"bytes"
	"testing"
)

// TestStoredCacheExactKeys checks that the digest cache answers only for the bucket and key
// it holds, whatever their hash, that the least recently used key of a set gives way, and
// that a key too long to hold is read each time.
func TestStoredCacheExactKeys(t *testing.T) {
	c := &storedCache{sets: make([]cacheSet, 1)}
	sum := func(b byte) storedSum { return storedSum{present: true, sum: [32]byte{b}} }
	// Four keys under one hash fill the one set; reading "a" of bucket 2 makes it the most
	// recently used, so the fifth takes the place of "b".
	c.put(7, 2, []byte("a"), sum(1))
	c.put(7, 2, []byte("b"), sum(2))
	c.put(7, 3, []byte("a"), sum(3))
	c.get(7, 2, []byte("a"))
	c.put(7, 4, []byte("x"), sum(4))
	c.put(7, 5, []byte("y"), sum(5))
	for _, tc := range []struct {
		id     uint64
		bucket int
		key    string
		want   byte // 0: not held
	}{
		{7, 2, "a", 1},
		{7, 2, "b", 0},
		{7, 3, "a", 3},
		{7, 4, "x", 4},
		{7, 5, "y", 5},
		{7, 2, "c", 0},
		{8, 2, "a", 0}, // another hash
		{7, 4, "y", 0},
	} {
		st, ok := c.get(tc.id, tc.bucket, []byte(tc.key))
		if ok != (tc.want != 0) || ok && st.sum[0] != tc.want {
			t.Errorf("get(%d, %d, %q) = %v, %v; want the digest starting %d", tc.id, tc.bucket, tc.key, st.sum[0], ok, tc.want)
		}
	}
	long := bytes.Repeat([]byte("k"), maxCachedKey+1)
	c.put(9, 2, long, sum(9))
	if _, ok := c.get(9, 2, long); ok {
		t.Errorf("a key of %d bytes is cached", len(long))
	}
}
