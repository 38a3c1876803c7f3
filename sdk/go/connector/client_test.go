package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"tributary.dev/sdk/go/proto"
)

// recorder is a host Callback that keeps what it receives.
type recorder struct {
	mu        sync.Mutex
	pages     []*proto.SyncResponse
	cleans    int
	upsertErr error
	panicMsg  string
}

func (r *recorder) Upsert(page *proto.SyncResponse) error {
	if r.panicMsg != "" {
		panic(r.panicMsg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.upsertErr != nil {
		return r.upsertErr
	}
	r.pages = append(r.pages, page)
	return nil
}

func (r *recorder) Clean(*proto.Empty) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleans++
	return nil
}

func (r *recorder) objects() []*proto.DataObject {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []*proto.DataObject
	for _, p := range r.pages {
		all = append(all, p.Response...)
	}
	return all
}

func newTestClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Kill)
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHelloExample(t *testing.T) {
	hello := buildHello(t)
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("automtls=%v", mtls), func(t *testing.T) {
			c := newTestClient(t, ClientConfig{Command: shellQuote(hello), AutoMTLS: mtls})
			ctx := testContext(t)

			// Two syncs on one process: each gets a fresh broker id and callback server.
			for run := 0; run < 2; run++ {
				rec := &recorder{}
				metadata, err := c.Sync(ctx, `{"names":["Ada","Linus"]}`, rec)
				if err != nil {
					t.Fatalf("run %d: Sync: %v", run, err)
				}
				if want := `{"pages":3,"objects":6}`; metadata != want {
					t.Errorf("run %d: metadata = %q, want %q", run, metadata, want)
				}
				if len(rec.pages) != 3 {
					t.Fatalf("run %d: got %d pages, want 3", run, len(rec.pages))
				}
				first := rec.pages[0].Response[0]
				if first.RemoteId != "en/Ada" || first.ResourceName != "Hello, Ada!" ||
					first.Uri != "hello://en/Ada" || first.Metadata != `{"language":"en","name":"Ada"}` {
					t.Errorf("run %d: first object = %v", run, first)
				}
				if last := rec.pages[2].Response[1]; last.ResourceName != "Hola, Linus!" {
					t.Errorf("run %d: last object = %v", run, last)
				}
			}
		})
	}
}

func TestHelloInvalidOptionsIsAnError(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: shellQuote(buildHello(t))})
	_, err := c.Sync(testContext(t), `{"names":`, &recorder{})
	if err == nil || !strings.Contains(err.Error(), "invalid options") {
		t.Fatalf("Sync error = %v, want invalid options", err)
	}
}

// A failing Sync must return the connector's error (c1's host dereferenced a nil response).
func TestSyncErrorIsReturned(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("automtls=%v", mtls), func(t *testing.T) {
			c := newTestClient(t, ClientConfig{Command: selfCommand(), AutoMTLS: mtls})
			metadata, err := c.Sync(testContext(t), `{"fail":"upstream said no"}`, &recorder{})
			if err == nil || !strings.Contains(err.Error(), "upstream said no") {
				t.Fatalf("Sync error = %v, want upstream said no", err)
			}
			if metadata != "" {
				t.Errorf("metadata = %q on error", metadata)
			}
			// The process is still usable.
			if _, err := c.Sync(testContext(t), `{"pages":1,"page_size":1}`, &recorder{}); err != nil {
				t.Fatalf("Sync after error: %v", err)
			}
		})
	}
}

func TestLargePages(t *testing.T) {
	// 8 objects of 1 MiB: an 8 MiB page, over grpc-go's default 4 MiB receive limit.
	opts := `{"pages":2,"page_size":8,"object_bytes":1048576}`
	t.Run("default limit accepts", func(t *testing.T) {
		c := newTestClient(t, ClientConfig{Command: selfCommand(), AutoMTLS: true})
		rec := &recorder{}
		if _, err := c.Sync(testContext(t), opts, rec); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if n := len(rec.objects()); n != 16 {
			t.Fatalf("got %d objects, want 16", n)
		}
	})
	t.Run("smaller limit rejects", func(t *testing.T) {
		c := newTestClient(t, ClientConfig{Command: selfCommand(), MaxRecvMsgSize: 4 << 20})
		rec := &recorder{}
		_, err := c.Sync(testContext(t), opts, rec)
		if err == nil || !strings.Contains(err.Error(), "ResourceExhausted") ||
			!strings.Contains(err.Error(), "upsert failed") {
			t.Fatalf("Sync error = %v, want ResourceExhausted from the upsert", err)
		}
		if status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
			t.Errorf("status code = %v, want ResourceExhausted", status.Code(errors.Unwrap(err)))
		}
		if len(rec.pages) != 0 {
			t.Errorf("%d pages accepted", len(rec.pages))
		}
	})
}

func TestHostCallbackErrorsReachTheConnector(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: selfCommand()})
	_, err := c.Sync(testContext(t), `{"pages":2,"page_size":1}`, &recorder{upsertErr: errors.New("disk full")})
	if err == nil || !strings.Contains(err.Error(), "upsert failed") || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Sync error = %v, want the host's disk full", err)
	}

	_, err = c.Sync(testContext(t), `{"pages":1,"page_size":1}`, &recorder{panicMsg: "boom"})
	if err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("Sync error = %v, want the contained panic", err)
	}
}

func TestClean(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: selfCommand()})
	rec := &recorder{}
	if _, err := c.Sync(testContext(t), `{"pages":1,"page_size":2,"clean":true}`, rec); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if rec.cleans != 1 {
		t.Fatalf("cleans = %d, want 1", rec.cleans)
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// go-plugin's own stderr parser panics on {"@message":123}; the Client's must not.
func TestMalformedConnectorLogsDoNotCrashTheHost(t *testing.T) {
	var logs, raw syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	c := newTestClient(t, ClientConfig{Command: selfCommand(), Logger: logger, Stderr: &raw})
	if _, err := c.Sync(testContext(t), `{"pages":1,"page_size":1,"bad_log":true}`, &recorder{}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	c.Kill() // drains stderr
	if !strings.Contains(logs.String(), "[WARN]  connector: valid hclog line: k=v") {
		t.Errorf("valid line not re-logged at warn; logs:\n%s", tailOf(logs.String(), 1500))
	}
	if !strings.Contains(raw.String(), `{"@level":"info","@message":123}`) {
		t.Errorf("raw stderr copy lacks the malformed line")
	}
}

func TestStartFailures(t *testing.T) {
	t.Run("exit before handshake", func(t *testing.T) {
		c := newTestClient(t, ClientConfig{Command: "echo 'connector: missing credentials' >&2; exit 3"})
		err := c.Start()
		if err == nil || !strings.Contains(err.Error(), "missing credentials") {
			t.Fatalf("Start error = %v, want the connector's stderr", err)
		}
		if _, err2 := c.Sync(testContext(t), "", &recorder{}); err2 == nil {
			t.Fatal("Sync after a failed start succeeded")
		}
	})
	t.Run("cookie mismatch", func(t *testing.T) {
		hs := plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "OTHER_APP", MagicCookieValue: "x"}
		c := newTestClient(t, ClientConfig{Command: shellQuote(buildHello(t)), Handshake: &hs})
		err := c.Start()
		if err == nil || !strings.Contains(err.Error(), "This binary is a plugin") {
			t.Fatalf("Start error = %v, want go-plugin's cookie notice", err)
		}
	})
	t.Run("start timeout kills a forked connector", func(t *testing.T) {
		// `sleep` is forked by sh (not exec'd): only the process-group kill reaches it.
		c := newTestClient(t, ClientConfig{Command: "sleep 60; true", StartTimeout: 300 * time.Millisecond})
		begin := time.Now()
		err := c.Start()
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("Start error = %v, want a timeout", err)
		}
		if d := time.Since(begin); d > 3*time.Second {
			t.Errorf("failed start took %s", d)
		}
	})
}

func TestNewClientValidates(t *testing.T) {
	for name, cfg := range map[string]ClientConfig{
		"empty command":    {Command: "  "},
		"negative limit":   {Command: "x", MaxRecvMsgSize: -1},
		"negative timeout": {Command: "x", StartTimeout: -time.Second},
		"empty cookie":     {Command: "x", Handshake: &plugin.HandshakeConfig{ProtocolVersion: 1}},
	} {
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("%s: NewClient accepted %+v", name, cfg)
		}
	}
}

func TestKillIsIdempotent(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: shellQuote(buildHello(t))})
	c.Kill() // never started
	c = newTestClient(t, ClientConfig{Command: shellQuote(buildHello(t))})
	if err := c.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	begin := time.Now()
	c.Kill()
	c.Kill()
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Kill took %s; a Go connector exits on Shutdown", d)
	}
	if !c.Exited() {
		t.Error("process still running after Kill")
	}
	if _, err := c.Sync(testContext(t), "", &recorder{}); err == nil {
		t.Error("Sync after Kill succeeded")
	}
}

func TestSyncReportsConnectorExit(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: selfCommand()})
	if err := c.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Kill the connector behind go-plugin's back, mid-life.
	killProcessGroup(c.cmd.Process)
	_, err := c.Sync(testContext(t), `{"pages":1,"page_size":1}`, &recorder{})
	if err == nil {
		t.Fatal("Sync on a dead connector succeeded")
	}
	if !strings.Contains(err.Error(), "connector process") {
		t.Logf("error without exit state (timing): %v", err)
	}
}

func TestMetadataIsJSON(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: selfCommand()})
	metadata, err := c.Sync(testContext(t), `{"pages":3,"page_size":4}`, &recorder{})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	var m struct{ Pages, Objects int }
	if err := json.Unmarshal([]byte(metadata), &m); err != nil || m.Pages != 3 || m.Objects != 12 {
		t.Fatalf("metadata = %q (%v)", metadata, err)
	}
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestMissingWorkingDirectory(t *testing.T) {
	c := newTestClient(t, ClientConfig{Command: "true", Dir: "/nonexistent/tributary"})
	if err := c.Start(); err == nil || !strings.Contains(err.Error(), "working directory") {
		t.Fatalf("Start error = %v", err)
	}
}

func TestKillDuringStart(t *testing.T) {
	// A connector that never completes the handshake: Start would wait the whole StartTimeout.
	c := newTestClient(t, ClientConfig{Command: "sleep 60; true", StartTimeout: 30 * time.Second})
	startErr := make(chan error, 1)
	go func() { startErr <- c.Start() }()
	time.Sleep(300 * time.Millisecond) // let the start reach go-plugin's handshake wait

	begin := time.Now()
	exited := make(chan bool, 1)
	go func() { exited <- c.Exited() }()
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		t.Fatal("Exited blocked during Start")
	}
	killed := make(chan struct{})
	go func() {
		c.Kill()
		close(killed)
	}()
	select {
	case <-killed:
	case <-time.After(5 * time.Second):
		t.Fatal("Kill blocked during Start")
	}
	select {
	case err := <-startErr:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("Start error = %v, want one saying the client was killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after Kill")
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Kill during Start took %s", d)
	}
	if err := c.Start(); err == nil {
		t.Error("Start after Kill succeeded")
	}
}
