package mongolock

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// lockDoc is how a lock is stored: one document per name, kept after
// release so that its fencing counter only ever grows.
type lockDoc struct {
	Name       string    `bson:"_id"`
	Owner      string    `bson:"owner"`
	Holder     string    `bson:"holder"` // "" (null) when free
	Session    string    `bson:"session"`
	Fence      int64     `bson:"fence"`
	AcquiredAt time.Time `bson:"acquiredAt"`
	ExpiresAt  time.Time `bson:"expiresAt"` // for a free lock with an heir: the end of its turn
	// Clock is the electionId of the primary whose clock ExpiresAt was
	// last written on (leasePast); none on a standalone. (An RWMutex's
	// readers' lease has readersClocks, which only filters read.)
	Clock any `bson:"clock,omitempty"`
	// Limit is set in a semaphore's documents (semaphore.go): the limit
	// their creator gave.
	Limit int `bson:"limit,omitempty"`
	// What only some kinds of document hold, in the same document.
	Turns    turnsDoc    `bson:",inline"` // a lock's waiting Lockers (turns.go)
	Election electionDoc `bson:",inline"` // an election's leader
	RW       rwDoc       `bson:",inline"` // an RWMutex's readers (rwmutex.go)
}

// turnsDoc is who waits for a lock and whose turn it is (turns.go).
type turnsDoc struct {
	// Heir is the Locker whose waiters alone may take the lock after a
	// release, until ExpiresAt; Waiting holds the Lockers whose waiters
	// wait for it and learn of releases from a change stream, Pollers those
	// that poll, each with the server time it joined.
	Heir    string               `bson:"heir"`
	Locker  string               `bson:"locker"` // the last holder's Locker: turns go round from it
	Waiting map[string]time.Time `bson:"waiting"`
	Pollers map[string]time.Time `bson:"pollers"`
	// Since holds when each waiting Locker began to wait; FIFO the server
	// time a Locker with WithFIFO last took or joined the lock: the name's
	// rule is FIFO while that is recent (fifoRule).
	Since map[string]time.Time `bson:"since,omitempty"`
	FIFO  time.Time            `bson:"fifo,omitempty"`
	// LastJoined is the latest join (locker@time): the one field a change
	// stream reports for it (entries.go).
	LastJoined string `bson:"lastJoined,omitempty"`
}

// electionDoc is an election's leader (election.go).
type electionDoc struct {
	Value string `bson:"value"` // the leader's value
	// Transitions counts the leaderships: one per change of leader
	// (Election.Campaign's acquires).
	Transitions int64 `bson:"transitions,omitempty"`
}

// rwDoc is an RWMutex's readers (rwmutex.go): they hold its document for
// reading until ReadersUntil unless renewed; Holder is then its writer.
type rwDoc struct {
	Readers      []reader  `bson:"readers,omitempty"`
	ReadersUntil time.Time `bson:"readersUntil,omitempty"`
}

// store runs the lock document operations, each one round trip.
type store struct {
	coll  *mongo.Collection
	clock *serverClock
	skew  time.Duration // the most members' clocks differ by (WithMemberClockSkew)
	// reports is coll read with majority read concern, for the reads
	// whose answer names a holder to the caller (Status, Leader,
	// IsUsedLock, List, Observe): a failover may roll back an acquire
	// that only some members had.
	reports *mongo.Collection
}

// acquireOpts returns the document after the update. No projection:
// FerretDB does not implement findAndModify's "fields", and the document
// is small.
var acquireOpts = mopt.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(mopt.After)

// afterOpts returns the document after the update, with no upsert.
var afterOpts = mopt.FindOneAndUpdate().SetReturnDocument(mopt.After)

// acquire takes the lock document for c, a lock held by one holder at a
// time with x's parts, in one findOneAndUpdate with upsert. It returns the
// document after it (with the new fencing token and who else waits for
// the lock), or ok false when another holder has a live lease or another
// Locker's turn runs (the upsert's insert then fails on the duplicate
// _id). The filter also matches the lock when c.holder already holds it,
// so that an attempt whose reply was lost can be repeated with the same
// token. The taker leaves the waiting Lockers (its turn came).
//
// now is the server time the lease is written from, past the judge of
// which leases surely ended. The lease's end is written with $max: an
// attempt applied late (after a retry of it got through) cannot move it
// back.
func (s *store) acquire(ctx context.Context, c claim, x exclusive, now time.Time, past leasePast) (*lockDoc, bool, error) {
	filter := append(acquireFilter(c, past), x.filter...)
	var session any // null for the seed API's locks
	if c.session != "" {
		session = c.session
	}
	set := bson.D{
		{Key: "owner", Value: c.owner},
		{Key: "holder", Value: c.holder},
		{Key: "session", Value: session},
		{Key: "value", Value: x.value},
		{Key: "acquiredAt", Value: now},
		{Key: "heir", Value: nil},
		{Key: "locker", Value: c.turns.locker},
		{Key: "clock", Value: c.election},
	}
	set = append(set, x.set...)
	if c.turns.fifo {
		set = append(set, bson.E{Key: fifoMark, Value: now})
	}
	update := bson.D{
		{Key: "$set", Value: set},
		{Key: "$unset", Value: notWaiting(c.turns.locker)},
		{Key: "$max", Value: bson.D{{Key: "expiresAt", Value: now.Add(c.ttl)}}},
		{Key: "$inc", Value: append(bson.D{{Key: "fence", Value: int64(1)}}, x.inc...)},
	}
	var doc lockDoc
	if c.retry {
		// An earlier attempt may have taken it: then only the lease moves,
		// and the fence (and an election's transitions) count it once.
		again := extendUpdate(now.Add(c.ttl), c.election)
		err := s.coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: c.name}, {Key: "holder", Value: c.holder}},
			again, afterOpts).Decode(&doc)
		if err == nil {
			return &doc, true, nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, false, err
		}
	}
	err := s.coll.FindOneAndUpdate(ctx, filter, update, acquireOpts).Decode(&doc)
	switch {
	case err == nil:
		return &doc, true, nil
	case mongo.IsDuplicateKeyError(err):
		return nil, false, nil
	default:
		return nil, false, err
	}
}

// acquireFilter matches the lock document c may take: free (and no other
// Locker's turn runs), its lease surely over (past), or already c.holder's
// (a repeated attempt).
//
// It is never equalities on _id alone: since 4.2 MongoDB retries an upsert
// that failed on a duplicate key when its filter is only equalities on the
// fields of a unique index, and such a retry would update the held lock
// the filter did not match (TestAcquireFilterShape).
func acquireFilter(c claim, past leasePast) bson.D {
	free := bson.A{
		bson.D{{Key: "holder", Value: nil}, {Key: "heir", Value: bson.D{{Key: "$in", Value: bson.A{nil, c.turns.locker}}}}},
		bson.D{{Key: "holder", Value: c.holder}},
	}
	free = append(free, past.over("expiresAt")...)
	// A semaphore's name records its limit (semaphore.go): no other kind
	// of lock may take it.
	return bson.D{{Key: "_id", Value: c.name}, {Key: "limit", Value: nil}, {Key: "$or", Value: free}}
}

// release frees the lock if holder still holds it, and reports whether it
// did. With t.heir set, only that Locker's waiters may take it until
// t.until; it leaves the waiting Lockers (its turn comes), and t.locker,
// when t.stay, joins them.
func (s *store) release(ctx context.Context, name, holder string, t turn) (bool, error) {
	update := s.freeUpdate()
	unset := staleEntries(t.stale, t.heir, t.locker)
	if t.heir != "" {
		set := bson.D{
			{Key: "holder", Value: nil},
			{Key: "session", Value: nil},
			{Key: "expiresAt", Value: t.until},
			{Key: "heir", Value: t.heir},
			{Key: "clock", Value: s.clock.Election()},
		}
		switch {
		case t.stay && t.polls:
			set = append(set, bson.E{Key: pollerKey(t.locker), Value: s.clock.Now()})
		case t.stay:
			set = append(set, bson.E{Key: waitingKey(t.locker), Value: s.clock.Now()})
		}
		if t.stay && t.fifo {
			set = append(set, bson.E{Key: sinceKey(t.locker), Value: t.until}) // at the back
		}
		if !t.heirPolls {
			unset = append(unset, notWaiting(t.heir)...)
		}
		update = bson.D{{Key: "$set", Value: set}}
	}
	if len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	res, err := s.coll.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: name}, {Key: "holder", Value: holder}},
		update)
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}

// keep hands the lock name from holder to no one until the server time
// until, and reports whether holder still had it. The new holder token is
// random with keptPrefix: no session renews or releases it, the lock is
// taken for everyone until then, and a change stream reports a change of
// holder (with its end), which waiters know they need not poll before.
// The lease's end is set, not maxed: it may come before the lease's.
//
// The entries of the waiting Lockers taken for dead (stale) go in the same
// write, as at a release. until is stamped with election, the primary whose
// clock it was read on (leasePast).
func (s *store) keep(ctx context.Context, name, holder string, until time.Time, election any, stale []string) (bool, error) {
	update := bson.D{{Key: "$set", Value: bson.D{
		{Key: "holder", Value: keptPrefix + newToken()},
		{Key: "session", Value: keptPrefix}, // no session's: out of its renewals' way, and not the seed API's (null)
		{Key: "expiresAt", Value: until},
		{Key: "heir", Value: nil},
		{Key: "clock", Value: election},
	}}}
	if unset := staleEntries(stale, "", ""); len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	res, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "holder", Value: holder}}, update)
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}

// ferretDB returns the version of FerretDB when the server is one (its
// buildInfo says so), and otherwise nil.
func (s *store) ferretDB(ctx context.Context) any {
	var info bson.M
	if err := s.coll.Database().RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return nil
	}
	return info["ferretdbVersion"]
}

// sessionIndex creates the {session: 1} index by which renewals find a
// session's holds.
func (s *store) sessionIndex(ctx context.Context) error {
	_, err := s.coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "session", Value: 1}}})
	return err
}

// forceRelease frees the lock name whoever holds it, if its lease may
// still run (ForceRelease), and reports whether it did.
func (s *store) forceRelease(ctx context.Context, name string) (bool, error) {
	res, err := s.coll.UpdateOne(ctx,
		bson.D{
			{Key: "_id", Value: name},
			{Key: "holder", Value: bson.D{{Key: "$ne", Value: nil}}},
			{Key: "expiresAt", Value: bson.D{{Key: "$gt", Value: s.clock.SurelyPast()}}},
		},
		s.freeUpdate())
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}

// keptPrefix starts the holder token of a lock kept by no one until its
// lease ends (WithHoldAtLeast, WithHoldAtMost).
const keptPrefix = "kept:"

// kept reports whether a holder token is that of a kept lock: it is not
// released before its lease ends, except by ForceRelease.
func kept(holder string) bool { return strings.HasPrefix(holder, keptPrefix) }

// freeUpdate marks a lock free; the fence, owner and times stay for the
// record. The session goes: the {session: 1} index, by which renewals
// find a session's holds, holds only live ones (and holds that died
// unreleased, until their lock is taken again), however many names the
// session ever held.
func (s *store) freeUpdate() bson.D {
	return bson.D{{Key: "$set", Value: bson.D{
		{Key: "holder", Value: nil},
		{Key: "session", Value: nil},
		{Key: "expiresAt", Value: s.clock.Now()},
	}}}
}

// read returns the lock's document, or nil if there is none.
func (s *store) read(ctx context.Context, name string) (*lockDoc, error) {
	return readFrom(ctx, s.coll, name)
}

// report is read with majority read concern: what it says of a holder
// no failover rolls back.
func (s *store) report(ctx context.Context, name string) (*lockDoc, error) {
	return readFrom(ctx, s.reports, name)
}

// list returns the documents whose names start with prefix ("" for
// all), sorted by name, read as report reads.
func (s *store) list(ctx context.Context, prefix string) ([]lockDoc, error) {
	filter := bson.D{}
	if prefix != "" {
		filter = bson.D{{Key: "_id", Value: bson.D{{Key: "$regex", Value: "^" + regexp.QuoteMeta(prefix)}}}}
	}
	cur, err := s.reports.Find(ctx, filter, mopt.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var docs []lockDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	return docs, nil
}

func readFrom(ctx context.Context, coll *mongo.Collection, name string) (*lockDoc, error) {
	var doc lockDoc
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &doc, nil
}

// updateOwned applies update to the seed API's lock name if owner holds a
// live lease on it, and reports whether it did. It never upserts.
func (s *store) updateOwned(ctx context.Context, name, owner string, update bson.D) (bool, error) {
	now, _, election := s.clock.ReadElection()
	res, err := s.coll.UpdateOne(ctx,
		bson.D{
			{Key: "_id", Value: name},
			{Key: "owner", Value: owner},
			{Key: "session", Value: nil},
			{Key: "holder", Value: bson.D{{Key: "$ne", Value: nil}}},
			{Key: "$or", Value: s.over(now, election).live("expiresAt")},
		}, update)
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}
