package testconnector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"tributary.dev/sdk/go/connector"
	pb "tributary.dev/sdk/go/proto"
)

type fakeHost struct {
	pages     []*pb.SyncResponse
	cleans    int
	failAfter int // reject pages once this many were accepted; <0 never
}

func (h *fakeHost) Upsert(p *pb.SyncResponse) error {
	if h.failAfter >= 0 && len(h.pages) >= h.failAfter {
		return errors.New("host is full")
	}
	h.pages = append(h.pages, p)
	return nil
}

func (h *fakeHost) Clean(*pb.Empty) error { h.cleans++; return nil }

func run(t *testing.T, mode, options string, host *fakeHost) (string, error) {
	t.Helper()
	c := &Connector{Label: "go-test", Mode: mode,
		Exit:  func(code int) { panic(fmt.Sprintf("exit %d", code)) },
		Block: func() { panic("block") },
	}
	dialed := false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	md, err := c.SyncContext(ctx, options, func() (connector.Callback, error) {
		dialed = true
		return host, nil
	})
	if mode == ModeNeverDial && dialed {
		t.Errorf("mode never_dial dialed")
	}
	return md, err
}

func TestNormalShapes(t *testing.T) {
	host := &fakeHost{failAfter: -1}
	md, err := run(t, "", `{"pages":2,"page_size":3}`, host)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"pages":2,"objects":6,"connector":"go-test"}`; md != want {
		t.Errorf("metadata = %s, want %s", md, want)
	}
	if len(host.pages) != 2 || len(host.pages[1].Response) != 3 {
		t.Fatalf("pages = %v", host.pages)
	}
	o := host.pages[1].Response[2]
	if o.RemoteId != "obj-1-2" || o.ResourceName != "resource 2" || o.Uri != "test://1/2" ||
		o.Metadata != `{"page":1,"index":2}` {
		t.Errorf("object = %v", o)
	}
}

func TestDefaults(t *testing.T) {
	host := &fakeHost{failAfter: -1}
	md, err := run(t, ModeNormal, "", host)
	if err != nil {
		t.Fatal(err)
	}
	if md != `{"pages":3,"objects":30,"connector":"go-test"}` {
		t.Errorf("metadata = %s", md)
	}
}

func TestObjectBytes(t *testing.T) {
	for _, target := range []int{1, 60, 100, 127, 128, 129, 1000, 16383, 16384, 16385, 1 << 20} {
		o := Object(7, 3, target)
		size := proto.Size(o)
		if target >= 70 && (size < target-2 || size > target+2) {
			t.Errorf("object_bytes %d: encoded size %d", target, size)
		}
		var m struct {
			Page, Index int
			Pad         *string
		}
		if err := json.Unmarshal([]byte(o.Metadata), &m); err != nil || m.Page != 7 || m.Index != 3 {
			t.Errorf("object_bytes %d: metadata %q (%v)", target, o.Metadata, err)
		}
		if target < 40 && m.Pad != nil {
			t.Errorf("object_bytes %d: pad present though the object is larger already", target)
		}
		if target >= 100 && (m.Pad == nil || strings.Trim(*m.Pad, "x") != "") {
			t.Errorf("object_bytes %d: pad %v", target, m.Pad)
		}
	}
}

func TestRevisionChangesOneObjectInAHundred(t *testing.T) {
	base, revised := Page(4, 250, 300, 0), Page(4, 250, 300, 7)
	for i, o := range revised.Response {
		var m struct{ Page, Index, Rev int }
		if err := json.Unmarshal([]byte(o.Metadata), &m); err != nil || m.Page != 4 || m.Index != i {
			t.Fatalf("object %d: metadata %q (%v)", i, o.Metadata, err)
		}
		changed := o.Metadata != base.Response[i].Metadata
		if want := i%100 == 0; changed != want || (want && m.Rev != 7) {
			t.Errorf("object %d: changed %v, rev %d: %q", i, changed, m.Rev, o.Metadata)
		}
		if size := proto.Size(o); size < 298 || size > 302 {
			t.Errorf("object %d: encoded size %d", i, size)
		}
	}
}

func TestOversizedPage(t *testing.T) {
	host := &fakeHost{failAfter: -1}
	md, err := run(t, ModeOversizedPage, `{"pages":2,"page_size":1,"oversize_bytes":5000000}`, host)
	if err != nil {
		t.Fatal(err)
	}
	if len(host.pages) != 3 {
		t.Fatalf("%d pages, want 3", len(host.pages))
	}
	if size := proto.Size(host.pages[0]); size < 5000000-2 || size > 5000000+2 {
		t.Errorf("oversized page encodes to %d bytes", size)
	}
	if id := host.pages[0].Response[0].RemoteId; id != "obj-0-0" {
		t.Errorf("oversized object id %s", id)
	}
	if id := host.pages[2].Response[0].RemoteId; id != "obj-2-0" {
		t.Errorf("last normal object id %s", id)
	}
	if md != `{"pages":3,"objects":3,"connector":"go-test"}` {
		t.Errorf("metadata = %s", md)
	}
}

func TestUpsertErrors(t *testing.T) {
	_, err := run(t, "", `{"pages":3,"page_size":1}`, &fakeHost{failAfter: 1})
	if err == nil || !strings.Contains(err.Error(), "upsert failed:") || !strings.Contains(err.Error(), "host is full") {
		t.Fatalf("error = %v", err)
	}
	md, err := run(t, ModeIgnoreUpsertErrors, `{"pages":3,"page_size":2}`, &fakeHost{failAfter: 1})
	if err != nil || md != `{"pages":1,"objects":2,"connector":"go-test"}` {
		t.Fatalf("ignore_upsert_errors: %s, %v", md, err)
	}
}

func TestModes(t *testing.T) {
	if _, err := run(t, ModeSyncError, "", &fakeHost{failAfter: -1}); err == nil || err.Error() != "upstream said no" {
		t.Errorf("sync_error: %v", err)
	}
	if md, err := run(t, ModeNeverDial, `{"pages":5}`, &fakeHost{failAfter: -1}); err != nil ||
		md != `{"pages":0,"objects":0,"connector":"go-test"}` {
		t.Errorf("never_dial: %s, %v", md, err)
	}
	host := &fakeHost{failAfter: -1}
	if _, err := run(t, ModeClean, `{"pages":1}`, host); err != nil || host.cleans != 1 {
		t.Errorf("clean: %v, cleans=%d", err, host.cleans)
	}
	if _, err := run(t, "bogus", "", &fakeHost{failAfter: -1}); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := run(t, "invalid_utf8", "", &fakeHost{failAfter: -1}); err == nil {
		t.Error("invalid_utf8 accepted by the Go connector")
	}
	for mode, want := range map[string]string{ModeCrashMidSync: "exit 2", ModeHangInSync: "block"} {
		func() {
			host := &fakeHost{failAfter: -1}
			defer func() {
				if r := recover(); r != want || len(host.pages) != 1 {
					t.Errorf("%s: recovered %v after %d pages", mode, r, len(host.pages))
				}
			}()
			_, _ = run(t, mode, `{"pages":3}`, host)
		}()
	}
}

func TestBadOptions(t *testing.T) {
	for _, s := range []string{`{`, `[]`, `{"pages":-1}`, `{"pages":1.5}`, `{"object_bytes":1e12}`, `{} {}`} {
		if _, err := ParseOptions(s); err == nil || !strings.Contains(err.Error(), "invalid options") {
			t.Errorf("ParseOptions(%s) = %v", s, err)
		}
	}
}

func TestWriteLines(t *testing.T) {
	var b strings.Builder
	if err := writeLines(&b, "x", 1000); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 1000 || !strings.HasSuffix(b.String(), "\n") {
		t.Errorf("wrote %d bytes", b.Len())
	}
}
