# The embedded test server (FerretDB behind a serialising proxy) runs every
# target below unless MONGODB_URI is set, in which case that server is used.
MONGOTEST := bin/mongotest
GO ?= go

.PHONY: demo test test-mongotest test-lib test-polling test-gocron test-otel test-torture torture bench bench-peers pictures vet clean

demo: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) run ./examples/demo

test: test-mongotest test-lib test-polling test-gocron test-otel test-torture

test-mongotest:
	cd mongotest && $(GO) test -race -count=1 ./...

# -p 1: the packages share one server, and some tests switch its faults
# (replica-set behaviours) for every client of it.
test-lib: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -race -count=1 -p 1 ./...

# test-lib runs on mongotest's change streams (its default); this runs the
# waits again on a server without them and without an electionId, as on a
# standalone mongod, so that the polling fallback and unstamped leases stay
# tested.
test-polling: $(MONGOTEST)
	$(MONGOTEST) -change-streams=false -election-id=false -- $(GO) test -race -count=1 -run 'TestTakeover|TestFallbackToPolling|TestContentionCost|TestMutualExclusion|TestSameSessionExclusion|TestElection|TestSeedSemantics|TestWaitersCostOne|TestHoldLifecycle|TestHoldAt|TestSemaphore|TestRWMutex|TestFIFO|TestFairShares' .

# The gocron adapter (a module of its own, so that gocron stays out of the
# library's go.mod), with two schedulers as two hosts.
test-gocron: $(MONGOTEST)
	cd gocronlock && ../$(MONGOTEST) -- $(GO) test -race -count=1 ./...

# The OpenTelemetry adapter (a module of its own), on the SDK's in-memory
# reader.
test-otel: $(MONGOTEST)
	cd otellock && ../$(MONGOTEST) -- $(GO) test -race -count=1 ./...

# The short torture (40s of faults); `make torture` runs the long one.
test-torture:
	cd torture && $(GO) test -race -count=1 ./...

# Worker processes contend for locks for 10 minutes while they are killed,
# paused and cut off, the server restarts and its replies are delayed; the
# checker exits non-zero on any violation. DURATION=1m for a shorter run.
DURATION ?= 10m
torture:
	cd torture && $(GO) build -o ../bin/torture .
	bin/torture -duration $(DURATION)

bench: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -run '^$$' -bench . -benchtime 200x -timeout 30m

# The same scenarios on etcd's concurrency.Mutex (embedded etcd) and on
# bsm/redislock (a redis-server from Debian's packages, installed if missing),
# each on its own server started by the benchmark.
bench-peers:
	benchmarks/install-redis.sh
	cd benchmarks && $(GO) run . -n 200 -json ../docs/figures/peers.json

# The docs' pictures, as SVG: the life of a lease, and the handoffs of the
# last make bench-peers run (docs/figures/peers.json).
pictures:
	cd benchmarks && $(GO) run ./pictures -data ../docs/figures/peers.json -out ../docs

vet:
	$(GO) vet ./...
	cd mongotest && $(GO) vet ./...
	cd benchmarks && $(GO) vet ./...
	cd torture && $(GO) vet ./...
	cd gocronlock && $(GO) vet ./...
	cd otellock && $(GO) vet ./...

# Built outside the race detector: the server is not under test here, and
# FerretDB's SQLite runs several times slower with it.
$(MONGOTEST): FORCE
	cd mongotest && $(GO) build -o ../$(MONGOTEST) ./cmd/mongotest

FORCE:

clean:
	rm -rf bin
