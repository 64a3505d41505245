package mongolock

import "sync"

// background counts the goroutines a Locker leaves running behind its
// callers (the release of what an abandoned acquire may have taken, the
// end of a capped hold, leaving a lock's waiting Lockers), so that Close
// returns only once they are done.
type background struct {
	mu     sync.Mutex // orders wg.Add before close's wg.Wait
	closed bool
	wg     sync.WaitGroup
}

// start runs f in a goroutine that close waits for, and reports true; once
// closed it runs nothing and reports false.
func (b *background) start(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Go(f)
	return true
}

// close refuses new work and waits for the work that runs.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}
