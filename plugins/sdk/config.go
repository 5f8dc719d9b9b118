package sdk

import (
	"bytes"
	"encoding/json"
)

// DecodeConfig decodes a hook's Node.Config object into v. An absent or
// null object leaves v as it is, so a hook fills v with its defaults first.
// Unknown keys are an error that names them, as in the agent's own config.
func DecodeConfig(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
