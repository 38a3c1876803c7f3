package connector

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"tributary.dev/sdk/go/proto"
)

// GRPCPlugin is the go-plugin plugin of a connector, on both sides: the plugin side sets Impl
// and serves it, the host side dispenses a [*GRPCClient]. It is wire-compatible with c1's
// ConnectorGRPCPlugin. Register it under [PluginName].
type GRPCPlugin struct {
	// Only gRPC is supported; the net/rpc methods return errors.
	plugin.NetRPCUnsupportedPlugin

	// Impl is the connector served by the plugin side. Unused on the host side.
	Impl Connector

	// MaxRecvMsgSize is the receive limit of the callback servers the host side starts for each
	// Sync (the largest page accepted). Zero means DefaultMaxMessageSize. Unused on the plugin side.
	MaxRecvMsgSize int
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the Connector service on the plugin's gRPC server.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("connector: GRPCPlugin.Impl is nil")
	}
	proto.RegisterConnectorServer(s, &connectorServer{impl: p.Impl, broker: broker})
	return nil
}

// GRPCClient returns the host's view of the connector, a [*GRPCClient].
func (p *GRPCPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	maxRecv := p.MaxRecvMsgSize
	if maxRecv <= 0 {
		maxRecv = DefaultMaxMessageSize
	}
	return &GRPCClient{client: proto.NewConnectorClient(c), broker: broker, maxRecvMsgSize: maxRecv}, nil
}

// connectorServer is the plugin side of the Connector service.
type connectorServer struct {
	proto.UnimplementedConnectorServer
	impl   Connector
	broker *plugin.GRPCBroker
}

func (s *connectorServer) Sync(ctx context.Context, req *proto.SyncRequest) (*proto.EndSync, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &callbackDialer{ctx: ctx, cancel: cancel, broker: s.broker, id: req.GetCallbackHandlerServer()}
	defer d.close()

	var (
		metadata string
		err      error
	)
	if cc, ok := s.impl.(ContextConnector); ok {
		metadata, err = cc.SyncContext(ctx, req.GetOptions(), d.dial)
	} else {
		// c1's behaviour: dial the host's callback server before running the connector.
		var cb Callback
		if cb, err = d.dial(); err != nil {
			return nil, err
		}
		metadata, err = s.impl.Sync(req.GetOptions(), cb)
	}
	if err != nil {
		// Returned as is: grpc-go turns it into a status, keeping the code of a wrapped status
		// error (for example the host's RESOURCE_EXHAUSTED for an oversized page).
		return nil, err
	}
	return &proto.EndSync{Metadata: metadata}, nil
}

// brokerDialAttempts is how many times the plugin waits (5 s each, go-plugin's fixed broker
// timeout) for the host's connection info before giving up.
const brokerDialAttempts = 3

// callbackDialer dials the host's callback server of one Sync call at most once.
type callbackDialer struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	broker *plugin.GRPCBroker
	id     uint32

	mu     sync.Mutex
	done   bool
	conn   *grpc.ClientConn
	cb     Callback
	err    error
	closed bool
}

func (d *callbackDialer) dial() (Callback, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("connector: callback dialed after Sync returned")
	}
	if !d.done {
		d.done = true
		d.conn, d.err = dialBroker(d.ctx, d.broker, d.id)
		if d.err == nil {
			d.cb = &callbackClient{ctx: d.ctx, client: proto.NewCallbackHandlerClient(d.conn)}
		}
	}
	return d.cb, d.err
}

// close ends the Sync call's callback connection; a dial still in progress is aborted and
// later callback calls fail.
func (d *callbackDialer) close() {
	d.cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// dialBroker waits for the host's ConnInfo for broker id and connects to it. go-plugin's Dial
// waits 5 s; a ConnInfo that arrives later is still buffered, so a few attempts tolerate slow hosts.
func dialBroker(ctx context.Context, broker *plugin.GRPCBroker, id uint32) (*grpc.ClientConn, error) {
	type result struct {
		conn *grpc.ClientConn
		err  error
	}
	var lastErr error
	for attempt := 0; attempt < brokerDialAttempts; attempt++ {
		ch := make(chan result, 1)
		go func() {
			conn, err := broker.Dial(id)
			ch <- result{conn, err}
		}()
		select {
		case r := <-ch:
			if r.err == nil {
				return r.conn, nil
			}
			lastErr = r.err
		case <-ctx.Done():
			go func() { // release a connection that arrives after we gave up
				if r := <-ch; r.conn != nil {
					_ = r.conn.Close()
				}
			}()
			return nil, fmt.Errorf("dial host callback server (broker id %d): %w", id, ctx.Err())
		}
	}
	return nil, fmt.Errorf("dial host callback server (broker id %d): %w", id, lastErr)
}

// callbackClient is the plugin side of the CallbackHandler service.
type callbackClient struct {
	ctx    context.Context // the Sync call's context
	client proto.CallbackHandlerClient
}

var (
	_ Callback        = (*callbackClient)(nil)
	_ ContextCallback = (*callbackClient)(nil)
)

func (c *callbackClient) Upsert(page *proto.SyncResponse) error {
	return c.UpsertContext(c.ctx, page)
}

func (c *callbackClient) Clean(*proto.Empty) error {
	return c.CleanContext(c.ctx)
}

func (c *callbackClient) UpsertContext(ctx context.Context, page *proto.SyncResponse) error {
	if page == nil {
		page = &proto.SyncResponse{}
	}
	_, err := c.client.Upsert(ctx, page)
	return err
}

func (c *callbackClient) CleanContext(ctx context.Context) error {
	_, err := c.client.Clean(ctx, &proto.Empty{})
	return err
}
