package hostcmd

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseFlags([]string{"--cmd", "x", "--start-timeout", "2.5", "--timeout", "500ms", "--repeat", "3", "--automtls"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.startTimeout != 2500*time.Millisecond || cfg.syncTimeout != 500*time.Millisecond || cfg.repeat != 3 || !cfg.autoMTLS {
		t.Errorf("cfg = %+v", cfg)
	}
	for _, args := range [][]string{{}, {"--cmd", "x", "--repeat", "0"}, {"--cmd", "x", "--start-timeout", "-1"}, {"--cmd", "x", "extra"}} {
		if _, err := parseFlags(args, &stderr); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestRunAgainstHelloExample(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hello")
	if out, err := exec.Command("go", "build", "-o", bin, "tributary.dev/sdk/go/examples/hello").CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	code := Run([]string{"--cmd", bin, "--repeat", "2", "--automtls", "--options", `{"names":["a","b"]}`}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || strings.Count(stdout.String(), "\n") != 1 {
		t.Fatalf("stdout %q: %v", stdout.String(), err)
	}
	if res.Pages != 6 || res.Objects != 12 || res.Bytes <= 0 || res.Metadata != `{"pages":3,"objects":6}` || res.MaxRSSKB <= 0 {
		t.Errorf("result = %+v", res)
	}

	stdout.Reset()
	stderr.Reset()
	if code := Run([]string{"--cmd", bin, "--fail-after-pages", "1"}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "page rejected") || stdout.Len() != 0 {
		t.Errorf("fail-after-pages: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
