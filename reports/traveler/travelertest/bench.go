package travelertest

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchUnits returns the number of units a benchmark of stored units runs over: BENCH_UNITS,
// or def when it is not set.
func BenchUnits(b *testing.B, def int) int {
	env := os.Getenv("BENCH_UNITS")
	if env == "" {
		return def
	}
	n, err := strconv.Atoi(env)
	if err != nil || n <= 0 {
		b.Fatalf("BENCH_UNITS=%q: want a number of units", env)
	}
	return n
}

// CPUTime returns the process's user and system CPU time so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
