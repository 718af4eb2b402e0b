// Package ctl is stationctl's command logic: it parses a command line, calls the station API
// (proto/station/v1) over mTLS and prints the answer as aligned tables or, with -o json, as
// protojson (the traveler as its own JSON document). The stationctl main only calls Run and
// turns its error into an exit code.
package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/ca-client/secret"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// Usage is the command summary printed on usage errors.
const Usage = `usage: stationctl [global flags] COMMAND [flags]

global flags:
  -addr HOST:PORT   station API address (default $STATIONCTL_ADDR or 127.0.0.1:7444)
  -cert FILE        client certificate (PEM); -key FILE its private key (PEM)
  -ca FILE          CA certificates (PEM) that verify the station
  -server-name NAME name expected in the station's certificate (default: the host of -addr)
  -o table|json     output format (default table)
  -timeout D        deadline of each call (default 30s; events --follow has none)

commands:
  workorder create --id ID --profile P [--serial S]... [--range PREFIX:FIRST-LAST[:WIDTH]]...
  workorder get ID | workorder close ID | workorder list [--status open|closed] [--limit N]
  unit get SERIAL | unit list [--status running|waiting|done|failed|hold|scrapped] [--work-order ID] [--error-code C] [--limit N]
  unit abort SERIAL --reason TEXT | unit rework SERIAL --reason TEXT
  unit decide SERIAL --decision rework|scrap --reason TEXT   (a unit on hold; roles qa, admin)
  unit release-ek SERIAL --reason TEXT   (admin: unbind the unit's TPM, e.g. after an RMA)
  events [--after TOKEN] [--serial S] [--follow]
  traveler SERIAL
  refusals [--serial S]   (sessions refused before their first checks passed: no unit record)
  possibly-issued [--serial S] [--all]   (enrollments whose answer was lost: open until reconciled)
  reconcile import FILE --ca NAME   (a CA's issuance log, JSON lines or CSV; roles qa, admin)
  report traveler SERIAL [--format pdf|html] [--out FILE|DIR|-]
  report lot WORK_ORDER [--format pdf|html|csv] [--out FILE|DIR|-]
  status
  watch [--interval D] [--count N]   live view of the line (counters, units in flight) until Ctrl-C
  audit verify         (qa, admin) verify the whole audit chain; exits 1 when it does not verify
  audit unit SERIAL    (qa, admin) one unit's audit trail with its place in the signed chain
  export --work-order ID | --serials S1,S2 | --since T --until T  --out DIR|FILE.tar
                       (qa, admin) the QA export: a signed bundle devid-verify checks offline`

// UsageError reports a malformed command line; stationctl exits with status 2 for it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ExitCode returns the process exit status for an error of Run: 0, 2 for usage errors, 1 for
// anything else.
func ExitCode(err error) int {
	var u *UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// options are the global flags.
type options struct {
	addr, cert, key, ca, serverName, output string
	timeout                                 time.Duration
}

// Run executes one command line (without the program name), writing results to stdout. Its
// error is one line: a usage problem, or the gRPC code and message of a failed call.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("stationctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := os.Getenv("STATIONCTL_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7444"
	}
	fs.StringVar(&o.addr, "addr", addr, "")
	fs.StringVar(&o.cert, "cert", "", "")
	fs.StringVar(&o.key, "key", "", "")
	fs.StringVar(&o.ca, "ca", "", "")
	fs.StringVar(&o.serverName, "server-name", "", "")
	fs.StringVar(&o.output, "o", "table", "")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		_, err = fmt.Fprintln(stdout, Usage)
		return err
	} else if err != nil {
		return usagef("%v", err)
	}
	if o.output != "table" && o.output != "json" {
		return usagef("-o %q: want table or json", o.output)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("no command")
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		return usagef("unknown command %q", rest[0])
	}
	cc, err := dial(o)
	if err != nil {
		return err
	}
	defer cc.Close()
	e := &env{ctx: ctx, client: stationv1.NewStationClient(cc), out: stdout, json: o.output == "json", timeout: o.timeout}
	if err := cmd(e, rest[1:]); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	// -h or --help after a command.
	_, err = fmt.Fprintln(stdout, Usage)
	return err
}

// Dial prepares a client connection to the station API at addr, as stationctl makes it: TLS
// 1.3, the server verified against the CA certificates in the file ca, the client certificate
// cert with its key (mode 0600); it connects on the first call.
func Dial(addr, ca, cert, key string) (*grpc.ClientConn, error) {
	return dial(options{addr: addr, ca: ca, cert: cert, key: key})
}

// dial prepares a client connection; it connects on the first call.
func dial(o options) (*grpc.ClientConn, error) {
	host, _, err := net.SplitHostPort(o.addr)
	if err != nil {
		return nil, usagef("-addr %q: %v", o.addr, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: host}
	if o.serverName != "" {
		cfg.ServerName = o.serverName
	}
	if (o.cert == "") != (o.key == "") {
		return nil, usagef("-cert and -key go together")
	}
	if o.cert != "" {
		if err := secret.CheckFile(o.key); err != nil {
			return nil, fmt.Errorf("-key: %w", err)
		}
		c, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		// Send it even when the station names other CAs: its refusal is clearer than a call
		// without a certificate.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	if o.ca != "" {
		pem, err := os.ReadFile(o.ca)
		if err != nil {
			return nil, fmt.Errorf("reading the CA certificates: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading the CA certificates: no PEM certificate in %s", o.ca)
		}
		cfg.RootCAs = pool
	}
	cc, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", o.addr, err)
	}
	return cc, nil
}

// env is what a command needs.
type env struct {
	ctx     context.Context
	client  stationv1.StationClient
	out     io.Writer
	json    bool
	timeout time.Duration
}

// call returns a context bounded by the call timeout.
func (e *env) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.timeout)
}

// rpcErr turns a failed call into a one-line error with its gRPC code.
func rpcErr(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", st.Code(), oneLine(st.Message()))
	}
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

var commands = map[string]func(*env, []string) error{
	"workorder":       func(e *env, args []string) error { return sub(e, "workorder", args, workorderCommands) },
	"unit":            func(e *env, args []string) error { return sub(e, "unit", args, unitCommands) },
	"events":          events,
	"traveler":        travelerCmd,
	"refusals":        refusalsCmd,
	"possibly-issued": possiblyIssuedCmd,
	"reconcile":       reconcileCmd,
	"report":          reportCmd,
	"export":          exportCmd,
	"status":          statusCmd,
	"watch":           watch,
	"audit":           func(e *env, args []string) error { return sub(e, "audit", args, auditCommands) },
}

var workorderCommands = map[string]func(*env, []string) error{
	"create": workorderCreate, "get": workorderGet, "close": workorderClose, "list": workorderList,
}

var unitCommands = map[string]func(*env, []string) error{
	"get": unitGet, "list": unitList, "abort": unitAbort, "rework": unitRework, "decide": unitDecide, "release-ek": unitReleaseEK,
}

func sub(e *env, name string, args []string, cmds map[string]func(*env, []string) error) error {
	if len(args) == 0 {
		return usagef("%s: no subcommand", name)
	}
	cmd, ok := cmds[args[0]]
	switch {
	case args[0] == "-h" || args[0] == "--help":
		return flag.ErrHelp
	case !ok:
		return usagef("%s: unknown subcommand %q", name, args[0])
	}
	return cmd(e, args[1:])
}

// parse parses flags and positional arguments in any order and checks the number of
// positional arguments (any number when positional < 0).
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return nil, err
		} else if err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if positional >= 0 && len(pos) != positional {
		return nil, usagef("%s: want %d argument(s), got %d", fs.Name(), positional, len(pos))
	}
	return pos, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// ParseRange parses PREFIX:FIRST-LAST[:WIDTH] (the prefix may be empty and may hold colons).
func ParseRange(s string) (*stationv1.SerialRange, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 {
		return nil, fmt.Errorf("range %q: want PREFIX:FIRST-LAST[:WIDTH]", s)
	}
	var width uint64
	nums := parts[len(parts)-1]
	prefix := strings.Join(parts[:len(parts)-1], ":")
	if len(parts) >= 3 && !strings.Contains(nums, "-") && strings.Contains(parts[len(parts)-2], "-") {
		var err error
		if width, err = strconv.ParseUint(nums, 10, 32); err != nil {
			return nil, fmt.Errorf("range %q: width: %v", s, err)
		}
		nums = parts[len(parts)-2]
		prefix = strings.Join(parts[:len(parts)-2], ":")
	}
	first, last, ok := strings.Cut(nums, "-")
	if !ok {
		return nil, fmt.Errorf("range %q: want FIRST-LAST", s)
	}
	f, err := strconv.ParseUint(first, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("range %q: first: %v", s, err)
	}
	l, err := strconv.ParseUint(last, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("range %q: last: %v", s, err)
	}
	if f > l {
		return nil, fmt.Errorf("range %q: first is after last", s)
	}
	return &stationv1.SerialRange{Prefix: prefix, First: f, Last: l, Width: uint32(width)}, nil
}
