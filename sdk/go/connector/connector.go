// Package connector writes and runs Tributary connectors: HashiCorp go-plugin gRPC plugins that
// speak c1's connector protocol (package proto: Connector.Sync, CallbackHandler.Upsert/Clean).
//
// Plugin side (a connector): implement [Connector] and call [Serve] from main. The shapes are
// those of c1's pkg/connector, so a c1 connector ports by changing its imports, and binaries built
// with this package are launched unchanged by c1 and by Tributary.
//
// Host side (a program that runs connectors): [Client] launches a connector command, performs
// the go-plugin handshake and runs [Client.Sync], serving the host's [Callback] to the connector
// over the go-plugin broker for the duration of that call only.
package connector

import (
	"context"

	"github.com/hashicorp/go-plugin"

	"tributary.dev/sdk/go/proto"
)

// PluginName is the name under which the connector plugin is registered and dispensed.
const PluginName = "connector"

// DefaultMaxMessageSize is the receive limit for one gRPC message used by [Serve] (requests the
// host sends to the connector) and by [Client] (pages the connector sends to the host). grpc-go's
// own default is 4 MiB, which a page of large objects easily exceeds.
const DefaultMaxMessageSize = 64 << 20

// Handshake is the default handshake of Tributary and c1 connectors (go-plugin's example cookie,
// application protocol version 1). Hosts and connectors of other go-plugin ecosystems may use
// another one through [ServeOptions.Handshake] and [ClientConfig.Handshake].
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BASIC_PLUGIN",
	MagicCookieValue: "hello",
}

// Connector is implemented by connectors. Sync fetches the upstream objects described by options
// (a connector-defined string, usually JSON), hands them to the host page by page through cb, and
// returns metadata about the run (a connector-defined string, usually JSON).
//
// Every cb.Upsert result must be checked: an error means the host did not store the page, and
// Sync should normally stop and return an error.
type Connector interface {
	Sync(options string, cb Callback) (metadata string, err error)
}

// Callback is the host's side of a sync, called by the connector. On the plugin side it is a
// client of the host's CallbackHandler service; on the host side it is implemented by the
// application (for example to store pages in a database).
type Callback interface {
	// Upsert hands one page of objects to the host. A nil error means the host accepted it.
	Upsert(page *proto.SyncResponse) error
	// Clean asks the host to run its clean-up step for the source being synced.
	Clean(req *proto.Empty) error
}

// ContextCallback is optionally implemented by a host's [Callback] to receive the context of the
// callback RPC, which is cancelled when the connector goes away. The callback handed to a
// connector implements it too, so connectors can put deadlines on single calls.
type ContextCallback interface {
	UpsertContext(ctx context.Context, page *proto.SyncResponse) error
	CleanContext(ctx context.Context) error
}

// Dialer connects to the host's callback server of the current Sync. The first call dials, later
// calls return the same [Callback]. go-plugin's broker drops the host's connection info about
// 5 seconds after it arrived, so call it early (before slow upstream work).
type Dialer func() (Callback, error)

// ContextConnector is optionally implemented by a [Connector] that wants the context of the Sync
// call (cancelled when the host cancels the call or shuts the connector down) and control over
// when, or whether, the host's callback server is dialed. When a connector implements it, Serve
// calls SyncContext instead of Sync.
type ContextConnector interface {
	SyncContext(ctx context.Context, options string, dial Dialer) (metadata string, err error)
}
