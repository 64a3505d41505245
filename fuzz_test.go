package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// FuzzValidation: any name and owner either pass validation or get their
// typed error before anything is sent (the client here reaches no server).
func FuzzValidation(f *testing.F) {
	for _, s := range []string{"", "a", "jobs/nightly", "\xff", "é", string(make([]byte, 1001))} {
		f.Add(s, "owner")
		f.Add("name", s)
	}
	client, err := mongo.Connect(options.Client().ApplyURI("mongodb://127.0.0.1:1").
		SetServerSelectionTimeout(time.Millisecond))
	if err != nil {
		f.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	l, err := mongolock.New(client.Database("none").Collection("none"))
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	f.Fuzz(func(t *testing.T, name, owner string) {
		err := l.GetLock(context.Background(), name, owner, 0, time.Second)
		badName := name == "" || len(name) > mongolock.MaxNameLen || !utf8.ValidString(name) || strings.Contains(name, "\x1f")
		badOwner := owner == "" || len(owner) > mongolock.MaxNameLen || !utf8.ValidString(owner)
		switch {
		case badName:
			if !errors.Is(err, mongolock.ErrInvalidName) {
				t.Fatalf("name %q: %v, want ErrInvalidName", name, err)
			}
		case badOwner:
			if !errors.Is(err, mongolock.ErrInvalidOwner) {
				t.Fatalf("owner %q: %v, want ErrInvalidOwner", owner, err)
			}
		case errors.Is(err, mongolock.ErrInvalidName) || errors.Is(err, mongolock.ErrInvalidOwner):
			t.Fatalf("valid %q/%q refused: %v", name, owner, err)
		}
	})
}

// FuzzSeedModel steps the seed API and an in-memory model of its
// semantics through the same operations, and compares every result. Leases
// are long, so time plays no part.
func FuzzSeedModel(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x02, 0x03})
	f.Add([]byte{0x00, 0x10, 0x11, 0x01, 0x21, 0x12, 0x03, 0x13})
	f.Add([]byte{0x04, 0x14, 0x24, 0x06, 0x05, 0x15, 0x07, 0x27, 0x35, 0x01})
	e := newEnv(f)
	l, _ := e.locker("")
	var iter atomic.Int64
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 40 {
			ops = ops[:40]
		}
		ctx := context.Background()
		prefix := fmt.Sprintf("it%d-", iter.Add(1))
		model := map[string]string{} // name -> owner
		for i, b := range ops {
			name := prefix + fmt.Sprint("n", (b>>2)%3)
			owner := fmt.Sprint("o", (b>>4)%3)
			var got, want error
			switch b % 4 {
			case 0:
				got = l.GetLock(ctx, name, owner, 0, time.Hour)
				if cur := model[name]; cur == "" || cur == owner {
					model[name] = owner
				} else {
					want = mongolock.ErrLocked
				}
			case 1:
				got = l.ReleaseLock(ctx, name, owner)
				if model[name] == owner {
					delete(model, name)
				} else {
					want = mongolock.ErrNotHeld
				}
			case 2:
				got = l.RenewLock(ctx, name, owner, time.Hour)
				if model[name] != owner {
					want = mongolock.ErrNotHeld
				}
			case 3:
				var used string
				used, got = l.IsUsedLock(ctx, name)
				if got == nil && used != model[name] {
					t.Fatalf("op %d: IsUsedLock(%s) = %q, model %q", i, name, used, model[name])
				}
			}
			if (want == nil) != (got == nil) || (want != nil && !errors.Is(got, want)) {
				t.Fatalf("op %d (%d on %s by %s): got %v, model says %v", i, b%4, name, owner, got, want)
			}
		}
	})
}
