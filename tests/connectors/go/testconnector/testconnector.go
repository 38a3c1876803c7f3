// Package testconnector is the Go test connector of tests/connectors/README.md (the contract),
// built on sdk/go. The main modules in ../v1_4, ../v1_6 and ../v1_8 pin different go-plugin
// versions and call Main.
package testconnector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"tributary.dev/sdk/go/connector"
	pb "tributary.dev/sdk/go/proto"
)

// ModeEnv is the environment variable selecting the behaviour.
const ModeEnv = "TEST_CONNECTOR_MODE"

// The modes of the contract (invalid_utf8 is C++ only).
const (
	ModeNormal              = "normal"
	ModeExitBeforeHandshake = "exit_before_handshake"
	ModeTextBeforeHandshake = "text_before_handshake"
	ModeNeverHandshake      = "never_handshake"
	ModeCrashMidSync        = "crash_mid_sync"
	ModeHangInSync          = "hang_in_sync"
	ModeSyncError           = "sync_error"
	ModeOversizedPage       = "oversized_page"
	ModeFloodOutput         = "flood_output"
	ModeBadHclog            = "bad_hclog"
	ModeUpsertAfterReturn   = "upsert_after_return"
	ModeNeverDial           = "never_dial"
	ModeIgnoreUpsertErrors  = "ignore_upsert_errors"
	ModeClean               = "clean"
	ModePanicMidSync        = "panic_mid_sync"
	ModeLeakSecrets         = "leak_secrets"
)

var syncModes = map[string]bool{
	"": true, ModeNormal: true, ModeCrashMidSync: true, ModeHangInSync: true, ModeSyncError: true,
	ModeOversizedPage: true, ModeFloodOutput: true, ModeBadHclog: true, ModeUpsertAfterReturn: true,
	ModeNeverDial: true, ModeIgnoreUpsertErrors: true, ModeClean: true, ModePanicMidSync: true,
	ModeHostile: true, ModeLeakSecrets: true,
	// Handled before the handshake, normal afterwards.
	ModeTextBeforeHandshake: true,
}

// goPluginModule is the module whose version labels the connector.
const goPluginModule = "github.com/hashicorp/go-plugin"

// Main runs the test connector built with go-plugin goPluginVersion (e.g. "v1.6.3"); the
// connector label reported in EndSync metadata is "go-<goPluginVersion>".
func Main(goPluginVersion string) {
	mode := os.Getenv(ModeEnv)
	switch mode {
	case ModeExitBeforeHandshake:
		fmt.Fprintln(os.Stderr, "test connector: exiting before handshake")
		os.Exit(3)
	case ModeTextBeforeHandshake:
		fmt.Fprintln(os.Stdout, "hello from the connector")
	case ModeNeverHandshake:
		sleepForever()
	}
	if linked := linkedGoPluginVersion(); linked != "" && linked != goPluginVersion {
		// The label would lie about what is being tested: refuse to run.
		fmt.Fprintf(os.Stderr, "test connector: built with %s %s, but labelled %s\n", goPluginModule, linked, goPluginVersion)
		os.Exit(1)
	}
	if _, ok := thirdPartyModes[mode]; ok {
		serveThirdParty(mode, "go-"+goPluginVersion)
		return
	}
	connector.Serve(&Connector{Label: "go-" + goPluginVersion, Mode: mode})
}

// linkedGoPluginVersion is the go-plugin version in the binary's build info ("" if unknown).
func linkedGoPluginVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, dep := range info.Deps {
		if dep.Path == goPluginModule {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return ""
}

func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

// Connector implements the contract's Sync behaviour for one mode.
type Connector struct {
	Label string // "go-v1.6.3"
	Mode  string // a Mode* constant or ""

	// Exit and Block replace os.Exit and blocking forever in tests; nil means the real thing.
	Exit  func(code int)
	Block func()
}

var (
	_ connector.Connector        = (*Connector)(nil)
	_ connector.ContextConnector = (*Connector)(nil)
)

// Sync implements connector.Connector (used only when not served through the SDK's
// ContextConnector path).
func (c *Connector) Sync(options string, cb connector.Callback) (string, error) {
	return c.SyncContext(context.Background(), options, func() (connector.Callback, error) { return cb, nil })
}

// SyncContext runs one Sync. It dials the host's callback server first, as c1 connectors do,
// except in mode never_dial.
func (c *Connector) SyncContext(ctx context.Context, options string, dial connector.Dialer) (string, error) {
	if !syncModes[c.Mode] {
		return "", fmt.Errorf("test connector: unsupported %s %q", ModeEnv, c.Mode)
	}
	if c.Mode == ModeHostile {
		return hostileSync(options, dial)
	}
	opts, err := ParseOptions(options)
	if err != nil {
		return "", err
	}
	switch c.Mode {
	case ModeSyncError:
		return "", errors.New("upstream said no")
	case ModeNeverDial:
		return c.metadata(0, 0), nil
	}

	cb, err := dial()
	if err != nil {
		return "", fmt.Errorf("dial callback handler: %w", err)
	}

	switch c.Mode {
	case ModeLeakSecrets:
		leakSecrets(options)
	case ModeFloodOutput:
		if err := floodOutput(); err != nil {
			return "", err
		}
	case ModeBadHclog:
		if err := writeBadHclog(); err != nil {
			return "", err
		}
	}

	pages, objects := 0, 0
	send := func(page *pb.SyncResponse) error {
		if err := cb.Upsert(page); err != nil {
			if c.Mode == ModeIgnoreUpsertErrors {
				return nil // c1's S3 connector: the page is silently lost
			}
			return fmt.Errorf("upsert failed: %w", err)
		}
		pages++
		objects += len(page.Response)
		if opts.PageDelayMs > 0 {
			time.Sleep(time.Duration(opts.PageDelayMs) * time.Millisecond)
		}
		if pages == 1 {
			switch c.Mode {
			case ModeCrashMidSync:
				c.exit(2)
			case ModeHangInSync:
				c.block()
			case ModePanicMidSync:
				panicMidSync(pages)
			case ModeLeakSecrets:
				panic("cannot authenticate with token " + optionsToken(options))
			}
		}
		return nil
	}

	// Page numbers: in mode oversized_page the oversized page is page 0 (one object obj-0-0)
	// and the normal pages follow as 1..pages.
	first := 0
	if c.Mode == ModeOversizedPage {
		if err := send(OversizedPage(0, opts.OversizeBytes)); err != nil {
			return "", err
		}
		first = 1
	}
	for p := first; p < first+opts.Pages; p++ {
		if err := send(Page(p, opts.PageSize, opts.ObjectBytes, opts.Revision)); err != nil {
			return "", err
		}
	}

	switch c.Mode {
	case ModeClean:
		if err := cb.Clean(&pb.Empty{}); err != nil {
			return "", fmt.Errorf("clean failed: %w", err)
		}
	case ModeUpsertAfterReturn:
		late := Page(first+opts.Pages, opts.PageSize, opts.ObjectBytes, opts.Revision)
		go func() {
			<-ctx.Done() // the Sync call returned
			time.Sleep(300 * time.Millisecond)
			_ = cb.Upsert(late) // must not be stored; the error is ignored
		}()
	}
	return c.metadata(pages, objects), nil
}

func (c *Connector) metadata(pages, objects int) string {
	return fmt.Sprintf(`{"pages":%d,"objects":%d,"connector":%q}`, pages, objects, c.Label)
}

func (c *Connector) exit(code int) {
	if c.Exit != nil {
		c.Exit(code)
		return
	}
	os.Exit(code)
}

func (c *Connector) block() {
	if c.Block != nil {
		c.Block()
		return
	}
	sleepForever()
}

// File descriptors 1 and 2 themselves: go-plugin replaces the os.Stdout and os.Stderr variables
// with pipes after the handshake but leaves the descriptors alone. Package variables, because an
// *os.File that becomes unreachable closes its descriptor.
var (
	rawOnce   sync.Once
	rawStdout *os.File
	rawStderr *os.File
)

func rawFiles() (stdout, stderr *os.File) {
	rawOnce.Do(func() {
		rawStdout = os.NewFile(1, "fd1")
		rawStderr = os.NewFile(2, "fd2")
	})
	return rawStdout, rawStderr
}

const (
	floodFDBytes    = 16 << 20 // to each of fd 1 and fd 2
	floodStdioBytes = 4 << 20  // to each of os.Stdout and os.Stderr (GRPCStdio)
)

// floodOutput writes 16 MiB to fd 1, 16 MiB of text lines to fd 2, and 4 MiB each through
// os.Stdout and os.Stderr, which go-plugin forwards over GRPCStdio.
func floodOutput() error {
	stdout, stderr := rawFiles()
	for _, t := range []struct {
		name string
		w    interface{ Write([]byte) (int, error) }
		n    int
	}{
		{"fd 1", stdout, floodFDBytes},
		{"fd 2", stderr, floodFDBytes},
		{"os.Stdout", os.Stdout, floodStdioBytes},
		{"os.Stderr", os.Stderr, floodStdioBytes},
	} {
		if err := writeLines(t.w, t.name, t.n); err != nil {
			return fmt.Errorf("flood %s: %w", t.name, err)
		}
	}
	return nil
}

// writeLines writes n bytes of numbered text lines.
func writeLines(w interface{ Write([]byte) (int, error) }, name string, n int) error {
	const lineLen = 100
	var block strings.Builder
	line := 0
	for written := 0; written < n; {
		block.Reset()
		for block.Len() < 64<<10 && written+block.Len() < n {
			s := fmt.Sprintf("test connector flood %s line %08d ", name, line)
			s += strings.Repeat("f", lineLen-1-len(s)) + "\n"
			if rest := n - written - block.Len(); len(s) > rest {
				s = s[:rest-1] + "\n"
			}
			block.WriteString(s)
			line++
		}
		if _, err := w.Write([]byte(block.String())); err != nil {
			return err
		}
		written += block.Len()
	}
	return nil
}

// BadHclogLines are written to fd 2 in mode bad_hclog.
func BadHclogLines() []string {
	return []string{
		`{"@level":"info","@message":123}`,
		`{"@level":7,"@message":null,"@timestamp":[]}`,
		`{not json`,
		`[1,2,3]`,
		strings.Repeat("x", 1<<20),
		`{"@level":"warn","@message":"valid hclog line","@timestamp":"2026-01-02T03:04:05.000000Z","k":"v"}`,
	}
}

func writeBadHclog() error {
	_, stderr := rawFiles()
	for _, line := range BadHclogLines() {
		if _, err := stderr.Write([]byte(line + "\n")); err != nil {
			return fmt.Errorf("write bad hclog: %w", err)
		}
	}
	return nil
}

// PanicMessage is the panic value of mode panic_mid_sync.
const PanicMessage = "test connector: deliberate panic after page 1"

// panicMidSync logs a warning and an info line as hclog JSON on the stderr fd, as go-plugin's
// logger does, and panics (mode panic_mid_sync).
func panicMidSync(pages int) {
	_, stderr := rawFiles()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	fmt.Fprintf(stderr, `{"@level":"warn","@message":"about to panic","@module":"testconnector","@timestamp":%q,"pages":%d}`+"\n", now, pages)
	fmt.Fprintf(stderr, `{"@level":"info","@message":"still here","@module":"testconnector","@timestamp":%q}`+"\n", now)
	panic(PanicMessage)
}

// optionsToken is the options' "token" string ("" if none).
func optionsToken(options string) string {
	var withToken struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal([]byte(options), &withToken)
	return withToken.Token
}

// leakSecrets prints the options' token and $LEAK_VALUE on the stderr fd as an hclog line (mode
// leak_secrets).
func leakSecrets(options string) {
	_, stderr := rawFiles()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	fmt.Fprintf(stderr, `{"@level":"info","@message":"connecting with token %s","@module":"testconnector","@timestamp":%q,"password":%q}`+"\n",
		optionsToken(options), now, os.Getenv("LEAK_VALUE"))
}
