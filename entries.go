package mongolock

import (
	"context"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// entry is how a join writes a Locker's entry among a lock's waiting
// Lockers.
type entry struct {
	streaming bool // told of releases by a change stream; else a poller
	fifo      bool // the Locker has WithFIFO: the join marks the name (fifoMark)
	news      bool // a join, not a refresh of one: holders are told (lastJoined)
	began     bool // the first join of a wait: it began to wait now
}

// join adds locker to the Lockers waiting for the lock name, or refreshes
// its entry, as e says, in one round trip.
func (s *store) join(ctx context.Context, name, locker string, e entry) error {
	in, out := waitingKey(locker), pollerKey(locker)
	if !e.streaming {
		in, out = out, in
	}
	now := s.clock.Now()
	set := bson.D{{Key: in, Value: now}}
	if e.streaming && e.news {
		// Tells a holder, through its change stream, who joined after its
		// acquire saw the waiting Lockers. The value changes at every join
		// (a change stream reports only fields whose value changed); a
		// refresh, which the holder's acquire saw, does not set it, so
		// that it is no event to anyone.
		set = append(set, bson.E{Key: "lastJoined", Value: locker + "@" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	}
	if e.fifo {
		set = append(set, bson.E{Key: fifoMark, Value: now})
	}
	update := bson.D{{Key: "$unset", Value: bson.D{{Key: out, Value: ""}}}}
	// When it began to wait, for the name's turns under WithFIFO's rule
	// (which may be another Locker's): a join again in the same wait keeps
	// the first time; a new wait starts from now, whatever an entry left
	// by an earlier one says.
	if e.began {
		set = append(set, bson.E{Key: sinceKey(locker), Value: now})
	} else {
		update = append(update, bson.E{Key: "$min", Value: bson.D{{Key: sinceKey(locker), Value: now}}})
	}
	update = append(bson.D{{Key: "$set", Value: set}}, update...)
	_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}}, update)
	return err
}

// leave takes locker out of the Lockers waiting for the lock name, in one
// round trip.
func (s *store) leave(ctx context.Context, name, locker string) error {
	_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}}, bson.D{{Key: "$unset", Value: notWaiting(locker)}})
	return err
}

// staleEntries returns the keys of the entries of the Lockers stale among
// the waiting ones, but for heir's and locker's, which the same release
// writes.
func staleEntries(stale []string, heir, locker string) bson.D {
	var keys bson.D
	seen := map[string]bool{heir: true, locker: true}
	for _, l := range stale {
		if !seen[l] { // a path twice in one update fails it whole
			seen[l] = true
			keys = append(keys, notWaiting(l)...)
		}
	}
	return keys
}

// notWaiting is the $unset of locker's entries among the waiting Lockers.
func notWaiting(locker string) bson.D {
	return bson.D{{Key: waitingKey(locker), Value: ""}, {Key: pollerKey(locker), Value: ""}, {Key: sinceKey(locker), Value: ""}}
}

// fifoMark is the field a Locker with WithFIFO sets to the server time
// when it takes or joins a lock (lockDoc.FIFO).
const fifoMark = "fifo"

func waitingKey(locker string) string { return "waiting." + locker }

func pollerKey(locker string) string { return "pollers." + locker }

func sinceKey(locker string) string { return "since." + locker }
