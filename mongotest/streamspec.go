package mongotest

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// checkStream returns the error MongoDB answers an aggregate that opens a
// change stream with the $changeStream options spec and the stages after
// it, and mongotest's where it cannot serve what MongoDB would; nil when
// the stream can open. The stages' contents are checked by FerretDB, which
// evaluates them on the events (see filter): it parses them on an empty
// collection.
func (ss *streams) checkStream(ctx context.Context, spec bson.Raw, stages []bson.Raw) bson.D {
	if e := checkOptions(spec); e != nil {
		return e
	}
	for _, stage := range stages {
		elems, err := stage.Elements()
		if err != nil || len(elems) != 1 {
			return commandError(40323, "Location40323", "A pipeline stage specification object must contain exactly one field.")
		}
		name := elems[0].Key()
		switch {
		case servedStages[name]:
		case otherAllowedStages[name]:
			return commandError(238, "NotImplemented",
				fmt.Sprintf("mongotest: %s in a change stream is not supported (FerretDB lacks it)", name))
		case knownStages[name]:
			return commandError(20, "IllegalOperation", fmt.Sprintf("%s is not permitted in a $changeStream pipeline", name))
		default:
			return commandError(40324, "Location40324", fmt.Sprintf("Unrecognized pipeline stage name: '%s'", name))
		}
	}
	if len(stages) == 0 {
		return nil
	}
	client, err := ss.scratch.get()
	if err != nil {
		return commandError(6, "HostUnreachable", err.Error())
	}
	// On one document: FerretDB reads a $match's operators only when it
	// applies them.
	check := client.Database(scratchDB).Collection("check")
	if !ss.checkReady.Load() {
		_, err = check.UpdateOne(ctx, bson.D{{Key: "_id", Value: "check"}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "operationType", Value: "insert"}}}}, mopt.UpdateOne().SetUpsert(true))
		ss.checkReady.Store(err == nil)
	}
	if err == nil {
		var cur *mongo.Cursor
		if cur, err = check.Aggregate(ctx, toA(stages)); err == nil {
			cur.Close(ctx)
			return nil
		}
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return commandError(ce.Code, ce.Name, ce.Message)
	}
	return commandError(6, "HostUnreachable", err.Error())
}

// checkOptions checks the $changeStream stage's options.
func checkOptions(spec bson.Raw) bson.D {
	elems, _ := spec.Elements()
	resumes := 0
	for _, el := range elems {
		v := el.Value()
		switch key := el.Key(); key {
		case "resumeAfter", "startAfter", "startAtOperationTime":
			resumes++
		case "allChangesForCluster":
		case "fullDocument":
			switch s, _ := v.StringValueOK(); s {
			case "default", "updateLookup":
			case "whenAvailable", "required":
				return commandError(238, "NotImplemented", "mongotest: fullDocument "+s+" (post-images) is not supported")
			default:
				return commandError(2, "BadValue", fmt.Sprintf("'%s' is not a valid value for $changeStream.fullDocument", v))
			}
		case "fullDocumentBeforeChange":
			if s, _ := v.StringValueOK(); s != "off" {
				return commandError(238, "NotImplemented", "mongotest: fullDocumentBeforeChange (pre-images) is not supported")
			}
		case "showExpandedEvents":
			if on, _ := v.BooleanOK(); on {
				return commandError(238, "NotImplemented", "mongotest: showExpandedEvents is not supported")
			}
		default:
			return commandError(40415, "Location40415", fmt.Sprintf("BSON field '$changeStream.%s' is an unknown field.", key))
		}
	}
	if resumes > 1 {
		return commandError(40674, "Location40674", "Only one type of resume option is allowed, but multiple were found.")
	}
	return nil
}

// The stages MongoDB allows after $changeStream: those FerretDB evaluates,
// and the others.
var (
	servedStages       = map[string]bool{"$match": true, "$project": true, "$addFields": true, "$set": true, "$unset": true}
	otherAllowedStages = map[string]bool{"$replaceRoot": true, "$replaceWith": true, "$redact": true, "$changeStreamSplitLargeEvent": true}
)

// knownStages are MongoDB's other aggregation stages, which a change
// stream does not permit.
var knownStages = map[string]bool{
	"$bucket": true, "$bucketAuto": true, "$changeStream": true, "$collStats": true, "$count": true,
	"$currentOp": true, "$densify": true, "$documents": true, "$facet": true, "$fill": true, "$geoNear": true,
	"$graphLookup": true, "$group": true, "$indexStats": true, "$limit": true, "$listLocalSessions": true,
	"$listSessions": true, "$lookup": true, "$merge": true, "$out": true, "$planCacheStats": true,
	"$sample": true, "$search": true, "$searchMeta": true, "$setWindowFields": true, "$skip": true,
	"$sort": true, "$sortByCount": true, "$unionWith": true, "$unwind": true, "$vectorSearch": true,
}
