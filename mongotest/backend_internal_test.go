package mongotest

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/goleak"
)

// TestBackendReconnectLeavesNothing: when FerretDB moves (Restart), the
// client of its old address is disconnected in the background, and close
// waits for that: once close returns, the old client is disconnected and
// nothing of it runs. (A Disconnect left running, unbounded, was once
// caught by the torture's leak check still ending its sessions on the
// stopped server; this test did not reproduce that timing.)
func TestBackendReconnectLeavesNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	b := backendClient{addr: srv.backendAddr}
	use := func() *mongo.Client {
		t.Helper()
		c, err := b.get()
		if err != nil {
			t.Fatal(err)
		}
		// A session of the client, which its Disconnect must end.
		if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := use()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	use() // a new address: the old client is let go
	b.close()
	if err := old.Ping(ctx, nil); !errors.Is(err, mongo.ErrClientDisconnected) {
		t.Fatalf("the old address's client after close: %v, want it disconnected", err)
	}
}
