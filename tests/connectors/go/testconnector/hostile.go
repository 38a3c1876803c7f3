package testconnector

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"tributary.dev/sdk/go/connector"
	pb "tributary.dev/sdk/go/proto"
)

// ModeHostile is the connector sandbox's adversary (agent/tests, lib/sandbox/README.md). Its
// Sync tries what a malicious connector would against the agent that runs it and reports every
// attempt as one object: remote_id "probe <name>", metadata {"outcome": "refused: <error>"} or
// {"outcome": "open: <what it got>"}. Then, if the options name one, it attacks its limits
// (hostileAttacks) and fails the Sync with what stopped it.
const ModeHostile = "hostile"

type hostileOptions struct {
	// Files it must not be able to read: Secrets, tokens, other runs' credential files.
	Paths []string `json:"paths"`
	// fork_bomb, fill_disk, stdout (garbage on the go-plugin stdout), linger (a child holding
	// the output pipes after Shutdown), escape (the same in a session of its own), or "" for the
	// probes only.
	Attack string `json:"attack"`
}

type probe struct {
	name string
	try  func() (string, error) // what it got, or why not
}

func readAll(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d bytes", len(data)), nil
}

// credentialVariables names the variables of its own environment that could be credentials.
func credentialVariables() (string, error) {
	var found []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		for _, marker := range []string{"PASSWORD", "TOKEN", "SECRET", "PGP", "DATABASE", "REDIS", "KUBERNETES_SERVICE"} {
			if strings.Contains(upper, marker) {
				found = append(found, name)
			}
		}
	}
	if len(found) == 0 {
		return "", errors.New("no credential in the environment")
	}
	sort.Strings(found)
	return strings.Join(found, ","), nil
}

func hostileProbes(agent int, paths []string) []probe {
	proc := fmt.Sprintf("/proc/%d", agent)
	probes := []probe{
		{"agent-environ", func() (string, error) { return readAll(proc + "/environ") }},
		{"agent-memory", func() (string, error) { return readAll(proc + "/mem") }},
		{"agent-fds", func() (string, error) {
			entries, err := os.ReadDir(proc + "/fd")
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%d descriptors", len(entries)), nil
		}},
		{"agent-fd-3", func() (string, error) { return readAll(proc + "/fd/3") }},
		{"agent-signal", func() (string, error) {
			if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
				return "", err
			}
			return "SIGKILL delivered", nil
		}},
		{"agent-ptrace", func() (string, error) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := syscall.PtraceAttach(agent); err != nil {
				return "", err
			}
			_ = syscall.PtraceDetach(agent)
			return "attached", nil
		}},
		{"other-runs", func() (string, error) {
			// The agent keeps every run's private directory beside this one's.
			entries, err := os.ReadDir(filepath.Dir(os.Getenv("TMPDIR")))
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%d directories", len(entries)), nil
		}},
		{"write-tmp", func() (string, error) {
			return "created /tmp file", os.WriteFile(fmt.Sprintf("/tmp/hostile-%d", os.Getpid()), []byte("x"), 0o600)
		}},
		{"write-install", func() (string, error) {
			return "wrote into its installed version", os.WriteFile("hostile-was-here", []byte("x"), 0o600)
		}},
		{"credentials-in-env", credentialVariables},
	}
	for _, path := range paths {
		path := path
		probes = append(probes, probe{"read " + path, func() (string, error) { return readAll(path) }})
	}
	return probes
}

func outcome(got string, err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return "open: " + got
}

// hostileSync runs the probes, sends their outcomes, then the attack.
func hostileSync(options string, dial connector.Dialer) (string, error) {
	var o hostileOptions
	if strings.TrimSpace(options) != "" {
		if err := json.Unmarshal([]byte(options), &o); err != nil {
			return "", fmt.Errorf("invalid options: %w", err)
		}
	}
	cb, err := dial()
	if err != nil {
		return "", fmt.Errorf("dial callback handler: %w", err)
	}
	page := &pb.SyncResponse{}
	for _, p := range hostileProbes(os.Getppid(), o.Paths) {
		got, err := p.try()
		meta, _ := json.Marshal(map[string]string{"outcome": outcome(got, err)})
		page.Response = append(page.Response, &pb.DataObject{
			RemoteId: "probe " + p.name, ResourceName: p.name, Uri: "probe://" + p.name, Metadata: string(meta),
		})
	}
	if err := cb.Upsert(page); err != nil {
		return "", fmt.Errorf("upsert failed: %w", err)
	}
	switch o.Attack {
	case "":
	case "fork_bomb":
		return "", forkBomb()
	case "fill_disk":
		return "", fillDisk()
	case "stdout":
		stdout, _ := rawFiles()
		garbage := strings.Repeat("garbage after the handshake\n", 1<<15)
		if _, err := stdout.WriteString(garbage); err != nil {
			return "", fmt.Errorf("stdout: %w", err)
		}
	case "linger", "escape":
		// A child that ignores SIGTERM, as does this process, and holds stdout and stderr: in our
		// process group (linger), or in a session of its own, out of reach of the group's kill
		// (escape).
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		stdout, stderr := rawFiles()
		child := exec.Command("/bin/sh", "-c", "trap '' TERM INT; sleep 300")
		child.Stdout, child.Stderr = stdout, stderr
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: o.Attack == "escape"}
		if err := child.Start(); err != nil {
			return "", fmt.Errorf("%s: %w", o.Attack, err)
		}
	default:
		return "", fmt.Errorf("unknown attack %q", o.Attack)
	}
	return fmt.Sprintf(`{"probes":%d}`, len(page.Response)), nil
}

// forkBomb starts sleeping processes until the kernel refuses one (at most 5 000).
func forkBomb() error {
	for n := 0; n < 5000; n++ {
		if err := exec.Command("/bin/sleep", "300").Start(); err != nil {
			return fmt.Errorf("fork bomb stopped after %d processes: %w", n, err)
		}
	}
	return errors.New("fork bomb NOT stopped: 5000 processes started")
}

// fillDisk writes its private directory full, 1 MiB at a time (at most 4 GiB).
func fillDisk() error {
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG instead of dying
	f, err := os.Create(filepath.Join(os.Getenv("TMPDIR"), "fill"))
	if err != nil {
		return fmt.Errorf("fill disk: %w", err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	for mib := 0; mib < 4096; mib++ {
		if _, err := f.Write(block); err != nil {
			return fmt.Errorf("disk fill stopped after %d MiB: %w", mib, err)
		}
	}
	return errors.New("disk fill NOT stopped: 4 GiB written")
}
