package poolset

import "errors"

// ErrPoolTimeout reports that a waiter's deadline passed before an idle
// connection or a dial permit became available for its key. A Wait callback
// receives it wrapped with the key and the time waited; Acquire returns it
// wrapped together with context.DeadlineExceeded when the context's deadline
// passes while it waits. Nothing was sent anywhere, so the request can be
// retried or failed as the caller sees fit.
var ErrPoolTimeout = errors.New("poolset: timed out waiting for a connection")

// ErrQueueFull reports that a key already has Config.MaxWaitersPerKey
// waiters. Wait and Acquire return it at once, wrapped with the key, instead
// of queueing without bound: failing fast is the back pressure.
var ErrQueueFull = errors.New("poolset: too many waiters for this upstream")

// ErrPoolClosed reports that the pool was closed. Wait and Acquire return it
// after Close, and Close delivers it to every queued waiter.
var ErrPoolClosed = errors.New("poolset: pool closed")

// ErrDraining reports that the key is being drained (see [Pool.Drain]). Wait
// and Acquire return it for such a key, and Drain delivers it to every
// waiter queued for the key.
var ErrDraining = errors.New("poolset: upstream draining")

// putError is why tryPutLocked refused a connection. The caller closes the
// connection after unlocking and counts it under why.
type putError struct {
	msg string
	why reason
}

func (e *putError) Error() string { return e.msg }

// Reasons tryPutLocked refuses a connection, in the order it checks them.
var (
	errPutClosed    = &putError{"poolset: pool closed", whyDrained}
	errPutDraining  = &putError{"poolset: upstream draining", whyDrained}
	errConnDead     = &putError{"poolset: connection failed the liveness check on return", whyDeadOnReturn}
	errMaxRequests  = &putError{"poolset: connection served MaxRequests requests", whyMaxRequests}
	errLifetime     = &putError{"poolset: connection outlived MaxLifetime", whyLifetime}
	errNoIdleWindow = &putError{"poolset: Keep-Alive hint leaves no safe idle time", whyHintExpired}
	errIdleExpired  = &putError{"poolset: connection already idle for IdleTimeout", whyIdleTimeout}
	errTooManyIdle  = &putError{"poolset: MaxIdlePerKey idle connections already pooled", whyOverCap}
	errIdleDisabled = &putError{"poolset: idle pooling disabled (MaxIdle < 0)", whyOverCap}
)

// errExpired maps the reason an idle deadline is set by to the refusal used
// when that deadline has already passed on return.
var errExpired = [...]*putError{
	whyIdleTimeout: errIdleExpired,
	whyHintExpired: errNoIdleWindow,
	whyLifetime:    errLifetime,
}
