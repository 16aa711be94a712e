package main

import (
	"strings"
	"unicode"
)

// PromQL words that are not metric names. by, without, on, ignoring,
// group_left and group_right take a label list in parentheses, which is
// skipped; an aggregation may have "by (...)" between its name and its
// argument, so it is known by name rather than by the "(" after it.
var (
	keywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true, "atan2": true,
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}
	labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// selectors returns the series selectors of a PromQL expression in the
// order they appear, e.g. `rate(kbatch_records_total{job="kbatch"}[1m])`
// gives `kbatch_records_total{job="kbatch"}`. It is a lexer, not a parser:
// enough for the expressions kept in this repository, whose syntax promtool
// checks separately.
func selectors(expr string) []string {
	var out []string
	s := []rune(expr)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(s, i)
		case c == '[':
			i = skipTo(s, i, ']')
		case c == '{': // a selector without a metric name
			j := skipTo(s, i, '}')
			out = append(out, string(s[i:j]))
			i = j
		case unicode.IsDigit(c) || c == '.':
			for i < len(s) && (unicode.IsLetter(s[i]) || unicode.IsDigit(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentPart(s[j]) {
				j++
			}
			word := string(s[i:j])
			k := skipSpace(s, j)
			switch {
			case labelLists[strings.ToLower(word)]:
				if k < len(s) && s[k] == '(' {
					k = skipTo(s, k, ')')
				}
				i = k
			case keywords[strings.ToLower(word)]:
				i = j
			case k < len(s) && s[k] == '(': // a function or an aggregation
				i = j
			default:
				sel := word
				if k < len(s) && s[k] == '{' {
					end := skipTo(s, k, '}')
					sel += string(s[k:end])
					k = end
				} else {
					k = j
				}
				out = append(out, sel)
				i = k
			}
		default:
			i++
		}
	}
	return out
}

func isIdentStart(c rune) bool { return c == '_' || c == ':' || unicode.IsLetter(c) }
func isIdentPart(c rune) bool  { return isIdentStart(c) || unicode.IsDigit(c) }

func skipSpace(s []rune, i int) int {
	for i < len(s) && unicode.IsSpace(s[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string literal starting at i.
func skipString(s []rune, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		if s[i] == '\\' && q != '`' {
			i++
			continue
		}
		if s[i] == q {
			return i + 1
		}
	}
	return len(s)
}

// skipTo returns the index after the close that ends the group opened at
// s[i], skipping strings and nested groups of the same kind.
func skipTo(s []rune, i int, close rune) int {
	open, depth := s[i], 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '"', '\'', '`':
			i = skipString(s, i) - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}
