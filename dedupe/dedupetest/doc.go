// Package dedupetest is the conformance suite every dedupe.Store runs.
//
// A store's test builds a Harness per case: one fresh underlying state (a
// backend, a changelog topic, a database schema) and a way to open stores on
// it. Opening a second store on the state a first one wrote, after closing
// the first, is a restart; opening it while the first is still open and
// assigning the same partition is a rebalance with a zombie. The suite
// checks the contract written on dedupe.Store against that:
//
//	func TestConformance(t *testing.T) {
//		dedupetest.Run(t, func(t *testing.T) *dedupetest.Harness {
//			clock := dedupetest.NewClock(time.Time{})
//			backend := dedupe.NewMemoryBackend()
//			return &dedupetest.Harness{
//				Open: func(t *testing.T) dedupe.Store {
//					s := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now})
//					t.Cleanup(func() { _ = s.Close() })
//					return s
//				},
//				Topic:      "input",
//				Partitions: 4,
//				Retention:  dedupe.DefaultMemoryMaxAge,
//				Advance:    clock.Advance,
//			}
//		}, dedupetest.Features{FencedWritesFail: true})
//	}
//
// Features says what a store guarantees beyond the contract, as Watermill's
// pubsub test suite does; cases that need a Harness hook the store cannot
// give are skipped with the reason.
package dedupetest
