// This module exists to pin github.com/hashicorp/go-plugin at v1.6.3 (the require below, marked
// indirect because only the SDK imports it). scripts/build-go.sh fails if the binary links another
// version, so a dependency raising it through minimal version selection is caught.
module tributary.dev/tests/gohost/v1_6

go 1.24

require tributary.dev/tests/gohost/hostcmd v0.0.0

require (
	github.com/fatih/color v1.7.0 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/hashicorp/go-hclog v0.14.1 // indirect
	github.com/hashicorp/go-plugin v1.6.3 // indirect
	github.com/hashicorp/yamux v0.1.1 // indirect
	github.com/mattn/go-colorable v0.1.4 // indirect
	github.com/mattn/go-isatty v0.0.17 // indirect
	github.com/oklog/run v1.0.0 // indirect
	golang.org/x/net v0.34.0 // indirect
	golang.org/x/sys v0.29.0 // indirect
	golang.org/x/text v0.21.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20241202173237-19429a94021a // indirect
	google.golang.org/grpc v1.70.0 // indirect
	google.golang.org/protobuf v1.36.6 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
	tributary.dev/sdk/go v0.0.0 // indirect
)

replace (
	tributary.dev/sdk/go => ../../../sdk/go
	tributary.dev/tests/gohost/hostcmd => ../hostcmd
)
