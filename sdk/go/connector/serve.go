package connector

import (
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ServeOptions tunes [ServeWithOptions]. The zero value is what [Serve] uses.
type ServeOptions struct {
	// Handshake replaces the default [Handshake] (for hosts of other go-plugin ecosystems).
	Handshake *plugin.HandshakeConfig
	// MaxRecvMsgSize is the plugin server's receive limit (the largest Sync request, i.e. the
	// options string). Zero means DefaultMaxMessageSize.
	MaxRecvMsgSize int
	// Logger is go-plugin's plugin-side logger. Nil means go-plugin's default: hclog JSON lines
	// on the process's original stderr, which go-plugin hosts parse and re-log.
	Logger hclog.Logger
}

// Serve serves impl as a connector plugin and returns when the host shuts the plugin down; main
// should return (exit 0) right after. It never returns if the process was not started by a
// go-plugin host: go-plugin then prints a notice to stderr and exits with status 1.
//
// After the handshake line go-plugin replaces os.Stdout and os.Stderr with pipes forwarded to the
// host over the GRPCStdio service; file descriptor 1 must not be written to directly any more.
func Serve(impl Connector) {
	ServeWithOptions(impl, ServeOptions{})
}

// ServeWithOptions is [Serve] with options.
func ServeWithOptions(impl Connector, opts ServeOptions) {
	if impl == nil {
		fmt.Fprintln(os.Stderr, "connector: Serve called with a nil Connector")
		os.Exit(1)
	}
	handshake := Handshake
	if opts.Handshake != nil {
		handshake = *opts.Handshake
	}
	maxRecv := opts.MaxRecvMsgSize
	if maxRecv <= 0 {
		maxRecv = DefaultMaxMessageSize
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{PluginName: &GRPCPlugin{Impl: impl}},
		GRPCServer: func(serverOpts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(serverOpts, grpc.MaxRecvMsgSize(maxRecv))...)
		},
		Logger: opts.Logger,
	})
}
