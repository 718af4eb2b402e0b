package est

import "context"

type retryNoticeKey struct{}

// WithRetryNotice returns a context that has the client call fn before each retry of a request
// made with it, with the status that caused it (0: a transport error or an answer lost on the
// way, 202 never: polls of a pending request are not retries). After such a retry of an
// enrollment the CA may hold a certificate from an earlier attempt that nobody received.
func WithRetryNotice(ctx context.Context, fn func(op Op, status int)) context.Context {
	return context.WithValue(ctx, retryNoticeKey{}, fn)
}

func retryNotice(ctx context.Context) func(Op, int) {
	fn, _ := ctx.Value(retryNoticeKey{}).(func(Op, int))
	return fn
}
