package mongolock

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// keepalive renews the session's holds every renew interval, sooner after
// a failure, until the session ends; then, after a graceful end, it frees
// on the server what the session still held. It is the session's only
// goroutine.
func (s *Session) keepalive() {
	defer close(s.stopped)
	defer s.releaseUnreleased()
	t := time.NewTimer(s.opts.renewInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.finish(s.ctx.Err()) // a no-op when Close or a lost lease ended it
			return
		case <-t.C:
			// The cadence counts from each renewal's sending, not from its
			// reply: on a slow link, waiting a full interval after the
			// reply would let the holds' deadlines catch up.
			sent := time.Now()
			next := s.opts.renewInterval
			if !s.renew() {
				next = max(s.opts.renewInterval/4, time.Millisecond)
			}
			t.Reset(max(next-time.Since(sent), time.Millisecond))
		}
	}
}

// renew extends every live hold of the session in one round trip and
// reports whether the server answered. Holds the server no longer has
// (released by an admin, or expired) end with ErrLockLost.
func (s *Session) renew() bool {
	s.mu.Lock()
	all := slices.Collect(maps.Keys(s.holds))
	tokens, reading := splitHolds(slices.Collect(maps.Values(s.holds)))
	s.mu.Unlock()
	// The clock is refreshed after the renewal, never before it: a slow
	// hello must not hold a renewal back past the lease.
	defer func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.renewInterval/2)
		defer cancel()
		if err := s.l.clock.Refresh(ctx); err != nil && s.ctx.Err() == nil {
			s.l.opts.logger.Warn("mongolock: could not read the server's clock", "session", s.id, "err", err)
		}
	}()
	if len(all) == 0 {
		return true
	}
	// Bounded by the TTL, not by the holds' deadlines: a deadline closer
	// than the network's round trip makes the driver refuse to send at all
	// (client-side operation timeout), and the holds' own timers give them
	// up in time whatever this call does.
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.ttl)
	defer cancel()
	now, unc, election := s.l.clock.ReadElection()
	sent, lease := time.Now(), s.lease(unc)
	n, err := s.l.store.renew(ctx, s.id, tokens, reading, now, election, s.opts.ttl)
	if ambiguous(err) && ctx.Err() == nil {
		// The driver retries an updateOne once after a failover's error,
		// never an update of many documents: the renewal retries itself,
		// once, at once. It is idempotent: lease ends only move forward.
		n, err = s.l.store.renew(ctx, s.id, tokens, reading, now, election, s.opts.ttl)
	}
	var live map[string]bool
	if err == nil && n != int64(len(tokens)+len(reading)) {
		live, err = s.liveHolds(ctx, tokens, reading, now.Add(s.opts.ttl))
	}
	if f := s.l.opts.observer.Renewed; f != nil {
		f(len(all), time.Since(sent), err)
	}
	if err != nil {
		if s.ctx.Err() == nil {
			s.l.opts.logger.Warn("mongolock: renewal failed", "session", s.id, "locks", len(all), "err", err)
		}
		return false
	}
	until := sent.Add(lease)
	var lost []*hold
	defer func() { s.l.observeLost(lost...) }() // after the unlock below
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tok := range all {
		h := s.holds[tok]
		switch {
		case h == nil: // ended meanwhile
		case live != nil && !live[tok]:
			s.l.opts.logger.Warn("mongolock: lock lost: no longer held on the server",
				"session", s.id, "name", h.name)
			lost = append(lost, h)
			h.end(ErrLockLost)
		default:
			h.extend(until)
		}
	}
	return true
}

// splitHolds returns the tokens of holds that are not read holds, and the
// read holds' tokens by the RWMutex document they read.
func splitHolds(holds []*hold) (tokens []string, reading map[string][]string) {
	for _, h := range holds {
		if !h.reader {
			tokens = append(tokens, h.token)
			continue
		}
		if reading == nil {
			reading = map[string][]string{}
		}
		reading[h.name] = append(reading[h.name], h.token)
	}
	return tokens, reading
}

// liveHolds returns which of the session's holds (tokens) and read holds
// (reading) the server still has: a read hold, only if its document's
// readers' lease reaches until, the end the renewal wrote.
func (s *Session) liveHolds(ctx context.Context, tokens []string, reading map[string][]string, until time.Time) (map[string]bool, error) {
	live := map[string]bool{}
	if len(tokens) > 0 {
		held, err := s.l.store.liveHolders(ctx, s.id, tokens)
		if err != nil {
			return nil, err
		}
		maps.Copy(live, held)
	}
	if len(reading) > 0 {
		read, err := s.l.store.liveReads(ctx, slices.Collect(maps.Keys(reading)), until)
		if err != nil {
			return nil, err
		}
		for _, toks := range reading {
			for _, tok := range toks {
				live[tok] = read[tok]
			}
		}
	}
	return live, nil
}

// releaseUnreleased frees on the server, in one round trip, the holds that
// the session's end cut short, and wakes this process's waiters for them;
// those still within WithHoldAtLeast are kept instead, one round trip each,
// all sent at once; those that code still runs under are freed once it
// returned, or given up at their lease's end (work.go). It runs on fresh
// bounded contexts: the session's is gone.
func (s *Session) releaseUnreleased() {
	s.mu.Lock()
	holds, keeping, working := s.unreleased, s.keeping, s.working
	s.unreleased, s.keeping, s.working = nil, nil, nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	var errMu sync.Mutex
	failed := func(err error) { // Close returns one error: the first
		errMu.Lock()
		s.closeErr = cmp.Or(s.closeErr, err)
		errMu.Unlock()
	}
	for _, h := range working {
		wg.Go(func() {
			if err := h.afterWork(); err != nil {
				failed(err) // afterWork said why on the log
			}
		})
	}
	for _, h := range keeping {
		wg.Go(func() {
			// If that end has passed meanwhile, the lock is free once the
			// write lands.
			if err := h.keep(h.acquiredAt.Add(h.bounds.atLeast), h.clock); err != nil {
				failed(err)
				s.l.opts.logger.Warn("mongolock: could not keep a lock until its least hold's end; it expires with its lease",
					"session", s.id, "name", h.name, "err", err)
			}
		})
	}
	tokens, reading := splitHolds(holds)
	if len(reading) > 0 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.ttl, cleanupTimeout))
			defer cancel()
			if err := s.l.store.releaseReads(ctx, s.id, reading); err != nil {
				failed(err)
				s.l.opts.logger.Warn("mongolock: could not release the session's read locks; they expire with their leases",
					"session", s.id, "documents", len(reading), "err", err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.ttl, cleanupTimeout))
	defer cancel()
	if err := s.l.store.releaseAll(ctx, s.id, tokens); err != nil {
		errMu.Lock()
		s.closeErr = err // the main release's error comes first
		errMu.Unlock()
		s.l.opts.logger.Warn("mongolock: could not release the session's locks; they expire with their leases",
			"session", s.id, "locks", len(tokens), "err", err)
	}
	wg.Wait()
	for _, h := range holds {
		s.l.waits.wake(h.queue())
	}
}
