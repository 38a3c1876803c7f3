package connector

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"tributary.dev/sdk/go/proto"
)

func TestPumpStderr(t *testing.T) {
	long := strings.Repeat("y", maxLogLine+100)
	input := strings.Join([]string{
		`{"@level":"info","@message":123}`,
		`{"@level":7,"@message":null,"@timestamp":[]}`,
		`{not json`,
		`[1,2,3]`,
		long,
		`[ERROR] plain error line`,
		`{"@level":"warn","@message":"valid hclog line","@timestamp":"2026-01-02T03:04:05.000000Z","k":"v"}`,
		`no trailing newline`,
	}, "\n")
	var raw, logs syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	pumpStderr(strings.NewReader(input), &raw, logger)

	if raw.String() != input {
		t.Errorf("raw copy differs: got %d bytes, want %d", len(raw.String()), len(input))
	}
	out := logs.String()
	for _, want := range []string{
		`[DEBUG] {"@level":"info","@message":123}`,
		`[DEBUG] {not json`,
		`[DEBUG] [1,2,3]`,
		`[ERROR] [ERROR] plain error line`,
		`[WARN]  valid hclog line: k=v timestamp=2026-01-02T03:04:05.000000Z`,
		`[DEBUG] no trailing newline`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q\n%.3000s", want, out)
		}
	}
	if strings.Count(out, "yyyy") < 2 {
		t.Errorf("long line not logged in fragments")
	}
}

func TestParseHclogEntry(t *testing.T) {
	for _, tc := range []struct {
		entry map[string]interface{}
		ok    bool
	}{
		{map[string]interface{}{"@level": "info", "@message": "m"}, true},
		{map[string]interface{}{"@level": "INFO"}, true},
		{map[string]interface{}{"@level": "info", "@message": 1.0}, false},
		{map[string]interface{}{"@level": nil}, false},
		{map[string]interface{}{"@level": "loud", "@message": "m"}, false},
		{map[string]interface{}{"@level": "info", "@timestamp": 3.0}, false},
		{map[string]interface{}{"@level": "info", "@timestamp": "2026-01-02"}, false},
	} {
		if _, _, _, ok := parseHclogEntry(tc.entry); ok != tc.ok {
			t.Errorf("parseHclogEntry(%v) ok = %v, want %v", tc.entry, ok, tc.ok)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer(16)
	_, _ = tb.Write([]byte("first line\nsecond\n"))
	_, _ = tb.Write([]byte("third\n"))
	if got := tb.String(); got != "second\nthird" {
		t.Errorf("tail = %q", got)
	}
	_, _ = tb.Write([]byte(strings.Repeat("z", 40)))
	if got := tb.String(); got != strings.Repeat("z", 16) {
		t.Errorf("tail = %q", got)
	}
}

// After Sync returned, a late callback is rejected and never reaches the host's Callback.
func TestCallbackServerRejectsLateCalls(t *testing.T) {
	rec := &recorder{}
	s := &callbackServer{impl: rec, maxRecvMsgSize: DefaultMaxMessageSize}
	g := s.newServer(nil)
	if _, err := s.Upsert(context.Background(), &proto.SyncResponse{}); err != nil {
		t.Fatalf("Upsert before stop: %v", err)
	}
	s.stop()
	_, err := s.Upsert(context.Background(), &proto.SyncResponse{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("late Upsert error = %v, want FailedPrecondition", err)
	}
	if _, err := s.Clean(context.Background(), &proto.Empty{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("late Clean error = %v, want FailedPrecondition", err)
	}
	if len(rec.pages) != 1 || rec.cleans != 0 {
		t.Fatalf("callback saw %d pages, %d cleans", len(rec.pages), rec.cleans)
	}
	g.Stop()

	// A server created after stop (listener set up late) is stopped at once.
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.newServer(nil).Serve(ln); err == nil {
		t.Fatal("late server serves")
	}
}
