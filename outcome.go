package mongolock

import (
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// ambiguous reports whether err leaves it unknown if a write took effect:
// the request may have reached the server and only the reply was lost, or
// the server applied it and failed after: a primary that stepped down once
// the write had replicated (a state-change error, or any error the server
// or the driver labelled RetryableWriteError), or a write applied on the
// primary whose write concern was not met (a writeConcernError, such as a
// wtimeout), which a rollback may yet undo. Such a write is repeated, or
// undone, as if its reply was lost.
func ambiguous(err error) bool {
	if err == nil {
		return false
	}
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) {
		return true
	}
	var we mongo.WriteException
	if errors.As(err, &we) && we.WriteConcernError != nil {
		return true
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError != nil {
		return true
	}
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	if se.HasErrorLabel("RetryableWriteError") {
		return true
	}
	for _, code := range outcomeUnknownCodes {
		if se.HasErrorCode(code) {
			return true
		}
	}
	return false
}

// outcomeUnknownCodes are the server's errors after which a write may have
// been applied: the retryable writes specification's retryable codes
// (a member that stepped down, shut down, or lost its link meanwhile).
var outcomeUnknownCodes = []int{
	6,     // HostUnreachable
	7,     // HostNotFound
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	189,   // PrimarySteppedDown
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11602, // InterruptedDueToReplStateChange
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
}
