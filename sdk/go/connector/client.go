package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ClientConfig describes how a [Client] launches and talks to a connector.
type ClientConfig struct {
	// Command is the connector's command line, run as `sh -c Command` (as c1 does). Required.
	Command string
	// Dir is the working directory of the command; empty means the host's.
	Dir string

	// Handshake replaces the default [Handshake].
	Handshake *plugin.HandshakeConfig
	// AutoMTLS makes go-plugin generate certificates for both sides and use mutual TLS on the
	// plugin connection and on the broker connections (callbacks).
	AutoMTLS bool
	// StartTimeout bounds the time from process start to the handshake line; zero means
	// go-plugin's default of one minute.
	StartTimeout time.Duration
	// MaxRecvMsgSize is the largest page (encoded SyncResponse) accepted by the callback server;
	// zero means DefaultMaxMessageSize. A larger page fails the connector's Upsert with
	// RESOURCE_EXHAUSTED.
	MaxRecvMsgSize int

	// Stderr receives a raw copy of everything the connector writes to its stderr (hclog JSON
	// lines, usually). Nil discards it.
	Stderr io.Writer
	// Logger receives go-plugin's own host-side logs and, re-logged at their level, the
	// connector's log lines. Nil discards them.
	Logger hclog.Logger
	// SyncStdout and SyncStderr receive what a Go connector writes to os.Stdout / os.Stderr
	// after the handshake (forwarded by go-plugin over GRPCStdio). Nil discards it.
	SyncStdout io.Writer
	SyncStderr io.Writer

	// GoPluginStderr leaves the connector's stderr to go-plugin's own reader, exactly like every
	// stock go-plugin host (c1 included). That reader crashes the host process on an hclog line
	// whose @message, @level or @timestamp is not a string (go-plugin ≤ v1.6 always parses; v1.7+
	// parses unless Logger is Off). By default the Client instead hands the connector's stderr
	// (file descriptor 2) to its own defensive reader: the command runs as
	// `sh -c 'exec 2>&3 3>&-; <Command>'` with fd 3 a pipe owned by the Client.
	GoPluginStderr bool
}

// Client runs one connector process, c1-style: launch, handshake, any number of [Client.Sync]
// calls, [Client.Kill]. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig

	// startMu serializes Start; mu guards the fields below and is never held while go-plugin
	// starts the process, so Kill and Exited stay responsive during a start.
	startMu  sync.Mutex
	mu       sync.Mutex
	started  bool
	starting bool
	startErr error
	killed   bool
	// stopProc SIGKILLs the connector's process group (through the command's context); Kill
	// uses it to end a start in progress, which go-plugin's own Kill would wait for.
	stopProc context.CancelFunc
	pc       *plugin.Client
	cmd      *exec.Cmd
	conn     *GRPCClient
	pump     *stderrPump
	tail     *tailBuffer
}

// stderrTailBytes is how much of the connector's stderr is kept for error messages.
const stderrTailBytes = 2048

// NewClient validates cfg and returns a Client; nothing is started before [Client.Start] or the
// first [Client.Sync].
func NewClient(cfg ClientConfig) (*Client, error) {
	if strings.TrimSpace(cfg.Command) == "" {
		return nil, errors.New("connector: ClientConfig.Command is empty")
	}
	if cfg.MaxRecvMsgSize < 0 {
		return nil, fmt.Errorf("connector: ClientConfig.MaxRecvMsgSize is negative (%d)", cfg.MaxRecvMsgSize)
	}
	if cfg.StartTimeout < 0 {
		return nil, fmt.Errorf("connector: ClientConfig.StartTimeout is negative (%s)", cfg.StartTimeout)
	}
	if cfg.Handshake != nil && (cfg.Handshake.MagicCookieKey == "" || cfg.Handshake.MagicCookieValue == "") {
		return nil, errors.New("connector: ClientConfig.Handshake needs a magic cookie key and value")
	}
	return &Client{cfg: cfg, tail: newTailBuffer(stderrTailBytes)}, nil
}

// Start launches the connector and completes the go-plugin handshake. It is called by the first
// Sync if needed; calling it again returns the first result.
// [Client.Kill] may be called while Start runs: it ends the start, which then returns an error.
func (c *Client) Start() error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	if c.killed {
		c.mu.Unlock()
		return errors.New("connector: client was killed")
	}
	if c.started {
		err := c.startErr
		c.mu.Unlock()
		return err
	}
	c.started, c.starting = true, true
	c.mu.Unlock()

	err := c.start()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.starting = false
	if err != nil && c.killed {
		err = fmt.Errorf("connector: client was killed during start: %w", err)
	}
	c.startErr = err
	return err
}

// start runs without c.mu; it sets the fields Kill and Exited read under c.mu.
func (c *Client) start() error {
	cfg := c.cfg
	handshake := Handshake
	if cfg.Handshake != nil {
		handshake = *cfg.Handshake
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	raw := cfg.Stderr
	if raw == nil {
		raw = io.Discard
	}
	raw = io.MultiWriter(raw, c.tail)

	if cfg.Dir != "" {
		// exec reports a missing directory as a missing "sh"; say what is wrong.
		fi, err := os.Stat(cfg.Dir)
		if err != nil {
			return fmt.Errorf("start connector: working directory: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("start connector: working directory %s is not a directory", cfg.Dir)
		}
	}
	procCtx, stopProc := context.WithCancel(context.Background())
	cmd := exec.CommandContext(procCtx, "sh", "-c", cfg.Command)
	cmd.Cancel = func() error {
		killProcessGroup(cmd.Process)
		return nil
	}
	cmd.Dir = cfg.Dir
	setProcessGroup(cmd)
	goPluginStderr := raw
	var stderrW *os.File
	if !cfg.GoPluginStderr {
		r, w, err := os.Pipe()
		if err != nil {
			stopProc()
			return fmt.Errorf("start connector: stderr pipe: %w", err)
		}
		stderrW = w
		cmd.Args = []string{"sh", "-c", "exec 2>&3 3>&-\n" + cfg.Command}
		cmd.ExtraFiles = []*os.File{w}
		var connectorLogger hclog.Logger
		if cfg.Logger != nil {
			connectorLogger = cfg.Logger.Named("connector")
		}
		pump := startStderrPump(r, raw, connectorLogger)
		c.mu.Lock()
		c.pump = pump
		c.mu.Unlock()
		goPluginStderr = io.Discard
	}

	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{PluginName: &GRPCPlugin{MaxRecvMsgSize: cfg.MaxRecvMsgSize}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         cfg.AutoMTLS,
		StartTimeout:     cfg.StartTimeout,
		Stderr:           goPluginStderr,
		SyncStdout:       writerOrDiscard(cfg.SyncStdout),
		SyncStderr:       writerOrDiscard(cfg.SyncStderr),
		Logger:           logger,
	})
	c.mu.Lock()
	c.cmd, c.pc, c.stopProc = cmd, pc, stopProc
	killed := c.killed
	c.mu.Unlock()
	if killed { // Kill came before the process existed
		closeQuietly(stderrW)
		return c.startFailed(errors.New("client was killed"))
	}
	_, err := pc.Start()  // blocks up to StartTimeout; c.mu is free meanwhile
	closeQuietly(stderrW) // the child has its copy (or never started)
	if err != nil {
		return c.startFailed(err)
	}
	rpc, err := pc.Client()
	if err != nil {
		return c.startFailed(err)
	}
	dispensed, err := rpc.Dispense(PluginName)
	if err != nil {
		return c.startFailed(err)
	}
	conn, ok := dispensed.(*GRPCClient)
	if !ok {
		return c.startFailed(fmt.Errorf("dispensed %T, want *connector.GRPCClient", dispensed))
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	return nil
}

// startFailed kills the process and builds the error, with the end of the connector's stderr.
func (c *Client) startFailed(err error) error {
	// No connection, so no graceful shutdown: go-plugin SIGKILLs only the shell, which may have
	// forked the connector; kill the whole group so nothing keeps the pipes open.
	killProcessGroup(c.cmd.Process)
	c.killPlugin(c.pc)
	c.stopProc()
	if c.pump != nil {
		c.pump.wait(time.Second)
	}
	msg := fmt.Sprintf("start connector %q: %v", c.cfg.Command, err)
	if tail := c.tail.String(); tail != "" {
		msg += "; connector stderr: " + tail
	}
	return &startError{msg: msg, err: err}
}

type startError struct {
	msg string
	err error
}

func (e *startError) Error() string { return e.msg }
func (e *startError) Unwrap() error { return e.err }

// Sync starts the connector if needed and runs one Sync call (see [GRPCClient.SyncContext]).
// ctx bounds the call; cancelling it makes the connector's callbacks fail too. When the call
// fails because the connector process died, the error says how it exited.
func (c *Client) Sync(ctx context.Context, options string, cb Callback) (string, error) {
	if err := c.Start(); err != nil {
		return "", err
	}
	c.mu.Lock()
	conn, killed := c.conn, c.killed
	c.mu.Unlock()
	if killed {
		return "", errors.New("connector: client was killed")
	}
	metadata, err := conn.SyncContext(ctx, options, cb)
	if err != nil {
		// A lost connection usually means the process died: say how, if it did.
		if status.Code(errors.Unwrap(err)) == codes.Unavailable {
			if state := c.exitState(250 * time.Millisecond); state != "" {
				err = fmt.Errorf("%w (connector process %s)", err, state)
			}
		}
		return "", err
	}
	return metadata, nil
}

// exitState waits up to d for the process to be reaped and describes how it exited; empty if
// it is still running.
func (c *Client) exitState(d time.Duration) string {
	deadline := time.Now().Add(d)
	for !c.pc.Exited() {
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Exited() is set by go-plugin after cmd.Wait returned, under its lock.
	if st := c.cmd.ProcessState; st != nil {
		return st.String()
	}
	return "exited"
}

// Exited reports whether the connector process has exited.
func (c *Client) Exited() bool {
	c.mu.Lock()
	pc, starting := c.pc, c.starting
	c.mu.Unlock()
	// During a start go-plugin holds its lock (pc.Exited would block); a process that exits
	// then makes the start fail at once.
	return !starting && pc != nil && pc.Exited()
}

// StderrTail returns the last lines the connector wrote to its stderr (about 2 KiB).
func (c *Client) StderrTail() string {
	return c.tail.String()
}

// Kill stops the connector as go-plugin does: close the broker (stopping callback servers),
// GRPCController.Shutdown, wait up to 2 s for the process to exit, then SIGKILL. If that has not
// finished after 4 s, the connector's whole process group is SIGKILLed. It is safe to call more
// than once and on a client that never started.
func (c *Client) Kill() {
	c.mu.Lock()
	c.killed = true
	pc, pump, starting, stopProc := c.pc, c.pump, c.starting, c.stopProc
	c.mu.Unlock()
	if starting && stopProc != nil {
		// No connection to shut down gracefully yet, and go-plugin's Kill would wait for the
		// whole start: SIGKILL the process group now, which makes the start fail at once.
		stopProc()
	}
	if pc != nil {
		c.killPlugin(pc)
	}
	if stopProc != nil {
		stopProc() // the process is gone by now; releases the command's context
	}
	if pump != nil {
		// Something outside the process group may keep the pipe open; don't wait for long.
		pump.wait(2 * time.Second)
	}
}

// killWatchdog bounds go-plugin's Kill, which has no deadline on the Shutdown call and waits for
// the connector's stdout/stderr to close (a forked connector outlives the SIGKILLed shell).
const killWatchdog = 4 * time.Second

func (c *Client) killPlugin(pc *plugin.Client) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc.Kill()
	}()
	t := time.NewTimer(killWatchdog)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		killProcessGroup(c.cmd.Process)
		// A process outside the group (one that called setsid) may still hold the pipes; then
		// give up waiting rather than block the host forever.
		t.Reset(2 * time.Second)
		select {
		case <-done:
		case <-t.C:
		}
	}
}

func writerOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
