package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"tributary.dev/sdk/go/proto"
)

// The test binary doubles as a connector: with selfConnectorEnv set, TestMain serves
// selfConnector instead of running the tests. The hello example is built once into a temp dir.
const selfConnectorEnv = "TRIBUTARY_SDK_TEST_CONNECTOR"

var (
	helloBin   string
	helloErr   error
	helloOnce  sync.Once
	helloDir   string
	testBinary string
)

func TestMain(m *testing.M) {
	if os.Getenv(selfConnectorEnv) != "" {
		Serve(selfConnector{})
		os.Exit(0)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "os.Executable:", err)
		os.Exit(1)
	}
	testBinary = exe
	code := m.Run()
	if helloDir != "" {
		_ = os.RemoveAll(helloDir)
	}
	os.Exit(code)
}

// buildHello builds examples/hello once per test binary run.
func buildHello(t *testing.T) string {
	t.Helper()
	helloOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			helloErr = fmt.Errorf("go toolchain not in PATH: %w", err)
			return
		}
		helloDir, err = os.MkdirTemp("", "tributary-sdk-test-")
		if err != nil {
			helloErr = err
			return
		}
		helloBin = filepath.Join(helloDir, "hello")
		cmd := exec.Command(goBin, "build", "-o", helloBin, "../examples/hello")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = fmt.Errorf("go build examples/hello: %v\n%s", err, out)
		}
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloBin
}

// selfCommand is the shell command that runs this test binary as selfConnector.
func selfCommand(env ...string) string {
	return strings.Join(append(append([]string{selfConnectorEnv + "=1"}, env...), shellQuote(testBinary)), " ")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selfOptions drive selfConnector.
type selfOptions struct {
	Pages       int    `json:"pages"`
	PageSize    int    `json:"page_size"`
	ObjectBytes int    `json:"object_bytes"`
	Fail        string `json:"fail"`    // Sync returns this error before any page
	BadLog      bool   `json:"bad_log"` // write malformed hclog lines to fd 2 first
	Clean       bool   `json:"clean"`   // call Clean after the pages
}

type selfConnector struct{}

// rawStderr is file descriptor 2 itself (go-plugin replaces os.Stderr by a pipe). Kept in a
// package variable: an unreachable *os.File would close the descriptor when collected.
var rawStderr = os.NewFile(2, "stderr")

func (selfConnector) Sync(options string, cb Callback) (string, error) {
	var o selfOptions
	if err := json.Unmarshal([]byte(options), &o); err != nil {
		return "", fmt.Errorf("invalid options: %w", err)
	}
	if o.Fail != "" {
		return "", errors.New(o.Fail)
	}
	if o.BadLog {
		for _, line := range []string{
			`{"@level":"info","@message":123}`,
			`{"@level":7,"@message":null,"@timestamp":[]}`,
			`{"@level":"info","@message":"bad time","@timestamp":"yesterday"}`,
			`{not json`,
			`[1,2,3]`,
			strings.Repeat("x", 200<<10),
			`{"@level":"warn","@message":"valid hclog line","@timestamp":"2026-01-02T03:04:05.000000Z","k":"v"}`,
		} {
			if _, err := fmt.Fprintln(rawStderr, line); err != nil {
				return "", err
			}
		}
	}
	objects := 0
	for p := 0; p < o.Pages; p++ {
		page := &proto.SyncResponse{}
		for i := 0; i < o.PageSize; i++ {
			page.Response = append(page.Response, &proto.DataObject{
				RemoteId: fmt.Sprintf("obj-%d-%d", p, i),
				Metadata: strings.Repeat("m", o.ObjectBytes),
			})
		}
		if err := cb.Upsert(page); err != nil {
			return "", fmt.Errorf("upsert failed: %w", err)
		}
		objects += o.PageSize
	}
	if o.Clean {
		if err := cb.Clean(&proto.Empty{}); err != nil {
			return "", fmt.Errorf("clean failed: %w", err)
		}
	}
	return fmt.Sprintf(`{"pages":%d,"objects":%d}`, o.Pages, objects), nil
}
