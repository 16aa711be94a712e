package kbatchtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// Name returns a topic or group name unique to the test and the run:
// prefix-<test name>-<random>. Characters Kafka refuses in a topic name
// become '-', and the test name is cut to 80 characters.
func Name(t testing.TB, prefix string) string {
	n := sanitize(t.Name())
	if len(n) > 80 {
		n = n[:80]
	}
	return fmt.Sprintf("%s-%s-%s", prefix, n, randomHex())
}

// UniqueName returns prefix-<random>, for programs that have no testing.TB.
func UniqueName(prefix string) string {
	return sanitize(prefix) + "-" + randomHex()
}

// sanitize maps every character outside Kafka's topic alphabet
// [a-zA-Z0-9._-] to '-' (kfake allows more; a real broker does not).
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

func randomHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
