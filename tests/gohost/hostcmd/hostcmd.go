// Package hostcmd is a stock go-plugin host for connectors, c1-style (sdk/go's host side, i.e.
// go-plugin's Client with a broker-served CallbackHandler). The main modules in ../v1_6 and
// ../v1_8 pin go-plugin versions and call Main. It runs --repeat syncs, one connector process
// each, counts what the connector sends, and prints one JSON line on stdout:
//
//	{"pages":..,"objects":..,"bytes":..,"metadata":"..","seconds":..,"objects_per_second":..,
//	 "max_rss_kb":..,"go_plugin":"v1.x.y","cleans":..}
//
// On error it prints the error on stderr and exits with status 1. Connector output (its stderr
// and, for Go connectors, what they write to os.Stdout/os.Stderr) goes to stderr only.
package hostcmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"tributary.dev/sdk/go/connector"
	pb "tributary.dev/sdk/go/proto"
)

// Result is the JSON line printed on success.
type Result struct {
	Pages            int64   `json:"pages"`
	Objects          int64   `json:"objects"`
	Bytes            int64   `json:"bytes"`
	Metadata         string  `json:"metadata"`
	Seconds          float64 `json:"seconds"`
	ObjectsPerSecond float64 `json:"objects_per_second"`
	MaxRSSKB         int64   `json:"max_rss_kb"`
	GoPlugin         string  `json:"go_plugin"`
	Cleans           int64   `json:"cleans"`
}

// Main runs the host with os.Args and exits.
func Main() {
	os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr))
}

// secondsOrDuration is a flag accepting "5", "2.5" (seconds) or Go durations ("500ms").
type secondsOrDuration struct{ d time.Duration }

func (s *secondsOrDuration) String() string { return s.d.String() }

func (s *secondsOrDuration) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return errors.New("must not be negative")
		}
		s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want seconds or a duration such as 500ms")
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	s.d = d
	return nil
}

type config struct {
	command        string
	dir            string
	options        string
	autoMTLS       bool
	repeat         int
	startTimeout   time.Duration
	syncTimeout    time.Duration
	failAfterPages int64
	maxRecv        int
	goPluginStderr bool
	quiet          bool
}

// Run is Main without the exit, for tests.
func Run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "gohost: %v\n", err)
		return 2
	}
	res, err := run(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gohost: %v\n", err)
		return 1
	}
	line, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintf(stderr, "gohost: encode result: %v\n", err)
		return 1
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		fmt.Fprintf(stderr, "gohost: write result: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	start := secondsOrDuration{time.Minute}
	timeout := secondsOrDuration{}
	fs := flag.NewFlagSet("gohost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.command, "cmd", "", "connector command, run with sh -c (required)")
	fs.StringVar(&cfg.dir, "dir", "", "working directory of the command")
	fs.StringVar(&cfg.options, "options", "", "Sync options string (JSON)")
	fs.BoolVar(&cfg.autoMTLS, "automtls", false, "use go-plugin AutoMTLS")
	fs.IntVar(&cfg.repeat, "repeat", 1, "number of syncs, one connector process each")
	fs.Var(&start, "start-timeout", "handshake timeout (seconds or duration)")
	fs.Var(&timeout, "timeout", "timeout of each Sync call (seconds or duration; 0 = none)")
	fs.Int64Var(&cfg.failAfterPages, "fail-after-pages", -1, "reject every page after this many accepted pages (per sync; -1 = never)")
	fs.IntVar(&cfg.maxRecv, "max-recv-bytes", connector.DefaultMaxMessageSize, "largest page the callback server accepts")
	fs.BoolVar(&cfg.goPluginStderr, "go-plugin-stderr", false, "let go-plugin parse the connector's stderr itself, as stock hosts do (crashes on malformed hclog lines)")
	fs.BoolVar(&cfg.quiet, "quiet", false, "discard connector output instead of copying it to stderr")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.command == "" {
		return cfg, errors.New("--cmd is required")
	}
	if cfg.repeat < 1 {
		return cfg, errors.New("--repeat must be at least 1")
	}
	if cfg.maxRecv < 1 {
		return cfg, errors.New("--max-recv-bytes must be positive")
	}
	cfg.startTimeout = start.d
	cfg.syncTimeout = timeout.d
	return cfg, nil
}

func run(cfg config, stderr io.Writer) (*Result, error) {
	var out io.Writer = stderr
	if cfg.quiet {
		out = io.Discard
	}
	res := &Result{GoPlugin: goPluginVersion()}
	begin := time.Now()
	for i := 0; i < cfg.repeat; i++ {
		cb := &counter{failAfter: cfg.failAfterPages}
		metadata, err := syncOnce(cfg, cb, out)
		res.Pages += cb.pages
		res.Objects += cb.objects
		res.Bytes += cb.bytes
		res.Cleans += cb.cleans
		if err != nil {
			if cfg.repeat > 1 {
				return nil, fmt.Errorf("sync %d of %d: %w", i+1, cfg.repeat, err)
			}
			return nil, err
		}
		res.Metadata = metadata
	}
	res.Seconds = time.Since(begin).Seconds()
	if res.Seconds > 0 {
		res.ObjectsPerSecond = float64(res.Objects) / res.Seconds
	}
	res.MaxRSSKB = maxRSSKB()
	return res, nil
}

func syncOnce(cfg config, cb *counter, out io.Writer) (string, error) {
	ccfg := connector.ClientConfig{
		Command:        cfg.command,
		Dir:            cfg.dir,
		AutoMTLS:       cfg.autoMTLS,
		StartTimeout:   cfg.startTimeout,
		MaxRecvMsgSize: cfg.maxRecv,
		Stderr:         out,
		SyncStdout:     out,
		SyncStderr:     out,
		GoPluginStderr: cfg.goPluginStderr,
	}
	if cfg.goPluginStderr {
		// A stock host: go-plugin itself parses the connector's log lines and re-logs them
		// (c1 logs at Info; to our stderr here, never to stdout).
		ccfg.Stderr = nil
		ccfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "gohost", Output: out, Level: hclog.Info})
	}
	client, err := connector.NewClient(ccfg)
	if err != nil {
		return "", err
	}
	defer client.Kill()

	ctx := context.Background()
	if cfg.syncTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.syncTimeout)
		defer cancel()
	}
	return client.Sync(ctx, cfg.options, cb)
}

// counter is the host callback: it counts and, with --fail-after-pages, rejects pages.
type counter struct {
	failAfter int64

	mu      sync.Mutex
	pages   int64
	objects int64
	bytes   int64
	cleans  int64
}

func (c *counter) Upsert(page *pb.SyncResponse) error {
	size := int64(proto.Size(page))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAfter >= 0 && c.pages >= c.failAfter {
		return fmt.Errorf("gohost: page rejected (--fail-after-pages %d)", c.failAfter)
	}
	c.pages++
	c.objects += int64(len(page.GetResponse()))
	c.bytes += size
	return nil
}

func (c *counter) Clean(*pb.Empty) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cleans++
	return nil
}

// goPluginVersion is the go-plugin version linked into this binary.
func goPluginVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/hashicorp/go-plugin" {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

// maxRSSKB is this process's peak resident set size in KiB (Linux reports ru_maxrss in KiB).
func maxRSSKB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return int64(ru.Maxrss)
}
