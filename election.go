package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Election is leader election on one name, in the style of etcd's
// concurrency.Election: campaigners of many processes take one lock, and
// its holder leads with a value (an address, a host name) that anyone can
// read with Leader or follow with Observe. Leadership is a hold of the
// session: it ends with Resign, with the session, or when the lease is
// lost, and Done then closes. An Election is safe for concurrent use.
type Election struct {
	s    *Session
	name string

	mu  sync.Mutex
	cur *hold // the current leadership, or the last one after it ended
}

// NewElection returns an Election on name for this session. The name is
// checked by Campaign, Leader and Observe.
func (s *Session) NewElection(name string) *Election {
	return &Election{s: s, name: name}
}

// Name returns the election's name.
func (e *Election) Name() string { return e.name }

// Campaign waits until this campaigner leads with value, ctx ends
// (ctx.Err()), or the session ends (ErrSessionClosed). If it leads already,
// it replaces the value and returns. On failure it does not lead.
func (e *Election) Campaign(ctx context.Context, value string) error {
	_, err := e.campaign(ctx, value)
	return err
}

// campaign is Campaign, returning the leadership's hold.
func (e *Election) campaign(ctx context.Context, value string) (*hold, error) {
	if err := e.s.check(ctx, e.name); err != nil {
		return nil, err
	}
	if h := e.leading(); h != nil {
		return h, e.proclaim(ctx, h, value)
	}
	var h *hold
	start := time.Now()
	try := func(ctx context.Context) (ok bool, err error) {
		h, ok, err = e.s.acquire(ctx, claim{name: e.name, kind: electionKind{value: value}, calledAt: start}, holdOptions{})
		return ok, err
	}
	l := e.s.l
	if err := l.wait(ctx, e.name, attempt{try: try, peek: l.peek(e.name), look: l.look(e.name, "")}, e.s.done, e.s.ended); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.cur = h
	e.mu.Unlock()
	return h, nil
}

// proclaim replaces the value of a leadership held.
func (e *Election) proclaim(ctx context.Context, h *hold, value string) error {
	matched, err := e.s.l.store.proclaim(ctx, e.name, h.token, value)
	if err != nil {
		return fmt.Errorf("mongolock: proclaiming in %q: %w", e.name, err)
	}
	if !matched {
		return fmt.Errorf("%w: leadership of %q", ErrLockLost, e.name)
	}
	return nil
}

// leading returns the current leadership hold, or nil.
func (e *Election) leading() *hold {
	e.mu.Lock()
	h := e.cur
	e.mu.Unlock()
	if h == nil {
		return nil
	}
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	if h.life.isEnded {
		return nil
	}
	return h
}

// Resign gives leadership up, in one round trip bounded by an internal
// timeout, so that another campaigner can lead. Done closes before the
// release is sent, so no goroutine of ours still believes it leads once
// another may. While Run's lead runs on this leadership, Resign returns at
// once (lead's context is cancelled) and Run sends the release once lead
// has returned: a lead that never returns leaves the lock to expire on the
// server. It returns nil when not leading,
// ctx.Err() when ctx ended before, and ErrLockLost if leadership was found
// lost.
func (e *Election) Resign(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h := e.leading()
	if h == nil {
		return nil
	}
	return h.release()
}

// Token returns the fencing token of this Election's current (or last)
// leadership: the same number Locker.Status and List show as the
// election's fence, growing with every leadership of the name, whoever
// holds it; 0 before this Election led. Pass it to what the leader writes
// (FencedUpdateOne), so that a deposed leader's late writes are refused.
func (e *Election) Token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		return 0
	}
	return e.cur.fence
}

// Done returns a channel closed when the current leadership ends: Resign,
// the session's end, or a lost lease. It is closed already when not
// leading.
func (e *Election) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		return closedChan
	}
	return e.cur.done
}

// Leader returns the value of the current leader, whoever it is, or
// ErrNoLeader when no one leads. Locker.Status of the election's name also
// gives the number of leader transitions so far.
func (e *Election) Leader(ctx context.Context) (string, error) {
	doc, err := e.s.l.readLive(ctx, e.name)
	if err != nil {
		return "", err
	}
	if doc == nil {
		return "", fmt.Errorf("%w: %q", ErrNoLeader, e.name)
	}
	return doc.Election.Value, nil
}

// Leadership returns the current leader's value, as Leader does, and the
// number of leader transitions the election has had (one per change of
// leader, kept in its document), or ErrNoLeader with the count when no one
// leads.
func (e *Election) Leadership(ctx context.Context) (value string, transitions int64, err error) {
	info, err := e.s.l.Status(ctx, e.name)
	switch {
	case err != nil:
		return "", 0, err
	case !info.Held:
		return "", info.Transitions, fmt.Errorf("%w: %q", ErrNoLeader, e.name)
	}
	return info.Value, info.Transitions, nil
}

// Observe returns a channel that receives the value of each new leader, in
// order and once per leadership, until ctx ends; then it is closed. It
// learns of changes made in this process at once, and of others from the
// change stream, which it keeps open: each acquire's event tells the new
// leader's value, so a leadership that ended before Observe could read the
// document is still reported (unless its value was the same as the one
// before, which the event does not repeat). Where there is no change
// stream it polls at the Locker's poll interval (and when a leader's lease
// runs out), and a leadership shorter than that may go unseen; so it does
// while change events come too late to wait on (a sharded cluster with an
// idle shard: the stream then closes for a minute at a time, see
// docs/replica-sets.md). A slow reader does not lose the latest leader; of the leaderships it was too
// slow for, the last 64 are kept. A leadership whose event comes after a
// later leader was read from the document is skipped.
func (e *Election) Observe(ctx context.Context) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		e.observe(ctx, out)
	}()
	return out
}

func (e *Election) observe(ctx context.Context, out chan<- string) {
	l := e.s.l
	changed := l.waits.observe(e.name)
	defer l.waits.unobserve(e.name, changed)
	l.wantNews() // the change stream tells of every change of leader
	defer l.unwantNews()
	timer := time.NewTimer(0)
	defer timer.Stop()
	last := leadership{fence: -1} // the last leadership sent
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.closed:
			return
		case <-changed:
		case <-timer.C:
		}
		// Leaders the change stream told of, in order, even those gone by
		// now; then the current one.
		for _, n := range l.waits.takeNews(e.name, changed) {
			if !n.after(last) {
				continue
			}
			select {
			case out <- n.value:
				last = n.leadership
			case <-ctx.Done():
				return
			}
		}
		doc, err := e.s.l.readLive(ctx, e.name)
		pause := jitter(l.opts.pollInterval)
		if err == nil && doc != nil {
			if until := doc.ExpiresAt.Sub(l.clock.SurelyPast()); until > 0 && until < pause {
				pause = until + time.Millisecond
			}
			// A kept lock (a leader gone, its WithHoldAtLeast running) is
			// no new leadership: its holder token changed, not its fence.
			if lead := (leadership{doc.Fence, doc.Holder}); !kept(doc.Holder) && lead.after(last) {
				select {
				case out <- doc.Election.Value:
					last = lead
				case <-ctx.Done():
					return
				}
			}
		}
		timer.Reset(pause)
	}
}
