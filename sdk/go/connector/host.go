package connector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"tributary.dev/sdk/go/proto"
)

// GRPCClient is the host's view of a running connector, dispensed by go-plugin from
// [GRPCPlugin]. It implements [Connector], so code written against c1's ConnectorInterface keeps
// working, and [GRPCClient.SyncContext] adds cancellation. Most hosts use [Client] instead.
type GRPCClient struct {
	client         proto.ConnectorClient
	broker         *plugin.GRPCBroker
	maxRecvMsgSize int
}

var _ Connector = (*GRPCClient)(nil)

// Sync is SyncContext without a deadline.
func (c *GRPCClient) Sync(options string, cb Callback) (string, error) {
	return c.SyncContext(context.Background(), options, cb)
}

// SyncContext runs one Sync on the connector. For the duration of the call it serves cb as the
// CallbackHandler service on a fresh go-plugin broker id, with the raised receive limit. When it
// returns, that server is stopped and no callback is running or will run any more: a late
// callback from the connector is rejected with FAILED_PRECONDITION.
func (c *GRPCClient) SyncContext(ctx context.Context, options string, cb Callback) (string, error) {
	if cb == nil {
		return "", errors.New("connector: Sync called with a nil Callback")
	}
	srv := &callbackServer{impl: cb, maxRecvMsgSize: c.maxRecvMsgSize}
	id := c.broker.NextId()
	// AcceptAndServe creates the listener, sends ConnInfo{id} on the broker stream and serves
	// until the server is stopped (or the broker closes). It runs concurrently with the Sync call:
	// the plugin waits for the ConnInfo when it dials.
	served := make(chan struct{})
	go func() {
		defer close(served)
		c.broker.AcceptAndServe(id, srv.newServer)
	}()

	res, err := c.client.Sync(ctx, &proto.SyncRequest{Options: options, CallbackHandlerServer: id})
	srv.stop()
	// Let AcceptAndServe close (and unlink) its listener before returning, so a host that exits
	// right after Sync leaves no socket behind. It is bounded: if the broker stream is stuck,
	// AcceptAndServe may still be sending the ConnInfo (it ends when the broker closes).
	t := time.NewTimer(time.Second)
	select {
	case <-served:
	case <-t.C:
	}
	t.Stop()
	if err != nil {
		return "", fmt.Errorf("connector sync: %w", err)
	}
	return res.GetMetadata(), nil
}

// callbackServer serves the host's Callback for one Sync call.
type callbackServer struct {
	proto.UnimplementedCallbackHandlerServer
	impl           Callback
	maxRecvMsgSize int

	mu       sync.Mutex
	server   *grpc.Server
	stopped  bool
	inflight sync.WaitGroup
}

// newServer is the AcceptAndServe factory. opts carries the broker's TLS credentials (AutoMTLS).
func (s *callbackServer) newServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.MaxRecvMsgSize(s.maxRecvMsgSize))
	g := grpc.NewServer(opts...)
	proto.RegisterCallbackHandlerServer(g, s)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		// Sync already returned before the listener was ready: Serve returns at once and
		// AcceptAndServe closes (and unlinks) the listener.
		g.Stop()
	} else {
		s.server = g
	}
	return g
}

// stop closes the server and waits for callbacks that are still running.
func (s *callbackServer) stop() {
	s.mu.Lock()
	s.stopped = true
	g := s.server
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
	s.inflight.Wait()
}

func (s *callbackServer) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return status.Error(codes.FailedPrecondition, "callback rejected: the Sync call has already returned")
	}
	s.inflight.Add(1)
	return nil
}

func (s *callbackServer) Upsert(ctx context.Context, page *proto.SyncResponse) (*proto.Empty, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	err := callSafely("Upsert", func() error {
		if cc, ok := s.impl.(ContextCallback); ok {
			return cc.UpsertContext(ctx, page)
		}
		return s.impl.Upsert(page)
	})
	if err != nil {
		return nil, err
	}
	return &proto.Empty{}, nil
}

func (s *callbackServer) Clean(ctx context.Context, req *proto.Empty) (*proto.Empty, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	err := callSafely("Clean", func() error {
		if cc, ok := s.impl.(ContextCallback); ok {
			return cc.CleanContext(ctx)
		}
		return s.impl.Clean(req)
	})
	if err != nil {
		return nil, err
	}
	return &proto.Empty{}, nil
}

// callSafely runs a host callback and turns a panic into an INTERNAL error for the connector
// instead of crashing the host process.
func callSafely(name string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "host %s callback panicked: %v", name, r)
		}
	}()
	return f()
}
