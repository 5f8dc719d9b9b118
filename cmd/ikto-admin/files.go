package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ikto-mesh/ikto/pkg/config"
)

// writeSecret writes data to path with mode 0600, never replacing a file
// unless replace (config.WriteSecretFile).
func writeSecret(path string, data []byte, replace bool) error {
	return config.WriteSecretFile(path, data, replace) // its error names path
}

// readOptional reads path; a file that does not exist is nil, not an error.
func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}
