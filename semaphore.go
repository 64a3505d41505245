package mongolock

import (
	"context"
	"errors"
	"fmt"
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

// semaphoreOf returns the wait queue of the semaphore whose slot id is,
// if it is one (an RWMutex's document ends with the separator and "rw").
func semaphoreOf(id string) (string, bool) {
	sem, n, ok := strings.Cut(id, slotSep)
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return "", false
	}
	return semQueue(sem), true
}

// semQueue is the name a semaphore's waiters queue under in a process:
// apart from the waiters of a Mutex of the same name.
func semQueue(name string) string { return name + slotSep }

// Semaphore is a counting semaphore on one name: at most its limit of
// permits are held at once, across processes. Each permit is a hold of the
// session, renewed by its keepalive in the same one round trip as its
// other holds, with its own Done, Err and fencing Token. A Semaphore is
// safe for concurrent use; one value may hold several permits at once.
//
// The limit is recorded in the document of the name itself, made by the
// first party: every party must give the same limit, and one that gives
// another gets ErrLimitMismatch rather than a larger or smaller semaphore
// (a Mutex, Election or GetLock on the name finds it locked for ever). The
// permits are limit ordinary lock documents (slots), each recording the
// limit too. Acquiring a permit when one is free is one round trip (one
// findOneAndUpdate over the slots, which MongoDB applies to one free slot
// atomically); releasing it is one more. The first acquire of a Semaphore
// value reads the limit once (one round trip more); on a name not used
// before it also makes the limit's document and the slots (two more).
type Semaphore struct {
	s     *Session
	name  string
	queue string // this process's waiters' queue
	limit int
	slots []string

	mu     sync.Mutex
	agreed bool // the name's document records this limit
	made   bool // the slots were made by this value, or found
}

// NewSemaphore returns a Semaphore on name with limit permits, owned by this
// session. The name and the limit (1 to MaxLimit) are checked by Acquire and
// TryAcquire.
func (s *Session) NewSemaphore(name string, limit int) *Semaphore {
	sem := &Semaphore{s: s, name: name, queue: semQueue(name), limit: limit}
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
	start := time.Now()
	try := func(ctx context.Context) (bool, error) {
		var err error
		p, err = sem.try(ctx, start)
		return p != nil, err
	}
	l := sem.s.l
	a := attempt{try: try, peek: sem.peek, noTurns: true, shared: true}
	if err := l.wait(ctx, sem.queue, a, sem.s.done, sem.s.ended); err != nil {
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
	p, err := sem.try(ctx, time.Now())
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

// try makes one attempt, once the name's limit is known to agree; if no
// slot matched and this value has not made the slots, it makes them and
// tries again.
func (sem *Semaphore) try(ctx context.Context, calledAt time.Time) (*Permit, error) {
	sem.mu.Lock()
	agreed, made := sem.agreed, sem.made
	sem.mu.Unlock()
	if !agreed {
		if err := sem.s.l.store.agreeLimit(ctx, sem.name, sem.limit); err != nil {
			return nil, err
		}
		sem.mu.Lock()
		sem.agreed = true
		sem.mu.Unlock()
	}
	c := claim{name: sem.queue, kind: permitKind{slots: sem.slots, limit: sem.limit}, calledAt: calledAt}
	h, ok, err := sem.s.acquire(ctx, c, holdOptions{})
	if err != nil || ok || made {
		return permit(h), err
	}
	if err := sem.s.l.store.makeSlots(ctx, sem.name, sem.slots, sem.limit); err != nil {
		return nil, err
	}
	sem.mu.Lock()
	sem.made = true
	sem.mu.Unlock()
	h, _, err = sem.s.acquire(ctx, c, holdOptions{})
	return permit(h), err
}

// peek reads the semaphore's slots for a waiter: free when one is, and
// otherwise the end of the first lease among them.
func (sem *Semaphore) peek(ctx context.Context) peeked {
	docs, err := sem.s.l.store.readSlots(ctx, sem.slots)
	if err != nil || len(docs) < len(sem.slots) {
		return peeked{} // not all made yet: the attempt makes them
	}
	var first time.Time
	for i := range docs {
		if !sem.s.l.held(&docs[i]) {
			return peeked{free: true}
		}
		if first.IsZero() || docs[i].ExpiresAt.Before(first) {
			first = docs[i].ExpiresAt
		}
	}
	return peeked{until: first}
}

// permitKind is a Semaphore's permit: any free one of its slot documents,
// each made with limit (makeSlots). The claim's name is the semaphore's
// queue in this process; the hold's is the slot it took.
type permitKind struct {
	slots []string
	limit int
}

// take takes any free slot for c in one findOneAndUpdate over the slots:
// MongoDB applies it to one matching document, atomically. The slots
// exist already (makeSlots), so there is no upsert; only slots made with
// the limit match. It returns the slot's document after it. As
// store.acquire, the filter also matches the slot c.holder already holds,
// for a repeated attempt.
func (k permitKind) take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error) {
	if c.retry {
		// The slot an earlier attempt may have taken comes first: a free
		// slot met before it in the scan would make two.
		doc, ok, err := s.takePermit(ctx, c, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: k.slots}}}, {Key: "holder", Value: c.holder}}, now)
		if ok || err != nil {
			return doc, ok, err
		}
	}
	filter := bson.D{
		{Key: "_id", Value: bson.D{{Key: "$in", Value: k.slots}}},
		{Key: "limit", Value: k.limit},
		{Key: "$or", Value: append(bson.A{
			bson.D{{Key: "holder", Value: nil}},
			bson.D{{Key: "holder", Value: c.holder}},
		}, past.over("expiresAt")...)},
	}
	return s.takePermit(ctx, c, filter, now)
}

// forget frees whichever slot c.holder holds.
func (permitKind) forget(ctx context.Context, s *store, c claim) error {
	return s.releaseAll(ctx, c.session, []string{c.holder})
}

// mark: a permit's hold is on its slot, and its waiters queue under the
// semaphore's queue.
func (permitKind) mark(h *hold, queue string) { h.sem = queue }
func (permitKind) String() string             { return "permit" }

// takePermit takes for c the first slot that filter matches.
func (s *store) takePermit(ctx context.Context, c claim, filter bson.D, now time.Time) (*lockDoc, bool, error) {
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "owner", Value: c.owner},
			{Key: "holder", Value: c.holder},
			{Key: "session", Value: c.session},
			{Key: "acquiredAt", Value: now},
			{Key: "clock", Value: c.election},
		}},
		{Key: "$max", Value: bson.D{{Key: "expiresAt", Value: now.Add(c.ttl)}}},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
	}
	var doc lockDoc
	err := s.coll.FindOneAndUpdate(ctx, filter, update, afterOpts).Decode(&doc)
	switch {
	case err == nil:
		return &doc, true, nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil, false, nil
	default:
		return nil, false, err
	}
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
	return p.h.life.err
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

// agreeLimit checks that the document of the semaphore name records
// limit, making it if there is none: ErrLimitMismatch when it records
// another, or none (the name is another kind of lock's).
func (s *store) agreeLimit(ctx context.Context, name string, limit int) error {
	doc, err := s.read(ctx, name)
	if err == nil && doc == nil {
		_, err = s.coll.InsertOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "limit", Value: limit}, {Key: "holder", Value: nil}})
		if err == nil {
			return nil
		}
		if mongo.IsDuplicateKeyError(err) {
			doc, err = s.read(ctx, name) // made by another party meanwhile
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("mongolock: reading the limit of semaphore %q: %w", name, err)
	case doc.Limit == 0:
		return fmt.Errorf("%w: %q is the name of a Mutex, Election or GetLock lock", ErrLimitMismatch, name)
	case doc.Limit != limit:
		return fmt.Errorf("%w: semaphore %q has limit %d, and this party gives %d", ErrLimitMismatch, name, doc.Limit, limit)
	}
	return nil
}

// makeSlots makes the slot documents that do not exist yet, each recording
// limit, once the name's document was found to agree.
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
