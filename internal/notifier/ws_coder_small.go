//go:build coderws && coderwssmall

package notifier

func init() { coderBufSize = 1024 }
