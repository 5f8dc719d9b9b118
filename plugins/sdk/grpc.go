package sdk

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ikto-mesh/ikto/plugins/sdk/internal/hookv1"
)

// RemoteError is an error the hook itself returned from a call, as the agent
// sees it: the hook's message, unchanged. Transport failures (the process is
// gone, the deadline passed) are not RemoteErrors.
type RemoteError struct {
	Op      string // configure | apply | stop
	Message string
}

func (e *RemoteError) Error() string { return e.Op + ": " + e.Message }

// grpcServer runs in the plugin process and turns gRPC calls into calls of
// the hook author's Hook.
type grpcServer struct {
	hookv1.UnimplementedHookServer
	impl Hook
}

func (s *grpcServer) Configure(ctx context.Context, req *hookv1.ConfigureRequest) (*hookv1.ConfigureResponse, error) {
	node, err := nodeFromProto(req.GetNode())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode node: %v", err)
	}
	if err := s.impl.Configure(ctx, node); err != nil {
		return nil, hookStatus(ctx, err)
	}
	return &hookv1.ConfigureResponse{}, nil
}

func (s *grpcServer) Apply(ctx context.Context, req *hookv1.ApplyRequest) (*hookv1.ApplyResponse, error) {
	chg, err := changeFromProto(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode change: %v", err)
	}
	if err := s.impl.Apply(ctx, chg); err != nil {
		return nil, hookStatus(ctx, err)
	}
	return &hookv1.ApplyResponse{}, nil
}

func (s *grpcServer) Stop(ctx context.Context, _ *hookv1.StopRequest) (*hookv1.StopResponse, error) {
	if err := s.impl.Stop(ctx); err != nil {
		return nil, hookStatus(ctx, err)
	}
	return &hookv1.StopResponse{}, nil
}

// hookStatus marks an error as the hook's own with codes.Unknown, unless the
// call's deadline passed or the agent cancelled it: then the hook most likely
// failed because of that, and the agent is told so. The code is set
// explicitly because gRPC would otherwise keep the code of any status the
// hook's error wraps (say Unavailable from a service the hook called), and
// the agent would take the hook's failure for a dead process.
func hookStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// grpcClient is the agent's Hook: every call is a gRPC call into the plugin.
type grpcClient struct {
	rpc hookv1.HookClient
}

func (c *grpcClient) Configure(ctx context.Context, node Node) error {
	_, err := c.rpc.Configure(ctx, &hookv1.ConfigureRequest{Node: nodeToProto(node)})
	return callError(ctx, "configure", err)
}

func (c *grpcClient) Apply(ctx context.Context, chg Change) error {
	_, err := c.rpc.Apply(ctx, changeToProto(chg))
	return callError(ctx, "apply", err)
}

func (c *grpcClient) Stop(ctx context.Context) error {
	_, err := c.rpc.Stop(ctx, &hookv1.StopRequest{})
	return callError(ctx, "stop", err)
}

// callError turns a gRPC failure back into what it means: the hook's own
// error (RemoteError), the caller's context ending (wraps ctx.Err(), so
// errors.Is(err, context.DeadlineExceeded) works), or a transport failure.
func callError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unknown:
		return &RemoteError{Op: op, Message: st.Message()}
	case codes.DeadlineExceeded, codes.Canceled:
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		// The deadline travels with the call, and the plugin's end may see
		// it pass a moment before ours does.
		if st.Code() == codes.DeadlineExceeded {
			return fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
