# The embedded test server (FerretDB behind a serialising proxy) runs every
# target below unless MONGODB_URI is set, in which case that server is used.
MONGOTEST := bin/mongotest
GO ?= go

.PHONY: demo test test-mongotest test-lib bench vet clean

demo: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) run ./examples/demo

test: test-mongotest test-lib

test-mongotest:
	cd mongotest && $(GO) test -race -count=1 ./...

test-lib: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -race -count=1 ./...

bench: $(MONGOTEST)
	$(MONGOTEST) -- $(GO) test -run '^$$' -bench . -benchtime 2s .

vet:
	$(GO) vet ./...
	cd mongotest && $(GO) vet ./...

# Built outside the race detector: the server is not under test here, and
# FerretDB's SQLite runs several times slower with it.
$(MONGOTEST): FORCE
	cd mongotest && $(GO) build -o ../$(MONGOTEST) ./cmd/mongotest

FORCE:

clean:
	rm -rf bin
