// Package tpmtest starts software TPMs for tests of packages that talk to a TPM: swtpm on
// loopback, plus helpers to skip when swtpm or tpm2-tools are not installed. Its functions
// are safe for concurrent use by parallel tests (each swtpm gets its own ports and state).
package tpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// RequireTools skips the test unless every named program is on PATH.
func RequireTools(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				tb.Fatalf("CI installs %s (make setup), but it is missing: %v", n, err)
			}
			tb.Skipf("skipping: %s is not installed (%v)", n, err)
		}
	}
}

// StartSWTPM starts a fresh swtpm (TPM 2.0, state in a t.TempDir) serving its data channel on
// 127.0.0.1:P and its control channel on P+1, started with --flags not-need-init,startup-clear
// so no power-on or TPM2_Startup is needed. It returns the spec for tpm.Open
// ("swtpm-tcp:127.0.0.1:P"), the TCTI for tpm2-tools ("swtpm:host=127.0.0.1,port=P", used as
// TPM2TOOLS_TCTI) and stop, which kills swtpm (idempotent; also run by t.Cleanup). swtpm
// serves one client connection at a time: close the Go TPM before running tpm2-tools.
// The test is skipped when swtpm is not installed.
func StartSWTPM(tb testing.TB) (spec string, tctiForTools string, stop func()) {
	tb.Helper()
	RequireTools(tb, "swtpm")
	dir := tb.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			lastErr = err
			continue
		}
		stop, err := start(dir, port)
		if err != nil {
			lastErr = err
			continue
		}
		tb.Cleanup(stop)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		return "swtpm-tcp:" + addr, "swtpm:host=127.0.0.1,port=" + strconv.Itoa(port), stop
	}
	tb.Fatalf("starting swtpm: %v", lastErr)
	return "", "", nil
}

// StartSWTPMUnix is StartSWTPM with swtpm's data channel on a unix socket in a t.TempDir; it
// returns the spec for tpm.Open ("swtpm-unix:/path") and stop.
func StartSWTPMUnix(tb testing.TB) (spec string, stop func()) {
	tb.Helper()
	RequireTools(tb, "swtpm")
	dir := tb.TempDir()
	sock := filepath.Join(dir, "swtpm.sock")
	stop, err := run(dir, "unix", sock,
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "swtpm.ctrl"))
	if err != nil {
		tb.Fatalf("starting swtpm: %v", err)
	}
	tb.Cleanup(stop)
	return "swtpm-unix:" + sock, stop
}

// start runs swtpm on TCP port and port+1.
func start(dir string, port int) (stop func(), err error) {
	return run(dir, "tcp", "127.0.0.1:"+strconv.Itoa(port),
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1))
}

// run starts swtpm with the given channel arguments and waits until its data channel at
// network/addr accepts connections (swtpm drops a probe connection as soon as it closes).
func run(dir, network, addr string, channels ...string) (stop func(), err error) {
	logPath := filepath.Join(dir, "swtpm.log")
	args := append([]string{"socket", "--tpm2", "--tpmstate", "dir=" + dir}, channels...)
	args = append(args, "--flags", "not-need-init,startup-clear", "--log", "file="+logPath)
	cmd := exec.Command("swtpm", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	deadline := time.Now().Add(time.Minute) // a guard against a swtpm that never listens, not a speed target
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("swtpm exited: %s %s", bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(log))
		default:
		}
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("swtpm did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePortPair finds P such that P and P+1 are free on 127.0.0.1 (a race with other processes
// remains; StartSWTPM retries).
func freePortPair() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair on 127.0.0.1")
}
