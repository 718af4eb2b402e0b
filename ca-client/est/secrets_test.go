package est

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/devid-station/devid/ca-client/secret"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSecretsNeverLeak drives every error path with each kind of credential
// and checks that no secret shows in errors, logs or formatted config.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		password    = "pw-Zq81-very-secret"
		headerValue = "hdr-Kx77-very-secret"
	)
	pki := newTestPKI(t)
	clientCA := newRootCA(t, "Test Client CA")
	clientKey := newECKey(t)
	clientLeaf := clientCA.leaf(t, "station", clientKey.Public())
	rawKey, err := clientKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d := new(big.Int).SetBytes(rawKey) // how fmt and encoding/json print ecdsa.PrivateKey.D
	keySecrets := []string{d.String(), d.Text(16), base64.StdEncoding.EncodeToString(rawKey)}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)

	// The CA echoes every request header into its answers, the worst case
	// for a careless error message.
	echo := func(r *http.Request) string {
		var b strings.Builder
		for k, v := range r.Header {
			fmt.Fprintf(&b, "%s=%s\r\n", k, strings.Join(v, ","))
		}
		return b.String()
	}
	mode := map[string]func(w http.ResponseWriter, r *http.Request, body []byte){
		"rejected": func(w http.ResponseWriter, r *http.Request, _ []byte) {
			http.Error(w, "denied: "+echo(r), http.StatusForbidden)
		},
		"unavailable": func(w http.ResponseWriter, r *http.Request, _ []byte) {
			http.Error(w, "down: "+echo(r), http.StatusServiceUnavailable)
		},
		"pending": func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(echo(r)))
		},
		"bad": func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/pkcs7-mime")
			w.Write([]byte("!!" + echo(r)))
		},
		"otherkey": func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			writeCerts(t, w, pki.issuing.leaf(t, "x", newECKey(t).Public()), pki.issuing.cert)
		},
		"hang": func(_ http.ResponseWriter, r *http.Request, _ []byte) {
			<-r.Context().Done()
		},
	}
	var current struct {
		sync.Mutex
		name string
	}
	f := newFakeCA(t, pki, pool, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
		current.Lock()
		name := current.name
		current.Unlock()
		mode[name](w, r, body)
	})

	auths := []struct {
		name    string
		auth    Auth
		secrets []string
	}{
		{"basic", Basic{User: "station", Password: secret.New(password)}, []string{password, base64.StdEncoding.EncodeToString([]byte("station:" + password))}},
		{"header", HeaderSecret{Name: "X-Ca-Token", Value: secret.New(headerValue)}, []string{headerValue}},
	}
	for _, a := range auths {
		t.Run(a.name, func(t *testing.T) {
			logs := &syncBuffer{}
			cfg := f.config()
			cfg.Auth = a.auth
			cfg.ClientCert = &ClientCertificate{Chain: []*x509.Certificate{clientLeaf}, Key: clientKey}
			cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg.RetryMax = 1
			cfg.PendingDeadline = 1500 * time.Millisecond
			c := newClient(t, cfg)
			secrets := append(append([]string(nil), a.secrets...), keySecrets...)

			var errs []error
			run := func(modeName string, want error, fn func(ctx context.Context) error) {
				t.Helper()
				current.Lock()
				current.name = modeName
				current.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if modeName == "hang" {
					cancel()
					ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
				}
				defer cancel()
				err := fn(ctx)
				if !errors.Is(err, want) {
					t.Errorf("%s: err = %v, want %v", modeName, err, want)
				}
				errs = append(errs, err)
			}
			enroll := func(ctx context.Context) error {
				_, err := c.Enroll(ctx, newCSR(t, newECKey(t)))
				return err
			}
			reenroll := func(ctx context.Context) error {
				_, err := c.Reenroll(ctx, newCSR(t, newECKey(t)))
				return err
			}
			cacerts := func(ctx context.Context) error { _, err := c.CACerts(ctx); return err }
			csrattrs := func(ctx context.Context) error { _, err := c.CSRAttrs(ctx); return err }

			run("rejected", ErrRejected, enroll)
			run("rejected", ErrRejected, reenroll)
			run("rejected", ErrRejected, csrattrs)
			run("unavailable", ErrUnavailable, enroll)
			run("unavailable", ErrUnavailable, cacerts)
			run("pending", ErrPendingTimeout, enroll)
			run("bad", ErrBadResponse, enroll)
			run("bad", ErrBadResponse, cacerts)
			run("otherkey", ErrBadResponse, enroll)
			run("hang", ErrUnavailable, enroll)
			errs = append(errs, func() error { _, err := c.Enroll(context.Background(), []byte("junk")); return err }())

			// Transport and TLS failures from a Client with the same
			// credentials.
			closed := cfg
			closed.BaseURL = "https://127.0.0.1:1" // nothing listens there
			cc := newClient(t, closed)
			_, err := cc.Enroll(ctxTimeout(t, 5*time.Second), newCSR(t, newECKey(t)))
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("closed port: err = %v, want ErrUnavailable", err)
			}
			errs = append(errs, err)
			untrusted := cfg
			untrusted.TrustAnchors = []*x509.Certificate{clientCA.cert}
			uc := newClient(t, untrusted)
			_, err = uc.Enroll(ctxTimeout(t, 5*time.Second), newCSR(t, newECKey(t)))
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("untrusted server: err = %v, want ErrUnavailable", err)
			}
			errs = append(errs, err)

			var rej *RejectedError
			if !errors.As(errs[0], &rej) || !strings.Contains(rej.Message, "[redacted]") {
				t.Errorf("the echoed credential was not redacted from the CA message: %v", errs[0])
			}
			var texts []string
			for _, err := range errs {
				if err != nil {
					texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
				}
			}
			texts = append(texts, logs.String(),
				fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
				fmt.Sprint(cfg.Auth), fmt.Sprint(cfg.ClientCert))
			// Every verb, even those vet would flag, as a careless caller might use them.
			for _, verb := range []string{"%d", "%x", "%q", "%10.40s"} {
				texts = append(texts, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, cfg.Auth))
			}
			slogged := &syncBuffer{}
			slog.New(slog.NewJSONHandler(slogged, nil)).Info("config", "auth", cfg.Auth, "cert", cfg.ClientCert, "cfg", cfg)
			slog.New(slog.NewTextHandler(slogged, nil)).Info("config", "auth", cfg.Auth, "cert", cfg.ClientCert, "cfg", cfg)
			jsonCfg, err := json.Marshal(struct {
				Auth Auth
				Cert *ClientCertificate
			}{cfg.Auth, cfg.ClientCert})
			if err != nil {
				t.Fatal(err)
			}
			texts = append(texts, slogged.String(), string(jsonCfg))
			if !strings.Contains(logs.String(), "est retry") {
				t.Error("expected retry records in the captured log; the log check would prove nothing")
			}
			for _, text := range texts {
				for _, s := range secrets {
					if i := strings.Index(text, s); i >= 0 {
						t.Errorf("secret %q leaked in %q", s, text[max(0, i-100):min(len(text), i+len(s)+20)])
					}
				}
			}
		})
	}
}
