package enroll

import "strings"

// Allows reports whether subject matches one of patterns with NATS
// wildcards: "*" is one token, ">" (last) is one or more. It is how the
// server reads a permission list, so a test can check a list against the
// subjects a client sends without a server.
func Allows(patterns []string, subject string) bool {
	for _, p := range patterns {
		if matchSubject(p, subject) {
			return true
		}
	}
	return false
}

func matchSubject(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range pt {
		switch {
		case tok == ">" && i == len(pt)-1:
			return len(st) > i
		case i >= len(st):
			return false
		case tok != "*" && tok != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}
