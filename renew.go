package mongolock

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// releaseAll frees every lock of session among holders that is still
// theirs, in one round trip. The session in the filter lets MongoDB serve
// it from the {session: 1} index.
func (s *store) releaseAll(ctx context.Context, session string, holders []string) error {
	if len(holders) == 0 {
		return nil
	}
	_, err := s.coll.UpdateMany(ctx,
		bson.D{{Key: "session", Value: session}, {Key: "holder", Value: bson.D{{Key: "$in", Value: holders}}}},
		s.freeUpdate())
	return err
}

// renew extends the leases of the given holders of one session that are
// still live, and the read holds of the session on the RWMutex documents
// reading, in one round trip (one update command), and returns how many
// documents it matched. It never brings back a lock that was released or
// has expired, and never moves a lease's end backward: a renewal applied
// late (its reply lost, the next one already through) cannot shorten a
// later one.
//
// now is the server-clock estimate when the renewal is sent.
func (s *store) renew(ctx context.Context, session string, holders []string, reading map[string][]string, now time.Time, election any, ttl time.Duration) (int64, error) {
	var models []mongo.WriteModel
	if len(holders) > 0 {
		models = append(models, mongo.NewUpdateManyModel().SetFilter(bson.D{
			{Key: "session", Value: session},
			{Key: "holder", Value: bson.D{{Key: "$in", Value: holders}}},
			{Key: "$or", Value: s.over(now, election).live("expiresAt")},
		}).SetUpdate(extendUpdate(now.Add(ttl), election)))
	}
	for id, tokens := range reading {
		models = append(models, renewReads(id, tokens, s.over(now, election), ttl))
	}
	if len(models) == 0 {
		return 0, nil
	}
	res, err := s.coll.BulkWrite(ctx, models)
	if err != nil {
		return 0, err
	}
	return res.MatchedCount, nil
}

// extend is extendUpdate to ttl from now, on the clock's current estimate.
func (s *store) extend(ttl time.Duration) bson.D {
	now, _, election := s.clock.ReadElection()
	return extendUpdate(now.Add(ttl), election)
}

// extendUpdate moves a lease's end to until, never backward, stamped with
// the election of the primary whose clock until was read on.
func extendUpdate(until time.Time, election any) bson.D {
	return bson.D{{Key: "$max", Value: bson.D{{Key: "expiresAt", Value: until}}},
		{Key: "$set", Value: bson.D{{Key: "clock", Value: election}}}}
}

// liveHolders returns which of session's holders still hold a live lease.
func (s *store) liveHolders(ctx context.Context, session string, holders []string) (map[string]bool, error) {
	now, _, election := s.clock.ReadElection()
	cur, err := s.coll.Find(ctx,
		bson.D{
			{Key: "session", Value: session},
			{Key: "holder", Value: bson.D{{Key: "$in", Value: holders}}},
			{Key: "$or", Value: s.over(now, election).live("expiresAt")},
		},
		mopt.Find().SetProjection(bson.D{{Key: "holder", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var docs []lockDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(docs))
	for _, d := range docs {
		live[d.Holder] = true
	}
	return live, nil
}
