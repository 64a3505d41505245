package mongolock

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// leasePast is a server time that lease ends are judged at (a taker's:
// the latest surely past whatever its clock's error; a renewal's: its
// estimate of now), on the clock of the primary election (nil: a
// standalone's), with the most another member's clock may differ by
// (skew).
type leasePast struct {
	at       time.Time
	election any
	skew     time.Duration
}

// over returns the $or branches by which a lease end in field is over: on
// the clock of the same primary, at p.at; written on another primary's
// clock (before a failover, or by a client that has not measured the new
// primary yet), skew later, whatever that clock's difference within the
// bound. Times and stamp are written together (clock): see WithMemberClockSkew.
func (p leasePast) over(field string) bson.A {
	key, same := stampOf(field, p.election)
	return bson.A{
		bson.D{{Key: field, Value: bson.D{{Key: "$lte", Value: p.at}}}, {Key: key, Value: same}},
		bson.D{{Key: field, Value: bson.D{{Key: "$lte", Value: p.at.Add(-p.skew)}}}},
	}
}

// live returns the $or branches by which a lease end in field has not
// run out at p.at: on the same primary's clock, after it; on another
// primary's, after it less skew. A renewal extends such a lease (no taker
// took it: its holder would have changed), so that a holder that measured
// a new primary's clock ahead of the old one's does not take its own live
// lease for expired.
func (p leasePast) live(field string) bson.A {
	key, same := stampOf(field, p.election)
	return bson.A{
		bson.D{{Key: field, Value: bson.D{{Key: "$gt", Value: p.at}}}},
		bson.D{{Key: field, Value: bson.D{{Key: "$gt", Value: p.at.Add(-p.skew)}}},
			{Key: key, Value: bson.D{{Key: "$ne", Value: same}}}},
	}
}

// stampOf returns the field that records whose clock a lease end field is
// on, and the value it holds when that is election's alone. The holder's
// lease has one writer at a time: its stamp (clock) is the election of the
// last write. An RWMutex's readers' lease is written by every reader, each
// on its own estimate, with $max: the stamp of the last write need not be
// that of the end that won, so readersClocks collects the elections of
// every write since the readers were last cleared, and the lease is on
// election's clock only when that is all it holds.
func stampOf(field string, election any) (key string, same any) {
	if field == "readersUntil" {
		return "readersClocks", bson.A{election}
	}
	return "clock", election
}

// over returns what a taker that read surelyPast on the clock of election
// knows has passed.
func (s *store) over(surelyPast time.Time, election any) leasePast {
	return leasePast{at: surelyPast, election: election, skew: s.skew}
}

// leaseEnd returns when doc's lease is over for a taker on the current
// estimate's clock: its end, or skew later when it was written on another
// primary's clock (leasePast).
func (s *store) leaseEnd(doc *lockDoc) time.Time {
	if !sameClock(doc.Clock, s.clock.Election()) {
		return doc.ExpiresAt.Add(s.skew)
	}
	return doc.ExpiresAt
}

// sameClock reports whether a document's clock stamp names the election
// (both electionIds, or both none). A stamp of another type, which
// mongolock never writes, is another clock.
func sameClock(stamp, election any) bool {
	a, aok := stamp.(bson.ObjectID)
	b, bok := election.(bson.ObjectID)
	if aok || bok {
		return aok && bok && a == b
	}
	return stamp == nil && election == nil
}

// overIn is how long from server time now, read with the error unc, until
// every taker counts a lease or turn that ends at end as over: the takers'
// filter allows for the clock's error, and so do the timers that wake a
// waiter for that end.
func overIn(end, now time.Time, unc time.Duration) time.Duration {
	return end.Sub(now) + unc + time.Millisecond
}
