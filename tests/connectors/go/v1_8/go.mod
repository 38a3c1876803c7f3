// This module exists to pin github.com/hashicorp/go-plugin at v1.8.0 (the require below, marked
// indirect because only the SDK imports it). scripts/build-go.sh fails if the binary links another
// version, so a dependency raising it through minimal version selection is caught.
module tributary.dev/tests/connectors/go/v1_8

go 1.24

require tributary.dev/tests/testconnector v0.0.0

require (
	github.com/fatih/color v1.13.0 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/hashicorp/go-hclog v1.6.3 // indirect
	github.com/hashicorp/go-plugin v1.8.0 // indirect
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/mattn/go-colorable v0.1.12 // indirect
	github.com/mattn/go-isatty v0.0.17 // indirect
	github.com/oklog/run v1.1.0 // indirect
	golang.org/x/net v0.38.0 // indirect
	golang.org/x/sys v0.31.0 // indirect
	golang.org/x/text v0.23.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20241202173237-19429a94021a // indirect
	google.golang.org/grpc v1.70.0 // indirect
	google.golang.org/protobuf v1.36.6 // indirect
	tributary.dev/sdk/go v0.0.0 // indirect
)

replace (
	tributary.dev/sdk/go => ../../../../sdk/go
	tributary.dev/tests/testconnector => ../testconnector
)
