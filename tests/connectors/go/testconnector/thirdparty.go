package testconnector

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	pb "tributary.dev/sdk/go/proto"
)

// Third-party modes: a connector written the way c1's are, straight on hashicorp/go-plugin with
// its own gRPC calls (no SDK), that speaks another revision of the callback protocol and ignores
// every callback error, then reports success. The host must never count such a Sync as a
// success: it would delete every object of the source.
const (
	ModeLegacyCallbackMethod = "legacy_callback_method" // calls /proto.CallbackHandler/Callback
	ModeUnknownService       = "unknown_service"        // calls /proto.Callbacks/Upsert
	ModeMalformedUpsert      = "malformed_upsert"       // Upsert with bytes that do not parse
)

var thirdPartyModes = map[string]string{
	ModeLegacyCallbackMethod: "/proto.CallbackHandler/Callback",
	ModeUnknownService:       "/proto.Callbacks/Upsert",
	ModeMalformedUpsert:      "/proto.CallbackHandler/Upsert",
}

// serveThirdParty serves mode with go-plugin directly, with c1's handshake.
func serveThirdParty(mode, label string) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion: 1, MagicCookieKey: "BASIC_PLUGIN", MagicCookieValue: "hello",
		},
		Plugins:    plugin.PluginSet{"connector": &thirdPartyPlugin{mode: mode, label: label}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

type thirdPartyPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	mode, label string
}

func (p *thirdPartyPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterConnectorServer(s, &thirdPartyServer{broker: broker, mode: p.mode, label: p.label})
	return nil
}

func (p *thirdPartyPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, fmt.Errorf("the test connector is a plugin only")
}

type thirdPartyServer struct {
	pb.UnimplementedConnectorServer
	broker      *plugin.GRPCBroker
	mode, label string
}

// Sync dials the callback server, sends its pages the way its mode says, ignores every error
// (as c1's S3 connector does) and returns success.
func (s *thirdPartyServer) Sync(ctx context.Context, req *pb.SyncRequest) (*pb.EndSync, error) {
	opts, err := ParseOptions(req.GetOptions())
	if err != nil {
		return nil, err
	}
	conn, err := s.broker.Dial(req.GetCallbackHandlerServer())
	if err != nil {
		return nil, fmt.Errorf("dial callback handler: %w", err)
	}
	defer conn.Close()
	method := thirdPartyModes[s.mode]
	refused := 0
	for p := 0; p < opts.Pages; p++ {
		var callErr error
		if s.mode == ModeMalformedUpsert {
			// Field 1 (response) holding a DataObject whose remote_id is not valid UTF-8.
			raw := []byte{0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe}
			callErr = conn.Invoke(ctx, method, raw, &pb.Empty{}, grpc.ForceCodec(rawCodec{}))
		} else {
			callErr = conn.Invoke(ctx, method, Page(p, opts.PageSize, opts.ObjectBytes, opts.Revision), &pb.Empty{})
		}
		if callErr != nil {
			refused++
			fmt.Fprintf(os.Stderr, "test connector: ignoring callback error: %v\n", callErr)
		}
	}
	return &pb.EndSync{Metadata: fmt.Sprintf(`{"pages":%d,"refused":%d,"connector":%q}`, opts.Pages, refused, s.label)}, nil
}

// rawCodec sends []byte as they are and decodes replies as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return encoding.GetCodec("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	return encoding.GetCodec("proto").Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }
