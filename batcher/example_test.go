package batcher_test

import (
	"fmt"
	"time"

	"github.com/kbatch/kbatch/batcher"
)

// A batch closes at MaxRecords, before MaxBytes would be passed, or MaxWait
// after its first item.
func Example() {
	b, err := batcher.New[string](batcher.Policy{MaxRecords: 3, MaxBytes: 10, MaxWait: time.Second})
	if err != nil {
		panic(err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, item := range []string{"a", "bb", "ccc", "dddd", "eeeeeee"} {
		now := start.Add(time.Duration(i) * 100 * time.Millisecond)
		if !b.Fits(len(item)) {
			fmt.Println("bytes:", b.Flush())
		}
		if b.Add(now, item, len(item)) {
			fmt.Println("records:", b.Flush())
		}
	}
	deadline, _ := b.Deadline()
	fmt.Println("open batch must flush at +", deadline.Sub(start))
	fmt.Println("wait:", b.Flush())
	// Output:
	// records: [a bb ccc]
	// bytes: [dddd]
	// open batch must flush at + 1.4s
	// wait: [eeeeeee]
}
