# The embedded test server (FerretDB behind a serialising proxy) runs every
# target below unless MONGODB_URI is set, in which case that server is used.
MONGOTEST := bin/mongotest
GO ?= go

.PHONY: demo test test-mongotest test-lib bench bench-peers vet clean

demo: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) run ./examples/demo

test: test-mongotest test-lib

test-mongotest:
	cd mongotest && $(GO) test -race -count=1 ./...

test-lib: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -race -count=1 ./...

bench: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -run '^$$' -bench . -benchtime 200x -timeout 30m

# The same scenarios on etcd's concurrency.Mutex (embedded etcd) and on
# bsm/redislock (a redis-server from Debian's packages, installed if missing),
# each on its own server started by the benchmark.
bench-peers:
	benchmarks/install-redis.sh
	cd benchmarks && $(GO) run . -n 200

vet:
	$(GO) vet ./...
	cd mongotest && $(GO) vet ./...
	cd benchmarks && $(GO) vet ./...

# Built outside the race detector: the server is not under test here, and
# FerretDB's SQLite runs several times slower with it.
$(MONGOTEST): FORCE
	cd mongotest && $(GO) build -o ../$(MONGOTEST) ./cmd/mongotest

FORCE:

clean:
	rm -rf bin
