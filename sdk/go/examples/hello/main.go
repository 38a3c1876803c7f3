// Command hello is a small, complete Tributary connector: it "syncs" greetings in three
// languages, one page per language, one object per name.
//
// Options (JSON, optional): {"names": ["Ada", "Linus"]}; the default is ["world"].
// Build it with `go build ./examples/hello` and run it from a host, e.g. as the command of a
// Connector, or with the Go host side of this SDK (connector.Client).
package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"tributary.dev/sdk/go/connector"
	"tributary.dev/sdk/go/proto"
)

type options struct {
	Names []string `json:"names"`
}

var greetings = []struct {
	language string
	greeting string
}{
	{"en", "Hello"},
	{"fr", "Bonjour"},
	{"es", "Hola"},
}

type hello struct{}

// Sync sends one page per language and returns {"pages":3,"objects":N}.
func (hello) Sync(rawOptions string, cb connector.Callback) (string, error) {
	var opts options
	if strings.TrimSpace(rawOptions) != "" {
		if err := json.Unmarshal([]byte(rawOptions), &opts); err != nil {
			return "", fmt.Errorf("invalid options: %w", err)
		}
	}
	if len(opts.Names) == 0 {
		opts.Names = []string{"world"}
	}

	pages, objects := 0, 0
	for _, g := range greetings {
		page := &proto.SyncResponse{}
		for _, name := range opts.Names {
			metadata, err := json.Marshal(map[string]string{"language": g.language, "name": name})
			if err != nil {
				return "", fmt.Errorf("encode metadata: %w", err)
			}
			page.Response = append(page.Response, &proto.DataObject{
				RemoteId:     g.language + "/" + name,
				ResourceName: fmt.Sprintf("%s, %s!", g.greeting, name),
				Uri:          "hello://" + g.language + "/" + url.PathEscape(name),
				Metadata:     string(metadata),
			})
		}
		// Always check Upsert: an error means the host did not store the page.
		if err := cb.Upsert(page); err != nil {
			return "", fmt.Errorf("upsert %s greetings: %w", g.language, err)
		}
		pages++
		objects += len(page.Response)
	}
	return fmt.Sprintf(`{"pages":%d,"objects":%d}`, pages, objects), nil
}

func main() {
	connector.Serve(hello{})
}
