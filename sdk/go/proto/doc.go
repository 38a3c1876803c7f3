// Package proto holds the Go code generated from proto/connector.proto, the connector protocol
// exactly as c1 defines it (protobuf package "proto": services Connector and CallbackHandler).
//
// The *.pb.go files are build products and are not committed: run ../generate.sh (or
// scripts/build-go.sh, or `go generate ./...` in sdk/go) before building.
package proto

//go:generate ../generate.sh
