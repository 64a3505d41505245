package mongolock

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// lockKind is a kind of lock: how one attempt takes it on the server (one
// round trip), how what an attempt may have taken unseen is freed, and
// what a hold of it is. There is one type per kind: mutexKind and
// electionKind here, writeKind and readKind in rwdoc.go, permitKind in
// semaphore.go. A new kind of lock is a new type, and the code that takes,
// forgets and describes a hold asks it rather than testing the claim.
type lockKind interface {
	// take makes one attempt for c: it returns the document taken, or ok
	// false when another holds the lock. now is the server time the lease
	// is written from; past judges which leases have surely ended.
	take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error)
	// forget frees what an attempt for c may have taken unseen (its reply
	// was lost, or its caller gave up before it).
	forget(ctx context.Context, s *store, c claim) error
	// mark tells a new hold of this kind what it is: a permit or a read
	// hold has no place in its name's turns (hold.go).
	mark(h *hold, queue string)
	// String is the kind as an Observer's Event.Kind reports it.
	String() string
}

// claim is one attempt to take a lock.
type claim struct {
	name    string
	kind    lockKind
	owner   string
	holder  string // random token of this hold
	session string // "" for the seed API's locks
	turns   claimTurns
	ttl     time.Duration
	// When the call that wants the hold began, for an Observer.
	calledAt time.Time
	retry    bool // the attempt repeats one whose outcome is unknown
	// The electionId of the primary whose clock now was read on: the
	// lease is stamped with it, and leases judged by it (leasePast).
	election any
}

// claimTurns is the taking Locker's place in the lock's turns (turns.go).
type claimTurns struct {
	locker string // the Locker taking it: the heir it may be
	fifo   bool   // that Locker has WithFIFO: the take marks the name (fifoMark)
}

// exclusive is what a kind of lock held by one holder at a time adds to
// the take of its document (store.acquire).
type exclusive struct {
	value  string // the leader's value: an election's; "" for other kinds
	filter bson.D // more conditions on the document
	set    bson.D // more fields set
	inc    bson.D // more fields counted up
}

// mutexKind is a Mutex's lock, and the seed API's (GetLock).
type mutexKind struct{}

func (mutexKind) take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error) {
	return s.acquire(ctx, c, exclusive{}, now, past)
}

func (mutexKind) forget(ctx context.Context, s *store, c claim) error {
	_, err := s.release(ctx, c.name, c.holder, turn{})
	return err
}

func (mutexKind) mark(*hold, string) {}
func (mutexKind) String() string     { return "mutex" }

// electionKind is an Election's leadership: its document names the
// leader's value and counts the changes of leader.
type electionKind struct{ value string }

func (k electionKind) take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error) {
	return s.acquire(ctx, c, exclusive{
		value: k.value,
		inc:   bson.D{{Key: "transitions", Value: int64(1)}},
	}, now, past)
}

func (electionKind) forget(ctx context.Context, s *store, c claim) error {
	return mutexKind{}.forget(ctx, s, c)
}

func (electionKind) mark(*hold, string) {}
func (electionKind) String() string     { return "election" }

// proclaim replaces the leader's value in the election's document name
// while holder leads, and reports whether it still did.
func (s *store) proclaim(ctx context.Context, name, holder, value string) (bool, error) {
	res, err := s.coll.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: name}, {Key: "holder", Value: holder}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "value", Value: value}}}})
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}
