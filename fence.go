package mongolock

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// FenceField is the field in which FencedUpdateOne records, in the
// documents it writes, the fencing token of the last write.
const FenceField = "mongolockFence"

// FencedUpdateOne makes a lease a fence for writes to a MongoDB
// collection of your own. It applies update to the document of coll that
// filter matches, as coll.UpdateOne does, only if that document carries no
// newer fencing token than token in its FenceField (a document without one
// accepts any), and records token there in the same write. So once a
// holder with a newer token of the same lock (Mutex.Token, Election.Token;
// not a Permit's, whose tokens count per slot) has written, the writes of an older holder that still believes in its
// hold (paused past its lease by GC, SIGSTOP or a VM migration, or whose
// reply was slow) are refused, and nothing of them lands.
//
// update must be a document of update operators; its $set, if any, must
// not set FenceField; a $and in filter must be a bson.A. With an upsert,
// let filter name the document by _id (or another unique index): a write
// refused then fails on the duplicate key and is reported as refused,
// where a filter on other fields would insert a second document. It blocks for one round trip, and for one more (a
// read of the document's token) when nothing matched. It returns the
// update's result when the write applied, or when no document matches
// filter (MatchedCount 0; with an upsert option, one is inserted instead);
// an error matching ErrStaleToken, with nothing written, when the document
// carries a newer token; ErrInvalidOption for a token below 1 or an update
// it cannot fence, with nothing sent; and otherwise the driver's error.
func FencedUpdateOne(ctx context.Context, coll *mongo.Collection, token int64, filter, update bson.D,
	opts ...mopt.Lister[mopt.UpdateOneOptions]) (*mongo.UpdateResult, error) {
	if coll == nil {
		return nil, ErrNilCollection
	}
	if token < 1 {
		return nil, fmt.Errorf("%w: fencing token %d: tokens start at 1", ErrInvalidOption, token)
	}
	fenced, err := fencedUpdate(update, token)
	if err != nil {
		return nil, err
	}
	for _, e := range filter {
		if _, ok := e.Value.(bson.A); e.Key == "$and" && !ok {
			return nil, fmt.Errorf("%w: the filter's $and must be a bson.A to be fenced, not %T", ErrInvalidOption, e.Value)
		}
	}
	res, err := coll.UpdateOne(ctx, fencedFilter(filter, token), fenced, opts...)
	switch {
	case err == nil && (res.MatchedCount > 0 || res.UpsertedCount > 0):
		return res, nil
	case err != nil && !mongo.IsDuplicateKeyError(err):
		return nil, err // an upsert's insert failing on a newer document's _id is judged below
	}
	// Nothing matched: no such document, or a newer holder wrote it. A
	// document's token only grows, so one that matched with a newer token
	// then shows one now. Read from the primary: a lagging secondary might
	// not show the newer write yet.
	primary := coll.Clone(mopt.Collection().SetReadPreference(readpref.Primary()))
	var doc bson.Raw
	ferr := primary.FindOne(ctx, filter, mopt.FindOne().SetProjection(bson.D{{Key: FenceField, Value: 1}})).Decode(&doc)
	if ferr == nil {
		if newer, ok := doc.Lookup(FenceField).AsInt64OK(); ok && newer > token {
			return nil, fmt.Errorf("%w: the document carries token %d, newer than %d", ErrStaleToken, newer, token)
		}
	} else if !errors.Is(ferr, mongo.ErrNoDocuments) {
		return nil, ferr
	}
	return res, err
}

// fencedFilter is filter, matching only documents whose token is not newer
// than token. The condition goes into filter's top-level $and, so that the
// fields filter names stay at the top level, where an upsert takes its new
// document's fields (its _id) from.
func fencedFilter(filter bson.D, token int64) bson.D {
	notNewer := bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: FenceField, Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: FenceField, Value: bson.D{{Key: "$lte", Value: token}}}},
	}}}
	out := make(bson.D, 0, len(filter)+1)
	added := false
	for _, e := range filter {
		if and, ok := e.Value.(bson.A); ok && e.Key == "$and" {
			e.Value = append(append(bson.A{}, and...), notNewer)
			added = true
		}
		out = append(out, e)
	}
	if !added {
		out = append(out, bson.E{Key: "$and", Value: bson.A{notNewer}})
	}
	return out
}

// fencedUpdate is update, also setting FenceField to token.
func fencedUpdate(update bson.D, token int64) (bson.D, error) {
	if len(update) == 0 {
		return nil, fmt.Errorf("%w: an empty update", ErrInvalidOption)
	}
	out := make(bson.D, 0, len(update)+1)
	found := false
	for _, e := range update {
		if len(e.Key) == 0 || e.Key[0] != '$' {
			return nil, fmt.Errorf("%w: %q is not an update operator (a replacement cannot be fenced)", ErrInvalidOption, e.Key)
		}
		if e.Key == "$set" {
			set, ok := e.Value.(bson.D)
			if !ok {
				return nil, fmt.Errorf("%w: $set must be a bson.D to be fenced, not %T", ErrInvalidOption, e.Value)
			}
			for _, f := range set {
				if f.Key == FenceField {
					return nil, fmt.Errorf("%w: the update sets %s itself", ErrInvalidOption, FenceField)
				}
			}
			e.Value = append(append(bson.D{}, set...), bson.E{Key: FenceField, Value: token})
			found = true
		}
		out = append(out, e)
	}
	if !found {
		out = append(out, bson.E{Key: "$set", Value: bson.D{{Key: FenceField, Value: token}}})
	}
	return out, nil
}
