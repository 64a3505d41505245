package mongolock

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// eventStream is what the watcher needs of a change stream; the driver's
// *mongo.ChangeStream, wrapped in ownedStream, is one; tests script others.
type eventStream interface {
	Next(ctx context.Context) bool
	RemainingBatchLength() int
	Decode(v any) error
	ResumeToken() bson.Raw
	Err() error
	Close(ctx context.Context) error
	ID() int64 // the server cursor's: a new one after the driver resumed
}

// openStream opens a change stream, resuming after token when it is not nil.
type openStream func(ctx context.Context, token bson.Raw) (eventStream, error)

// closeStream closes cs within a bound: its killCursors must not hold up
// Locker.Close when the server is unreachable.
func closeStream(cs eventStream) {
	ctx, cancel := context.WithTimeout(context.Background(), streamCloseTimeout)
	defer cancel()
	cs.Close(ctx)
}

// streamCloseTimeout bounds the killCursors of a closing change stream.
const streamCloseTimeout = 2 * time.Second

// notSupported reports whether err says the server will not give change
// streams: a standalone server, FerretDB, Atlas's shared tiers, or a user
// without the privilege. Any other error is taken for a passing one (a
// failover), and the stream is opened again.
func notSupported(err error) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, code := range []int{
		40573, // $changeStream only on replica sets
		238,   // NotImplemented (FerretDB)
		115,   // CommandNotSupported
		13,    // Unauthorized: a user without the changeStream privilege
		8000,  // AtlasError: Atlas's shared tiers refuse them
		40324, // unrecognised pipeline stage
	} {
		if se.HasErrorCode(code) {
			return true
		}
	}
	return false
}

// historyLost reports whether err says the stream cannot be resumed.
func historyLost(err error) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	return se.HasErrorCode(286) || se.HasErrorCode(280) || se.HasErrorCode(260)
}

// openHolderChanges opens a change stream of the lock documents' holder
// changes (the watcher's), resumed after token when not nil.
func (s *store) openHolderChanges(ctx context.Context, token bson.Raw) (eventStream, error) {
	opts := mopt.ChangeStream()
	if token != nil {
		opts.SetResumeAfter(token)
	}
	cs, err := s.coll.Watch(ctx, holderPipeline, opts)
	if err != nil {
		return nil, err
	}
	return &ownedStream{ChangeStream: cs, coll: s.coll}, nil
}

// ownedStream is a change stream whose server cursor Close kills even
// when the driver lost it: a Next whose context ends (how the watcher
// stops) makes the driver try its killCursors with that ended context,
// and forget the cursor's id, so its Close sends nothing, and the cursor
// stays open on the server until it times out (10 minutes on MongoDB).
// Not covered: a cursor the driver opened by resuming inside the Next
// that the context ended (its id never reaches this wrapper), and a
// deployment whose killCursors goes to another server than the cursor's
// (several mongos; the driver sends its own to the cursor's server).
type ownedStream struct {
	*mongo.ChangeStream
	coll *mongo.Collection
	id   int64 // the server cursor's, as last seen
	lost bool  // a Next ended with its context: the driver may have dropped id
}

func (s *ownedStream) Next(ctx context.Context) bool {
	if id := s.ChangeStream.ID(); id != 0 {
		s.id = id
	}
	ok := s.ChangeStream.Next(ctx)
	if id := s.ChangeStream.ID(); id != 0 {
		s.id = id
	}
	s.lost = !ok && ctx.Err() != nil && s.ChangeStream.ID() == 0
	return ok
}

func (s *ownedStream) Close(ctx context.Context) error {
	err := s.ChangeStream.Close(ctx)
	if s.lost && s.id != 0 {
		err = s.coll.Database().RunCommand(ctx, bson.D{{Key: "killCursors", Value: s.coll.Name()},
			{Key: "cursors", Value: bson.A{s.id}}}).Err()
		s.id = 0
	}
	return err
}
