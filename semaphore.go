package mongolock

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MaxLimit is the largest limit a Semaphore accepts.
const MaxLimit = 1000

// slotSep separates a semaphore's name from a slot's number in the slot's
// document _id; names may not contain it.
const slotSep = "\x1f"

// slotID returns the _id of slot i of the semaphore name.
func slotID(name string, i int) string { return name + slotSep + strconv.Itoa(i) }

// semaphoreOf returns the semaphore whose slot id is, if it is one (an
// RWMutex's document ends with the separator and "rw").
func semaphoreOf(id string) (string, bool) {
	sem, n, ok := strings.Cut(id, slotSep)
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return "", false
	}
	return sem, true
}

// Semaphore is a counting semaphore on one name: at most its limit of
// permits are held at once, across processes. Each permit is a hold of the
// session, renewed by its keepalive in the same one round trip as its
// other holds, with its own Done, Err and fencing Token. A Semaphore is
// safe for concurrent use; one value may hold several permits at once.
//
// The permits are limit ordinary lock documents (slots), made once, with
// the limit written in each: every party must give the same limit, and one
// that gives another gets ErrLimitMismatch rather than a larger or smaller
// semaphore. Acquiring a permit when one is free is one round trip (one
// findOneAndUpdate over the slots, which MongoDB applies to one free slot
// atomically); releasing it is one more. The first acquire of a Semaphore
// value on a name not used before makes the slots: up to three round trips
// more, once.
type Semaphore struct {
	s     *Session
	name  string
	limit int
	slots []string

	mu    sync.Mutex
	ready bool // the slots exist with this limit
}

// NewSemaphore returns a Semaphore on name with limit permits, owned by this
// session. The name and the limit (1 to MaxLimit) are checked by Acquire and
// TryAcquire.
func (s *Session) NewSemaphore(name string, limit int) *Semaphore {
	sem := &Semaphore{s: s, name: name, limit: limit}
	if limit > 0 && limit <= MaxLimit {
		for i := range limit {
			sem.slots = append(sem.slots, slotID(name, i))
		}
	}
	return sem
}

// Name returns the semaphore's name.
func (sem *Semaphore) Name() string { return sem.name }

// Limit returns the number of permits.
func (sem *Semaphore) Limit() int { return sem.limit }

// Acquire waits until it holds a permit, ctx ends, or the session ends. It
// returns the permit; ctx.Err() when ctx ended first; ErrSessionClosed when
// the session ended; ErrInvalidName or ErrInvalidOption (a bad limit) at
// once; ErrLimitMismatch when the slots were made with another limit.
// Waiters are woken by the release of any permit (the change stream, or a
// release in this process), and otherwise poll.
func (sem *Semaphore) Acquire(ctx context.Context) (*Permit, error) {
	if err := sem.check(ctx); err != nil {
		return nil, err
	}
	var p *Permit
	try := func(ctx context.Context) (bool, error) {
		var err error
		p, err = sem.try(ctx)
		return p != nil, err
	}
	l := sem.s.l
	a := attempt{try: try, peek: sem.peek, noTurns: true}
	if err := l.waits.wait(ctx, sem.name, a, sem.s.done, sem.s.ended); err != nil {
		return nil, err
	}
	return p, nil
}

// TryAcquire makes one attempt to take a permit. It returns the permit;
// ErrLocked when all are held; or, with nothing held, the errors Acquire
// returns.
func (sem *Semaphore) TryAcquire(ctx context.Context) (*Permit, error) {
	if err := sem.check(ctx); err != nil {
		return nil, err
	}
	p, err := sem.try(ctx)
	switch {
	case err != nil:
		return nil, err
	case p == nil:
		return nil, fmt.Errorf("%w: all %d permits of %q are held", ErrLocked, sem.limit, sem.name)
	}
	return p, nil
}

func (sem *Semaphore) check(ctx context.Context) error {
	if err := validName(sem.name); err != nil {
		return err
	}
	if sem.limit < 1 || sem.limit > MaxLimit {
		return fmt.Errorf("%w: semaphore limit %d is not between 1 and %d", ErrInvalidOption, sem.limit, MaxLimit)
	}
	return sem.s.check(ctx, sem.name)
}

// try makes one attempt; if no slot matched and the slots were not known to
// exist with this limit, it makes them (or finds them made with another
// limit: ErrLimitMismatch) and tries again.
func (sem *Semaphore) try(ctx context.Context) (*Permit, error) {
	c := claim{name: sem.name, slots: sem.slots, limit: sem.limit}
	h, ok, err := sem.s.acquireClaim(ctx, c, holdOptions{})
	if err != nil || ok {
		return permit(h), err
	}
	sem.mu.Lock()
	ready := sem.ready
	sem.mu.Unlock()
	if ready {
		return nil, nil
	}
	if err := sem.s.l.store.makeSlots(ctx, sem.name, sem.slots, sem.limit); err != nil {
		return nil, err
	}
	sem.mu.Lock()
	sem.ready = true
	sem.mu.Unlock()
	h, _, err = sem.s.acquireClaim(ctx, c, holdOptions{})
	return permit(h), err
}

// peek returns the end of the first lease among the held slots, zero when
// a slot is free or unknown.
func (sem *Semaphore) peek(ctx context.Context) (time.Time, bool) {
	docs, err := sem.s.l.store.readSlots(ctx, sem.slots)
	if err != nil || len(docs) < len(sem.slots) {
		return time.Time{}, false
	}
	var first time.Time
	for i := range docs {
		if !sem.s.l.held(&docs[i]) {
			return time.Time{}, false
		}
		if first.IsZero() || docs[i].ExpiresAt.Before(first) {
			first = docs[i].ExpiresAt
		}
	}
	return first, false
}

// Permit is one permit of a Semaphore, held until Release, the session's
// end, or its loss.
type Permit struct{ h *hold }

func permit(h *hold) *Permit {
	if h == nil {
		return nil
	}
	return &Permit{h: h}
}

// Release gives the permit back in one round trip, bounded by an internal
// timeout, so it suits defer. The permit ends in this process (Done closes)
// before the release is sent. It returns nil once the server freed it;
// ErrNotHeld when already released; ErrLockLost when it was lost before, or
// the server no longer had it; ErrSessionClosed when the session ended it;
// and an error saying the release was not confirmed when the server did
// not answer in time (the permit then expires with its lease).
func (p *Permit) Release() error { return p.h.release() }

// Done returns a channel closed when the permit ends: Release, the
// session's end, or loss.
func (p *Permit) Done() <-chan struct{} { return p.h.done }

// Err returns nil while the permit is held and after Release; ErrLockLost
// after a loss; ErrSessionClosed when the session ended it.
func (p *Permit) Err() error {
	p.h.s.mu.Lock()
	defer p.h.s.mu.Unlock()
	return p.h.err
}

// Token returns the permit's fencing token: it grows with every holding of
// the permit's slot, whoever holds it. A resource guarded by a semaphore
// refuses, per Slot, tokens older than the last it saw.
func (p *Permit) Token() int64 { return p.h.fence }

// Slot returns which of the semaphore's limit slots the permit holds, from
// 0 to limit-1.
func (p *Permit) Slot() int {
	_, n, _ := strings.Cut(p.h.name, slotSep)
	i, _ := strconv.Atoi(n)
	return i
}

// makeSlots makes the slot documents of the semaphore name that do not
// exist yet, each recording limit, and checks that every slot records that
// limit: ErrLimitMismatch when another party made them with another. Slots
// beyond the limit, made by a party with a larger one, also mismatch.
func (s *store) makeSlots(ctx context.Context, name string, slots []string, limit int) error {
	docs := make([]any, len(slots))
	for i, id := range slots {
		docs[i] = bson.D{
			{Key: "_id", Value: id}, {Key: "limit", Value: limit}, {Key: "holder", Value: nil},
			{Key: "fence", Value: int64(0)}, {Key: "expiresAt", Value: time.Unix(0, 0)},
		}
	}
	_, err := s.coll.InsertMany(ctx, docs, mopt.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err != nil && !(errors.As(err, &bwe) && bwe.WriteConcernError == nil && allDuplicates(bwe)) {
		return fmt.Errorf("mongolock: making the slots of semaphore %q: %w", name, err)
	}
	// Every slot of this name, this limit's and beyond it.
	cur, err := s.coll.Find(ctx,
		bson.D{{Key: "_id", Value: bson.D{{Key: "$regex", Value: "^" + regexp.QuoteMeta(name+slotSep)}}}},
		mopt.Find().SetProjection(bson.D{{Key: "limit", Value: 1}}))
	if err != nil {
		return fmt.Errorf("mongolock: reading the slots of semaphore %q: %w", name, err)
	}
	var found []lockDoc
	if err := cur.All(ctx, &found); err != nil {
		return fmt.Errorf("mongolock: reading the slots of semaphore %q: %w", name, err)
	}
	for _, d := range found {
		if d.Limit != limit {
			return fmt.Errorf("%w: %q has a slot made with limit %d, and this party gives %d",
				ErrLimitMismatch, name, d.Limit, limit)
		}
	}
	return nil
}

func allDuplicates(bwe mongo.BulkWriteException) bool {
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return false
		}
	}
	return true
}

// readSlots returns the slot documents among ids.
func (s *store) readSlots(ctx context.Context, ids []string) ([]lockDoc, error) {
	cur, err := s.coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, err
	}
	var docs []lockDoc
	err = cur.All(ctx, &docs)
	return docs, err
}
