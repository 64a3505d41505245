package otellock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/otellock"
)

func TestMain(m *testing.M) {
	if os.Getenv("MONGODB_URI") == "" {
		fmt.Fprintln(os.Stderr, "these tests need a server: run `make test` (embedded server), or set MONGODB_URI")
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// locker returns a Locker on a fresh collection whose Observer records on
// an in-memory reader's meter.
func locker(t testing.TB) (*mongolock.Locker, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	obs, err := otellock.Observer(mp.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	coll := c.Database("mongolock_test").Collection("otel_" + hex.EncodeToString(b[:]))
	l, err := mongolock.New(coll, mongolock.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		coll.Drop(context.Background())
		c.Disconnect(context.Background())
	})
	return l, reader
}

// sums returns each counter's and up-down counter's total, and each
// histogram's count, by instrument name.
func sums(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] += int64(p.Count)
				}
			}
		}
	}
	return out
}

// TestMetrics: holds, a leadership and a renewal show in the instruments.
func TestMetrics(t *testing.T) {
	l, reader := locker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := l.NewSession(ctx, mongolock.WithTTL(time.Second)) // renewed every 333ms
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.NewMutex("job")
	for range 3 {
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		m.Unlock()
	}
	el := s.NewElection("leader")
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	for sums(t, reader)["mongolock.renewal.duration"] == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	got := sums(t, reader)
	for name, want := range map[string]int64{
		"mongolock.acquisitions": 4, "mongolock.wait.duration": 4, "mongolock.hold.duration": 3,
		"mongolock.leaderships": 1,
	} {
		if got[name] != want {
			t.Fatalf("%s = %d, want %d (all: %v)", name, got[name], want, got)
		}
	}
	el.Resign(ctx)
	if got := sums(t, reader)["mongolock.leaderships"]; got != 0 {
		t.Fatalf("leaderships after Resign = %d, want 0", got)
	}
}
